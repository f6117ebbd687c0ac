"""One module per role; :func:`attach_role` wires a role's agents onto its app.

A role's module is imported only in the process that runs it, so the scoring
process never loads river or kfp, and the performance role not river's trees
(``tests/unit/test_role_imports.py``; see also :mod:`agents.river_import`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from streams.context import ROLES, RoleContext
from streams.status_page import attach_live

ATTACH = {role: (f"streams.roles.{role}", f"attach_{role}") for role in ROLES}


def attach_role(ctx: RoleContext) -> None:
    module, name = ATTACH[ctx.role]
    attach: Callable[[RoleContext], None] = getattr(importlib.import_module(module), name)
    attach(ctx)
    attach_live(ctx)
