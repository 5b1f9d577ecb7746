"""The pure packages stay pure: schemas and projections import no Kafka, DuckDB or HTTP code.

(import-linter cannot follow pyproject's folder-to-package mapping, so the contract is
checked here, on the source, with the standard library's parser.)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {"confluent_kafka", "duckdb", "fastapi", "uvicorn", "httpx", "starlette", "requests"}
# Dependencies flow services -> projections -> schemas, never back.
LAYERS = {"schemas": {"runstream.projections", "runstream.api", "runstream.node",
                      "runstream.projector", "runstream.kafka_log", "runstream.client"},
          "projections": {"runstream.api", "runstream.node", "runstream.projector",
                          "runstream.kafka_log", "runstream.client"}}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", ["schemas", "projections"])
def test_pure_packages_import_no_infrastructure(package: str) -> None:
    files = sorted((ROOT / package).glob("*.py"))
    assert files
    for path in files:
        for name in _imports(path):
            top = name.split(".")[0]
            assert top not in FORBIDDEN, f"{path.name} imports {name}"
            assert not any(name == b or name.startswith(b + ".") for b in LAYERS[package]), (
                f"{path.name} imports {name}, against the layering"
            )
