"""The record cache (runstream.queries.RecordCache): a served record is always the one the
query's own snapshot holds, whatever changed, was purged or was rebuilt in between."""

from __future__ import annotations

import random

import duckdb
import pytest
from runstream import queries
from runstream.projections.apply_events import (
    apply_batch,
    create_read_model,
    refresh_run_records,
    stale_run_records,
)
from runstream.schemas import (
    ArtifactLogged,
    ArtifactLoggedBody,
    Event,
    RunDeleted,
    RunEnded,
    RunEndedBody,
    RunPurged,
    RunRenamed,
    RunRenamedBody,
    RunRestored,
    TagDeleted,
    TagDeletedBody,
    TagSet,
    TagSetBody,
)

from tests.event_factory import T0, ev, metrics, params, run_created


@pytest.fixture(autouse=True)
def fresh_cache(monkeypatch: pytest.MonkeyPatch) -> queries.RecordCache:
    """Each test has a process cache of its own, empty, with counters at zero."""
    cache = queries.RecordCache()
    monkeypatch.setattr(queries, "RECORDS", cache)
    return cache


def _db() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    create_read_model(con)
    return con


def _apply(con: duckdb.DuckDBPyConnection, events: list[Event]) -> None:
    con.execute("BEGIN")
    apply_batch(con, events)
    con.execute("COMMIT")


def _version(con: duckdb.DuckDBPyConnection, run_id: str) -> int:
    ((version,),) = con.execute("SELECT version FROM runs WHERE run_id = ?", [run_id]).fetchall()
    return int(version)


def _record(run_id: str, params: int = 0) -> queries.RunRecord:
    """A bare record weighing 1 + ``params`` items."""
    return queries.RunRecord(
        run_id, "0", run_id, None, "RUNNING", T0, None, "active", None, None, None, None, None,
        None, None, None, False, None, [], [], None, {f"p{i}": "v" for i in range(params)},
    )


def _uncached(cur: duckdb.DuckDBPyConnection, **search: object) -> list[queries.RunRecord]:
    """The search read from the tables alone (the process's cache set aside, kept as is)."""
    cache = queries.RECORDS
    queries.RECORDS = queries.RecordCache(0)
    try:
        return queries.search_runs(cur, **search)[0]  # type: ignore[arg-type]
    finally:
        queries.RECORDS = cache


# ------------------------------------------------------------------------- the cache alone


def test_a_record_is_served_only_at_its_run_id_and_version() -> None:
    cache = queries.RecordCache(10)
    a = _record("a")
    cache.put_many("model", {1: (3, a)})
    assert cache.get_many("model", [(1, "a", 3)]) == {1: a}
    assert cache.get_many("model", [(1, "a", 4)]) == {}  # the run changed since
    assert cache.get_many("model", [(1, "b", 3)]) == {}  # the key names another run now
    assert cache.get_many("other model", [(1, "a", 3)]) == {}  # another read model file
    assert (cache.hits, cache.misses) == (1, 3)


def test_the_least_recently_used_records_go_first_past_the_size_bound() -> None:
    cache = queries.RecordCache(8)  # items: each record here weighs 2
    for key, run in enumerate("abcd", start=1):
        cache.put_many("m", {key: (0, _record(run, params=1))})
    assert (len(cache), cache.weight) == (4, 8)
    assert cache.get_many("m", [(1, "a", 0)])  # a is now more recent than b
    cache.put_many("m", {5: (0, _record("e", params=1))})
    assert cache.get_many("m", [(2, "b", 0)]) == {}
    assert set(cache.get_many("m", [(1, "a", 0), (3, "c", 0), (4, "d", 0), (5, "e", 0)])) == {
        1, 3, 4, 5}
    cache.put_many("m", {6: (0, _record("f", params=1)), 7: (0, _record("g", params=1))})
    assert cache.weight == 8 and len(cache) == 4  # weight, not count: two more went


def test_a_heavy_record_counts_for_its_params_tags_and_metrics() -> None:
    cache = queries.RecordCache(100)
    cache.put_many("m", {1: (0, _record("a"))})
    cache.put_many("m", {2: (0, _record("b", params=9))})
    assert cache.weight == 1 + 10


def test_a_page_heavier_than_a_quarter_of_the_cache_is_not_kept() -> None:
    cache = queries.RecordCache(100)
    cache.put_many("m", {1: (0, _record("a"))})
    cache.put_many("m", {k: (0, _record(f"r{k}", params=4)) for k in range(2, 8)})  # 30 items
    assert len(cache) == 1 and cache.get_many("m", [(1, "a", 0)])


def test_an_older_snapshot_does_not_replace_a_newer_record() -> None:
    cache = queries.RecordCache(100)
    new, old = _record("a", params=2), _record("a", params=1)
    cache.put_many("m", {1: (6, new)})
    cache.put_many("m", {1: (5, old)})  # a slower reader stores what it read at version 5
    assert cache.get_many("m", [(1, "a", 6)]) == {1: new}
    assert cache.weight == 3


def test_capacity_zero_keeps_nothing() -> None:
    cache = queries.RecordCache(5)
    cache.put_many("m", {1: (0, _record("a"))})
    cache.resize(0)
    assert len(cache) == 0
    cache.put_many("m", {1: (0, _record("a"))})
    assert len(cache) == 0


# ----------------------------------------------------------------- versions in the projection


def test_every_change_to_a_run_raises_its_version() -> None:
    con = _db()
    _apply(con, [run_created("r1"), run_created("r2")])
    changes: list[Event] = [
        params("r1", {"lr": "0.1"}),
        metrics("r1", [("loss", 0.5, 0, T0)]),
        metrics("r1", [("loss", 0.4, 1, T0)]),
        ev(TagSet, TagSetBody(key="k", value="v"), run_id="r1"),
        ev(TagDeleted, TagDeletedBody(key="k"), run_id="r1"),
        ev(RunRenamed, RunRenamedBody(name="other"), run_id="r1"),
        ev(RunEnded, RunEndedBody(status="FINISHED", end_time_ms=T0 + 1), run_id="r1"),
        ev(RunDeleted, run_id="r1"),
        ev(RunRestored, run_id="r1"),
        ev(ArtifactLogged, ArtifactLoggedBody(path="m/MLmodel", size=1, digest="ab" * 32),
           run_id="r1"),
    ]
    for event in changes:
        before, other = _version(con, "r1"), _version(con, "r2")
        _apply(con, [event])
        assert _version(con, "r1") > before, event.type
        assert _version(con, "r2") == other, event.type  # only the runs the batch was about


def test_a_change_is_seen_right_after_a_cached_read() -> None:
    con = _db()
    _apply(con, [run_created("r1"), params("r1", {"lr": "0.1"}),
                 metrics("r1", [("loss", 0.5, 0, T0)])])
    cur = con.cursor()
    (first,) = queries.search_runs(cur, experiment_ids=["0"])[0]
    assert queries.search_runs(cur, experiment_ids=["0"])[0] == [first]
    assert queries.RECORDS.hits == 1
    _apply(con, [metrics("r1", [("loss", 0.25, 1, T0)]),
                 ev(TagSet, TagSetBody(key="k", value="v"), run_id="r1")])
    (second,) = queries.search_runs(cur, experiment_ids=["0"])[0]
    assert second.metrics["loss"].latest_value == 0.25
    assert second.tags["k"] == "v"
    assert queries.get_run(cur, "r1") == second


def test_a_purged_runs_key_given_to_a_new_run_never_serves_the_old_record() -> None:
    con = _db()
    _apply(con, [run_created("old", t=T0), params("old", {"who": "old"})])
    cur = con.cursor()
    assert queries.get_run(cur, "old").params == {"who": "old"}  # cached under its key
    _apply(con, [ev(RunPurged, run_id="old")])
    _apply(con, [run_created("new", t=T0 + 1), params("new", {"who": "new"})])
    ((key,),) = con.execute("SELECT run_key FROM runs WHERE run_id = 'new'").fetchall()
    assert key == 1  # the purged run's key, given again
    (run,) = queries.search_runs(cur, experiment_ids=["0"])[0]
    assert (run.run_id, run.params) == ("new", {"who": "new"})


def test_another_read_model_never_serves_this_ones_records() -> None:
    one, two = _db(), _db()
    _apply(one, [run_created("r1"), params("r1", {"lr": "1"})])
    _apply(two, [run_created("r1"), params("r1", {"lr": "2"})])  # same key, same version
    assert queries.get_run(one.cursor(), "r1").params == {"lr": "1"}
    assert queries.get_run(two.cursor(), "r1").params == {"lr": "2"}


@pytest.mark.parametrize("seed", range(3))
def test_searches_with_the_cache_equal_searches_without_it(seed: int) -> None:
    """Random batches of every kind of run change, purges included; after each batch the
    same searches with and without the cache return equal records, and equal the records of
    run_records documents all refreshed: the projector refreshes them at times of its own
    (here: some of them after some batches), a stale one is made from the tables."""
    rng = random.Random(seed)
    con = _db()
    cur = con.cursor()
    live: list[str] = []
    made = 0
    searches = [
        {"experiment_ids": ["0"], "view": "all", "max_results": 50},
        {"experiment_ids": ["0"], "order_by": ["metrics.loss"], "max_results": 7},
        {"experiment_ids": ["0"], "filter": "params.lr = '0.1'", "view": "all"},
        {"experiment_ids": ["0"], "order_by": ["MAX(metrics.loss) DESC"], "view": "deleted"},
    ]
    for _ in range(40):
        batch: list[Event] = []
        for _ in range(rng.randint(1, 6)):
            roll = rng.random()
            if roll < 0.2 or not live:
                made += 1
                run = f"run{made:03d}"
                live.append(run)
                batch.append(run_created(run, t=T0 + made))
                continue
            run = rng.choice(live)
            if roll < 0.45:
                step = rng.randint(0, 5)
                batch.append(metrics(run, [("loss", rng.random(), step, T0 + step)]))
            elif roll < 0.55:
                batch.append(params(run, {rng.choice(["lr", "depth"]): rng.choice(["0.1", "2"])}))
            elif roll < 0.65:
                batch.append(ev(TagSet, TagSetBody(key="k", value=str(rng.random())), run_id=run))
            elif roll < 0.7:
                batch.append(ev(TagDeleted, TagDeletedBody(key="k"), run_id=run))
            elif roll < 0.78:
                batch.append(ev(RunRenamed, RunRenamedBody(name=f"n{rng.random()}"), run_id=run))
            elif roll < 0.86:
                batch.append(ev(RunDeleted, run_id=run))
            elif roll < 0.93:
                batch.append(ev(RunRestored, run_id=run))
            else:
                batch.append(ev(RunPurged, run_id=run))
                live.remove(run)
        _apply(con, batch)
        stale = stale_run_records(con, 1000)
        if stale and rng.random() < 0.5:
            refresh_run_records(con, rng.sample(stale, rng.randint(1, len(stale))))
        for search in searches:
            found = queries.search_runs(cur, **search)[0]
            assert found == _uncached(cur, **search), search
            con.execute("BEGIN")
            refresh_run_records(con, stale_run_records(con, 1000))
            assert found == _uncached(con, **search), search
            con.execute("ROLLBACK")
        for run in rng.sample(live, min(3, len(live))):
            assert queries.get_run(cur, run) == _uncached(
                cur, experiment_ids=["0"], view="all", filter=f"run_id = '{run}'"
            )[0]
    assert queries.RECORDS.hits > 100  # the cache served, not only the tables


def test_a_wire_form_is_made_once_per_record_and_anew_after_a_change() -> None:
    from runstream.api import mlflow_wire, native

    con = _db()
    _apply(con, [run_created("r1"), params("r1", {"lr": "0.1"})])
    cur = con.cursor()
    first = mlflow_wire.run_json(queries.get_run(cur, "r1"))
    assert mlflow_wire.run_json(queries.get_run(cur, "r1")) is first  # the cached record's
    assert native.run_json(queries.get_run(cur, "r1"))["params"] == {"lr": "0.1"}
    _apply(con, [params("r1", {"depth": "3"})])
    second = mlflow_wire.run_json(queries.get_run(cur, "r1"))
    assert second is not first
    assert {p["key"] for p in second["data"]["params"]} == {"lr", "depth"}
    assert native.run_json(queries.get_run(cur, "r1"))["params"] == {"depth": "3", "lr": "0.1"}


class _Interrupted:
    """A reader's cursor after whose first statement matching ``after`` another connection
    commits a batch: the projector committing in the middle of a request."""

    def __init__(self, cur: duckdb.DuckDBPyConnection, writer: duckdb.DuckDBPyConnection,
                 after: str, batch: list[Event]) -> None:
        self.cur, self.writer, self.after, self.batch = cur, writer, after, batch

    def execute(self, sql: str, params: object = None) -> _Rows:
        rows = _Rows(self.cur.execute(sql, params).fetchall())
        if self.batch and self.after in sql:
            batch, self.batch = self.batch, []
            _apply(self.writer, batch)
        return rows

    def __getattr__(self, name: str) -> object:
        return getattr(self.cur, name)


class _Rows:
    def __init__(self, rows: list[tuple[object, ...]]) -> None:
        self.rows = rows

    def fetchall(self) -> list[tuple[object, ...]]:
        return self.rows

    def fetchone(self) -> tuple[object, ...] | None:
        return self.rows[0] if self.rows else None


def test_a_batch_committed_in_the_middle_of_a_read_is_not_seen_by_it(tmp_path) -> None:
    """Between the statement finding a run's key and version and the one reading its record,
    the run is purged and a new run gets its key: the read, one snapshot, still sees the old
    run whole (and files it under that snapshot's version)."""
    from runstream.read_store import SingleFileStore

    con = duckdb.connect(str(tmp_path / "model.duckdb"))
    create_read_model(con)
    _apply(con, [run_created("a", t=T0), params("a", {"who": "a"})])
    store = SingleFileStore(con)
    swap = [ev(RunPurged, run_id="a"), run_created("b", t=T0 + 1), params("b", {"who": "b"})]
    with store.reading() as cur:
        run = queries.get_run(
            _Interrupted(cur, con.cursor(), "FROM runs WHERE run_id IN", swap), "a"  # type: ignore[arg-type]
        )
    assert (run.run_id, run.params) == ("a", {"who": "a"})
    with store.reading() as cur:
        (now,) = queries.search_runs(cur, experiment_ids=["0"])[0]
    assert (now.run_id, now.params) == ("b", {"who": "b"})


def test_the_cache_size_setting_refuses_a_negative_size(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError
    from runstream.settings import Settings

    monkeypatch.setenv("RUNSTREAM_RECORD_CACHE_ITEMS", "-1")
    with pytest.raises(ValidationError, match="record_cache_items"):
        Settings()
    monkeypatch.setenv("RUNSTREAM_RECORD_CACHE_ITEMS", "0")  # turns the cache off
    assert Settings().record_cache_items == 0


def test_a_document_with_nan_or_infinity_is_read_as_the_tables_give_it() -> None:
    """orjson refuses NaN and Infinity, which DuckDB writes into such a document: the record
    is read by the standard library then, the same as one made from the tables."""
    import math

    con = _db()
    _apply(con, [run_created("r"), params("r", {"lr": "0.1"}),
                 metrics("r", [("nan", math.nan, 0, 1), ("inf", -math.inf, 0, 1),
                               ("ok", 0.5, 3, 4)])])
    from_tables = queries.get_run(con.cursor(), "r")
    refresh_run_records(con, stale_run_records(con, 10))
    assert stale_run_records(con, 10) == []
    queries.RECORDS.clear()
    from_document = queries.get_run(con.cursor(), "r")
    assert repr(from_document) == repr(from_tables)  # repr: NaN != NaN
    summary = from_document.metrics
    assert math.isnan(summary["nan"].latest_value) and summary["inf"].min_value == -math.inf
    assert summary["ok"] == ("ok", 0.5, 3, 4, 0.5, 0.5, 1)
