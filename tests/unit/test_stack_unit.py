"""Local stack pieces that need no services: waiting, PID files, missing tools."""

from __future__ import annotations

import os
import sys

import pytest

from connectors.process import ServiceProcess, wait_until
from schemas import ConfigurationError, StackError
from schemas.settings import Settings, StackSettings
from streams.dev.stack import kafka, minio


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_wait_until_returns_time_waited_without_real_sleeping():
    clock = FakeClock()
    answers = iter([False, False, True])
    waited = wait_until(
        lambda: next(answers),
        timeout_s=10,
        what="x",
        interval_s=0.5,
        clock=clock,
        sleep=clock.sleep,
    )
    assert waited == 1.0


def test_wait_until_raises_at_its_bound():
    clock = FakeClock()
    with pytest.raises(StackError, match="timed out after 3s waiting for the thing"):
        wait_until(
            lambda: False,
            timeout_s=3,
            what="waiting for the thing",
            clock=clock,
            sleep=clock.sleep,
        )


def test_pid_file_of_a_foreign_process_is_not_trusted(tmp_path):
    proc = ServiceProcess("kafka", tmp_path)
    # Our own PID is alive but its command line does not mention the service home.
    proc.pid_file.write_text(f"{os.getpid()}\n")
    assert proc.pid() is None
    assert not proc.pid_file.exists(), "a stale PID file is removed"


def test_start_and_stop_a_real_process(tmp_path):
    proc = ServiceProcess("sleeper", tmp_path)
    marker = str(proc.home)
    pid = proc.start([sys.executable, "-c", "import sys, time; time.sleep(60)", marker])
    assert proc.pid() == pid
    assert proc.start([sys.executable, "-c", "pass", marker]) == pid, "start is idempotent"
    assert proc.stop(timeout_s=10) == pid
    assert proc.pid() is None
    assert not os.path.exists(f"/proc/{pid}/cmdline") or proc.pid() is None


def _settings(tmp_path) -> Settings:
    return Settings(stack=StackSettings(cache_dir=tmp_path / "cache"))


def test_missing_maven_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigurationError, match=r"`mvn` is needed .*apt-get install maven"):
        kafka.ensure_jars(_settings(tmp_path))


def test_missing_go_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigurationError, match=r"`go` is needed"):
        minio.ensure_binary(_settings(tmp_path))


def test_missing_java_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigurationError, match=r"`java` is needed .*openjdk-17"):
        kafka.start(_settings(tmp_path))


def test_local_services_refuse_non_loopback_addresses(tmp_path, monkeypatch):
    monkeypatch.setenv("WEIR_KAFKA__BOOTSTRAP_SERVERS", "10.1.2.3:9092")
    monkeypatch.setenv("WEIR_MINIO__ENDPOINT", "minio.internal:9000")
    s = Settings(stack=StackSettings(cache_dir=tmp_path))
    with pytest.raises(ConfigurationError, match="WEIR_KAFKA__MANAGED=false"):
        kafka.start(s)
    with pytest.raises(ConfigurationError, match="WEIR_MINIO__MANAGED=false"):
        minio.start(s)


def test_the_local_broker_refuses_tls_rather_than_start_without_it(tmp_path, monkeypatch):
    monkeypatch.setenv("WEIR_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("WEIR_KAFKA__SASL_USERNAME", "weir-worker")
    monkeypatch.setenv("WEIR_KAFKA__SASL_PASSWORD", "secret")
    s = Settings(stack=StackSettings(cache_dir=tmp_path))
    with pytest.raises(ConfigurationError, match="not WEIR_KAFKA__SECURITY_PROTOCOL=SASL_SSL"):
        kafka.start(s)
    assert not (tmp_path / "stack").exists() or not any((tmp_path / "stack").rglob("*.properties"))


def test_the_stack_finds_the_files_of_its_checkout():
    # a fresh machine has no cached jars: `weir stack fetch` resolves them from this pom
    assert kafka.POM.is_file(), kafka.POM
    assert (kafka.POM.parents[3] / "pyproject.toml").is_file()
