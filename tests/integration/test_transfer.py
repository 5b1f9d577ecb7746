"""Copy between deployments: export from one log, import into another, twice."""

from __future__ import annotations

import gzip
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from runstream.errors import InvalidInput
from runstream.kafka_log import BatchConsumer, EventProducer, Position
from runstream.node import QueryNode
from runstream.schemas import ExperimentCreated, ExperimentCreatedBody
from runstream.schemas.ids import experiment_id_for_name
from runstream.settings import Settings
from runstream.transfer import Selection, export_events, import_events, read_export

from tests.event_factory import ev, metrics, params, run_created

pytestmark = pytest.mark.broker


def _counts(node: QueryNode) -> dict[str, int]:
    with node.store.reading() as cur:
        return {t: cur.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("runs", "params", "metric_history", "experiments")}


def test_export_then_import_twice_gives_each_run_once(
    topics: Settings, bootstrap: str, tmp_path: Path
) -> None:
    exp = experiment_id_for_name("transfer-me")
    chosen = [ev(ExperimentCreated, ExperimentCreatedBody(name="transfer-me"), experiment_id=exp)]
    for i in range(3):
        chosen += [run_created(f"t{i}", exp, exp_name="transfer-me"), params(f"t{i}", {"a": str(i)}),
                   metrics(f"t{i}", [("m", float(s), s, s) for s in range(10)])]
    other = [run_created("other"), metrics("other", [("m", 1.0, 0, 0)])]
    EventProducer(bootstrap, topics.events_topic).publish_and_wait(chosen + other)

    out = tmp_path / "export.jsonl.gz"
    n = export_events(bootstrap, topics.events_topic, out, Selection(experiment_ids=frozenset({exp})))
    assert n == len(chosen)
    assert len(gzip.decompress(out.read_bytes()).splitlines()) == n

    target = topics.model_copy(update={"topic_prefix": f"t{uuid.uuid4().hex[:10]}",
                                       "data_dir": tmp_path / "target"})
    node = QueryNode.open(target, bootstrap)
    try:
        for _ in range(2):
            assert import_events(bootstrap, target.events_topic, out) == n
            # Ask the log's end with a consumer of our own: the projector's is busy in its
            # fetch thread, and librdkafka consumers are not to be shared across threads.
            probe = BatchConsumer(bootstrap, target.events_topic, "test-probe")
            high = probe.high_watermarks(node.projector.partitions)
            probe.close()
            assert node.projector.wait_for([Position(p, h - 1) for p, h in high.items() if h], 60)
        counts = _counts(node)
        assert counts["runs"] == 3 and counts["params"] == 3 and counts["metric_history"] == 30
        assert counts["experiments"] == 2  # Default + transfer-me
        assert node.projector.stats.duplicates == n
    finally:
        node.close()


def test_a_bad_export_file_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"schema_version": 1}\nnot json\n')
    with pytest.raises(InvalidInput, match="line 1"):
        read_export(bad)
    with pytest.raises(InvalidInput, match="no such file"):
        read_export(tmp_path / "missing.jsonl")
    garbage = tmp_path / "garbage.jsonl.gz"
    garbage.write_bytes(b"not gzip at all")
    with pytest.raises(InvalidInput, match="not a runstream export"):
        read_export(garbage)


def test_cli_import_reports_a_bad_file_clearly(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{}\n")
    proc = subprocess.run([sys.executable, "-m", "runstream.cli", "import", str(bad),
                           "--bootstrap", "127.0.0.1:1"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "line 1" in proc.stderr and "Traceback" not in proc.stderr
