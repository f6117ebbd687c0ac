"""What a role's process loads at start: only what the role uses (start-up CPU on two cores
competes with scoring). Each case runs a fresh interpreter, as ``weir worker --role`` does."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("river.drift", "river.tree", "kfp", "sklearn", "pandas", "scipy.stats")


def loaded(code: str) -> dict[str, object]:
    """Run ``code`` in a fresh interpreter; it prints one JSON value, returned here."""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("role", "absent"),
    [
        ("scoring", HEAVY),
        ("feedback", HEAVY),
        ("performance", ("river.tree", "kfp", "sklearn", "pandas", "scipy.stats")),
        ("monitor", ("kfp", "sklearn", "pandas")),
    ],
)
def test_a_role_loads_only_what_it_uses(role, absent):
    found = loaded(
        "import json, sys, types, streams.cli.main, streams.app, streams.roles." + role + "\n"
        "real = [n for n, m in sys.modules.items() if type(m) is types.ModuleType]\n"
        "print(json.dumps({'real': real}))"
    )
    extra = set(absent) & set(found["real"])  # type: ignore[arg-type]
    assert not extra, f"the {role} role loads {sorted(extra)}"


def test_what_is_deferred_still_works_on_first_use():
    found = loaded(
        "import json, sys, types, agents.detectors\n"
        "import river.drift\n"
        "before = type(sys.modules['scipy.stats']) is types.ModuleType\n"
        "kswin, detected = river.drift.KSWIN(seed=1), False\n"
        "for i in range(300):\n"
        "    kswin.update(0.0 if i < 150 else 5.0)\n"
        "    detected = detected or kswin.drift_detected\n"
        "from scipy.stats import norm\n"
        "print(json.dumps({'before': before, 'kswin': detected,\n"
        "    'apple': river.drift.datasets.Apple.__name__, 'norm': round(norm.cdf(0), 3),\n"
        "    'after': type(sys.modules['scipy.stats']) is types.ModuleType}))"
    )
    assert found == {"before": False, "kswin": True, "apple": "Apple", "norm": 0.5, "after": True}
