"""The training client through a real broker into the read model."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import runstream
from runstream.cli import main as cli_main
from runstream.client import Client, ClientSettings
from runstream.client.replay import sync_spool
from runstream.client.spool import orphan_paths
from runstream.deploy.brokers import free_port
from runstream.node import QueryNode
from runstream.schemas.ids import experiment_id_for_name
from runstream.settings import Settings

pytestmark = pytest.mark.broker

ENV_TO_CLEAR = ("RUNSTREAM_KAFKA_BOOTSTRAP", "KAFKA_BOOTSTRAP_SERVERS", "RUNSTREAM_RUN_ID",
                "RUNSTREAM_RANK", "RANK", "RUNSTREAM_EXPERIMENT_NAME", "RUNSTREAM_EXPERIMENT_ID",
                "RUNSTREAM_TOPIC_PREFIX", "RUNSTREAM_SPOOL_DIR", "RUNSTREAM_DATA_DIR")


# --------------------------------------------------------------------- helpers


def query(node: QueryNode, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with node.store.reading() as cur:
        return cur.execute(sql, params or []).fetchall()


def wait_until(check: Callable[[], Any], timeout_s: float = 60.0, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy; fail with its last value."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"{what} not reached in {timeout_s:.0f}s (last: {last!r})")


def wait_for_rows(node: QueryNode, sql: str, expected: Any, timeout_s: float = 60.0,
                  params: list[Any] | None = None) -> None:
    got: list[Any] = []

    def check() -> bool:
        nonlocal got
        got = query(node, sql, params)
        return got == expected

    try:
        wait_until(check, timeout_s, sql)
    except AssertionError:
        assert got == expected, sql


def client_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ENV_TO_CLEAR}
    env.update(extra)
    return env


def client_for(settings: Settings, bootstrap: str | None, spool: Path, **options: Any) -> Client:
    return Client(
        Settings(kafka_bootstrap=bootstrap, topic_prefix=settings.topic_prefix,
                 data_dir=settings.data_dir),
        ClientSettings(spool_dir=spool, replay_on_start=False, **options),
    )


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_TO_CLEAR:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def node(settings: Settings, bootstrap: str) -> Iterator[QueryNode]:
    n = QueryNode.open(settings, bootstrap)
    yield n
    n.close()


@pytest.fixture
def fluent(settings: Settings, bootstrap: str, tmp_path: Path) -> Iterator[None]:
    runstream.configure(kafka_bootstrap=bootstrap, topic_prefix=settings.topic_prefix,
                        data_dir=settings.data_dir, spool_dir=tmp_path / "spool",
                        replay_on_start=False)
    yield
    runstream.shutdown()


# ------------------------------------------------------------------ the API


def test_the_whole_api_reaches_the_read_model(node: QueryNode, fluent: None, tmp_path: Path
                                              ) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "MLmodel").write_text("flavors: {}\n")
    (model / "weights.json").write_text("[1, 2, 3]\n")
    data = tmp_path / "data.csv"
    data.write_text("x,y\n1,2\n")

    with runstream.start_run(experiment_name="client-e2e", run_name="main",
                             tags={"team": "a", "size": 5}, description="first note") as parent:
        assert runstream.log_param("lr", 0.01) == 0.01
        runstream.log_params({"elasticNetParam": 0.5, "layers": 3})
        for step in range(100):
            runstream.log_metric("loss", 1.0 / (step + 1), step=step)
            runstream.log_metric("acc", step / 100, step=step)
        runstream.log_metrics({"memUsage": 0.95, "r2": 0.4}, step=3)
        assert runstream.log_metric_history("val_loss", [0.9, 0.7, 0.8], [0, 1, 2]) == 3
        runstream.set_tag("color", "blue")
        runstream.set_tags({"estimator_name": "RandomForestRegressor", "my custom tag": "v"})
        runstream.delete_tag("team")
        runstream.set_note("the note")
        runstream.set_run_name("renamed")
        runstream.log_artifact(data)
        runstream.log_text("hello", "notes/hello.txt")
        runstream.log_model(model)
        with runstream.start_run(run_name="child", nested=True) as child:
            runstream.log_metric("loss", 3.0, step=0)
            runstream.log_metric("loss", 2.0, step=1)
    with pytest.raises(RuntimeError), runstream.start_run(run_name="fails") as failed:
        runstream.log_metric("loss", 9.0)
        raise RuntimeError("training crashed")
    with pytest.raises(KeyboardInterrupt), runstream.start_run(run_name="killed") as killed:
        raise KeyboardInterrupt
    assert runstream.flush() == "delivered"

    exp = experiment_id_for_name("client-e2e")
    wait_for_rows(node, "SELECT name, status FROM runs ORDER BY start_time, name", [
        ("renamed", "FINISHED"), ("child", "FINISHED"), ("fails", "FAILED"),
        ("killed", "KILLED")])
    assert query(node, "SELECT name, placeholder FROM experiments WHERE experiment_id = ?",
                 [exp]) == [("client-e2e", False)]
    cols = ("experiment_id", "parent_run_id", "user_id", "source_type", "source_name",
            "artifact_uri", "has_model", "python_version", "len(packages)")
    runs = {r[0]: dict(zip(cols, r[1:], strict=True)) for r in query(
        node, f"SELECT run_id, {', '.join(cols)} FROM runs")}
    p, c = runs[parent.run_id], runs[child.run_id]
    assert p["experiment_id"] == c["experiment_id"] == exp
    assert p["parent_run_id"] is None and c["parent_run_id"] == parent.run_id
    assert p["user_id"] and p["source_type"] == "LOCAL" and p["source_name"]
    assert p["source_name"] == c["source_name"]
    assert p["artifact_uri"] == f"mlflow-artifacts:/{exp}/{parent.run_id}/artifacts"
    assert p["has_model"] is True and c["has_model"] is False
    assert p["python_version"] and p["len(packages)"] > 10

    assert query(node, "SELECT key, value FROM params WHERE run_id = ? ORDER BY key",
                 [parent.run_id]) == [("elasticNetParam", "0.5"), ("layers", "3"), ("lr", "0.01")]
    tags = dict(query(node, "SELECT key, value FROM tags WHERE run_id = ?", [parent.run_id]))
    assert "team" not in tags
    assert tags["color"] == "blue" and tags["size"] == "5" and tags["my custom tag"] == "v"
    assert tags["mlflow.note.content"] == "the note" and tags["mlflow.runName"] == "renamed"
    assert tags["mlflow.user"] and tags["mlflow.source.type"] == "LOCAL"
    assert tags["mlflow.source.name"]
    child_tags = dict(query(node, "SELECT key, value FROM tags WHERE run_id = ?", [child.run_id]))
    assert child_tags["mlflow.parentRunId"] == parent.run_id

    wait_for_rows(node, "SELECT key, min_value, max_value, latest_value, latest_step, count "
                  "FROM metric_summary WHERE run_id = ? ORDER BY key", [
                      ("acc", 0.0, 0.99, 0.99, 99, 100),
                      ("loss", 0.01, 1.0, 0.01, 99, 100),
                      ("memUsage", 0.95, 0.95, 0.95, 3, 1),
                      ("r2", 0.4, 0.4, 0.4, 3, 1),
                      ("val_loss", 0.7, 0.9, 0.8, 2, 3)], params=[parent.run_id])
    assert query(node, "SELECT key, count(*) FROM metric_history WHERE run_id = ? GROUP BY key "
                 "ORDER BY key", [parent.run_id]) == [("acc", 100), ("loss", 100),
                                                      ("memUsage", 1), ("r2", 1),
                                                      ("val_loss", 3)]
    assert query(node, "SELECT latest_value, min_value, count FROM metric_summary "
                 "WHERE run_id = ?", [child.run_id]) == [(2.0, 2.0, 2)]
    assert query(node, "SELECT count(*) FROM metric_history WHERE run_id = ?",
                 [failed.run_id]) == [(1,)]
    assert query(node, "SELECT count(*) FROM metric_history WHERE run_id = ?",
                 [killed.run_id]) == [(0,)]

    artifacts = query(node, "SELECT path, size, is_model FROM artifacts WHERE run_id = ? "
                      "ORDER BY path", [parent.run_id])
    assert artifacts == [("data.csv", 8, False), ("model/MLmodel", 12, True),
                         ("model/weights.json", 10, True), ("notes/hello.txt", 5, False)]
    root = node.settings.artifacts_dir / exp / parent.run_id / "artifacts"
    assert (root / "notes" / "hello.txt").read_text() == "hello"
    assert query(node, "SELECT count(*) FROM rejected_events") == [(0,)]
    spool = runstream.get_client().options.spool_dir
    assert runstream.shutdown() == "delivered"
    assert not orphan_paths(spool), "everything acked: the spool is deleted at close"


def test_runstream_demo_trains_and_logs_a_grid(node: QueryNode, settings: Settings,
                                               bootstrap: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli_main(["demo", "--bootstrap", bootstrap, "--topic-prefix", settings.topic_prefix,
                   "--data-dir", str(settings.data_dir), "--spool-dir", str(tmp_path / "spool")])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "delivered" in out
    exp = experiment_id_for_name("runstream-demo")
    wait_for_rows(node, "SELECT status, count(*) FROM runs WHERE experiment_id = ? "
                  "GROUP BY status ORDER BY status", [("FAILED", 1), ("FINISHED", 10)],
                  params=[exp])
    (parent,) = query(node, "SELECT run_id FROM runs WHERE parent_run_id IS NULL AND "
                      "experiment_id = ? AND has_model", [exp])
    assert query(node, "SELECT count(*) FROM runs WHERE parent_run_id = ?", parent) == [(10,)]
    assert query(node, "SELECT count(*) FROM tags WHERE key = 'mlflow.note.content' "
                 "AND run_id = ?", parent) == [(1,)]
    assert query(node, "SELECT count(*) FROM params WHERE key = 'elasticNetParam'") == [(10,)]
    wait_until(lambda: query(node, "SELECT count(DISTINCT key) FROM metric_summary")[0][0] >= 5,
               what="per-epoch metrics")
    paths = {r[0] for r in query(node, "SELECT path FROM artifacts WHERE run_id = ?", parent)}
    assert {"grid_results.csv", "model/MLmodel", "model/model.json"} <= paths


# ------------------------------------------------------------- many processes

RANK_SCRIPT = textwrap.dedent("""
    import os, sys, runstream
    rank, n = int(os.environ["RUNSTREAM_RANK"]), int(sys.argv[1])
    with runstream.start_run() as run:
        print("started", run.run_id, flush=True)
        for i in range(n):
            runstream.log_metric("loss", rank + i / n, step=i)
            runstream.log_metric(f"rank{rank}", float(i), step=i)
""")


def test_eight_processes_log_to_one_run(node: QueryNode, settings: Settings, bootstrap: str,
                                        tmp_path: Path) -> None:
    run_id = runstream.new_run_id()
    n = 5000
    env = client_env(
        RUNSTREAM_KAFKA_BOOTSTRAP=bootstrap, RUNSTREAM_TOPIC_PREFIX=settings.topic_prefix,
        RUNSTREAM_RUN_ID=run_id, RUNSTREAM_EXPERIMENT_NAME="distributed",
        RUNSTREAM_DATA_DIR=str(settings.data_dir), RUNSTREAM_REPLAY_ON_START="0",
    )

    def launch(rank: int) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", RANK_SCRIPT, str(n)], stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
            env={**env, "RUNSTREAM_RANK": str(rank),
                 "RUNSTREAM_SPOOL_DIR": str(tmp_path / f"spool{rank}")},
        )

    # Rank 0 creates the run; the others start after its start_run returned (a barrier).
    ranks = [launch(0)]
    assert ranks[0].stdout is not None
    assert ranks[0].stdout.readline().split() == ["started", run_id]
    ranks += [launch(r) for r in range(1, 8)]
    for p in ranks:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0, out

    wait_for_rows(node, "SELECT count(*) FROM metric_history WHERE run_id = ?",
                  [(8 * n * 2,)], params=[run_id])
    assert query(node, "SELECT count(*) FROM metric_summary WHERE run_id = ?", [run_id]) == [
        (9,)]  # loss + rank0..rank7
    assert query(node, "SELECT count FROM metric_summary WHERE run_id = ? AND key = 'loss'",
                 [run_id]) == [(8 * n,)]
    assert query(node, "SELECT max_value, latest_step FROM metric_summary WHERE run_id = ? "
                 "AND key = 'loss'", [run_id]) == [(7 + (n - 1) / n, n - 1)]
    assert query(node, "SELECT count(*), any_value(status), any_value(experiment_id) FROM runs"
                 ) == [(1, "FINISHED", experiment_id_for_name("distributed"))]
    assert query(node, "SELECT count(*) FROM rejected_events") == [(0,)]


# ------------------------------------------------------------- SIGKILL, replay

KILLED_SCRIPT = textwrap.dedent("""
    import sys, time, runstream
    n = int(sys.argv[1])
    run = runstream.start_run(run_name="sigkilled", experiment_name="crash")
    run.log_params({"n": n})
    for i in range(n):
        run.log_metric("loss", 1.0 / (i + 1), step=i)
    print(runstream.flush(30), flush=True)  # on disk (spooled) or delivered
    time.sleep(600)  # killed here, with the run still open
""")


def _run_and_sigkill(env: dict[str, str], n: int) -> None:
    proc = subprocess.Popen([sys.executable, "-c", KILLED_SCRIPT, str(n)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line == "spooled", line
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()


def test_what_was_spooled_survives_sigkill_and_runstream_sync_sends_it(
    node: QueryNode, settings: Settings, bootstrap: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    n = 20_000
    spool = tmp_path / "spool"
    # Nothing listens on this port: every event stays in the spool.
    env = client_env(RUNSTREAM_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}",
                     RUNSTREAM_TOPIC_PREFIX=settings.topic_prefix, RUNSTREAM_SPOOL_DIR=str(spool),
                     RUNSTREAM_DATA_DIR=str(settings.data_dir), RUNSTREAM_REPLAY_ON_START="0",
                     RUNSTREAM_DELIVERY_TIMEOUT_MS="1000")
    _run_and_sigkill(env, n)
    assert orphan_paths(spool)

    rc = cli_main(["sync", "--spool-dir", str(spool), "--bootstrap", bootstrap, "--timeout", "60"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert orphan_paths(spool) == [], "delivered segments are deleted"
    wait_for_rows(node, "SELECT name, status FROM runs", [("sigkilled", "RUNNING")])
    wait_for_rows(node, "SELECT count(*), min(step), max(step) FROM metric_history",
                  [(n, 0, n - 1)])
    assert query(node, "SELECT value FROM params WHERE key = 'n'") == [(str(n),)]

    # A second sync finds nothing: the spool is empty, nothing is sent twice.
    assert sync_spool(spool, bootstrap=bootstrap, timeout_s=10).segments == 0


def test_the_next_client_on_the_machine_resends_what_a_killed_one_left(
    settings: Settings, bootstrap: str, tmp_path: Path,
) -> None:
    n = 5_000
    spool = tmp_path / "spool"
    # The broker answers but the topic does not exist yet: nothing can be acknowledged.
    env = client_env(RUNSTREAM_KAFKA_BOOTSTRAP=bootstrap,
                     RUNSTREAM_TOPIC_PREFIX=settings.topic_prefix, RUNSTREAM_SPOOL_DIR=str(spool),
                     RUNSTREAM_DATA_DIR=str(settings.data_dir), RUNSTREAM_REPLAY_ON_START="0",
                     RUNSTREAM_DELIVERY_TIMEOUT_MS="1000")
    _run_and_sigkill(env, n)
    node = QueryNode.open(settings, bootstrap)  # creates the topics
    try:
        later = Client(Settings(kafka_bootstrap=bootstrap, topic_prefix=settings.topic_prefix,
                                data_dir=settings.data_dir),
                       ClientSettings(spool_dir=spool, replay_on_start=True))
        wait_for_rows(node, "SELECT count(*) FROM metric_history", [(n,)])
        wait_until(lambda: not orphan_paths(spool), what="the orphan segment deleted")
        assert query(node, "SELECT name, status FROM runs") == [("sigkilled", "RUNNING")]
        later.close()
    finally:
        node.close()
