"""MLflow's own tracking server for the benchmarks that compare runstream with it.

Not a test file: the harness shared by test_mlflow_bench.py, test_client_vs_mlflow_bench.py and
test_query_bench.py.

* :func:`serve_mlflow` runs ``mlflow server --backend-store-uri sqlite:///<file>`` (MLflow
  3.17.2, from a virtual environment of its own: ``python -m venv`` + ``pip install
  mlflow==3.17.2``, kept in /tmp between runs) and stops it again. When that environment
  cannot be made or the server does not start, it prints why and yields None: the
  benchmarks then measure runstream only.
* :func:`run_client` runs a client script with the ``mlflow`` client of this virtual
  environment against a server (runstream's or MLflow's) and returns what it printed as
  ``RESULT <json>``. :data:`LOG_BATCH_WORKER` is the script of the ``log_batch`` (and
  search) measurements: one ``import mlflow``, then N forked client processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runstream.deploy.brokers import free_port

from tests.e2e.mlflow_node import MLFLOW_TEST_ENV

MLFLOW_VERSION = "3.17.2"
SERVER_VENV = Path(os.environ.get("RUNSTREAM_BENCH_MLFLOW_VENV", "/tmp/runstream-mlflow-server-venv"))
METRICS_PER_CALL = 1000

# The client side of the log_batch and search measurements: one import, then N forked processes.
LOG_BATCH_WORKER = textwrap.dedent("""
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
        return {"wall_s": end - start, "latencies": lat, "points": procs * calls * 1000,
                "run_ids": runs}

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
    """A tracking server the ``mlflow`` client talks to."""

    label: str
    url: str


def mlflow_server_venv() -> tuple[Path | None, str]:
    """MLflow's own virtual environment: reused when it has the right version, else made.

    Returns the ``mlflow`` executable and how it was got, or None and why it could not be made.
    """
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


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's process group (uvicorn and its workers), SIGKILL if it lingers."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)


@contextmanager
def serve_mlflow(workdir: Path, database: Path | None = None,
                 label: str = "mlflow server (sqlite)") -> Iterator[Server | None]:
    """MLflow's tracking server on ``database`` (default ``workdir/mlflow.db``), or None.

    Artifacts and the server's log go to ``workdir``. None (with the reason printed) when
    MLflow's virtual environment cannot be made or the server does not come up.
    """
    mlflow_bin, how = mlflow_server_venv()
    if mlflow_bin is None:
        print(f"\nMLflow's own server is not measured: its virtual environment could not be made: {how}")
        yield None
        return
    workdir.mkdir(parents=True, exist_ok=True)
    database = database or workdir / "mlflow.db"
    port = free_port()
    cmd = [str(mlflow_bin), "server", "--backend-store-uri", f"sqlite:///{database}",
           "--artifacts-destination", str(workdir / "artifacts"), "--host", "127.0.0.1",
           "--port", str(port)]
    print(f"\nMLflow server ({how} venv {SERVER_VENV}): {' '.join(cmd)}")
    with open(workdir / "server.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_http(url, proc)
        except RuntimeError as exc:
            print(f"MLflow's own server is not measured: {exc}; log: {workdir / 'server.log'}")
            _stop(proc)
            yield None
            return
        try:
            yield Server(label, url)
        finally:
            _stop(proc)


def run_client(server: Server, tmp: Path, *args: str, script: str = LOG_BATCH_WORKER,
               timeout: float = 1800, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``script`` with this environment's ``mlflow`` client against ``server``.

    ``args`` are its command line; its last ``RESULT <json>`` line is returned. A failure
    (exit status, no result) fails the calling test with the script's stderr.
    """
    path = tmp / f"mlflow_bench_client_{hashlib.sha256(script.encode()).hexdigest()[:10]}.py"
    if not path.exists():
        path.write_text(script)
    full_env = {**os.environ, **MLFLOW_TEST_ENV, "MLFLOW_TRACKING_URI": server.url,
                "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", **(env or {})}
    proc = subprocess.run([sys.executable, str(path), *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise AssertionError(f"bench client failed against {server.label}:\n{proc.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT "):])
    return result


def ms(values: list[float], q: float) -> float:
    """The q-quantile of durations in seconds, in ms (nearest rank, as the bench tables print)."""
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]
