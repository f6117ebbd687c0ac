"""river's drift detectors without the imports weir never uses: those load on first use.

``import river.drift`` imports, besides the detectors weir uses,

* ``river.drift.datasets``, whose modules import ``river.datasets`` and
  ``river.stream``, and those pandas, scikit-learn and most of scipy;
* ``river.drift.kswin``, which imports ``scipy.stats`` for KSWIN's test.

The performance role paid 1.3 s of CPU and 66 MB at start for them (the
monitor ~0.4 s: river's trees need ``scipy.stats`` anyway), and on two cores a
role's start-up competes with scoring. :func:`defer_unused` puts a stand-in
for each in ``sys.modules`` before river's drift package is imported. The
first attribute read from a stand-in imports the real module, so
``river.drift.datasets.Apple``, ``river.drift.KSWIN().update(x)`` or a later
``from scipy.stats import t`` all still work; only the cost moves to where it
is used.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

DEFERRED = ("river.drift.datasets", "scipy.stats")
_FORWARDED = frozenset({"__path__", "__all__"})  # a submodule's import; ``import *``


class _Deferred(types.ModuleType):
    """Stands in for a module until something is read from it; then the real module is
    imported, replaces the stand-in, and answers (this read and every later one)."""

    def __getattr__(self, attr: str) -> Any:  # only for what the stand-in lacks
        if attr.startswith("__") and attr not in _FORWARDED:
            raise AttributeError(attr)  # probes such as getattr(m, "__file__", None) load nothing
        return getattr(self._real(), attr)

    def _real(self) -> types.ModuleType:
        name = self.__name__
        if sys.modules.get(name) is self:
            del sys.modules[name]
        real = importlib.import_module(name)
        parent, _, leaf = name.rpartition(".")
        if getattr(sys.modules.get(parent), leaf, None) is self:
            setattr(sys.modules[parent], leaf, real)
        return real


def defer_unused() -> None:
    """Put the stand-ins in place (none for a module already imported, and none at all
    once river's drift package is)."""
    if "river.drift" in sys.modules:
        return
    for name in DEFERRED:
        if name not in sys.modules:
            stand_in = _Deferred(name, f"{name}, imported on first use")
            stand_in.__spec__ = None
            sys.modules[name] = stand_in
