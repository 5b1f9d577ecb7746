"""Copy runs between deployments: export their events from one log, import them into another.

An export file is JSON Lines, one event per line in its wire form (gzip when the name ends
in ``.gz``). Import publishes every event with its original event id, so a projector that
already applied an event skips it: importing the same file twice changes nothing.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from runstream.errors import InvalidInput
from runstream.kafka_log import BatchConsumer, EventProducer, partition_count
from runstream.schemas import Event, EventDecodeError, RunCreated, decode_event, encode_event

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Selection:
    """Which runs to export: all, or those of some experiments, or some run ids."""

    experiment_ids: frozenset[str] = frozenset()
    run_ids: frozenset[str] = frozenset()

    def wants_all(self) -> bool:
        return not self.experiment_ids and not self.run_ids


def _read_log(bootstrap: str, topic: str, progress: Progress | None) -> Iterator[Event]:
    """Every event of the topic, partition by partition order, from the first offset."""
    consumer = BatchConsumer(bootstrap, topic, "runstream-export")
    try:
        for msg in consumer.read_to_end(range(partition_count(bootstrap, topic)),
                                        progress=progress):
            try:
                yield decode_event(msg.value() or b"")
            except EventDecodeError:
                continue  # dead letters are not history
    finally:
        consumer.close()


def _open(path: Path, mode: str, *, gz: bool | None = None) -> IO[str]:
    if path.suffix == ".gz" if gz is None else gz:
        return io.TextIOWrapper(gzip.open(path, mode + "b"), encoding="utf-8")
    return open(path, mode, encoding="utf-8")


def export_events(
    bootstrap: str,
    topic: str,
    out: Path,
    selection: Selection,
    progress: Progress | None = None,
) -> int:
    """Write the events of the selected runs (and of their experiments) to ``out``."""
    runs = set(selection.run_ids)
    experiments = set(selection.experiment_ids)
    if not selection.wants_all():
        # First pass: which runs belong to the chosen experiments, which experiments
        # the chosen runs belong to.
        for event in _read_log(bootstrap, topic, progress):
            if isinstance(event, RunCreated):
                if event.experiment_id in selection.experiment_ids:
                    runs.add(event.run_id)
                if event.run_id in selection.run_ids:
                    experiments.add(event.experiment_id)
    written = 0
    tmp = out.with_name(out.name + ".partial")
    with _open(tmp, "w", gz=out.suffix == ".gz") as f:
        for event in _read_log(bootstrap, topic, progress):
            if not selection.wants_all():
                if event.run_id is not None and event.run_id not in runs:
                    continue
                if event.run_id is None and event.experiment_id not in experiments:
                    continue
            f.write(encode_event(event).decode() + "\n")
            written += 1
    tmp.replace(out)  # a half-written export is never mistaken for a whole one
    return written


def read_export(path: Path) -> list[Event]:
    """Parse a whole export file; any bad line is an error naming it, before anything is sent."""
    if not path.exists():
        raise InvalidInput(f"{path}: no such file")
    events = []
    try:
        with _open(path, "r") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    events.append(decode_event(line))
                except EventDecodeError as exc:
                    raise InvalidInput(f"{path}, line {number}: {exc}") from None
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{path}: not a runstream export ({exc})") from None
    return events


def import_events(
    bootstrap: str, topic: str, path: Path, progress: Progress | None = None
) -> int:
    """Publish every event of an export file with its original id; return how many."""
    events = read_export(path)
    producer = EventProducer(bootstrap, topic)
    for i, event in enumerate(events, start=1):
        producer.publish(event)
        if progress and i % 1000 == 0:
            progress(i, len(events))
    producer.flush(120)
    if progress:
        progress(len(events), len(events))
    return len(events)
