"""Training-client benchmarks: the cost of log_metric, end_run, and sustained points/s.

Run: .venv/bin/pytest tests/bench/test_client_bench.py -s --override-ini addopts=
Sizes via RUNSTREAM_BENCH_CALLS (log_metric calls timed, default 1,000,000) and
RUNSTREAM_BENCH_CLIENT_POINTS (points per throughput test, default 2,000,000).
Figures are printed; nothing here asserts on time.
"""

from __future__ import annotations

import json
import os
import select
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import runstream
from runstream.node import QueryNode
from runstream.settings import Settings

CALLS = int(os.environ.get("RUNSTREAM_BENCH_CALLS", 1_000_000))
POINTS = int(os.environ.get("RUNSTREAM_BENCH_CLIENT_POINTS", 2_000_000))
CLEAR_ENV = ("RUNSTREAM_KAFKA_BOOTSTRAP", "KAFKA_BOOTSTRAP_SERVERS", "RUNSTREAM_RUN_ID",
             "RUNSTREAM_RANK", "RANK")


def _pct(sorted_ns: list[int], q: float) -> int:
    return sorted_ns[min(len(sorted_ns) - 1, int(len(sorted_ns) * q))]


def test_log_metric_call_cost_and_end_run(topics: Settings, bootstrap: str, tmp_path: Path
                                          ) -> None:
    runstream.configure(kafka_bootstrap=bootstrap, topic_prefix=topics.topic_prefix,
                        data_dir=tmp_path / "data", spool_dir=tmp_path / "spool",
                        replay_on_start=False, max_pending_points=2 * CALLS + 10)
    try:
        pc = time.perf_counter_ns
        # The cost of the timing itself, subtracted below.
        cal = []
        for _ in range(200_000):
            t0 = pc()
            cal.append(pc() - t0)
        overhead = int(statistics.median(cal))

        log_metric = runstream.log_metric
        run = runstream.start_run(run_name="bench-call-cost")
        costs = [0] * CALLS
        for i in range(CALLS):
            t0 = pc()
            log_metric("loss", 0.5, i)
            costs[i] = pc() - t0 - overhead
        costs.sort()
        print(f"\nlog_metric (runstream.log_metric, active run), {CALLS:,} calls timed one by one "
              f"(timer overhead {overhead} ns subtracted):")
        print(f"  p50 {_pct(costs, 0.5) / 1000:.2f} µs   p90 {_pct(costs, 0.9) / 1000:.2f} µs   "
              f"p99 {_pct(costs, 0.99) / 1000:.2f} µs   p99.9 {_pct(costs, 0.999) / 1000:.2f} µs"
              f"   max {costs[-1] / 1e6:.1f} ms")

        for name, fn in (("runstream.log_metric", log_metric), ("Run.log_metric", run.log_metric)):
            t0 = time.perf_counter()
            for i in range(CALLS):
                fn("acc", 0.25, i)
            dt = time.perf_counter() - t0
            print(f"  untimed loop, {name}: {dt / CALLS * 1e9:.0f} ns/call on average "
                  f"(background flushing included: it shares the GIL)")

        snap = runstream.get_client().snapshot()
        t0 = time.perf_counter()
        result = run.end()
        dt = time.perf_counter() - t0
        print(f"end_run right after {3 * CALLS:,} points ({snap['pending_points']:,} still in "
              f"memory, {snap['spool_unacked_bytes']:,} B spooled but unacked): "
              f"{dt * 1000:.0f} ms until {result}")
        run2 = runstream.start_run(run_name="bench-end-run-small")
        for i in range(1000):
            run2.log_metric("loss", 0.5, i)
        t0 = time.perf_counter()
        result = run2.end()
        print(f"end_run after 1,000 points: {(time.perf_counter() - t0) * 1000:.1f} ms "
              f"until {result}")
    finally:
        runstream.shutdown()


# A rank: ``n`` points, one log_metric call each (mode "log_metric"), or HISTORY_CALL_POINTS
# a log_metric_history call (mode "history"; the values list is built per call, as MLflow's
# side builds its Metric objects per log_batch call).
HISTORY_CALL_POINTS = 1000
WORKER = textwrap.dedent("""
    import json, os, sys, time, runstream
    n, mode, chunk = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    base = int(os.environ["RUNSTREAM_RANK"]) * n
    with runstream.start_run() as run:
        print("started", flush=True)
        if sys.stdin.readline().strip() != "go":  # the barrier: every rank started
            sys.exit("not released")
        t0 = time.time()
        # Distinct values per rank: the read model keeps one copy of an exact duplicate
        # (same run, key, step, timestamp and value), as MLflow's store does.
        if mode == "log_metric":
            for i in range(n):
                runstream.log_metric("loss", float(base + i), i)
        else:
            for start in range(0, n, chunk):
                stop = min(start + chunk, n)
                runstream.log_metric_history(
                    "loss", [float(base + i) for i in range(start, stop)], range(start, stop))
        t_logged = time.time()
    t_delivered = time.time()
    cpu = os.times()
    print(json.dumps({"start": t0, "logged": t_logged, "delivered": t_delivered, "n": n,
                      "cpu_s": cpu.user + cpu.system,
                      "stats": runstream.get_client().snapshot()}), flush=True)
""")


def _started(p: subprocess.Popen[str], timeout_s: float = 60.0) -> None:
    """Wait for a rank's "started" line (it imported the client and joined the run)."""
    assert p.stdout is not None
    ready, _, _ = select.select([p.stdout], [], [], timeout_s)
    assert ready, f"a rank did not start within {timeout_s:.0f} s"
    line = p.stdout.readline().strip()
    assert line == "started", f"a rank failed to start (exit code {p.poll()}): {line!r}"


def log_from_ranks(
    node: QueryNode, settings: Settings, bootstrap: str, spool_root: Path, processes: int,
    per: int, experiment: str, timeout_s: float, mode: str = "log_metric",
) -> tuple[str, list[dict[str, Any]], float]:
    """``processes`` WORKER ranks log ``per`` points each to one new run (rank 0 creates it),
    by ``mode`` ("log_metric" or "history"), all released at once when every one of them has
    started (as MLflow's side is released by a barrier: process start-up is not timed);
    returns the run id, each rank's result (with "released", the release time) and the time
    (time.time()) at which ``node``'s read model held every point (or the deadline passed:
    the caller checks the count)."""
    run_id = runstream.new_run_id()
    total = per * processes
    env = {k: v for k, v in os.environ.items() if k not in CLEAR_ENV}
    env.update(RUNSTREAM_KAFKA_BOOTSTRAP=bootstrap, RUNSTREAM_TOPIC_PREFIX=settings.topic_prefix,
               RUNSTREAM_RUN_ID=run_id, RUNSTREAM_DATA_DIR=str(settings.data_dir),
               RUNSTREAM_REPLAY_ON_START="0", RUNSTREAM_EXPERIMENT_NAME=experiment)
    procs: list[subprocess.Popen[str]] = []
    try:
        for rank in range(processes):
            p = subprocess.Popen(
                [sys.executable, "-c", WORKER, str(per), mode, str(HISTORY_CALL_POINTS)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                env={**env, "RUNSTREAM_RANK": str(rank),
                     "RUNSTREAM_SPOOL_DIR": str(spool_root / f"spool{rank}")},
            )
            procs.append(p)
            if rank == 0:
                _started(p)  # the run exists before the other ranks attach to it
        for p in procs[1:]:
            _started(p)
        released = time.time()
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        results = []
        for p in procs:
            out, _ = p.communicate(timeout=timeout_s)
            assert p.returncode == 0, out
            results.append({**json.loads(out.strip().splitlines()[-1]), "released": released})
    finally:
        for p in procs:  # a failed launch leaves no rank logging into the next measurement
            if p.poll() is None:
                p.kill()
                p.wait()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with node.store.reading() as cur:
            row = cur.execute("SELECT count FROM metric_summary WHERE run_id = ?",
                              [run_id]).fetchone()
        if row and row[0] >= total:
            break
        time.sleep(0.02)
    return run_id, results, time.time()


@pytest.mark.parametrize("processes", [1, 8])
def test_sustained_points_per_second_into_the_read_model(
    settings: Settings, bootstrap: str, tmp_path: Path, processes: int
) -> None:
    node = QueryNode.open(settings, bootstrap)
    per = POINTS // processes
    total = per * processes
    try:
        run_id, results, t_projected = log_from_ranks(
            node, settings, bootstrap, tmp_path, processes, per, "bench", timeout_s=900
        )
        start = results[0]["released"]
        logged = max(r["logged"] for r in results)
        delivered = max(r["delivered"] for r in results)
        print(f"\n{processes} process(es) x {per:,} points into one run ({total:,} points):")
        for r in results[:2]:
            rate = r["n"] / (r["logged"] - r["start"])
            print(f"  one process logged at {rate:,.0f} points/s "
                  f"(blocked {r['stats']['blocked_s']} s, {r['stats']['events_spooled']} events)")
        print(f"  all logged after      {logged - start:6.2f} s  ({total / (logged - start):,.0f} "
              f"points/s)")
        print(f"  all acknowledged after {delivered - start:6.2f} s  "
              f"({total / (delivered - start):,.0f} points/s)")
        print(f"  all in the read model after {t_projected - start:6.2f} s  "
              f"({total / (t_projected - start):,.0f} points/s)")
        with node.store.reading() as cur:
            assert cur.execute("SELECT count FROM metric_summary WHERE run_id = ?",
                               [run_id]).fetchone() == (total,)
    finally:
        node.close()
