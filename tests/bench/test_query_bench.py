"""Query-side benchmark at 100,000 runs x 20 metrics x 10 params x 5 tags (on demand).

Run: ``.venv/bin/pytest tests/bench/test_query_bench.py -s --override-ini addopts=``
(add ``-k test_query_benchmark`` or ``-k test_search_over_http`` for one of the two tests).

The read model is built with the projection's own ``apply_batch`` in big batches, straight into
a DuckDB file, and cached under ``$RUNSTREAM_BENCH_DIR`` (default /tmp/runstream-bench) keyed by
the data set's version, so only the first run pays for it. Figures are printed, never asserted:
targets (p50) are search examples with max_results 100 <= 20 ms, ordered by a metric <= 30 ms,
max_results 1000 <= 100 ms, compare of 50 runs <= 50 ms, CSV of every run <= 3 s, a
1,000,000-point history downsampled to 1,000 points <= 100 ms. ``test_query_benchmark`` calls
the queries in-process and needs no broker. Each search is timed warm (its runs' records in
the node's record cache, as for a page seen before) and cold (the cache emptied before every
call).

``test_search_over_http_runstream_vs_mlflow`` (issue #7; needs a Kafka broker, as the e2e tests
do) sends searches with the ``mlflow`` client (``MlflowClient().search_runs``) over HTTP: the
FEATURES examples with max_results 100, no filter, one ordered by metrics.r2 DESC (filtered by
metrics.r2 > 0.3, as in ``test_query_benchmark``), and one of max_results 1000. First to MLflow
3.17.2's own server (SQLite, see mlflow_server.py) holding the data set's first 10,000 runs,
then to a runstream node serving a copy of the cached 100,000-run read model, never both at
once. Each search is called 5 to 30 times (no new call after 20 s), after up to 4 untimed
warm-up calls (MLflow's server has 4 worker processes). MLflow's database is populated once
through its server (4 processes x 4 threads; the time is printed) and cached beside the read
model as ``mlflow-<version>.db``. Prints, per search, runstream's p50/p95 at 100,000 runs,
MLflow's at 10,000, the ratio of the p50s and the load average. Searches MLflow's grammar
refuses (unquoted param and tag values, MIN/MAX/LATEST) are timed on runstream only, and
MLflow's reason is printed. When MLflow's virtual environment cannot be made, the reason is
printed and runstream alone is measured.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
import statistics
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import duckdb
import pytest
from runstream import queries
from runstream.projections import layout
from runstream.projections.apply_events import (
    apply_batch,
    create_read_model,
    refresh_run_records,
    stale_run_records,
)
from runstream.projections.read_model import SCHEMA_REVISION
from runstream.read_store import CURRENT_FILE
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

from tests.bench.mlflow_server import MLFLOW_VERSION, Server, run_client, serve_mlflow
from tests.e2e.mlflow_node import ServedNode, node_settings

RUNS = 100_000
EXPERIMENTS = 4
POINTS_PER_METRIC = 3
BIG_HISTORY = 1_000_000
DATASET_VERSION = f"v1-r{SCHEMA_REVISION}-c2-{RUNS}-{POINTS_PER_METRIC}-{BIG_HISTORY}"
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
    # What the projector does between batches: re-sort a key/value table once its tail is due,
    # and refresh the run_records documents of the runs changed.
    for table in layout.due(con):
        con.execute("BEGIN TRANSACTION")
        layout.cluster(con, table)
        con.execute("COMMIT")
    con.execute("BEGIN TRANSACTION")
    refresh_run_records(con, stale_run_records(con, 1_000_000))
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


def _bench_dir() -> Path:
    root = Path(os.environ.get("RUNSTREAM_BENCH_DIR", "/tmp/runstream-bench"))
    root.mkdir(parents=True, exist_ok=True)
    return root


@pytest.fixture(scope="module")
def bench_db_path() -> Path:
    """The cached read-model file of the data set, built on first use."""
    path = _bench_dir() / f"read-model-{DATASET_VERSION}.duckdb"
    if not path.exists():
        t0 = time.perf_counter()
        partial = path.with_suffix(".building")
        partial.unlink(missing_ok=True)
        build_bench_db(partial)
        partial.rename(path)
        print(f"\nbuilt {path} in {time.perf_counter() - t0:.0f}s")
    return path


@pytest.fixture(scope="module")
def bench_db(bench_db_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    # The node's settings: ReadStore opens DuckDB with 2 threads and a 4 GB memory limit.
    con = duckdb.connect(str(bench_db_path), read_only=True,
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

    def search(name: str, target_ms: float, **kwargs: Any) -> None:
        """A search twice: warm (the node's record cache holds the page's runs, as for a page
        seen before) and cold (the cache emptied before each call: every record read from
        the tables, as for runs never shown since they last changed)."""
        def call() -> object:
            return queries.search_runs(cur, experiment_ids=exps, **kwargs)

        def cold() -> object:
            queries.RECORDS.clear()
            return call()

        _report(f"{name}, warm", target_ms, call, describe=_hits)
        _report(f"{name}, cold", target_ms, cold, describe=_hits)

    for text in FEATURES_EXAMPLES:
        search(f"search {text!r} (100)", 20, filter=text, max_results=100)
    search("search, no filter (100)", 20, max_results=100)
    search("search ordered by metrics.r2 DESC (100)", 30, filter="metrics.r2 > 0.3",
           order_by=["metrics.r2 DESC"], max_results=100)
    search("search ordered by MIN(metrics.rmse), params.lr (100)", 30,
           order_by=["MIN(metrics.rmse)", "params.lr DESC"], max_results=100)
    search("search max_results 1000", 100, max_results=1000)
    _, token = queries.search_runs(cur, experiment_ids=exps, max_results=1000)
    search("search max_results 1000, second page", 100, max_results=1000, page_token=token)

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
    _report("run detail (get_run), warm", 20, lambda: queries.get_run(cur, fifty[0]))
    _report("run detail (get_run), cold", 20,
            lambda: (queries.RECORDS.clear(), queries.get_run(cur, fifty[0])))


# ------------------------------------------------------------------------------------------
# The same searches over HTTP with the `mlflow` client: runstream at 100,000 runs beside
# MLflow's own server at 10,000 runs (issue #7).

MLFLOW_RUNS = 10_000
# Bump the "v1" when _run_events changes: the cached database holds its first MLFLOW_RUNS runs.
MLFLOW_DATASET_VERSION = f"v1-{MLFLOW_RUNS}-{POINTS_PER_METRIC}-mlflow{MLFLOW_VERSION}"
POPULATE_PROCESSES = 4
POPULATE_THREADS = 4  # per process
# Calls per search: at least 5, at most 30, no new one after 20 s (MLflow's slow ones).
HTTP_MIN_CALLS, HTTP_MAX_CALLS, HTTP_BUDGET_S = 5, 30, 20.0
# Untimed calls first: up to 4 within 10 s. MLflow's server runs 4 worker processes, and each
# one's first calls of a search are slower.
HTTP_WARMUP_CALLS, HTTP_WARMUP_S = 4, 10.0

# Runs with this environment's `mlflow` client against either server (mlflow_server.run_client).
HTTP_WORKER = textwrap.dedent("""
    import json, multiprocessing as mp, os, sys, time
    from concurrent.futures import ThreadPoolExecutor
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param
    from mlflow.exceptions import MlflowException

    def log_runs(path, part, parts, exp_ids, threads):
        specs = json.loads(open(path).read())[part::parts]
        client = MlflowClient()
        def one(spec):
            run = client.create_run(exp_ids[spec["experiment"]], start_time=spec["start"],
                                    tags=spec["tags"], run_name=spec["name"])
            run_id = run.info.run_id
            client.log_batch(run_id,
                             metrics=[Metric(k, v, ts, step) for k, v, ts, step in spec["metrics"]],
                             params=[Param(k, v) for k, v in spec["params"]])
            client.set_terminated(run_id, spec["status"], spec["end"])
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, specs))

    def cmd_populate(path, processes, threads):
        client = MlflowClient()
        exp_ids = {}
        for name in sorted({s["experiment"] for s in json.loads(open(path).read())}):
            exp = client.get_experiment_by_name(name)
            exp_ids[name] = exp.experiment_id if exp else client.create_experiment(name)
        ctx = mp.get_context("spawn")  # no HTTP connection of this process is inherited
        ps = [ctx.Process(target=log_runs, args=(path, k, processes, exp_ids, threads))
              for k in range(processes)]
        for p in ps:
            p.start()
        for p in ps:
            p.join()
        failed = [p.exitcode for p in ps if p.exitcode != 0]
        if failed:
            sys.exit(f"populating processes failed: exit codes {failed}")
        return {}

    def cmd_search(path, warmup_calls, warmup_s, min_calls, max_calls, budget_s, names):
        client = MlflowClient()
        exp_ids = [client.get_experiment_by_name(n).experiment_id for n in names]
        out = {}
        for s in json.loads(open(path).read()):
            def call():
                return client.search_runs(exp_ids, s["filter"], order_by=s["order_by"] or None,
                                          max_results=s["max_results"])
            try:
                rows = len(call())  # warm-up, and whether the server accepts the search at all
            except MlflowException as exc:
                out[s["name"]] = {"error": str(exc).splitlines()[0][:160]}
                continue
            stop = time.perf_counter() + warmup_s
            for _ in range(warmup_calls - 1):
                if time.perf_counter() > stop:
                    break
                call()
            lat = []
            stop = time.perf_counter() + budget_s
            while len(lat) < max_calls and (len(lat) < min_calls or time.perf_counter() < stop):
                t = time.perf_counter()
                call()
                lat.append(time.perf_counter() - t)
            out[s["name"]] = {"rows": rows, "latencies": lat, "load": os.getloadavg()[0]}
        return out

    if __name__ == "__main__":
        cmd, args = sys.argv[1], sys.argv[2:]
        if cmd == "populate":
            result = cmd_populate(args[0], int(args[1]), int(args[2]))
        else:
            result = cmd_search(args[0], int(args[1]), float(args[2]), int(args[3]), int(args[4]),
                                float(args[5]), args[6:])
        print("RESULT " + json.dumps(result))
""")


def _mlflow_run_spec(events: list[Event]) -> dict[str, Any]:
    """One run of the data set as the `mlflow` client logs it (its artifact left out)."""
    spec: dict[str, Any] = {}
    for ev in events:
        if isinstance(ev, RunCreated):
            spec.update(experiment=ev.body.experiment_name, name=ev.body.name,
                        start=ev.body.start_time_ms, tags=ev.body.tags)
        elif isinstance(ev, ParamsLogged):
            spec["params"] = [[p.key, p.value] for p in ev.body.params]
        elif isinstance(ev, MetricsLogged):
            b = ev.body
            spec["metrics"] = [[b.keys[k], v, ts, step] for k, v, step, ts
                               in zip(b.key_index, b.values, b.steps, b.timestamps, strict=True)]
        elif isinstance(ev, RunEnded):
            spec.update(status=ev.body.status, end=ev.body.end_time_ms)
    return spec


def _mlflow_bench_db(tmp: Path) -> Path | None:
    """MLflow's SQLite database of the data set's first MLFLOW_RUNS runs, populated on first use.

    The runs are those of :func:`build_bench_db` (same generator, same seed), logged through
    MLflow's own server by POPULATE_PROCESSES processes of POPULATE_THREADS threads each
    (create_run with the tags, one log_batch of the params and metric points, set_terminated).
    None when MLflow's server cannot run (the reason is printed).
    """
    path = _bench_dir() / f"mlflow-{MLFLOW_DATASET_VERSION}.db"
    if path.exists():
        return path
    rng = random.Random(7)
    specs = [_mlflow_run_spec(_run_events(i, rng)) for i in range(MLFLOW_RUNS)]
    specs_path = tmp / "mlflow-runs.json"
    specs_path.write_text(json.dumps(specs))
    partial = path.with_suffix(".building")
    for leftover in (partial, partial.with_name(partial.name + "-journal"),
                     partial.with_name(partial.name + "-wal")):
        leftover.unlink(missing_ok=True)
    with serve_mlflow(tmp / "mlflow-populate", partial) as server:
        if server is None:
            return None
        t0 = time.perf_counter()
        run_client(server, tmp, "populate", str(specs_path), str(POPULATE_PROCESSES),
                   str(POPULATE_THREADS), script=HTTP_WORKER, timeout=7200)
        took = time.perf_counter() - t0
    with closing(sqlite3.connect(partial)) as con:
        counts = [con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                  for table in ("runs", "params", "metrics", "latest_metrics")]
    per_run = [1, len(PARAM_KEYS), len(METRIC_KEYS) * POINTS_PER_METRIC, len(METRIC_KEYS)]
    assert counts == [MLFLOW_RUNS * n for n in per_run], counts  # every run, param and point
    partial.rename(path)
    print(f"populated {path} through MLflow's server in {took:.0f} s ({POPULATE_PROCESSES} "
          f"processes x {POPULATE_THREADS} threads, {1000 * took / MLFLOW_RUNS:.1f} ms a run)")
    return path


def _http_searches() -> list[dict[str, Any]]:
    """The searches of test_query_benchmark that the `mlflow` client can send, by label."""
    searches: list[dict[str, Any]] = [
        {"name": f"search {text!r} (100)", "filter": text, "order_by": [], "max_results": 100}
        for text in FEATURES_EXAMPLES
    ]
    searches += [
        {"name": "search, no filter (100)", "filter": "", "order_by": [], "max_results": 100},
        {"name": "search ordered by metrics.r2 DESC (100)", "filter": "metrics.r2 > 0.3",
         "order_by": ["metrics.r2 DESC"], "max_results": 100},
        {"name": "search max_results 1000", "filter": "", "order_by": [], "max_results": 1000},
    ]
    return searches


def _search_over_http(server: Server, tmp: Path, searches: Path) -> dict[str, dict[str, Any]]:
    names = [f"bench-{e}" for e in range(EXPERIMENTS)]
    return run_client(server, tmp, "search", str(searches), str(HTTP_WARMUP_CALLS),
                      str(HTTP_WARMUP_S), str(HTTP_MIN_CALLS), str(HTTP_MAX_CALLS),
                      str(HTTP_BUDGET_S), *names, script=HTTP_WORKER)


def _p50_p95(latencies_s: list[float]) -> tuple[float, float]:
    """p50 and p95 in ms, computed as :func:`_timed` does."""
    wall = sorted(1000 * x for x in latencies_s)
    return statistics.median(wall), wall[min(len(wall) - 1, round(0.95 * (len(wall) - 1)))]


def _cell(result: dict[str, Any] | None) -> str:
    if result is None:
        return "not measured"
    if "error" in result:
        return "refused"
    p50, p95 = _p50_p95(result["latencies"])
    return f"{p50:8.1f} {p95:8.1f}  n={len(result['latencies']):<2}"


@pytest.mark.broker
@pytest.mark.timeout(7200)  # the first run populates MLflow's server (several minutes)
def test_search_over_http_runstream_vs_mlflow(bench_db_path: Path, bootstrap: str,
                                              tmp_path: Path) -> None:
    """The `mlflow` client's search_runs: runstream at 100,000 runs, MLflow at 10,000 runs.

    MLflow's server first (on its cached database), then a runstream node over a copy of the
    cached read model (its projector finds no offsets and follows an empty topic); never both
    at once. The same client script, searches and experiments (bench-0 ... bench-3) for both.
    """
    searches = tmp_path / "searches.json"
    searches.write_text(json.dumps(_http_searches()))

    theirs: dict[str, dict[str, Any]] | None = None
    mlflow_db = _mlflow_bench_db(tmp_path)
    if mlflow_db is not None:
        with serve_mlflow(tmp_path / "mlflow-serve", mlflow_db) as server:
            if server is not None:
                theirs = _search_over_http(server, tmp_path, searches)

    node_dir = tmp_path / "runstream" / "node"
    node_dir.mkdir(parents=True)
    shutil.copyfile(bench_db_path, node_dir / "read-model.0.duckdb")
    (node_dir / CURRENT_FILE).write_text("read-model.0.duckdb\n")
    served = ServedNode(node_settings(bootstrap, tmp_path / "runstream"), bootstrap)
    try:
        ours = _search_over_http(Server("runstream", served.url), tmp_path, searches)
    finally:
        served.close()

    print(f"\nmlflow client search_runs over HTTP: runstream node at {RUNS:,} runs, MLflow "
          f"{MLFLOW_VERSION}'s server (SQLite) at {MLFLOW_RUNS:,} runs ({os.cpu_count()} cores)")
    print("cells: p50 p95 ms, n calls; ratio = MLflow p50 / runstream p50; load = 1-min load "
          "average after the search, runstream / MLflow")
    print(f"{'search':<80}{'runstream 100k':>25}{'MLflow 10k':>25}{'ratio':>8}{'rows':>6}"
          f"{'load':>11}")
    for s in _http_searches():
        name = s["name"]
        mine, other = ours[name], theirs[name] if theirs is not None else None
        ratio, load = "", f"{mine['load']:.1f}" if "load" in mine else ""
        if other is not None and "error" not in other and "error" not in mine:
            assert other["rows"] == mine["rows"] == s["max_results"], name  # full pages on both
            ratio = f"{_p50_p95(other['latencies'])[0] / _p50_p95(mine['latencies'])[0]:.1f}x"
            load += f" / {other['load']:.1f}"
        print(f"{name:<80}{_cell(mine):>25}{_cell(other):>25}{ratio:>8}"
              f"{mine.get('rows', ''):>6}{load:>11}")
    for label, results in (("runstream", ours), ("MLflow", theirs or {})):
        for name, r in results.items():
            if "error" in r:
                print(f"{label} refused {name}: {r['error']}")
