"""Writes the JSON Schema of every event type into ``schemas/json/`` for other languages."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter
from runstream.schemas.events import CURRENT_SCHEMA_VERSION, EVENT_TYPES, AnyEvent

JSON_DIR = Path(__file__).resolve().parent / "json"


def rendered_schemas() -> dict[str, str]:
    """File name -> JSON text, one file per event type plus one for the union."""
    files: dict[str, str] = {}
    for type_name, cls in sorted(EVENT_TYPES.items()):
        schema = cls.model_json_schema(mode="serialization")
        schema["$id"] = f"runstream/v{CURRENT_SCHEMA_VERSION}/{type_name}"
        files[f"{type_name}.v{CURRENT_SCHEMA_VERSION}.json"] = _dump(schema)
    union: dict[str, Any] = TypeAdapter(AnyEvent).json_schema(mode="serialization")
    union["$id"] = f"runstream/v{CURRENT_SCHEMA_VERSION}/event"
    union["title"] = "runstream event"
    files[f"event.v{CURRENT_SCHEMA_VERSION}.json"] = _dump(union)
    return files


def _dump(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write_schemas(directory: Path = JSON_DIR) -> list[Path]:
    """Write every schema file and remove stale ones; return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    files = rendered_schemas()
    for stale in directory.glob("*.json"):
        if stale.name not in files:
            stale.unlink()
    written = []
    for name, text in files.items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written


def main() -> int:
    """Entry point of ``python -m runstream.schemas.json_schema_export``."""
    for path in write_schemas():
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
