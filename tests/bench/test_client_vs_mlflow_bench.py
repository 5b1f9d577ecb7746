"""Sustained points/s into the read model: runstream's client beside MLflow's ``log_batch`` (issue #4).

Run: .venv/bin/pytest tests/bench/test_client_vs_mlflow_bench.py -s --override-ini addopts=

From 1 and from 8 processes, in one run, one side after the other (never both at once):

* runstream: the native client in 1 or 8 rank processes logging to one run (the worker and
  the launch of test_client_bench.py::test_sustained_points_per_second_into_the_read_model)
  into a query node with ``runstream up``'s partitions and projector batching, twice: with
  ``runstream.log_metric``, one call a point (a training loop's path), and with
  ``runstream.log_metric_history``, 1,000 points a call (like for like with MLflow's
  ``log_batch`` of 1,000 metrics). The ranks start, then wait at a barrier; the interval runs
  from their release until every point is visible in the read model
  (``metric_summary.count`` of the run).
  RUNSTREAM_BENCH_VS_POINTS points in all (default 4,000,000).
* MLflow: ``MlflowClient().log_batch`` with 1,000 metrics a call against MLflow 3.17.2's own
  tracking server with a SQLite backend (a new database per measurement; the harness of
  test_mlflow_bench.py, in mlflow_server.py), from 1 or 8 forked client processes, each logging
  to a run of its own: 40 calls per process alone, 25 each with 8. The interval runs from the
  barrier that releases them until the last call returned; MLflow writes synchronously, so a
  returned call is visible to readers. Neither side is timed starting its processes (until
  2026-11-29 runstream's was: its ranks started while rank 0 logged); the CPU seconds
  printed for runstream's ranks include their start-up.

Prints the figures of each side, then a table: processes, runstream's API, its points/s,
MLflow's points/s, their ratio and whether runstream reaches 100x MLflow's rate, with ``os.getloadavg()`` (this
machine may be shared). Asserts only that every point arrived, never on time. Only one Kafka
broker runs meanwhile (the session's), idle while MLflow is measured. If MLflow's virtual
environment cannot be made, the reason is printed and runstream alone is measured.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest
from runstream.deploy.brokers import Broker
from runstream.node import QueryNode

from tests.bench.mlflow_server import METRICS_PER_CALL, ms, run_client, serve_mlflow
from tests.bench.test_client_bench import log_from_ranks
from tests.e2e.mlflow_node import node_settings

pytestmark = pytest.mark.broker

PROCESSES = (1, 8)
RUNSTREAM_POINTS = int(os.environ.get("RUNSTREAM_BENCH_VS_POINTS", 4_000_000))
MLFLOW_CALLS = {1: 40, 8: 25}  # log_batch calls per client process, by process count
TARGET_RATIO = 100.0
# runstream's two ways of logging, by the name printed: the WORKER mode of test_client_bench.
RUNSTREAM_APIS = {"log_metric": "log_metric", "log_metric_history x1000": "history"}


@dataclass
class Rate:
    """One side's measurement from one process count."""

    points: int
    seconds: float
    load_before: float
    load_after: float
    detail: str

    @property
    def points_s(self) -> float:
        return self.points / self.seconds


def _load() -> float:
    return os.getloadavg()[0]


def _cpu_s(pid: int | None = None) -> float | None:
    """CPU seconds (user + system) used so far by this process, or by ``pid`` (None if gone)."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _runstream_rate(bootstrap: str, tmp: Path, processes: int, broker_pid: int | None,
                    mode: str, points: int = RUNSTREAM_POINTS) -> Rate:
    """``processes`` rank processes log ``points`` points to one run by ``mode``
    ("log_metric" or "history"), timed into the read model."""
    settings = node_settings(bootstrap, tmp / "data", partitions=6, batch_max_ms=50)
    load_before = _load()
    node_cpu, broker_cpu = _cpu_s(), _cpu_s(broker_pid) if broker_pid else None
    node = QueryNode.open(settings, bootstrap)
    per = points // processes
    total = per * processes
    try:
        run_id, results, t_visible = log_from_ranks(
            node, settings, bootstrap, tmp, processes, per, "bench-vs-mlflow", timeout_s=1800,
            mode=mode,
        )
        with node.store.reading() as cur:
            row = cur.execute("SELECT count FROM metric_summary WHERE run_id = ?",
                              [run_id]).fetchone()
        count = row[0] if row else 0
        assert count == total, f"{count:,} of {total:,} points in the read model"
    finally:
        node.close()
    # Where the two cores went: the ranks (their start-up included, ~0.4 s each), this
    # process (the node's projector, mostly), and the broker.
    node_cpu = _cpu_s() - node_cpu
    broker_now = _cpu_s(broker_pid) if broker_pid else None
    cpu = (f"; CPU s: ranks {sum(r['cpu_s'] for r in results):.1f}, node {node_cpu:.1f}, broker "
           + (f"{broker_now - broker_cpu:.1f}" if broker_now is not None and broker_cpu is not None
              else "n/a"))
    start = results[0]["released"]
    logged = max(r["logged"] for r in results) - start
    delivered = max(r["delivered"] for r in results) - start
    blocked = sum(r["stats"]["blocked_s"] for r in results)
    return Rate(total, t_visible - start, load_before, _load(),
                f"{processes} x {per:,} points into one run; all logged after {logged:.2f} s, "
                f"acknowledged after {delivered:.2f} s, visible after {t_visible - start:.2f} s; "
                f"the client blocked {blocked:.1f} s in all{cpu}")


def _mlflow_rate(tmp: Path, processes: int) -> Rate | None:
    """``processes`` forked clients call log_batch against a new MLflow server; None if none runs."""
    calls = MLFLOW_CALLS[processes]
    load_before = _load()
    database = tmp / "mlflow.db"
    with serve_mlflow(tmp, database) as server:
        if server is None:
            return None
        r = run_client(server, tmp, "log_batch", f"bench-vs-{uuid.uuid4().hex[:6]}",
                       str(processes), str(calls))
    load_after = _load()
    # Every point is stored: the timed calls and each process's warm-up call.
    expected = processes * (calls + 1) * METRICS_PER_CALL
    with closing(sqlite3.connect(database)) as con:
        marks = ",".join("?" * len(r["run_ids"]))
        stored = con.execute(f"SELECT count(*) FROM metrics WHERE run_uuid IN ({marks})",
                             r["run_ids"]).fetchone()[0]
    assert stored == expected, f"{stored:,} of {expected:,} points in MLflow's database"
    lat = r["latencies"]
    return Rate(r["points"], r["wall_s"], load_before, load_after,
                f"{processes} x {calls} calls of {METRICS_PER_CALL:,} metrics, a run per process; "
                f"log_batch p50 {ms(lat, 0.5):.0f} ms, p95 {ms(lat, 0.95):.0f} ms")


@pytest.mark.timeout(5400)
def test_points_per_second_runstream_vs_mlflow(broker: Broker, tmp_path: Path) -> None:
    rows: dict[int, tuple[dict[str, Rate], Rate | None]] = {}
    process = getattr(broker, "process", None)  # a local JVM's; None for other brokers
    broker_pid = process.pid if process is not None else None
    # The broker's JVM compiles its hot paths during the first seconds of traffic (the first
    # run used twice the broker CPU of later ones): an untimed run first, as MLflow's clients
    # make an untimed call.
    warm = _runstream_rate(broker.bootstrap, tmp_path / "warm-up", 1, broker_pid, "log_metric",
                           points=1_000_000)
    print(f"\nwarm-up (not counted), runstream log_metric, {warm.detail}")
    for processes in PROCESSES:
        ours = {}
        for api, mode in RUNSTREAM_APIS.items():
            rate = _runstream_rate(broker.bootstrap, tmp_path / f"runstream-{processes}-{mode}",
                                   processes, broker_pid, mode)
            print(f"\nrunstream {api}, {rate.detail}: {rate.points_s:,.0f} points/s "
                  f"[load {rate.load_before:.1f} -> {rate.load_after:.1f}]")
            ours[api] = rate
        theirs = _mlflow_rate(tmp_path / f"mlflow-{processes}", processes)
        if theirs is not None:
            print(f"MLflow, {theirs.detail}: {theirs.points_s:,.0f} points/s "
                  f"[load {theirs.load_before:.1f} -> {theirs.load_after:.1f}]")
        rows[processes] = (ours, theirs)

    print(f"\nsustained points/s into the read model ({os.cpu_count()} cores, shared by clients, "
          f"servers and the broker; 1-min load average before -> after each side)")
    print(f"{'procs':>5}  {'runstream API':>24}  {'runstream pts/s':>16}  {'MLflow pts/s':>13}  "
          f"{'ratio':>8}  {'>=100x':>6}  {'load runstream':>15}  {'load MLflow':>12}")
    for processes, (ours, theirs) in rows.items():
        for api, rate in ours.items():
            if theirs is None:
                mlflow_s, ratio_s, met, load_s = "-", "-", "n/a", "-"
            else:
                ratio = rate.points_s / theirs.points_s
                mlflow_s, ratio_s = f"{theirs.points_s:,.0f}", f"{ratio:,.1f}x"
                met = "yes" if ratio >= TARGET_RATIO else "NO"
                load_s = f"{theirs.load_before:.1f} -> {theirs.load_after:.1f}"
            print(f"{processes:>5}  {api:>24}  {rate.points_s:>16,.0f}  {mlflow_s:>13}  "
                  f"{ratio_s:>8}  {met:>6}  "
                  f"{f'{rate.load_before:.1f} -> {rate.load_after:.1f}':>15}  {load_s:>12}")
