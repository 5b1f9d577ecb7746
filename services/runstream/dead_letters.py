"""Reading the dead-letter topic, and re-driving its messages into the events topic.

A projector dead-letters what it cannot apply, with the original key and bytes and headers
saying where the message came from and why (``kafka_log.DeadLetters``). Some reasons are
fixed by upgrading the consumer: an event type of a newer minor (``unknown_type``) or a
newer major (``unknown_major_version``) that an older projector met, say when clients were
upgraded before projectors. Once the projectors know it, ``runstream dead-letters redrive``
publishes those messages again, unchanged, to the events topic.

Re-driving is safe to repeat: each message keeps its event id, and a projector skips ids it
already applied. A message that still cannot be applied is dead-lettered again, with its
new position as the source; a re-drive sends equal messages once.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Producer

from runstream.errors import DeliveryError
from runstream.kafka_log import BatchConsumer, partition_count, producer_config

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class DeadLetter:
    partition: int  # in the dead-letter topic
    offset: int
    key: bytes | None
    value: bytes
    reason: str
    detail: str
    source_topic: str
    source_partition: int | None
    source_offset: int | None

    @property
    def source(self) -> str:
        """Where the message was when it was dead-lettered: ``topic[partition]@offset``."""
        return f"{self.source_topic}[{self.source_partition}]@{self.source_offset}"


def _header(headers: Any, name: str) -> str:
    """A header's text; ``headers`` is what ``Message.headers()`` returns (pairs, or None)."""
    pairs = headers.items() if isinstance(headers, dict) else headers or ()
    for key, value in pairs:
        if key == name:
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else value or ""
    return ""


def _int_or_none(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def read_dead_letters(
    bootstrap: str, topic: str, progress: Progress | None = None
) -> Iterator[DeadLetter]:
    """Every message of the dead-letter topic up to its current end, partition by partition
    in offset order (the topic is read from the start; nothing is committed)."""
    consumer = BatchConsumer(bootstrap, topic, "runstream-dead-letters")
    try:
        for msg in consumer.read_to_end(range(partition_count(bootstrap, topic)),
                                        progress=progress):
            headers = msg.headers()
            yield DeadLetter(
                partition=msg.partition() or 0,
                offset=msg.offset() or 0,
                key=msg.key(),
                value=msg.value() or b"",
                reason=_header(headers, "runstream.reason") or "unknown",
                detail=_header(headers, "runstream.detail"),
                source_topic=_header(headers, "runstream.source.topic"),
                source_partition=_int_or_none(_header(headers, "runstream.source.partition")),
                source_offset=_int_or_none(_header(headers, "runstream.source.offset")),
            )
    finally:
        consumer.close()


@dataclass
class Redrive:
    """What a re-drive found and did."""

    matched: Counter[str]  # letters of the chosen reasons, by reason
    skipped: Counter[str]  # letters of other reasons, by reason
    repeats: int = 0  # letters of a source message already re-driven in this pass
    sent: int = 0


def _produce(producer: Producer, topic: str, letter: DeadLetter, report: Callable[..., None],
             origin: str) -> None:
    """Queue one message, waiting for room when librdkafka's local queue is full."""
    while True:
        try:
            producer.produce(topic, value=letter.value, key=letter.key, on_delivery=report,
                             headers=[("runstream.redriven.from", origin)])
            break
        except BufferError:
            producer.poll(0.1)
    producer.poll(0)


def redrive(
    bootstrap: str,
    dead_letter_topic: str,
    events_topic: str,
    reasons: Collection[str],
    *,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> Redrive:
    """Publish the dead letters of ``reasons`` to ``events_topic``, unchanged (key, bytes), in
    their dead-letter order, once per source message; with ``dry_run``, only count them."""
    wanted = set(reasons)
    result = Redrive(Counter(), Counter())
    producer = None if dry_run else Producer(producer_config(bootstrap))
    failures: list[str] = []

    def report(err: object, _msg: object) -> None:
        if err is not None:
            failures.append(str(err))

    done: set[tuple[bytes | None, bytes]] = set()
    for letter in read_dead_letters(bootstrap, dead_letter_topic, progress):
        if letter.reason not in wanted:
            result.skipped[letter.reason] += 1
            continue
        result.matched[letter.reason] += 1
        # The same message dead-lettered more than once (a projector that stopped before
        # committing the batch that skipped it, or a letter re-driven before and refused
        # again) goes once: letters keep the message's bytes, so equal bytes are a repeat.
        digest = (letter.key, hashlib.sha256(letter.value).digest())
        if digest in done:
            result.repeats += 1
            continue
        done.add(digest)
        if producer is not None:
            _produce(producer, events_topic, letter, report,
                     f"{dead_letter_topic}[{letter.partition}]@{letter.offset}")
        result.sent += 1
    if producer is not None and (producer.flush(120) or failures):
        raise DeliveryError(
            f"re-drive not acknowledged by the broker ({len(failures)} failed"
            + (f": {failures[0]}" if failures else ", timed out") + "); running it again is safe"
        )
    return result
