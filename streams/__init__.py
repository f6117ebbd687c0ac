"""The Faust worker and its wiring; ``servers`` (HTTP servers), ``cli`` (the ``weir``
command) and ``dev`` (local-dev tooling, never imported by production code)."""
