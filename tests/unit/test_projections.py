"""The fold of events into the read model, on hand-made batches (no broker)."""

from __future__ import annotations

import json
import math
import random
import struct

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from runstream.projections.apply_events import (
    apply_batch,
    create_read_model,
    refresh_run_records,
    stale_run_records,
)
from runstream.projections.read_model import PROJECTED_TABLES, projected_rows_sql
from runstream.schemas import (
    ArtifactLogged,
    ArtifactLoggedBody,
    ExperimentCreated,
    ExperimentCreatedBody,
    ExperimentRenamed,
    ExperimentRenamedBody,
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
from runstream.schemas.ids import experiment_id_for_name

from tests.event_factory import T0, ev, metrics, packed_metrics, params, run_created

DAY = 86_400_000


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    c = duckdb.connect()
    create_read_model(c)
    return c


def apply(con: duckdb.DuckDBPyConnection, events: list) -> object:
    con.execute("BEGIN")
    result = apply_batch(con, events)
    con.execute("COMMIT")
    return result


def summary(con: duckdb.DuckDBPyConnection, run: str, key: str) -> tuple:
    return con.execute(
        "SELECT min_value, max_value, latest_value, latest_step, latest_timestamp, count "
        "FROM metric_summary WHERE run_id = ? AND key = ?",
        [run, key],
    ).fetchone()


def snapshot(con: duckdb.DuckDBPyConnection) -> dict[str, list]:
    out = {}
    for table in PROJECTED_TABLES:
        rows = con.execute(projected_rows_sql(table)).fetchall()
        out[table] = sorted(rows, key=repr)
    return out


# ------------------------------------------------------------------- metrics


def test_latest_is_greatest_step_then_timestamp_then_value(con) -> None:
    apply(con, [run_created("r")])
    # MLflow's observed case: (s2,t100,1.0), (s1,t999,2.0), (s2,t100,0.5), (s2,t50,0.7)
    apply(con, [metrics("r", [("m", 1.0, 2, 100), ("m", 2.0, 1, 999)])])
    apply(con, [metrics("r", [("m", 0.5, 2, 100), ("m", 0.7, 2, 50)])])
    mn, mx, latest, step, ts, count = summary(con, "r", "m")
    assert (latest, step, ts) == (1.0, 2, 100)
    assert (mn, mx, count) == (0.5, 2.0, 4)


points_strategy = st.lists(
    st.tuples(
        st.sampled_from(["loss", "acc"]),
        st.one_of(
            st.floats(allow_nan=False, allow_infinity=True, width=32),
            st.just(math.nan),
        ),
        st.integers(0, 5),
        st.integers(0, 5),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(points=points_strategy, seed=st.integers(0, 2**32 - 1), chunks=st.integers(1, 5))
def test_summary_is_independent_of_order_and_duplication(points, seed, chunks) -> None:
    """min / max / latest / count survive shuffling, chunking and duplicated points, and
    the packed form of a batch counts as the same points as its JSON form."""

    def project(pts: list, packed: random.Random | None = None) -> tuple[dict, list]:
        c = duckdb.connect()
        create_read_model(c)
        apply(c, [run_created("r")])
        size = max(1, len(pts) // chunks)
        for i in range(0, len(pts), size):
            form = packed_metrics if packed is not None and packed.random() < 0.5 else metrics
            apply(c, [form("r", pts[i : i + size])])
        s = {k: summary(c, "r", k) for k in ("loss", "acc")}
        h = sorted(
            c.execute("SELECT key, step, timestamp, value FROM metric_history").fetchall(),
            key=repr,
        )
        return s, h

    rng = random.Random(seed)
    shuffled = points[:]
    rng.shuffle(shuffled)
    duplicated = shuffled + rng.sample(shuffled, k=min(len(shuffled), 5))
    rng.shuffle(duplicated)
    assert repr(project(points)) == repr(project(duplicated, packed=rng))

    # And the summary equals a from-scratch computation of the rule.
    s, _ = project(points)
    for key in ("loss", "acc"):
        pts = {(p[2], p[3], p[1] + 0.0) for p in points if p[0] == key}
        if not pts:
            assert s[key] is None
            continue
        uniq = {(st_, ts, repr(v)): v for st_, ts, v in pts}
        vals = list(uniq.values())
        finite = [v for v in vals if not math.isnan(v)]
        best = max(uniq.items(), key=lambda kv: (kv[0][0], kv[0][1], 0.0 if math.isnan(kv[1]) else kv[1], math.isnan(kv[1])))
        mn, mx, latest, step, ts, count = s[key]
        assert count == len(uniq)
        assert (step, ts) == best[0][:2]
        assert repr(latest) == repr(best[1])
        assert mn == (min(finite) if finite else None)
        assert mx == (max(finite) if finite else None)


def test_the_same_point_twice_is_stored_once(con) -> None:
    apply(con, [run_created("r")])
    apply(con, [metrics("r", [("m", 1.0, 0, 10), ("m", 1.0, 0, 10), ("m", 2.0, 1, 11)])])
    apply(con, [metrics("r", [("m", 1.0, 0, 10)])])  # a later resend with a new event id
    assert con.execute("SELECT count(*) FROM metric_history").fetchone() == (2,)
    assert summary(con, "r", "m")[-1] == 2
    # A different value at the same step and timestamp is a different point.
    apply(con, [metrics("r", [("m", 5.0, 0, 10)])])
    assert con.execute("SELECT count(*) FROM metric_history").fetchone() == (3,)


def test_a_large_packed_batch_gives_the_tables_of_its_json_form() -> None:
    """From 64 points on, a packed batch is read from its own bytes (the property test above
    stays below that): the same tables as its JSON form, duplicates and NaN included."""
    rng = random.Random(3)
    pts = [(rng.choice(["loss", "acc", "lr"]), rng.choice([rng.random(), math.nan, -0.0, 1.0]),
            rng.randrange(40), rng.randrange(3)) for _ in range(300)]
    pts += pts[:50]  # exact duplicates, within the batch

    def project(form) -> dict:
        c = duckdb.connect()
        create_read_model(c)
        apply(c, [run_created("r")])
        apply(c, [form("r", pts[:200]), form("r", pts[200:])])
        apply(c, [form("r", pts[100:180])])  # resent points, in a later batch
        return snapshot(c)

    assert repr(project(packed_metrics)) == repr(project(metrics))


def test_a_packed_nan_of_any_bits_and_negative_zero_are_the_same_points(con) -> None:
    """A packed value is IEEE 754 bits as the producer wrote them: a NaN with another
    payload, or -0.0, is still the same point as the JSON "NaN" or 0.0 logged before."""
    odd_nan = struct.unpack("<d", struct.pack("<Q", 0xFFF8_0000_0000_0123))[0]
    apply(con, [run_created("r")])
    apply(con, [metrics("r", [("m", math.nan, 1, 10), ("m", 0.0, 2, 10)])])
    apply(con, [packed_metrics("r", [("m", odd_nan, 1, 10), ("m", -0.0, 2, 10)])])
    mn, mx, latest, step, ts, count = summary(con, "r", "m")
    assert count == 2
    assert (mn, mx, latest, step) == (0.0, 0.0, 0.0, 2)
    assert con.execute("SELECT count(*) FROM metric_history").fetchone() == (2,)


def test_nan_and_infinities_are_stored_and_min_max_ignore_nan(con) -> None:
    apply(con, [run_created("r")])
    apply(con, [metrics("r", [("m", math.nan, 3, 10), ("m", math.inf, 1, 10),
                              ("m", -math.inf, 2, 10), ("n", math.nan, 0, 0)])])
    mn, mx, latest, step, *_ = summary(con, "r", "m")
    assert (mn, mx) == (-math.inf, math.inf)
    assert math.isnan(latest) and step == 3
    values = [v for (v,) in con.execute("SELECT value FROM metric_history WHERE key='m'").fetchall()]
    assert sorted(map(repr, values)) == sorted(["nan", "inf", "-inf"])
    assert summary(con, "r", "n")[:2] == (None, None)


def test_nan_counts_as_zero_in_the_value_tie_break(con) -> None:
    apply(con, [run_created("r")])
    apply(con, [metrics("r", [("m", -1.0, 3, 1000), ("m", math.nan, 3, 1000)])])
    assert math.isnan(summary(con, "r", "m")[2])
    apply(con, [metrics("r", [("p", 1.0, 3, 1000), ("p", math.nan, 3, 1000)])])
    assert summary(con, "r", "p")[2] == 1.0


# -------------------------------------------------------------------- params


def test_a_param_is_set_once_first_in_log_order_wins(con) -> None:
    apply(con, [run_created("r")])
    apply(con, [params("r", {"lr": "0.1"}), params("r", {"lr": "0.2", "bs": "32"})])
    apply(con, [params("r", {"lr": "0.1"})])  # same value again: no conflict
    apply(con, [params("r", {"lr": "0.3"})])
    assert dict(con.execute("SELECT key, value FROM params").fetchall()) == {"lr": "0.1", "bs": "32"}
    conflicts = con.execute(
        "SELECT key, kept_value, rejected_value FROM param_conflicts ORDER BY rejected_value"
    ).fetchall()
    assert conflicts == [("lr", "0.1", "0.2"), ("lr", "0.1", "0.3")]


# ------------------------------------------------------- cross-partition order


def _experiment_then_runs() -> tuple[list, list]:
    exp = experiment_id_for_name("shared")
    exp_events = [
        ev(ExperimentCreated, ExperimentCreatedBody(name="shared"), experiment_id=exp),
        ev(ExperimentRenamed, ExperimentRenamedBody(name="shared-2"), experiment_id=exp, t=T0 + 5),
    ]
    run_events = [
        run_created("r1", exp, exp_name="shared"),
        params("r1", {"a": "1"}),
        metrics("r1", [("m", 1.0, 0, 1)]),
        run_created("r2", exp, exp_name="shared"),
    ]
    return exp_events, run_events


@pytest.mark.parametrize("order", ["experiment-first", "runs-first", "interleaved"])
def test_runs_before_their_experiment_converge(order: str) -> None:
    exp_events, run_events = _experiment_then_runs()
    reference = duckdb.connect()
    create_read_model(reference)
    apply(reference, exp_events + run_events)

    con = duckdb.connect()
    create_read_model(con)
    if order == "experiment-first":
        batches = [exp_events, run_events]
    elif order == "runs-first":
        batches = [run_events, exp_events]
    else:
        batches = [run_events[:2], exp_events[:1], run_events[2:], exp_events[1:]]
    for batch in batches:
        apply(con, batch)
    assert snapshot(con) == snapshot(reference)
    row = con.execute(
        "SELECT name, placeholder FROM experiments WHERE experiment_id = ?",
        [experiment_id_for_name("shared")],
    ).fetchone()
    assert row == ("shared-2", False)


def test_many_processes_creating_one_name_end_with_one_experiment(con) -> None:
    exp = experiment_id_for_name("team-exp")
    creations = [
        ev(ExperimentCreated, ExperimentCreatedBody(name="team-exp"), experiment_id=exp, t=T0 + i)
        for i in range(20)
    ]
    runs = [run_created(f"r{i}", exp, exp_name="team-exp") for i in range(20)]
    apply(con, runs[:10] + creations + runs[10:])
    assert con.execute("SELECT count(*) FROM experiments WHERE name = 'team-exp'").fetchone() == (1,)
    assert con.execute("SELECT count(DISTINCT experiment_id) FROM runs").fetchone() == (1,)
    assert con.execute("SELECT creation_time FROM experiments WHERE experiment_id = ?",
                       [exp]).fetchone() == (T0,)


# ---------------------------------------------------------- delete, restore


def test_delete_and_restore_keep_data_and_time(con) -> None:
    apply(con, [run_created("r"), params("r", {"a": "1"})])
    apply(con, [ev(RunDeleted, run_id="r", t=T0 + DAY)])
    apply(con, [ev(RunDeleted, run_id="r", t=T0 + 2 * DAY)])  # second delete keeps the first time
    assert con.execute("SELECT lifecycle_stage, deleted_time FROM runs").fetchone() == (
        "deleted", T0 + DAY)
    assert con.execute("SELECT count(*) FROM active_runs").fetchone() == (0,)
    apply(con, [ev(RunRestored, run_id="r", t=T0 + 3 * DAY)])
    assert con.execute("SELECT lifecycle_stage, deleted_time FROM runs").fetchone() == ("active", None)
    assert con.execute("SELECT count(*) FROM params").fetchone() == (1,)


def test_retention_views_take_time_as_arguments(con) -> None:
    apply(con, [run_created("old"), run_created("recent"), run_created("alive")])
    apply(con, [ev(RunDeleted, run_id="old", t=T0), ev(RunDeleted, run_id="recent", t=T0 + 20 * DAY)])
    as_of, window = T0 + 31 * DAY, 30 * DAY
    within = con.execute("SELECT run_id FROM runs_deleted_within(?, ?)", [as_of, window]).fetchall()
    past = con.execute("SELECT run_id FROM runs_past_retention(?, ?)", [as_of, window]).fetchall()
    assert within == [("recent",)] and past == [("old",)]


def test_purge_removes_the_run_everywhere_and_restore_is_refused(con) -> None:
    apply(con, [run_created("r", tags={"t": "v"}), params("r", {"a": "1"}),
                metrics("r", [("m", 1.0, 0, 1)]),
                ev(ArtifactLogged, ArtifactLoggedBody(path="f.txt", size=1, digest="00"), run_id="r"),
                run_created("other")])
    apply(con, [ev(RunDeleted, run_id="r"), metrics("r", [("m", 2.0, 1, 2)]), ev(RunPurged, run_id="r")])
    for table in ("runs", "params", "tags", "metric_history", "metric_summary", "artifacts"):
        assert con.execute(f"SELECT count(*) FROM {table} WHERE run_id = 'r'").fetchone() == (0,), table
    assert con.execute("SELECT count(*) FROM runs").fetchone() == (1,)
    result = apply(con, [ev(RunRestored, run_id="r"), metrics("r", [("m", 3.0, 2, 3)])])
    assert [r.reason for r in result.rejected] == ["run_purged", "run_purged"]
    assert con.execute("SELECT count(*) FROM purged_runs").fetchone() == (1,)


def _stored_records(con: duckdb.DuckDBPyConnection) -> list[tuple]:
    return con.execute("SELECT run_key, version, record FROM run_records ORDER BY run_key").fetchall()


def test_run_records_follow_every_change_of_their_run(con) -> None:
    """After every batch, the runs it changed are stale, and once refreshed each run's
    document is the one its tables give now, at its version: whatever changed the run (row,
    params, tags, metrics, lifecycle, purge)."""
    batches = [
        [run_created("r", tags={"a": "1"}), params("r", {"p": "x"}), run_created("other")],
        [metrics("r", [("m", 1.0, 0, 1), ("m", float("nan"), 1, 2), ("n", float("inf"), 0, 1)])],
        [ev(TagSet, TagSetBody(key="b", value='say "hi"\n'), run_id="r"),
         ev(TagDeleted, TagDeletedBody(key="a"), run_id="r")],
        [ev(RunRenamed, RunRenamedBody(name="renamed"), run_id="r"),
         ev(RunEnded, RunEndedBody(status="FINISHED", end_time_ms=T0 + 9), run_id="r"),
         ev(ArtifactLogged, ArtifactLoggedBody(path="model/MLmodel", size=3, digest="aa"),
            run_id="r")],
        [ev(RunDeleted, run_id="r"), metrics("other", [("m", -0.0, 0, 1)])],
        [ev(RunRestored, run_id="r"), ev(RunPurged, run_id="other")],
    ]
    for batch in batches:
        before = {k: v for k, v, _ in _stored_records(con)}
        apply(con, batch)
        versions = dict(con.execute("SELECT run_key, version FROM runs").fetchall())
        stale = stale_run_records(con, 100)
        assert stale == sorted((k for k in versions if before.get(k) != versions[k]),
                               reverse=True)
        assert stale, "every batch here changes a run"
        refresh_run_records(con, stale)
        assert stale_run_records(con, 100) == []
        stored = _stored_records(con)
        con.execute("BEGIN")
        refresh_run_records(con, list(versions))
        assert _stored_records(con) == stored, "as made from scratch"
        con.execute("ROLLBACK")
        assert {k: v for k, v, _ in stored} == versions
    ((record,),) = con.execute("SELECT record FROM run_records").fetchall()
    row, params_, tags, metrics_ = json.loads(record)
    assert (row[0], row[2], row[4], row[6], row[7], row[16]) == (
        "r", "renamed", "FINISHED", T0 + 9, "active", True)
    assert (params_, tags) == ({"p": "x"}, {"b": 'say "hi"\n'})
    # [key, latest_value, latest_step, latest_timestamp, min_value, max_value, count]
    m, n = metrics_
    assert m[0] == "m" and math.isnan(m[1]) and m[2:] == [1, 2, 1.0, 1.0, 2]
    assert n == ["n", math.inf, 0, 1, math.inf, math.inf, 1]


# ---------------------------------------------------------------- other rules


def test_tags_status_and_artifacts(con) -> None:
    apply(con, [run_created("r", tags={"a": "1"})])
    apply(con, [ev(TagSet, TagSetBody(key="a", value="2"), run_id="r"),
                ev(TagSet, TagSetBody(key="b", value="x"), run_id="r"),
                ev(TagDeleted, TagDeletedBody(key="b"), run_id="r"),
                ev(RunEnded, RunEndedBody(status="FINISHED", end_time_ms=T0 + 9), run_id="r"),
                ev(ArtifactLogged, ArtifactLoggedBody(path="model/MLmodel", size=3, digest="aa"),
                   run_id="r")])
    assert con.execute("SELECT key, value FROM tags").fetchall() == [("a", "2")]
    assert con.execute("SELECT status, end_time, has_model FROM runs").fetchone() == (
        "FINISHED", T0 + 9, True)


def test_duplicated_deliveries_are_applied_once(con) -> None:
    batch = [run_created("r"), params("r", {"a": "1"}), metrics("r", [("m", 1.0, 0, 1)])]
    apply(con, batch)
    result = apply(con, batch + batch)
    assert result.applied == 0 and result.duplicates == 6
    assert summary(con, "r", "m")[-1] == 1


def test_events_of_a_run_not_created_yet_wait_for_it(con) -> None:
    result = apply(con, [metrics("ghost", [("m", 1.0, 0, 1)]),
                         ev(TagSet, TagSetBody(key="a", value="b"), run_id="ghost")])
    assert result.applied == 2 and not result.rejected
    assert con.execute("SELECT count(*) FROM rejected_events").fetchone() == (0,)
    assert con.execute("SELECT count(*) FROM metric_history").fetchone() == (0,)
    assert con.execute("SELECT run_id, count(*) FROM parked_events GROUP BY ALL").fetchall() == [
        ("ghost", 2)
    ]
    apply(con, [run_created("ghost"), metrics("ghost", [("m", 2.0, 1, 2)])])
    assert con.execute("SELECT count(*) FROM parked_events").fetchone() == (0,)
    assert summary(con, "ghost", "m") == (1.0, 2.0, 2.0, 1, 2, 2)
    assert con.execute("SELECT value FROM tags WHERE run_id = 'ghost' AND key = 'a'").fetchone() == ("b",)


def test_shuffled_partitions_give_the_same_tables() -> None:
    """Each run's events stay in order (one partition); partitions interleave at random."""
    exp = experiment_id_for_name("e")
    partitions = [
        [ev(ExperimentCreated, ExperimentCreatedBody(name="e"), experiment_id=exp)],
        *[
            [run_created(f"r{i}", exp, exp_name="e"), params(f"r{i}", {"p": str(i)}),
             metrics(f"r{i}", [("m", float(j), j, j) for j in range(5)]),
             ev(RunEnded, RunEndedBody(status="FINISHED", end_time_ms=T0), run_id=f"r{i}")]
            for i in range(4)
        ],
    ]
    reference = duckdb.connect()
    create_read_model(reference)
    apply(reference, [e for p in partitions for e in p])
    for seed in range(5):
        rng = random.Random(seed)
        queues = [list(p) for p in partitions]
        merged = []
        while any(queues):
            q = rng.choice([q for q in queues if q])
            merged.append(q.pop(0))
        con = duckdb.connect()
        create_read_model(con)
        i = 0
        while i < len(merged):
            n = rng.randint(1, 4)
            apply(con, merged[i : i + n])
            i += n
        assert snapshot(con) == snapshot(reference)


def test_parked_events_keep_log_order_and_are_not_applied_twice(con) -> None:
    """A rank's points that beat rank 0's run.created to the log are not lost, and a param
    logged first in log order still wins, whichever batch the run was created in."""
    early = [params("late-run", {"p": "first"}), metrics("late-run", [("m", 1.0, 0, 1)])]
    apply(con, early[:1])
    apply(con, early[1:] + early[:1])  # a resend of an already parked event
    result = apply(con, [run_created("late-run"), params("late-run", {"p": "second"})])
    assert not result.rejected
    assert con.execute("SELECT value FROM params WHERE run_id = 'late-run'").fetchall() == [("first",)]
    assert con.execute("SELECT rejected_value FROM param_conflicts").fetchall() == [("second",)]
    assert summary(con, "late-run", "m")[-1] == 1
    assert apply(con, early).duplicates == 2


def test_ranks_racing_rank_zero_to_the_log_give_the_same_tables() -> None:
    """Rank 0 creates a run that other ranks log to; their events reach the run's partition
    in any order, run.created included, and batches cut the log anywhere."""
    ranks = {
        f"r{i}": [
            [run_created(f"r{i}"), metrics(f"r{i}", [("m", 0.5, 0, 10)])],
            *[[metrics(f"r{i}", [("m", float(rank * 10 + j), j, rank * 100 + j)]),
               ev(TagSet, TagSetBody(key=f"rank{rank}", value="up"), run_id=f"r{i}")]
              for rank in (1, 2) for j in range(3)],
        ]
        for i in range(3)
    }
    reference = duckdb.connect()
    create_read_model(reference)
    apply(reference, [e for streams in ranks.values() for stream in streams for e in stream])
    for seed in range(8):
        rng = random.Random(seed)
        queues = [list(stream) for streams in ranks.values() for stream in streams]
        merged = []
        while any(queues):
            merged.append(rng.choice([q for q in queues if q]).pop(0))
        con = duckdb.connect()
        create_read_model(con)
        i = 0
        while i < len(merged):
            n = rng.randint(1, 5)
            assert not apply(con, merged[i : i + n]).rejected
            i += n
        assert snapshot(con) == snapshot(reference)
        assert con.execute("SELECT count(*) FROM parked_events").fetchone() == (0,)
