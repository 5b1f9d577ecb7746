"""The projector's handling of a batch that fails to apply, on a real DuckDB file with the
Kafka side stood in (no broker): what is blamed on an event, and that no stored offset ever
skips an event that is neither applied nor on record."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pytest
from runstream import projector as projector_module
from runstream.errors import DeliveryError
from runstream.kafka_log import DecodedMessage, Position
from runstream.projections.apply_events import apply_batch, create_read_model
from runstream.projector import Projector, blames_an_event
from runstream.read_store import SingleFileStore
from runstream.schemas import Event, TagSet, TagSetBody

from tests.event_factory import ev, run_created


@dataclass
class _Message:
    """The part of a confluent_kafka Message the projector reads."""

    _partition: int
    _offset: int

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset


@dataclass
class _DeadLetters:
    sent: list[tuple[int, str]] = field(default_factory=list)
    unflushed: int = 0
    fail_flush: bool = False

    def send(self, msg: _Message, reason: str, detail: str) -> None:
        self.sent.append((msg.offset(), reason))
        self.unflushed += 1

    def flush(self, timeout_s: float = 30.0) -> None:
        if self.fail_flush and self.unflushed:
            raise DeliveryError("dead letters not acknowledged")
        self.unflushed = 0


def _projector(tmp_path: Path, dead_letters: _DeadLetters) -> tuple[Projector, duckdb.DuckDBPyConnection]:
    con = duckdb.connect(str(tmp_path / "read-model.duckdb"))
    create_read_model(con)
    p = object.__new__(Projector)  # no consumer: batches are handed to _apply
    p.store, p.topic, p.dead_letters = SingleFileStore(con), "events", dead_letters
    return p, con


def _apply(p: Projector, events: list[Event], first_offset: int = 10) -> object:
    """The projector's apply of one batch (what step() does between fetch and bookkeeping)."""
    decoded = [DecodedMessage(e, Position(0, first_offset + i)) for i, e in enumerate(events)]
    messages = [_Message(0, d.position.offset) for d in decoded]
    return p._apply(messages, decoded, {0: first_offset + len(events)}, set())  # type: ignore[arg-type]


def _failing(errors: dict[str, BaseException]) -> object:
    def apply(con: object, events: list[Event]) -> object:
        for e in events:
            if e.event_id in errors:
                raise errors[e.event_id]
        return apply_batch(con, events)  # type: ignore[arg-type]
    return apply


def _state(con: duckdb.DuckDBPyConnection) -> tuple[list, list, list]:
    return (con.execute("SELECT next_offset FROM projector_offsets").fetchall(),
            con.execute('SELECT reason, "offset" FROM rejected_events ORDER BY 2').fetchall(),
            con.execute("SELECT key FROM run_tags ORDER BY key").fetchall())


@pytest.mark.parametrize(("exc", "blamed"), [
    (duckdb.ConversionException("x"), True),
    (duckdb.ConstraintException("x"), True),
    (duckdb.OutOfRangeException("x"), True),
    (ValueError("x"), True),
    (KeyError("x"), True),
    (OverflowError("x"), True),
    (duckdb.IOException("x"), False),
    (duckdb.OutOfMemoryException("x"), False),
    (duckdb.TransactionException("x"), False),
    (duckdb.CatalogException("x"), False),  # our SQL or schema, not the event's data
    (duckdb.BinderException("x"), False),
    (DeliveryError("x"), False),
    (OSError("x"), False),
    (MemoryError(), False),
    (KeyboardInterrupt(), False),
])
def test_what_is_blamed_on_an_event(exc: BaseException, blamed: bool) -> None:
    assert blames_an_event(exc) is blamed


def test_a_data_error_inside_a_bulk_write_is_blamed_on_the_event_not_on_the_store(
    tmp_path: Path,
) -> None:
    """DuckDB refuses even the unregister of a view once a statement failed; that error
    (TransactionException, a store failure) must not replace the event's own."""
    dead = _DeadLetters()
    p, con = _projector(tmp_path, dead)
    con.execute("DROP VIEW tags")
    con.execute("DROP TABLE run_tags")
    con.execute("CREATE TABLE run_tags (run_key INTEGER NOT NULL, key VARCHAR NOT NULL, "
                "value VARCHAR NOT NULL CHECK (value <> 'poison'))")
    events = [run_created("r1"), ev(TagSet, TagSetBody(key="a", value="poison"), run_id="r1"),
              ev(TagSet, TagSetBody(key="b", value="fine"), run_id="r1")]
    result = _apply(p, events)
    assert [r.reason for r in result.rejected] == ["apply_error:ConstraintException"]  # type: ignore[attr-defined]
    assert dead.sent == [(11, "apply_error:ConstraintException")]
    assert _state(con) == ([(13,)], [("apply_error:ConstraintException", 11)], [("b",)])


@pytest.mark.parametrize("later", ["io_error", "dead_letters_unacknowledged", "interrupt"])
def test_no_offset_passes_a_failed_event_before_it_is_on_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, later: str
) -> None:
    """A poison event, then something stops the one-by-one pass at a later event: the offsets
    stored never pass an event that is neither applied nor in rejected_events."""
    dead = _DeadLetters(fail_flush=later == "dead_letters_unacknowledged")
    p, con = _projector(tmp_path, dead)
    events = [run_created("r1"), ev(TagSet, TagSetBody(key="poison", value="x"), run_id="r1"),
              ev(TagSet, TagSetBody(key="good", value="y"), run_id="r1"),
              ev(TagSet, TagSetBody(key="last", value="z"), run_id="r1")]
    errors: dict[str, BaseException] = {events[1].event_id: duckdb.ConversionException("bad")}
    if later == "io_error":
        errors[events[3].event_id] = duckdb.IOException("disk full")
    if later == "interrupt":
        errors[events[3].event_id] = KeyboardInterrupt()
    monkeypatch.setattr(projector_module, "apply_batch", _failing(errors))
    with pytest.raises(BaseException) as info:
        _apply(p, events)
    offsets, rejected, tags = _state(con)
    if later == "dead_letters_unacknowledged":
        # The poison's letter is not acknowledged: nothing is stored past it.
        assert isinstance(info.value, DeliveryError)
        assert (offsets, rejected) == ([(11,)], [])
    else:
        # Stopped at offset 13: the poison (11) is on record, the good one (12) applied.
        assert (offsets, rejected, tags) == ([(13,)], [("apply_error:ConversionException", 11)],
                                             [("good",)])
        assert dead.sent == [(11, "apply_error:ConversionException")] and dead.unflushed == 0
