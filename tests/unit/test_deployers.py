"""HostDeployer against an in-process transport (retries, errors), the deployer settings."""

from __future__ import annotations

import json

import httpx
import pytest
from pydantic import ValidationError

from connectors.deployers import HostDeployer
from schemas import ServiceError
from schemas.settings import KServeSettings, Settings
from streams.servers.deployers import LocalDeployer, deployer_for
from tests.helpers import Recorder

HOST = "http://model-host.test:9100"
MODEL_URL = "http://10.0.0.7:9200"


def deployment(version: str = "1") -> dict[str, object]:
    return {"model": "churn", "version": version, "port": 9200, "url": MODEL_URL, "pid": 42}


def host_settings(max_retries: int = 3) -> Settings:
    return Settings(
        kserve=KServeSettings(deployer="host", host_url=HOST + "/", max_retries=max_retries)
    )


def deployer(script: Recorder, sleeps: list[float], max_retries: int = 3) -> HostDeployer:
    return HostDeployer(
        host_settings(max_retries), transport=httpx.MockTransport(script), sleep=sleeps.append
    )


def test_a_503_is_retried_then_the_deployment_url_is_returned():
    script = Recorder(
        httpx.Response(503, json={"error": "ServerNotReady", "reason": "loading"}),
        httpx.Response(503, json={"error": "ServerNotReady", "reason": "loading"}),
        httpx.Response(201, json=deployment()),
    )
    sleeps: list[float] = []
    assert deployer(script, sleeps).deploy("churn", "1") == MODEL_URL
    assert len(script.requests) == 3
    assert len(sleeps) == 2 and all(0 < s <= 10.0 for s in sleeps), "backoff, not real sleeps"
    for request in script.requests:
        assert request.method == "POST"
        assert str(request.url) == f"{HOST}/v1/deployments"  # trailing slash of host_url dropped
        assert json.loads(request.content) == {"model": "churn", "version": "1"}


def test_an_existing_deployment_200_is_accepted():
    script = Recorder(httpx.Response(200, json=deployment("2")))
    sleeps: list[float] = []
    assert deployer(script, sleeps).deploy("churn", "2") == MODEL_URL
    assert len(script.requests) == 1 and sleeps == []


def test_an_unreachable_host_is_retried_then_named_in_the_error():
    script = Recorder(httpx.ConnectError("connection refused"))
    sleeps: list[float] = []
    with pytest.raises(ServiceError) as info:
        deployer(script, sleeps, max_retries=2).deploy("churn", "1")
    assert len(script.requests) == 3  # 1 + max_retries
    assert len(sleeps) == 2
    err = info.value
    assert err.retriable and err.address == HOST and err.service == "model-host"
    assert HOST in err.message and "WEIR_KSERVE__HOST_URL" in err.message
    assert "ConnectError" in err.message
    assert isinstance(err.__cause__, httpx.ConnectError)


def test_a_404_is_raised_at_once_without_retrying():
    reason = "churn version 9 is not in the registry (s3://models/churn/; versions: 1, 2)"
    script = Recorder(httpx.Response(404, json={"error": "NotRegistered", "reason": reason}))
    sleeps: list[float] = []
    with pytest.raises(ServiceError) as info:
        deployer(script, sleeps).deploy("churn", "9")
    assert len(script.requests) == 1 and sleeps == []
    assert not info.value.retriable
    assert "404" in info.value.message and "versions: 1, 2" in info.value.message


def test_a_400_is_not_retried_either():
    script = Recorder(httpx.Response(400, json={"error": "BadRequest", "reason": "bad name"}))
    sleeps: list[float] = []
    with pytest.raises(ServiceError) as info:
        deployer(script, sleeps).deploy("churn", "1")
    assert len(script.requests) == 1 and not info.value.retriable


def test_deployer_host_needs_a_host_url():
    with pytest.raises(ValidationError, match="WEIR_KSERVE__HOST_URL"):
        KServeSettings(deployer="host")
    assert KServeSettings(deployer="host", host_url=HOST).host_url == HOST


@pytest.mark.parametrize(("low", "high"), [(9200, 0), (0, 9200), (9300, 9200)])
def test_a_half_set_or_inverted_port_range_is_rejected(low: int, high: int):
    with pytest.raises(ValidationError, match="WEIR_KSERVE__PORT_MIN/PORT_MAX"):
        KServeSettings(port_min=low, port_max=high)


def test_a_port_range_or_none_is_accepted():
    assert KServeSettings(port_min=9200, port_max=9209).port_max == 9209
    assert KServeSettings(port_min=9200, port_max=9200).port_min == 9200
    assert KServeSettings().port_min == KServeSettings().port_max == 0


def test_deployer_for_picks_the_configured_deployer():
    assert isinstance(deployer_for(Settings()), LocalDeployer)
    assert isinstance(
        deployer_for(Settings(kserve=KServeSettings(deployer="local"))), LocalDeployer
    )
    assert isinstance(deployer_for(host_settings()), HostDeployer)


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        (httpx.Response(200, json=deployment("1")), ""),  # still served: the same URL
        (
            httpx.Response(201, json=deployment("1") | {"url": "http://10.0.0.7:9300"}),
            "the model host serves it again at http://10.0.0.7:9300",
        ),
    ],
)
def test_a_rollback_through_the_model_host_asks_the_host_not_the_url(monkeypatch, answer, said):
    """The CLI may not reach the host's servers (compose's network, from the host): the
    model host is asked what serves the version, and serves it again if it retired it."""
    from rich.console import Console

    import streams.cli.models as models
    import streams.servers.deployers as deployers
    from agents.routing import Route

    script, printed = Recorder(answer), Console(record=True, width=200)
    monkeypatch.setattr(
        deployers,
        "deployer_for",
        lambda s: HostDeployer(s, transport=httpx.MockTransport(script), sleep=lambda _: None),
    )
    monkeypatch.setattr(models, "_answers", lambda *a: pytest.fail("probed the URL from here"))
    monkeypatch.setattr(models, "console", printed)
    route = Route(model="churn", version="1", url=MODEL_URL, protocol="v2")
    url = models._served_url(host_settings(), "churn", route)
    assert url == answer.json()["url"]
    assert [json.loads(r.content) for r in script.requests] == [{"model": "churn", "version": "1"}]
    text = printed.export_text()
    assert said in text
    assert bool(text.strip()) == bool(said)  # nothing said when it is still served
