"""Finding the tools the local stack needs (java, mvn, go) and running them with a log."""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from schemas import ConfigurationError, StackError

INSTALL_HINTS = {
    "java": "install a Java 17+ runtime (Debian: apt-get install openjdk-17-jre-headless)",
    "mvn": "install Apache Maven (Debian: apt-get install maven)",
    "go": "install Go 1.24+ (https://go.dev/doc/install or Debian: apt-get install golang)",
}

REPO_ROOT = Path(__file__).resolve().parents[3]  # streams/dev/stack/tools.py


def require(tool: str, purpose: str) -> str:
    """The path of ``tool`` on PATH, or a ConfigurationError saying how to get it."""
    path = shutil.which(tool)
    if path is None:
        raise ConfigurationError(
            f"`{tool}` is needed to {purpose} but is not on PATH; {INSTALL_HINTS[tool]}"
        )
    return path


def run_logged(
    argv: Sequence[str],
    *,
    log: Path,
    what: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> None:
    """Run a command to completion, appending its output to ``log``; StackError on failure."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"\n$ {' '.join(argv)}\n".encode())
        out.flush()
        result = subprocess.run(
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            check=False,
        )
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise StackError(
            f"{what} failed (exit {result.returncode}); last lines of {log}:\n{tail}",
            service=what,
            address="",
        )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
