"""The DuckDB adapter of the read model: one database per node, a cursor per thread."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from runstream.errors import RunstreamError
from runstream.projections.apply_events import create_read_model
from runstream.projections.read_model import SCHEMA_REVISION

CURRENT_FILE = "CURRENT"
log = logging.getLogger(__name__)


def stored_revision(path: Path) -> int | None:
    """The schema revision a read-model file was built with (None for a new or empty file)."""
    if not path.exists():
        return None
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as exc:
        raise RunstreamError(f"cannot open read model {path}: {exc}") from exc
    try:
        row = con.execute(
            "SELECT value FROM read_model_meta WHERE key = 'schema_revision'"
        ).fetchone()
    except duckdb.CatalogException:
        return None  # not a read model yet
    finally:
        con.close()
    return int(row[0]) if row else None


def _connect(path: Path, memory_limit: str, threads: int) -> duckdb.DuckDBPyConnection:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        con = duckdb.connect(str(path), config={"memory_limit": memory_limit, "threads": threads})
    except duckdb.Error as exc:
        raise RunstreamError(f"cannot open read model {path}: {exc}") from exc
    create_read_model(con)
    return con


class _Cursors:
    """What every store gives its readers: a cursor per use, closed after it."""

    def cursor(self) -> duckdb.DuckDBPyConnection:
        raise NotImplementedError

    @contextmanager
    def reading(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor in a read transaction: every statement of one use sees the same snapshot
        (a page and its records, a count and its rows), whatever the projector commits
        meanwhile. The record cache relies on it: a record is read, and filed under the run's
        version, in one snapshot."""
        cur = self.cursor()
        try:
            cur.execute("BEGIN TRANSACTION")
            yield cur
        finally:
            with contextlib.suppress(duckdb.Error):
                cur.execute("ROLLBACK")  # it only read; a failed statement may have ended it
            cur.close()

    @contextmanager
    def writing(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor in a write transaction, committed when the block ends and rolled back when
        it raises, with the block's own error (after a failed COMMIT there is nothing left to
        roll back, and DuckDB's saying so must not replace the cause)."""
        cur = self.cursor()
        try:
            cur.execute("BEGIN TRANSACTION")
            try:
                yield cur
                cur.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(duckdb.Error):
                    cur.execute("ROLLBACK")
                raise
        finally:
            cur.close()

    def next_offsets(self, topic: str) -> dict[int, int]:
        with self.reading() as cur:
            return next_offsets(cur, topic)


class ReadStore(_Cursors):
    """Owns the node's DuckDB database; the projector writes, request threads read.

    DuckDB allows one writing process per file, so the projector and the API share this
    object inside one process. The database lives in ``directory`` as
    ``read-model.<generation>.duckdb``; the file ``CURRENT`` names the one in use. A rebuild
    writes the next generation beside it and :meth:`swap` switches to it atomically:
    requests that already hold a cursor finish on the old file.
    """

    def __init__(self, directory: Path, *, memory_limit: str = "4GB", threads: int = 2) -> None:
        self.directory = directory
        self._memory_limit = memory_limit
        self._threads = threads
        self._lock = threading.Lock()
        directory.mkdir(parents=True, exist_ok=True)
        current = directory / CURRENT_FILE
        name = current.read_text().strip() if current.exists() else "read-model.0.duckdb"
        self.path = directory / name
        revision = stored_revision(self.path)
        if revision is not None and revision != SCHEMA_REVISION:
            # A read model is derived data: one of another layout is replaced by a replay of
            # the log into the next generation (the projector starts from offset 0 there).
            old = self.path
            self.path = self.next_path()
            log.warning(
                "read model %s has schema revision %s, this version needs %s: replaying the "
                "log into %s", old, revision, SCHEMA_REVISION, self.path.name,
            )
            for stale in (old, old.with_name(old.name + ".wal")):
                stale.unlink(missing_ok=True)
            name = self.path.name
        self._con = _connect(self.path, memory_limit, threads)
        if not current.exists() or current.read_text().strip() != name:
            _write_atomically(current, name)

    @property
    def generation(self) -> int:
        return int(self.path.name.split(".")[1])

    def next_path(self) -> Path:
        """Where a rebuild writes the next generation (removed first if a crash left it)."""
        path = self.directory / f"read-model.{self.generation + 1}.duckdb"
        for leftover in (path, path.with_name(path.name + ".wal")):
            leftover.unlink(missing_ok=True)
        return path

    def open_other(self, path: Path) -> duckdb.DuckDBPyConnection:
        """A connection to another database file with the same settings (for a rebuild)."""
        return _connect(path, self._memory_limit, self._threads)

    def swap(self, new_con: duckdb.DuckDBPyConnection, new_path: Path) -> Path:
        """Serve from ``new_con`` from now on; return the old file's path."""
        with self._lock:
            old_con, old_path = self._con, self.path
            self._con, self.path = new_con, new_path
            _write_atomically(self.directory / CURRENT_FILE, new_path.name)
        # Cursors already handed out keep the old database alive until they close; closing
        # the parent connection after a grace period releases the file.
        def retire() -> None:
            with contextlib.suppress(duckdb.Error):
                old_con.close()
            for p in (old_path, old_path.with_name(old_path.name + ".wal")):
                p.unlink(missing_ok=True)

        threading.Timer(5.0, retire).start()
        return old_path

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A new cursor (its own transaction context) on the current database."""
        with self._lock:
            return self._con.cursor()

    def close(self) -> None:
        with self._lock:
            self._con.close()


class SingleFileStore(_Cursors):
    """A read model on one connection, without generations: what a rebuild writes into (and
    what tests and benchmarks serve a prepared file from)."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        self._lock = threading.Lock()

    def cursor(self) -> duckdb.DuckDBPyConnection:
        with self._lock:
            return self.con.cursor()


def next_offsets(cur: duckdb.DuckDBPyConnection, topic: str) -> dict[int, int]:
    rows = cur.execute(
        "SELECT partition, next_offset FROM projector_offsets WHERE topic = ?", [topic]
    ).fetchall()
    return {int(p): int(o) for p, o in rows}


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
