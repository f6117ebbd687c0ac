"""The README's model-host example runs as written, against the real stack.

The block is read from README.md and run with the ports a user gets (the model
host's 8070, beside the running stack's MinIO on 9000). Only the model name (a
fresh one, so the registry has no version yet and the pipeline really trains)
is substituted; the session's topic prefix and a temporary state directory come
from the environment.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from connectors.process import is_running
from schemas.settings import Settings, settings_env
from tests.integration.test_readme import bash_blocks

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent


def example() -> list[str]:
    block = next(b for b in bash_blocks() if "weir model-host --port 8070 &" in b)
    return [line.split("  #")[0].strip() for line in block.splitlines() if line[:1] not in "#"]


def test_readme_model_host_and_bootstrap_example(
    live_stack: Settings, unique: str, tmp_path: Path
) -> None:
    port, model = 8070, f"r{unique}"
    lines = [line.replace(" fraud", f" {model}") for line in example()]
    assert [line.split()[:2] for line in lines] == [
        ["weir", "model-host"],
        ["export", "WEIR_KSERVE__DEPLOYER=host"],
        ["weir", "models"],
        ["curl", "-s"],
        ["weir", "models"],
    ]
    env = settings_env(live_stack) | {"WEIR_STACK__STATE_DIR": str(tmp_path)}

    def argv(line: str) -> list[str]:
        words = shlex.split(line.rstrip("&"))
        return [str(BIN / words[0]) if words[0] == "weir" else words[0], *words[1:]]

    host_log = (tmp_path / "model-host.log").open("wb")
    host = subprocess.Popen(
        argv(lines[0]), env=env, stdout=host_log, stderr=subprocess.STDOUT, start_new_session=True
    )
    host_log.close()
    try:
        env |= dict(w.split("=", 1) for w in shlex.split(lines[1])[1:])
        deadline = time.monotonic() + 60
        while True:  # the host answers /healthz once it listens
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).is_success:
                    break
            except httpx.TransportError:
                pass
            assert host.poll() is None, (tmp_path / "model-host.log").read_text()
            assert time.monotonic() < deadline, "model host did not start"
            time.sleep(0.2)

        first = subprocess.run(argv(lines[2]), env=env, capture_output=True, text=True, timeout=300)
        assert first.returncode == 0, first.stdout + first.stderr
        said = " ".join(first.stdout.split())
        assert f"activated {model} version 1 (trained by the pipeline" in said, said

        listing = subprocess.run(argv(lines[3]), capture_output=True, text=True, timeout=30)
        (served,) = json.loads(listing.stdout)
        assert (served["model"], served["version"]) == (model, "1")
        assert served["url"] == f"http://127.0.0.1:{served['port']}" and served["url"] in said
        answer = httpx.post(
            f"{served['url']}/v1/models/{model}:predict",
            json={"instances": [[1.0, 2.0, 3.0], [9.0, 9.0, 1.0]]},
            timeout=30,
        ).json()
        assert answer["model_version"] == "1" and answer["predictions"] == [0, 1]

        again = subprocess.run(argv(lines[4]), env=env, capture_output=True, text=True, timeout=60)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "already routes to version 1" in " ".join(again.stdout.split())
        assert "nothing to do" in again.stdout
    finally:
        host.terminate()
        host.wait(timeout=60)
    # the host stopped the model server it started
    assert not is_running(served["pid"])
