"""The retraining pipeline: a Kubeflow Pipelines v2 pipeline, run locally or on a cluster.

Steps (each a lightweight Python component in the weir image)::

    fetch ──ok──▶ train ──▶ evaluate ──▶ register        (succeeded | not-promoted)
      └──too few rows──▶ record_failure                     (failed)

- **fetch** reads the newest ``window_rows`` archived :class:`~schemas.training.TrainingRow`
  of the model from MinIO (:func:`connectors.archive.read_window`), keeps
  those at or after ``since`` if given (e.g. the drift alert), orders the
  features by name, and splits the window in time: the newest
  ``holdout_fraction`` is held out for evaluation, the older part is for
  training (two ``Dataset`` artifacts, plus a ``Metrics`` artifact with the
  row counts). It returns whether the window can be used; when not (fewer
  than ``min_rows`` rows, one class only) the reason is in the training set's
  metadata, and the pipeline branches with ``dsl.If`` / ``dsl.Else`` to
  **record_failure**.
- **train** fits the best of a few model families on the older part
  (:func:`connectors.learners.fit_candidate`: scaled logistic regression or
  histogram gradient boosting, chosen on the newest rows of that part; a
  ``Model`` artifact; features, row count, the archive prefix and the learner's
  family, hyperparameters and validation scores ride in its metadata and go in
  the model card).
- **evaluate** scores the candidate and the current version (loaded from the
  registry) with :func:`connectors.predictor.predict_batch` on the held-out part
  (a ``Metrics`` artifact: ``candidate_accuracy``, ``current_accuracy``,
  ``only_candidate_right``, ``only_current_right``, ``mcnemar_p``,
  ``train_rows``, ``holdout_rows``).
- **register** publishes the candidate to the :class:`~connectors.registry.ModelRegistry`
  as the next integer version only if ``candidate_accuracy >= current_accuracy +
  min_gain`` and McNemar's exact test on the same held-out rows (the rows only
  one of the two gets right) gives p <= 1 - ``confidence`` (or there is no
  current version); otherwise the run ends ``not-promoted`` with a reason that
  states both accuracies and the test. A few hundred holdout rows cannot
  promote a candidate on noise: with few disagreements p cannot get small.

Every run ends by storing its outcome (status, version, metrics, reason) as
``s3://{pipelines bucket}/retrain/{model}/{run_id}.json``; :func:`run_retrain`
reads it back, so local and cluster runs report the same way. A step that
raises ends the run ``failed`` too; locally the reason then carries the
step's exception line. The pipeline does
**not** publish to Kafka: the caller (the retraining agent) deploys a model
server for the new version and publishes the model-version event.

Each component is self-contained (kfp ships only the function's source): it
imports what it needs inside its body — weir's own ``connectors``, ``schemas``
and ``schemas.settings``, never this module — so it runs wherever weir is
installed: this venv locally, the ``weir:latest`` image on a cluster.
Components build their :class:`~schemas.settings.Settings` from ``WEIR_*``
environment variables.

**Local mode** (``settings.kfp.host`` unset, the default): ``kfp.local`` runs
each component as a subprocess of this process (``SubprocessRunner`` without a
venv, so with this interpreter and packages). ``kfp.local`` keeps its
configuration in process-global state, and during a run it also swaps the root
logger's handlers and ``builtins.print``; :func:`run_retrain` additionally sets
the ``WEIR_*`` variables of ``os.environ`` to the caller's settings (so the
subprocesses see exactly them), tees ``sys.stdout`` to find a failed task's
error, and silences kfp's warning that ``weir:latest`` may not be a Python
image (locally the components run in this venv on purpose). All of that is
restored afterwards, and local runs are serialised by a
module-level lock — at most one local run per process at a time; a second
caller waits. Other threads keep running meanwhile and see that global state.

**Cluster mode** (``settings.kfp.host`` set): the compiled package is submitted
with ``kfp.Client(host=...).create_run_from_pipeline_package`` and awaited.
The pods must get the ``WEIR_*`` MinIO settings in their environment (e.g. from
a Secret); this path cannot be exercised here (no cluster) and is untested.
Concurrent cluster runs for the same model may race for the next version number.

The compiled pipeline is checked in as ``deploy/pipelines/retrain.yaml``;
regenerate it with ``python -m connectors.pipeline``.
"""

# No ``from __future__ import annotations`` here: kfp reads the component
# signatures' annotations as real objects.

import contextlib
import io
import json
import logging
import math
import os
import re
import subprocess
import sys
import tempfile
import threading
import warnings
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TextIO, cast, get_args

from kfp import compiler, dsl, local

from connectors import native_threads
from connectors.minio_store import ObjectNotFound, ObjectStore
from schemas import ConfigurationError, ServiceError, WeirError
from schemas.settings import Settings, settings_env

log = logging.getLogger("weir.pipeline")

PIPELINE_NAME = "weir-retrain"
BASE_IMAGE = "weir:latest"
MIN_ROWS = 50  # a window with fewer usable rows ends the run "failed"
CLUSTER_TIMEOUT_S = 3600
MAX_DETAIL = 2000  # characters of a failed task's error kept in the reason

Status = Literal["succeeded", "not-promoted", "failed"]

# One local run at a time per process: kfp.local's configuration, os.environ
# and sys.stdout are process-global.
_LOCAL_RUN_LOCK = threading.Lock()


@dataclass(frozen=True)
class RetrainRequest:
    model: str
    run_id: str
    current_version: str | None  # the version serving now (compare against it); None = no model
    alert_id: str | None = None
    window_rows: int = 2000  # newest archived rows to use
    holdout_fraction: float = 0.3  # newest part of the window held out for evaluation
    min_gain: float = 0.01  # candidate must beat current accuracy by this much
    confidence: float = 0.95  # ...and McNemar's test on the same holdout must say so at this
    since: datetime | None = None  # only rows whose time is at or after this (timezone-aware)


@dataclass(frozen=True)
class RetrainResult:
    status: Status
    version: str | None  # the new registered version when succeeded
    metrics: dict[str, float]  # candidate_accuracy, current_accuracy (if any), train/holdout_rows
    reason: str
    storage_uri: str | None


class PipelineError(ServiceError):
    """Kubeflow Pipelines (the local runner or a cluster) could not run the pipeline."""

    def __init__(self, message: str, *, address: str, retriable: bool | None = None) -> None:
        super().__init__(
            message, service="kubeflow-pipelines", address=address, retriable=retriable
        )


def result_key(model: str, run_id: str) -> str:
    """Where a run's outcome is stored, in the pipelines bucket.

    The components ``register`` and ``record_failure`` spell the same key out
    (they cannot call back into this module, see above).
    """
    return f"retrain/{model}/{run_id}.json"


# --------------------------------------------------------------------------------------------
# The components. kfp ships only each function's source, so every body is
# self-contained: it imports what it needs and calls no helper of this module
# (which imports the kfp compiler, unavailable inside a running component).


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def fetch(
    model: str,
    window_rows: int,
    holdout_fraction: float,
    min_rows: int,
    since: str,
    train_set: dsl.Output[dsl.Dataset],
    holdout_set: dsl.Output[dsl.Dataset],
    window: dsl.Output[dsl.Metrics],
) -> bool:
    """The newest archived rows, split in time; returns whether they can be used.

    When they cannot, ``train_set.metadata["problem"]`` says why. (The result
    is a bool, not the reason itself: kfp's local runner evaluates conditions
    by pasting string values into an expression, which breaks on quotes.)
    """
    import json
    from datetime import datetime

    from connectors import archive
    from connectors.minio_store import ObjectStore
    from schemas.settings import Settings

    settings = Settings()
    bucket = settings.minio.data_bucket
    source = f"s3://{bucket}/{archive.prefix(model)}"
    rows = archive.read_window(ObjectStore(settings.minio), bucket, model, window_rows)
    if since:  # ISO 8601: rows labelled from then on (the data's clock, as rows_since counts)
        rows = archive.labelled_since(rows, datetime.fromisoformat(since))
        source_desc = f"{source} labelled since {since}"
    else:
        source_desc = source
    features = sorted({name for row in rows for name in row.features})
    usable = [row for row in rows if len(row.features) == len(features)]
    n_hold = min(max(1, int(len(usable) * holdout_fraction)), len(usable))
    train, hold = usable[: len(usable) - n_hold], usable[len(usable) - n_hold :]
    problem = ""
    if len(usable) < min_rows:
        incomplete = len(rows) - len(usable)
        problem = (
            f"too few rows to retrain {model!r}: {len(usable)} usable archived rows under "
            f"{source_desc}"
            + (f" ({incomplete} more lacked a feature)" if incomplete else "")
            + f", need at least {min_rows}"
        )
        train, hold = [], []
    elif len({row.label for row in train}) < 2:
        seen = sorted({repr(row.label) for row in train})
        problem = (
            f"cannot retrain {model!r}: the {len(train)} training rows of the window "
            f"under {source_desc} have fewer than two classes ({', '.join(seen) or 'none'})"
        )
    for artifact, part in ((train_set, train), (holdout_set, hold)):
        matrix = [[row.features[name] for name in features] for row in part]
        labels = [row.label for row in part]
        served = [[row.served_version, row.served] for row in part]  # who answered, and what
        with open(artifact.path, "w") as out:
            json.dump(
                {"features": features, "rows": matrix, "labels": labels, "served": served}, out
            )
        artifact.metadata.update({"rows": len(part), "features": features, "source": source})
    train_set.metadata["problem"] = problem
    window.log_metric("window_rows", len(rows))
    window.log_metric("train_rows", len(train))
    window.log_metric("holdout_rows", len(hold))
    return not problem


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def train(train_set: dsl.Input[dsl.Dataset], candidate: dsl.Output[dsl.Model]) -> None:
    """The best model family on the older part of the window (connectors.learners), stored
    as the registry stores it; its classes go in the metadata as JSON (kfp's metadata
    would turn integer labels into floats), so ``register`` needs no scikit-learn."""
    import json

    import numpy as np

    from connectors.learners import fit_candidate
    from connectors.registry import ModelRegistry

    with open(train_set.path) as src:
        data = json.load(src)
    fitted = fit_candidate(np.asarray(data["rows"], dtype=np.float64), data["labels"])
    with open(candidate.path, "wb") as out:
        out.write(ModelRegistry.dumps(fitted.estimator))
    classes = [c.item() if hasattr(c, "item") else c for c in fitted.estimator.classes_]
    candidate.metadata.update(
        {
            "learner": fitted.card_entry,
            "framework": "sklearn",
            "features": data["features"],
            "classes": json.dumps(classes),
            "training_data": train_set.metadata["source"],
            "train_rows": len(data["rows"]),
        }
    )


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def evaluate(
    model: str,
    current_version: str,
    candidate: dsl.Input[dsl.Model],
    holdout_set: dsl.Input[dsl.Dataset],
    scores: dsl.Output[dsl.Metrics],
) -> None:
    """Accuracy of the candidate and of the current version ("" = none) on the held-out rows,
    and McNemar's exact test of the two on those same rows (``compared_rows`` of them when
    the current version is an online learner, judged by its served answers)."""
    import json
    from collections import Counter
    from typing import Any

    import joblib
    import numpy as np

    from connectors.learners import MIN_ANSWERED, paired_test
    from connectors.predictor import predict_batch, rows_from_features
    from connectors.registry import LoadedModel, ModelRegistry, snapshot_number
    from schemas.events import utc_now
    from schemas.model_card import ModelCard
    from schemas.settings import Settings

    def accuracy(predicted: list[Any], labels: list[Any]) -> float:
        return sum(p == y for p, y in zip(predicted, labels, strict=True)) / len(labels)

    with open(holdout_set.path) as src:
        data = json.load(src)
    features, labels = data["features"], data["labels"]
    held_out = len(labels)
    estimator = joblib.load(candidate.path)
    card = ModelCard(
        name=model,
        version="candidate",
        framework="sklearn",
        features=features,
        classes=json.loads(candidate.metadata["classes"]),
        created_at=utc_now(),
    )
    predicted, _ = predict_batch(
        LoadedModel(card=card, estimator=estimator), np.asarray(data["rows"], dtype=np.float64)
    )
    if current_version:
        # an online learner's snapshot (``<learner>.<n>``) has learnt the held-out rows by
        # now; it is judged by what it answered when they were served, before it learnt
        # them. Right after a take-over it has served few of them: then by what served
        # them (the version it replaced, mostly), and only with no served answers kept
        # (older archives) by the snapshot itself, which flatters it.
        series = current_version.rpartition(".")[0]
        learner = snapshot_number(series, current_version) is not None
        rows: list[int] | None = None  # None: the current version predicts every row again
        compared = ""
        served = data.get("served") or []
        if learner:
            by_learner = [i for i, (who, _) in enumerate(served) if who == series]
            by_anyone = [i for i, (who, _) in enumerate(served) if who is not None]
            if len(by_learner) >= MIN_ANSWERED:
                rows, compared = by_learner, f"{series} as served"
            elif len(by_anyone) >= MIN_ANSWERED:
                who_served = Counter(str(served[i][0]) for i in by_anyone)
                rows = by_anyone
                compared = (
                    "what served these rows ("
                    + ", ".join(f"{who} on {n}" for who, n in who_served.most_common())
                    + f"; {series} took over since)"
                )
        if rows is not None:
            labels = [labels[i] for i in rows]
            predicted = [predicted[i] for i in rows]
            predicted_now = [served[i][1] for i in rows]
        else:
            registry = ModelRegistry.for_settings(Settings())
            # a learner's snapshot may be gone by now (it keeps its newest few)
            current = registry.load_or_newer(model, current_version)
            if learner:
                compared = f"{current.card.version} (it had learnt these rows)"
            records = [dict(zip(features, row, strict=True)) for row in data["rows"]]
            predicted_now, _ = predict_batch(
                current, rows_from_features(current.card.features, records)
            )
        if compared:
            scores.metadata["compared_version"] = compared
        scores.log_metric("current_accuracy", accuracy(predicted_now, labels))
        b, c, p = paired_test(
            [n == y for n, y in zip(predicted, labels, strict=True)],
            [o == y for o, y in zip(predicted_now, labels, strict=True)],
        )
        scores.log_metric("only_candidate_right", b)
        scores.log_metric("only_current_right", c)
        scores.log_metric("mcnemar_p", p)
    scores.log_metric("candidate_accuracy", accuracy(predicted, labels))
    scores.log_metric("train_rows", candidate.metadata["train_rows"])
    scores.log_metric("holdout_rows", held_out)
    if len(labels) != held_out:
        scores.log_metric("compared_rows", len(labels))


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def register(
    model: str,
    run_id: str,
    alert_id: str,
    current_version: str,
    min_gain: float,
    max_p: float,
    candidate: dsl.Input[dsl.Model],
    scores: dsl.Input[dsl.Metrics],
) -> str:
    """Publish the candidate if it beats the current version by min_gain and McNemar's test
    says so at ``max_p`` (1 - the promotion's confidence); returns its version.

    Returns "" when it does not (the run ends "not-promoted"). Either way the
    outcome is stored for :func:`run_retrain`. The candidate is published as ``train``
    stored it, unopened: this step imports no scikit-learn (seconds of a run's start-up
    on a loaded machine).
    """
    import json

    from connectors.mcnemar import promotion
    from connectors.minio_store import ObjectStore
    from connectors.registry import ModelRegistry
    from schemas.events import utc_now
    from schemas.model_card import ModelCard
    from schemas.settings import Settings

    settings = Settings()
    store = ObjectStore(settings.minio)
    meta = dict(scores.metadata)
    # what evaluate compared with when it was not the current version as it serves (an
    # online learner: by its served answers, or by what served the held-out rows)
    compared = str(meta.pop("compared_version", "") or current_version)
    metrics = {name: float(value) for name, value in meta.items()}
    new, old = metrics["candidate_accuracy"], metrics.get("current_accuracy")
    p = metrics.get("mcnemar_p", 0.0)
    pairs = (
        f"McNemar p {p:.3g} (candidate alone right on {metrics.get('only_candidate_right', 0):.0f}"
        f" rows, current alone on {metrics.get('only_current_right', 0):.0f})"
    )
    outcome: dict[str, object] = {"metrics": metrics, "version": None, "storage_uri": None}
    promote, why_not = promotion(
        new, old if current_version else None, p, min_gain=min_gain, max_p=max_p
    )
    if not promote:
        outcome["status"] = "not-promoted"
        outcome["reason"] = (
            f"not promoted: candidate accuracy {new:.4f} {why_not} of version "
            f"{compared}; {pairs}, needed <= {max_p:g}"
        )
    else:
        registry = ModelRegistry.for_settings(settings)
        numbers = [int(v) for v in registry.version_names(model) if v.isdigit()]
        version = str(max(numbers) + 1) if numbers else "1"
        with open(candidate.path, "rb") as src:
            blob = src.read()
        card = ModelCard(
            name=model,
            version=version,
            framework="sklearn",
            features=candidate.metadata["features"],
            classes=json.loads(candidate.metadata["classes"]),
            metrics=metrics,
            created_at=utc_now(),
            training_data=candidate.metadata["training_data"],
            training_rows=int(candidate.metadata["train_rows"]),
            learner=candidate.metadata.get("learner"),
            run_id=run_id,
            alert_id=alert_id or None,
        )
        if current_version and old is not None:
            why = (
                f"candidate accuracy {new:.4f} >= current version {compared} "
                f"accuracy {old:.4f} + min_gain {min_gain:g}, {pairs} <= {max_p:g}"
            )
        else:
            why = f"no current version to compare with; candidate accuracy {new:.4f}"
        outcome.update(
            status="succeeded",
            version=version,
            storage_uri=registry.publish_bytes(card, blob),
            reason=f"{why}; registered version {version}",
        )
    key = f"retrain/{model}/{run_id}.json"  # = connectors.pipeline.result_key(model, run_id)
    body = json.dumps(outcome, indent=2, sort_keys=True).encode()
    store.put_bytes(settings.minio.pipelines_bucket, key, body, "application/json")
    return str(outcome["version"] or "")


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def record_failure(
    model: str, run_id: str, train_set: dsl.Input[dsl.Dataset], window: dsl.Input[dsl.Metrics]
) -> None:
    """End the run "failed" with the reason ``fetch`` found the window unusable."""
    import json

    from connectors.minio_store import ObjectStore
    from schemas.settings import Settings

    settings = Settings()
    outcome = {
        "status": "failed",
        "version": None,
        "storage_uri": None,
        "reason": train_set.metadata["problem"],
        "metrics": {name: float(value) for name, value in window.metadata.items()},
    }
    key = f"retrain/{model}/{run_id}.json"  # = connectors.pipeline.result_key(model, run_id)
    body = json.dumps(outcome, indent=2, sort_keys=True).encode()
    ObjectStore(settings.minio).put_bytes(
        settings.minio.pipelines_bucket, key, body, "application/json"
    )


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Retrain a weir model on its recent archived window and register it if better.",
)
def retrain_pipeline(
    model: str,
    run_id: str,
    current_version: str = "",
    alert_id: str = "",
    window_rows: int = 2000,
    holdout_fraction: float = 0.3,
    min_gain: float = 0.01,
    max_p: float = 0.05,
    min_rows: int = MIN_ROWS,
    since: str = "",
) -> None:
    """``current_version``, ``alert_id``, ``since``: "" means none.

    (Not ``Optional[str] = None``: kfp's local runner cannot default a
    parameter to None.)
    """
    window = fetch(
        model=model,
        window_rows=window_rows,
        since=since,
        holdout_fraction=holdout_fraction,
        min_rows=min_rows,
    )
    usable = window.outputs["Output"]
    with dsl.If(usable == True, name="window-usable"):  # noqa: E712 (builds a kfp condition)
        fitted = train(train_set=window.outputs["train_set"])
        scored = evaluate(
            model=model,
            current_version=current_version,
            candidate=fitted.outputs["candidate"],
            holdout_set=window.outputs["holdout_set"],
        )
        register(
            model=model,
            run_id=run_id,
            alert_id=alert_id,
            current_version=current_version,
            min_gain=min_gain,
            max_p=max_p,
            candidate=fitted.outputs["candidate"],
            scores=scored.outputs["scores"],
        )
    with dsl.Else(name="window-unusable"):
        record_failure(
            model=model,
            run_id=run_id,
            train_set=window.outputs["train_set"],
            window=window.outputs["window"],
        )


def compile_pipeline(path: Path) -> Path:
    """Write the pipeline's YAML package to ``path``; returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        compiler.Compiler().compile(retrain_pipeline, str(path))
    except Exception as exc:  # kfp raises plain ValueError/TypeError etc.
        raise WeirError(f"compiling the {PIPELINE_NAME} pipeline to {path} failed: {exc}") from exc
    return path


# --------------------------------------------------------------------------------------------
# Running it.


def _arguments(request: RetrainRequest) -> dict[str, Any]:
    return {
        "model": request.model,
        "run_id": request.run_id,
        "current_version": request.current_version or "",
        "alert_id": request.alert_id or "",
        "window_rows": request.window_rows,
        "holdout_fraction": request.holdout_fraction,
        "min_gain": request.min_gain,
        "max_p": 1 - request.confidence,
        "min_rows": MIN_ROWS,
        "since": request.since.isoformat() if request.since else "",
    }


def _check(request: RetrainRequest) -> None:
    if not 0 < request.holdout_fraction < 1:
        raise ConfigurationError(
            f"holdout_fraction must be between 0 and 1 (exclusive), got {request.holdout_fraction}"
        )
    if request.window_rows < 1:
        raise ConfigurationError(f"window_rows must be at least 1, got {request.window_rows}")
    if not math.isfinite(request.min_gain):
        raise ConfigurationError(f"min_gain must be a finite number, got {request.min_gain}")
    if request.since is not None and request.since.utcoffset() is None:
        raise ConfigurationError(f"since must be timezone-aware, got {request.since.isoformat()}")
    if not request.model or not request.run_id:
        raise ConfigurationError("a retraining request needs a model name and a run id")


@contextlib.contextmanager
def _weir_environment(settings: Settings) -> Iterator[None]:
    """Set os.environ's WEIR_* variables to ``settings`` for the block, and the numeric
    libraries' thread counts to ``fit_threads`` (the steps are child processes: they
    inherit both), then restore them."""

    def ours(key: str) -> bool:
        return key.startswith("WEIR_") or key in native_threads.VARIABLES

    wanted = {k: v for k, v in settings_env(settings).items() if k.startswith("WEIR_")}
    wanted.update(native_threads.thread_env(settings.retraining.fit_threads))
    saved = {k: v for k, v in os.environ.items() if ours(k)}
    for key in saved:
        os.environ.pop(key, None)
    os.environ.update(wanted)
    try:
        yield
    finally:
        for key in [k for k in os.environ if ours(k)]:
            os.environ.pop(key, None)
        os.environ.update(saved)


class _TailTee(io.TextIOBase):
    """Writes through to ``target`` and keeps the last lines (to explain a failed task)."""

    def __init__(self, target: TextIO, keep: int = 400) -> None:
        super().__init__()
        self._target = target
        self._partial = ""
        self.lines: deque[str] = deque(maxlen=keep)

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._target.write(text)
        parts = (self._partial + text).split("\n")
        self._partial = parts.pop()
        self.lines.extend(parts)
        return len(text)

    def flush(self) -> None:
        self._target.flush()


def last_exception_line(lines: Sequence[str]) -> str | None:
    """The ``Type: message`` line of the last Python traceback in ``lines``, if any."""
    starts = [
        i for i, line in enumerate(lines) if line.strip() == "Traceback (most recent call last):"
    ]
    if not starts:
        return None
    head = lines[starts[-1]]
    indent = len(head) - len(head.lstrip())
    for line in lines[starts[-1] + 1 :]:
        if line.strip() and len(line) - len(line.lstrip()) <= indent:
            return line.strip()
    return None


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# kfp warns that a non-"python" image may not match this interpreter. Locally the
# components run in this venv on purpose; the weir image is Python.
_IMAGE_WARNING = r"You may be attem\w* to run a task that uses custom or non-Python base image"


def _run_local(settings: Settings, arguments: dict[str, Any]) -> str | None:
    """Run the pipeline with kfp.local; returns why it failed, None when it completed."""
    root = settings.kfp.pipeline_root or settings.stack.run_dir / "kfp"
    with _LOCAL_RUN_LOCK, _weir_environment(settings), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_IMAGE_WARNING, category=RuntimeWarning)
        tee = _TailTee(sys.stdout)
        try:
            root.mkdir(parents=True, exist_ok=True)
            local.init(
                runner=local.SubprocessRunner(use_venv=False),
                pipeline_root=str(root),
                raise_on_error=True,
            )
            with contextlib.redirect_stdout(tee):
                retrain_pipeline(**arguments)
        except RuntimeError as exc:
            message = _ANSI.sub("", str(exc))
            if "finished with status FAILURE" not in message:
                raise PipelineError(
                    f"the kfp local runner failed: {message}",
                    address=f"local:{root}",
                    retriable=False,
                ) from exc
            detail = last_exception_line(list(tee.lines))
            if detail is None:
                return f"{message} (see the task log above)"
            return f"{message} {detail[:MAX_DETAIL]}"
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise PipelineError(
                f"the kfp local runner could not run {PIPELINE_NAME} under {root}: "
                f"{type(exc).__name__}: {exc}",
                address=f"local:{root}",
                retriable=False,
            ) from exc
    return None


def _run_cluster(settings: Settings, arguments: dict[str, Any], run_id: str) -> str | None:
    """Submit the pipeline to Kubeflow Pipelines and wait; returns why it failed, or None.

    Untested: there is no cluster in the test environment.
    """
    import kfp

    host = cast(str, settings.kfp.host)
    with tempfile.TemporaryDirectory(prefix="weir-kfp-") as tmp:
        package = compile_pipeline(Path(tmp) / "retrain.yaml")
        try:
            client = kfp.Client(host=host)
            run = client.create_run_from_pipeline_package(
                str(package),
                arguments=arguments,
                run_name=f"{PIPELINE_NAME}-{run_id}",
                enable_caching=False,
            )
            done = run.wait_for_run_completion(timeout=CLUSTER_TIMEOUT_S)
        except Exception as exc:  # kfp_server_api / urllib3 / TimeoutError: all at this boundary
            raise PipelineError(
                f"Kubeflow Pipelines at {host} could not run {PIPELINE_NAME} for {run_id}: "
                f"{type(exc).__name__}: {exc}; check WEIR_KFP__HOST",
                address=host,
            ) from exc
    state = str(getattr(done, "state", "") or "").upper()
    if state == "SUCCEEDED":
        return None
    return f"Kubeflow Pipelines run {run.run_id} at {host} ended {state or 'in an unknown state'}"


def _parse_result(raw: bytes, where: str) -> RetrainResult:
    try:
        data = json.loads(raw)
        status = data["status"]
        if status not in get_args(Status):
            raise ValueError(f"unknown status {status!r}")
        return RetrainResult(
            status=status,
            version=data.get("version"),
            metrics={str(k): float(v) for k, v in data.get("metrics", {}).items()},
            reason=str(data.get("reason", "")),
            storage_uri=data.get("storage_uri"),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise WeirError(f"the outcome stored at {where} is not valid: {exc}") from exc


def run_retrain(settings: Settings, request: RetrainRequest) -> RetrainResult:
    """Run the retraining pipeline once and report its outcome.

    Blocks until the run ends (locally: while holding the module's run lock).
    A run that ends without a new model is a result, not an exception:
    ``failed`` (too few rows, a failing step — the reason names it) or
    ``not-promoted``. Raises :class:`PipelineError` when Kubeflow Pipelines
    itself cannot run the pipeline, :class:`~schemas.ServiceError` when MinIO
    is unreachable, :class:`~schemas.ConfigurationError` for a bad request.
    """
    _check(request)
    store = ObjectStore(settings.minio)
    bucket = settings.minio.pipelines_bucket
    key = result_key(request.model, request.run_id)
    store.delete(bucket, key)  # a reused run id must not report an older outcome
    arguments = _arguments(request)
    if settings.kfp.host is None:
        failure = _run_local(settings, arguments)
    else:
        failure = _run_cluster(settings, arguments, request.run_id)
    try:
        raw = store.get_bytes(bucket, key)
    except ObjectNotFound:
        reason = failure or f"the {PIPELINE_NAME} run ended without recording an outcome"
        return RetrainResult("failed", None, {}, reason, None)
    return _parse_result(raw, f"s3://{bucket}/{key}")


def run_retrain_in_child(settings: Settings, request: RetrainRequest) -> RetrainResult:
    """:func:`run_retrain` in a child process of its own (``python -m connectors.pipeline run``).

    kfp's local runner swaps process-global state (``os.environ``, stdout,
    logging handlers) while it runs; in a child process that state is the
    child's, and a run that hangs or crashes cannot take the retrainer with it.
    The request goes in as JSON on stdin, the result comes back as the last
    line of stdout; the child's other output is passed through to the log.
    """
    payload = json.dumps(
        {**asdict(request), "since": request.since.isoformat() if request.since else None}
    )
    proc = subprocess.run(
        [sys.executable, "-m", "connectors.pipeline", "run"],
        input=payload,
        capture_output=True,
        text=True,
        env=settings_env(settings),
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return RetrainResult(
            "failed",
            None,
            {},
            f"pipeline process exited {proc.returncode}: {' | '.join(tail) or 'no output'}",
            None,
        )
    for line in proc.stdout.splitlines()[:-1]:
        log.debug("pipeline: %s", line)
    return RetrainResult(**json.loads(lines[-1]))


def _run_from_stdin() -> None:
    raw = json.loads(sys.stdin.read())
    since = raw.pop("since")
    request = RetrainRequest(**raw, since=datetime.fromisoformat(since) if since else None)
    result = run_retrain(Settings(), request)
    sys.stdout.flush()
    print(json.dumps(asdict(result)), flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m connectors.pipeline [PATH]``: (re)write the checked-in pipeline YAML.

    ``python -m connectors.pipeline run`` runs one retraining request read from
    stdin (see :func:`run_retrain_in_child`).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["run"]:
        _run_from_stdin()
        return
    default = Path(__file__).resolve().parents[1] / "deploy" / "pipelines" / "retrain.yaml"
    print(compile_pipeline(Path(args[0]) if args else default))


if __name__ == "__main__":
    main()
