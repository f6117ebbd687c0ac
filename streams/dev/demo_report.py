"""The demo's report: a timeline of the loop, a summary table and a plot of accuracy."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Timeline:
    """Where in the stream (record index) each moment of the loop happened."""

    drift_at: int
    alert_at: int | None = None
    alert: str | None = None
    run_started_at: int | None = None
    run_finished_at: int | None = None
    run_id: str | None = None
    take_over_at: int | None = None  # how far scoring had got when the learner took over
    take_over: str | None = None  # the test its activate carried
    swap_at: int | None = None  # first record scored by the new version
    new_version: str | None = None
    served_from: dict[str, int] = field(default_factory=dict)  # version → its first record
    notes: list[str] = field(default_factory=list)


def version_name(version: str | None) -> str:
    """``v2`` for a pipeline's numbered version; the online learner's name as it is."""
    if version is None:
        return "-"
    return f"v{version}" if version.isdigit() else version


def rolling_accuracy(correct: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last ``window`` outcomes at each position (shorter at the start)."""
    sums = np.cumsum(np.insert(correct.astype(float), 0, 0.0))
    idx = np.arange(1, len(correct) + 1)
    lo = np.maximum(0, idx - window)
    return (sums[idx] - sums[lo]) / (idx - lo)


def accuracy_between(correct: np.ndarray, start: int, end: int | None) -> float | None:
    part = correct[start:end]
    return float(part.mean()) if len(part) else None


def plot(
    path: Path,
    index: np.ndarray,
    correct: np.ndarray,
    versions: list[str],
    timeline: Timeline,
    window: int = 300,
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 5), dpi=110)
    acc = rolling_accuracy(correct, window)
    for version in sorted(set(versions)):
        mask = np.array([v == version for v in versions])
        label = f"served by {version_name(version)}"
        ax.plot(index[mask], acc[mask], ".", markersize=2, label=label)
    marks = [
        (timeline.drift_at, "concept drift", "tab:red"),
        (timeline.alert_at, "alert", "tab:orange"),
        (timeline.run_started_at, "retraining run", "tab:purple"),
    ]
    later = sorted((at, v) for v, at in timeline.served_from.items() if at > 0)
    for (at, version), colour in zip(later, ("tab:green", "tab:olive", "tab:cyan"), strict=False):
        marks.append((at, f"swap to {version_name(version)}", colour))
    for x, label, colour in marks:
        if x is not None:
            ax.axvline(x, color=colour, linestyle="--", linewidth=1.2, label=f"{label} @ {x}")
    ax.set_xlabel("record index")
    ax.set_ylabel(f"rolling accuracy (last {window} labelled predictions)")
    ax.set_ylim(0.5, 1.02)
    ax.set_title("weir demo: drift → online learner / Kubeflow retraining → hot swap")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
