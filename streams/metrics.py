"""One worker's Prometheus metrics, in a registry of its own.

:class:`WorkerMetrics` owns a ``CollectorRegistry`` per worker (never the
process-wide default registry), so two workers in one process — or a test —
never share a counter. The live view (:mod:`streams.live`) updates it from the
agents' outcomes; the status server (:mod:`streams.status_page`) exposes it at
``/metrics``.

Names (counters are exposed with the ``_total`` suffix):

========================================  ===========================  =========
metric                                    labels                       kind
========================================  ===========================  =========
``weir_records_consumed_total``           model                        counter
``weir_predictions_total``                model, version               counter
``weir_dead_letters_total``               error_class                  counter
``weir_model_call_seconds``               model, version               histogram
``weir_scoring_batch_seconds``            model                        histogram
``weir_consumer_lag_records``             topic, partition             gauge
``weir_model_active_version``             model, version (1 = active)  gauge
``weir_model_canary_weight``              model, version               gauge
``weir_model_shadow_version``             model, version (1 = shadow)  gauge
``weir_alerts_total``                     type                         counter
``weir_retraining_runs_total``            status                       counter
``weir_rolling_accuracy``                 model, version               gauge
``weir_learner_outcomes_total``           model, fate (learnt,         counter
                                          light_only, shed)
========================================  ===========================  =========
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["CONTENT_TYPE_LATEST", "WorkerMetrics", "merge_expositions"]

# A model call on loopback takes a few ms; a batch that waits through an outage, seconds.
CALL_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (*CALL_BUCKETS, 30.0, 60.0)


class WorkerMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.records_consumed = Counter(
            "weir_records_consumed", "Records taken from the records topic", ["model"], registry=r
        )
        self.predictions = Counter(
            "weir_predictions",
            "Predictions stored, by serving version",
            ["model", "version"],
            registry=r,
        )
        self.dead_letters = Counter(
            "weir_dead_letters", "Dead letters stored, by error class", ["error_class"], registry=r
        )
        self.model_call_seconds = Histogram(
            "weir_model_call_seconds",
            "Latency of one model-server call (one per route and micro-batch)",
            ["model", "version"],
            buckets=CALL_BUCKETS,
            registry=r,
        )
        self.batch_seconds = Histogram(
            "weir_scoring_batch_seconds",
            "Time to score one micro-batch, retries and waits included",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.consumer_lag = Gauge(
            "weir_consumer_lag_records",
            "End offset minus the scoring group's committed offset, sampled periodically",
            ["topic", "partition"],
            registry=r,
        )
        self.active_version = Gauge(
            "weir_model_active_version",
            "1 for the version serving a model, 0 for earlier ones",
            ["model", "version"],
            registry=r,
        )
        self.canary_weight = Gauge(
            "weir_model_canary_weight",
            "Share of traffic routed to a canary version",
            ["model", "version"],
            registry=r,
        )
        self.shadow_version = Gauge(
            "weir_model_shadow_version",
            "1 for a model's shadow version, 0 for earlier ones",
            ["model", "version"],
            registry=r,
        )
        self.alerts = Counter("weir_alerts", "Alerts emitted, by type", ["type"], registry=r)
        self.speculative_late = Counter(
            "weir_speculative_late",
            "Answers (rows) of speculative members that came after the deadline, by version",
            ["model", "version"],
            registry=r,
        )
        self.retraining_runs = Counter(
            "weir_retraining_runs",
            "Retraining run events emitted, by status",
            ["status"],
            registry=r,
        )
        self.rolling_accuracy = Gauge(
            "weir_rolling_accuracy",
            "Accuracy over the last monitor.performance_window labelled outcomes",
            ["model", "version"],
            registry=r,
        )

        self.learner_outcomes = Counter(
            "weir_learner_outcomes",
            "Served outcomes the online learner learnt whole, learnt with its light members "
            "only (light_only: more than learner.light_lag_s behind), or shed (skipped: more than "
            "learner.max_lag_s behind)",
            ["model", "fate"],
            registry=r,
        )

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format (content type ``CONTENT_TYPE_LATEST``)."""
        return generate_latest(self.registry)


class _Fixed:
    """A collector that yields metric families already built."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


def merge_expositions(parts: Mapping[str, bytes]) -> bytes:
    """Several role processes' ``/metrics`` as one exposition, each sample labelled ``role``."""
    families: dict[str, Metric] = {}
    for role, text in parts.items():
        for fam in text_string_to_metric_families(text.decode()):
            merged = families.get(fam.name)
            if merged is None:
                merged = families[fam.name] = Metric(fam.name, fam.documentation, fam.type)
            for sample in fam.samples:
                merged.add_sample(sample.name, {"role": role, **sample.labels}, sample.value)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(list(families.values())))
    return generate_latest(registry)
