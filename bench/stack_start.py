"""Cold and warm start of the local stack, measured.

Cold: empty weir cache *and* empty Maven repository, Go module cache and Go
build cache (all in a temporary directory), so every jar is downloaded and
MinIO is compiled from scratch — what a fresh machine pays once. Warm: the
same stack stopped and started again from that cache. Runs on its own ports
and state directory; stops everything it started.

    .venv/bin/python bench/stack_start.py [--keep-cache DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from schemas.settings import KafkaSettings, MinioSettings, Settings, StackSettings
from streams.dev.stack import Stack


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None, help="keep caches here")
    args = parser.parse_args()
    console = Console()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="weir-bench-stack-"))
    # Cold means no shared caches either: Maven's local repo and Go's caches are private.
    os.environ["MAVEN_OPTS"] = f"-Dmaven.repo.local={work / 'm2'}"
    os.environ["GOMODCACHE"] = str(work / "gomod")
    os.environ["GOCACHE"] = str(work / "gocache")
    os.environ["GOPATH"] = str(work / "gopath")
    settings = Settings(
        kafka=KafkaSettings(bootstrap_servers="127.0.0.1:29092", controller_port=29093),
        minio=MinioSettings(endpoint="127.0.0.1:29000", console_port=29001),
        stack=StackSettings(cache_dir=work / "cache"),
    )
    stack = Stack(settings, say=lambda m: console.log(m))
    rows = []
    try:
        for label in ("cold (download + build + format)", "warm (cached)"):
            t = time.monotonic()
            report = stack.up()
            total = time.monotonic() - t
            rows.append((label, report.fetch_s, report.start_s, report.ready_s, total))
            stack.down()
    finally:
        stack.down()
    table = Table("start", "fetch s", "spawn s", "ready s", "total s", title="weir stack up")
    for label, fetch, start, ready, total in rows:
        table.add_row(label, f"{fetch:.1f}", f"{start:.1f}", f"{ready:.1f}", f"{total:.1f}")
    console.print(table)
    console.print(f"caches in {work}")


if __name__ == "__main__":
    main()
