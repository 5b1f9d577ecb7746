"""Sends spooled records to Kafka in spool order and moves the ack offsets.

The sender walks a list of :class:`~runstream.client.spool.Segment` from a cursor,
producing each record with the idempotent producer, at most ``window`` records/bytes
unacknowledged at a time. A delivery report moves the contiguous acked prefix; the spool
deletes a segment once all of it is acked.

Failures. A record not acknowledged within ``message.timeout.ms`` (or any other delivery
error) switches the sender to recovery: it produces nothing new, waits until every record
in flight has its report, then rewinds the cursor to the first record not acknowledged
and sends again, in spool order, the same bytes (records acknowledged meanwhile are
skipped). A record that did reach the log before its ack was lost is sent twice; the
projector skips the second copy by event id.

Order. Within a partition the idempotent producer keeps order, except that a timed-out
record can leave a gap that later records of the same key fill first. A record flagged
``FLAG_BARRIER`` (``run.created``) is therefore sent alone: nothing after it is produced
until it is acknowledged, so no event of a run can reach the log before the run exists.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from runstream.client.spool import FLAG_BARRIER, Segment
from runstream.kafka_log import producer_config

log = logging.getLogger(__name__)
# librdkafka's own lines (connection refused, ...) are noise in a training job's output:
# the client reports outages itself, once. Set this logger to DEBUG to see them.
RDKAFKA_CLIENT_LOGGER = logging.getLogger("runstream.client.librdkafka")
if RDKAFKA_CLIENT_LOGGER.level == logging.NOTSET:
    RDKAFKA_CLIENT_LOGGER.setLevel(logging.CRITICAL)

_PENDING, _OK, _FAILED = 0, 1, 2
_OUTAGE_CODES = {KafkaError._ALL_BROKERS_DOWN}


def client_producer_config(bootstrap: str, delivery_timeout_ms: int, **extra: Any) -> dict[str, Any]:
    """The shared producer settings, tuned so a training job notices an outage in seconds."""
    return producer_config(
        bootstrap,
        logger=RDKAFKA_CLIENT_LOGGER,
        # A record not acknowledged by then is reported failed and re-sent from the spool.
        **{
            "message.timeout.ms": delivery_timeout_ms,
            "request.timeout.ms": min(delivery_timeout_ms, 30_000),
            "socket.connection.setup.timeout.ms": min(delivery_timeout_ms, 10_000),
            # Reconnect quickly when a broker comes back (librdkafka's default backs off to 10 s).
            "reconnect.backoff.ms": 100,
            "reconnect.backoff.max.ms": 1000,
            "retry.backoff.ms": 100,
            "retry.backoff.max.ms": 1000,
            "linger.ms": 5,
        },
        **extra,
    )


class _Flight:
    __slots__ = ("seg", "off", "end", "state", "error")

    def __init__(self, seg: Segment, off: int, end: int, state: int = _PENDING) -> None:
        self.seg = seg
        self.off = off
        self.end = end
        self.state = state
        self.error: str | None = None


@dataclass
class SenderStats:
    produced: int = 0
    acked: int = 0
    failed: int = 0
    resent: int = 0
    rewinds: int = 0
    queue_full: int = 0
    producers_created: int = 0
    last_error: str | None = None
    last_ack_at: float = 0.0


class Sender:
    """Produces records of ``segments`` (a list the spool writer may append to) in order."""

    def __init__(
        self,
        topic: str,
        bootstrap: str | None,
        segments: list[Segment],
        *,
        delivery_timeout_ms: int = 5000,
        window_messages: int = 256,
        window_bytes: int = 16 << 20,
        max_backoff_s: float = 2.0,
        producer_factory: Callable[[dict[str, Any]], Any] = Producer,
    ) -> None:
        self.topic = topic
        self.bootstrap = bootstrap
        self.segments = segments
        self.delivery_timeout_ms = delivery_timeout_ms
        self.window_messages = window_messages
        self.window_bytes = window_bytes
        self.max_backoff_s = max_backoff_s
        self._factory = producer_factory
        self._producer: Any = None
        self._inflight: deque[_Flight] = deque()
        self._inflight_bytes = 0
        self._pending = 0
        self._failed = 0
        self._cursor: tuple[Segment, int] | None = None
        self._skip: set[tuple[int, int]] = set()
        self._recovering = False
        self._barrier = False
        self._resume_at = 0.0
        self._backoff = 0.0
        self._fatal: str | None = None
        self._ok_since_rewind = False
        self._high = (0, 0)  # end of the furthest record ever produced
        self.healthy = True  # False from an outage signal until the next acknowledgement
        self.stats = SenderStats()
        self._lock = threading.Lock()  # guards error-callback state set from librdkafka

    # ---------------------------------------------------------------- producer

    def _ensure_producer(self) -> Any:
        if self._producer is None and self.bootstrap:
            config = client_producer_config(
                self.bootstrap, self.delivery_timeout_ms, error_cb=self._on_error
            )
            self._producer = self._factory(config)
            self.stats.producers_created += 1
        return self._producer

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            with self._lock:
                self._fatal = err.str()
            return
        if err.code() in _OUTAGE_CODES:
            if self.healthy:
                log.warning("runstream: broker %s unreachable (%s); events stay in the spool "
                            "and are re-sent when it is back", self.bootstrap, err.str())
            self.healthy = False
            self.stats.last_error = err.str()

    # ------------------------------------------------------------------ state

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    @property
    def has_pending(self) -> bool:
        return self._pending > 0

    @property
    def recovering(self) -> bool:
        """Between attempts: a delivery failed and the sender waits or backs off to resend."""
        return self._recovering or time.monotonic() < self._resume_at

    def acked_position(self) -> tuple[int, int]:
        """(segment seq, offset) of the first record not yet acknowledged."""
        if self._inflight:
            f = self._inflight[0]
            return (f.seg.seq, f.off)
        cur = self._current_cursor()
        if cur is None:
            return (1 << 62, 0)
        return (cur[0].seq, cur[1])

    def idle(self) -> bool:
        """Nothing in flight and nothing left to send."""
        if self._inflight or self._recovering:
            return False
        cur = self._current_cursor()
        if cur is None:
            return True
        seg, off = cur
        return off >= seg.size and seg is self.segments[-1]

    def _current_cursor(self) -> tuple[Segment, int] | None:
        cur = self._cursor
        if cur is not None and not cur[0].removed:
            return cur
        # First call, or the cursor's segment was fully acked and deleted: go on with the
        # first live segment after it.
        after = -1 if cur is None else cur[0].seq
        seg = next((s for s in self.segments if not s.removed and s.seq > after), None)
        if seg is None:
            return None
        self._cursor = (seg, seg.acked)
        return self._cursor

    # ------------------------------------------------------------------- work

    def poll(self, timeout_s: float = 0.0) -> None:
        if self._producer is not None:
            self._producer.poll(timeout_s)
        elif timeout_s > 0:
            time.sleep(timeout_s)

    def step(self) -> None:
        """Serve delivery reports, settle acks, and produce what the window allows."""
        if self._producer is not None:
            self._producer.poll(0)
        if self._fatal is not None:
            self._replace_producer()
        self._settle()
        self._pump()

    def _on_delivery(self, flight: _Flight, err: KafkaError | None, _msg: Any) -> None:
        self._pending -= 1
        if err is None:
            flight.state = _OK
            self.stats.acked += 1
            self.stats.last_ack_at = time.monotonic()
            self._ok_since_rewind = True
            if not self.healthy:
                log.warning("runstream: broker %s answers again; re-sending the spool",
                            self.bootstrap)
            self.healthy = True
        else:
            flight.state = _FAILED
            flight.error = err.str()
            self._failed += 1
            self.stats.failed += 1
            self.stats.last_error = err.str()
            if self.healthy:
                log.warning("runstream: event not acknowledged by %s (%s); it stays in the "
                            "spool and is re-sent", self.bootstrap, err.str())
            self.healthy = False

    def _settle(self) -> None:
        inflight = self._inflight
        while inflight and inflight[0].state == _OK:
            f = inflight.popleft()
            self._inflight_bytes -= f.end - f.off
            f.seg.acked = f.end
        if self._failed and not self._recovering:
            self._recovering = True
            self.stats.rewinds += 1
        if self._recovering and self._pending == 0:
            self._rewind()

    def _rewind(self) -> None:
        """Every report is in: send again from the first record not acknowledged."""
        first = next((f for f in self._inflight if f.state != _OK), None)
        self._skip = {(f.seg.seq, f.off) for f in self._inflight if f.state == _OK}
        if first is not None:
            self._cursor = (first.seg, first.off)
        self._inflight.clear()
        self._inflight_bytes = 0
        self._failed = 0
        self._recovering = False
        self._barrier = False
        # Back off only when the previous round acknowledged nothing at all.
        if self._ok_since_rewind:
            self._backoff = 0.0
        else:
            self._backoff = min(self.max_backoff_s, max(0.25, self._backoff * 2))
        self._ok_since_rewind = False
        self._resume_at = time.monotonic() + self._backoff

    def _replace_producer(self) -> None:
        """A fatal producer error: drop the producer; everything unacked is sent again."""
        log.warning("runstream: producer fatal error (%s); starting a new producer", self._fatal)
        old, self._producer = self._producer, None
        self._fatal = None
        if old is not None:
            try:
                old.purge(in_queue=True, in_flight=True, blocking=False)
                old.poll(0)
            except Exception:  # noqa: BLE001 - it is being discarded
                pass
        for f in self._inflight:
            if f.state == _PENDING:
                f.state = _FAILED
                f.error = "producer replaced"
                self._failed += 1
        self._pending = 0
        self._recovering = True
        self._rewind()

    def _pump(self) -> None:
        if self._recovering or not self.bootstrap:
            return
        if time.monotonic() < self._resume_at:
            return
        cur = self._current_cursor()
        if cur is None:
            return
        producer = self._ensure_producer()
        seg, off = cur
        inflight = self._inflight
        while len(inflight) < self.window_messages and self._inflight_bytes < self.window_bytes:
            if self._barrier:
                if inflight:
                    break
                self._barrier = False
            rec = seg.read(off)
            if rec is None:
                if off < seg.size and not seg.active:
                    seg.truncate_torn_tail(off)
                idx = self.segments.index(seg) if seg in self.segments else -1
                if off >= seg.size and not seg.active and 0 <= idx < len(self.segments) - 1:
                    seg = self.segments[idx + 1]
                    off = seg.acked
                    self._cursor = (seg, off)
                    continue
                break
            flight = _Flight(seg, rec.offset, rec.end)
            if (seg.seq, rec.offset) in self._skip:
                self._skip.discard((seg.seq, rec.offset))
                flight.state = _OK  # acknowledged in an earlier round
            else:
                try:
                    producer.produce(
                        self.topic, value=rec.value, key=rec.key,
                        on_delivery=functools.partial(self._on_delivery, flight),
                    )
                except BufferError:
                    # librdkafka's queue is full: leave the record in the spool, serve reports.
                    self.stats.queue_full += 1
                    producer.poll(0.005)
                    break
                except KafkaException as exc:
                    self.stats.last_error = str(exc)
                    err = exc.args[0] if exc.args else None
                    if isinstance(err, KafkaError) and err.fatal():
                        self._fatal = err.str()
                    break
                self._pending += 1
                self.stats.produced += 1
                if (seg.seq, rec.offset) < self._high:
                    self.stats.resent += 1
                else:
                    self._high = (seg.seq, rec.end)
            inflight.append(flight)
            self._inflight_bytes += rec.end - rec.offset
            off = rec.end
            self._cursor = (seg, off)
            if rec.flags & FLAG_BARRIER:
                self._barrier = True
        if self._skip and not inflight:
            self._skip.clear()

    # ------------------------------------------------------------------ close

    def close(self, timeout_s: float = 0.0) -> None:
        """Stop: wait up to ``timeout_s`` for reports, then drop what is left (it stays spooled)."""
        producer, self._producer = self._producer, None
        if producer is None:
            return
        deadline = time.monotonic() + timeout_s
        while self._pending and time.monotonic() < deadline:
            producer.poll(0.01)
            self._settle_acks_only()
        try:
            producer.purge(in_queue=True, in_flight=True, blocking=False)
            producer.flush(0.5)
        except Exception:  # noqa: BLE001 - closing; the spool keeps everything
            pass
        self._settle_acks_only()

    def _settle_acks_only(self) -> None:
        inflight = self._inflight
        while inflight and inflight[0].state == _OK:
            f = inflight.popleft()
            self._inflight_bytes -= f.end - f.off
            f.seg.acked = f.end
