"""The client's spool and sender without a broker: framing, fsync, order, acks, torn tails."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError
from runstream.client.replay import sync_spool
from runstream.client.sender import Sender
from runstream.client.spool import (
    FLAG_BARRIER,
    MAGIC,
    Segment,
    SpoolWriter,
    frame,
    orphan_paths,
)


class FakeProducer:
    """Stands in for librdkafka: records what it was given, reports on poll()."""

    def __init__(self, config: dict[str, Any], fail: set[bytes] | None = None) -> None:
        self.config = config
        self.queue: list[tuple[bytes, bytes, Any]] = []
        self.log: list[bytes] = []  # values that reached "the broker", in order
        self.fail = fail if fail is not None else set()  # values to fail once

    def produce(self, topic: str, value: bytes, key: bytes, on_delivery: Any) -> None:
        self.queue.append((key, value, on_delivery))

    def poll(self, timeout: float = 0.0) -> int:
        queue, self.queue = self.queue, []
        for _key, value, cb in queue:
            if value in self.fail:
                self.fail.discard(value)
                cb(KafkaError(KafkaError._MSG_TIMED_OUT), None)
            else:
                self.log.append(value)
                cb(None, None)
        return len(queue)

    def purge(self, **_: Any) -> None:
        self.queue.clear()

    def flush(self, timeout: float = 0.0) -> int:
        self.poll()
        return 0


def _writer(tmp_path: Path, **kw: Any) -> SpoolWriter:
    return SpoolWriter(tmp_path / "spool", {"topic": "t.events", "bootstrap": "b:1"}, **kw)


def _records(n: int, start: int = 0) -> list[tuple[int, bytes, bytes]]:
    return [(0, b"run-%d" % (i % 3), b'{"n":%d}' % i) for i in range(start, start + n)]


def _sender(writer_or_segments: Any, producer: FakeProducer | None = None) -> tuple[Sender, FakeProducer]:
    fake = producer or FakeProducer({})
    segments = getattr(writer_or_segments, "segments", writer_or_segments)
    sender = Sender("t.events", "fake:9092", segments, producer_factory=lambda cfg: fake,
                    max_backoff_s=0.0)
    return sender, fake


def _drive(sender: Sender, writer: SpoolWriter | None = None, rounds: int = 50) -> None:
    for _ in range(rounds):
        sender.step()
        sender.poll()
        sender.step()
        if writer is not None:
            writer.reap()
        if sender.idle():
            return


# ------------------------------------------------------------------- framing


def test_records_round_trip_with_flags_keys_and_header(tmp_path: Path) -> None:
    writer = _writer(tmp_path)
    writer.append([(0, b"k1", b"v1"), (FLAG_BARRIER, b"k2", b"v" * 100_000)])
    seg = writer.active
    assert seg is not None
    got = [(r.flags, r.key, r.value) for r in seg.records()]
    assert got == [(0, b"k1", b"v1"), (FLAG_BARRIER, b"k2", b"v" * 100_000)]
    assert seg.path.read_bytes().startswith(MAGIC)
    assert seg.header["topic"] == "t.events" and seg.header["pid"] == os.getpid()
    writer.close()


def test_sync_fsyncs_written_data_once_per_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                 ) -> None:
    calls: list[int] = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (calls.append(fd), real(fd))[1])
    writer = _writer(tmp_path)
    writer.append(_records(10))
    writer.append(_records(10, 10))
    writer.sync()
    assert len(calls) == 1, "one fsync for the batch"
    writer.sync()
    assert len(calls) == 1, "nothing new written: no fsync"
    writer.append(_records(1, 20))
    writer.sync()
    assert len(calls) == 2
    writer.close()


# ---------------------------------------------------------------- replay order


def test_orphans_replay_in_spool_order_across_segments(tmp_path: Path) -> None:
    writer = _writer(tmp_path, segment_bytes=1024)
    expected = []
    for batch in range(40):
        records = _records(5, batch * 5)
        writer.append(records)
        expected += [v for _, _, v in records]
    assert len(writer.segments) > 3, "small segments roll"
    kept = writer.close()  # nothing acknowledged: every segment stays
    assert [p.name for p in kept] == [p.name for p in orphan_paths(tmp_path / "spool")]

    segments = [Segment.open_orphan(p, i) for i, p in enumerate(orphan_paths(tmp_path / "spool"))]
    assert all(s is not None for s in segments)
    sender, fake = _sender([s for s in segments if s is not None])
    _drive(sender)
    assert fake.log == expected


def test_sync_spool_sends_everything_once_and_deletes_the_spool(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    writer = _writer(tmp_path, segment_bytes=1024)
    for batch in range(20):
        writer.append(_records(5, batch * 5))
    writer.close()
    fake = FakeProducer({})
    monkeypatch.setattr("runstream.client.sender.Producer", lambda cfg: fake)
    # Sender's default factory is bound at definition; patch the class used by replay.
    import runstream.client.replay as replay

    real_sender = replay.Sender
    monkeypatch.setattr(replay, "Sender", lambda *a, **k: real_sender(
        *a, **k, producer_factory=lambda cfg: fake))
    report = sync_spool(tmp_path / "spool", timeout_s=10)
    assert report.complete and report.events == 100
    assert len(fake.log) == len(set(fake.log)) == 100
    assert orphan_paths(tmp_path / "spool") == []
    assert not list((tmp_path / "spool").glob("*.ack"))


def test_a_live_writers_segments_are_not_taken(tmp_path: Path) -> None:
    writer = _writer(tmp_path)
    writer.append(_records(3))
    assert writer.active is not None
    assert Segment.open_orphan(writer.active.path, 1) is None, "locked by its owner"
    report = sync_spool(tmp_path / "spool", timeout_s=1)
    assert report.busy == [str(writer.active.path)] and report.segments == 0
    writer.close()
    assert Segment.open_orphan(orphan_paths(tmp_path / "spool")[0], 1) is not None


# ------------------------------------------------------------- acks, truncation


def test_acked_segments_are_deleted_and_the_ack_offset_is_kept(tmp_path: Path) -> None:
    writer = _writer(tmp_path, segment_bytes=1024)
    for batch in range(30):
        writer.append(_records(5, batch * 5))
    sealed = [s.path for s in writer.segments if not s.active]
    assert sealed
    sender, fake = _sender(writer)
    _drive(sender, writer)
    assert len(fake.log) == 150
    assert not any(p.exists() for p in sealed), "fully acked sealed segments are deleted"
    active = writer.active
    assert active is not None and active.fully_acked
    writer.reap()
    assert active.ack_path.exists()
    assert int.from_bytes(active.ack_path.read_bytes(), "little") == active.size
    assert writer.close() == [], "a fully acked spool leaves nothing behind"
    assert orphan_paths(tmp_path / "spool") == []


def test_a_partly_acked_segment_resumes_after_its_ack_offset(tmp_path: Path) -> None:
    writer = _writer(tmp_path)
    records = _records(10)
    writer.append(records)
    fail = {records[7][2]}
    fake = FakeProducer({}, fail=fail)
    sender, _ = _sender(writer, fake)
    # One round only: record 7 fails; 8 and 9 are acked but lie beyond the gap.
    sender.step()
    sender.poll()
    sender.step()
    writer.reap()
    kept = writer.close()
    assert len(kept) == 1
    orphan = Segment.open_orphan(kept[0], 1)
    assert orphan is not None
    rest = [r.value for r in orphan.records(orphan.acked)]
    assert rest == [v for _, _, v in records[7:]], "everything from the first unacked record"


def test_a_failed_record_is_resent_and_acked_ones_are_not(tmp_path: Path) -> None:
    writer = _writer(tmp_path)
    records = _records(6)
    writer.append(records)
    values = [v for _, _, v in records]
    fake = FakeProducer({}, fail={values[2]})
    sender, _ = _sender(writer, fake)
    _drive(sender, writer)
    assert sorted(fake.log) == sorted(values) and len(fake.log) == 6, "each exactly once"
    assert fake.log == values[:2] + values[3:] + [values[2]]
    assert sender.stats.failed == 1 and sender.stats.resent == 1 and sender.stats.rewinds == 1
    writer.close()


def test_nothing_after_a_barrier_is_sent_before_the_barrier_is_acked(tmp_path: Path) -> None:
    writer = _writer(tmp_path)
    writer.append([(0, b"e", b"exp"), (FLAG_BARRIER, b"r", b"created"), (0, b"r", b"m1"),
                   (0, b"r", b"m2")])
    fake = FakeProducer({}, fail={b"created"})
    sender, _ = _sender(writer, fake)
    sender.step()
    assert [v for _, v, _ in fake.queue] == [b"exp", b"created"], "stops at the barrier"
    sender.poll()  # created fails
    sender.step()
    assert [v for _, v, _ in fake.queue] == [b"created"], "the barrier again, nothing after it"
    _drive(sender, writer)
    assert fake.log == [b"exp", b"created", b"m1", b"m2"]
    writer.close()


# ---------------------------------------------------------------- torn records


def _kept_segment(tmp_path: Path, n: int) -> tuple[Path, list[bytes]]:
    writer = _writer(tmp_path)
    records = _records(n)
    writer.append(records)
    (path,) = writer.close()
    return path, [v for _, _, v in records]


def test_a_torn_last_record_is_ignored_on_read_and_replay(tmp_path: Path) -> None:
    path, values = _kept_segment(tmp_path, 5)
    whole = frame(0, b"run-x", b'{"n":"torn"}')
    with open(path, "ab") as f:
        f.write(whole[: len(whole) // 2])  # the writer died mid-write
    seg = Segment.open_orphan(path, 1)
    assert seg is not None
    assert [r.value for r in seg.records()] == values
    sender, fake = _sender([seg])
    _drive(sender)
    assert fake.log == values and seg.fully_acked, "the torn tail was never sent"


def test_a_record_failing_its_checksum_ends_the_segment(tmp_path: Path) -> None:
    path, values = _kept_segment(tmp_path, 5)
    data = bytearray(path.read_bytes())
    data[-2] ^= 0xFF  # flip a byte inside the last record's payload
    path.write_bytes(bytes(data))
    seg = Segment.open_orphan(path, 1)
    assert seg is not None
    assert [r.value for r in seg.records()] == values[:-1]


def test_a_segment_killed_while_writing_its_header_is_dropped(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    path = spool / "seg-00000000000000000001-1-deadbeef.rsl"
    path.write_bytes(MAGIC[:5])
    assert Segment.open_orphan(path, 1) is None
    assert not path.exists()


def test_a_foreign_file_is_set_aside_not_sent(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    path = spool / "seg-00000000000000000001-1-deadbeef.rsl"
    path.write_bytes(b"not a spool segment at all, but long enough to have a header")
    assert Segment.open_orphan(path, 1) is None
    assert path.with_suffix(".rsl.bad").exists()
