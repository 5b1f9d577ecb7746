"""The projector against a real broker: crashes, rebuilds, retention."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import duckdb
import pytest
from runstream.kafka_log import EventProducer
from runstream.node import DAY_MS, QueryNode
from runstream.projections.read_model import PROJECTED_TABLES, RUN_RECORDS_SELECT, projected_rows_sql
from runstream.schemas import (
    MetricsLogged,
    MetricsLoggedBody,
    RunDeleted,
    RunEnded,
    RunEndedBody,
    RunRestored,
    TagSet,
    TagSetBody,
)
from runstream.settings import Settings

from tests.event_factory import ev, metrics, packed_metrics, params, run_created

pytestmark = pytest.mark.broker


def workload(n_runs: int, seed: int = 7) -> list:
    """A known set of events: runs with params, metric batches, tags, deletes and restores."""
    rng = random.Random(seed)
    events = []
    for i in range(n_runs):
        run = f"run{i:04d}-{uuid.uuid4().hex[:8]}"
        events.append(run_created(run, "0"))
        events.append(params(run, {"lr": str(rng.choice([0.1, 0.01])), "i": str(i)}))
        for b in range(6):
            pts = [(k, rng.random(), b * 50 + s, 1000 + b) for s in range(50) for k in ("loss", "acc")]
            # Both forms a producer may send: the client's packed columns, the API's JSON.
            events.append((packed_metrics if b % 2 else metrics)(run, pts))
        events.append(ev(TagSet, TagSetBody(key="k", value=str(i)), run_id=run))
        if i % 5 == 0:
            events.append(ev(RunDeleted, run_id=run))
        if i % 10 == 0:
            events.append(ev(RunRestored, run_id=run))
        events.append(ev(RunEnded, RunEndedBody(status="FINISHED", end_time_ms=2000), run_id=run))
    return events


def tables(path: Path) -> dict[str, list]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        found = {t: sorted(con.execute(projected_rows_sql(t)).fetchall(), key=repr)
                 for t in PROJECTED_TABLES}
        found["run_records"] = current_records(con)
        return found
    finally:
        con.close()


def current_records(cur: duckdb.DuckDBPyConnection) -> list[str]:
    """The run_records documents, sorted, after checking that every run has one at its
    version, equal to the one its tables give (what a settled projector leaves)."""
    stored = cur.execute("SELECT run_key, version, record FROM run_records").fetchall()
    keys = [k for (k,) in cur.execute("SELECT run_key FROM runs").fetchall()]
    made = cur.execute(RUN_RECORDS_SELECT, {"keys": keys}).fetchall()
    assert sorted(stored) == sorted(made)
    return sorted(record for _, _, record in stored)


def current_db(data_dir: Path) -> Path:
    node_dir = data_dir / "node"
    return node_dir / (node_dir / "CURRENT").read_text().strip()


def project_cmd(settings: Settings, data_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "runstream.cli", "project", "--data-dir", str(data_dir),
            "--bootstrap", settings.kafka_bootstrap or "", "--topic-prefix", settings.topic_prefix,
            *extra]


def test_sigkill_at_random_moments_loses_nothing_and_counts_nothing_twice(
    topics: Settings, bootstrap: str, tmp_path: Path
) -> None:
    events = workload(60)
    producer = EventProducer(bootstrap, topics.events_topic)
    done = threading.Event()

    def stream() -> None:
        # Trickle the log in while the projector is being killed.
        # ~25 s of traffic, so that the kills land while batches are being applied.
        for i in range(0, len(events), 20):
            producer.publish_and_wait(events[i : i + 20])
            time.sleep(0.8)
        done.set()

    feeder = threading.Thread(target=stream)
    feeder.start()
    rng = random.Random(1234)
    crashed = tmp_path / "crashed"
    env = {**os.environ, "RUNSTREAM_BATCH_MAX_MESSAGES": "7", "RUNSTREAM_PARTITIONS": "3"}
    kills = 0
    while kills < 20:
        proc = subprocess.Popen(project_cmd(topics, crashed), env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.8, 2.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
    feeder.join()
    assert done.is_set()

    # Restart once more and let it finish; then a clean replay into a fresh directory.
    subprocess.run(project_cmd(topics, crashed, "--until-caught-up"), env=env, check=True,
                   capture_output=True, timeout=180)
    clean = tmp_path / "clean"
    subprocess.run(project_cmd(topics, clean, "--until-caught-up"), env=env, check=True,
                   capture_output=True, timeout=180)
    after_crashes, replay = tables(current_db(crashed)), tables(current_db(clean))
    assert len(replay["runs"]) == 60
    assert len(replay["metric_history"]) == 60 * 6 * 100
    for table in (*PROJECTED_TABLES, "run_records"):
        assert after_crashes[table] == replay[table], f"{table} differs after {kills} SIGKILLs"


@pytest.fixture
def node(topics: Settings, bootstrap: str):
    n = QueryNode.open(topics, bootstrap)
    yield n
    n.close()


def _wait_applied(node: QueryNode, positions: list) -> None:
    assert node.projector.wait_for(positions, 60)


def test_rebuild_gives_the_same_tables_and_the_node_answers_throughout(node: QueryNode) -> None:
    positions = node.producer.publish_and_wait(workload(30))
    _wait_applied(node, positions)
    live_path = node.store.path
    with node.store.reading() as cur:
        before = {t: sorted(cur.execute(projected_rows_sql(t)).fetchall(), key=repr) for t in PROJECTED_TABLES}

    answers: list[int] = []
    stop = threading.Event()

    def query_during_rebuild() -> None:
        while not stop.is_set():
            with node.store.reading() as cur:
                answers.append(cur.execute("SELECT count(*) FROM runs").fetchone()[0])

    retention = node.start_retention_job(every_s=3600)
    reader = threading.Thread(target=query_during_rebuild)
    reader.start()
    status = node.rebuild()
    stop.set()
    reader.join()
    assert status.state == "done" and node.store.path != live_path
    assert retention.is_alive(), "the retention job outlives the projector a rebuild replaced"
    assert answers and set(answers) == {30}, "readers saw the full read model all along"
    with node.store.reading() as cur:
        after = {t: sorted(cur.execute(projected_rows_sql(t)).fetchall(), key=repr) for t in PROJECTED_TABLES}
    assert after == before
    with node.store.reading() as cur:
        assert len(current_records(cur)) == 30, "the new file serves current documents"
    # The node goes on projecting into the new file.
    more = node.producer.publish_and_wait([run_created("after-rebuild")])
    _wait_applied(node, more)
    with node.store.reading() as cur:
        assert cur.execute("SELECT count(*) FROM runs").fetchone() == (31,)
    # Its document follows once the projector is idle (RECORDS_REFRESH_S, 1 s).
    deadline = time.monotonic() + 20
    while True:
        with node.store.reading() as cur:
            stale = cur.execute("SELECT count(*) FROM runs r LEFT JOIN run_records d "
                                "USING (run_key) WHERE d.version IS DISTINCT FROM r.version"
                                ).fetchone()[0]
            if stale == 0 or time.monotonic() > deadline:
                assert len(current_records(cur)) == 31
                break
        time.sleep(0.2)
    projected = node.health()["projected"]
    assert projected["records_refreshed"] >= 1 and projected["records_failures"] == 0


def test_retention_purges_runs_past_the_window_with_an_injected_clock(node: QueryNode) -> None:
    t0 = int(time.time() * 1000)
    events = [run_created("keep"), run_created("old"), run_created("recent"),
              params("old", {"a": "1"}), metrics("old", [("m", 1.0, 0, 1)])]
    _wait_applied(node, node.producer.publish_and_wait(events))
    _wait_applied(node, node.producer.publish_and_wait([
        ev(RunDeleted, run_id="old", t=t0 - 40 * DAY_MS),
        ev(RunDeleted, run_id="recent", t=t0 - 10 * DAY_MS),
    ]))
    artifact_dir = node.settings.artifacts_dir / "0" / "old" / "artifacts"
    artifact_dir.mkdir(parents=True)
    (artifact_dir / "f.txt").write_text("x")

    assert node.purge_expired(as_of_ms=t0, dry_run=True) == ["old"]
    assert node.purge_expired(as_of_ms=t0 - 20 * DAY_MS) == []  # nothing is old enough then
    assert node.purge_expired(as_of_ms=t0) == ["old"]
    with node.store.reading() as cur:
        for table in ("runs", "params", "metric_history", "metric_summary"):
            assert cur.execute(f"SELECT count(*) FROM {table} WHERE run_id='old'").fetchone() == (0,)
        assert cur.execute("SELECT run_id FROM runs ORDER BY run_id").fetchall() == [("keep",), ("recent",)]
    assert not artifact_dir.exists()
    # Restoring a purged run is refused with a reason, and nothing comes back.
    _wait_applied(node, node.producer.publish_and_wait([ev(RunRestored, run_id="old")]))
    assert node.projector.stats.rejected["run_purged"] == 1
    with node.store.reading() as cur:
        assert cur.execute("SELECT reason FROM rejected_events WHERE run_id='old'").fetchall() == [("run_purged",)]


def test_admin_endpoints_refuse_bad_input_and_change_nothing(topics: Settings, bootstrap: str) -> None:
    import httpx

    from tests.e2e.mlflow_node import ServedNode

    served = ServedNode(topics, bootstrap)
    try:
        node = served.node
        _wait_applied(node, node.producer.publish_and_wait([run_created("r"), ev(RunDeleted, run_id="r", t=0)]))
        with httpx.Client(base_url=served.url) as http:
            for body in ({"as_of_ms": -1}, {"dry_run": "maybe"}, {"unknown": 1}):
                r = http.post("/admin/retention", json=body)
                assert r.status_code == 400, body
                assert r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
            r = http.post("/admin/retention", content=b"{not json",
                          headers={"content-type": "application/json"})
            assert r.status_code == 400
        with node.store.reading() as cur:
            assert cur.execute("SELECT count(*) FROM runs WHERE run_id = 'r'").fetchone() == (1,)
    finally:
        served.close()


def test_a_ranks_points_before_run_created_wait_for_it_through_the_broker(node: QueryNode) -> None:
    run = uuid.uuid4().hex
    early = [ev(MetricsLogged, MetricsLoggedBody.from_points([("loss", 2.0, 5, 5)]), run_id=run),
             ev(TagSet, TagSetBody(key="rank", value="1"), run_id=run)]
    _wait_applied(node, node.producer.publish_and_wait(early))
    assert node.health()["parked"] == {"events": 2, "runs": 1}
    with node.store.reading() as cur:
        assert cur.execute("SELECT count(*) FROM metric_history WHERE run_id = ?", [run]).fetchone() == (0,)

    _wait_applied(node, node.producer.publish_and_wait([run_created(run)]))
    assert node.health()["parked"] == {"events": 0, "runs": 0}
    with node.store.reading() as cur:
        assert cur.execute(
            "SELECT latest_value, latest_step, count FROM metric_summary WHERE run_id = ?", [run]
        ).fetchall() == [(2.0, 5, 1)]
        assert cur.execute("SELECT value FROM tags WHERE run_id = ? AND key = 'rank'",
                           [run]).fetchall() == [("1",)]
    assert not node.health()["dead_letters"]


def test_the_live_projector_re_sorts_key_value_tables_by_key(
    topics: Settings, bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runstream import projector as projector_module
    from runstream.projections import layout

    monkeypatch.setattr(projector_module, "LAYOUT_CHECK_S", 0.0)
    monkeypatch.setattr(layout, "MIN_TAIL_ROWS", 10)
    node = QueryNode.open(topics, bootstrap)
    try:
        _wait_applied(node, node.producer.publish_and_wait(workload(20)))
        deadline = time.monotonic() + 30
        while node.health()["projected"]["clusterings"] < 1 and time.monotonic() < deadline:
            _wait_applied(node, node.producer.publish_and_wait(workload(2)))
        assert node.health()["projected"]["clusterings"] >= 1
        with node.store.reading() as cur:
            keys = [k for (k,) in cur.execute("SELECT key FROM run_params").fetchall()]
            tail = layout.tail_rows(cur, "run_params")
            assert keys[: len(keys) - tail] == sorted(keys[: len(keys) - tail])
            assert cur.execute("SELECT count(*) FROM params").fetchone()[0] == len(keys)
    finally:
        node.close()
