"""The training client: runs, the non-blocking metric path, the spool-first delivery thread.

Data path::

    log_metric ──deque.append──► [memory: ≤ max_pending_points]
                                      │  background thread, every flush_interval_ms
                                      │  (or at flush_points pending): columnar batches
                                      ▼
                       spool segment on local disk (write + fdatasync)
                                      │  same thread: idempotent producer, ≤ window in flight
                                      ▼
                             Kafka <prefix>.events ── ack ──► spool offset moves, file deleted

Every event is written to the spool before it is produced and leaves it only after the
broker acknowledged it, so what a SIGKILL can lose is what was still in memory: the points
and events logged during the last ``flush_interval_ms`` (25 ms by default; at most
``max_pending_points``, or the points of a ``log_metric_history`` call larger than that).
See ``README.md`` (training client) for the full contract.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import json
import logging
import operator
import os
import random
import socket
import sys
import threading
import time
import weakref
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from runstream.client import capture
from runstream.client.artifacts import ArtifactStore, StoredArtifact, artifact_uri, clean_artifact_path
from runstream.client.encode import encode_metric_series, encode_metrics
from runstream.client.sender import Sender
from runstream.client.settings import ClientSettings
from runstream.client.spool import FLAG_BARRIER, SpoolWriter
from runstream.errors import InvalidInput, RunstreamError
from runstream.schemas import (
    ArtifactLogged,
    Event,
    ExperimentCreated,
    ExperimentCreatedBody,
    ExperimentTagSet,
    ExperimentTagSetBody,
    ParamsLogged,
    RunCreated,
    RunCreatedBody,
    RunEnded,
    RunRenamed,
    TagDeleted,
    TagSet,
    encode_event,
    new_event,
    now_ms,
)
from runstream.schemas.ids import experiment_id_for_name, new_run_id
from runstream.settings import Settings

log = logging.getLogger("runstream.client")

DEFAULT_EXPERIMENT_ID = "0"
TERMINAL_STATUSES = ("FINISHED", "FAILED", "KILLED")
NOTE_TAG = "mlflow.note.content"
RUN_NAME_TAG = "mlflow.runName"
PARENT_TAG = "mlflow.parentRunId"


class ClientError(RunstreamError):
    """The training client was used in a way it cannot honour."""

    error_code = "INVALID_STATE"
    http_status = 400


class BackpressureTimeout(ClientError):
    """``max_block_s`` passed while ``log_metric`` waited for room.

    Nothing was dropped: the point of the call that raised is queued too (it was appended
    before the call waited), so it must not be logged again.
    """


class ClientClosed(ClientError):
    """The client was closed (or its background thread died); nothing more can be logged."""


# ------------------------------------------------------------------ queue items


class _Control:
    """A pre-encoded event queued behind the points logged before it."""

    __slots__ = ("run_id", "flags", "key", "value")

    def __init__(self, run_id: str | None, flags: int, key: bytes, value: bytes) -> None:
        self.run_id = run_id
        self.flags = flags
        self.key = key
        self.value = value


class _Series:
    """Points of one metric logged column by column (``log_metric_history``), at most
    ``flush_points`` of them: one ``metrics.packed`` event, packed by the background thread."""

    __slots__ = ("run_id", "key", "values", "steps", "timestamps")

    def __init__(self, run_id: str, key: str, values: array[float], steps: array[int],
                 timestamps: array[int]) -> None:
        self.run_id = run_id
        self.key = key
        self.values = values
        self.steps = steps
        self.timestamps = timestamps


class _Marker:
    """A flush request: released once everything queued before it is delivered (or spooled)."""

    __slots__ = ("done", "target", "result", "failures_before")

    def __init__(self) -> None:
        self.done: threading.Event = threading.Event()
        self.target: tuple[int, int] | None = None
        self.result: str = "pending"
        self.failures_before = 0  # the sender's failure count when the marker was spooled


class _ReattachQueue:
    """Stands in, in a forked child, for the queue of a run the parent started.

    The parent's background thread does not exist in the child: the first point logged
    re-attaches the run to a client of the child's own (as another rank would: it logs
    to the run, never ends it) and goes there.
    """

    __slots__ = ("run",)

    def __init__(self, run: Run) -> None:
        self.run = run

    def append(self, item: object) -> None:
        self.run._reattach()
        self.run._q.append(item)

    def __len__(self) -> int:
        return 0


class _ClosedQueue:
    """Stands in for the queue of an ended run: logging to it raises."""

    __slots__ = ("run_id",)

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id

    def append(self, _item: object) -> None:
        raise ClientError(f"run {self.run_id} has ended; start a new run to log more")

    def __len__(self) -> int:
        return 0


_first = itemgetter(0)
_key_of, _value_of, _step_of, _stamp_of = (itemgetter(i) for i in (1, 2, 3, 4))
_time_ns = time.time_ns

# Metric keys already checked (a set lookup keeps validation off the hot path).
_GOOD_KEYS: set[str] = set()


def _check_metric_key(key: object) -> None:
    if not isinstance(key, str) or not 1 <= len(key) <= 250:
        raise InvalidInput(f"metric key must be a string of 1 to 250 characters, got {key!r}")
    if len(_GOOD_KEYS) > 100_000:
        _GOOD_KEYS.clear()
    _GOOD_KEYS.add(key)


def _history_columns(
    values: Iterable[float], steps: Iterable[int], timestamps: Iterable[int] | int | None
) -> tuple[array[float], array[int], array[int]]:
    """The columns of ``log_metric_history`` as arrays of float64 and int64 (one ms repeated
    when ``timestamps`` is None or one integer), or InvalidInput saying what is wrong."""
    try:
        vals = _typed_array("d", values)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidInput(f"metric values must be numbers: {exc}") from None
    if steps is None:
        raise InvalidInput("steps are required: one integer per value")
    stps = _int64_column("steps", steps, len(vals))
    if timestamps is None:
        return vals, stps, array("q", (_time_ns() // 1_000_000,)) * len(vals)
    if isinstance(timestamps, bool):
        raise InvalidInput("timestamps must be ms: integers, not a bool")
    if isinstance(timestamps, Iterable):
        return vals, stps, _int64_column("timestamps", timestamps, len(vals))
    try:
        stamp = operator.index(timestamps)  # one ms for every point (an int, NumPy's too)
    except TypeError:
        raise InvalidInput(f"timestamps must be ms, got {timestamps!r}") from None
    if not -(1 << 63) <= stamp < 1 << 63:
        raise InvalidInput(f"timestamp must be ms within 64 bits, got {stamp}")
    return vals, stps, array("q", (stamp,)) * len(vals)


def _int64_column(name: str, column: Iterable[int], length: int) -> array[int]:
    try:
        ints = _typed_array("q", column)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidInput(f"{name} must be integers within 64 bits: {exc}") from None
    if len(ints) != length:
        raise InvalidInput(f"{length} values but {len(ints)} {name}")
    return ints


# The buffer formats of 8-byte items an array of typecode "d" or "q" copies as they are.
_SAME_ITEMS = {"d": ("d",), "q": ("q", "l")}


def _typed_array(typecode: str, column: Iterable[Any]) -> array[Any]:
    """``column`` as an array of ``typecode``. A one-dimensional contiguous buffer of the
    same 8-byte items (a NumPy float64 or int64 array) is copied in one go: made item by
    item it costs 120-150 ns a point. Raw bytes are refused: their items would be read as
    machine words."""
    if isinstance(column, (bytes, bytearray, memoryview, str)):
        raise TypeError(f"a {type(column).__name__} is not a column of numbers")
    if not isinstance(column, (list, tuple, range, array)):
        try:
            view = memoryview(column)  # type: ignore[arg-type]
        except TypeError:
            view = None
        if (view is not None and view.ndim == 1 and view.c_contiguous and view.itemsize == 8
                and view.format in _SAME_ITEMS[typecode]):
            out = array(typecode)
            out.frombytes(view.cast("B"))
            return out
    return array(typecode, column)


def _validation_message(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)[:3]
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)


# ---------------------------------------------------------------- process exit

_LIVE_CLIENTS: weakref.WeakSet[Client] = weakref.WeakSet()
_EXIT_HOOKS: list[Callable[[], None]] = []
_UNCAUGHT: list[type[BaseException]] = []
_installed = False


def exit_status() -> str:
    """The status open runs get at interpreter exit: an uncaught exception decides it."""
    if not _UNCAUGHT:
        return "FINISHED"
    return "KILLED" if issubclass(_UNCAUGHT[-1], KeyboardInterrupt) else "FAILED"


def _install_process_hooks() -> None:
    global _installed
    if _installed:
        return
    _installed = True
    previous = sys.excepthook

    def excepthook(exc_type: type[BaseException], exc: BaseException, tb: Any) -> None:
        if not (issubclass(exc_type, SystemExit) and exc.code in (0, None)):  # type: ignore[attr-defined]
            _UNCAUGHT.append(exc_type)
        previous(exc_type, exc, tb)

    sys.excepthook = excepthook
    atexit.register(_at_exit)
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_in_child)


def _at_exit() -> None:
    for hook in list(_EXIT_HOOKS):
        try:
            hook()
        except Exception:  # noqa: BLE001 - exiting; report and go on
            log.exception("runstream: exit hook failed")
    for client in list(_LIVE_CLIENTS):
        try:
            client.close()
        except Exception:  # noqa: BLE001
            log.exception("runstream: closing the client at exit failed")


def _after_fork_in_child() -> None:
    # The parent's background thread does not exist here, and the parent's spool files
    # (and their locks) are the parent's: forget them without touching the files. Runs
    # the parent had open re-attach to a client of this process when first used.
    for client in list(_LIVE_CLIENTS):
        client._abandon_after_fork()
    _LIVE_CLIENTS.clear()


def successor(client: Client) -> Client:
    """The client of this process that carries on for ``client`` (made in a forked child)."""
    if client._pid == os.getpid() and not client._closed:
        return client
    nxt = client._successor
    if nxt is None or nxt._pid != os.getpid() or nxt._closed:
        nxt = client._successor = Client(client.settings, client.options)
    return nxt


# ---------------------------------------------------------------------- run info


@dataclass
class RunInfo:
    """The attributes MLflow users read from ``run.info``."""

    run_id: str
    experiment_id: str
    run_name: str
    artifact_uri: str
    user_id: str
    status: str = "RUNNING"
    start_time: int | None = None
    end_time: int | None = None
    lifecycle_stage: str = "active"

    @property
    def run_uuid(self) -> str:
        return self.run_id


_ADJECTIVES = ("amber", "brisk", "calm", "deft", "eager", "fleet", "gentle", "hardy", "keen",
               "lucid", "merry", "nimble", "placid", "quick", "sturdy", "tidy", "vivid", "witty")
_NOUNS = ("badger", "crane", "dolphin", "falcon", "gecko", "heron", "ibex", "jackal", "koala",
          "lynx", "marten", "newt", "otter", "puffin", "quail", "robin", "stoat", "wren")


def random_run_name() -> str:
    return f"{random.choice(_ADJECTIVES)}-{random.choice(_NOUNS)}-{random.randint(100, 999)}"


# --------------------------------------------------------------------------- run


class Run:
    """A run this process logs to: created here (owner) or attached to (another rank's).

    Use it as a context manager: leaving the block normally ends the run FINISHED, with an
    exception FAILED, with KeyboardInterrupt KILLED.
    """

    __slots__ = (
        "run_id", "experiment_id", "info", "owner", "_client", "_q", "_soft", "_ended",
        "_on_end", "__weakref__",
    )

    def __init__(
        self,
        client: Client,
        run_id: str,
        experiment_id: str | None,
        *,
        info: RunInfo,
        owner: bool,
        on_end: Callable[[Run], None] | None = None,
    ) -> None:
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.info = info
        self.owner = owner
        self._client = client
        self._q: deque[Any] | _ClosedQueue | _ReattachQueue = client._q
        self._soft = client._soft
        self._ended = False
        self._on_end = on_end

    # ---------------------------------------------------------------- metrics

    def log_metric(
        self, key: str, value: float, step: int | None = None, timestamp: int | None = None
    ) -> None:
        """Queue one point and return (no I/O, no lock). ``timestamp`` in ms, default now."""
        if key not in _GOOD_KEYS:
            _check_metric_key(key)
        q = self._q
        q.append((
            self.run_id,
            key,
            value if value.__class__ is float else float(value),  # a float as is: ~10% less
            0 if step is None else step if step.__class__ is int else int(step),
            _time_ns() // 1_000_000 if timestamp is None else int(timestamp),
        ))
        if len(q) >= self._soft:
            self._client._pressure()

    def log_metrics(
        self, metrics: Mapping[str, float], step: int | None = None, timestamp: int | None = None
    ) -> None:
        ts = _time_ns() // 1_000_000 if timestamp is None else int(timestamp)
        st = 0 if step is None else int(step)
        run_id = self.run_id
        q = self._q
        for key, value in metrics.items():
            if key not in _GOOD_KEYS:
                _check_metric_key(key)
            q.append((run_id, key, float(value), st, ts))
        if len(q) >= self._soft:
            self._client._pressure()

    def log_metric_history(
        self,
        key: str,
        values: Iterable[float],
        steps: Iterable[int],
        timestamps: Iterable[int] | int | None = None,
    ) -> int:
        """Queue many points of one metric, column by column, and return how many.

        For what a loop collected: per-batch losses moved off the GPU once an epoch, an
        evaluation curve, a history copied from elsewhere. ``values`` are numbers, ``steps``
        integers, ``timestamps`` ms per point, one ms for all, or None for now; any sequence
        (list, tuple, ``array``, NumPy array). The columns are copied into arrays here (tens
        of ns a point for a list, one copy for a NumPy float64 or int64 array, against ~1 µs
        a ``log_metric`` call), and bad input raises InvalidInput with nothing queued. The
        points count towards ``max_pending_points`` like ``log_metric``'s: once they are all
        queued (in events of ``flush_points``), the call waits for room as ``log_metric``
        does, and a BackpressureTimeout leaves them queued (nothing to re-log); so one call
        of more points than the bound holds them all in memory at once (it holds them
        already). They keep their order with everything else logged to the run.
        """
        if key not in _GOOD_KEYS:
            _check_metric_key(key)
        self._live()
        vals, stps, stamps = _history_columns(values, steps, timestamps)
        n = len(vals)
        if not n:
            return 0
        client = self._client
        size = client._batch
        # Counted before they are queued (the background thread may drain a chunk at once);
        # what an interruption left unqueued is taken back.
        client._count_series(n)
        queued = 0
        try:
            for start in range(0, n, size):
                end = min(start + size, n)
                self._q.append(_Series(
                    self.run_id, key, vals[start:end], stps[start:end], stamps[start:end]
                ))
                queued = end
        except BaseException:
            client._count_series(queued - n)
            raise
        if client._pending_points() >= client._soft:
            client._pressure()
        return n

    # ------------------------------------------------------- params and tags

    def _live(self) -> None:
        if self._ended:
            raise ClientError(f"run {self.run_id} has ended; start a new run to log more")
        if self._client._pid != os.getpid():
            self._reattach()

    def _reattach(self) -> None:
        """In a forked child: log through this process's client; the parent owns the run."""
        client = successor(self._client)
        self._client = client
        self._soft = client._soft
        self.owner = False
        if not self._ended:
            self._q = client._q

    def log_param(self, key: str, value: Any) -> Any:
        self.log_params({key: value})
        return value

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._live()
        if not params:
            return
        kvs = [{"key": str(k), "value": _stringify(v)} for k, v in params.items()]
        # At most 6 KB a value: 500 params an event stay far below the broker's size limit.
        # Every chunk is validated before any is queued: all of the call, or none of it.
        events = [self._client._new(ParamsLogged, {"params": kvs[start : start + 500]},
                                    run_id=self.run_id)
                  for start in range(0, len(kvs), 500)]
        for event in events:
            self._client.publish(event)

    def set_tag(self, key: str, value: Any) -> None:
        self.set_tags({key: value})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._live()
        for key, value in tags.items():
            text = _stringify(value)
            self._client._publish_new(TagSet, {"key": str(key), "value": text}, run_id=self.run_id)
            if key == RUN_NAME_TAG:
                self._client._publish_new(RunRenamed, {"name": text}, run_id=self.run_id)
                self.info.run_name = text

    def delete_tag(self, key: str) -> None:
        self._live()
        self._client._publish_new(TagDeleted, {"key": str(key)}, run_id=self.run_id)

    def set_note(self, text: str) -> None:
        """The run's description, shown on its page (tag ``mlflow.note.content``)."""
        self.set_tag(NOTE_TAG, text)

    def set_name(self, name: str) -> None:
        """Rename the run (``run.renamed`` plus the ``mlflow.runName`` tag)."""
        self.set_tag(RUN_NAME_TAG, name)

    # -------------------------------------------------------------- artifacts

    def _artifact_target(self) -> str:
        self._live()
        if self.experiment_id is None:
            raise ClientError(
                f"run {self.run_id} was attached without its experiment id; set "
                "RUNSTREAM_EXPERIMENT_ID (or pass experiment_id) to log artifacts"
            )
        return self.experiment_id

    def _logged(self, stored: Iterable[StoredArtifact]) -> list[StoredArtifact]:
        out = list(stored)
        for a in out:
            self._client._publish_new(
                ArtifactLogged,
                {"path": a.path, "size": a.size, "digest": a.digest, "is_model": a.is_model},
                run_id=self.run_id,
            )
        return out

    def log_artifact(self, local_path: str | os.PathLike[str], artifact_path: str | None = None
                     ) -> list[StoredArtifact]:
        """Copy a file (or a directory, under its own name) into the run's artifacts."""
        exp = self._artifact_target()
        local = Path(local_path)
        base = clean_artifact_path(artifact_path)
        store = self._client.artifacts
        if local.is_dir():
            target = "/".join(p for p in (base, local.name) if p)
            return self._logged(store.put_tree(exp, self.run_id, local, target))
        if not local.is_file():
            raise InvalidInput(f"{local} does not exist")
        rel = "/".join(p for p in (base, local.name) if p)
        return self._logged([store.put_file(exp, self.run_id, local, rel)])

    def log_artifacts(self, local_dir: str | os.PathLike[str], artifact_path: str | None = None
                      ) -> list[StoredArtifact]:
        """Copy every file under ``local_dir`` into ``artifact_path`` (a model dir is marked)."""
        exp = self._artifact_target()
        return self._logged(self._client.artifacts.put_tree(
            exp, self.run_id, Path(local_dir), clean_artifact_path(artifact_path)))

    def log_model(self, local_dir: str | os.PathLike[str], artifact_path: str = "model"
                  ) -> list[StoredArtifact]:
        """Log a model directory (MLflow layout, with an ``MLmodel`` file): every file is a model file."""
        exp = self._artifact_target()
        return self._logged(self._client.artifacts.put_tree(
            exp, self.run_id, Path(local_dir), clean_artifact_path(artifact_path), is_model=True))

    def log_text(self, text: str, artifact_file: str) -> StoredArtifact:
        exp = self._artifact_target()
        stored = self._client.artifacts.put_bytes(exp, self.run_id, artifact_file, text.encode())
        return self._logged([stored])[0]

    def log_dict(self, dictionary: Mapping[str, Any], artifact_file: str) -> StoredArtifact:
        """A dict as JSON (also valid YAML, whatever the file's extension)."""
        return self.log_text(json.dumps(dictionary, indent=2, sort_keys=True, default=str),
                             artifact_file)

    def get_artifact_uri(self, artifact_path: str | None = None) -> str:
        rel = clean_artifact_path(artifact_path)
        return self.info.artifact_uri + (f"/{rel}" if rel else "")

    # ------------------------------------------------------------------- end

    @property
    def ended(self) -> bool:
        return self._ended

    def end(self, status: str = "FINISHED") -> str:
        """End the run (owner only publishes ``run.ended``) and flush: return
        "delivered", "spooled" (broker away: on disk, re-sent later) or "timeout"."""
        if status not in TERMINAL_STATUSES:
            raise InvalidInput(f"status must be one of {', '.join(TERMINAL_STATUSES)}: {status!r}")
        if self._ended:
            return "ended"
        if self._client._pid != os.getpid():
            self._reattach()  # a forked child: flush its points, leave the run to the parent
        self._ended = True
        self._q = _ClosedQueue(self.run_id)
        end = now_ms()
        if self.owner:
            self._client._publish_new(
                RunEnded, {"status": status, "end_time_ms": end}, run_id=self.run_id
            )
            self.info.status = status
            self.info.end_time = end
        self._client._run_ended(self)
        try:
            return self._client.flush()
        finally:
            if self._on_end is not None:
                self._on_end(self)

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 _tb: Any) -> None:
        self.end(status_for_exception(exc_type, exc))

    def __repr__(self) -> str:
        return f"<Run {self.run_id} experiment={self.experiment_id} status={self.info.status}>"


def status_for_exception(exc_type: type[BaseException] | None, exc: BaseException | None) -> str:
    if exc_type is None:
        return "FINISHED"
    if issubclass(exc_type, KeyboardInterrupt):
        return "KILLED"
    if issubclass(exc_type, SystemExit) and getattr(exc, "code", 1) in (0, None):
        return "FINISHED"
    return "FAILED"


def _stringify(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


# ------------------------------------------------------------------------ client


@dataclass
class ClientStats:
    points_spooled: int = 0
    events_spooled: int = 0
    bytes_spooled: int = 0
    drains: int = 0
    blocked_calls: int = 0
    blocked_s: float = 0.0
    spool_full_cycles: int = 0
    orphan_replays: list[str] = field(default_factory=list)


class Client:
    """One per process (the fluent API makes it on first use); owns the background thread."""

    def __init__(
        self,
        settings: Settings | None = None,
        options: ClientSettings | None = None,
    ) -> None:
        from runstream.deploy.brokers import bootstrap_from_env

        self.settings = settings or Settings()
        self.options = opts = options or ClientSettings()
        self.bootstrap = self.settings.kafka_bootstrap or bootstrap_from_env()
        self.topic = self.settings.events_topic
        self.producer_name = f"{socket.gethostname()}/{os.getpid()}"
        self.artifacts = ArtifactStore(self.settings.artifacts_dir)
        self.stats = ClientStats()
        self._pid = os.getpid()
        self._q: deque[Any] = deque()
        # Points queued in _Series items (each is one deque item): with len(self._q), what
        # max_pending_points bounds. Changed by callers and the background thread: locked.
        self._series_points = 0
        self._series_lock = threading.Lock()
        self._max_pending = opts.max_pending_points
        self._soft = max(1, min(opts.flush_points, opts.max_pending_points))
        self._batch = opts.flush_points
        self._drain_max = max(8 * opts.flush_points, opts.max_pending_points)
        self._interval = opts.flush_interval_ms / 1000
        self._spool_max = opts.spool_max_bytes
        self._wake = threading.Event()
        self._room = threading.Condition()
        self._waiting = 0
        self._markers: list[_Marker] = []
        self._closing = False
        self._closed = False
        self._stop_io = False
        self._close_lock = threading.Lock()
        self._io_error: BaseException | None = None
        self._open_runs: dict[str, Run] = {}
        self._runs_lock = threading.Lock()
        self._spool_full_since: float | None = None
        self.writer = SpoolWriter(
            opts.spool_dir,
            {"topic": self.topic, "bootstrap": self.bootstrap},
            segment_bytes=min(opts.spool_segment_bytes, max(4096, opts.spool_max_bytes // 4)),
            fsync=opts.spool_fsync,
        )
        self.sender = Sender(
            self.topic,
            self.bootstrap,
            self.writer.segments,
            delivery_timeout_ms=opts.delivery_timeout_ms,
            window_messages=opts.inflight_max_messages,
            window_bytes=opts.inflight_max_bytes,
        )
        self._git_cache: dict[Path | None, capture.GitInfo] = {}
        self._attached_runs: weakref.WeakSet[Run] = weakref.WeakSet()
        self._successor: Client | None = None
        _install_process_hooks()
        _LIVE_CLIENTS.add(self)
        self._thread = threading.Thread(target=self._io_main, name="runstream-client", daemon=True)
        self._thread.start()
        if self.bootstrap is None:
            log.warning(
                "runstream: no broker configured (RUNSTREAM_KAFKA_BOOTSTRAP); events are kept "
                "in the spool at %s until `runstream sync --bootstrap HOST:PORT`", opts.spool_dir,
            )
        if opts.replay_on_start:
            threading.Thread(target=self._replay_orphans, name="runstream-replay",
                             daemon=True).start()

    # ------------------------------------------------------------ runs

    def start_run(
        self,
        *,
        run_id: str | None = None,
        experiment_id: str | None = None,
        experiment_name: str | None = None,
        run_name: str | None = None,
        parent_run_id: str | None = None,
        tags: Mapping[str, Any] | None = None,
        description: str | None = None,
        create: bool = True,
        owner: bool = True,
        wait_for_ack: bool = False,
        on_end: Callable[[Run], None] | None = None,
    ) -> Run:
        """Create a run (``create``) or attach to an existing one, and return its handle.

        ``experiment_name`` publishes ``experiment.created`` (the id is derived from the name,
        the same in every process; the projector keeps the first). Without a name or an id
        the run goes to the default experiment "0". ``wait_for_ack`` returns only once
        ``run.created`` is acknowledged (or the broker is known to be away): distributed
        jobs release their other ranks after it.
        """
        self._check_open()
        if experiment_name is not None:
            named = experiment_id_for_name(experiment_name)
            if experiment_id is not None and experiment_id != named:
                raise InvalidInput(
                    f"experiment {experiment_name!r} has id {named}, not {experiment_id}")
            experiment_id = named
        if create and experiment_id is None:
            experiment_id = DEFAULT_EXPERIMENT_ID
        run_id = run_id or new_run_id()
        name = run_name or random_run_name()
        uri = artifact_uri(experiment_id, run_id) if experiment_id is not None else ""
        start = now_ms()
        user = capture.current_user()
        if create:
            if experiment_name is not None:
                self._publish_new(
                    ExperimentCreated,
                    ExperimentCreatedBody(
                        name=experiment_name,
                        artifact_location=f"mlflow-artifacts:/{experiment_id}",
                        creation_time_ms=start,
                    ),
                    experiment_id=experiment_id,
                )
            body = self._run_created_body(
                name=name, start=start, parent_run_id=parent_run_id, tags=tags or {},
                description=description, uri=uri, experiment_name=experiment_name, user=user,
            )
            self._publish_new(RunCreated, body, barrier=True, run_id=run_id,
                              experiment_id=experiment_id)
        info = RunInfo(run_id=run_id, experiment_id=experiment_id or "", run_name=name,
                       artifact_uri=uri, user_id=user, start_time=start if create else None)
        run = Run(self, run_id, experiment_id, info=info, owner=owner, on_end=on_end)
        if owner:
            with self._runs_lock:
                self._open_runs[run_id] = run
        else:
            self._attached_runs.add(run)
        if create and wait_for_ack:
            result = self.flush(self.options.start_ack_timeout_s)
            if result != "delivered":
                log.warning("runstream: run.created of %s not acknowledged (%s); other ranks' "
                            "events may reach the log first", run_id, result)
        return run

    def attach(self, run_id: str, experiment_id: str | None = None) -> Run:
        """A handle on a run another process created: logs, but never creates or ends it."""
        return self.start_run(run_id=run_id, experiment_id=experiment_id, create=False,
                              owner=False)

    def _run_created_body(
        self, *, name: str, start: int, parent_run_id: str | None, tags: Mapping[str, Any],
        description: str | None, uri: str, experiment_name: str | None, user: str,
    ) -> RunCreatedBody:
        source = capture.source_info()
        if source.directory not in self._git_cache:
            self._git_cache[source.directory] = capture.git_info(source.directory)
        git = self._git_cache[source.directory]
        env = capture.environment()
        system: dict[str, str] = {
            "mlflow.user": user,
            "mlflow.source.name": source.name,
            "mlflow.source.type": source.type,
            RUN_NAME_TAG: name,
        }
        if source.entry_point:
            system["mlflow.source.entryPoint"] = source.entry_point
        if git.commit:
            system["mlflow.source.git.commit"] = git.commit
        if git.remote:
            system["mlflow.source.git.repoURL"] = git.remote
            system["mlflow.gitRepoURL"] = git.remote
        if git.branch:
            system["mlflow.source.git.branch"] = git.branch
        if parent_run_id:
            system[PARENT_TAG] = parent_run_id
        if description:
            system[NOTE_TAG] = description
        all_tags = {**system, **{str(k): _stringify(v) for k, v in tags.items()}}
        return RunCreatedBody(
            name=all_tags.get(RUN_NAME_TAG, name),
            user=user,
            source_name=source.name,
            source_type=source.type,
            entry_point=source.entry_point,
            git_commit=git.commit,
            git_dirty=git.dirty,
            git_remote=git.remote,
            start_time_ms=start,
            parent_run_id=parent_run_id,
            tags=all_tags,
            python_version=env.python_version,
            packages=env.packages,
            command_line=env.command_line,
            host=env.host,
            artifact_uri=uri or None,
            experiment_name=experiment_name,
        )

    def set_experiment_tag(self, experiment_id: str, key: str, value: Any) -> None:
        self._publish_new(ExperimentTagSet, ExperimentTagSetBody(key=key, value=_stringify(value)),
                          experiment_id=experiment_id)

    def create_experiment(self, name: str) -> str:
        """Publish ``experiment.created`` for ``name``; return its id (derived from the name)."""
        exp_id: str = experiment_id_for_name(name)
        self._publish_new(
            ExperimentCreated,
            ExperimentCreatedBody(name=name, artifact_location=f"mlflow-artifacts:/{exp_id}",
                                  creation_time_ms=now_ms()),
            experiment_id=exp_id,
        )
        return exp_id

    def _run_ended(self, run: Run) -> None:
        with self._runs_lock:
            self._open_runs.pop(run.run_id, None)

    # ------------------------------------------------------------ publishing

    def _check_open(self) -> None:
        if self._closing or self._closed or self._pid != os.getpid():
            raise ClientClosed("the runstream client is closed")
        if self._io_error is not None:
            raise ClientClosed(f"the runstream client's background thread failed: "
                               f"{self._io_error!r}")

    def _new(self, cls: type[Event], body: Any, **ids: str | None) -> Event:
        try:
            event: Event = new_event(cls, body, producer=self.producer_name, **ids)
        except ValidationError as exc:
            raise InvalidInput(f"{cls.model_fields['type'].default}: "
                               f"{_validation_message(exc)}") from None
        return event

    def _publish_new(self, cls: type[Event], body: Any, *, barrier: bool = False,
                     **ids: str | None) -> Event:
        event = self._new(cls, body, **ids)
        self.publish(event, barrier=barrier)
        return event

    def publish(self, event: Event, *, barrier: bool = False) -> None:
        """Queue an event behind everything logged before it (encoded once, here)."""
        if self._closed:
            raise ClientClosed("the runstream client is closed")
        item = _Control(event.run_id, FLAG_BARRIER if barrier else 0, event.key.encode(),
                        encode_event(event))
        q = self._q
        q.append(item)
        if len(q) >= self._soft:
            self._pressure()

    def _pressure(self) -> None:
        """Called by the hot path once ``flush_points`` are pending: wake the flusher, and at
        ``max_pending_points`` wait for room (never drop)."""
        wake = self._wake
        if not wake.is_set():
            wake.set()
        if self._pending_points() >= self._max_pending:
            self._block()

    def _pending_points(self) -> int:
        """Points in memory, about: a queued event or flush request counts as one."""
        return len(self._q) + self._series_points

    def _count_series(self, points: int) -> None:
        """Points of _Series items queued (positive) or drained or never queued (negative)."""
        with self._series_lock:
            self._series_points += points

    def _block(self) -> None:
        opts = self.options
        t0 = time.monotonic()
        deadline = None if opts.max_block_s is None else t0 + opts.max_block_s
        warned = False
        self.stats.blocked_calls += 1
        with self._room:
            self._waiting += 1
            try:
                while self._pending_points() >= self._max_pending:
                    if self._io_error is not None or not self._thread.is_alive():
                        raise ClientClosed("the runstream client's background thread is not "
                                           f"running ({self._io_error!r}); points cannot be kept")
                    now = time.monotonic()
                    if deadline is not None and now >= deadline:
                        raise BackpressureTimeout(
                            f"{self._pending_points()} points pending (max_pending_points="
                            f"{self._max_pending}) for {now - t0:.1f}s: {self._why_full()}; "
                            "nothing was dropped"
                        )
                    if not warned and now - t0 > 1.0:
                        warned = True
                        log.warning("runstream: log_metric is waiting for room: %s",
                                    self._why_full())
                    self._wake.set()
                    self._room.wait(0.05 if deadline is None else min(0.05, deadline - now))
            finally:
                self._waiting -= 1
                self.stats.blocked_s += time.monotonic() - t0

    def _why_full(self) -> str:
        if self._spool_full_since is not None:
            return (f"the spool holds {self.writer.used_bytes()} bytes not yet acknowledged "
                    f"(spool_max_bytes={self._spool_max}) and the broker "
                    f"{self.bootstrap} does not acknowledge ({self.sender.stats.last_error})")
        return "the flusher is behind the logging rate"

    # ------------------------------------------------------------ flush and close

    def flush(self, timeout_s: float | None = None) -> str:
        """Wait until everything queued so far is acknowledged by the broker.

        Returns "delivered"; "spooled" when the broker is away (everything is on disk and
        re-sent later); "timeout" when ``timeout_s`` (default ``flush_timeout_s``) passed.
        """
        if self._closed or self._pid != os.getpid():
            return "closed"
        if self._io_error is not None or not self._thread.is_alive():
            return "failed"
        timeout = self.options.flush_timeout_s if timeout_s is None else timeout_s
        marker = _Marker()
        self._q.append(marker)
        self._wake.set()
        if not marker.done.wait(timeout):
            return "timeout"
        return marker.result

    def close(self, timeout_s: float | None = None) -> str:
        """End this client's open runs, flush, stop the thread; unacked events stay spooled."""
        with self._close_lock:
            if self._closed or self._closing:
                return "closed"
            if self._pid != os.getpid():
                return "closed"
            # From here the spool bound no longer holds points back: what is in memory
            # goes to disk rather than being lost with the process.
            self._closing = True
        status = exit_status()
        with self._runs_lock:
            open_runs = list(self._open_runs.values())
        for run in reversed(open_runs):
            try:
                run.end(status)
            except Exception:  # noqa: BLE001 - closing; keep going
                log.exception("runstream: ending run %s failed", run.run_id)
        result = self.flush(timeout_s)
        self._stop_io = True
        self._wake.set()
        self._thread.join(timeout=10)
        self._closed = True
        _LIVE_CLIENTS.discard(self)
        return result

    def _abandon_after_fork(self) -> None:
        self._closed = True
        self._q = deque()
        self._series_points = 0
        self._series_lock = threading.Lock()
        for seg in self.writer.segments:
            with contextlib.suppress(OSError):
                seg.close()
        self.writer.segments.clear()
        # (No lock here: a parent thread may have held it at the fork.)
        self._runs_lock = threading.Lock()
        self._room = threading.Condition()
        self._close_lock = threading.Lock()
        for run in list(self._open_runs.values()) + list(self._attached_runs):
            if not run.ended:
                run._q = _ReattachQueue(run)
        self._open_runs = {}

    # ------------------------------------------------------------ background thread

    def _io_main(self) -> None:
        try:
            self._io_loop()
        except BaseException as exc:  # noqa: BLE001 - reported, and every waiter released
            self._io_error = exc
            log.exception("runstream: the client's background thread failed; events still in "
                          "memory cannot be delivered")
        finally:
            try:
                if self._io_error is None:
                    self._drain(force=True)
                self.sender.close(0.5)
                kept = self.writer.close()
                if kept:
                    log.warning(
                        "runstream: %d spool segment(s) hold events the broker has not "
                        "acknowledged yet; the next runstream client on this machine (or "
                        "`runstream sync`) re-sends them: %s", len(kept),
                        ", ".join(str(p) for p in kept),
                    )
            except Exception:  # noqa: BLE001
                log.exception("runstream: closing the spool failed")
            for m in self._markers:
                m.result = "spooled" if self._io_error is None else "failed"
                m.done.set()
            for item in self._q:
                if isinstance(item, _Marker):
                    item.result = "failed"
                    item.done.set()
            with self._room:
                self._room.notify_all()

    def _io_loop(self) -> None:
        sender = self.sender
        wake = self._wake
        interval = self._interval
        next_drain = time.monotonic()
        while not self._stop_io:
            wait = next_drain - time.monotonic()
            if wait > 0 and not wake.is_set():
                if sender.has_pending:
                    sender.poll(min(wait, 0.005))
                else:
                    wake.wait(wait)
            if wake.is_set() or time.monotonic() >= next_drain:
                wake.clear()
                self._drain()
                next_drain = time.monotonic() + interval
            sender.step()
            self.writer.reap()
            self._settle_markers()

    def _spool_is_full(self) -> bool:
        writer = self.writer
        if writer.used_bytes() < self._spool_max:
            return False
        active = writer.active
        if active is not None and active.fully_acked:
            writer.roll()  # the acked active segment is the only thing in the way
            writer.reap()
            return writer.used_bytes() >= self._spool_max
        return True

    def _drain(self, force: bool = False) -> None:
        q = self._q
        if not q:
            return
        if not force and not self._closing and self._spool_is_full():
            if self._spool_full_since is None:
                self._spool_full_since = time.monotonic()
                log.warning(
                    "runstream: spool full (%d bytes unacknowledged, spool_max_bytes=%d) while "
                    "the broker is away; points wait in memory (max_pending_points=%d), then "
                    "log_metric blocks", self.writer.used_bytes(), self._spool_max,
                    self._max_pending,
                )
            self.stats.spool_full_cycles += 1
            return
        self._spool_full_since = None
        popleft = q.popleft
        n = min(len(q), self._drain_max)
        if not self._series_points:
            items = list(itertools.starmap(popleft, itertools.repeat((), n)))  # no bytecode a point
        else:
            # A _Series item holds up to flush_points points: the drain stops at _drain_max
            # points, not items, so that one spool write stays within the bounds.
            items, taken = [], 0
            while q and taken < self._drain_max:
                item = popleft()
                items.append(item)
                taken += len(item.values) if item.__class__ is _Series else 1
        records, markers, points, series = self._encode(items)
        if series:
            self._count_series(-series)
        if records:
            end = self.writer.append(records)
            self.writer.sync()
            self.stats.events_spooled += len(records)
            self.stats.bytes_spooled = self.writer.bytes_written
        else:
            end = self.writer.end_position()
        self.stats.points_spooled += points
        self.stats.drains += 1
        for m in markers:
            m.target = end
            m.failures_before = self.sender.stats.failed
            self._markers.append(m)
        if self._waiting:
            with self._room:
                self._room.notify_all()

    def _encode(
        self, items: list[Any]
    ) -> tuple[list[tuple[int, bytes, bytes]], list[_Marker], int, int]:
        """Turn queue items into spool records, keeping each run's events in logged order;
        also returns the points spooled, and how many of them came from _Series items.

        Consecutive points of a run become one columnar ``metrics.packed`` event (split at
        ``flush_points``), a _Series one of its own; an event of a run goes after that run's
        points logged before it.
        """
        out: list[tuple[int, bytes, bytes]] = []
        markers: list[_Marker] = []
        pending: dict[str, list[list[tuple[Any, ...]]]] = {}
        points = series = 0
        kinds = set(map(type, items))
        if kinds == {tuple}:
            controls: list[int] = []
        else:
            controls = [i for i, it in enumerate(items) if it.__class__ is not tuple]
        # Adjacent _Series of one run and metric (a loop of log_metric_history calls) go
        # out as one event of up to flush_points: fewer, larger events for every stage.
        acc: list[_Series] = []
        accumulated = 0
        prev = 0
        for i in itertools.chain(controls, (len(items),)):
            if i > prev:
                if acc:
                    out.append(self._encode_series(acc))
                    acc = []
                chunk = items[prev:i]
                points += len(chunk)
                runs = set(map(_first, chunk))
                if len(runs) == 1:
                    pending.setdefault(chunk[0][0], []).append(chunk)
                else:
                    groups: dict[str, list[tuple[Any, ...]]] = {}
                    for p in chunk:
                        groups.setdefault(p[0], []).append(p)
                    for run_id, pts in groups.items():
                        pending.setdefault(run_id, []).append(pts)
            if i < len(items):
                item = items[i]
                n = len(item.values) if item.__class__ is _Series else 0
                series += n
                if (n and acc and item.run_id == acc[0].run_id and item.key == acc[0].key
                        and accumulated + n <= self._batch):
                    acc.append(item)
                    accumulated += n
                    prev = i + 1
                    continue
                if acc:
                    out.append(self._encode_series(acc))
                    acc = []
                if item.__class__ is _Marker:
                    for run_id in list(pending):
                        self._emit_points(run_id, pending.pop(run_id), out)
                    markers.append(item)
                else:
                    if item.run_id is not None and item.run_id in pending:
                        self._emit_points(item.run_id, pending.pop(item.run_id), out)
                    if n:
                        acc, accumulated = [item], n
                    else:
                        out.append((item.flags, item.key, item.value))
            prev = i + 1
        if acc:
            out.append(self._encode_series(acc))
        for run_id in list(pending):
            self._emit_points(run_id, pending.pop(run_id), out)
        return out, markers, points + series, series

    def _encode_series(self, parts: list[_Series]) -> tuple[int, bytes, bytes]:
        """The spool record of adjacent _Series of one run and metric: one event."""
        first = parts[0]
        values, steps, stamps = first.values, first.steps, first.timestamps
        if len(parts) > 1:
            values = array("d", b"".join(p.values.tobytes() for p in parts))
            steps = array("q", b"".join(p.steps.tobytes() for p in parts))
            stamps = array("q", b"".join(p.timestamps.tobytes() for p in parts))
        return (0, first.run_id.encode(), encode_metric_series(
            first.run_id, first.key, values, steps, stamps,
            producer=self.producer_name, event_time_ms=now_ms(),
        ))

    def _emit_points(self, run_id: str, chunks: list[list[tuple[Any, ...]]],
                     out: list[tuple[int, bytes, bytes]]) -> None:
        pts = chunks[0] if len(chunks) == 1 else list(itertools.chain.from_iterable(chunks))
        key = run_id.encode()
        t = now_ms()
        size = self._batch
        for start in range(0, len(pts), size):
            part = pts[start : start + size]
            out.append((0, key, encode_metrics(
                run_id,
                list(map(_key_of, part)),
                list(map(_value_of, part)),
                list(map(_step_of, part)),
                list(map(_stamp_of, part)),
                producer=self.producer_name,
                event_time_ms=t,
            )))

    def _settle_markers(self) -> None:
        if not self._markers:
            return
        sender = self.sender
        acked = sender.acked_position()
        # The broker counts as away for a flush once a delivery failed after the flush's
        # events were on disk (or the sender is between attempts): a stale "unhealthy"
        # from an earlier blip must not skip waiting for a broker that answers again.
        away = self.bootstrap is None or (not sender.healthy and sender.recovering)
        keep = []
        for m in self._markers:
            assert m.target is not None
            if acked >= m.target:
                m.result = "delivered"
                m.done.set()
            elif away or (not sender.healthy and sender.stats.failed > m.failures_before):
                m.result = "spooled"
                m.done.set()
            else:
                keep.append(m)
        self._markers = keep

    # ------------------------------------------------------------ orphans, stats

    def _replay_orphans(self) -> None:
        from runstream.client.replay import sync_spool

        try:
            report = sync_spool(self.options.spool_dir, timeout_s=60.0,
                                delivery_timeout_ms=self.options.delivery_timeout_ms,
                                only_reachable=True)
        except Exception:  # noqa: BLE001 - a background courtesy; `runstream sync` exists
            log.exception("runstream: re-sending the spool of earlier processes failed")
            return
        if report.segments:
            self.stats.orphan_replays.append(report.summary())
            log.info("runstream: %s", report.summary())

    def snapshot(self) -> dict[str, Any]:
        """Counters for tests, benchmarks and the curious."""
        s = self.sender.stats
        return {
            "pending_points": self._pending_points(),
            "waiting_callers": self._waiting,
            "blocked_calls": self.stats.blocked_calls,
            "blocked_s": round(self.stats.blocked_s, 3),
            "points_spooled": self.stats.points_spooled,
            "events_spooled": self.stats.events_spooled,
            "spool_used_bytes": self.writer.used_bytes(),
            "spool_unacked_bytes": self.writer.unacked_bytes(),
            "spool_full": self._spool_full_since is not None,
            "spool_full_cycles": self.stats.spool_full_cycles,
            "produced": s.produced,
            "acked": s.acked,
            "failed": s.failed,
            "resent": s.resent,
            "rewinds": s.rewinds,
            "queue_full": s.queue_full,
            "healthy": self.sender.healthy,
            "last_error": s.last_error,
        }
