"""Query-side benchmark at 100,000 runs x 20 metrics x 10 params x 5 tags (on demand, no broker).

Run: ``.venv/bin/pytest tests/bench/test_query_bench.py -s --override-ini addopts=``

The read model is built with the projection's own ``apply_batch`` in big batches, straight into
a DuckDB file, and cached under ``$RUNSTREAM_BENCH_DIR`` (default /tmp/runstream-bench) keyed by
the data set's version, so only the first run pays for it. Figures are printed, never asserted:
targets (p50) are search examples with max_results 100 <= 20 ms, ordered by a metric <= 30 ms,
max_results 1000 <= 100 ms, compare of 50 runs <= 50 ms, CSV of every run <= 3 s, a
1,000,000-point history downsampled to 1,000 points <= 100 ms.
"""

from __future__ import annotations

import os
import random
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import pytest
from runstream import queries
from runstream.projections import layout
from runstream.projections.apply_events import apply_batch, create_read_model
from runstream.projections.read_model import SCHEMA_REVISION
from runstream.schemas import (
    ArtifactLogged,
    ArtifactLoggedBody,
    Event,
    ExperimentCreated,
    ExperimentCreatedBody,
    MetricsLogged,
    MetricsLoggedBody,
    ParamsLogged,
    ParamsLoggedBody,
    RunCreated,
    RunCreatedBody,
    RunEnded,
    RunEndedBody,
    new_event,
)

RUNS = 100_000
EXPERIMENTS = 4
POINTS_PER_METRIC = 3
BIG_HISTORY = 1_000_000
DATASET_VERSION = f"v1-r{SCHEMA_REVISION}-c1-{RUNS}-{POINTS_PER_METRIC}-{BIG_HISTORY}"
T0 = 1_764_000_000_000
BIG_RUN = "f" * 32

FEATURES_EXAMPLES = [
    "metrics.r2 > 0.3",
    "params.elasticNetParam = 0.5",
    "params.elasticNetParam = 0.5 AND metrics.avg_areaUnderROC > 0.3",
    "MIN(metrics.rmse) <= 1",
    "MAX(metrics.memUsage) > 0.9",
    "LATEST(metrics.memUsage) = 0 AND MIN(metrics.rmse) <= 1",
    'tags.estimator_name="RandomForestRegressor"',
    'tags.color="blue" AND tags.size=5',
    'tags.`my custom tag` = "my value"',
]
METRIC_KEYS = ["r2", "avg_areaUnderROC", "rmse", "memUsage", "loss", "acc"] + [
    f"m{i:02d}" for i in range(14)
]
PARAM_KEYS = ["elasticNetParam", "lr", "epochs", "batch_size", "regParam", "maxIter", "depth",
              "seed", "optimizer", "dropout"]


def _ev(cls: type, body: object, *, t: int, **ids: str) -> Event:
    return new_event(cls, body, event_time_ms=t, producer="bench", **ids)  # type: ignore[no-any-return]


def _run_events(i: int, rng: random.Random) -> list[Event]:
    run_id = f"{rng.getrandbits(128):032x}"
    exp_id = f"bench{i % EXPERIMENTS}"
    t = T0 + i * 1000
    tags = {
        "estimator_name": rng.choice(["RandomForestRegressor", "LinearRegression", "GBTRegressor"]),
        "color": rng.choice(["blue", "red", "green", "yellow"]),
        "size": str(rng.randint(1, 8)),
        "my custom tag": rng.choice(["my value", "other value"]),
        "team": rng.choice(["vision", "nlp", "risk"]),
    }
    events: list[Event] = [
        _ev(RunCreated, RunCreatedBody(name=f"run-{i}", user=f"user{i % 17}",
                                       source_name="train.py", source_type="LOCAL",
                                       git_commit=f"{i:040x}", start_time_ms=t, tags=tags,
                                       experiment_name=f"bench-{i % EXPERIMENTS}"),
            t=t, run_id=run_id, experiment_id=exp_id),
        _ev(ParamsLogged, ParamsLoggedBody(params=[
            {"key": "elasticNetParam", "value": rng.choice(["0.0", "0.25", "0.5", "0.75", "1.0"])},
            {"key": "lr", "value": rng.choice(["0.1", "0.01", "0.001"])},
            {"key": "epochs", "value": str(rng.randint(1, 50))},
            {"key": "batch_size", "value": rng.choice(["32", "64", "128"])},
            {"key": "regParam", "value": f"{rng.random():.3f}"},
            {"key": "maxIter", "value": str(rng.randint(10, 100))},
            {"key": "depth", "value": str(rng.randint(2, 12))},
            {"key": "seed", "value": str(i)},
            {"key": "optimizer", "value": rng.choice(["adam", "sgd"])},
            {"key": "dropout", "value": f"{rng.random() / 2:.2f}"},
        ]), t=t, run_id=run_id),
    ]
    points: list[tuple[str, float, int, int]] = []
    for key in METRIC_KEYS:
        for step in range(POINTS_PER_METRIC):
            if key == "memUsage" and i % 10 == 0 and step == POINTS_PER_METRIC - 1:
                value = 0.0  # LATEST(metrics.memUsage) = 0 matches a tenth of the runs
            elif key == "rmse":
                value = rng.uniform(0.5, 5.0)
            else:
                value = rng.random()
            points.append((key, value, step, t + step))
    events.append(_ev(MetricsLogged, MetricsLoggedBody.from_points(points), t=t, run_id=run_id))
    if i % 10 == 3:
        events.append(_ev(ArtifactLogged, ArtifactLoggedBody(path="model/MLmodel", size=100,
                                                             digest="ab" * 32), t=t, run_id=run_id))
    status = "FAILED" if i % 13 == 0 else "FINISHED"
    events.append(_ev(RunEnded, RunEndedBody(status=status, end_time_ms=t + 500), t=t, run_id=run_id))
    return events


def _apply(con: duckdb.DuckDBPyConnection, events: list[Event]) -> None:
    con.execute("BEGIN TRANSACTION")
    result = apply_batch(con, events)
    con.execute("COMMIT")
    assert not result.rejected, result.rejected[:3]
    # What the projector does between batches: re-sort a key/value table once its tail is due.
    for table in layout.due(con):
        con.execute("BEGIN TRANSACTION")
        layout.cluster(con, table)
        con.execute("COMMIT")


def build_bench_db(path: Path) -> None:
    """Fill a new DuckDB file with the benchmark data set, through the projection."""
    rng = random.Random(7)
    con = duckdb.connect(str(path))
    create_read_model(con)
    _apply(con, [
        _ev(ExperimentCreated, ExperimentCreatedBody(name=f"bench-{e}", creation_time_ms=T0),
            t=T0, experiment_id=f"bench{e}")
        for e in range(EXPERIMENTS)
    ])
    batch: list[Event] = []
    for i in range(RUNS):
        batch.extend(_run_events(i, rng))
        if len(batch) >= 20_000:
            _apply(con, batch)
            batch = []
    # One run with a 1,000,000-point metric (a spike at step 777,777), logged in big batches.
    t = T0 + RUNS * 1000
    batch.append(_ev(RunCreated, RunCreatedBody(name="big", start_time_ms=t, experiment_name="bench-0"),
                     t=t, run_id=BIG_RUN, experiment_id="bench0"))
    _apply(con, batch)
    chunk = 100_000
    for start in range(0, BIG_HISTORY, chunk):
        steps = list(range(start, start + chunk))
        values = [100.0 if s == 777_777 else 1.0 / (1 + s) for s in steps]
        body = MetricsLoggedBody(keys=["loss"], key_index=[0] * chunk, values=values, steps=steps,
                                 timestamps=[t + s for s in steps])
        _apply(con, [_ev(MetricsLogged, body, t=t, run_id=BIG_RUN)])
    con.execute("CHECKPOINT")
    con.close()


@pytest.fixture(scope="module")
def bench_db() -> Iterator[duckdb.DuckDBPyConnection]:
    root = Path(os.environ.get("RUNSTREAM_BENCH_DIR", "/tmp/runstream-bench"))
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"read-model-{DATASET_VERSION}.duckdb"
    if not path.exists():
        t0 = time.perf_counter()
        partial = path.with_suffix(".building")
        partial.unlink(missing_ok=True)
        build_bench_db(partial)
        partial.rename(path)
        print(f"\nbuilt {path} in {time.perf_counter() - t0:.0f}s")
    # The node's settings: ReadStore opens DuckDB with 2 threads and a 4 GB memory limit.
    con = duckdb.connect(str(path), read_only=True,
                         config={"threads": 2, "memory_limit": "4GB"})
    yield con
    con.close()


def _timed(fn: Callable[[], object], repeat: int) -> tuple[float, float, float, object]:
    """p50 and p95 of wall time, and p50 of CPU time (all threads), in ms."""
    fn()  # warm-up: first touch of the columns
    wall, cpu = [], []
    result: object = None
    for _ in range(repeat):
        c0, t0 = time.process_time(), time.perf_counter()
        result = fn()
        wall.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
    wall.sort()
    p95 = wall[min(len(wall) - 1, round(0.95 * (len(wall) - 1)))]
    return statistics.median(wall), p95, statistics.median(cpu), result


def _report(name: str, target_ms: float, fn: Callable[[], object], repeat: int = 30,
            describe: Callable[[object], str] = lambda r: "") -> None:
    p50, p95, cpu, result = _timed(fn, repeat)
    flag = "ok  " if p50 <= target_ms else "SLOW"
    print(f"{flag} {name:<62} p50 {p50:7.1f}  p95 {p95:7.1f}  cpu {cpu:7.1f} ms "
          f"(target {target_ms:g})  {describe(result)}  [load {os.getloadavg()[0]:.1f}]")


def _hits(result: object) -> str:
    runs, token = result  # type: ignore[misc]
    return f"{len(runs)} runs{' +more' if token else ''}"


@pytest.mark.timeout(3600)  # the first run builds the data set (a few minutes)
def test_query_benchmark(bench_db: duckdb.DuckDBPyConnection) -> None:
    cur = bench_db.cursor()
    runs = cur.execute("SELECT count(*) FROM runs").fetchone()
    points = cur.execute("SELECT count(*) FROM metric_history").fetchone()
    print(f"\nread model: {runs[0]} runs, {points[0]} metric points")
    exps = [f"bench{e}" for e in range(EXPERIMENTS)]

    for text in FEATURES_EXAMPLES:
        _report(f"search {text!r} (100)", 20, lambda text=text: queries.search_runs(
            cur, experiment_ids=exps, filter=text, max_results=100), describe=_hits)
    _report("search, no filter (100)", 20, lambda: queries.search_runs(
        cur, experiment_ids=exps, max_results=100), describe=_hits)
    _report("search ordered by metrics.r2 DESC (100)", 30, lambda: queries.search_runs(
        cur, experiment_ids=exps, filter="metrics.r2 > 0.3", order_by=["metrics.r2 DESC"],
        max_results=100), describe=_hits)
    _report("search ordered by MIN(metrics.rmse), params.lr (100)", 30, lambda: queries.search_runs(
        cur, experiment_ids=exps, order_by=["MIN(metrics.rmse)", "params.lr DESC"],
        max_results=100), describe=_hits)
    _report("search max_results 1000", 100, lambda: queries.search_runs(
        cur, experiment_ids=exps, max_results=1000), describe=_hits)
    _, token = queries.search_runs(cur, experiment_ids=exps, max_results=1000)
    _report("search max_results 1000, second page", 100, lambda: queries.search_runs(
        cur, experiment_ids=exps, max_results=1000, page_token=token), describe=_hits)

    fifty = [r.run_id for r in queries.search_runs(cur, experiment_ids=exps, max_results=50)[0]]
    _report("compare 50 runs (+ scatter, contour)", 50, lambda: queries.compare_runs(
        cur, fifty, x="params.elasticNetParam", y="metrics.r2", z="metrics.rmse"),
        describe=lambda r: f"{len(r['params'])} params, {len(r['metrics'])} metrics")  # type: ignore[index]

    def csv_all() -> int:
        return sum(len(chunk) for chunk in queries.iter_runs_csv(cur, experiment_ids=None))

    _report("CSV of every run", 3000, csv_all, repeat=3,
            describe=lambda n: f"{n / 1e6:.1f} MB")  # type: ignore[operator]
    _report("history 1,000,000 points downsampled to 1,000", 100,
            lambda: queries.metric_history_downsampled(cur, BIG_RUN, "loss", points=1000),
            describe=lambda b: f"{len(b)} buckets")  # type: ignore[arg-type]
    _report("history 1,000,000 points, page of 25,000", 100,
            lambda: queries.metric_history(cur, BIG_RUN, "loss", max_results=25_000), repeat=10,
            describe=lambda r: f"{len(r[0])} points")  # type: ignore[index]
    _report("run detail (get_run)", 20, lambda: queries.get_run(cur, fifty[0]))
