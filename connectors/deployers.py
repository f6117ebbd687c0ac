"""Getting a registered model version served, and the URL to route to.

The retraining agent and ``weir models bootstrap`` call ``deploy(model,
version)`` on a :class:`Deployer` and put the URL it returns into an
``activate`` event. Which deployer is used is one setting,
``WEIR_KSERVE__DEPLOYER`` (``streams.servers.deployers.deployer_for``):

* ``local`` — ``streams.servers.deployers.LocalDeployer`` starts a
  kserve.ModelServer child process on a free loopback port. For one machine:
  the demo, the tests.
* ``host`` — :class:`HostDeployer` (here: a client of an HTTP API) asks the
  model host (:mod:`streams.servers.model_host`, ``WEIR_KSERVE__HOST_URL``) to
  serve it, so the URL is one every worker can reach (docker-compose, several
  workers).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import httpx
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from schemas import ServiceError
from schemas.deployments import Deployment, DeploymentRequest
from schemas.settings import Settings

# kserve import and the model load from MinIO take ~5-10 s; the host waits up to 90 s
HOST_TIMEOUT_S = 120.0


class Deployer(Protocol):
    def deploy(self, model: str, version: str) -> str:
        """Make ``model``/``version`` servable and return its URL once it is ready."""
        ...

    def retire_unrouted(self, model: str, *, besides: str) -> list[str]:
        """Stop the servers of ``model`` no route points at, but the newest
        ``WEIR_KSERVE__KEEP_UNROUTED`` and ``besides``; returns the versions stopped."""
        ...


class HostDeployer:
    """Asks the model host to serve a version; retries while the host is unreachable."""

    def __init__(
        self,
        settings: Settings,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        assert settings.kserve.host_url is not None  # the settings validator requires it
        self._base = settings.kserve.host_url.rstrip("/")
        token = settings.kserve.host_token
        self._headers = (
            {} if token is None else {"authorization": f"Bearer {token.get_secret_value()}"}
        )
        self._attempts = settings.kserve.max_retries + 1
        self._transport = transport
        self._sleep = sleep  # injectable so tests do not wait out the backoff

    def _post(self, body: DeploymentRequest) -> Deployment:
        url = f"{self._base}/v1/deployments"
        try:
            with httpx.Client(timeout=HOST_TIMEOUT_S, transport=self._transport) as client:
                answer = client.post(url, json=body.model_dump(), headers=self._headers)
        except httpx.TransportError as exc:
            raise ServiceError(
                f"model host at {self._base} did not answer ({type(exc).__name__}: {exc}); "
                f"check WEIR_KSERVE__HOST_URL",
                service="model-host",
                address=self._base,
            ) from exc
        if answer.status_code in (200, 201):
            return Deployment.model_validate_json(answer.content)
        raise ServiceError(
            f"model host at {self._base} answered {answer.status_code} for "
            f"{body.model} version {body.version}: {answer.text[:500]}",
            service="model-host",
            address=self._base,
            retriable=answer.status_code >= 500,
        )

    def retire_unrouted(self, model: str, *, besides: str) -> list[str]:
        """Nothing: the model host retires old versions itself, after each new one."""
        return []

    def deploy(self, model: str, version: str) -> str:
        request = DeploymentRequest(model=model, version=version)
        for attempt in Retrying(
            retry=retry_if_exception(lambda e: isinstance(e, ServiceError) and e.retriable),
            stop=stop_after_attempt(self._attempts),
            wait=wait_exponential_jitter(multiplier=0.5, max=10.0),
            reraise=True,
            sleep=self._sleep,
        ):
            with attempt:
                return self._post(request).url
        raise AssertionError("unreachable")  # pragma: no cover  (Retrying re-raises)
