"""A second, independent stack: up from the cache only, status, down, nothing left behind."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from schemas.settings import KafkaSettings, MinioSettings, Settings, StackSettings
from streams.dev.stack import Stack

pytestmark = pytest.mark.integration


def _processes_mentioning(path: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(path) in cmdline:
            found.append(int(entry.name))
    return found


def test_up_status_down_from_cache_leaves_nothing_behind(
    live_stack: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # Same cache as the session stack (already warm), own state dir and ports.
    settings = Settings(
        kafka=KafkaSettings(bootstrap_servers="127.0.0.1:19092", controller_port=19093),
        minio=MinioSettings(endpoint="127.0.0.1:19000", console_port=19001),
        stack=StackSettings(cache_dir=live_stack.stack.cache_dir, state_dir=tmp_path / "state"),
    )
    # Only java on PATH: a start that tried to download (mvn) or build (go) would fail.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    java = shutil.which("java")
    assert java is not None
    os.symlink(java, bin_dir / "java")
    monkeypatch.setenv("PATH", str(bin_dir))

    stack = Stack(settings)
    try:
        report = stack.up()
        assert report.fetched == {"kafka": False, "minio": False}, "second start reuses the cache"
        assert set(report.started) == {"kafka", "minio"}
        status = {s.name: s for s in stack.status()}
        assert status["kafka"].ready and status["minio"].ready
        assert status["kafka"].pid == report.started["kafka"]
        assert status["kafka"].address == "127.0.0.1:19092"
        assert _processes_mentioning(settings.stack.run_dir), "services run from the state dir"
    finally:
        stopped = stack.down()
    assert stopped == report.started
    assert _processes_mentioning(settings.stack.run_dir) == []
    assert not any(settings.stack.run_dir.glob("*.pid"))
    assert [s.ready for s in stack.status()] == [False, False]
    # the session's stack is untouched
    assert all(s.ready for s in Stack(live_stack).status())


def test_existing_endpoints_are_used_instead_of_starting_local_ones(
    live_stack: Settings, tmp_path: Path
):
    # managed=False: the configured endpoints (here: the session's stack) are checked, not started
    settings = Settings(
        kafka=live_stack.kafka.model_copy(update={"managed": False}),
        minio=live_stack.minio.model_copy(update={"managed": False}),
        stack=StackSettings(cache_dir=tmp_path / "empty-cache", state_dir=tmp_path / "state"),
    )
    stack = Stack(settings)
    report = stack.up()
    assert report.fetched == {} and report.started == {}
    # nothing was downloaded or built: the cache holds only the route-signing key pair
    cache = tmp_path / "empty-cache"
    assert sorted(p.relative_to(cache).as_posix() for p in cache.rglob("*")) == [
        "keys",
        "keys/control.key",
        "keys/control.pub",
    ]
    status = {s.name: s for s in stack.status()}
    assert status["kafka"].ready and not status["kafka"].managed and status["kafka"].pid is None
    assert stack.down() == {"kafka": None, "minio": None}
    assert all(s.ready for s in Stack(live_stack).status()), "down did not touch them"


def test_storage_formats_with_a_cluster_id_that_starts_with_a_dash(
    live_stack: Settings, tmp_path: Path
):
    # regression: a random base64 id like "-ICX_wa6S86Uxg89rRBObA" was read as an option
    from streams.dev.stack import kafka

    settings = Settings(
        kafka=KafkaSettings(bootstrap_servers="127.0.0.1:19192", controller_port=19193),
        stack=StackSettings(cache_dir=live_stack.stack.cache_dir, state_dir=tmp_path),
    )
    home = kafka.process(settings).home
    home.mkdir(parents=True)
    config = home / "server.properties"
    config.write_text(kafka._server_properties(settings, home / "data"))
    (home / "log4j2.properties").write_text(kafka.LOG4J2)
    kafka.format_storage(settings, config, "-ICX_wa6S86Uxg89rRBObA")
    assert "cluster.id=-ICX_wa6S86Uxg89rRBObA" in (home / "data" / "meta.properties").read_text()
