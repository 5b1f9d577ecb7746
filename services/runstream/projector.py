"""The projector loop: Kafka batches -> projections -> one DuckDB transaction with the offsets."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

import duckdb
from confluent_kafka import Message

from runstream.errors import LogError
from runstream.kafka_log import (
    BatchConsumer,
    DeadLetters,
    DecodedMessage,
    Position,
    decode_messages,
    partition_count,
)
from runstream.projections import layout
from runstream.projections.apply_events import (
    BatchResult,
    Rejected,
    apply_batch,
    refresh_run_records,
    stale_run_records,
)

log = logging.getLogger(__name__)


class ProjectionTarget(Protocol):
    """Where a projector writes: the node's store, or a rebuild's new file."""

    def cursor(self) -> Any: ...

    def writing(self) -> AbstractContextManager[Any]: ...

    def next_offsets(self, topic: str) -> dict[int, int]: ...


@dataclass
class ProjectorStats:
    batches: int = 0
    events: int = 0
    points: int = 0
    duplicates: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    last_batch_at: float = 0.0
    clusterings: int = 0  # key/value tables rewritten in key order (projections.layout)
    clustering_s: float = 0.0  # the time they took, the projector applying nothing meanwhile
    records_refreshed: int = 0  # run_records documents rewritten (refresh_records)
    records_s: float = 0.0  # the time that took
    records_failures: int = 0  # refreshes that failed (retried after RECORDS_REFRESH_BEHIND_S)


# How often the projector looks whether a key/value table needs re-clustering (3 row counts).
LAYOUT_CHECK_S = 2.0
# How often, at most, the projector rewrites the run_records documents of changed runs while
# it keeps up with the log, and while it catches up (the replay of a long log is not slowed by
# documents of runs it is about to change again); how many at most in one transaction (newest
# runs first).
RECORDS_REFRESH_S = 1.0
RECORDS_REFRESH_BEHIND_S = 30.0
RECORDS_REFRESH_MAX = 5000


class Projector:
    """Consumes the events topic into the read model with exactly-once effect.

    Each batch is applied in one DuckDB transaction that also stores every partition's
    next offset; on start the loop seeks to those stored offsets, not to the consumer
    group's. A crash anywhere therefore leaves the read model equal to a replay of the
    log up to the stored offsets.
    """

    def __init__(
        self,
        store: ProjectionTarget,
        bootstrap: str,
        topic: str,
        dead_letter_topic: str,
        *,
        group_id: str = "runstream-projector",
        batch_max_messages: int = 2000,
        batch_max_ms: int = 50,
        send_dead_letters: bool = True,
    ) -> None:
        self.store = store
        self.topic = topic
        self.bootstrap = bootstrap
        self.batch_max_messages = batch_max_messages
        self.batch_max_s = batch_max_ms / 1000
        self.consumer = BatchConsumer(bootstrap, topic, group_id)
        self.dead_letters = DeadLetters.connect(bootstrap, dead_letter_topic)
        # A rebuild replays messages the live projector already dead-lettered: count only.
        self.dead_letters.enabled = send_dead_letters
        self.stats = ProjectorStats()
        self.partitions = list(range(partition_count(bootstrap, topic)))
        self._applied: dict[int, int] = store.next_offsets(topic)
        self._high: dict[int, int] = {}
        self._high_checked = 0.0
        self._layout_checked = 0.0
        self._records_refreshed = time.monotonic()  # a replay starts behind: none for 30 s
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.consumer.assign_from(self._applied, self.partitions)

    # -------------------------------------------------------------- life cycle

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="projector", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self.consumer.close()
        self.dead_letters.flush(5)

    @property
    def running(self) -> bool:
        """Whether the background thread started by :meth:`start` is alive."""
        return self._thread is not None and self._thread.is_alive()

    def caught_up_with(self, high: dict[int, int]) -> bool:
        """Whether every partition is applied up to the given high watermarks."""
        applied = self.applied_offsets()
        return all(applied.get(p, 0) >= h for p, h in high.items())

    def run_until(self, high: dict[int, int], progress: Any = None) -> None:
        """Apply batches in the caller's thread until caught up with ``high``."""

        def done() -> bool:
            if progress is not None:
                progress(self.applied_offsets(), high)
            return self.caught_up_with(high)

        self._pipelined(done)

    def run(self) -> None:
        try:
            self._pipelined(self._stop.is_set)
        except Exception as exc:  # surfaced through /health, never swallowed
            self.error = exc
            log.exception("projector stopped")
            with self._cond:
                self._cond.notify_all()
            raise

    def _pipelined(self, finished: Callable[[], bool]) -> None:
        """Fetch and decode the next batch in a second thread while this one applies.

        Consuming and parsing is Python work; DuckDB's apply releases the GIL, so on two
        cores the two overlap. Batches a stopped reader fetched but nobody applied are not
        lost: the consumer is re-positioned at the applied offsets afterwards.
        """
        handoff: queue.Queue[Any] = queue.Queue(maxsize=2)
        stop = threading.Event()

        def reader() -> None:
            try:
                while not stop.is_set():
                    item = self._fetch()
                    while not stop.is_set():
                        try:
                            handoff.put(item, timeout=0.1)
                            break
                        except queue.Full:
                            continue
            except BaseException as exc:  # handed to the applying thread, raised there
                handoff.put(exc)

        thread = threading.Thread(target=reader, name="projector-fetch", daemon=True)
        thread.start()
        try:
            while not finished():
                try:
                    item = handoff.get(timeout=0.2)
                except queue.Empty:
                    continue
                if isinstance(item, BaseException):
                    raise item
                self.step(item)
        finally:
            stop.set()
            thread.join()
            self.consumer.assign_from(self.applied_offsets(), self.partitions)

    # ---------------------------------------------------------------- one batch

    def _fetch(self) -> tuple[list[Message], list[DecodedMessage]]:
        messages = self.consumer.batch(self.batch_max_messages, self.batch_max_s)
        self._refresh_high_watermarks()
        return messages, decode_messages(messages, self.dead_letters) if messages else []

    def step(self, fetched: tuple[list[Message], list[DecodedMessage]] | None = None) -> int:
        """Apply one batch (fetched here unless given); return the number of messages."""
        messages, decoded = fetched if fetched is not None else self._fetch()
        if not messages:
            self.refresh_records()
            return 0
        next_offsets = _next_offsets(messages)
        lettered: set[str] = set()  # event ids already dead-lettered while applying
        result = self._apply(messages, decoded, next_offsets, lettered)
        by_id = {d.event.event_id: d for d in decoded} if result.rejected else {}
        for rejected in result.rejected:
            origin = by_id.get(rejected.event.event_id)
            self.stats.rejected[rejected.reason] += 1
            if origin is not None and rejected.event.event_id not in lettered:
                self._dead_letter_event(messages, origin, rejected.reason)
        self.stats.batches += 1
        self.stats.events += result.applied
        self.stats.points += result.points
        self.stats.duplicates += result.duplicates
        self.stats.last_batch_at = time.time()
        with self._cond:
            self._applied.update(next_offsets)
            self._cond.notify_all()
        self.consumer.commit_advisory(next_offsets)
        self._keep_layout()
        self.refresh_records()
        return len(messages)

    def _behind(self) -> bool:
        """Whether the log holds more than a batch beyond what is applied, by the high
        watermarks last read (at most a second old): a live projector keeping up has the
        batch the reader fetched meanwhile waiting, no more."""
        applied = self.applied_offsets()
        lag = sum(max(0, high - applied.get(p, 0)) for p, high in self._high.items())
        return lag > self.batch_max_messages

    def refresh_records(self, *, force: bool = False) -> int:
        """Rewrite the run_records documents of runs changed since theirs were made (up to
        RECORDS_REFRESH_MAX, in one transaction); returns how many. Done every
        RECORDS_REFRESH_S at most, or RECORDS_REFRESH_BEHIND_S while behind the log, unless
        ``force``. Until then readers make those records from the tables."""
        now = time.monotonic()
        since = now - self._records_refreshed
        if not force and (since < RECORDS_REFRESH_S
                          or (since < RECORDS_REFRESH_BEHIND_S and self._behind())):
            return 0  # the clock first: the lag is summed only once a refresh could be due
        self._records_refreshed = now
        started = time.perf_counter()
        try:
            with self.store.writing() as w:
                keys = stale_run_records(w, RECORDS_REFRESH_MAX)
                if keys:
                    refresh_run_records(w, keys)
        except Exception as exc:  # noqa: BLE001 - a chore must not stop the log
            if not blames_an_event(exc):
                raise  # the store itself: as for a batch
            # Readers make these records from the tables meanwhile; try again later, once
            # every RECORDS_REFRESH_BEHIND_S, not every second with a stack trace each time.
            self.stats.records_failures += 1
            self._records_refreshed = now + RECORDS_REFRESH_BEHIND_S - RECORDS_REFRESH_S
            log.exception("could not refresh run records (failure %d; next try in %.0f s)",
                          self.stats.records_failures, RECORDS_REFRESH_BEHIND_S)
            return 0
        self.stats.records_refreshed += len(keys)
        self.stats.records_s += time.perf_counter() - started
        return len(keys)

    def settle_records(self) -> None:
        """Refresh every stale run_records document now (after a replay, before serving)."""
        while self.refresh_records(force=True) == RECORDS_REFRESH_MAX:
            pass

    def _keep_layout(self, force: bool = False) -> None:
        """Re-sort the key/value tables whose unsorted tail has grown (projections.layout),
        each in its own transaction; checked every LAYOUT_CHECK_S at most."""
        now = time.monotonic()
        if not force and now - self._layout_checked < LAYOUT_CHECK_S:
            return
        self._layout_checked = now
        cur = self.store.cursor()
        try:
            due = layout.due(cur)
        finally:
            cur.close()
        for table in due:
            started = time.perf_counter()
            try:
                with self.store.writing() as w:
                    rows = layout.cluster(w, table)
            except Exception:  # noqa: BLE001 - a layout chore must not stop the log
                log.exception("could not re-sort %s by key", table)
                continue
            took = time.perf_counter() - started
            self.stats.clusterings += 1
            self.stats.clustering_s += took
            log.info("re-sorted %s by key: %d rows in %.2fs", table, rows, took)

    def _apply(
        self, messages: list[Message], decoded: list[DecodedMessage],
        next_offsets: dict[int, int], lettered: set[str],
    ) -> BatchResult:
        try:
            with self.store.writing() as cur:
                result = apply_batch(cur, [d.event for d in decoded])
                _store_offsets(cur, self.topic, next_offsets)
                # Dead letters are durable before the offsets that skip them commit.
                self.dead_letters.flush()
            return result
        except Exception as exc:
            if not blames_an_event(exc):
                raise  # the store or the broker: stop, skip nothing, retry on restart
        # One bad event must not stop the log (a batch of one included, or the projector
        # would meet it again at every restart): apply one event per transaction and
        # dead-letter the one that fails on its own.
        return self._apply_one_by_one(messages, decoded, next_offsets, lettered)

    def _apply_one_by_one(
        self, messages: list[Message], decoded: list[DecodedMessage],
        next_offsets: dict[int, int], lettered: set[str],
    ) -> BatchResult:
        """Each event in a transaction of its own with its offset. An event that fails is
        dead-lettered (and the letter acknowledged) and recorded in rejected_events in the
        transaction that stores the offset skipping it, before the next event: whatever
        stops this loop, no offset is stored past an event that is neither applied nor on
        record."""
        total = BatchResult()
        for item in decoded:
            after = {item.position.partition: item.position.offset + 1}
            try:
                with self.store.writing() as cur:
                    r = apply_batch(cur, [item.event])
                    _store_offsets(cur, self.topic, after)
                    self.dead_letters.flush()  # letters of messages this offset skips
            except Exception as exc:
                if not blames_an_event(exc):
                    raise
                log.exception("event %s cannot be applied", item.event.event_id)
                reason = f"apply_error:{type(exc).__name__}"
                self._skip(messages, item, reason, after)
                lettered.add(item.event.event_id)
                total.rejected.append(Rejected(item.event, reason))
                continue
            total.applied += r.applied
            total.points += r.points
            total.duplicates += r.duplicates
            total.rejected.extend(r.rejected)
        with self.store.writing() as cur:
            _store_offsets(cur, self.topic, next_offsets)
            self.dead_letters.flush()
        return total

    def _skip(self, messages: list[Message], item: DecodedMessage, reason: str,
              after: dict[int, int]) -> None:
        """Dead-letter one event and store the offset past it, with its rejected_events row."""
        self._dead_letter_event(messages, item, reason)
        self.dead_letters.flush()
        with self.store.writing() as cur:
            cur.execute(
                "INSERT INTO rejected_events VALUES (?, ?, ?, ?, ?, ?)",
                [item.event.event_id, getattr(item.event, "type", None), item.event.run_id,
                 reason, item.position.partition, item.position.offset],
            )
            _store_offsets(cur, self.topic, after)

    def _dead_letter_event(
        self, messages: list[Message], origin: DecodedMessage, reason: str
    ) -> None:
        for msg in messages:
            if msg.partition() == origin.position.partition and msg.offset() == origin.position.offset:
                self.dead_letters.send(msg, reason, f"event {origin.event.event_id} not applied")
                return

    # ----------------------------------------------------------- positions, lag

    def applied_offsets(self) -> dict[int, int]:
        with self._cond:
            return dict(self._applied)

    def wait_for(self, positions: list[Position], timeout_s: float) -> bool:
        """Block until every position is applied (read-your-writes); False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                if all(self._applied.get(p.partition, 0) > p.offset for p in positions):
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.error is not None:
                    return False
                self._cond.wait(remaining)

    def _refresh_high_watermarks(self) -> None:
        now = time.monotonic()
        if now - self._high_checked < 1.0:
            return
        self._high_checked = now
        try:
            self._high = self.consumer.high_watermarks(self.partitions, timeout_s=1.0)
        except Exception as exc:  # noqa: BLE001 - lag is informative only
            log.debug("high watermarks unavailable: %s", exc)

    def lag(self) -> dict[str, object]:
        applied = self.applied_offsets()
        partitions = {}
        total = 0
        for p in self.partitions:
            high = self._high.get(p)
            done = applied.get(p, 0)
            lag = None if high is None else max(0, high - done)
            total += lag or 0
            partitions[str(p)] = {
                "next_offset": done,
                "last_applied_offset": done - 1 if done else None,
                "high_watermark": high,
                "lag": lag,
            }
        return {"total": total, "partitions": partitions}


# Only errors about the data being written are blamed on an event: DuckDB's DataError
# (conversion, out of range) and IntegrityError (constraints), and exceptions of Python code
# meeting an unforeseen event (ValueError, KeyError, ...). Everything else DuckDB raises
# (I/O, memory, transactions, a catalog or binder error of our own SQL) and failures of the
# machine or the broker stop the projector rather than dead-letter good events: /health
# says why, and a restart resumes from the stored offsets.
_EVENT_ERRORS: tuple[type[BaseException], ...] = (duckdb.DataError, duckdb.IntegrityError)
_ENVIRONMENT_ERRORS: tuple[type[BaseException], ...] = (
    duckdb.Error, LogError, OSError, MemoryError,
)


def blames_an_event(exc: BaseException) -> bool:
    """Whether a failure while applying a batch is the fault of an event in it."""
    if isinstance(exc, _EVENT_ERRORS):
        return True
    return isinstance(exc, Exception) and not isinstance(exc, _ENVIRONMENT_ERRORS)


def _next_offsets(messages: list[Message]) -> dict[int, int]:
    nxt: dict[int, int] = {}
    for msg in messages:
        p, o = msg.partition(), msg.offset()
        if o + 1 > nxt.get(p, -1):
            nxt[p] = o + 1
    return nxt


def _store_offsets(cur: Any, topic: str, next_offsets: dict[int, int]) -> None:
    # Offsets only grow (a batch's are above the stored ones), so replacing the rows is
    # enough; two plain statements cost a fraction of one upsert per partition.
    partitions = list(next_offsets)
    cur.execute(
        "DELETE FROM projector_offsets WHERE topic = ? AND partition IN (SELECT unnest(?))",
        [topic, partitions],
    )
    cur.execute(
        "INSERT INTO projector_offsets SELECT ?, unnest(?), unnest(?)",
        [topic, partitions, [next_offsets[p] for p in partitions]],
    )
