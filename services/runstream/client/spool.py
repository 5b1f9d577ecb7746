"""The client's append-only spool: every event is on local disk before it is sent.

A spool directory holds segment files of every client process on the machine::

    seg-<time_ns>-<pid>-<rand>.rsl        records, appended, never rewritten
    seg-<time_ns>-<pid>-<rand>.rsl.ack    8 bytes: offset below which every record is acked

A segment starts with ``MAGIC`` and a header record (JSON: topic, bootstrap, pid, host),
followed by records framed as::

    u32 payload length | u32 crc32(payload) | payload = u8 flags | u16 key length | key | value

``value`` is the event exactly as encoded once (same ``event_id``), so a resend is the same
bytes and the projector's ``applied_events`` skips it if it already arrived. A reader stops
at the first record that is incomplete or fails its checksum: the torn tail a crash
mid-write leaves behind, which was never sent (a record is produced only after it is
written).

The owning process holds an exclusive ``flock`` on each of its segments. A segment whose
lock can be taken belongs to a process that is gone: any client starting on the machine,
or ``runstream sync``, re-sends it from its ``.ack`` offset and deletes it once acked.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import struct
import time
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MAGIC = b"RSSPOOL1"
_FRAME = struct.Struct("<II")  # payload length, crc32
_PAYLOAD_HEAD = struct.Struct("<BH")  # flags, key length
_ACK = struct.Struct("<Q")
MAX_RECORD_BYTES = 64 << 20

FLAG_BARRIER = 0x01  # send nothing after this record until it is acknowledged
FLAG_HEADER = 0x80
SUFFIX = ".rsl"


@dataclass(frozen=True)
class Record:
    offset: int
    end: int
    flags: int
    key: bytes
    value: bytes


def frame(flags: int, key: bytes, value: bytes) -> bytes:
    """One record in its on-disk form."""
    payload = _PAYLOAD_HEAD.pack(flags, len(key)) + key + value
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def parse_at(buf: bytes | memoryview, pos: int, base: int) -> Record | None:
    """The record starting at ``buf[pos]`` (file offset ``base + pos``), or None if torn."""
    if len(buf) - pos < _FRAME.size:
        return None
    length, crc = _FRAME.unpack_from(buf, pos)
    start = pos + _FRAME.size
    if length < _PAYLOAD_HEAD.size or length > MAX_RECORD_BYTES or len(buf) - start < length:
        return None
    payload = bytes(buf[start : start + length])
    if zlib.crc32(payload) != crc:
        return None
    flags, klen = _PAYLOAD_HEAD.unpack_from(payload, 0)
    if _PAYLOAD_HEAD.size + klen > length:
        return None
    key = payload[_PAYLOAD_HEAD.size : _PAYLOAD_HEAD.size + klen]
    value = payload[_PAYLOAD_HEAD.size + klen :]
    return Record(base + pos, base + start + length, flags, key, value)


class Segment:
    """One spool file: appended by its owner, read by a sender, deleted once all acked."""

    def __init__(
        self,
        path: Path,
        fd: int,
        header: dict[str, Any],
        *,
        data_start: int,
        size: int,
        acked: int,
        active: bool,
        seq: int,
    ) -> None:
        self.path = path
        self.fd = fd
        self.header = header
        self.data_start = data_start
        self.size = size  # end of the last complete record
        self.acked = acked  # every record below this offset is acknowledged
        self.active = active  # the owner may still append
        self.seq = seq  # order among the segments a sender walks
        self._ack_fd: int | None = None
        self._ack_written = acked
        self.dirty = False  # written since the last fsync
        self.removed = False

    # ---------------------------------------------------------------- creation

    @classmethod
    def create(cls, directory: Path, header: dict[str, Any], seq: int) -> Segment:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        name = f"seg-{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}{SUFFIX}"
        path = directory / name
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            head = MAGIC + frame(FLAG_HEADER, b"", json.dumps(header).encode())
            _write_all(fd, head)
            os.fsync(fd)
            _fsync_dir(directory)
        except BaseException:
            os.close(fd)
            raise
        n = len(head)
        return cls(path, fd, header, data_start=n, size=n, acked=n, active=True, seq=seq)

    @classmethod
    def open_orphan(cls, path: Path, seq: int) -> Segment | None:
        """Open a segment left by another process; None if its owner still runs it.

        A file that is not a spool segment is renamed ``*.bad`` and skipped.
        """
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            if not path.exists():  # deleted by its owner between listing and locking
                os.close(fd)
                return None
            size = os.fstat(fd).st_size
            head = os.pread(fd, min(size, 65536), 0)
            header_rec = parse_at(head, len(MAGIC), 0) if head.startswith(MAGIC) else None
            if header_rec is None or not header_rec.flags & FLAG_HEADER:
                if size < len(MAGIC) + _FRAME.size and MAGIC.startswith(head[: len(MAGIC)]):
                    # Killed while writing its header: it holds no record.
                    os.close(fd)
                    with contextlib.suppress(OSError):
                        path.unlink()
                    return None
                log.error("spool file %s is not a runstream segment; renamed to .bad", path)
                os.close(fd)
                with contextlib.suppress(OSError):
                    path.rename(path.with_suffix(path.suffix + ".bad"))
                return None
            header = json.loads(header_rec.value)
            start = header_rec.end
            acked = max(start, _read_ack(path))
            return cls(
                path, fd, header, data_start=start, size=size, acked=min(acked, size),
                active=False, seq=seq,
            )
        except BaseException:
            os.close(fd)
            raise

    # ---------------------------------------------------------------- writing

    def append(self, blob: bytes) -> int:
        _write_all(self.fd, blob)
        self.size += len(blob)
        self.dirty = True
        return self.size

    def sync(self, fsync: bool = True) -> None:
        if self.dirty:
            if fsync:
                os.fdatasync(self.fd)
            self.dirty = False

    # ---------------------------------------------------------------- reading

    def read(self, offset: int, hint: int = 65536) -> Record | None:
        """The record at ``offset``; None at the end or at a torn tail."""
        if offset >= self.size:
            return None
        want = min(max(hint, _FRAME.size), self.size - offset)
        buf = os.pread(self.fd, want, offset)
        if len(buf) >= _FRAME.size:
            length = _FRAME.unpack_from(buf, 0)[0]
            need = _FRAME.size + length
            if len(buf) < need <= self.size - offset and length <= MAX_RECORD_BYTES:
                buf = os.pread(self.fd, need, offset)
        return parse_at(buf, 0, offset)

    def records(self, offset: int | None = None) -> list[Record]:
        """Every complete record from ``offset`` (default: the first) to the end or a torn tail."""
        out: list[Record] = []
        pos = self.data_start if offset is None else offset
        while True:
            rec = self.read(pos)
            if rec is None:
                return out
            out.append(rec)
            pos = rec.end

    # ----------------------------------------------------------------- acking

    @property
    def ack_path(self) -> Path:
        return self.path.with_name(self.path.name + ".ack")

    @property
    def fully_acked(self) -> bool:
        return self.acked >= self.size

    def persist_ack(self) -> None:
        """Record the acked offset (no fsync: a stale value only means a deduplicated resend)."""
        if self.acked == self._ack_written or self.removed:
            return
        if self._ack_fd is None:
            self._ack_fd = os.open(self.ack_path, os.O_RDWR | os.O_CREAT, 0o600)
        os.pwrite(self._ack_fd, _ACK.pack(self.acked), 0)
        self._ack_written = self.acked

    def close(self) -> None:
        if self._ack_fd is not None:
            os.close(self._ack_fd)
            self._ack_fd = None
        if self.fd >= 0:
            os.close(self.fd)  # releases the flock
            self.fd = -1

    def remove(self) -> None:
        """Delete the segment (all of it was acknowledged) and its ack file."""
        # Unlink before closing: another process must never lock a file we still delete.
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        with contextlib.suppress(FileNotFoundError):
            self.ack_path.unlink()
        self.removed = True
        self.close()

    def truncate_torn_tail(self, at: int) -> None:
        """A reader found a torn record at ``at``: treat the segment as ending there."""
        if at < self.size:
            log.warning(
                "spool segment %s: %d byte(s) after offset %d are a torn record (the writer "
                "died mid-write; those events were never sent) and are ignored",
                self.path.name, self.size - at, at,
            )
            self.size = at

    def __repr__(self) -> str:
        return f"Segment({self.path.name}, size={self.size}, acked={self.acked})"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _fsync_dir(directory: Path) -> None:
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def _read_ack(path: Path) -> int:
    try:
        data = path.with_name(path.name + ".ack").read_bytes()
    except OSError:
        return 0
    return _ACK.unpack_from(data)[0] if len(data) >= _ACK.size else 0


class SpoolWriter:
    """The segments of one client process, appended in order; shared with its sender."""

    def __init__(
        self,
        directory: Path,
        header: dict[str, Any],
        *,
        segment_bytes: int = 16 << 20,
        fsync: bool = True,
    ) -> None:
        self.directory = directory
        self.header = {
            "v": 1,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "created_ms": time.time_ns() // 1_000_000,
            **header,
        }
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self.segments: list[Segment] = []
        self.active: Segment | None = None
        self._seq = 0
        self.bytes_written = 0

    def roll(self) -> None:
        if self.active is not None:
            self.active.sync(self.fsync)
            self.active.active = False
        self._seq += 1
        self.active = Segment.create(self.directory, self.header, self._seq)
        self.segments.append(self.active)

    def append(self, records: list[tuple[int, bytes, bytes]]) -> tuple[int, int]:
        """Append framed records to the active segment; return the end position (seq, offset)."""
        if self.active is None or self.active.size >= self.segment_bytes:
            self.roll()
        assert self.active is not None
        blob = b"".join([frame(f, k, v) for f, k, v in records])
        end = self.active.append(blob)
        self.bytes_written += len(blob)
        return (self.active.seq, end)

    def sync(self) -> None:
        if self.active is not None:
            self.active.sync(self.fsync)

    def end_position(self) -> tuple[int, int]:
        if self.active is None:
            return (0, 0)
        return (self.active.seq, self.active.size)

    def used_bytes(self) -> int:
        return sum(s.size for s in self.segments)

    def unacked_bytes(self) -> int:
        return sum(s.size - s.acked for s in self.segments)

    def reap(self) -> int:
        """Delete segments that are complete and fully acknowledged; persist ack offsets."""
        removed = 0
        for seg in list(self.segments):
            if not seg.active and seg.fully_acked:
                seg.remove()
                self.segments.remove(seg)
                removed += 1
            else:
                seg.persist_ack()
        return removed

    def close(self) -> list[Path]:
        """Seal the spool: delete what is acked, keep (and unlock) the rest; return kept paths."""
        kept = []
        if self.active is not None:
            self.active.sync(self.fsync)
            self.active.active = False
            self.active = None
        for seg in self.segments:
            if seg.fully_acked:
                seg.remove()
            else:
                seg.persist_ack()
                seg.close()
                kept.append(seg.path)
        self.segments = []
        return kept


def orphan_paths(directory: Path) -> list[Path]:
    """Segment files in ``directory``, oldest first (whether or not their owner still runs)."""
    try:
        return sorted(p for p in directory.iterdir() if p.name.startswith("seg-")
                      and p.name.endswith(SUFFIX))
    except FileNotFoundError:
        return []
