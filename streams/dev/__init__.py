"""Local-development tooling: the local stack, the demo, local runs of workers.

Only the CLI (``weir stack``, ``weir demo``), the tests and the benchmarks use
it; production code never imports it (an import-linter contract checks).
"""
