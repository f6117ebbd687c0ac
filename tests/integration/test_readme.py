"""The README's Python examples run, against the real stack."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from schemas.settings import Settings

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_python_examples():
    assert python_blocks()


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_python_example_runs(live_stack: Settings, index: int):
    # The examples use the default settings (weir.* topics), which `stack up` created.
    exec(compile(python_blocks()[index], f"README.md[python {index}]", "exec"), {})


def bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_curl_example_gets_202_from_the_ingress(live_stack: Settings, stack_settings):
    import subprocess
    import threading

    import uvicorn

    from connectors.process import free_port
    from streams.servers.ingress import create_ingress_app

    block = next(b for b in bash_blocks() if "curl -i http://127.0.0.1:8080/" in b)
    curl = block[block.index("curl -i") :].split("\n#")[0]
    port = free_port()
    # the example uses the default settings (weir.* topics), which `stack up` created
    server = uvicorn.Server(
        uvicorn.Config(
            create_ingress_app(stack_settings), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(600):  # bounded: 30 s for uvicorn to start
            if server.started:
                break
            threading.Event().wait(0.05)
        out = subprocess.run(
            ["bash", "-c", curl.replace("127.0.0.1:8080", f"127.0.0.1:{port}")],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    finally:
        server.should_exit = True
        thread.join(timeout=15)
    assert "202 Accepted" in out
    assert '"topic":"weir.records"' in out
