"""The Kafka adapter: topics, the idempotent event producer, batch consumption, dead letters."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from runstream.errors import DeliveryError, LogError
from runstream.schemas import Event, EventDecodeError, decode_event, encode_event

log = logging.getLogger(__name__)
# librdkafka's own log lines (connection refused while a broker restarts, ...) go through
# Python logging instead of raw stderr; delivery failures reach callers through callbacks.
RDKAFKA_LOGGER = logging.getLogger("runstream.librdkafka")

# The events topic is the system of record: it keeps everything. Kafka's default of seven
# days would silently lose history that a replay needs, and compaction would keep one
# message per key (per run). Cost of keeping it is tiered storage's job.
EVENTS_TOPIC_CONFIG = {
    "retention.ms": "-1",
    "retention.bytes": "-1",
    "cleanup.policy": "delete",
    "max.message.bytes": str(8 * 1024 * 1024),
}
# Dead letters are evidence for an operator; they are kept too.
DEAD_LETTER_TOPIC_CONFIG = {"retention.ms": "-1", "cleanup.policy": "delete"}


@dataclass(frozen=True)
class Position:
    """Where a message sits in the log."""

    partition: int
    offset: int


@dataclass(frozen=True)
class TopicReport:
    """What ``ensure_topics`` found or did, with any retention problem spelled out."""

    created: list[str]
    existing: list[str]
    problems: list[str]


def admin_client(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, "logger": RDKAFKA_LOGGER})


def ensure_topics(
    bootstrap: str,
    events_topic: str,
    dead_letter_topic: str,
    *,
    partitions: int,
    replication_factor: int,
    timeout_s: float = 30.0,
) -> TopicReport:
    """Create the events and dead-letter topics if missing; report unsafe existing settings.

    An existing events topic with a finite retention or compaction is reported loudly
    (logged at ERROR and returned in ``problems``): replaying it would lose history.
    """
    admin = admin_client(bootstrap)
    wanted = {
        events_topic: (partitions, EVENTS_TOPIC_CONFIG),
        dead_letter_topic: (1, DEAD_LETTER_TOPIC_CONFIG),
    }
    futures = admin.create_topics(
        [
            NewTopic(name, num_partitions=n, replication_factor=replication_factor, config=cfg)
            for name, (n, cfg) in wanted.items()
        ],
        request_timeout=timeout_s,
    )
    created, existing = [], []
    for name, future in futures.items():
        try:
            future.result(timeout=timeout_s)
            created.append(name)
        except KafkaException as exc:
            err = exc.args[0]
            if err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                existing.append(name)
            else:
                raise LogError(f"creating topic {name} failed: {err.str()}") from exc
    problems = _retention_problems(admin, events_topic, timeout_s) if existing else []
    for problem in problems:
        log.error("UNSAFE EVENTS TOPIC: %s", problem)
    _wait_for_topic(admin, events_topic, timeout_s)
    return TopicReport(created=created, existing=existing, problems=problems)


def _retention_problems(admin: AdminClient, topic: str, timeout_s: float) -> list[str]:
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    configs = admin.describe_configs([resource])[resource].result(timeout=timeout_s)
    problems = []
    retention = configs.get("retention.ms")
    if retention is not None and int(retention.value) >= 0:
        days = int(retention.value) / 86_400_000
        problems.append(
            f"topic {topic} has retention.ms={retention.value} (~{days:.1f} days): events older "
            "than that are deleted and a replay will silently lose history; "
            f"set retention.ms=-1 (kafka-configs --alter --entity-name {topic} "
            "--add-config retention.ms=-1)"
        )
    policy = configs.get("cleanup.policy")
    if policy is not None and "compact" in policy.value:
        problems.append(
            f"topic {topic} has cleanup.policy={policy.value}: compaction keeps one event per "
            "run and destroys history; use cleanup.policy=delete with retention.ms=-1"
        )
    return problems


def _wait_for_topic(admin: AdminClient, topic: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        md = admin.list_topics(topic=topic, timeout=5)
        t = md.topics.get(topic)
        if (t is not None and t.error is None and t.partitions
                and all(p.leader >= 0 for p in t.partitions.values())):
            return
        time.sleep(0.1)
    raise LogError(f"topic {topic} has no leaders after {timeout_s:.0f}s")


def partition_count(bootstrap: str, topic: str, timeout_s: float = 10.0) -> int:
    try:
        md = admin_client(bootstrap).list_topics(topic=topic, timeout=timeout_s)
    except KafkaException as exc:
        raise LogError(f"cannot read the partitions of {topic} from {bootstrap}: {exc}") from None
    t = md.topics.get(topic)
    if t is None or t.error is not None:
        raise LogError(f"topic {topic} not found on {bootstrap}")
    return len(t.partitions)


def producer_config(bootstrap: str, **overrides: Any) -> dict[str, Any]:
    """Settings of every runstream producer."""
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "logger": RDKAFKA_LOGGER,
        # Idempotence: a retry after a lost ack neither duplicates nor reorders a message
        # within a partition. It implies acks=all and bounded in-flight requests.
        "enable.idempotence": True,
        "acks": "all",
        # Metric batches are repetitive JSON; lz4 is the cheapest codec that still shrinks them.
        "compression.type": "lz4",
        "linger.ms": 5,
        "batch.size": 1_048_576,
        "message.max.bytes": 8 * 1024 * 1024,
    }
    config.update(overrides)
    return config


@dataclass
class _Pending:
    done: threading.Event = field(default_factory=threading.Event)
    position: Position | None = None
    error: str | None = None


class EventProducer:
    """Publishes events keyed by run (or experiment) id; delivery errors reach the caller.

    ``publish`` is asynchronous and reports through an optional callback;
    ``publish_and_wait`` blocks until the broker acknowledged every event and returns
    their positions, or raises :class:`DeliveryError`.
    """

    def __init__(self, bootstrap: str, topic: str, **config_overrides: Any) -> None:
        self.topic = topic
        self._producer = Producer(producer_config(bootstrap, **config_overrides))
        self._failures: list[str] = []
        self._lock = threading.Lock()

    def publish(
        self,
        event: Event,
        on_delivery: Callable[[Position | None, str | None], None] | None = None,
    ) -> None:
        self.publish_raw(event.key, encode_event(event), on_delivery)

    def publish_raw(
        self,
        key: str,
        value: bytes,
        on_delivery: Callable[[Position | None, str | None], None] | None = None,
    ) -> None:
        """Publish an already encoded event (used by the client's spool resend)."""

        def report(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                with self._lock:
                    self._failures.append(err.str())
                if on_delivery:
                    on_delivery(None, err.str())
            elif on_delivery:
                on_delivery(Position(msg.partition(), msg.offset()), None)

        while True:
            try:
                self._producer.produce(self.topic, value=value, key=key, on_delivery=report)
                break
            except BufferError:
                # librdkafka's queue is full: serve delivery reports to make room.
                self._producer.poll(0.05)
            except KafkaException as exc:
                raise LogError(f"cannot publish to {self.topic}: {exc}") from exc
        self._producer.poll(0)

    def publish_and_wait(self, events: Sequence[Event], timeout_s: float = 30.0) -> list[Position]:
        """Publish events and wait for every acknowledgement; positions in event order."""
        pending = [_Pending() for _ in events]
        for event, slot in zip(events, pending, strict=True):

            def done(pos: Position | None, err: str | None, slot: _Pending = slot) -> None:
                slot.position, slot.error = pos, err
                slot.done.set()

            self.publish(event, done)
        deadline = time.monotonic() + timeout_s
        for slot in pending:
            while not slot.done.is_set():
                if time.monotonic() > deadline:
                    raise DeliveryError(f"no acknowledgement from the broker in {timeout_s:.0f}s")
                self._producer.poll(0.01)
        errors = [p.error for p in pending if p.error]
        if errors:
            raise DeliveryError(f"{len(errors)} event(s) not delivered: {errors[0]}")
        return [p.position for p in pending if p.position is not None]

    def poll(self, timeout_s: float = 0.0) -> int:
        return int(self._producer.poll(timeout_s))

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait for every outstanding event; raise if any failed since the last flush."""
        remaining = self._producer.flush(timeout_s)
        with self._lock:
            failures, self._failures = self._failures, []
        if remaining:
            raise DeliveryError(f"{remaining} event(s) still unacknowledged after {timeout_s}s")
        if failures:
            raise DeliveryError(f"{len(failures)} event(s) not delivered: {failures[0]}")

    def __len__(self) -> int:
        return len(self._producer)


@dataclass
class DecodedMessage:
    """A message that parsed as an event, with its position."""

    event: Event
    position: Position


@dataclass
class DeadLetters:
    """Sends messages that are not events to the dead-letter topic, counted by reason.

    Each dead letter keeps the original key and bytes, with headers saying where it came
    from and why, so an operator can inspect, fix and re-publish it.
    """

    producer: Producer
    topic: str
    counts: Counter[str] = field(default_factory=Counter)
    enabled: bool = True
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def connect(cls, bootstrap: str, topic: str) -> DeadLetters:
        return cls(Producer(producer_config(bootstrap)), topic)

    def send(self, msg: Message, reason: str, detail: str) -> None:
        with self._lock:  # the projector's fetch thread and its apply thread both send
            self.counts[reason] += 1
        if not self.enabled:
            return
        headers = [
            ("runstream.source.topic", msg.topic() or ""),
            ("runstream.source.partition", str(msg.partition())),
            ("runstream.source.offset", str(msg.offset())),
            ("runstream.reason", reason),
            ("runstream.detail", detail[:2000]),
        ]
        self.producer.produce(self.topic, value=msg.value(), key=msg.key(), headers=headers)
        self.producer.poll(0)
        log.warning(
            "dead letter %s[%d]@%d: %s: %s",
            msg.topic(),
            msg.partition(),
            msg.offset(),
            reason,
            detail[:200],
        )

    def flush(self, timeout_s: float = 30.0) -> None:
        """Dead letters are durable before the batch's offsets are committed."""
        if self.producer.flush(timeout_s):
            raise DeliveryError("dead letters not acknowledged; the batch will be retried")


def consumer_config(bootstrap: str, group_id: str, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "logger": RDKAFKA_LOGGER,
        "group.id": group_id,
        # Positions live in the read model, written in the same transaction as the changes;
        # Kafka's own commit is advisory, for lag dashboards.
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "fetch.max.bytes": 64 * 1024 * 1024,
        "max.partition.fetch.bytes": 16 * 1024 * 1024,
        "queued.max.messages.kbytes": 256 * 1024,
        "fetch.wait.max.ms": 20,
    }
    config.update(overrides)
    return config


class BatchConsumer:
    """Reads a topic from explicit positions, in batches closed by count or time."""

    def __init__(self, bootstrap: str, topic: str, group_id: str, **overrides: Any) -> None:
        self.topic = topic
        self.bootstrap = bootstrap
        self._consumer = Consumer(consumer_config(bootstrap, group_id, **overrides))

    def assign_from(self, next_offsets: dict[int, int], partitions: Iterable[int]) -> None:
        """Assign every partition, starting at the stored next offset or the beginning."""
        self._consumer.assign(
            [
                TopicPartition(self.topic, p, next_offsets.get(p, OFFSET_BEGINNING))
                for p in partitions
            ]
        )

    def batch(self, max_messages: int, max_wait_s: float) -> list[Message]:
        """Up to ``max_messages`` messages, waiting at most ``max_wait_s`` for the first."""
        try:
            messages = self._consumer.consume(num_messages=max_messages, timeout=max_wait_s)
        except KafkaException as exc:
            raise LogError(f"consuming {self.topic} failed: {exc}") from exc
        good = []
        for msg in messages:
            err = msg.error()
            if err is None:
                good.append(msg)
            elif err.code() == KafkaError._PARTITION_EOF:
                continue
            elif err.fatal():
                raise LogError(f"fatal consumer error: {err.str()}")
            else:
                log.warning("consumer error (retried by librdkafka): %s", err.str())
        return good

    def high_watermarks(self, partitions: Iterable[int], timeout_s: float = 2.0) -> dict[int, int]:
        marks = {}
        for p in partitions:
            _, high = self._consumer.get_watermark_offsets(
                TopicPartition(self.topic, p), timeout=timeout_s
            )
            marks[p] = high
        return marks

    def read_to_end(self, partitions: Iterable[int], idle_timeout_s: float = 30.0,
                    progress: Callable[[int, int], None] | None = None) -> Iterator[Message]:
        """Every message of ``partitions`` from the first offset kept up to the end the topic
        has now, then stop.

        A partition is done when the consumer's position reaches its high watermark, not its
        last message: a transaction marker or a compacted tail holds the last offsets. A
        partition with nothing kept (low = high) is done at once. Nothing arriving for
        ``idle_timeout_s`` (the broker gone) raises LogError instead of waiting forever.
        """
        parts = list(partitions)
        self.assign_from({}, parts)
        marks: dict[int, tuple[int, int]] = {}
        for p in parts:
            try:
                marks[p] = self._consumer.get_watermark_offsets(
                    TopicPartition(self.topic, p), timeout=10)
            except KafkaException as exc:
                raise LogError(f"cannot read the end of {self.topic}[{p}]: {exc}") from None
        pending = {p for p, (low, high) in marks.items() if high > low}
        total = sum(high - low for low, high in marks.values())
        done: dict[int, int] = {}
        last_progress = time.monotonic()
        while pending:
            messages = self.batch(1000, 0.5)
            for msg in messages:
                part, o = msg.partition(), msg.offset()
                if part in pending and o is not None and o < marks[part][1]:
                    done[part] = o + 1 - marks[part][0]
                    yield msg
            if messages:
                last_progress = time.monotonic()
            for tp in self._consumer.position([TopicPartition(self.topic, p) for p in pending]):
                if tp.offset >= marks[tp.partition][1]:
                    pending.discard(tp.partition)
                    done[tp.partition] = marks[tp.partition][1] - marks[tp.partition][0]
            if progress:
                progress(sum(done.values()), total)
            if pending and time.monotonic() - last_progress > idle_timeout_s:
                raise LogError(
                    f"nothing read from {self.topic} for {idle_timeout_s:.0f}s with partitions "
                    f"{sorted(pending)} not at their end; is the broker up?"
                )

    def commit_advisory(self, next_offsets: dict[int, int]) -> None:
        """Tell the group where we are (for lag tools); never used to resume."""
        if not next_offsets:
            return
        try:
            self._consumer.commit(
                offsets=[TopicPartition(self.topic, p, o) for p, o in next_offsets.items()],
                asynchronous=True,
            )
        except KafkaException as exc:
            log.debug("advisory commit failed: %s", exc)

    def close(self) -> None:
        self._consumer.close()


def decode_messages(
    messages: Sequence[Message], dead_letters: DeadLetters
) -> list[DecodedMessage]:
    """Parse each message; send the ones that are not events to the dead-letter topic."""
    decoded = []
    for msg in messages:
        try:
            event = decode_event(msg.value() or b"")
        except EventDecodeError as exc:
            dead_letters.send(msg, exc.reason, exc.detail)
            continue
        decoded.append(DecodedMessage(event, Position(msg.partition(), msg.offset())))
    return decoded
