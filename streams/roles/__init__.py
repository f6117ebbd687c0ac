"""One module per role; :func:`attach_role` wires a role's agents onto its app."""

from __future__ import annotations

from collections.abc import Callable

from streams.context import ROLES, RoleContext
from streams.roles.feedback import attach_feedback
from streams.roles.monitor import attach_monitor
from streams.roles.performance import attach_performance
from streams.roles.retrainer import attach_retrainer
from streams.roles.scoring import attach_scoring
from streams.status_page import attach_live

ATTACH: dict[str, Callable[[RoleContext], None]] = {
    "scoring": attach_scoring,
    "monitor": attach_monitor,
    "feedback": attach_feedback,
    "performance": attach_performance,
    "retrainer": attach_retrainer,
}
assert tuple(ATTACH) == ROLES


def attach_role(ctx: RoleContext) -> None:
    ATTACH[ctx.role](ctx)
    attach_live(ctx)
