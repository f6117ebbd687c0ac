"""The local MinIO server: built with ``go install`` at a pinned module version, on loopback.

The binary is cached at ``<cache>/minio-<version>/minio``. If ``go install``
refuses the module (for instance because of ``replace`` directives in its
go.mod), it is built from the copy ``go mod download`` fetches instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from connectors.process import ServiceProcess
from schemas import ConfigurationError, StackError
from schemas.settings import MINIO_MODULE, Settings
from streams.dev.stack.tools import is_loopback, require, run_logged


def process(settings: Settings) -> ServiceProcess:
    return ServiceProcess("minio", settings.stack.run_dir)


def binary_path(settings: Settings) -> Path:
    return settings.stack.cache_dir / f"minio-{settings.minio.module_version}" / "minio"


def ensure_binary(settings: Settings) -> bool:
    """Build the MinIO server unless cached; returns True when it built."""
    target = binary_path(settings)
    if target.exists():
        return False
    go = require("go", "build the MinIO server from the Go module proxy")
    log = settings.stack.cache_dir / "fetch-minio.log"
    module = f"{MINIO_MODULE}@{settings.minio.module_version}"
    with tempfile.TemporaryDirectory(prefix="weir-minio-") as tmp:
        env = dict(os.environ, GOBIN=tmp, CGO_ENABLED="0", GOFLAGS="-trimpath")
        try:
            run_logged([go, "install", module], log=log, what=f"go install {module}", env=env)
            built = Path(tmp) / "minio"
        except StackError:
            built = _build_from_module_copy(go, module, Path(tmp), log, env)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(built), target.with_suffix(".partial"))
        target.with_suffix(".partial").rename(target)
    return True


def _build_from_module_copy(
    go: str, module: str, tmp: Path, log: Path, env: dict[str, str]
) -> Path:
    out = subprocess.run(
        [go, "mod", "download", "-json", module], capture_output=True, env=env, check=False
    )
    if out.returncode != 0:
        raise StackError(
            f"go mod download {module} failed: {out.stderr.decode(errors='replace')[-2000:]}",
            service="minio",
            address="",
        )
    source = Path(json.loads(out.stdout)["Dir"])
    work = tmp / "src"
    shutil.copytree(source, work)
    for path in work.rglob("*"):
        path.chmod(path.stat().st_mode | 0o200)
    run_logged(
        [go, "build", "-o", str(tmp / "minio"), "."],
        log=log,
        what=f"go build {module}",
        env=env,
        cwd=work,
    )
    return tmp / "minio"


def start(settings: Settings) -> int:
    host, _, _ = settings.minio.endpoint.rpartition(":")
    if not is_loopback(host):
        raise ConfigurationError(
            f"the local MinIO binds to loopback only, but WEIR_MINIO__ENDPOINT is "
            f"{settings.minio.endpoint}; set WEIR_MINIO__MANAGED=false to use it as is"
        )
    secret = settings.minio.secret_key.get_secret_value()
    if len(settings.minio.access_key) < 3 or len(secret) < 8:
        raise ConfigurationError(
            "MinIO needs WEIR_MINIO__ACCESS_KEY of 3+ and WEIR_MINIO__SECRET_KEY of 8+ characters"
        )
    proc = process(settings)
    env = dict(
        os.environ,
        MINIO_ROOT_USER=settings.minio.access_key,
        MINIO_ROOT_PASSWORD=secret,
        MINIO_BROWSER="on",
        MINIO_UPDATE="off",
    )
    argv = [
        str(binary_path(settings)),
        "server",
        str(proc.home / "data"),
        "--address",
        settings.minio.endpoint,
        "--console-address",
        f"{host}:{settings.minio.console_port}",
    ]
    return proc.start(argv, env=env)


def ready(settings: Settings) -> bool:
    """True once MinIO's liveness endpoint answers 200."""
    url = f"{settings.minio.url}/minio/health/live"
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False
