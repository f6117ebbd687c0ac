"""Serve a registry model with ``kserve.ModelServer`` over REST (V1 and V2 protocols).

Run one server per process: ``weir serve NAME --version V --port P`` or
``python -m streams.servers.model_server NAME V PORT``. Two kserve 0.21 traps are
handled here, in this process only:

* importing ``kserve`` parses ``sys.argv`` (``parse_known_args``, with prefix
  abbreviations), so argv is reset before the import;
* the REST server binds ``0.0.0.0`` with no option to change it, so its class
  is replaced by a subclass that binds ``WEIR_KSERVE__BIND_HOST`` (loopback by
  default). gRPC is disabled (it would bind ``[::]``).

Every request used to write five log lines: uvicorn's access line, KServe's
two timing lines, and FastAPI's deprecation warning for the ``ORJSONResponse``
KServe uses (shown again on every call, as sklearn's ``catch_warnings`` resets
Python's warning registry, so even a "once" filter does not hold). The warning
is not shown (it is KServe's to fix); the request lines only with
``WEIR_KSERVE__REQUEST_LOG=true`` (request counts and latencies are in KServe's
Prometheus metrics either way).

Endpoints: ``GET /v1/models/NAME`` (ready), ``POST /v1/models/NAME:predict``
(``{"instances": [[...], ...]}``), ``GET /v2/models/NAME/ready``,
``GET /v2/models/NAME`` (metadata), ``POST /v2/models/NAME/infer``. Responses
carry the model version (V1: ``model_version`` key; V2: ``model_version``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from typing import Any

import numpy as np

from connectors.native_threads import limit_threads
from connectors.predictor import predict_batch, score_batch
from connectors.process import ServiceProcess
from connectors.registry import LoadedModel, ModelRegistry
from schemas.settings import Settings, settings_env


def _kserve_model_class() -> type:
    import kserve
    from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

    class WeirModel(kserve.Model):
        """A registry model behind KServe's V1 and V2 REST data planes."""

        def __init__(self, name: str, version: str, registry: ModelRegistry) -> None:
            super().__init__(name)
            self.version = version
            self._registry = registry
            self._model: LoadedModel | None = None

        def load(self) -> bool:
            self._model = self._registry.load(self.name, self.version)
            self.ready = True
            return True

        async def predict(
            self, payload: Any, headers: dict[str, str] | None = None, response_headers: Any = None
        ) -> Any:
            assert self._model is not None
            if isinstance(payload, InferRequest):
                rows = payload.inputs[0].as_numpy().astype(np.float64)
                labels, classes, table = score_batch(self._model, rows.reshape(len(rows), -1))
                arr = np.asarray(labels)
                out = InferOutput(
                    name="label",
                    shape=[len(labels)],
                    datatype="INT64" if arr.dtype.kind in "iu" else "FP64",
                )
                out.set_data_from_numpy(
                    arr.astype(np.int64 if arr.dtype.kind in "iu" else np.float64)
                )
                outputs = [out]
                if classes is not None and table is not None:
                    # one row per record, one column per class (named in parameters)
                    scores = InferOutput(
                        name="probabilities",
                        shape=[len(labels), len(classes)],
                        datatype="FP64",
                        parameters={"classes": json.dumps(classes)},
                    )
                    scores.set_data_from_numpy(table)
                    outputs.append(scores)
                return InferResponse(
                    response_id=payload.id or "",
                    model_name=self.name,
                    model_version=self.version,
                    infer_outputs=outputs,
                )
            if isinstance(payload, bytes | str):  # sent without a JSON content type
                payload = json.loads(payload)
            rows = np.asarray(payload["instances"], dtype=np.float64)
            labels, probs = predict_batch(self._model, rows)
            body: dict[str, Any] = {
                "predictions": labels,
                "model_name": self.name,
                "model_version": self.version,
            }
            if probs is not None:
                body["probabilities"] = probs
            return body

    return WeirModel


def serve(settings: Settings, name: str, version: str, port: int) -> None:
    """Load ``name``/``version`` from the registry and serve it until signalled, reading
    MinIO as its read-only user (WEIR_MINIO__READER_ACCESS_KEY) when there is one."""
    settings = settings.as_model_reader()
    limit_threads(settings.kserve.threads)  # before the model's libraries load
    sys.argv = [sys.argv[0]]  # kserve parses argv at import
    import kserve
    import kserve.model_server as kms
    from kserve.protocol.rest.server import RESTServer

    bind_host, request_log = settings.kserve.bind_host, settings.kserve.request_log
    # KServe's deprecated ORJSONResponse, not weir's: "once" does not hold (see above)
    warnings.filterwarnings("ignore", message="ORJSONResponse is deprecated")

    class BoundRESTServer(RESTServer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.config.host = bind_host

    kms.RESTServer = BoundRESTServer
    registry = ModelRegistry.for_settings(settings)
    model = _kserve_model_class()(name, version, registry)
    model.load()
    server = kserve.ModelServer(
        http_port=port, enable_grpc=False, workers=1, enable_latency_logging=False
    )
    if not request_log:  # its logging is configured by now
        for logger in ("uvicorn.access", "kserve.trace"):
            logging.getLogger(logger).setLevel(logging.WARNING)
    server.start([model])


def server_process(settings: Settings, name: str, version: str, port: int) -> ServiceProcess:
    """The PID/log bookkeeping of one model server started in the background."""
    return ServiceProcess(
        f"model-{name}-{version}-{port}",
        settings.stack.run_dir,
        marker=f"streams.servers.model_server {name} {version} {port}",
    )


def local_servers(settings: Settings) -> list[tuple[str, str, int]]:
    """(model, version, port) of every model server started under this stack's state dir
    (by its PID file; one that exited may still be listed: stopping it is a no-op)."""
    found = []
    for pid_file in sorted(settings.stack.run_dir.glob("model-*.pid")):
        name = pid_file.name.removesuffix(".pid").removeprefix("model-")
        model, version, port = name.rsplit("-", 2)
        found.append((model, version, int(port)))
    return found


def start_server(settings: Settings, name: str, version: str, port: int) -> int:
    """Start ``python -m streams.servers.model_server`` in the background; returns its PID."""
    proc = server_process(settings, name, version, port)
    argv = [sys.executable, "-m", "streams.servers.model_server", name, version, str(port)]
    # it only reads models: it is not given the writer's MinIO keys
    return proc.start(argv, env=settings_env(settings.as_model_reader()))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m streams.servers.model_server")
    parser.add_argument("name")
    parser.add_argument("version")
    parser.add_argument("port", type=int)
    args = parser.parse_args()
    serve(Settings(), args.name, args.version, args.port)


if __name__ == "__main__":
    main()
