"""The roles' cores without Faust or Kafka, one module per concern: scoring, routing and
control, shadow and speculative calls, detectors, the label join, canary contests,
retraining policy, the online learner. ``streams.roles`` wires them onto Faust apps."""

from agents.river_import import defer_unused

defer_unused()  # before any core imports river.drift (see agents.river_import)
