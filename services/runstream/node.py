"""A query node: the projector thread and the HTTP API over one DuckDB read model."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from runstream import queries
from runstream.errors import Conflict, NotReady
from runstream.kafka_log import EventProducer, Position, TopicReport, ensure_topics
from runstream.projector import Projector
from runstream.read_store import ReadStore, SingleFileStore
from runstream.schemas import Event, RunPurged, new_event, now_ms
from runstream.settings import Settings

log = logging.getLogger(__name__)

DAY_MS = 86_400_000


@dataclass
class RebuildStatus:
    """Progress of the running (or last) rebuild, shown in /health."""

    state: str = "idle"  # idle | running | done | failed
    started_at: float | None = None
    finished_at: float | None = None
    applied: int = 0
    target: int = 0
    generation: int | None = None
    error: str | None = None


@dataclass
class QueryNode:
    """Everything one node owns; built by :meth:`open`, torn down by :meth:`close`."""

    settings: Settings
    bootstrap: str
    store: ReadStore
    producer: EventProducer
    projector: Projector
    topics: TopicReport
    started_at: float = field(default_factory=time.time)
    rebuild_status: RebuildStatus = field(default_factory=RebuildStatus)
    _rebuild_lock: threading.Lock = field(default_factory=threading.Lock)
    _closing: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def open(cls, settings: Settings, bootstrap: str) -> QueryNode:
        topics = ensure_topics(
            bootstrap,
            settings.events_topic,
            settings.dead_letter_topic,
            partitions=settings.partitions,
            replication_factor=settings.replication_factor,
        )
        store = ReadStore(settings.read_model_dir)
        queries.RECORDS.resize(settings.record_cache_items)
        producer = EventProducer(bootstrap, settings.events_topic)
        node = cls(settings, bootstrap, store, producer, _projector(settings, bootstrap, store), topics)
        node.projector.start()
        return node

    # ------------------------------------------------------------------ writes

    def publish(self, events: list[Event], *, wait: bool = True) -> list[Position]:
        """Publish events; with ``wait``, return only once this node's projector applied them."""
        positions = self.producer.publish_and_wait(events)
        if wait and not self.projector.wait_for(
            positions, self.settings.read_your_writes_timeout_s
        ):
            raise NotReady(
                "the change is on the log but this node has not applied it yet "
                f"(waited {self.settings.read_your_writes_timeout_s}s); it will appear shortly"
            )
        return positions

    # --------------------------------------------------------------- retention

    def purge_expired(self, *, as_of_ms: int | None = None, dry_run: bool = False) -> list[str]:
        """Publish a purge event for every run deleted longer ago than the retention window.

        ``as_of_ms`` is the clock (injectable for tests); the window is
        ``settings.retention_days``. Artifact files of purged runs are removed once the
        purge is applied. Returns the purged run ids.
        """
        as_of = now_ms() if as_of_ms is None else as_of_ms
        window = int(self.settings.retention_days * DAY_MS)
        with self.store.reading() as cur:
            rows = cur.execute(
                "SELECT run_id, experiment_id FROM runs_past_retention(?, ?) ORDER BY run_id",
                [as_of, window],
            ).fetchall()
        if dry_run or not rows:
            return [r[0] for r in rows]
        events = [new_event(RunPurged, run_id=run_id, producer="retention") for run_id, _ in rows]
        self.publish(events)
        for run_id, experiment_id in rows:
            shutil.rmtree(self.settings.artifacts_dir / experiment_id / run_id, ignore_errors=True)
        log.info("retention: purged %d run(s) deleted before %d", len(rows), as_of - window)
        return [r[0] for r in rows]

    def start_retention_job(self, every_s: float = 3600.0) -> threading.Thread:
        def loop() -> None:
            # The node's own stop signal: a rebuild replaces (and stops) the projector.
            while not self._closing.wait(every_s):
                try:
                    self.purge_expired()
                except Exception:  # noqa: BLE001 - retried at the next tick
                    log.exception("retention job failed")

        t = threading.Thread(target=loop, name="retention", daemon=True)
        t.start()
        return t

    # ----------------------------------------------------------------- rebuild

    def rebuild(self, progress: Callable[[RebuildStatus], None] | None = None) -> RebuildStatus:
        """Replay the log from its first offset into a new file, then switch to it atomically.

        The node keeps answering (and projecting) from the old file until the switch. At the
        switch the live projector pauses, the new file catches up with the last events, the
        store swaps files, and a projector on the new file takes over.
        """
        if not self._rebuild_lock.acquire(blocking=False):
            raise Conflict("a rebuild is already running on this node")
        status = self.rebuild_status = RebuildStatus(state="running", started_at=time.time())
        try:
            new_path = self.store.next_path()
            con = self.store.open_other(new_path)
            status.generation = int(new_path.name.split(".")[1])
            target = SingleFileStore(con)
            rebuilder = _projector(
                self.settings, self.bootstrap, target, group_id="runstream-rebuild",
                send_dead_letters=False,
            )

            def report(applied: dict[int, int], high: dict[int, int]) -> None:
                status.applied = sum(applied.values())
                status.target = sum(high.values())
                if progress:
                    progress(status)

            try:
                rebuilder.run_until(rebuilder.consumer.high_watermarks(rebuilder.partitions), report)
                rebuilder.settle_records()  # while the old file still serves
                # The switch: stop the live projector, let the new file take the tail.
                self.projector.stop()
                rebuilder.run_until(rebuilder.consumer.high_watermarks(rebuilder.partitions), report)
            finally:
                rebuilder.stop()
            self.store.swap(con, new_path)
            self.projector = _projector(self.settings, self.bootstrap, self.store)
            self.projector.start()
            status.state, status.finished_at = "done", time.time()
            log.info("rebuild done: generation %s, %d events", status.generation, status.applied)
            return status
        except Exception as exc:
            status.state, status.error, status.finished_at = "failed", repr(exc), time.time()
            if not self.projector.running:
                self.projector = _projector(self.settings, self.bootstrap, self.store)
                self.projector.start()
            raise
        finally:
            self._rebuild_lock.release()

    # ------------------------------------------------------------------ health

    def health(self) -> dict[str, object]:
        projector = self.projector
        return {
            "status": "ok" if projector.error is None else "degraded",
            "projector_error": None if projector.error is None else repr(projector.error),
            "bootstrap": self.bootstrap,
            "events_topic": self.settings.events_topic,
            "topic_problems": self.topics.problems,
            "read_model": {"file": self.store.path.name, "generation": self.store.generation},
            "lag": projector.lag(),
            "projected": {
                "batches": projector.stats.batches,
                "events": projector.stats.events,
                "points": projector.stats.points,
                "duplicates_skipped": projector.stats.duplicates,
                "rejected": dict(projector.stats.rejected),
                # key/value tables re-sorted by key (projections.layout), and their time
                "clusterings": projector.stats.clusterings,
                "clustering_s": round(projector.stats.clustering_s, 2),
                # run_records documents made (a chore, projections.read_model), their time,
                # and the refreshes that failed
                "records_refreshed": projector.stats.records_refreshed,
                "records_s": round(projector.stats.records_s, 2),
                "records_failures": projector.stats.records_failures,
            },
            "dead_letters": dict(projector.dead_letters.counts),
            "parked": self._parked(),
            # run records served from memory (their run unchanged) or read from the tables
            "record_cache": {
                "runs": len(queries.RECORDS), "items": queries.RECORDS.weight,
                "capacity_items": queries.RECORDS.capacity,
                "hits": queries.RECORDS.hits, "misses": queries.RECORDS.misses,
            },
            "rebuild": self.rebuild_status.__dict__,
            "uptime_s": round(time.time() - self.started_at, 1),
        }

    def _parked(self) -> dict[str, int]:
        """Events waiting for their run's run.created (another rank's, usually briefly)."""
        with self.store.reading() as cur:
            ((events, runs),) = cur.execute(
                "SELECT count(*), count(DISTINCT run_id) FROM parked_events"
            ).fetchall()
        return {"events": int(events), "runs": int(runs)}

    def close(self) -> None:
        self._closing.set()
        self.projector.stop()
        try:
            self.producer.flush(5)
        except Exception as exc:  # noqa: BLE001 - shutting down; report, don't mask
            log.warning("unflushed events at shutdown: %s", exc)
        self.store.close()


def _projector(settings: Settings, bootstrap: str, target: Any, **kwargs: Any) -> Projector:
    return Projector(
        target,
        bootstrap,
        settings.events_topic,
        settings.dead_letter_topic,
        batch_max_messages=settings.batch_max_messages,
        batch_max_ms=settings.batch_max_ms,
        **kwargs,
    )
