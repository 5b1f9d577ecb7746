"""Applies a batch of events to the read model: a pure fold over the events, inside the caller's transaction.

The caller (the projector loop, or a unit test) opens the transaction, calls
:func:`apply_batch`, writes its offsets, and commits. Nothing here reads the clock, talks
to Kafka or HTTP, or commits.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyarrow as pa
from runstream.projections.read_model import DDL
from runstream.schemas import (
    ArtifactLogged,
    Event,
    ExperimentCreated,
    ExperimentDeleted,
    ExperimentRenamed,
    ExperimentRestored,
    ExperimentTagSet,
    MetricsLogged,
    ParamsLogged,
    RunCreated,
    RunDeleted,
    RunEnded,
    RunPurged,
    RunRenamed,
    RunRestored,
    TagDeleted,
    TagSet,
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


def create_read_model(con: SqlConnection) -> None:
    """Create every table, view and macro (idempotent)."""
    for statement in DDL:
        con.execute(statement)


# Run state as this batch sees it: None = unknown, "purged", or a lifecycle stage.
_RunState = str | None


@dataclass
class _MetricBuffer:
    run_id: list[str] = field(default_factory=list)
    key: list[str] = field(default_factory=list)
    step: list[int] = field(default_factory=list)
    timestamp: list[int] = field(default_factory=list)
    value: list[float] = field(default_factory=list)

    def add(self, event: MetricsLogged) -> int:
        body = event.body
        n = len(body.values)
        keys = body.keys
        self.run_id.extend([event.key] * n)
        self.key.extend([keys[i] for i in body.key_index])
        self.step.extend(body.steps)
        self.timestamp.extend(body.timestamps)
        self.value.extend(body.values)
        return n

    def __len__(self) -> int:
        return len(self.value)

    def to_arrow(self) -> pa.Table:
        return pa.table(
            {
                "run_id": pa.array(self.run_id, pa.string()),
                "key": pa.array(self.key, pa.string()),
                "step": pa.array(self.step, pa.int64()),
                "timestamp": pa.array(self.timestamp, pa.int64()),
                "value": pa.array(self.value, pa.float64()),
            }
        )


class _BatchApplier:
    def __init__(self, con: SqlConnection, events: Sequence[Event]) -> None:
        self.con = con
        self.events = events
        self.result = BatchResult()
        self.metrics = _MetricBuffer()
        self.runs: dict[str, _RunState] = {}

    def run(self) -> BatchResult:
        fresh = self._drop_already_applied()
        self._load_run_states(fresh)
        for event in fresh:
            reason = self._apply(event)
            if reason is None:
                self.result.applied += 1
            else:
                self.result.rejected.append(Rejected(event, reason))
        self._flush_metrics()
        self._record_rejections()
        if fresh:
            self.con.execute(
                "INSERT INTO applied_events SELECT unnest(?) ON CONFLICT DO NOTHING",
                [[e.event_id for e in fresh]],
            )
        return self.result

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
        for run_id, stage in self.con.execute(
            "SELECT run_id, lifecycle_stage FROM runs WHERE run_id IN (SELECT unnest(?))",
            [run_ids],
        ).fetchall():
            self.runs[run_id] = stage
        for (run_id,) in self.con.execute(
            "SELECT run_id FROM purged_runs WHERE run_id IN (SELECT unnest(?))", [run_ids]
        ).fetchall():
            self.runs[run_id] = "purged"

    # ------------------------------------------------------------------ dispatch

    def _apply(self, event: Event) -> str | None:
        """Apply one event; return a rejection reason, or None when applied."""
        if isinstance(event, RunCreated):
            return self._run_created(event)
        if isinstance(event, ExperimentCreated | ExperimentRenamed | ExperimentDeleted):
            return self._experiment_event(event)
        if isinstance(event, ExperimentRestored | ExperimentTagSet):
            return self._experiment_event(event)
        run_id = event.run_id
        if run_id is None:
            return "missing_run_id"
        state = self.runs.get(run_id)
        if state == "purged":
            return "run_purged"
        if state is None:
            return "unknown_run"
        if isinstance(event, MetricsLogged):
            self.result.points += self.metrics.add(event)
            return None
        if isinstance(event, ParamsLogged):
            self._params_logged(event)
        elif isinstance(event, TagSet):
            self.con.execute(
                "INSERT INTO tags VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET value = excluded.value",
                [run_id, event.body.key, event.body.value],
            )
        elif isinstance(event, TagDeleted):
            self.con.execute("DELETE FROM tags WHERE run_id = ? AND key = ?", [run_id, event.body.key])
        elif isinstance(event, RunRenamed):
            self.con.execute("UPDATE runs SET name = ? WHERE run_id = ?", [event.body.name, run_id])
        elif isinstance(event, RunEnded):
            self.con.execute(
                "UPDATE runs SET status = ?, end_time = coalesce(?, end_time) WHERE run_id = ?",
                [event.body.status, event.body.end_time_ms, run_id],
            )
        elif isinstance(event, RunDeleted):
            # A second delete keeps the first deletion time: the retention clock does not
            # restart because someone clicked delete twice.
            self.con.execute(
                "UPDATE runs SET lifecycle_stage = 'deleted', "
                "deleted_time = coalesce(deleted_time, ?) WHERE run_id = ?",
                [event.event_time_ms, run_id],
            )
            self.runs[run_id] = "deleted"
        elif isinstance(event, RunRestored):
            self.con.execute(
                "UPDATE runs SET lifecycle_stage = 'active', deleted_time = NULL WHERE run_id = ?",
                [run_id],
            )
            self.runs[run_id] = "active"
        elif isinstance(event, RunPurged):
            self._run_purged(event, run_id)
        elif isinstance(event, ArtifactLogged):
            self._artifact_logged(event, run_id)
        else:
            return f"unhandled_type:{getattr(event, 'type', '?')}"
        return None

    # -------------------------------------------------------------- experiments

    def _ensure_experiment(self, experiment_id: str, name: str | None, time_ms: int) -> None:
        # A run may be applied before its experiment's creation event (another partition):
        # it creates a placeholder that experiment.created later fills in, so both orders
        # end in the same row.
        self.con.execute(
            "INSERT INTO experiments (experiment_id, name, lifecycle_stage, creation_time, "
            "last_update_time, placeholder) VALUES (?, ?, 'active', ?, ?, TRUE) "
            "ON CONFLICT DO NOTHING",
            [experiment_id, name or experiment_id, time_ms, time_ms],
        )

    def _experiment_event(self, event: Event) -> str | None:
        exp_id = event.experiment_id
        if exp_id is None:
            return "missing_experiment_id"
        if isinstance(event, ExperimentCreated):
            body = event.body
            created = body.creation_time_ms or event.event_time_ms
            # Many processes creating the same name publish the same id: the first
            # creation in log order sets the row, the others change nothing.
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
        return None

    # --------------------------------------------------------------------- runs

    def _run_created(self, event: RunCreated) -> str | None:
        run_id, body = event.run_id, event.body
        state = self.runs.get(run_id)
        if state == "purged":
            return "run_purged"
        if state is not None:
            return None  # the same run created twice (a retried request): first one wins
        self._ensure_experiment(event.experiment_id, body.experiment_name, event.event_time_ms)
        self.con.execute(
            "INSERT INTO runs (run_id, experiment_id, name, user_id, source_name, source_type, "
            "entry_point, git_commit, git_dirty, git_remote, status, start_time, end_time, "
            "lifecycle_stage, parent_run_id, artifact_uri, python_version, packages, "
            "command_line, host) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'RUNNING', ?, NULL, 'active', ?, ?, ?, ?, ?, ?)",
            [
                run_id,
                event.experiment_id,
                body.name,
                body.user,
                body.source_name,
                body.source_type,
                body.entry_point,
                body.git_commit,
                body.git_dirty,
                body.git_remote,
                body.start_time_ms,
                body.parent_run_id,
                body.artifact_uri,
                body.python_version,
                body.packages,
                body.command_line,
                body.host,
            ],
        )
        if body.tags:
            self.con.execute(
                "INSERT INTO tags SELECT ?, unnest(?), unnest(?) "
                "ON CONFLICT DO UPDATE SET value = excluded.value",
                [run_id, list(body.tags), list(body.tags.values())],
            )
        self.runs[run_id] = "active"
        return None

    def _params_logged(self, event: ParamsLogged) -> None:
        run_id = event.key
        first: dict[str, str] = {}
        for kv in event.body.params:
            first.setdefault(kv.key, kv.value)
        stored = dict(
            self.con.execute(
                "SELECT key, value FROM params WHERE run_id = ? AND key IN (SELECT unnest(?))",
                [run_id, list(first)],
            ).fetchall()
        )
        # A param is set once. The first value in log order wins; a later, different value
        # is kept out of the params table and recorded as a conflict for operators.
        conflicts = [
            (kv.key, stored.get(kv.key, first[kv.key]), kv.value)
            for kv in event.body.params
            if stored.get(kv.key, first[kv.key]) != kv.value
        ]
        new = [(k, v) for k, v in first.items() if k not in stored]
        if new:
            self.con.execute(
                "INSERT INTO params SELECT ?, unnest(?), unnest(?)",
                [run_id, [k for k, _ in new], [v for _, v in new]],
            )
        for key, kept, rejected in conflicts:
            self.con.execute(
                "INSERT INTO param_conflicts VALUES (?, ?, ?, ?, ?, ?)",
                [run_id, key, kept, rejected, event.event_id, event.event_time_ms],
            )

    def _run_purged(self, event: RunPurged, run_id: str) -> None:
        self._flush_metrics()  # points of this run earlier in the batch go with it
        for table in (
            "params",
            "param_conflicts",
            "tags",
            "metric_history",
            "metric_summary",
            "artifacts",
            "runs",
        ):
            self.con.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])
        self.con.execute(
            "INSERT INTO purged_runs VALUES (?, ?) ON CONFLICT DO NOTHING",
            [run_id, event.event_time_ms],
        )
        self.runs[run_id] = "purged"

    def _artifact_logged(self, event: ArtifactLogged, run_id: str) -> None:
        body = event.body
        # A directory holding an MLmodel file is a logged model, as MLflow lays models out.
        is_model = body.is_model or body.path.rsplit("/", 1)[-1] == "MLmodel"
        self.con.execute(
            "INSERT INTO artifacts VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET "
            "size = excluded.size, digest = excluded.digest, is_model = excluded.is_model, "
            "logged_time = excluded.logged_time",
            [run_id, body.path, body.size, body.digest, is_model, event.event_time_ms],
        )
        if is_model:
            self.con.execute("UPDATE runs SET has_model = TRUE WHERE run_id = ?", [run_id])

    # ------------------------------------------------------------------ metrics

    def _flush_metrics(self) -> None:
        if not len(self.metrics):
            return
        batch = self.metrics.to_arrow()
        self.metrics = _MetricBuffer()
        merge_metric_points(self.con, batch)

    def _record_rejections(self) -> None:
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


def merge_metric_points(con: SqlConnection, points: pa.Table) -> None:
    """Insert new points into the history and merge them into the per-metric summary.

    Exact duplicates of a stored (run, key, step, timestamp, value) are dropped. A point
    newer than the summary's latest cannot be stored yet, so only older points (rare:
    out-of-order ranks, resends) are checked against the history.
    min and max ignore NaN (NULL when every point is NaN); ±inf take part as numbers.
    """
    con.register("_incoming", points)
    try:
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _points AS "
            # "+ 0.0" turns -0.0 into 0.0: they are equal numbers, so one point, and which
            # sign survived must not depend on arrival order.
            "SELECT DISTINCT run_id, key, step, timestamp, value + 0.0 AS value FROM _incoming"
        )
    finally:
        con.unregister("_incoming")
    newer = (
        "(s.run_id IS NULL OR p.step > s.latest_step OR "
        "(p.step = s.latest_step AND p.timestamp > s.latest_timestamp))"
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _suspect AS SELECT p.* FROM _points p "
        f"LEFT JOIN metric_summary s USING (run_id, key) WHERE NOT {newer}"
    )
    suspects = con.execute("SELECT count(*) FROM _suspect").fetchone()
    if suspects and suspects[0]:
        con.execute(
            "DELETE FROM _points p WHERE EXISTS (SELECT 1 FROM metric_history h "
            "WHERE h.run_id IN (SELECT DISTINCT run_id FROM _suspect) "
            "AND h.run_id = p.run_id AND h.key = p.key AND h.step = p.step "
            "AND h.timestamp = p.timestamp AND h.value = p.value)"
        )
    con.execute("INSERT INTO metric_history SELECT * FROM _points")
    latest_new = _LATEST_KEY.format(s="step", t="timestamp", v="value")
    con.execute(
        "INSERT INTO metric_summary "
        "SELECT run_id, key, "
        "min(value) FILTER (WHERE NOT isnan(value)), max(value) FILTER (WHERE NOT isnan(value)), "
        f"arg_max(value, {latest_new}), arg_max(step, {latest_new}), "
        f"arg_max(timestamp, {latest_new}), count(*) "
        "FROM _points GROUP BY run_id, key "
        "ON CONFLICT DO UPDATE SET "
        "min_value = least(metric_summary.min_value, excluded.min_value), "
        "max_value = greatest(metric_summary.max_value, excluded.max_value), "
        "latest_value = CASE WHEN {new} > {old} THEN excluded.latest_value "
        "ELSE metric_summary.latest_value END, "
        "latest_step = CASE WHEN {new} > {old} THEN excluded.latest_step "
        "ELSE metric_summary.latest_step END, "
        "latest_timestamp = CASE WHEN {new} > {old} THEN excluded.latest_timestamp "
        "ELSE metric_summary.latest_timestamp END, "
        "count = metric_summary.count + excluded.count".format(
            new=_LATEST_KEY.format(
                s="excluded.latest_step", t="excluded.latest_timestamp", v="excluded.latest_value"
            ),
            old=_LATEST_KEY.format(
                s="metric_summary.latest_step",
                t="metric_summary.latest_timestamp",
                v="metric_summary.latest_value",
            ),
        )
    )
    con.execute("DROP TABLE IF EXISTS _points")
    con.execute("DROP TABLE IF EXISTS _suspect")


def apply_batch(con: SqlConnection, events: Sequence[Event]) -> BatchResult:
    """Apply events in log order (per partition) inside the caller's open transaction."""
    return _BatchApplier(con, events).run()
