"""The `mlflow` client against a runstream node and against MLflow's own tracking server.

On demand, printing figures (no time assertions)::

    .venv/bin/pytest tests/bench/test_mlflow_bench.py -s --override-ini addopts=

Same harness, same data, same run for both servers:

* ``log_batch``: ``MlflowClient().log_batch`` with 1,000 metrics a call, from 1 and from 8
  client processes (forked after one ``import mlflow``, released together by a barrier, each
  logging to a run of its own). Figures: points/s over the wall time, and per-call latency.
* ``search_runs``: ``MlflowClient().search_runs`` over 200 runs (10 params, 10 metrics, 3 tags
  each), with and without a filter and order_by. Figures: per-call latency.

MLflow's server runs from a virtual environment of its own (``python -m venv`` +
``pip install mlflow==3.17.2``, kept in /tmp between runs) as
``mlflow server --backend-store-uri sqlite:///... --port P`` (the harness is
tests/bench/mlflow_server.py). If that environment cannot be made, the reason is printed and
only runstream is measured.
"""

from __future__ import annotations

import os
import statistics
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bench.mlflow_server import METRICS_PER_CALL, Server, ms, run_client, serve_mlflow
from tests.e2e.mlflow_node import ServedNode, node_settings

pytestmark = pytest.mark.broker

CALLS = {1: 40, 8: 15}  # log_batch calls per client process, by process count
SEARCH_RUNS = 200
SEARCH_REPEATS = 20


@pytest.fixture(scope="module")
def runstream_server(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # As `runstream up` runs it: the default partitions and projector batching.
    settings = node_settings(bootstrap, tmp_path_factory.mktemp("bench-node"), partitions=6,
                             batch_max_ms=50)
    served = ServedNode(settings, bootstrap)
    yield Server("runstream", served.url)
    served.close()


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server | None]:
    with serve_mlflow(tmp_path_factory.mktemp("mlflow-server")) as server:
        yield server


def _servers(runstream_server: Server, mlflow_server: Server | None) -> list[Server]:
    return [runstream_server] + ([mlflow_server] if mlflow_server is not None else [])


@pytest.mark.timeout(3600)
def test_log_batch_throughput(runstream_server: Server, mlflow_server: Server | None,
                              tmp_path: Path) -> None:
    rows: dict[tuple[str, int], dict[str, float]] = {}
    for procs, calls in CALLS.items():
        for server in _servers(runstream_server, mlflow_server):
            r = run_client(server, tmp_path, "log_batch", f"bench-{uuid.uuid4().hex[:6]}",
                        str(procs), str(calls))
            lat = r["latencies"]
            rows[(server.label, procs)] = {
                "points_s": r["points"] / r["wall_s"], "p50": ms(lat, 0.5), "p95": ms(lat, 0.95),
                "mean": 1000 * statistics.fmean(lat), "calls": len(lat),
            }
    print(f"\nmlflow client log_batch, {METRICS_PER_CALL} metrics a call "
          f"({os.cpu_count()} cores; client processes share them with the server)")
    print(f"{'server':<24}{'procs':>6}{'calls':>7}{'points/s':>12}{'p50 ms':>9}{'p95 ms':>9}"
          f"{'mean ms':>9}")
    for (label, procs), v in rows.items():
        print(f"{label:<24}{procs:>6}{v['calls']:>7}{v['points_s']:>12,.0f}{v['p50']:>9.1f}"
              f"{v['p95']:>9.1f}{v['mean']:>9.1f}")
    if mlflow_server is not None:
        for procs in CALLS:
            ours, theirs = rows[("runstream", procs)], rows[(mlflow_server.label, procs)]
            print(f"ratio runstream/mlflow, {procs} proc(s): points/s x"
                  f"{ours['points_s'] / theirs['points_s']:.2f}, p50 latency x"
                  f"{ours['p50'] / theirs['p50']:.2f}")


@pytest.mark.timeout(3600)
def test_search_runs_latency(runstream_server: Server, mlflow_server: Server | None,
                             tmp_path: Path) -> None:
    results: dict[str, dict] = {}
    for server in _servers(runstream_server, mlflow_server):
        name = f"search-{uuid.uuid4().hex[:6]}"
        t0 = time.perf_counter()
        run_client(server, tmp_path, "populate", name, str(SEARCH_RUNS))
        populate_s = time.perf_counter() - t0
        results[server.label] = {"populate_s": populate_s,
                                 **run_client(server, tmp_path, "search", name, str(SEARCH_REPEATS))}
    print(f"\nmlflow client search_runs over {SEARCH_RUNS} runs (10 params, 10 metrics, 3 tags), "
          f"{SEARCH_REPEATS} calls each")
    print(f"{'server':<24}{'query':<30}{'rows':>6}{'p50 ms':>9}{'p95 ms':>9}")
    for label, r in results.items():
        for query, v in r.items():
            if query == "populate_s":
                continue
            print(f"{label:<24}{query:<30}{v['rows']:>6}{ms(v['latencies'], 0.5):>9.1f}"
                  f"{ms(v['latencies'], 0.95):>9.1f}")
        print(f"{label:<24}{'populating (4 threads)':<30}{SEARCH_RUNS:>6}"
              f"{1000 * r['populate_s'] / SEARCH_RUNS:>9.1f} ms a run (create, log_batch, end)")
    if mlflow_server is not None:
        ours, theirs = results["runstream"], results[mlflow_server.label]
        for query in ours:
            if query == "populate_s":
                continue
            assert ours[query]["rows"] == theirs[query]["rows"], query  # same data, same answer
            print(f"ratio runstream/mlflow p50 latency, {query}: x"
                  f"{ms(ours[query]['latencies'], 0.5) / ms(theirs[query]['latencies'], 0.5):.2f}")
