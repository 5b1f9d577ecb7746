"""The projector's run_records chore on a real DuckDB file, the Kafka side stood in: when it
refreshes documents (keeping up, catching up, forced), and that settling leaves none stale."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import duckdb
import pytest
from runstream import projector as projector_module
from runstream.projections.apply_events import apply_batch, create_read_model, stale_run_records
from runstream.projector import Projector, ProjectorStats
from runstream.read_store import SingleFileStore

from tests.event_factory import run_created


def _projector(tmp_path: Path, runs: int) -> tuple[Projector, duckdb.DuckDBPyConnection]:
    con = duckdb.connect(str(tmp_path / "model.duckdb"))
    create_read_model(con)
    con.execute("BEGIN")
    apply_batch(con, [run_created(f"r{i}") for i in range(runs)])
    con.execute("COMMIT")
    p = object.__new__(Projector)  # no consumer: only the chore's state is set
    p.store, p.stats, p.batch_max_messages = SingleFileStore(con), ProjectorStats(), 10
    p._cond, p._applied, p._high = threading.Condition(), {0: 100}, {0: 100}
    p._records_refreshed = time.monotonic()
    return p, con


def test_keeping_up_it_refreshes_at_most_once_a_second(tmp_path: Path) -> None:
    p, con = _projector(tmp_path, 3)
    p._high = {0: 105}  # the batch the reader fetched meanwhile: not behind
    assert not p._behind()
    assert p.refresh_records() == 0, "less than a second since the start"
    p._records_refreshed -= projector_module.RECORDS_REFRESH_S
    assert p.refresh_records() == 3
    assert stale_run_records(con, 10) == [] and p.stats.records_refreshed == 3


def test_behind_the_log_it_waits_longer(tmp_path: Path) -> None:
    p, con = _projector(tmp_path, 3)
    p._high = {0: 100 + 11}  # more than a batch of 10 beyond what is applied
    assert p._behind()
    p._records_refreshed -= projector_module.RECORDS_REFRESH_S
    assert p.refresh_records() == 0
    p._records_refreshed -= projector_module.RECORDS_REFRESH_BEHIND_S
    assert p.refresh_records() == 3


def test_settling_makes_every_document_in_rounds(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(projector_module, "RECORDS_REFRESH_MAX", 4)
    p, con = _projector(tmp_path, 10)
    assert len(stale_run_records(con, 100)) == 10
    p.settle_records()
    assert stale_run_records(con, 100) == [] and p.stats.records_refreshed == 10


def test_a_failing_refresh_is_counted_and_retried_later(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    p, con = _projector(tmp_path, 2)

    def fails(_con: object, _keys: object) -> None:
        raise duckdb.ConversionException("a document that cannot be made")

    monkeypatch.setattr(projector_module, "refresh_run_records", fails)
    p._records_refreshed -= projector_module.RECORDS_REFRESH_S
    assert p.refresh_records() == 0 and p.stats.records_failures == 1
    assert len(stale_run_records(con, 10)) == 2, "the failed transaction changed nothing"
    monkeypatch.undo()
    p._records_refreshed -= projector_module.RECORDS_REFRESH_S
    assert p.refresh_records() == 0, "not a second later: it backs off"
    p._records_refreshed -= projector_module.RECORDS_REFRESH_BEHIND_S
    assert p.refresh_records() == 2 and p.stats.records_failures == 1
