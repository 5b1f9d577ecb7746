"""What the projector does when applying fails: the event's fault (dead-lettered, recorded, the
log goes on, even for a batch of one) or the store's (stop, skip nothing, resume)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from runstream import projector as projector_module
from runstream.dead_letters import read_dead_letters
from runstream.kafka_log import EventProducer
from runstream.projections.apply_events import apply_batch, create_read_model
from runstream.projector import Projector
from runstream.read_store import SingleFileStore
from runstream.schemas import Event, TagSet, TagSetBody
from runstream.settings import Settings

from tests.event_factory import ev, run_created

pytestmark = pytest.mark.broker


@pytest.fixture
def con(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    c = duckdb.connect(str(tmp_path / "read-model.duckdb"))
    create_read_model(c)
    yield c
    c.close()


def _projector(topics: Settings, bootstrap: str, con: duckdb.DuckDBPyConnection) -> Projector:
    return Projector(SingleFileStore(con), bootstrap, topics.events_topic,
                     topics.dead_letter_topic, batch_max_messages=1, batch_max_ms=50)


def _failing_on(event_id: str, error: Exception, times: int = 10**9) -> object:
    """apply_batch, raising ``error`` (``times`` times) for a batch holding ``event_id``."""
    left = [times]

    def apply(con: object, events: list[Event]) -> object:
        if left[0] > 0 and any(e.event_id == event_id for e in events):
            left[0] -= 1
            raise error
        return apply_batch(con, events)  # type: ignore[arg-type]

    return apply


def _publish(topics: Settings, bootstrap: str, events: list[Event]) -> dict[int, int]:
    positions = EventProducer(bootstrap, topics.events_topic).publish_and_wait(events)
    high: dict[int, int] = {}
    for pos in positions:
        high[pos.partition] = max(high.get(pos.partition, 0), pos.offset + 1)
    return high


def test_an_event_that_fails_alone_in_its_batch_is_dead_lettered_and_the_log_goes_on(
    topics: Settings, bootstrap: str, con: duckdb.DuckDBPyConnection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    poison = ev(TagSet, TagSetBody(key="k", value="v"), run_id="r1")
    after = ev(TagSet, TagSetBody(key="after", value="yes"), run_id="r1")
    monkeypatch.setattr(projector_module, "apply_batch",
                        _failing_on(poison.event_id, duckdb.ConversionException("out of range")))
    # One message a batch: the poison event is a batch of one, which used to stop the
    # projector at every restart.
    high = _publish(topics, bootstrap, [run_created("r1"), poison, after])
    p = _projector(topics, bootstrap, con)
    try:
        p.run_until(high)
    finally:
        p.stop()
    assert p.stats.rejected == {"apply_error:ConversionException": 1}
    assert con.execute("SELECT key, value FROM tags WHERE run_id = 'r1'").fetchall() == [
        ("after", "yes")]
    # Recorded with the offsets that skip it, and dead-lettered with its bytes.
    assert con.execute("SELECT event_id, type, reason FROM rejected_events").fetchall() == [
        (poison.event_id, "tag.set", "apply_error:ConversionException")]
    letters = list(read_dead_letters(bootstrap, topics.dead_letter_topic))
    assert [(d.reason, d.source_topic) for d in letters] == [
        ("apply_error:ConversionException", topics.events_topic)]


def test_a_failure_of_the_store_stops_the_projector_and_skips_nothing(
    topics: Settings, bootstrap: str, con: duckdb.DuckDBPyConnection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    event = ev(TagSet, TagSetBody(key="k", value="v"), run_id="r2")
    monkeypatch.setattr(projector_module, "apply_batch",
                        _failing_on(event.event_id, duckdb.IOException("disk full"), times=1))
    high = _publish(topics, bootstrap, [run_created("r2"), event])
    p = _projector(topics, bootstrap, con)
    try:
        with pytest.raises(duckdb.IOException):
            p.run_until(high)
    finally:
        p.stop()
    assert not p.caught_up_with(high), "the failed batch's offsets are not stored"
    assert con.execute("SELECT count(*) FROM rejected_events").fetchone() == (0,)

    # A restart (the disk has room again) applies it; nothing was dead-lettered.
    p = _projector(topics, bootstrap, con)
    try:
        p.run_until(high)
    finally:
        p.stop()
    assert con.execute("SELECT key FROM tags WHERE run_id = 'r2'").fetchall() == [("k",)]
    assert list(read_dead_letters(bootstrap, topics.dead_letter_topic)) == []
