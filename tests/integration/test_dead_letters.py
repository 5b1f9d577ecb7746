"""`runstream dead-letters`: list the dead-letter topic, re-drive letters a newer projector can
apply, through the real broker and a query node's projector."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from confluent_kafka import Producer
from runstream.cli import main as cli_main
from runstream.dead_letters import read_dead_letters
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
    assert "1 more letter(s) repeated a message already re-driven" in out
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


@pytest.mark.timeout(120)
def test_reading_the_dead_letters_ends_at_a_transaction_marker(
    topics: Settings, bootstrap: str
) -> None:
    """The topic's last offset is a commit marker, not a message: reading stops all the same
    (it used to wait for a message at that offset forever)."""
    producer = Producer(producer_config(bootstrap, **{"transactional.id": f"t-{RUN}"}))
    producer.init_transactions(30)
    producer.begin_transaction()
    _letter(producer, topics, b"{not json", "invalid_json", 1)
    producer.commit_transaction(30)
    end = _events_end(bootstrap, topics.dead_letter_topic)
    assert sum(end.values()) == 2, "one letter and its commit marker"
    letters = list(read_dead_letters(bootstrap, topics.dead_letter_topic))
    assert [d.reason for d in letters] == ["invalid_json"]


def test_a_letter_refused_again_is_redriven_once_per_pass(
    node: QueryNode, settings: Settings, bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = ["--bootstrap", bootstrap, "--topic-prefix", settings.topic_prefix,
             "--data-dir", str(settings.data_dir)]
    future = json.dumps({"schema_version": 1, "schema_minor": 9, "event_id": "f" * 32,
                         "event_time_ms": 1, "run_id": RUN, "type": "metrics.future",
                         "body": {}}).encode()
    producer = Producer(producer_config(bootstrap))
    _letter(producer, settings, future, "unknown_type", 5)
    assert producer.flush(30) == 0
    for expected_letters in (2, 3):
        assert cli_main(["dead-letters", "redrive", *flags]) == 0
        assert "re-drove 1 message(s)" in capsys.readouterr().out
        # This projector does not know the type either: it dead-letters the message again.
        wait_until(lambda n=expected_letters: len(list(read_dead_letters(
            bootstrap, settings.dead_letter_topic))) == n, 60, "the letter refused again")
    letters = list(read_dead_letters(bootstrap, settings.dead_letter_topic))
    assert {d.value for d in letters} == {future}
    assert [d.source_topic for d in letters[1:]] == [settings.events_topic] * 2


def test_a_missing_topic_or_broker_is_a_clear_error(
    bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for action in ("list", "redrive"):
        assert cli_main(["dead-letters", action, "--bootstrap", bootstrap,
                         "--topic-prefix", "no-such-prefix"]) == 2
        err = capsys.readouterr().err
        assert "runstream: error: topic no-such-prefix" in err and "not found" in err, err
    assert cli_main(["dead-letters", "list", "--bootstrap", "127.0.0.1:1",
                     "--topic-prefix", "x"]) == 2
    assert "runstream: error: cannot read the partitions of x." in capsys.readouterr().err
