"""What the peer processes of ``bench/peers.py`` share: their settings, the record
decoding, the V2 request and the prediction message.

Standard library only: it is imported by ``peer_loop.py`` (weir's venv) and by
``peer_quix.py`` (the Quix venv, which has no weir). The prediction written here is
the same binary-mode ``io.weir.prediction.v1`` CloudEvent the weir worker writes:
same headers, same JSON body layout, so every system produces the same bytes per
prediction (bar the event id and times).
"""

from __future__ import annotations

import json
import os
import signal
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

FEATURES = [f"x{i}" for i in range(8)]


@dataclass(frozen=True)
class PeerEnv:
    """The ``PEER_*`` environment the harness passes to every peer process."""

    bootstrap: str
    records: str
    predictions: str
    group: str
    model: str
    version: str
    url: str
    session_timeout_ms: int
    fetch_wait_ms: int
    batch_size: int
    batch_wait_s: float
    state_dir: str

    @classmethod
    def from_environ(cls) -> PeerEnv:
        e = os.environ
        return cls(
            bootstrap=e["PEER_BOOTSTRAP"],
            records=e["PEER_RECORDS"],
            predictions=e["PEER_PREDICTIONS"],
            group=e["PEER_GROUP"],
            model=e["PEER_MODEL"],
            version=e["PEER_VERSION"],
            url=e["PEER_URL"],
            session_timeout_ms=int(e["PEER_SESSION_TIMEOUT_MS"]),
            fetch_wait_ms=int(e["PEER_FETCH_WAIT_MS"]),
            batch_size=int(e["PEER_BATCH_SIZE"]),
            batch_wait_s=float(e["PEER_BATCH_WAIT_S"]),
            state_dir=e["PEER_STATE_DIR"],
        )

    @property
    def infer_url(self) -> str:
        return f"{self.url}/v2/models/{self.model}/infer"

    def consumer_config(self) -> dict[str, Any]:
        """The consumer knobs weir sets too (session timeout, fetch wait); the rest default."""
        return {
            "session.timeout.ms": self.session_timeout_ms,
            "heartbeat.interval.ms": max(500, self.session_timeout_ms // 4),
            "fetch.wait.max.ms": self.fetch_wait_ms,
        }

    def producer_config(self) -> dict[str, Any]:
        """weir's EventProducer settings: acks=all, idempotent, linger 5 ms."""
        return {"acks": "all", "enable.idempotence": True, "linger.ms": 5}


def decode_record(value: bytes | dict[str, Any]) -> tuple[str, list[float]]:
    """Record id and feature row of an ``io.weir.record.v1`` body (JSON bytes or parsed)."""
    data = json.loads(value) if isinstance(value, bytes | str) else value
    features = data["features"]
    return data["id"], [float(features[f]) for f in FEATURES]


def v2_request(rows: list[list[float]]) -> dict[str, Any]:
    """One Open Inference Protocol (V2) request for ``rows`` (same body as weir sends)."""
    return {
        "inputs": [
            {
                "name": "input-0",
                "shape": [len(rows), len(FEATURES)],
                "datatype": "FP64",
                "data": [v for row in rows for v in row],
            }
        ]
    }


def v2_labels(body: dict[str, Any], n: int) -> list[Any]:
    labels = list(body["outputs"][0]["data"])
    if len(labels) != n:
        raise RuntimeError(f"{len(labels)} predictions for {n} rows")
    return labels


def _now() -> bytes:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ").encode()


def prediction(
    env: PeerEnv, record_id: str, label: Any, latency_ms: float, source: str
) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """(key, value, headers) of the prediction CloudEvent for one record."""
    body = {
        "record_id": record_id,
        "model": env.model,
        "version": env.version,
        "url": env.url,
        "output": label,
        "scores": None,
        "latency_ms": latency_ms,
    }
    headers = [
        ("content-type", b"application/json"),
        ("ce_specversion", b"1.0"),
        ("ce_id", str(uuid.uuid4()).encode()),
        ("ce_source", source.encode()),
        ("ce_type", b"io.weir.prediction.v1"),
        ("ce_time", _now()),
        ("ce_modelname", env.model.encode()),
        ("ce_modelversion", env.version.encode()),
    ]
    value = json.dumps(body, separators=(",", ":")).encode()
    return record_id.encode(), value, headers


def on_stop(callback: Any) -> None:
    """Call ``callback()`` on SIGTERM or SIGINT (the harness stops peers by PID)."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: callback())
