"""docker-compose.yml as data: its services, commands, environment and ports.

Shared by the checks in tests/unit/test_deploy_files.py, the rehearsal in
tests/integration/test_compose_rehearsal.py, which runs the services' commands
as local processes, and tests/integration/test_compose_docker.py, which runs
the file with `docker compose`.
"""

from __future__ import annotations

import re
import shlex
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from connectors.pipeline import BASE_IMAGE

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yml"

_INTERPOLATION = re.compile(r"\$\{(?P<var>[A-Za-z_][A-Za-z0-9_]*)(?::?-(?P<default>[^}]*))?\}")


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def is_weir_service(service: dict[str, Any]) -> bool:
    return service.get("image") == BASE_IMAGE or "build" in service


def weir_services() -> dict[str, dict[str, Any]]:
    return {n: s for n, s in services().items() if is_weir_service(s)}


def role_services() -> dict[str, dict[str, Any]]:
    """The services that run weir's roles (``weir worker --role R``), by name."""
    return {n: s for n, s in weir_services().items() if as_list(s["command"])[:1] == ["worker"]}


def as_list(command: Any) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the KEY=VALUE list form
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def resolve(value: str) -> str:
    """A compose value with ``${VAR:-default}`` replaced by its default."""

    def default(match: re.Match[str]) -> str:
        if match.group("default") is None:
            raise AssertionError(
                f"{match.group(0)} has no default: `docker compose up` must work without a .env"
            )
        return match.group("default")

    return _INTERPOLATION.sub(default, value)


def option(args: list[str], name: str) -> str | None:
    """The value of ``--name V`` or ``--name=V`` in an argument list."""
    for i, tok in enumerate(args):
        if tok == name and i + 1 < len(args):
            return args[i + 1]
        if tok.startswith(f"{name}="):
            return tok.split("=", 1)[1]
    return None


def published_targets(service: dict[str, Any]) -> set[int]:
    """Container ports a service publishes (``A-B`` ranges expanded)."""
    targets: set[int] = set()
    for p in service.get("ports", []):
        low, _, high = str(p).rsplit(":", 1)[1].partition("-")
        targets.update(range(int(low), int(high or low) + 1))
    return targets


def host_ports(service: dict[str, Any]) -> list[range]:
    """The host ports a service publishes, one range per ``ports`` entry."""
    out = []
    for p in service.get("ports", []):
        published = str(p).rsplit(":", 1)[0].rsplit(":", 1)[-1]
        low, _, high = published.partition("-")
        out.append(range(int(low), int(high or low) + 1))
    return out
