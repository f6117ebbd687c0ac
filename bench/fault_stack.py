"""The fault suite's private stack: its own Kafka and MinIO, never the shared one.

Kafka, MinIO and the model servers of the suite run on ports of their own
(:data:`PORTS`) with a state directory of their own, started and stopped
through the project's :class:`~streams.dev.stack.Stack` (which stops exactly
the PIDs it recorded). A fault may pause, stop or restart these processes;
nothing else on the machine is touched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

from schemas import StackError
from schemas.settings import (
    ControlSettings,
    KafkaSettings,
    MinioSettings,
    RetrainingSettings,
    Settings,
    StackSettings,
)
from streams.dev.stack import Stack
from streams.dev.stack import kafka as kafka_stack
from streams.dev.stack import minio as minio_stack

# kafka, kafka controller, minio, minio console: away from the shared 9092/9093/9000/9001
PORTS = (19092, 19093, 19000, 19001)
STATE_DIR = Path("/tmp/weir-faults-stack")

Say = Callable[[str], None]


def port_free(port: int) -> bool:
    """Nothing listens on 127.0.0.1:``port`` (a socket in TIME_WAIT does not count)."""
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) != 0


def private_settings(state_dir: Path = STATE_DIR) -> Settings:
    """Settings of the private stack (built here, passed down; nothing read from env)."""
    kafka, ctrl, minio, console = PORTS
    return Settings(
        kafka=KafkaSettings(bootstrap_servers=f"127.0.0.1:{kafka}", controller_port=ctrl),
        minio=MinioSettings(endpoint=f"127.0.0.1:{minio}", console_port=console),
        # a false drift alarm must not start a training run that swaps the model mid-fault
        retraining=RetrainingSettings(collect_rows=10**9, collect_timeout_s=3600.0),
        stack=StackSettings(state_dir=state_dir),
        # routes are signed: a key pair of the suite's own, made by Stack.up
        control=ControlSettings(keys_dir=state_dir / "keys"),
    )


class PrivateStack:
    """Up, down and the faults of the suite's own Kafka and MinIO."""

    def __init__(self, settings: Settings, say: Say) -> None:
        self.settings = settings
        self.stack = Stack(settings, say=say)
        self.say = say

    def up(self) -> None:
        state = self.settings.stack.run_dir
        busy = [p for p in PORTS if not port_free(p)]
        if busy:
            raise StackError(
                f"ports {busy} are taken: the private stack needs {PORTS}",
                service="faults",
                address="127.0.0.1",
            )
        if state.exists():  # our own directory: a fresh broker and store every run
            shutil.rmtree(state)
        self.stack.up()

    def down(self) -> None:
        self.stack.down()

    def pid(self, service: str) -> int:
        proc = (kafka_stack if service == "kafka" else minio_stack).process(self.settings)
        pid = proc.pid()
        if pid is None:
            raise StackError(f"private {service} is not running", service=service, address="")
        return pid

    @contextlib.contextmanager
    def paused(self, service: str) -> Iterator[None]:
        """``service`` SIGSTOPped inside the block, SIGCONTed after."""
        pid = self.pid(service)
        os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(pid, signal.SIGCONT)

    @contextlib.contextmanager
    def stopped(self, service: str) -> Iterator[None]:
        """``service`` stopped (SIGTERM, by PID) inside the block, started again after."""
        self.stack.down(only=(service,))
        try:
            yield
        finally:
            self.stack.up()  # starts what is down, waits until both answer
