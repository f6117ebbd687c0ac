"""What every ``weir`` command module shares: the consoles, the invocation's Settings
(read from the environment once) and the decorators that turn a ``WeirError`` into
one ``error:`` line on stderr and exit code 1 instead of a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from schemas import ConfigurationError, WeirError
from schemas.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def _settings(ctx: click.Context) -> Settings:
    """The one Settings of this invocation, read from the environment once."""
    store = ctx.ensure_object(dict)
    if "settings" not in store:
        try:
            store["settings"] = Settings()
        except ValidationError as err:
            raise ConfigurationError(f"invalid WEIR_* settings:\n{err}") from err
    settings: Settings = store["settings"]
    return settings


def _report_errors(fn: F, *, fold: bool) -> F:
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except WeirError as err:
            message = " ".join(str(err).split()) if fold else str(err)
            err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


def weir_errors(fn: F) -> F:
    """Turn WeirError into an ``error:`` message and exit code 1 instead of a traceback.

    The message keeps its own line breaks (a service's log tail, for instance).
    """
    return _report_errors(fn, fold=False)


def one_line_errors(fn: F) -> F:
    """Like :func:`weir_errors`, but line breaks and runs of whitespace are folded, so
    the error is exactly one line on stderr (for commands people pipe and grep)."""
    return _report_errors(fn, fold=True)
