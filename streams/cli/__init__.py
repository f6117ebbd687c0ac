"""The ``weir`` command line: :func:`main` (the console script), one module per command group."""

from streams.cli.main import cli, main

__all__ = ["cli", "main"]
