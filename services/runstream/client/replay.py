"""Re-sending spool segments left by processes that are gone (``runstream sync``).

A segment is taken only if its exclusive lock can be acquired, so a running client's
segments are never touched and two replays never send the same segment at once. Records
go out in spool order (segments oldest first, records in file order) from the segment's
``.ack`` offset, as the same bytes they were first sent as: the projector skips any event
id it already applied, so a resend never counts twice.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from runstream.client.sender import RDKAFKA_CLIENT_LOGGER, Sender
from runstream.client.spool import Segment, orphan_paths

log = logging.getLogger(__name__)


@dataclass
class SyncReport:
    segments: int = 0  # orphan segments taken
    events: int = 0  # records acknowledged
    delivered: list[str] = field(default_factory=list)  # segments fully sent and deleted
    remaining: list[str] = field(default_factory=list)  # still holding unacked records
    busy: list[str] = field(default_factory=list)  # owned by a running process
    problems: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.remaining and not self.problems

    def summary(self) -> str:
        parts = [f"{self.events} event(s) re-sent from {self.segments} spool segment(s)"]
        if self.delivered:
            parts.append(f"{len(self.delivered)} segment(s) fully delivered and deleted")
        if self.remaining:
            parts.append(f"{len(self.remaining)} segment(s) still waiting")
        if self.busy:
            parts.append(f"{len(self.busy)} segment(s) in use by running clients")
        return "; ".join(parts) + ("" if not self.problems else "; " + "; ".join(self.problems))


def topic_available(bootstrap: str, topic: str, timeout_s: float = 3.0) -> str | None:
    """None when ``topic`` exists on ``bootstrap``; else why not."""
    from confluent_kafka.admin import AdminClient

    try:
        admin = AdminClient({"bootstrap.servers": bootstrap,
                             "logger": RDKAFKA_CLIENT_LOGGER,  # type: ignore[dict-item]
                             "socket.connection.setup.timeout.ms": int(timeout_s * 1000)})
        md = admin.list_topics(topic=topic, timeout=timeout_s)
    except Exception as exc:  # noqa: BLE001 - any failure means "not now"
        return f"broker {bootstrap} unreachable: {exc}"
    t = md.topics.get(topic)
    if t is None or t.error is not None:
        return f"topic {topic} does not exist on {bootstrap}"
    return None


def sync_spool(
    directory: Path,
    *,
    bootstrap: str | None = None,
    timeout_s: float = 60.0,
    delivery_timeout_ms: int = 5000,
    only_reachable: bool = False,
) -> SyncReport:
    """Send every orphan segment under ``directory`` to its topic; delete what is acked.

    ``bootstrap`` overrides the address recorded in each segment (where the process that
    wrote it meant to send). With ``only_reachable``, a target whose broker or topic is
    not there right now is skipped at once (the background replay of a starting client).
    """
    report = SyncReport()
    groups: dict[tuple[str | None, str], list[Segment]] = {}
    for seq, path in enumerate(orphan_paths(directory), start=1):
        seg = Segment.open_orphan(path, seq)
        if seg is None:
            if path.exists():
                report.busy.append(str(path))
            continue
        if seg.fully_acked:
            seg.remove()
            continue
        report.segments += 1
        target = (bootstrap or seg.header.get("bootstrap"), str(seg.header.get("topic")))
        groups.setdefault(target, []).append(seg)

    deadline = time.monotonic() + timeout_s
    for (target_bootstrap, topic), segs in groups.items():
        problem = None
        if target_bootstrap is None:
            problem = (f"{len(segs)} segment(s) for topic {topic} were written without a broker "
                       "address; pass --bootstrap")
        elif only_reachable:
            problem = topic_available(target_bootstrap, topic)
        if problem is None:
            _send_group(target_bootstrap, topic, segs, deadline, delivery_timeout_ms, report)
        else:
            report.problems.append(problem)
        for seg in segs:
            if seg.removed:
                continue
            if seg.fully_acked:
                seg.remove()
                report.delivered.append(str(seg.path))
            else:
                seg.persist_ack()
                seg.close()
                report.remaining.append(str(seg.path))
    return report


def _send_group(
    bootstrap: str | None,
    topic: str,
    segs: list[Segment],
    deadline: float,
    delivery_timeout_ms: int,
    report: SyncReport,
) -> None:
    live = list(segs)
    sender = Sender(topic, bootstrap, live, delivery_timeout_ms=delivery_timeout_ms)
    try:
        while not sender.idle() and time.monotonic() < deadline:
            sender.step()
            sender.poll(0.01)
            for seg in list(live):
                if seg.fully_acked:
                    seg.remove()
                    live.remove(seg)
                    report.delivered.append(str(seg.path))
    finally:
        sender.close(1.0)
        report.events += sender.stats.acked
        if sender.stats.last_error and not sender.idle():
            report.problems.append(f"{topic} on {bootstrap}: {sender.stats.last_error}")

