"""Async client for KServe's V1 and V2 (Open Inference Protocol) REST data planes.

The URL is passed on every call — the scoring agent takes it from the routing
state, so a hot swap is a data change, never a global. Model calls go through
one pooled ``aiohttp.ClientSession``: measured against httpx on loopback, an
httpx call cost about 0.7 ms more and left ~40 objects in reference cycles per
call, which the cyclic GC then freed in 10 to 50 ms pauses on the scoring path; an
aiohttp call leaves none. Readiness probes use a pooled ``httpx.AsyncClient``,
and tests inject an httpx transport, which then carries the model calls too.
Timeouts always on,
retries with exponential backoff and jitter (tenacity) on retriable failures
only: connection errors, timeouts, 429 and 5xx. Everything else is translated
into :class:`ModelServerError` here, with ``retriable`` telling the caller
whether to wait and try again or to dead-letter, and ``unavailable`` telling a
server that is down or busy (no answer, a timeout, 408/425/429/502/503/504 —
worth waiting for without limit) from one that answered with an error (500, a
4xx, a malformed body — maybe because of the input, so a caller isolates the
records and gives each a bounded number of attempts). Only unavailability is
retried here.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx
from pydantic_core import from_json, to_json

from connectors.retrying import retried
from schemas import ServiceError
from schemas.payloads import RouteProtocol
from schemas.settings import KServeSettings

Protocol = RouteProtocol  # "embedded" routes are answered by connectors.embedded.ModelClient
UNAVAILABLE_STATUS = frozenset({408, 425, 429, 502, 503, 504})
RETRIABLE_STATUS = UNAVAILABLE_STATUS | {500}
RETRY_FIRST_WAIT_S = 0.05  # then doubling, plus up to RETRY_JITTER_S
RETRY_MAX_WAIT_S = 2.0
RETRY_JITTER_S = 0.05


class ModelServerError(ServiceError):
    """A model server call failed; ``status`` is the HTTP status if there was one."""

    def __init__(
        self, message: str, *, model: str, url: str, status: int | None, retriable: bool
    ) -> None:
        super().__init__(message, service="model-server", address=url, retriable=retriable)
        self.model = model
        self.url = url
        self.status = status

    @property
    def unavailable(self) -> bool:
        """The server is down or busy (rather than failing on what it was sent)."""
        return self.retriable and (self.status is None or self.status in UNAVAILABLE_STATUS)


@dataclass(frozen=True)
class InferenceResult:
    labels: list[int | float | str]
    probabilities: list[dict[str, float]] | None
    model_version: str | None
    latency_ms: float


JSON_HEADERS = {"content-type": "application/json"}


def predict_path(model: str, protocol: Protocol) -> str:
    return f"/v1/models/{model}:predict" if protocol == "v1" else f"/v2/models/{model}/infer"


def ready_path(model: str, protocol: Protocol) -> str:
    return f"/v1/models/{model}" if protocol == "v1" else f"/v2/models/{model}/ready"


def _request_body(protocol: Protocol, rows: Sequence[Sequence[float]]) -> dict[str, Any]:
    if protocol == "v1":
        return {"instances": [list(r) for r in rows]}
    width = len(rows[0]) if rows else 0
    return {
        "inputs": [
            {
                "name": "input-0",
                "shape": [len(rows), width],
                "datatype": "FP64",
                "data": [float(v) for r in rows for v in r],
            }
        ]
    }


def _parse(protocol: Protocol, body: dict[str, Any], n: int) -> tuple[list[Any], Any, Any]:
    if protocol == "v1":
        labels = list(body["predictions"])
        return labels, body.get("probabilities"), body.get("model_version")
    outputs = {o["name"]: o for o in body["outputs"]}
    first = body["outputs"][0]
    labels = list(outputs.get("label", first)["data"])
    return labels, _v2_probabilities(outputs.get("probabilities"), n), body.get("model_version")


def _v2_probabilities(output: dict[str, Any] | None, n: int) -> list[dict[str, float]] | None:
    """A V2 ``probabilities`` output ([n, classes], flat data) as one dict per row.

    Class names come from the output's ``classes`` parameter (a JSON list, as
    weir's model server sends it), else ``"0"``..``"k-1"``.
    """
    if output is None:
        return None
    rows, width = output["shape"]
    data = output["data"]
    if rows != n or len(data) != rows * width:
        raise ValueError(f"probabilities of shape {output['shape']} for {n} rows")
    raw = (output.get("parameters") or {}).get("classes")
    classes = [str(c) for c in json.loads(raw)] if raw else [str(i) for i in range(width)]
    if len(classes) != width:
        raise ValueError(f"{len(classes)} class names for {width} probability columns")
    return [
        dict(zip(classes, map(float, data[i * width : (i + 1) * width]), strict=True))
        for i in range(rows)
    ]


class InferenceClient:
    def __init__(
        self,
        settings: KServeSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 20,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._settings = settings
        self._sleep = sleep
        self._max_connections = max_connections
        self._injected = transport is not None  # tests: model calls through httpx as well
        self._session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None
        self._http = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(settings.timeout_s, connect=min(settings.timeout_s, 5.0)),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
        )

    async def aclose(self) -> None:
        await self._http.aclose()
        if self._session is not None and self._session_loop is asyncio.get_running_loop():
            await self._session.close()
        self._session = None

    def _model_session(self) -> aiohttp.ClientSession:
        """The model calls' session, opened on first use in the running loop (one per loop)."""
        loop = asyncio.get_running_loop()
        if self._session is None or self._session_loop is not loop:
            timeout_s = self._settings.timeout_s
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections),
                timeout=aiohttp.ClientTimeout(total=timeout_s, connect=min(timeout_s, 5.0)),
            )
            self._session_loop = loop
        return self._session

    async def _post(self, target: str, body: bytes) -> tuple[int, bytes]:
        """POST a JSON body; the answer's status and body."""
        if self._injected:
            resp = await self._http.post(target, content=body, headers=JSON_HEADERS)
            return resp.status_code, resp.content
        async with self._model_session().post(target, data=body, headers=JSON_HEADERS) as answer:
            return answer.status, await answer.read()

    async def __aenter__(self) -> InferenceClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def _post_once(
        self, url: str, model: str, protocol: Protocol, rows: Sequence[Sequence[float]]
    ) -> InferenceResult:
        if protocol == "embedded":
            raise ModelServerError(
                f"{url} is an embedded route: this client calls model servers only",
                model=model,
                url=url,
                status=None,
                retriable=False,
            )
        target = url.rstrip("/") + predict_path(model, protocol)
        started = time.perf_counter()
        try:
            # pydantic-core's JSON (Rust) both ways: a few times faster than the stdlib's
            # on a 256-row body, and this runs once per batch on the scoring path
            status, content = await self._post(target, to_json(_request_body(protocol, rows)))
        except (httpx.TimeoutException, TimeoutError) as exc:
            raise ModelServerError(
                f"model {model} at {url} timed out after {self._settings.timeout_s}s",
                model=model,
                url=url,
                status=None,
                retriable=True,
            ) from exc
        except (httpx.TransportError, aiohttp.ClientError) as exc:
            raise ModelServerError(
                f"model {model} at {url} is unreachable: {exc!r}",
                model=model,
                url=url,
                status=None,
                retriable=True,
            ) from exc
        latency_ms = (time.perf_counter() - started) * 1000
        if status != 200:
            text = content[:300].decode("utf-8", "replace")
            raise ModelServerError(
                f"model {model} at {url} answered {status}: {text}",
                model=model,
                url=url,
                status=status,
                retriable=status in RETRIABLE_STATUS,
            )
        try:
            labels, probs, version = _parse(protocol, from_json(content), len(rows))
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise ModelServerError(
                f"model {model} at {url} sent an unexpected {protocol} response: {exc!r}",
                model=model,
                url=url,
                status=status,
                retriable=False,
            ) from exc
        if len(labels) != len(rows):
            raise ModelServerError(
                f"model {model} at {url} returned {len(labels)} predictions for {len(rows)} rows",
                model=model,
                url=url,
                status=status,
                retriable=False,
            )
        return InferenceResult(labels, probs, None if version is None else str(version), latency_ms)

    async def predict(
        self,
        url: str,
        model: str,
        protocol: Protocol,
        rows: Sequence[Sequence[float]],
        *,
        attempts: int | None = None,
    ) -> InferenceResult:
        """Score ``rows``; retries while the server is unavailable, then raises the last error.

        The first call goes out directly: tenacity's machinery (a few dozen objects in
        reference cycles per use, freed only by the cyclic GC) is built only for retries,
        which wait 0.05 s, 0.1 s, 0.2 s … (at most 2 s) plus up to 0.05 s of jitter.
        """
        return await retried(
            lambda: self._post_once(url, model, protocol, rows),
            attempts=1 + (self._settings.max_retries if attempts is None else attempts - 1),
            retriable=lambda e: isinstance(e, ModelServerError) and e.unavailable,
            first_wait_s=RETRY_FIRST_WAIT_S,
            max_wait_s=RETRY_MAX_WAIT_S,
            jitter_s=RETRY_JITTER_S,
            sleep=self._sleep,
        )

    async def ready(self, url: str, model: str, protocol: Protocol) -> bool:
        """True when the server says the model is ready; False when down or not ready."""
        if protocol == "embedded":  # not a server: see connectors.embedded.ModelClient
            return False
        try:
            resp = await self._http.get(url.rstrip("/") + ready_path(model, protocol))
        except httpx.HTTPError:
            return False
        if resp.status_code != 200:
            return False
        try:
            return bool(resp.json().get("ready", False))
        except ValueError:
            return False

    async def wait_ready(
        self, url: str, model: str, protocol: Protocol, *, timeout_s: float, interval_s: float = 0.2
    ) -> float:
        """Poll the readiness endpoint until ready; returns seconds waited.

        Raises a retriable ModelServerError when ``timeout_s`` passes first.
        """
        started = time.monotonic()
        while not await self.ready(url, model, protocol):
            if time.monotonic() - started > timeout_s:
                raise ModelServerError(
                    f"model {model} at {url} was not ready within {timeout_s:.0f}s",
                    model=model,
                    url=url,
                    status=None,
                    retriable=True,
                )
            await self._sleep(interval_s)
        return time.monotonic() - started
