"""projections.layout: key/value tables re-sorted by key keep every row, and only when due."""

from __future__ import annotations

import duckdb
import pytest
from runstream.projections import layout
from runstream.projections.apply_events import apply_batch, create_read_model
from runstream.projections.read_model import PROJECTED_TABLES, projected_rows_sql

from tests.event_factory import T0, metrics, params, run_created


def _snapshot(con: duckdb.DuckDBPyConnection) -> dict[str, list]:
    return {t: sorted(con.execute(projected_rows_sql(t)).fetchall(), key=repr)
            for t in PROJECTED_TABLES}


def _db(runs: int) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    create_read_model(con)
    events = []
    for i in range(runs):
        run = f"{i:032x}"
        events.append(run_created(run, t=T0 + i))
        events.append(params(run, {"lr": str(i % 3), "depth": str(i)}))
        events.append(metrics(run, [("loss", 1.0 / (i + 1), 0, T0), ("acc", i / runs, 0, T0)]))
    con.execute("BEGIN")
    apply_batch(con, events)
    con.execute("COMMIT")
    return con


def test_clustering_keeps_every_row_and_sorts_by_key() -> None:
    con = _db(50)
    before = _snapshot(con)
    for table in layout.CLUSTERED:
        con.execute("BEGIN")
        assert layout.cluster(con, table) == con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
        con.execute("COMMIT")
        keys = [k for (k,) in con.execute(f"SELECT key FROM {table}").fetchall()]
        assert keys == sorted(keys)
        assert layout.tail_rows(con, table) == 0
    assert _snapshot(con) == before


def test_a_table_is_due_once_its_tail_is_big_enough(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(layout, "MIN_TAIL_ROWS", 60)
    con = _db(40)  # 80 summary rows, 80 params, no tags
    assert layout.due(con) == ["run_metric_summary", "run_params"]
    for table in layout.due(con):
        layout.cluster(con, table)
    assert layout.due(con) == []
    # 25 more runs: a tail of 50 rows in each table, under the minimum of 60.
    more = []
    for i in range(40, 65):
        more += [run_created(f"{i:032x}"), metrics(f"{i:032x}", [("loss", 0.5, 0, T0)]),
                 metrics(f"{i:032x}", [("acc", 0.5, 0, T0)])]
    apply_batch(con, more)
    assert layout.tail_rows(con, "run_metric_summary") == 50
    assert layout.due(con) == []
    monkeypatch.setattr(layout, "MIN_TAIL_ROWS", 50)
    assert layout.due(con) == ["run_metric_summary"]  # 50 of 130 rows: over a tenth


def test_a_rolled_back_clustering_changes_nothing() -> None:
    con = _db(30)
    before = _snapshot(con)
    con.execute("BEGIN")
    layout.cluster(con, "run_params")
    con.execute("ROLLBACK")
    assert _snapshot(con) == before
    assert layout.tail_rows(con, "run_params") == 60


def test_a_tenth_of_the_table_unsorted_is_enough(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(layout, "MIN_TAIL_ROWS", 10)
    con = _db(40)  # 80 summary rows
    for table in layout.due(con):
        layout.cluster(con, table)
    more = []
    for i in range(40, 45):  # 10 more summary rows: a tail of 10 of 90, 11%
        more += [run_created(f"{i:032x}"), metrics(f"{i:032x}", [("loss", 0.5, 0, T0)]),
                 metrics(f"{i:032x}", [("acc", 0.5, 0, T0)])]
    apply_batch(con, more)
    assert layout.tail_rows(con, "run_metric_summary") == 10
    assert "run_metric_summary" in layout.due(con)
