"""The JSON response of every endpoint: encoded by pydantic-core instead of ``json.dumps``."""

from __future__ import annotations

from typing import Any

import pydantic_core
from starlette.responses import JSONResponse as _StarletteJSONResponse


def json_bytes(content: Any) -> bytes:
    """Compact UTF-8 JSON, encoded by pydantic-core (Rust, already a dependency through
    pydantic): a search page of 1000 runs in MLflow's shape encodes in 13 ms where
    ``json.dumps`` takes 85-109. Non-finite floats, which JSON cannot carry, become the
    strings "NaN", "Infinity" and "-Infinity", as proto-JSON writes them (the API layers
    convert them already; this is the net under them, where json.dumps raised)."""
    return pydantic_core.to_json(content, inf_nan_mode="strings")


class JSONResponse(_StarletteJSONResponse):
    """Starlette's JSONResponse, encoded by :func:`json_bytes`."""

    def render(self, content: Any) -> bytes:
        return json_bytes(content)
