"""JSON Schema files for every event type, for consumers that are not Python.

``schemas/jsonschema/<event type>.json`` describes the CloudEvent ``data`` of
that type. They are generated from the pydantic models and checked into the
repository; ``weir schemas export`` rewrites them and a unit test fails when
they are stale.
"""

from __future__ import annotations

import json
from pathlib import Path

from schemas.payloads import PAYLOAD_TYPES

SCHEMA_DIR = Path(__file__).resolve().parent / "jsonschema"


def render() -> dict[str, str]:
    """File name → file text, for every event type."""
    out: dict[str, str] = {}
    for cls in PAYLOAD_TYPES:
        schema = cls.model_json_schema(mode="validation")
        doc = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"urn:weir:schema:{cls.event_type}",
            "x-cloudevents-type": cls.event_type,
            **schema,
        }
        out[f"{cls.event_type}.json"] = json.dumps(doc, indent=2, sort_keys=True) + "\n"
    return out


def export(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write every schema file (and remove ones no type produces any more)."""
    directory.mkdir(parents=True, exist_ok=True)
    rendered = render()
    for old in directory.glob("*.json"):
        if old.name not in rendered:
            old.unlink()
    paths = []
    for name, text in rendered.items():
        path = directory / name
        path.write_text(text)
        paths.append(path)
    return paths


def stale(directory: Path = SCHEMA_DIR) -> list[str]:
    """Names of schema files that are missing, different or no longer produced."""
    rendered = render()
    present = {p.name for p in directory.glob("*.json")}
    bad = sorted(present - rendered.keys())
    for name, text in rendered.items():
        path = directory / name
        if not path.exists() or path.read_text() != text:
            bad.append(name)
    return bad
