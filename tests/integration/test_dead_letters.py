"""`runstream dead-letters`: list the dead-letter topic, re-drive letters a newer projector can
apply, through the real broker and a query node's projector."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from confluent_kafka import Producer
from runstream.cli import main as cli_main
from runstream.kafka_log import BatchConsumer, partition_count, producer_config
from runstream.node import QueryNode
from runstream.schemas import encode_event
from runstream.settings import Settings

from tests.event_factory import packed_metrics, run_created
from tests.integration.test_client import wait_for_rows, wait_until

pytestmark = pytest.mark.broker

RUN = "redriven-run-0001"


@pytest.fixture
def node(settings: Settings, bootstrap: str) -> Iterator[QueryNode]:
    n = QueryNode.open(settings, bootstrap)
    yield n
    n.close()


def _events_end(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = BatchConsumer(bootstrap, topic, "test-dead-letters")
    try:
        return consumer.high_watermarks(range(partition_count(bootstrap, topic)))
    finally:
        consumer.close()


def _letter(producer: Producer, settings: Settings, value: bytes, reason: str, offset: int) -> None:
    """A dead letter as a projector writes it (kafka_log.DeadLetters.send)."""
    producer.produce(settings.dead_letter_topic, value=value, key=RUN.encode(), headers=[
        ("runstream.source.topic", settings.events_topic),
        ("runstream.source.partition", "0"),
        ("runstream.source.offset", str(offset)),
        ("runstream.reason", reason),
        ("runstream.detail", f"as an older projector saw it: {reason}"),
    ])


def test_dead_letters_are_listed_and_the_redrivable_ones_applied_once(
    node: QueryNode, settings: Settings, bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = ["--bootstrap", bootstrap, "--topic-prefix", settings.topic_prefix,
             "--data-dir", str(settings.data_dir)]
    # What a projector of an older minor dead-lettered: events it did not know yet, one of
    # them twice (it stopped before committing the batch that skipped it), and a message
    # that is not an event at all.
    points = encode_event(packed_metrics(RUN, [("loss", 0.5, 0, 1), ("loss", 0.25, 1, 2)]))
    producer = Producer(producer_config(bootstrap))
    _letter(producer, settings, encode_event(run_created(RUN)), "unknown_type", 10)
    _letter(producer, settings, points, "unknown_type", 11)
    _letter(producer, settings, points, "unknown_type", 11)
    _letter(producer, settings, b"{not json", "invalid_json", 12)
    assert producer.flush(30) == 0

    assert cli_main(["dead-letters", "list", *flags]) == 0
    out = capsys.readouterr().out
    assert f"4 dead letter(s) in {settings.dead_letter_topic}" in out
    assert "unknown_type: 3   (re-drivable)" in out and "invalid_json: 1\n" in out
    assert f"{settings.events_topic}[0]@12: as an older projector saw it: invalid_json" in out

    before = _events_end(bootstrap, settings.events_topic)
    assert cli_main(["dead-letters", "redrive", "--dry-run", *flags]) == 0
    out = capsys.readouterr().out
    assert "would re-drive 2 message(s) of reason unknown_major_version, unknown_type" in out
    assert "1 more letter(s) repeated a source message already re-driven" in out
    assert "left alone: 1 of reason invalid_json" in out
    assert _events_end(bootstrap, settings.events_topic) == before, "a dry run publishes nothing"

    assert cli_main(["dead-letters", "redrive", *flags]) == 0
    assert "re-drove 2 message(s)" in capsys.readouterr().out
    wait_for_rows(node, "SELECT count, latest_value FROM metric_summary WHERE run_id = ?",
                  [(2, 0.25)], params=[RUN])

    # Again: the same event ids reach the projector, which skips them.
    duplicates = node.projector.stats.duplicates
    assert cli_main(["dead-letters", "redrive", "--reason", "unknown_type", *flags]) == 0
    assert "re-drove 2 message(s) of reason unknown_type" in capsys.readouterr().out
    wait_until(lambda: node.projector.stats.duplicates >= duplicates + 2, 60, "skipped resends")
    wait_for_rows(node, "SELECT count(*) FROM runs WHERE run_id = ?", [(1,)], params=[RUN])
    wait_for_rows(node, "SELECT count FROM metric_summary WHERE run_id = ?", [(2,)], params=[RUN])
    with node.store.reading() as cur:
        assert cur.execute("SELECT count(*) FROM rejected_events").fetchone() == (0,)
