"""A query node: the projector thread and the HTTP API over one DuckDB read model."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from runstream.errors import NotReady
from runstream.kafka_log import EventProducer, Position, TopicReport, ensure_topics
from runstream.projector import Projector
from runstream.read_store import ReadStore
from runstream.schemas import Event
from runstream.settings import Settings

log = logging.getLogger(__name__)


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

    @classmethod
    def open(cls, settings: Settings, bootstrap: str) -> QueryNode:
        topics = ensure_topics(
            bootstrap,
            settings.events_topic,
            settings.dead_letter_topic,
            partitions=settings.partitions,
            replication_factor=settings.replication_factor,
        )
        store = ReadStore(settings.database_path)
        producer = EventProducer(bootstrap, settings.events_topic)
        projector = Projector(
            store,
            bootstrap,
            settings.events_topic,
            settings.dead_letter_topic,
            batch_max_messages=settings.batch_max_messages,
            batch_max_ms=settings.batch_max_ms,
        )
        projector.start()
        return cls(settings, bootstrap, store, producer, projector, topics)

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

    def health(self) -> dict[str, object]:
        projector = self.projector
        return {
            "status": "ok" if projector.error is None else "degraded",
            "projector_error": None if projector.error is None else repr(projector.error),
            "bootstrap": self.bootstrap,
            "events_topic": self.settings.events_topic,
            "topic_problems": self.topics.problems,
            "lag": projector.lag(),
            "projected": {
                "batches": projector.stats.batches,
                "events": projector.stats.events,
                "points": projector.stats.points,
                "duplicates_skipped": projector.stats.duplicates,
                "rejected": dict(projector.stats.rejected),
            },
            "dead_letters": dict(projector.dead_letters.counts),
            "uptime_s": round(time.time() - self.started_at, 1),
        }

    def close(self) -> None:
        self.projector.stop()
        try:
            self.producer.flush(5)
        except Exception as exc:  # noqa: BLE001 - shutting down; report, don't mask
            log.warning("unflushed events at shutdown: %s", exc)
        self.store.close()
