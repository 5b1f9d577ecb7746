"""Applies a batch of events to the read model: a pure fold over the events, inside the caller's transaction.

The caller (the projector loop, or a unit test) opens the transaction, calls
:func:`apply_batch`, writes its offsets, and commits. Nothing here reads the clock, talks
to Kafka or HTTP, or commits.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc
from runstream.projections.read_model import DDL, RUN_RECORDS_SELECT
from runstream.schemas import (
    ArtifactLogged,
    Event,
    EventDecodeError,
    ExperimentCreated,
    ExperimentDeleted,
    ExperimentRenamed,
    ExperimentRestored,
    ExperimentTagDeleted,
    ExperimentTagSet,
    MetricsLogged,
    MetricsPacked,
    MetricsPackedBody,
    ParamsLogged,
    RunCreated,
    RunDeleted,
    RunEnded,
    RunPurged,
    RunRenamed,
    RunRestored,
    TagDeleted,
    TagSet,
    decode_event,
)


class SqlConnection(Protocol):
    """The part of a DB-API connection the projection needs (DuckDB's fits)."""

    def execute(self, query: str, parameters: Any = None) -> Any: ...

    def register(self, view_name: str, python_object: Any) -> Any: ...

    def unregister(self, view_name: str) -> Any: ...


@dataclass(frozen=True)
class Rejected:
    """An event that parsed but cannot be applied, and why."""

    event: Event
    reason: str


@dataclass
class BatchResult:
    applied: int = 0
    duplicates: int = 0
    points: int = 0
    rejected: list[Rejected] = field(default_factory=list)


@contextmanager
def _registered(con: SqlConnection, name: str, table: pa.Table) -> Iterator[None]:
    """``table`` visible to SQL as ``name`` for the block. When the block fails, DuckDB has
    aborted the transaction and refuses even the unregister: that error would replace the
    block's own (a conversion error blamed on an event becoming "transaction aborted", a
    failure of the store), so it is dropped; the view goes with the connection's state."""
    con.register(name, table)
    try:
        yield
    except BaseException:
        with suppress(Exception):
            con.unregister(name)
        raise
    con.unregister(name)


def create_read_model(con: SqlConnection) -> None:
    """Create every table, view and macro (idempotent)."""
    for statement in DDL:
        con.execute(statement)


# Run state as this batch sees it: None = unknown, "purged", or a lifecycle stage.
_RunState = str | None


_METRIC_SCHEMA = pa.schema([
    ("run_key", pa.int32()),
    ("key_id", pa.int32()),  # an index into the batch's list of metric keys
    ("step", pa.int64()),
    ("timestamp", pa.int64()),
    ("value", pa.float64()),
])
# An event with at least this many points becomes its own Arrow record batch, built from its
# columns in C (the body is already columnar: keys once, then an index per point). Smaller
# ones are gathered in lists first: a record batch costs some microseconds to make.
_OWN_BATCH_POINTS = 64
# A packed body's columns in the order of _METRIC_SCHEMA's last four, and their Arrow types.
_PACKED_COLUMNS = ("key_index", "steps", "timestamps", "values")
_PACKED_TYPES = (pa.int32(), pa.int64(), pa.int64(), pa.float64())


@dataclass
class _MetricBuffer:
    """The points of a batch, on their way to DuckDB as one Arrow table. Keys travel as
    integers into ``keys`` (the batch's distinct keys): deduplicating and grouping points
    on an integer costs DuckDB half of what it costs on the key string."""

    keys: list[str] = field(default_factory=list)
    key_ids: dict[str, int] = field(default_factory=dict)
    batches: list[pa.RecordBatch] = field(default_factory=list)
    run_key: list[int] = field(default_factory=list)
    key_id: list[int] = field(default_factory=list)
    step: list[int] = field(default_factory=list)
    timestamp: list[int] = field(default_factory=list)
    value: list[float] = field(default_factory=list)
    points: int = 0

    def _ids(self, keys: list[str]) -> list[int]:
        out = []
        for key in keys:
            key_id = self.key_ids.get(key)
            if key_id is None:
                key_id = self.key_ids[key] = len(self.keys)
                self.keys.append(key)
            out.append(key_id)
        return out

    def add(self, event: MetricsLogged | MetricsPacked, run_key: int) -> int:
        """One event's points. An event of _OWN_BATCH_POINTS or more becomes a record batch of
        its own, made in C: a packed body's columns are its own bytes, no Python object a
        point; a JSON body's integer lists go through array.array, whose C conversion beats
        pa.array's by a third. A constant column is a repeat. Smaller events join the lists."""
        body = event.body
        n = len(body) if isinstance(body, MetricsPackedBody) else len(body.values)
        self.points += n
        ids = self._ids(body.keys)
        if n < _OWN_BATCH_POINTS:
            if isinstance(body, MetricsPackedBody):
                index, steps, stamps, values = (body.column(c) for c in _PACKED_COLUMNS)
            else:
                index, steps, stamps, values = (
                    body.key_index, body.steps, body.timestamps, body.values)
            self.run_key.extend([run_key] * n)
            self.key_id.extend([ids[i] for i in index])
            self.step.extend(steps)
            self.timestamp.extend(stamps)
            self.value.extend(values)
            return n
        if isinstance(body, MetricsPackedBody):
            index, steps, stamps, values = (
                pa.Array.from_buffers(typ, n, [None, pa.py_buffer(body.native(column))])
                for column, typ in zip(_PACKED_COLUMNS, _PACKED_TYPES, strict=True))
        else:
            index = _ints(body.key_index, "i", pa.int32()) if len(ids) > 1 else None
            steps = _ints(body.steps, "q", pa.int64())
            stamps = _ints(body.timestamps, "q", pa.int64())
            values = pa.array(body.values, pa.float64())
        key_id = (pa.repeat(pa.scalar(ids[0], pa.int32()), n) if len(ids) == 1
                  else pc.take(pa.array(ids, pa.int32()), index))
        self.batches.append(pa.record_batch(
            [pa.repeat(pa.scalar(run_key, pa.int32()), n), key_id, steps, stamps, values],
            schema=_METRIC_SCHEMA,
        ))
        return n

    def __len__(self) -> int:
        return self.points

    def to_arrow(self) -> pa.Table:
        batches = list(self.batches)
        if self.value:
            batches.append(pa.record_batch([
                pa.array(self.run_key, pa.int32()),
                pa.array(self.key_id, pa.int32()),
                pa.array(self.step, pa.int64()),
                pa.array(self.timestamp, pa.int64()),
                pa.array(self.value, pa.float64()),
            ], schema=_METRIC_SCHEMA))
        return pa.Table.from_batches(batches, schema=_METRIC_SCHEMA)


def _ints(values: list[int], code: str, typ: pa.DataType) -> pa.Array:
    """An Arrow integer array of a list, by way of array.array (no nulls in these columns)."""
    return pa.Array.from_buffers(typ, len(values), [None, pa.py_buffer(array(code, values))])


def _arrow(columns: dict[str, tuple[Any, list[Any]]]) -> pa.Table:
    return pa.table({name: pa.array(values, typ) for name, (typ, values) in columns.items()})


@dataclass
class _Pending:
    """Changes of a batch gathered per table, written in bulk: DuckDB pays ~1 ms per
    statement (4 ms with ON CONFLICT), so row-at-a-time writes would bound the projector
    at a few hundred events per second."""

    placeholders: dict[str, tuple[str, int]] = field(default_factory=dict)
    runs: list[RunCreated] = field(default_factory=list)
    # run -> key -> (value, event_id, time): the first value in log order.
    params: dict[str, dict[str, tuple[str, str, int]]] = field(default_factory=dict)
    # later values for a key already buffered: (run, key, value, event_id, time)
    param_later: list[tuple[str, str, str, str, int]] = field(default_factory=list)
    # (run, key) -> value, or None for a delete: the last operation wins.
    tags: dict[tuple[str, str], str | None] = field(default_factory=dict)
    # run -> {"name", "status", "end_time"}: the last value of each wins.
    updates: dict[str, dict[str, Any]] = field(default_factory=dict)
    # run -> (stage, time of the first delete since the last restore, restored in batch)
    lifecycle: dict[str, tuple[str, int | None, bool]] = field(default_factory=dict)
    artifacts: dict[tuple[str, str], tuple[int, str, bool, int]] = field(default_factory=dict)
    metrics: _MetricBuffer = field(default_factory=_MetricBuffer)

    def empty(self) -> bool:
        return not (self.placeholders or self.runs or self.params or self.tags or self.updates
                    or self.lifecycle or self.artifacts or len(self.metrics))


class _BatchApplier:
    def __init__(self, con: SqlConnection, events: Sequence[Event]) -> None:
        self.con = con
        self.events = events
        self.result = BatchResult()
        self.pending = _Pending()
        self.runs: dict[str, _RunState] = {}
        # run id -> run_key, for every run this batch knows (created here or loaded).
        self.keys: dict[str, int] = {}
        self._last_key: int | None = None
        # Events of runs not created yet, parked until their run.created is applied: those
        # stored by earlier batches (for runs this batch creates), and this batch's own.
        self.parked_stored: dict[str, list[Event]] = {}
        self.parked_new: dict[str, list[Event]] = {}
        # Stored parked events that no longer decode: (run id, reason).
        self.unparkable: list[tuple[str, str]] = []

    def run(self) -> BatchResult:
        fresh = self._drop_already_applied()
        self._load_run_states(fresh)
        for event in fresh:
            reason = self._apply(event)
            if reason is None:
                self.result.applied += 1
            else:
                self.result.rejected.append(Rejected(event, reason))
        self._flush()
        self._raise_versions(fresh)
        self._store_parked()
        self._record_rejections()
        # Only applied events count as seen: a rejected one (say, for a run whose
        # run.created had not reached the log yet) may be resent and applied later.
        rejected = {r.event.event_id for r in self.result.rejected}
        applied_ids = [e.event_id for e in fresh if e.event_id not in rejected]
        if applied_ids:
            self.con.execute("INSERT INTO applied_events SELECT unnest(?)", [applied_ids])
        return self.result

    def _raise_versions(self, events: list[Event]) -> None:
        """One more version for every run an event of this batch was about, in the batch's
        transaction: whatever an event changes of a run (its row, params, tags, metrics)
        changes its record. A rejected event raises it too (a spurious raise only costs a
        query node one re-read, a missed one would serve a stale record); a parked one has no
        run yet, whose creation raises it when the event is applied. Their run_records
        documents fall behind until the projector refreshes them (refresh_run_records)."""
        keys = self.keys
        touched = {keys[e.run_id] for e in events if e.run_id in keys}
        if touched:
            self.con.execute(
                "UPDATE runs SET version = version + 1 WHERE run_key IN (SELECT unnest(?))",
                [sorted(touched)],
            )

    def _drop_already_applied(self) -> list[Event]:
        ids = [e.event_id for e in self.events]
        if not ids:
            return []
        seen = {
            row[0]
            for row in self.con.execute(
                "SELECT event_id FROM applied_events WHERE event_id IN (SELECT unnest(?))", [ids]
            ).fetchall()
        }
        fresh = []
        for event in self.events:
            if event.event_id in seen:
                self.result.duplicates += 1
                continue
            seen.add(event.event_id)
            fresh.append(event)
        return fresh

    def _load_run_states(self, events: Iterable[Event]) -> None:
        run_ids = sorted({e.run_id for e in events if e.run_id})
        if not run_ids:
            return
        for run_id, stage, run_key in self.con.execute(
            "SELECT run_id, lifecycle_stage, run_key FROM runs WHERE run_id IN (SELECT unnest($1)) "
            "UNION ALL SELECT run_id, 'purged', NULL FROM purged_runs "
            "WHERE run_id IN (SELECT unnest($1))",
            [run_ids],
        ).fetchall():
            if self.runs.get(run_id) != "purged":
                self.runs[run_id] = stage
            if run_key is not None:
                self.keys[run_id] = run_key
        created = sorted({e.run_id for e in events if isinstance(e, RunCreated)})
        if created:
            for run_id, event_json in self.con.execute(
                "SELECT run_id, event FROM parked_events WHERE run_id IN (SELECT unnest(?)) "
                "ORDER BY seq",
                [created],
            ).fetchall():
                try:
                    parked = decode_event(event_json)
                except EventDecodeError as exc:
                    # Parked by an older projector whose decoder let it through; this one
                    # refuses it (a bound added since): on record, not applied.
                    self.unparkable.append((run_id, exc.reason))
                    continue
                self.parked_stored.setdefault(run_id, []).append(parked)

    def _new_run_key(self) -> int:
        """The next run key: one more than the greatest given, in log order."""
        if self._last_key is None:
            ((last,),) = self.con.execute("SELECT coalesce(max(run_key), 0) FROM runs").fetchall()
            self._last_key = int(last)
        self._last_key += 1
        return self._last_key

    # ------------------------------------------------------------------ dispatch

    def _apply(self, event: Event) -> str | None:
        """Apply (or buffer) one event; return a rejection reason, or None when applied."""
        if isinstance(event, RunCreated):
            return self._run_created(event)
        if isinstance(
            event,
            ExperimentCreated | ExperimentRenamed | ExperimentDeleted | ExperimentRestored
            | ExperimentTagSet | ExperimentTagDeleted,
        ):
            return self._experiment_event(event)
        run_id = event.run_id
        if run_id is None:
            return "missing_run_id"
        state = self.runs.get(run_id)
        if state == "purged":
            return "run_purged"
        if state is None:
            # Another rank's events may reach the log before rank 0's run.created: they wait
            # here and are applied right after it, in their log order, as if they came after.
            self.parked_new.setdefault(run_id, []).append(event)
            return None
        pending = self.pending
        if isinstance(event, MetricsLogged | MetricsPacked):
            self.result.points += pending.metrics.add(event, self.keys[run_id])
        elif isinstance(event, ParamsLogged):
            buffered = pending.params.setdefault(run_id, {})
            for kv in event.body.params:
                if kv.key in buffered:
                    pending.param_later.append(
                        (run_id, kv.key, kv.value, event.event_id, event.event_time_ms)
                    )
                else:
                    buffered[kv.key] = (kv.value, event.event_id, event.event_time_ms)
        elif isinstance(event, TagSet):
            pending.tags[(run_id, event.body.key)] = event.body.value
        elif isinstance(event, TagDeleted):
            pending.tags[(run_id, event.body.key)] = None
        elif isinstance(event, RunRenamed):
            pending.updates.setdefault(run_id, {})["name"] = event.body.name
        elif isinstance(event, RunEnded):
            update = pending.updates.setdefault(run_id, {})
            update["status"] = event.body.status
            if event.body.end_time_ms is not None:
                update["end_time"] = event.body.end_time_ms
        elif isinstance(event, RunDeleted):
            # A second delete keeps the first deletion time: the retention clock does not
            # restart because someone clicked delete twice.
            _, first_delete, restored = pending.lifecycle.get(run_id, ("active", None, False))
            pending.lifecycle[run_id] = ("deleted", first_delete or event.event_time_ms, restored)
            self.runs[run_id] = "deleted"
        elif isinstance(event, RunRestored):
            pending.lifecycle[run_id] = ("active", None, True)
            self.runs[run_id] = "active"
        elif isinstance(event, RunPurged):
            self._flush()  # everything earlier in the batch goes with the run
            self._run_purged(event, run_id)
        elif isinstance(event, ArtifactLogged):
            body = event.body
            # A directory holding an MLmodel file is a logged model, as MLflow lays models out.
            is_model = body.is_model or body.path.rsplit("/", 1)[-1] == "MLmodel"
            pending.artifacts[(run_id, body.path)] = (
                body.size, body.digest, is_model, event.event_time_ms
            )
        else:
            return f"unhandled_type:{getattr(event, 'type', '?')}"
        return None

    # -------------------------------------------------------------- experiments

    def _experiment_event(self, event: Event) -> str | None:
        exp_id = event.experiment_id
        if exp_id is None:
            return "missing_experiment_id"
        if isinstance(event, ExperimentCreated):
            body = event.body
            created = body.creation_time_ms or event.event_time_ms
            # Many processes creating the same name publish the same id: the first
            # creation in log order sets the row, the others change nothing. A placeholder
            # left by a run that arrived first is filled in.
            self._flush_placeholders()
            self.con.execute(
                "INSERT INTO experiments (experiment_id, name, artifact_location, lifecycle_stage, "
                "creation_time, last_update_time, placeholder) "
                "VALUES (?, ?, ?, 'active', ?, ?, FALSE) "
                "ON CONFLICT DO UPDATE SET name = excluded.name, "
                "artifact_location = excluded.artifact_location, "
                "creation_time = excluded.creation_time, "
                "last_update_time = greatest(experiments.last_update_time, excluded.creation_time),"
                " placeholder = FALSE WHERE experiments.placeholder",
                [exp_id, body.name, body.artifact_location, created, created],
            )
            for key, value in body.tags.items():
                self.con.execute(
                    "INSERT INTO experiment_tags VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                    [exp_id, key, value],
                )
            return None
        exists = self.con.execute(
            "SELECT count(*) FROM experiments WHERE experiment_id = ?", [exp_id]
        ).fetchone()
        if not exists or not exists[0]:
            return "unknown_experiment"
        t = event.event_time_ms
        if isinstance(event, ExperimentRenamed):
            self.con.execute(
                "UPDATE experiments SET name = ?, last_update_time = ? WHERE experiment_id = ?",
                [event.body.name, t, exp_id],
            )
        elif isinstance(event, ExperimentDeleted):
            self.con.execute(
                "UPDATE experiments SET lifecycle_stage = 'deleted', deleted_time = ?, "
                "last_update_time = ? WHERE experiment_id = ?",
                [t, t, exp_id],
            )
        elif isinstance(event, ExperimentRestored):
            self.con.execute(
                "UPDATE experiments SET lifecycle_stage = 'active', deleted_time = NULL, "
                "last_update_time = ? WHERE experiment_id = ?",
                [t, exp_id],
            )
        elif isinstance(event, ExperimentTagSet):
            self.con.execute(
                "INSERT INTO experiment_tags VALUES (?, ?, ?) "
                "ON CONFLICT DO UPDATE SET value = excluded.value",
                [exp_id, event.body.key, event.body.value],
            )
        elif isinstance(event, ExperimentTagDeleted):
            self.con.execute(
                "DELETE FROM experiment_tags WHERE experiment_id = ? AND key = ?",
                [exp_id, event.body.key],
            )
        return None

    # --------------------------------------------------------------------- runs

    def _run_created(self, event: RunCreated) -> str | None:
        run_id = event.run_id
        state = self.runs.get(run_id)
        if state == "purged":
            return "run_purged"
        if state is not None:
            return None  # the same run created twice (a retried request): first one wins
        # A run may be applied before its experiment's creation event (another partition):
        # it leaves a placeholder that experiment.created later fills in, so both orders
        # end in the same row.
        self.pending.placeholders.setdefault(
            event.experiment_id,
            (event.body.experiment_name or event.experiment_id, event.event_time_ms),
        )
        self.pending.runs.append(event)
        self.keys[run_id] = self._new_run_key()
        for key, value in event.body.tags.items():
            self.pending.tags[(run_id, key)] = value
        self.runs[run_id] = "active"
        self._unpark(run_id)
        return None

    def _unpark(self, run_id: str) -> None:
        """Apply the events that waited for this run (stored ones first: they are older)."""
        stored = self.parked_stored.pop(run_id, [])
        if stored:
            self.con.execute("DELETE FROM parked_events WHERE run_id = ?", [run_id])
        for event in [*stored, *self.parked_new.pop(run_id, [])]:
            reason = self._apply(event)
            if reason is not None:
                self.result.rejected.append(Rejected(event, reason))

    def _store_parked(self) -> None:
        rows = [(run_id, e.model_dump_json()) for run_id, events in self.parked_new.items()
                for e in events]
        if not rows:
            return
        self.parked_new = {}
        self._insert(
            "INSERT INTO parked_events SELECT run_id, "
            "(SELECT coalesce(max(seq), 0) FROM parked_events) + n, event FROM _parked",
            "_parked",
            _arrow({"run_id": (pa.string(), [r for r, _ in rows]),
                    "n": (pa.int64(), list(range(1, len(rows) + 1))),
                    "event": (pa.string(), [e for _, e in rows])}),
        )

    def _run_purged(self, event: RunPurged, run_id: str) -> None:
        run_key = self.keys.pop(run_id)
        for table in (
            "run_params",
            "run_tags",
            "run_metric_history",
            "run_metric_summary",
            "run_artifacts",
            "run_records",
        ):
            self.con.execute(f"DELETE FROM {table} WHERE run_key = ?", [run_key])
        for table in ("param_conflicts", "runs"):
            self.con.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])
        self.con.execute(
            "INSERT INTO purged_runs VALUES (?, ?) ON CONFLICT DO NOTHING",
            [run_id, event.event_time_ms],
        )
        self.runs[run_id] = "purged"

    # -------------------------------------------------------------------- flush

    def _insert(self, sql: str, name: str, table: pa.Table) -> None:
        with _registered(self.con, name, table):
            self.con.execute(sql)

    def _flush_placeholders(self) -> None:
        ph = self.pending.placeholders
        if not ph:
            return
        self.pending.placeholders = {}
        ids = list(ph)
        self._insert(
            "INSERT INTO experiments (experiment_id, name, lifecycle_stage, creation_time, "
            "last_update_time, placeholder) SELECT id, name, 'active', t, t, TRUE FROM _ph "
            "WHERE id NOT IN (SELECT experiment_id FROM experiments)",
            "_ph",
            _arrow({"id": (pa.string(), ids), "name": (pa.string(), [ph[i][0] for i in ids]),
                    "t": (pa.int64(), [ph[i][1] for i in ids])}),
        )

    def _flush(self) -> None:
        pending = self.pending
        if pending.empty():
            return
        self._flush_placeholders()
        if pending.runs:
            self._insert_runs(pending.runs)
        if pending.params:
            self._flush_params()
        if pending.tags:
            self._flush_tags()
        if pending.updates:
            self._flush_updates()
        if pending.lifecycle:
            self._flush_lifecycle()
        if pending.artifacts:
            self._flush_artifacts()
        if len(pending.metrics):
            merge_metric_points(self.con, pending.metrics.to_arrow(), pending.metrics.keys)
        self.pending = _Pending()

    def _prior_start_max(self, events: list[RunCreated]) -> list[int | None]:
        """For each new run, in key order, the latest start time among the runs with a smaller
        key (a newest-first search checks its window against it: see queries.page_runs)."""
        ((latest,),) = self.con.execute("SELECT max(start_time) FROM runs").fetchall()
        out = []
        for event in events:
            out.append(latest)
            start = event.body.start_time_ms
            if start is not None and (latest is None or start > latest):
                latest = start
        return out

    def _insert_runs(self, events: list[RunCreated]) -> None:
        cols: dict[str, tuple[Any, list[Any]]] = {
            "run_id": (pa.string(), [e.run_id for e in events]),
            "run_key": (pa.int32(), [self.keys[e.run_id] for e in events]),
            "experiment_id": (pa.string(), [e.experiment_id for e in events]),
            "name": (pa.string(), [e.body.name for e in events]),
            "user_id": (pa.string(), [e.body.user for e in events]),
            "source_name": (pa.string(), [e.body.source_name for e in events]),
            "source_type": (pa.string(), [e.body.source_type for e in events]),
            "entry_point": (pa.string(), [e.body.entry_point for e in events]),
            "git_commit": (pa.string(), [e.body.git_commit for e in events]),
            "git_dirty": (pa.bool_(), [e.body.git_dirty for e in events]),
            "git_remote": (pa.string(), [e.body.git_remote for e in events]),
            "start_time": (pa.int64(), [e.body.start_time_ms for e in events]),
            "parent_run_id": (pa.string(), [e.body.parent_run_id for e in events]),
            "artifact_uri": (pa.string(), [e.body.artifact_uri for e in events]),
            "python_version": (pa.string(), [e.body.python_version for e in events]),
            "packages": (pa.list_(pa.string()), [e.body.packages for e in events]),
            "command_line": (pa.list_(pa.string()), [e.body.command_line for e in events]),
            "host": (pa.string(), [e.body.host for e in events]),
            "prior_start_max": (pa.int64(), self._prior_start_max(events)),
        }
        self._insert(
            "INSERT INTO runs (run_id, run_key, experiment_id, name, user_id, source_name, source_type, "
            "entry_point, git_commit, git_dirty, git_remote, status, start_time, end_time, "
            "lifecycle_stage, parent_run_id, artifact_uri, python_version, packages, "
            "command_line, host, prior_start_max) SELECT run_id, run_key, experiment_id, name, "
            "user_id, source_name, source_type, entry_point, git_commit, git_dirty, git_remote, "
            "'RUNNING', start_time, NULL, 'active', parent_run_id, artifact_uri, python_version, "
            "packages, command_line, host, prior_start_max FROM _new_runs",
            "_new_runs",
            _arrow(cols),
        )

    def _flush_params(self) -> None:
        pending = self.pending
        by_key = {self.keys[run_id]: run_id for run_id in pending.params}
        stored: dict[tuple[str, str], str] = {
            (by_key[r], k): v
            for r, k, v in self.con.execute(
                "SELECT run_key, key, value FROM run_params WHERE run_key IN (SELECT unnest(?))",
                [list(by_key)],
            ).fetchall()
        }
        # A param is set once. The first value in log order wins; a later, different value
        # is kept out of the params table and recorded as a conflict for operators.
        new: list[tuple[str, str, str]] = []
        conflicts: list[tuple[str, str, str, str, str, int]] = []
        for run_id, keys in pending.params.items():
            for key, (value, event_id, t) in keys.items():
                kept = stored.get((run_id, key))
                if kept is None:
                    new.append((run_id, key, value))
                    stored[(run_id, key)] = value
                elif kept != value:
                    conflicts.append((run_id, key, kept, value, event_id, t))
        for run_id, key, value, event_id, t in pending.param_later:
            kept = stored[(run_id, key)]
            if kept != value:
                conflicts.append((run_id, key, kept, value, event_id, t))
        if new:
            self._insert(
                "INSERT INTO run_params SELECT * FROM _params",
                "_params",
                _arrow({"run_key": (pa.int32(), [self.keys[n[0]] for n in new]),
                        "key": (pa.string(), [n[1] for n in new]),
                        "value": (pa.string(), [n[2] for n in new])}),
            )
        for row in conflicts:
            self.con.execute("INSERT INTO param_conflicts VALUES (?, ?, ?, ?, ?, ?)", list(row))

    def _flush_tags(self) -> None:
        items = list(self.pending.tags.items())
        table = _arrow({
            "run_key": (pa.int32(), [self.keys[k[0]] for k, _ in items]),
            "key": (pa.string(), [k[1] for k, _ in items]),
            "value": (pa.string(), [v for _, v in items]),
        })
        with _registered(self.con, "_tags", table):
            self.con.execute(
                "DELETE FROM run_tags WHERE (run_key, key) IN (SELECT (run_key, key) FROM _tags)"
            )
            self.con.execute("INSERT INTO run_tags SELECT * FROM _tags WHERE value IS NOT NULL")

    def _flush_updates(self) -> None:
        items = list(self.pending.updates.items())
        self._insert(
            "UPDATE runs SET name = coalesce(u.name, runs.name), "
            "status = coalesce(u.status, runs.status), "
            "end_time = coalesce(u.end_time, runs.end_time) "
            "FROM _updates u WHERE runs.run_id = u.run_id",
            "_updates",
            _arrow({
                "run_id": (pa.string(), [r for r, _ in items]),
                "name": (pa.string(), [u.get("name") for _, u in items]),
                "status": (pa.string(), [u.get("status") for _, u in items]),
                "end_time": (pa.int64(), [u.get("end_time") for _, u in items]),
            }),
        )

    def _flush_lifecycle(self) -> None:
        items = list(self.pending.lifecycle.items())
        self._insert(
            "UPDATE runs SET lifecycle_stage = l.stage, deleted_time = CASE "
            "WHEN l.stage = 'active' THEN NULL "
            "WHEN l.restored THEN l.t ELSE coalesce(runs.deleted_time, l.t) END "
            "FROM _lifecycle l WHERE runs.run_id = l.run_id",
            "_lifecycle",
            _arrow({
                "run_id": (pa.string(), [r for r, _ in items]),
                "stage": (pa.string(), [v[0] for _, v in items]),
                "t": (pa.int64(), [v[1] for _, v in items]),
                "restored": (pa.bool_(), [v[2] for _, v in items]),
            }),
        )

    def _flush_artifacts(self) -> None:
        items = list(self.pending.artifacts.items())
        table = _arrow({
            "run_key": (pa.int32(), [self.keys[k[0]] for k, _ in items]),
            "path": (pa.string(), [k[1] for k, _ in items]),
            "size": (pa.int64(), [v[0] for _, v in items]),
            "digest": (pa.string(), [v[1] for _, v in items]),
            "is_model": (pa.bool_(), [v[2] for _, v in items]),
            "logged_time": (pa.int64(), [v[3] for _, v in items]),
        })
        with _registered(self.con, "_artifacts", table):
            self.con.execute(
                "DELETE FROM run_artifacts WHERE (run_key, path) IN "
                "(SELECT (run_key, path) FROM _artifacts)"
            )
            self.con.execute("INSERT INTO run_artifacts SELECT * FROM _artifacts")
            self.con.execute(
                "UPDATE runs SET has_model = TRUE WHERE run_key IN "
                "(SELECT run_key FROM _artifacts WHERE is_model)"
            )

    def _record_rejections(self) -> None:
        for run_id, reason in self.unparkable:
            self.con.execute(
                "INSERT INTO rejected_events VALUES (NULL, 'parked', ?, ?, NULL, NULL)",
                [run_id, reason],
            )
        for rejected in self.result.rejected:
            e = rejected.event
            self.con.execute(
                "INSERT INTO rejected_events VALUES (?, ?, ?, ?, NULL, NULL)",
                [e.event_id, getattr(e, "type", None), e.run_id, rejected.reason],
            )


# "Latest" follows MLflow: the point with the greatest step, then the greatest timestamp,
# then the greatest value, whatever order points arrive in. In the value tie-break a NaN
# counts as 0 (as MLflow's SQL store does), so NaN beats negatives and loses to positives;
# between NaN and 0.0 at the same step and timestamp (a tie for MLflow, decided there by
# arrival order) NaN wins, so that the result never depends on order.
_TIEBREAK_VALUE = "CASE WHEN isnan({v}) THEN 0.0 ELSE {v} END"
_LATEST_KEY = "row({s}, {t}, " + _TIEBREAK_VALUE + ", isnan({v}))"


def merge_metric_points(con: SqlConnection, points: pa.Table, keys: list[str]) -> None:
    """Insert new points into the history and merge them into the per-metric summary.

    ``points`` has columns run_key, key_id, step, timestamp, value; ``keys[key_id]`` is the
    metric key. Exact duplicates of a stored (run, key, step, timestamp, value) are dropped.
    A point newer than the summary's latest cannot be stored yet, so only older points
    (rare: out-of-order ranks, resends) are checked against the history.
    min and max ignore NaN (NULL when every point is NaN); ±inf take part as numbers.
    Every statement here costs about a millisecond whatever its size, so there are few,
    and none uses ON CONFLICT (several times dearer in DuckDB than UPDATE + INSERT).
    """
    with _registered(con, "_incoming", points):
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _points AS "
            # "+ 0.0" turns -0.0 into 0.0: they are equal numbers, so one point, and which
            # sign survived must not depend on arrival order.
            "SELECT DISTINCT run_key, key_id, step, timestamp, value + 0.0 AS value FROM _incoming"
        )
    # The key of a point: the batch's key list is bound as one parameter and indexed.
    key = "list_extract($keys, p.key_id + 1)"
    not_newer = (
        f"FROM _points p JOIN run_metric_summary s ON s.run_key = p.run_key AND s.key = {key} "
        "WHERE p.step < s.latest_step OR "
        "(p.step = s.latest_step AND p.timestamp <= s.latest_timestamp)"
    )
    suspects = con.execute(f"SELECT count(*) {not_newer}", {"keys": keys}).fetchone()
    if suspects and suspects[0]:
        con.execute(
            "DELETE FROM _points p WHERE EXISTS (SELECT 1 FROM run_metric_history h "
            f"WHERE h.run_key IN (SELECT DISTINCT p.run_key {not_newer}) "
            f"AND h.run_key = p.run_key AND h.key = {key} AND h.step = p.step "
            "AND h.timestamp = p.timestamp AND h.value = p.value)",
            {"keys": keys},
        )
    con.execute(
        f"INSERT INTO run_metric_history SELECT p.run_key, {key}, p.step, p.timestamp, p.value "
        "FROM _points p",
        {"keys": keys},
    )
    latest_new = _LATEST_KEY.format(s="step", t="timestamp", v="value")
    # One arg_max returning a struct, not three: the aggregate is the costliest statement.
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _agg AS "
        f"SELECT run_key, {key} AS key, mn, mx, l.v AS lv, l.s AS ls, l.t AS lt, n FROM ("
        "SELECT run_key, key_id, "
        "min(value) FILTER (WHERE NOT isnan(value)) AS mn, "
        "max(value) FILTER (WHERE NOT isnan(value)) AS mx, "
        f"arg_max(struct_pack(s := step, t := timestamp, v := value), {latest_new}) AS l, "
        "count(*) AS n FROM _points GROUP BY run_key, key_id) p",
        {"keys": keys},
    )
    newer = "{new} > {old}".format(
        new=_LATEST_KEY.format(s="a.ls", t="a.lt", v="a.lv"),
        old=_LATEST_KEY.format(
            s="run_metric_summary.latest_step",
            t="run_metric_summary.latest_timestamp",
            v="run_metric_summary.latest_value",
        ),
    )
    con.execute(
        "UPDATE run_metric_summary SET "
        "min_value = least(run_metric_summary.min_value, a.mn), "
        "max_value = greatest(run_metric_summary.max_value, a.mx), "
        f"latest_value = CASE WHEN {newer} THEN a.lv ELSE run_metric_summary.latest_value END, "
        f"latest_step = CASE WHEN {newer} THEN a.ls ELSE run_metric_summary.latest_step END, "
        f"latest_timestamp = CASE WHEN {newer} THEN a.lt "
        "ELSE run_metric_summary.latest_timestamp END, "
        "count = run_metric_summary.count + a.n "
        "FROM _agg a WHERE run_metric_summary.run_key = a.run_key "
        "AND run_metric_summary.key = a.key"
    )
    con.execute(
        "INSERT INTO run_metric_summary SELECT a.* FROM _agg a WHERE NOT EXISTS "
        "(SELECT 1 FROM run_metric_summary s WHERE s.run_key = a.run_key AND s.key = a.key)"
    )
    con.execute("DROP TABLE IF EXISTS _points")
    con.execute("DROP TABLE IF EXISTS _agg")


def stale_run_records(con: SqlConnection, limit: int) -> list[int]:
    """Up to ``limit`` run keys whose run_records document is missing or older than the
    run's version, newest runs first (those a user looks at)."""
    return [k for (k,) in con.execute(
        "SELECT r.run_key FROM runs r LEFT JOIN run_records d USING (run_key) "
        "WHERE d.version IS DISTINCT FROM r.version ORDER BY r.run_key DESC LIMIT ?", [limit],
    ).fetchall()]


def refresh_run_records(con: SqlConnection, run_keys: Sequence[int]) -> None:
    """Rewrite the run_records documents of these runs from the tables, inside the caller's
    transaction (see read_model.RUN_RECORDS_SELECT). Delete and insert: DuckDB's INSERT OR
    REPLACE costs 2.5x more (49 against 19 ms for 10 runs of 100,000)."""
    keys = {"keys": list(run_keys)}
    con.execute("DELETE FROM run_records WHERE run_key IN (SELECT unnest($keys))", keys)
    con.execute(f"INSERT INTO run_records {RUN_RECORDS_SELECT}", keys)


def apply_batch(con: SqlConnection, events: Sequence[Event]) -> BatchResult:
    """Apply events in log order (per partition) inside the caller's open transaction."""
    return _BatchApplier(con, events).run()
