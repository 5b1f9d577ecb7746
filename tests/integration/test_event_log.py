"""The event log on a real broker: round trips, dead letters, topic settings."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import NewTopic
from runstream.kafka_log import (
    BatchConsumer,
    DeadLetters,
    EventProducer,
    admin_client,
    decode_messages,
    ensure_topics,
)
from runstream.schemas import encode_event
from runstream.settings import Settings

from tests.event_factory import one_of_each

pytestmark = pytest.mark.broker


def _consume_all(bootstrap: str, topic: str, expected: int, timeout_s: float = 30) -> list:
    consumer = BatchConsumer(bootstrap, topic, f"test-{uuid.uuid4().hex}")
    from runstream.kafka_log import partition_count

    consumer.assign_from({}, range(partition_count(bootstrap, topic)))
    got: list = []
    deadline = time.monotonic() + timeout_s
    while len(got) < expected and time.monotonic() < deadline:
        got.extend(consumer.batch(1000, 0.2))
    consumer.close()
    return got


def test_every_event_type_round_trips_through_the_broker(topics: Settings, bootstrap: str) -> None:
    events = one_of_each()
    producer = EventProducer(bootstrap, topics.events_topic)
    positions = producer.publish_and_wait(events)
    assert len(positions) == len(events)
    messages = _consume_all(bootstrap, topics.events_topic, len(events))
    dead = DeadLetters.connect(bootstrap, topics.dead_letter_topic)
    decoded = decode_messages(messages, dead)
    assert not dead.counts
    by_id = {d.event.event_id: d.event for d in decoded}
    assert set(by_id) == {e.event_id for e in events}
    for event in events:
        got = by_id[event.event_id]
        assert type(got) is type(event)
        assert encode_event(got) == encode_event(event)
    # Keyed by run (or experiment): all events of one run share a partition, in order.
    run_events = [d for d in decoded if d.event.run_id]
    assert len({d.position.partition for d in run_events}) == 1
    offsets = [d.position.offset for d in run_events]
    assert offsets == sorted(offsets)


def test_bad_messages_go_to_the_dead_letter_topic_and_the_consumer_goes_on(
    topics: Settings, bootstrap: str
) -> None:
    good = one_of_each()[:2]
    raw = Producer({"bootstrap.servers": bootstrap})
    topic = topics.events_topic
    bad = [
        b"this is not json",
        json.dumps({"schema_version": 1, "type": "run.teleported", "event_id": "x",
                    "event_time_ms": 1, "run_id": "r"}).encode(),
        json.dumps({"schema_version": 99, "type": "run.created", "event_id": "y",
                    "event_time_ms": 1, "run_id": "r"}).encode(),
    ]
    # One partition for everything (same key), so "goes on with the next" is observable.
    raw.produce(topic, key=b"k", value=encode_event(good[0]))
    for payload in bad:
        raw.produce(topic, key=b"k", value=payload)
    raw.produce(topic, key=b"k", value=encode_event(good[1]))
    raw.flush(10)

    messages = _consume_all(bootstrap, topic, 5)
    dead = DeadLetters.connect(bootstrap, topics.dead_letter_topic)
    decoded = decode_messages(messages, dead)
    dead.flush()
    assert [d.event.event_id for d in decoded] == [good[0].event_id, good[1].event_id]
    assert dead.counts == {"invalid_json": 1, "unknown_type": 1, "unknown_major_version": 1}

    letters = _consume_all(bootstrap, topics.dead_letter_topic, 3)
    assert sorted(m.value() for m in letters) == sorted(bad)
    reasons = sorted(dict(m.headers())["runstream.reason"].decode() for m in letters)
    assert reasons == ["invalid_json", "unknown_major_version", "unknown_type"]
    for m in letters:
        headers = dict(m.headers())
        assert headers["runstream.source.topic"].decode() == topic
        assert int(headers["runstream.source.offset"]) >= 1


def test_events_topic_is_kept_forever(topics: Settings, bootstrap: str) -> None:
    from confluent_kafka.admin import ConfigResource

    admin = admin_client(bootstrap)
    res = ConfigResource(ConfigResource.Type.TOPIC, topics.events_topic)
    cfg = admin.describe_configs([res])[res].result(10)
    assert cfg["retention.ms"].value == "-1"
    assert cfg["cleanup.policy"].value == "delete"
    md = admin.list_topics(topic=topics.events_topic, timeout=10)
    assert len(md.topics[topics.events_topic].partitions) == topics.partitions


def test_existing_topic_with_short_retention_is_reported_loudly(
    settings: Settings, bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    admin = admin_client(bootstrap)
    fs = admin.create_topics([NewTopic(settings.events_topic, 2, 1,
                                       config={"retention.ms": "604800000"})])
    fs[settings.events_topic].result(10)
    with caplog.at_level("ERROR"):
        report = ensure_topics(bootstrap, settings.events_topic, settings.dead_letter_topic,
                               partitions=2, replication_factor=1)
    assert settings.events_topic in report.existing
    assert len(report.problems) == 1 and "retention.ms=604800000" in report.problems[0]
    assert "UNSAFE EVENTS TOPIC" in caplog.text


def test_delivery_errors_surface_to_the_caller(bootstrap: str) -> None:
    from runstream.errors import DeliveryError

    producer = EventProducer(bootstrap, f"missing-{uuid.uuid4().hex}", **{"message.timeout.ms": 2000})
    with pytest.raises(DeliveryError):
        producer.publish_and_wait(one_of_each()[:1], timeout_s=20)


def test_raw_consumer_sees_keys(topics: Settings, bootstrap: str) -> None:
    event = next(e for e in one_of_each() if e.type == "run.created")  # keyed by its run
    EventProducer(bootstrap, topics.events_topic).publish_and_wait([event])
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex,
                  "auto.offset.reset": "earliest"})
    c.subscribe([topics.events_topic])
    deadline = time.monotonic() + 20
    msg = None
    while time.monotonic() < deadline:
        msg = c.poll(0.5)
        if msg is not None and msg.error() is None:
            break
    c.close()
    assert msg is not None and msg.key() == event.run_id.encode()
