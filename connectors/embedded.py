"""Embedded routes: a registry version scored inside the calling process.

An embedded route (protocol ``embedded``, url ``embedded://<model>/<registry
version>``) names a snapshot of an online learner in the model registry. The
scoring process loads it — through :class:`~connectors.registry.ModelRegistry`,
so an unsigned card or a replaced artifact is refused before anything is
unpickled — and predicts in a worker thread, with no model server between.

:class:`ModelClient` is the scoring roles' one client: it answers embedded
routes itself and sends every other route to its KServe server
(:class:`~connectors.kserve_client.InferenceClient`), so the scoring, shadow,
speculation and control paths need not know which kind a route is.

Loading is bounded in time and paused after a failure (:class:`~connectors.bounded.Bounded`):
while MinIO is away an embedded route is *unavailable*, exactly like a model
server that does not answer — the records wait and are retried, never skipped.
The newest ``keep`` snapshots stay loaded.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from connectors.bounded import Bounded
from connectors.kserve_client import InferenceClient, InferenceResult, ModelServerError, Protocol
from connectors.minio_store import ObjectNotFound
from schemas import ServiceError
from schemas.payloads import embedded_target, embedded_url
from schemas.settings import KServeSettings

if TYPE_CHECKING:
    from connectors.registry import LoadedModel, ModelRegistry

LOAD_TIMEOUT_S = 60.0  # a large forest from a busy MinIO
LOAD_PAUSE_S = 2.0


class EmbeddedModels:
    """Registry snapshots loaded into this process, the newest ``keep`` of them."""

    def __init__(self, registry: Callable[[], ModelRegistry], *, keep: int = 4) -> None:
        self._registry_factory = registry
        self._registry: ModelRegistry | None = None
        self._keep = keep
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()
        self._loading: dict[str, asyncio.Task[LoadedModel]] = {}
        self._minio = Bounded(LOAD_TIMEOUT_S, pause_s=LOAD_PAUSE_S)

    def _load_now(self, model: str, version: str) -> LoadedModel | ServiceError:
        """The snapshot, or the registry's final answer why not (returned, not raised, so
        that a missing or refused snapshot does not pause loading as MinIO away does)."""
        if self._registry is None:
            self._registry = self._registry_factory()
        try:
            # a snapshot pruned since its route was sent (a worker replaying the control
            # topic meets the take-over's): the newest of the same learner stands in
            return self._registry.load_or_newer(model, version)
        except ServiceError as err:
            if err.retriable and not isinstance(err, ObjectNotFound):
                raise
            return err

    async def load(self, url: str, model: str) -> LoadedModel:
        """The snapshot ``url`` names; a ModelServerError saying why it cannot be had."""
        found = self._loaded.get(url)
        if found is not None:
            self._loaded.move_to_end(url)
            return found
        task = self._loading.get(url)
        if task is None:  # one load per snapshot, however many batches ask meanwhile
            task = self._loading[url] = asyncio.ensure_future(self._fetch(url, model))
            task.add_done_callback(lambda _t: self._loading.pop(url, None))
        return await asyncio.shield(task)

    async def _fetch(self, url: str, model: str) -> LoadedModel:
        try:
            named, version = embedded_target(url)
        except ValueError as err:
            raise ModelServerError(
                str(err), model=model, url=url, status=400, retriable=False
            ) from err
        if named != model:
            raise ModelServerError(
                f"embedded route {url} is not a route of {model}",
                model=model,
                url=url,
                status=400,
                retriable=False,
            )
        if self._minio.paused:
            raise _unavailable(model, url, "the registry did not answer a moment ago")
        try:
            loaded = await self._minio.call(self._load_now, model, version)
        except TimeoutError as err:
            raise _unavailable(model, url, f"loading took over {LOAD_TIMEOUT_S:.0f}s") from err
        except ServiceError as err:
            raise _unavailable(model, url, str(err)) from err
        if isinstance(loaded, ObjectNotFound):
            raise ModelServerError(
                f"embedded model {url} is not in the registry: {loaded}",
                model=model,
                url=url,
                status=404,
                retriable=False,
            ) from loaded
        if isinstance(loaded, ServiceError):  # refused: unsigned, wrong digest
            raise ModelServerError(
                str(loaded), model=model, url=url, status=403, retriable=False
            ) from loaded
        self._loaded[url] = loaded
        if loaded.card.version != version:  # a stand-in: its own route (a refresh) finds it
            self._loaded[embedded_url(model, loaded.card.version)] = loaded
        while len(self._loaded) > self._keep:
            self._loaded.popitem(last=False)
        return loaded

    async def predict(
        self, url: str, model: str, rows: Sequence[Sequence[float]]
    ) -> InferenceResult:
        from connectors.predictor import predict_batch  # numpy, and river's model on first use

        loaded = await self.load(url, model)
        started = time.perf_counter()
        try:
            labels, probabilities = await asyncio.to_thread(
                predict_batch, loaded, np.asarray(rows, dtype=np.float64)
            )
        except ValueError as err:  # rows that do not fit the snapshot's features
            raise ModelServerError(
                f"embedded model {url}: {err}", model=model, url=url, status=400, retriable=False
            ) from err
        latency_ms = (time.perf_counter() - started) * 1000
        return InferenceResult(labels, probabilities, loaded.card.version, latency_ms)

    async def ready(self, url: str, model: str) -> bool:
        try:
            await self.load(url, model)
        except ModelServerError:
            return False
        return True


def _unavailable(model: str, url: str, why: str) -> ModelServerError:
    return ModelServerError(
        f"embedded model {url} cannot be loaded now: {why}",
        model=model,
        url=url,
        status=None,
        retriable=True,
    )


class ModelClient(InferenceClient):
    """KServe servers over HTTP, and embedded routes in this process."""

    def __init__(
        self,
        settings: KServeSettings,
        registry: Callable[[], ModelRegistry],
        **kw: Any,
    ) -> None:
        super().__init__(settings, **kw)
        self.embedded = EmbeddedModels(registry)

    async def predict(
        self,
        url: str,
        model: str,
        protocol: Protocol,
        rows: Sequence[Sequence[float]],
        *,
        attempts: int | None = None,
    ) -> InferenceResult:
        if protocol == "embedded":
            return await self.embedded.predict(url, model, rows)
        return await super().predict(url, model, protocol, rows, attempts=attempts)

    async def ready(self, url: str, model: str, protocol: Protocol) -> bool:
        if protocol == "embedded":
            return await self.embedded.ready(url, model)
        return await super().ready(url, model, protocol)
