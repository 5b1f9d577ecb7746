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
``mlflow server --backend-store-uri sqlite:///... --port P``. If that environment cannot be
made, the reason is printed and only runstream is measured.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import textwrap
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from runstream.deploy.brokers import free_port

from tests.e2e.mlflow_node import MLFLOW_TEST_ENV, ServedNode, node_settings

pytestmark = pytest.mark.broker

MLFLOW_VERSION = "3.17.2"
SERVER_VENV = Path(os.environ.get("RUNSTREAM_BENCH_MLFLOW_VENV", "/tmp/runstream-mlflow-server-venv"))
METRICS_PER_CALL = 1000
CALLS = {1: 40, 8: 15}  # log_batch calls per client process, by process count
SEARCH_RUNS = 200
SEARCH_REPEATS = 20

# The client side of every measurement: one import, then N forked processes.
_WORKER = textwrap.dedent("""
    import json, multiprocessing as mp, sys, time
    import mlflow
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    def log_batch(run_id, calls, barrier, out):
        client = MlflowClient()
        now = int(time.time() * 1000)
        def batch(call):
            return [Metric(f"m{i % 10}", float(i) / 7.0, now + call, call * 1000 + i)
                    for i in range(1000)]
        client.log_batch(run_id, metrics=batch(-1))  # warm-up: connection, run cache
        barrier.wait()
        lat = []
        for call in range(calls):
            metrics = batch(call)
            t = time.perf_counter()
            client.log_batch(run_id, metrics=metrics)
            lat.append(time.perf_counter() - t)
        out.put((time.time(), lat))

    def cmd_log_batch(exp_id, procs, calls):
        client = MlflowClient()
        runs = [client.create_run(exp_id).info.run_id for _ in range(procs)]
        ctx = mp.get_context("fork")
        barrier, out = ctx.Barrier(procs + 1), ctx.Queue()
        ps = [ctx.Process(target=log_batch, args=(r, calls, barrier, out)) for r in runs]
        for p in ps:
            p.start()
        barrier.wait()
        start = time.time()
        results = [out.get(timeout=1800) for _ in ps]
        for p in ps:
            p.join()
        end = max(r[0] for r in results)
        lat = [x for r in results for x in r[1]]
        return {"wall_s": end - start, "latencies": lat, "points": procs * calls * 1000}

    def cmd_populate(exp_id, n):
        from concurrent.futures import ThreadPoolExecutor
        client = MlflowClient()
        def one(i):
            run = client.create_run(exp_id, run_name=f"run-{i:04d}")
            client.log_batch(
                run.info.run_id,
                metrics=[Metric(f"m{k}", ((i * 37 + k * 11) % 100) / 100.0, 1, 0) for k in range(10)],
                params=[Param(f"p{k}", str((i + k) % 7)) for k in range(10)],
                tags=[RunTag("team", ["vision", "nlp", "speech"][i % 3]),
                      RunTag("size", str(i % 5)), RunTag("seed", str(i))])
            client.set_terminated(run.info.run_id)
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(one, range(n)))
        return {}

    def cmd_search(exp_id, repeats):
        client = MlflowClient()
        queries = {
            "all 200 runs": ("", None),
            "filter + order_by": ("metrics.m3 > 0.3 AND params.p1 = '2' AND tags.team = 'nlp'",
                                  ["metrics.m5 DESC"]),
            "order_by metric, page of 50": ("", ["metrics.m1 ASC"]),
        }
        out = {}
        for name, (flt, order) in queries.items():
            max_results = 50 if "page" in name else 1000
            first = client.search_runs([exp_id], flt, order_by=order, max_results=max_results)
            lat = []
            for _ in range(repeats):
                t = time.perf_counter()
                client.search_runs([exp_id], flt, order_by=order, max_results=max_results)
                lat.append(time.perf_counter() - t)
            out[name] = {"latencies": lat, "rows": len(first)}
        return out

    if __name__ == "__main__":
        cmd, args = sys.argv[1], sys.argv[2:]
        exp_id = mlflow.set_experiment(args[0]).experiment_id
        if cmd == "log_batch":
            result = cmd_log_batch(exp_id, int(args[1]), int(args[2]))
        elif cmd == "populate":
            result = cmd_populate(exp_id, int(args[1]))
        else:
            result = cmd_search(exp_id, int(args[1]))
        print("RESULT " + json.dumps(result))
""")


@dataclass
class Server:
    label: str
    url: str


def _mlflow_server_venv() -> tuple[Path | None, str]:
    """MLflow's own virtual environment: reused when it has the right version, else made."""
    mlflow_bin = SERVER_VENV / "bin" / "mlflow"
    if mlflow_bin.exists():
        probe = subprocess.run([str(SERVER_VENV / "bin" / "python"), "-c",
                                "import mlflow; print(mlflow.__version__)"],
                               capture_output=True, text=True, timeout=120)
        if probe.stdout.strip() == MLFLOW_VERSION:
            return mlflow_bin, "reused"
        shutil.rmtree(SERVER_VENV, ignore_errors=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(SERVER_VENV)], check=True,
                       capture_output=True, text=True, timeout=300)
        subprocess.run([str(SERVER_VENV / "bin" / "pip"), "install", "-q",
                        f"mlflow=={MLFLOW_VERSION}"], check=True, capture_output=True, text=True,
                       timeout=1800)
    except (subprocess.SubprocessError, OSError) as exc:
        detail = getattr(exc, "stderr", "") or ""
        return None, f"{exc!r} {detail[-1500:]}"
    return (mlflow_bin, "installed") if mlflow_bin.exists() else (None, "no mlflow executable")


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError("mlflow server did not answer /health")


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
    mlflow_bin, how = _mlflow_server_venv()
    if mlflow_bin is None:
        print(f"\nMLflow's own server is not measured: its virtual environment could not be made: {how}")
        yield None
        return
    data = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    cmd = [str(mlflow_bin), "server", "--backend-store-uri", f"sqlite:///{data / 'mlflow.db'}",
           "--artifacts-destination", str(data / "artifacts"), "--host", "127.0.0.1",
           "--port", str(port)]
    print(f"\nMLflow server ({how} venv {SERVER_VENV}): {' '.join(cmd)}")
    log = open(data / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(url, proc)
    except RuntimeError as exc:
        print(f"MLflow's own server is not measured: {exc}; log: {data / 'server.log'}")
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
        log.close()
        yield None
        return
    yield Server("mlflow server (sqlite)", url)
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    log.close()


def _client(server: Server, tmp: Path, *args: str, timeout: float = 1800) -> dict:
    script = tmp / "mlflow_bench_worker.py"
    if not script.exists():
        script.write_text(_WORKER)
    env = {**os.environ, **MLFLOW_TEST_ENV, "MLFLOW_TRACKING_URI": server.url,
           "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True,
                          env=env, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise AssertionError(f"bench client failed against {server.label}:\n{proc.stderr[-4000:]}")
    result: dict = json.loads(lines[-1][len("RESULT "):])
    return result


def _ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _servers(runstream_server: Server, mlflow_server: Server | None) -> list[Server]:
    return [runstream_server] + ([mlflow_server] if mlflow_server is not None else [])


@pytest.mark.timeout(3600)
def test_log_batch_throughput(runstream_server: Server, mlflow_server: Server | None,
                              tmp_path: Path) -> None:
    rows: dict[tuple[str, int], dict[str, float]] = {}
    for procs, calls in CALLS.items():
        for server in _servers(runstream_server, mlflow_server):
            r = _client(server, tmp_path, "log_batch", f"bench-{uuid.uuid4().hex[:6]}",
                        str(procs), str(calls))
            lat = r["latencies"]
            rows[(server.label, procs)] = {
                "points_s": r["points"] / r["wall_s"], "p50": _ms(lat, 0.5), "p95": _ms(lat, 0.95),
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
        _client(server, tmp_path, "populate", name, str(SEARCH_RUNS))
        populate_s = time.perf_counter() - t0
        results[server.label] = {"populate_s": populate_s,
                                 **_client(server, tmp_path, "search", name, str(SEARCH_REPEATS))}
    print(f"\nmlflow client search_runs over {SEARCH_RUNS} runs (10 params, 10 metrics, 3 tags), "
          f"{SEARCH_REPEATS} calls each")
    print(f"{'server':<24}{'query':<30}{'rows':>6}{'p50 ms':>9}{'p95 ms':>9}")
    for label, r in results.items():
        for query, v in r.items():
            if query == "populate_s":
                continue
            print(f"{label:<24}{query:<30}{v['rows']:>6}{_ms(v['latencies'], 0.5):>9.1f}"
                  f"{_ms(v['latencies'], 0.95):>9.1f}")
        print(f"{label:<24}{'populating (4 threads)':<30}{SEARCH_RUNS:>6}"
              f"{1000 * r['populate_s'] / SEARCH_RUNS:>9.1f} ms a run (create, log_batch, end)")
    if mlflow_server is not None:
        ours, theirs = results["runstream"], results[mlflow_server.label]
        for query in ours:
            if query == "populate_s":
                continue
            assert ours[query]["rows"] == theirs[query]["rows"], query  # same data, same answer
            print(f"ratio runstream/mlflow p50 latency, {query}: x"
                  f"{_ms(ours[query]['latencies'], 0.5) / _ms(theirs[query]['latencies'], 0.5):.2f}")
