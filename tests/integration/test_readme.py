"""The README's Python examples run, against the real stack."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from streams.settings import Settings

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
