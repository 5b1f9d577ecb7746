"""The DuckDB adapter of the read model: one database per node, a cursor per thread."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from runstream.errors import RunstreamError
from runstream.projections.apply_events import create_read_model


class ReadStore:
    """Owns the node's DuckDB database; the projector writes, request threads read.

    DuckDB allows one writing process per file, so the projector and the API share this
    object inside one process. ``swap`` replaces the file atomically after a rebuild;
    readers that hold a cursor finish on the old database.
    """

    def __init__(self, path: Path, *, memory_limit: str = "4GB", threads: int = 2) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._memory_limit = memory_limit
        self._threads = threads
        self._con = self._open(path)

    def _open(self, path: Path) -> duckdb.DuckDBPyConnection:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            con = duckdb.connect(
                str(path),
                config={"memory_limit": self._memory_limit, "threads": self._threads},
            )
        except duckdb.Error as exc:
            raise RunstreamError(f"cannot open read model {path}: {exc}") from exc
        create_read_model(con)
        return con

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A new cursor (its own transaction context) on the current database."""
        with self._lock:
            return self._con.cursor()

    @contextmanager
    def reading(self) -> Iterator[duckdb.DuckDBPyConnection]:
        cur = self.cursor()
        try:
            yield cur
        finally:
            cur.close()

    def next_offsets(self, topic: str) -> dict[int, int]:
        with self.reading() as cur:
            rows = cur.execute(
                "SELECT partition, next_offset FROM projector_offsets WHERE topic = ?", [topic]
            ).fetchall()
        return {int(p): int(o) for p, o in rows}

    def close(self) -> None:
        with self._lock:
            self._con.close()
