"""The client API without a broker: every event lands in the spool, in order, as specified."""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import runstream
from runstream.client import BackpressureTimeout, Client, ClientError, ClientSettings
from runstream.client.spool import Segment, orphan_paths
from runstream.errors import InvalidInput
from runstream.schemas import Event, MetricsPacked, decode_event
from runstream.schemas.ids import experiment_id_for_name
from runstream.settings import Settings


@pytest.fixture(autouse=True)
def _no_broker(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("RUNSTREAM_KAFKA_BOOTSTRAP", "KAFKA_BOOTSTRAP_SERVERS", "RUNSTREAM_RUN_ID",
                 "RUNSTREAM_RANK", "RANK", "RUNSTREAM_EXPERIMENT_NAME", "RUNSTREAM_EXPERIMENT_ID"):
        monkeypatch.delenv(name, raising=False)
    yield
    runstream.shutdown()


def _options(tmp_path: Path, **kw: Any) -> ClientSettings:
    return ClientSettings(spool_dir=tmp_path / "spool", replay_on_start=False, **kw)


def _client(tmp_path: Path, **kw: Any) -> Client:
    return Client(Settings(data_dir=tmp_path / "data"), _options(tmp_path, **kw))


def spooled_events(spool: Path) -> list[Event]:
    """Every event in a (closed) spool, in spool order."""
    events = []
    for i, path in enumerate(orphan_paths(spool)):
        seg = Segment.open_orphan(path, i)
        assert seg is not None
        events += [decode_event(r.value) for r in seg.records()]
        seg.close()
    return events


def _types(events: list[Event]) -> list[str]:
    return [e.type for e in events]  # type: ignore[attr-defined]


def _points(events: list[Event]) -> list[tuple[str, float, int, int]]:
    return [p for e in events if isinstance(e, MetricsPacked) for p in e.body.points()]


def test_a_run_publishes_its_events_in_order(tmp_path: Path) -> None:
    client = _client(tmp_path)
    with client.start_run(experiment_name="exp", run_name="first", tags={"team": "a"},
                          description="a note") as run:
        run.log_param("lr", 0.1)
        run.log_params({"layers": 3, "act": "relu"})
        for step in range(5):
            run.log_metric("loss", 1.0 / (step + 1), step=step, timestamp=1000 + step)
        run.log_metrics({"acc": 0.5, "nan": math.nan}, step=5, timestamp=2000)
        run.set_tag("color", "blue")
        run.delete_tag("team")
        run.set_name("renamed")
    assert run.info.status == "FINISHED" and run.info.end_time
    client.close()
    events = spooled_events(tmp_path / "spool")
    assert _types(events) == [
        "experiment.created", "run.created", "params.logged", "params.logged",
        "metrics.packed", "tag.set", "tag.deleted", "tag.set", "run.renamed", "run.ended",
    ]
    exp_id = experiment_id_for_name("exp")
    created = events[1]
    assert created.experiment_id == exp_id and created.run_id == run.run_id
    body = created.body  # type: ignore[attr-defined]
    assert body.name == "first" and body.experiment_name == "exp"
    assert body.artifact_uri == f"mlflow-artifacts:/{exp_id}/{run.run_id}/artifacts"
    assert body.tags["team"] == "a" and body.tags["mlflow.note.content"] == "a note"
    for key in ("mlflow.user", "mlflow.source.name", "mlflow.source.type", "mlflow.runName"):
        assert key in body.tags
    assert body.python_version and body.packages and body.command_line and body.host
    assert [(kv.key, kv.value) for kv in events[3].body.params] == [  # type: ignore[attr-defined]
        ("layers", "3"), ("act", "relu")]
    points = _points(events)
    assert points[:5] == [("loss", 1.0 / (s + 1), s, 1000 + s) for s in range(5)]
    assert points[5] == ("acc", 0.5, 5, 2000) and points[6][0] == "nan"
    assert math.isnan(points[6][1])
    assert events[-1].body.status == "FINISHED"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("exc", "status"),
    [(RuntimeError("boom"), "FAILED"), (KeyboardInterrupt(), "KILLED"), (SystemExit(0), "FINISHED"),
     (SystemExit(3), "FAILED")],
)
def test_leaving_the_block_sets_the_status(tmp_path: Path, exc: BaseException, status: str
                                           ) -> None:
    client = _client(tmp_path)
    with pytest.raises(type(exc)), client.start_run() as run:
        run.log_metric("x", 1.0)
        raise exc
    client.close()
    ended = [e for e in spooled_events(tmp_path / "spool") if e.type == "run.ended"]  # type: ignore[attr-defined]
    assert [e.body.status for e in ended] == [status]  # type: ignore[attr-defined]


def test_logging_to_an_ended_run_raises(tmp_path: Path) -> None:
    client = _client(tmp_path)
    run = client.start_run()
    run.end("KILLED")
    with pytest.raises(ClientError):
        run.log_metric("x", 1.0)
    with pytest.raises(ClientError):
        run.set_tag("a", "b")
    assert run.end() == "ended", "ending twice is harmless"
    client.close()


def test_invalid_input_is_refused_at_the_call(tmp_path: Path) -> None:
    client = _client(tmp_path)
    run = client.start_run()
    with pytest.raises(InvalidInput):
        run.log_metric("", 1.0)
    with pytest.raises(InvalidInput):
        run.log_metric("k" * 251, 1.0)
    with pytest.raises(InvalidInput):
        run.log_param("p", "v" * 6001)
    with pytest.raises(InvalidInput):
        run.end("DONE")
    with pytest.raises((TypeError, ValueError)):
        run.log_metric("ok", "not a number")  # type: ignore[arg-type]
    client.close()


def test_fluent_nested_runs_and_auto_start(tmp_path: Path) -> None:
    runstream.configure(spool_dir=tmp_path / "spool", replay_on_start=False,
                        data_dir=tmp_path / "data")
    runstream.set_experiment("fluent")
    with runstream.start_run(run_name="parent") as parent:
        with pytest.raises(InvalidInput):
            runstream.start_run()  # already active, not nested
        with runstream.start_run(run_name="child", nested=True) as child:
            assert runstream.active_run() is child
            runstream.log_metric("m", 1.0)
        assert runstream.active_run() is parent
    assert runstream.active_run() is None
    runstream.log_metric("auto", 2.0)  # no active run: one is started, as MLflow does
    auto = runstream.active_run()
    assert auto is not None and auto.run_id not in (parent.run_id, child.run_id)
    runstream.end_run()
    assert runstream.last_active_run() is auto
    runstream.shutdown()
    created = {e.run_id: e for e in spooled_events(tmp_path / "spool") if e.type == "run.created"}  # type: ignore[attr-defined]
    assert set(created) == {parent.run_id, child.run_id, auto.run_id}
    c = created[child.run_id].body  # type: ignore[attr-defined]
    assert c.parent_run_id == parent.run_id and c.tags["mlflow.parentRunId"] == parent.run_id
    exp = experiment_id_for_name("fluent")
    assert {e.experiment_id for e in created.values()} == {exp}


def test_distributed_rank_zero_creates_and_other_ranks_attach(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    shared = runstream.new_run_id()
    monkeypatch.setenv("RUNSTREAM_RUN_ID", shared)
    monkeypatch.setenv("RUNSTREAM_EXPERIMENT_NAME", "dist")
    for rank in (0, 1):
        monkeypatch.setenv("RUNSTREAM_RANK", str(rank))
        spool = tmp_path / f"spool{rank}"
        runstream.configure(spool_dir=spool, replay_on_start=False, data_dir=tmp_path / "data",
                            start_ack_timeout_s=0.5)
        with runstream.start_run() as run:
            assert run.run_id == shared and run.owner == (rank == 0)
            runstream.log_metric("loss", float(rank), step=rank)
        # The env run id is used once: a later run is a new one.
        with runstream.start_run() as later:
            assert later.run_id != shared
        runstream.shutdown()
        events = [e for e in spooled_events(spool) if e.run_id == shared]
        kinds = _types(events)
        if rank == 0:
            assert kinds == ["run.created", "metrics.packed", "run.ended"]
            assert events[0].experiment_id == experiment_id_for_name("dist")
        else:
            assert kinds == ["metrics.packed"], "an attached rank never creates or ends the run"


def test_artifacts_are_copied_hashed_and_announced(tmp_path: Path) -> None:
    client = _client(tmp_path)
    model = tmp_path / "mymodel"
    (model / "sub").mkdir(parents=True)
    (model / "MLmodel").write_text("flavors: {}\n")
    (model / "sub" / "weights.bin").write_bytes(b"\x00\x01" * 1000)
    data = tmp_path / "data.csv"
    data.write_text("a,b\n1,2\n")
    with client.start_run(experiment_id="7") as run:
        run.log_artifact(data, "inputs")
        run.log_text("hello", "notes/hello.txt")
        run.log_dict({"k": 1}, "cfg.json")
        run.log_artifacts(model, "model")
        with pytest.raises(InvalidInput):
            run.log_text("x", "../escape.txt")
    client.close()
    root = tmp_path / "data" / "artifacts" / "7" / run.run_id / "artifacts"
    assert (root / "inputs" / "data.csv").read_text() == "a,b\n1,2\n"
    assert (root / "model" / "sub" / "weights.bin").read_bytes() == b"\x00\x01" * 1000
    logged = {e.body.path: e.body for e in spooled_events(tmp_path / "spool")  # type: ignore[attr-defined]
              if e.type == "artifact.logged"}  # type: ignore[attr-defined]
    assert set(logged) == {"inputs/data.csv", "notes/hello.txt", "cfg.json", "model/MLmodel",
                           "model/sub/weights.bin"}
    assert logged["notes/hello.txt"].digest == hashlib.sha256(b"hello").hexdigest()
    assert logged["model/sub/weights.bin"].size == 2000
    assert logged["model/MLmodel"].is_model and logged["model/sub/weights.bin"].is_model
    assert not logged["inputs/data.csv"].is_model


def _bounded_client(tmp_path: Path) -> Client:
    """No broker, a 64 KiB spool, 2000 points of memory, and max_block_s: a caller logging
    on soon waits for room, then raises BackpressureTimeout."""
    return _client(tmp_path, spool_max_bytes=64 * 1024, max_pending_points=2000,
                   flush_points=500, max_block_s=0.3, flush_interval_ms=5)


def test_memory_bound_blocks_then_times_out_without_dropping(tmp_path: Path) -> None:
    # No broker: nothing is ever acknowledged, the spool fills at its bound, memory fills at
    # max_pending_points, and log_metric waits; with max_block_s it raises instead.
    client = _bounded_client(tmp_path)
    run = client.start_run()
    calls = 0
    with pytest.raises(BackpressureTimeout, match="nothing was dropped"):
        for i in range(1_000_000):
            calls += 1
            run.log_metric("loss", float(i), step=i)
    snap = client.snapshot()
    assert snap["spool_full"] and snap["blocked_calls"] >= 1
    # Every point given to log_metric is in memory or in the spool, the one of the call that
    # raised included (it was queued before the call waited): nothing to re-log.
    assert snap["points_spooled"] + snap["pending_points"] == calls
    client.close(timeout_s=1)
    points = _points(spooled_events(tmp_path / "spool"))
    assert [p[2] for p in points] == list(range(calls)), "all of them, in order, at close"


def test_exit_ends_the_open_run_with_the_status_of_the_exit(tmp_path: Path) -> None:
    script = textwrap.dedent("""
        import sys, runstream
        run = runstream.start_run(run_name=sys.argv[1])
        runstream.log_metric("x", 1.0)
        if sys.argv[1] == "error":
            raise RuntimeError("uncaught")
        if sys.argv[1] == "interrupt":
            raise KeyboardInterrupt
    """)
    env = {k: v for k, v in os.environ.items()
           if k not in ("RUNSTREAM_KAFKA_BOOTSTRAP", "KAFKA_BOOTSTRAP_SERVERS", "RUNSTREAM_RUN_ID")}
    expected = {"ok": "FINISHED", "error": "FAILED", "interrupt": "KILLED"}
    for how in expected:
        spool = tmp_path / how
        env.update(RUNSTREAM_SPOOL_DIR=str(spool), RUNSTREAM_REPLAY_ON_START="0",
                   RUNSTREAM_DATA_DIR=str(tmp_path / "data"))
        subprocess.run([sys.executable, "-c", script, how], env=env, capture_output=True,
                       timeout=60)
        events = spooled_events(spool)
        assert _types(events)[-1] == "run.ended", how
        assert events[-1].body.status == expected[how], how  # type: ignore[attr-defined]
        assert len(_points(events)) == 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_logs_to_the_parents_run_without_owning_it(tmp_path: Path) -> None:
    runstream.configure(spool_dir=tmp_path / "spool", replay_on_start=False,
                        data_dir=tmp_path / "data")
    with runstream.start_run(run_name="parent") as run:
        runstream.log_metric("from_parent", 1.0)
        pid = os.fork()
        if pid == 0:  # the child: log through the inherited run, flush, leave
            code = 0
            try:
                runstream.log_metric("from_child", 2.0, step=1)
                run.set_tag("child", "was here")
                runstream.end_run()  # flushes the child's events; the run stays the parent's
            except BaseException:  # noqa: BLE001
                code = 1
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        runstream.log_metric("from_parent", 3.0, step=2)
    runstream.shutdown()
    events = [e for e in spooled_events(tmp_path / "spool") if e.run_id == run.run_id]
    keys = sorted(p[0] for p in _points(events))
    assert keys == ["from_child", "from_parent", "from_parent"]
    assert _types(events).count("run.created") == 1
    assert [e.body.status for e in events if e.type == "run.ended"] == ["FINISHED"]  # type: ignore[attr-defined]
    assert any(e.type == "tag.set" and e.body.key == "child" for e in events)  # type: ignore[attr-defined]


def test_end_run_waits_for_a_broker_that_answers_again(tmp_path: Path) -> None:
    """A stale outage flag (an earlier blip) must not make end_run skip the delivery."""
    from tests.unit.test_client_spool import FakeProducer

    fake = FakeProducer({})
    client = Client(Settings(kafka_bootstrap="fake:9092", data_dir=tmp_path / "data"),
                    _options(tmp_path))
    client.sender._factory = lambda cfg: fake
    run = client.start_run()
    run.log_metric("x", 1.0)
    assert client.flush(10) == "delivered"
    client.sender.healthy = False  # as after "all brokers down" while nothing was in flight
    run.log_metric("x", 2.0, step=1)
    assert run.end() == "delivered"
    assert client.sender.healthy
    client.close()
    kinds = [decode_event(v).type for v in fake.log]  # type: ignore[attr-defined]
    assert kinds == ["run.created", "metrics.packed", "metrics.packed", "run.ended"]
    assert orphan_paths(tmp_path / "spool") == []


def test_a_metric_history_keeps_its_order_among_points_and_events(tmp_path: Path) -> None:
    from array import array

    client = _client(tmp_path, flush_points=3)
    with client.start_run() as run:
        run.log_metric("loss", 9.0, step=0, timestamp=500)
        assert run.log_metric_history("loss", [1.0, 2, math.inf, -0.0, 5.5],
                                      array("q", range(1, 6)), [10, 11, 12, 13, 14]) == 5
        run.set_tag("after", "history")
        assert run.log_metric_history("acc", (0.5, 0.25), steps=[7, 8], timestamps=77) == 2
        assert run.log_metric_history("acc", [], []) == 0
    client.close()
    events = spooled_events(tmp_path / "spool")
    assert _types(events) == [
        "run.created", "metrics.packed", "metrics.packed", "metrics.packed", "tag.set",
        "metrics.packed", "run.ended",
    ], "the point logged first goes first; 5 points at flush_points=3 are 2 events"
    points = _points(events)
    assert points == [
        ("loss", 9.0, 0, 500), ("loss", 1.0, 1, 10), ("loss", 2.0, 2, 11),
        ("loss", math.inf, 3, 12), ("loss", -0.0, 4, 13), ("loss", 5.5, 5, 14),
        ("acc", 0.5, 7, 77), ("acc", 0.25, 8, 77),
    ]
    assert math.copysign(1.0, points[4][1]) == -1.0


def test_a_metric_history_without_timestamps_is_stamped_now(tmp_path: Path) -> None:
    import time

    client = _client(tmp_path)
    before = int(time.time() * 1000)
    with client.start_run() as run:
        run.log_metric_history("m", [1.0, 2.0], [0, 1])
    after = int(time.time() * 1000)
    client.close()
    stamps = {p[3] for p in _points(spooled_events(tmp_path / "spool"))}
    assert len(stamps) == 1 and before <= stamps.pop() <= after


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("", [1.0], [0]), "metric key"),
        (("m", ["x"], [0]), "values must be numbers"),
        (("m", "abc", [0, 1, 2]), "values must be numbers"),
        (("m", [1.0], [0.5]), "steps must be integers"),
        (("m", [1.0], [1 << 63]), "steps must be integers within 64 bits"),
        (("m", [1.0, 2.0], [0]), "2 values but 1 steps"),
        (("m", [1.0], None), "steps are required"),
        (("m", [1.0], [0], [1, 2]), "1 values but 2 timestamps"),
        (("m", [1.0], [0], 1 << 64), "timestamp must be ms within 64 bits"),
    ],
)
def test_a_bad_metric_history_is_refused_with_nothing_queued(
    tmp_path: Path, args: tuple[Any, ...], message: str
) -> None:
    client = _client(tmp_path)
    with client.start_run() as run:
        with pytest.raises(InvalidInput, match=message):
            run.log_metric_history(*args)
        assert client.snapshot()["pending_points"] <= 1  # at most the run.created event
    client.close()
    assert _points(spooled_events(tmp_path / "spool")) == []


def test_a_metric_history_counts_towards_the_memory_bound(tmp_path: Path) -> None:
    # As for log_metric: no broker, the spool full, then the caller waits and times out
    # with every point of the call kept (queued before the wait).
    client = _bounded_client(tmp_path)
    run = client.start_run()
    given = 0
    with pytest.raises(BackpressureTimeout, match="nothing was dropped"):
        for call in range(1000):
            given += run.log_metric_history("loss", [1.0] * 1000,
                                            range(call * 1000, call * 1000 + 1000))
    snap = client.snapshot()
    assert snap["spool_full"] and snap["blocked_calls"] >= 1
    client.close(timeout_s=1)
    steps = [p[2] for p in _points(spooled_events(tmp_path / "spool"))]
    # The call that raised had queued its points before it waited: they are in too.
    assert len(steps) == given + 1000
    assert steps == list(range(len(steps))), "in order, none twice"


def test_the_fluent_metric_history_logs_to_the_active_run(tmp_path: Path) -> None:
    runstream.configure(data_dir=tmp_path / "data", spool_dir=tmp_path / "spool",
                        replay_on_start=False)
    with runstream.start_run():
        assert runstream.log_metric_history("loss", [0.5, 0.25], [1, 2]) == 2
    runstream.shutdown()
    assert [p[:3] for p in _points(spooled_events(tmp_path / "spool"))] == [
        ("loss", 0.5, 1), ("loss", 0.25, 2)]


def test_adjacent_histories_of_one_metric_go_as_one_event(tmp_path: Path) -> None:
    # 40 + 40 + 30 points stay queued until the third call wakes the flusher (flush_points
    # pending), which then finds all three: 80 in one event, and the 30 that would pass 100.
    client = _client(tmp_path, flush_points=100, flush_interval_ms=10_000)
    with client.start_run() as run:
        start = 0
        for call, size in enumerate((40, 40, 30)):
            run.log_metric_history("loss", [float(call)] * size, range(start, start + size),
                                   timestamps=1000 + call)
            start += size
        run.log_metric_history("acc", [0.5], [0])
        run.log_metric_history("loss", [9.0], [110], timestamps=[2000])
    client.close()
    events = [e for e in spooled_events(tmp_path / "spool") if isinstance(e, MetricsPacked)]
    assert [(e.body.keys, len(e.body.points())) for e in events] == [
        (["loss"], 80), (["loss"], 30), (["acc"], 1), (["loss"], 1)]
    points = _points(events)
    assert [p[2] for p in points if p[0] == "loss"] == list(range(111))
    assert [p[3] for p in points[:110]] == [1000] * 40 + [1001] * 40 + [1002] * 30
    assert points[-1] == ("loss", 9.0, 110, 2000)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("m", [10**400], [0]), "values must be numbers"),  # an int past float64
        (("m", b"\x00" * 8, [0]), "values must be numbers: a bytes"),
        (("m", [1.0], bytearray(8)), "steps must be integers within 64 bits: a bytearray"),
        (("m", [1.0], [0], True), "not a bool"),
        (("m", [1.0], [0], 1.5), "timestamps must be ms"),
    ],
)
def test_a_metric_history_refuses_what_would_be_misread(
    tmp_path: Path, args: tuple[Any, ...], message: str
) -> None:
    client = _client(tmp_path)
    with client.start_run() as run, pytest.raises(InvalidInput, match=message):
        run.log_metric_history(*args)
    client.close()
    assert _points(spooled_events(tmp_path / "spool")) == []


def test_a_metric_history_takes_numpy_columns_and_scalars(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy", reason="NumPy arrays are one of the column kinds")
    client = _client(tmp_path)
    with client.start_run() as run:
        run.log_metric_history("m", np.array([0.5, np.nan, -np.inf]), np.arange(3, dtype=np.int64),
                               np.int64(7))
        run.log_metric_history("m", np.array([1, 2], dtype=np.int32), np.array([3, 4]),
                               np.array([8, 9]))
        run.log_metric_history("m", np.array([2.0, 4.0])[::-1], [5, 6], 10)  # not contiguous
    client.close()
    points = _points(spooled_events(tmp_path / "spool"))
    assert repr(points) == repr([("m", 0.5, 0, 7), ("m", math.nan, 1, 7), ("m", -math.inf, 2, 7),
                                 ("m", 1.0, 3, 8), ("m", 2.0, 4, 9), ("m", 4.0, 5, 10),
                                 ("m", 2.0, 6, 10)])


class _FailingQueue:
    """Stands in for a run's queue: the append after ``after`` ones raises (a Ctrl-C)."""

    def __init__(self, queue: Any, after: int) -> None:
        self.queue, self.after = queue, after

    def append(self, item: object) -> None:
        if self.after == 0:
            raise KeyboardInterrupt
        self.after -= 1
        self.queue.append(item)


def test_an_interrupted_history_counts_only_what_it_queued(tmp_path: Path) -> None:
    client = _client(tmp_path, flush_points=100, flush_interval_ms=10_000)
    run = client.start_run()
    real = run._q
    run._q = _FailingQueue(real, after=2)  # type: ignore[assignment]
    with pytest.raises(KeyboardInterrupt):
        run.log_metric_history("m", [1.0] * 250, range(250))  # 3 chunks, 2 queued
    run._q = real
    assert client._series_points == 200
    run.end()
    client.close()
    assert client._series_points == 0 and client.snapshot()["pending_points"] == 0
    assert [p[2] for p in _points(spooled_events(tmp_path / "spool"))] == list(range(200))


def test_a_drain_takes_at_most_its_bound_in_points_of_histories(tmp_path: Path) -> None:
    # drain_max is max(8 x flush_points, max_pending_points) = 1000 points here: 5000 points
    # in one call (50 items) leave memory in several drains, not one.
    client = _client(tmp_path, flush_points=100, max_pending_points=1000,
                     flush_interval_ms=10_000)
    with client.start_run() as run:
        run.log_metric_history("m", [1.0] * 5000, range(5000))
    client.close()
    assert client.stats.drains >= 5
    assert len(_points(spooled_events(tmp_path / "spool"))) == 5000
