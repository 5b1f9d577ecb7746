"""The write side of a query node: each command is checked against the read model, becomes
events, and is published to the log; the API never writes DuckDB.

A command is validated completely before anything is published, so a refused command changes
nothing. A command that touches many runs (delete with descendants, bulk delete and restore,
deleting an experiment) is resolved to the concrete runs when it is accepted and written as one
event per run: replaying the log must never re-evaluate a query against a read model whose state
depends on partition interleaving. ``publish`` waits (bounded) until this node's projector has
applied the events, so a read right after a command sees it (read-your-writes).
"""

from __future__ import annotations

import os
import random
import re
import socket
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol, get_args

import duckdb
from pydantic import BaseModel, ValidationError

from runstream import queries
from runstream.errors import AlreadyExists, Conflict, InvalidInput, NotFound, NotReady
from runstream.schemas import (
    ArtifactLogged,
    ArtifactLoggedBody,
    Event,
    ExperimentCreated,
    ExperimentCreatedBody,
    ExperimentDeleted,
    ExperimentRenamed,
    ExperimentRenamedBody,
    ExperimentRestored,
    ExperimentTagDeleted,
    ExperimentTagDeletedBody,
    ExperimentTagSet,
    ExperimentTagSetBody,
    MetricsLogged,
    MetricsLoggedBody,
    ParamsLogged,
    ParamsLoggedBody,
    RunCreated,
    RunCreatedBody,
    RunDeleted,
    RunDeletedBody,
    RunEnded,
    RunEndedBody,
    RunRenamed,
    RunRenamedBody,
    RunRestored,
    TagDeleted,
    TagDeletedBody,
    TagSet,
    TagSetBody,
    new_event,
    now_ms,
)
from runstream.schemas.events import MAX_EXPERIMENT_TAG_VALUE_LENGTH, RunStatus, SourceType
from runstream.schemas.ids import experiment_id_for_name, new_run_id

__all__ = [
    "BATCH_MAX_ITEMS",
    "BATCH_MAX_METRICS",
    "BATCH_MAX_PARAMS",
    "BATCH_MAX_TAGS",
    "MAX_BULK_RUNS",
    "Commands",
    "NodePort",
    "StorePort",
]

# Limits, as MLflow 3.17.2 (shared/reference/mlflow-rest-api.md §4), except that over-long
# values are refused instead of silently truncated: a refused write can be fixed, a truncated
# one is lost without anyone noticing.
MAX_KEY_LENGTH = 250
MAX_PARAM_VALUE_LENGTH = 6000
MAX_TAG_VALUE_LENGTH = 8000
MAX_EXPERIMENT_NAME_LENGTH = 500
MAX_RUN_NAME_LENGTH = 250
MAX_ARTIFACT_PATH_LENGTH = 1000
BATCH_MAX_METRICS = 1000
BATCH_MAX_PARAMS = 100
BATCH_MAX_TAGS = 100
BATCH_MAX_ITEMS = 1000
# Bulk delete / restore (Databricks' delete-runs, restore-runs): default and cap.
MAX_BULK_RUNS = 10_000
RUN_NAME_TAG = "mlflow.runName"
USER_TAG = "mlflow.user"
_RUN_STATUSES: frozenset[str] = frozenset(get_args(RunStatus))
_SOURCE_TYPES: frozenset[str] = frozenset(get_args(SourceType))
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class StorePort(Protocol):
    """What commands need of the read store: a cursor to check state before publishing."""

    def reading(self) -> AbstractContextManager[duckdb.DuckDBPyConnection]: ...


class NodePort(Protocol):
    """What commands need of a node (``runstream.node.QueryNode`` fits): its read store, and
    publish-and-wait-until-applied."""

    @property
    def store(self) -> StorePort: ...

    def publish(self, events: list[Event], *, wait: bool = True) -> Any: ...


def _producer_name() -> str:
    return f"runstream-api@{socket.gethostname()}:{os.getpid()}"


def _body(cls: type[BaseModel], **fields: Any) -> Any:
    """Build an event body; its schema's own limits become InvalidInput, naming the field."""
    try:
        return cls(**fields)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise InvalidInput(f"Invalid value for '{where}': {first['msg']}") from exc


def _check_key(key: object, what: str) -> str:
    if not isinstance(key, str) or not key:
        raise InvalidInput(f"Missing value for required parameter '{what}' (a non-empty string)")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidInput(
            f"'{what}' exceeds the maximum length of {MAX_KEY_LENGTH} characters: {key[:40]!r}..."
        )
    return key


def _check_value(value: object, what: str, limit: int) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"'{what}' must be a string, not {type(value).__name__}")
    if len(value) > limit:
        raise InvalidInput(
            f"'{what}' exceeds the maximum length of {limit} characters (got {len(value)})"
        )
    return value


def _pairs(items: Mapping[str, str] | Sequence[tuple[str, str]] | None) -> list[tuple[str, str]]:
    if items is None:
        return []
    if isinstance(items, Mapping):
        return list(items.items())
    try:
        return [(k, v) for k, v in items]
    except (TypeError, ValueError):
        raise InvalidInput("expected key/value pairs") from None


def _check_max_runs(max_runs: int) -> int:
    if isinstance(max_runs, bool) or not isinstance(max_runs, int) or not (
        1 <= max_runs <= MAX_BULK_RUNS
    ):
        raise InvalidInput(f"max_runs must be between 1 and {MAX_BULK_RUNS}, not {max_runs!r}")
    return max_runs


def _check_millis(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(f"'{what}' must be a non-negative integer (ms since the epoch), "
                           f"not {value!r}")
    return value


def _check_artifact_path(path: object) -> str:
    if not isinstance(path, str) or not path:
        raise InvalidInput("Missing value for required parameter 'path'")
    parts = path.split("/")
    if (
        len(path) > MAX_ARTIFACT_PATH_LENGTH
        or path.startswith("/")
        or "\\" in path
        or re.match(r"^[A-Za-z]:", path)
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise InvalidInput(f"Invalid artifact path {path[:200]!r}: a relative path without '..'")
    return path


_ADJECTIVES = ("amber", "bold", "brave", "calm", "clever", "eager", "gentle", "happy", "keen",
               "lucky", "mellow", "quiet", "rare", "swift", "tidy", "vivid", "warm", "wise")
_ANIMALS = ("ant", "bat", "cat", "doe", "eel", "fox", "gnu", "hen", "jay", "koi", "lynx", "mole",
            "newt", "owl", "pug", "ram", "seal", "toad", "wolf", "yak")


def _random_run_name() -> str:
    """A readable name for a run created without one, in MLflow's adjective-animal-NNN form."""
    return f"{random.choice(_ADJECTIVES)}-{random.choice(_ANIMALS)}-{random.randrange(1000)}"


class RunCreatedNotApplied(NotReady):
    """The run is on the log (it will appear) but this node has not applied it in time.

    ``record`` is the run as published: enough to answer a create request, so that a client
    retrying the 503 does not create a second run."""

    def __init__(self, message: str, record: queries.RunRecord) -> None:
        super().__init__(message)
        self.record = record


def _published_run(run_id: str, experiment_id: str, body: RunCreatedBody) -> queries.RunRecord:
    return queries.RunRecord(
        run_id=run_id, experiment_id=experiment_id, name=body.name, user_id=body.user,
        status="RUNNING", start_time=body.start_time_ms, end_time=None, lifecycle_stage="active",
        deleted_time=None, artifact_uri=body.artifact_uri, source_name=body.source_name,
        source_type=body.source_type, entry_point=body.entry_point, git_commit=body.git_commit,
        git_dirty=body.git_dirty, parent_run_id=body.parent_run_id, has_model=False,
        python_version=body.python_version, packages=list(body.packages),
        command_line=list(body.command_line), host=body.host, tags=dict(body.tags),
        git_remote=body.git_remote,
    )


class Commands:
    """Every write of the query API (native and MLflow): validate, then publish events."""

    def __init__(
        self, node: NodePort, *, producer: str | None = None, clock: Callable[[], int] = now_ms
    ) -> None:
        self.node = node
        self.producer = producer or _producer_name()
        # Event times (a deletion's time among them) come from here: injectable for tests.
        self.clock = clock

    # ------------------------------------------------------------------ plumbing

    def _event(self, cls: type, body: object = None, *, t: int, **ids: str | None) -> Event:
        event: Event = new_event(cls, body, producer=self.producer, event_time_ms=t, **ids)
        return event

    def _publish(self, events: list[Event]) -> None:
        if events:
            self.node.publish(events)

    def _active_run(self, cur: duckdb.DuckDBPyConnection, run_id: str) -> None:
        if not isinstance(run_id, str) or not run_id:
            raise InvalidInput("Missing value for required parameter 'run_id'")
        stage = queries.run_stage(cur, run_id)
        if stage != "active":
            raise Conflict(
                f"The run {run_id} must be in the 'active' state. Current state is {stage}."
            )

    def _experiment_row(
        self, cur: duckdb.DuckDBPyConnection, experiment_id: str
    ) -> tuple[str, str, str | None, int | None]:
        """(name, lifecycle_stage, artifact_location, deleted_time) of an experiment."""
        row = cur.execute(
            "SELECT name, lifecycle_stage, artifact_location, deleted_time FROM experiments "
            "WHERE experiment_id = ?",
            [experiment_id],
        ).fetchone()
        if row is None:
            raise NotFound(f"No Experiment with id={experiment_id} exists")
        return row[0], row[1], row[2], row[3]

    def _active_experiment(
        self, cur: duckdb.DuckDBPyConnection, experiment_id: str
    ) -> tuple[str, str | None]:
        """(name, artifact_location) of an experiment that must be active (Conflict if not)."""
        name, stage, location, _ = self._experiment_row(cur, experiment_id)
        if stage != "active":
            raise Conflict(
                f"The experiment {experiment_id} must be in the 'active' state. "
                f"Current state is {stage}."
            )
        return name, location

    # --------------------------------------------------------------- experiments

    def create_experiment(
        self,
        name: str,
        artifact_location: str | None = None,
        tags: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
    ) -> str:
        """Create an experiment and return its id; AlreadyExists when the name is taken.

        The id is ``experiment_id_for_name(name)``, the id every SDK process derives for that
        name without coordination; when an experiment since renamed holds it, the next
        generation of the name. A placeholder row (a run named the experiment before its
        creation event) is filled in, not refused.
        """
        name = _check_value(name, "name", MAX_EXPERIMENT_NAME_LENGTH)
        if not name.strip():
            raise InvalidInput("Missing value for required parameter 'name'")
        if artifact_location is not None and artifact_location.startswith("runs:"):
            raise InvalidInput("artifact_location cannot be a runs:/ URI")
        tag_map = dict(self._experiment_tags(tags))
        with self.node.store.reading() as cur:
            taken = cur.execute(
                "SELECT lifecycle_stage FROM experiments WHERE name = ? AND NOT placeholder",
                [name],
            ).fetchall()
            if taken:
                state = " in the deleted state (restore it, or pick another name)" if all(
                    stage == "deleted" for (stage,) in taken) else ""
                raise AlreadyExists(f"Experiment(name={name}) already exists{state}.")
            experiment_id = self._free_experiment_id(cur, name)
        t = self.clock()
        body = _body(
            ExperimentCreatedBody,
            name=name,
            artifact_location=artifact_location or f"mlflow-artifacts:/{experiment_id}",
            tags=tag_map,
            creation_time_ms=t,
        )
        self._publish([self._event(ExperimentCreated, body, t=t, experiment_id=experiment_id)])
        return experiment_id

    @staticmethod
    def _free_experiment_id(cur: duckdb.DuckDBPyConnection, name: str) -> str:
        for generation in range(10_000):
            candidate = str(experiment_id_for_name(name, generation))
            row = cur.execute(
                "SELECT placeholder, name FROM experiments WHERE experiment_id = ?", [candidate]
            ).fetchone()
            # Free, or a placeholder: a run whose client derived this id from the name
            # arrived before the experiment's creation; creating it fills the placeholder.
            if row is None or row[0]:
                return candidate
            # Another creator of the same name won the race since the caller's check: the
            # experiment exists under this very id. Only an id whose experiment was renamed
            # away moves the name to the next generation.
            if row[1] == name:
                raise AlreadyExists(f"Experiment(name={name}) already exists.")
        raise Conflict(f"no free experiment id for name {name!r}")  # pragma: no cover

    @staticmethod
    def _experiment_tags(
        tags: Mapping[str, str] | Sequence[tuple[str, str]] | None,
    ) -> list[tuple[str, str]]:
        pairs = _pairs(tags)
        for key, value in pairs:
            _check_key(key, "key")
            _check_value(value, f"tag '{key}' value", MAX_EXPERIMENT_TAG_VALUE_LENGTH)
        return pairs

    def rename_experiment(self, experiment_id: str, new_name: str) -> None:
        """Rename an active experiment; AlreadyExists when another experiment has the name."""
        new_name = _check_value(new_name, "new_name", MAX_EXPERIMENT_NAME_LENGTH)
        if not new_name.strip():
            raise InvalidInput("Missing value for required parameter 'new_name'")
        with self.node.store.reading() as cur:
            name, stage, _, _ = self._experiment_row(cur, experiment_id)
            if stage != "active":
                raise Conflict(f"Cannot rename a non-active experiment {experiment_id}.")
            if name == new_name:
                return
            other = cur.execute(
                "SELECT 1 FROM experiments WHERE name = ? AND experiment_id <> ?",
                [new_name, experiment_id],
            ).fetchone()
            if other is not None:
                raise AlreadyExists(f"Experiment(name={new_name}) already exists.")
        t = self.clock()
        body = _body(ExperimentRenamedBody, name=new_name)
        self._publish([self._event(ExperimentRenamed, body, t=t, experiment_id=experiment_id)])

    def delete_experiment(self, experiment_id: str) -> int:
        """Delete an active experiment and its active runs (one run.deleted per run, all at
        the experiment's deletion time); returns how many runs were deleted."""
        with self.node.store.reading() as cur:
            _, stage, _, _ = self._experiment_row(cur, experiment_id)
            if stage != "active":
                raise NotFound(f"No active Experiment with id={experiment_id} exists")
            runs = [r for (r,) in cur.execute(
                "SELECT run_id FROM runs WHERE experiment_id = ? AND lifecycle_stage = 'active' "
                "ORDER BY run_id", [experiment_id]).fetchall()]
        t = self.clock()
        events = [self._event(RunDeleted, RunDeletedBody(), t=t, run_id=r) for r in runs]
        events.append(self._event(ExperimentDeleted, t=t, experiment_id=experiment_id))
        self._publish(events)
        return len(runs)

    def restore_experiment(self, experiment_id: str) -> int:
        """Restore a deleted experiment and the runs deleted with it (at or after its deletion
        time; runs deleted on their own before stay deleted); returns how many runs."""
        with self.node.store.reading() as cur:
            _, stage, _, deleted_time = self._experiment_row(cur, experiment_id)
            if stage != "deleted":
                raise NotFound(f"No deleted Experiment with id={experiment_id} exists")
            runs = [r for (r,) in cur.execute(
                "SELECT run_id FROM runs WHERE experiment_id = ? AND lifecycle_stage = 'deleted' "
                "AND deleted_time >= ? ORDER BY run_id", [experiment_id, deleted_time or 0]
            ).fetchall()]
        t = self.clock()
        events = [self._event(ExperimentRestored, t=t, experiment_id=experiment_id)]
        events += [self._event(RunRestored, RunDeletedBody(), t=t, run_id=r) for r in runs]
        self._publish(events)
        return len(runs)

    def set_experiment_tag(self, experiment_id: str, key: str, value: str) -> None:
        """Set (or overwrite) a tag of an active experiment."""
        ((key, value),) = self._experiment_tags([(key, value)])
        with self.node.store.reading() as cur:
            self._active_experiment(cur, experiment_id)
        body = _body(ExperimentTagSetBody, key=key, value=value)
        t = self.clock()
        self._publish([self._event(ExperimentTagSet, body, t=t, experiment_id=experiment_id)])

    def delete_experiment_tag(self, experiment_id: str, key: str) -> None:
        """Delete a tag of an active experiment; NotFound when it has no such tag (as MLflow)."""
        with self.node.store.reading() as cur:
            self._active_experiment(cur, experiment_id)
            exists = cur.execute(
                "SELECT 1 FROM experiment_tags WHERE experiment_id = ? AND key = ?",
                [experiment_id, key],
            ).fetchall()
        if not exists:
            raise NotFound(f"No tag with name: {key} in experiment with id {experiment_id}")
        body = _body(ExperimentTagDeletedBody, key=key)
        self._publish([self._event(ExperimentTagDeleted, body, t=self.clock(),
                                   experiment_id=experiment_id)])

    # ---------------------------------------------------------------------- runs

    def create_run(
        self,
        experiment_id: str,
        *,
        name: str | None = None,
        user: str | None = None,
        start_time: int | None = None,
        tags: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        parent_run_id: str | None = None,
        source_name: str | None = None,
        source_type: str | None = None,
        entry_point: str | None = None,
        git_commit: str | None = None,
        git_dirty: bool | None = None,
        git_remote: str | None = None,
        python_version: str | None = None,
        packages: Sequence[str] | None = None,
        command_line: Sequence[str] | None = None,
        host: str | None = None,
    ) -> str:
        """Create a run in an active experiment and return its id.

        What the MLflow client sends as system tags fills the run's fields when they are not
        given: ``mlflow.runName`` (a differing ``name`` is refused, as MLflow; a run without
        either gets a made-up name), ``mlflow.user``, ``mlflow.source.name``/``type``,
        ``mlflow.source.git.commit``/``repoURL``, ``mlflow.parentRunId``. The run name is also
        stored as the ``mlflow.runName`` tag. ``start_time`` defaults to now.
        """
        tag_map = dict(self._run_tags(tags, BATCH_MAX_ITEMS))
        if name is not None:
            _check_value(name, "run_name", MAX_RUN_NAME_LENGTH)
            if RUN_NAME_TAG in tag_map and tag_map[RUN_NAME_TAG] != name:
                raise InvalidInput(
                    "Both 'run_name' argument and 'mlflow.runName' tag are specified, but with "
                    f"different values (run_name='{name}', mlflow.runName="
                    f"'{tag_map[RUN_NAME_TAG]}')."
                )
        name = name or tag_map.get(RUN_NAME_TAG) or _random_run_name()
        tag_map[RUN_NAME_TAG] = _check_value(name, "run_name", MAX_RUN_NAME_LENGTH)
        if start_time is not None:
            _check_millis(start_time, "start_time")
        kind = source_type or tag_map.get("mlflow.source.type") or "UNKNOWN"
        with self.node.store.reading() as cur:
            exp_name, location = self._active_experiment(cur, experiment_id)
        run_id = str(new_run_id())
        root = (location or f"mlflow-artifacts:/{experiment_id}").rstrip("/")
        t = self.clock()
        body = _body(
            RunCreatedBody,
            name=name,
            user=user or tag_map.get(USER_TAG) or "",
            source_name=source_name or tag_map.get("mlflow.source.name") or "",
            source_type=kind if kind in _SOURCE_TYPES else "UNKNOWN",
            entry_point=entry_point or tag_map.get("mlflow.project.entryPoint"),
            git_commit=git_commit or tag_map.get("mlflow.source.git.commit"),
            git_dirty=git_dirty,
            git_remote=git_remote or tag_map.get("mlflow.source.git.repoURL"),
            start_time_ms=t if start_time is None else start_time,
            parent_run_id=parent_run_id or tag_map.get(queries.PARENT_TAG),
            tags=tag_map,
            python_version=python_version,
            packages=list(packages or ()),
            command_line=list(command_line or ()),
            host=host,
            artifact_uri=f"{root}/{run_id}/artifacts",
            experiment_name=exp_name,
        )
        try:
            self._publish([self._event(RunCreated, body, t=t, run_id=run_id,
                                       experiment_id=experiment_id)])
        except NotReady as exc:
            raise RunCreatedNotApplied(str(exc), _published_run(run_id, experiment_id, body)) from exc
        return run_id

    def update_run(
        self,
        run_id: str,
        status: str | None = None,
        end_time: int | None = None,
        name: str | None = None,
    ) -> queries.RunRecord:
        """Change an active run's status, end time and/or name; returns the run as it is now.

        Any status may follow any other (MLflow's resume relies on it). A new name is also
        stored as the ``mlflow.runName`` tag.
        """
        if status is not None and status not in _RUN_STATUSES:
            raise InvalidInput(
                f"Invalid status {status!r}: expected one of {', '.join(sorted(_RUN_STATUSES))}"
            )
        if end_time is not None:
            _check_millis(end_time, "end_time")
        if name is not None:
            _check_value(name, "run_name", MAX_RUN_NAME_LENGTH)
        t = self.clock()
        events: list[Event] = []
        with self.node.store.reading() as cur:
            self._active_run(cur, run_id)
            if status is not None or end_time is not None:
                if status is None:
                    row = cur.execute("SELECT status FROM runs WHERE run_id = ?", [run_id]).fetchone()
                    status = row[0] if row else "RUNNING"
                body = _body(RunEndedBody, status=status, end_time_ms=end_time)
                events.append(self._event(RunEnded, body, t=t, run_id=run_id))
        if name is not None:
            events += self._rename_events(run_id, name, t)
        self._publish(events)
        with self.node.store.reading() as cur:
            return queries.get_run(cur, run_id)

    def _rename_events(self, run_id: str, name: str, t: int) -> list[Event]:
        return [
            self._event(RunRenamed, _body(RunRenamedBody, name=name), t=t, run_id=run_id),
            self._event(TagSet, _body(TagSetBody, key=RUN_NAME_TAG, value=name), t=t,
                        run_id=run_id),
        ]

    def rename_run(self, run_id: str, name: str) -> None:
        """Rename an active run (its name and its ``mlflow.runName`` tag)."""
        _check_value(name, "name", MAX_RUN_NAME_LENGTH)
        with self.node.store.reading() as cur:
            self._active_run(cur, run_id)
        self._publish(self._rename_events(run_id, name, self.clock()))

    @staticmethod
    def _run_tags(
        tags: Mapping[str, str] | Sequence[tuple[str, str]] | None, limit: int
    ) -> list[tuple[str, str]]:
        pairs = _pairs(tags)
        if len(pairs) > limit:
            raise InvalidInput(
                f"A batch logging request can contain at most {limit} tags. Got {len(pairs)} "
                "tags. Please split up tags across multiple requests and try again."
            )
        for key, value in pairs:
            _check_key(key, "tag key")
            _check_value(value, f"tag '{key}' value", MAX_TAG_VALUE_LENGTH)
        return pairs

    def log_batch(
        self,
        run_id: str,
        metrics: Sequence[tuple[str, float, int, int]] = (),
        params: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        tags: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
    ) -> None:
        """Log metrics ``(key, value, step, timestamp_ms)``, params and tags to an active run.

        Refused as a whole, before anything is published: an unknown run (NotFound), a
        deleted one, a param whose value differs from the stored one (Conflict, MLflow's
        message), over MLflow's batch limits, an over-long key or value, a duplicate param key.
        A param logged again with the same value is accepted and not re-sent. Setting the
        ``mlflow.runName`` tag renames the run too.
        """
        metric_list = list(metrics)
        param_pairs = _pairs(params)
        tag_pairs = _pairs(tags)
        for what, items, limit in (("metrics", metric_list, BATCH_MAX_METRICS),
                                   ("params", param_pairs, BATCH_MAX_PARAMS),
                                   ("tags", tag_pairs, BATCH_MAX_TAGS)):
            if len(items) > limit:
                raise InvalidInput(
                    f"A batch logging request can contain at most {limit} {what}. Got "
                    f"{len(items)} {what}. Please split up {what} across multiple requests "
                    "and try again."
                )
        total = len(metric_list) + len(param_pairs) + len(tag_pairs)
        if total > BATCH_MAX_ITEMS:
            raise InvalidInput(
                "A batch logging request can contain at most 1000 metrics, params, and tags in "
                f"total. Got {total} items. Please split up across multiple requests and try "
                "again."
            )
        points = [self._check_point(i, p) for i, p in enumerate(metric_list)]
        for key, value in param_pairs:
            _check_key(key, "param key")
            _check_value(value, f"param '{key}' value", MAX_PARAM_VALUE_LENGTH)
        duplicates = sorted(k for k, n in Counter(k for k, _ in param_pairs).items() if n > 1)
        if duplicates:
            raise InvalidInput(
                f"Duplicate parameter keys have been submitted: {duplicates}. Please ensure the "
                "request contains only one param value per param key."
            )
        tag_map = dict(self._run_tags(tag_pairs, BATCH_MAX_TAGS))  # duplicate tags: last wins
        if not (points or param_pairs or tag_map):
            return
        with self.node.store.reading() as cur:
            self._active_run(cur, run_id)
            new_params = self._new_params(cur, run_id, dict(param_pairs))
        t = self.clock()
        events: list[Event] = []
        if new_params:
            body = _body(ParamsLoggedBody,
                         params=[{"key": k, "value": v} for k, v in new_params.items()])
            events.append(self._event(ParamsLogged, body, t=t, run_id=run_id))
        if points:
            events.append(self._event(MetricsLogged, MetricsLoggedBody.from_points(points), t=t,
                                      run_id=run_id))
        for key, value in tag_map.items():
            if key == RUN_NAME_TAG:
                _check_value(value, "run_name", MAX_RUN_NAME_LENGTH)
                events.append(self._event(RunRenamed, _body(RunRenamedBody, name=value), t=t,
                                          run_id=run_id))
            events.append(self._event(TagSet, _body(TagSetBody, key=key, value=value), t=t,
                                      run_id=run_id))
        self._publish(events)

    @staticmethod
    def _check_point(index: int, point: tuple[str, float, int, int]) -> tuple[str, float, int, int]:
        try:
            key, value, step, timestamp = point
        except (TypeError, ValueError):
            raise InvalidInput(
                f"metrics[{index}] must be (key, value, step, timestamp)"
            ) from None
        _check_key(key, f"metrics[{index}].key")
        if isinstance(value, bool | int | float):
            value = float(value)
        else:
            raise InvalidInput(f"metrics[{index}].value must be a number, not {value!r}")
        if isinstance(step, bool) or not isinstance(step, int) or not -(2**63) <= step < 2**63:
            raise InvalidInput(f"metrics[{index}].step must be a 64-bit integer, not {step!r}")
        if isinstance(timestamp, bool) or not isinstance(timestamp, int) or not (
            0 <= timestamp < 2**63
        ):
            raise InvalidInput(
                f"Invalid value {timestamp!r} for parameter 'timestamp' supplied: metric "
                f"'{key}'. Timestamp must be a nonnegative long (64-bit integer)"
            )
        return key, value, step, timestamp

    @staticmethod
    def _new_params(
        cur: duckdb.DuckDBPyConnection, run_id: str, params: dict[str, str]
    ) -> dict[str, str]:
        """The params not stored yet; Conflict when one is stored with another value."""
        if not params:
            return {}
        stored = dict(cur.execute(
            "SELECT key, value FROM params WHERE run_id = ? AND key IN (SELECT unnest(?))",
            [run_id, list(params)],
        ).fetchall())
        for key, value in params.items():
            if key in stored and stored[key] != value:
                raise Conflict(
                    f"Changing param values is not allowed. Param with key='{key}' was already "
                    f"logged with value='{stored[key]}' for run ID='{run_id}'. Attempted logging new value "
                    f"'{value}'."
                )
        return {k: v for k, v in params.items() if k not in stored}

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        """Set (or overwrite) a tag of an active run; ``mlflow.runName`` renames the run."""
        _check_key(key, "key")
        self.log_batch(run_id, tags=[(key, value)])

    def delete_tag(self, run_id: str, key: str) -> None:
        """Delete a tag of an active run; NotFound when the run has no such tag."""
        _check_key(key, "key")
        with self.node.store.reading() as cur:
            self._active_run(cur, run_id)
            exists = cur.execute(
                "SELECT 1 FROM tags WHERE run_id = ? AND key = ?", [run_id, key]
            ).fetchone()
            if exists is None:
                raise NotFound(f"No tag with name: {key} in run with id {run_id}")
        body = _body(TagDeletedBody, key=key)
        self._publish([self._event(TagDeleted, body, t=self.clock(), run_id=run_id)])

    def set_note(self, run_id: str, content: str) -> None:
        """Set the run's note (markdown), kept as MLflow does in the ``mlflow.note.content`` tag."""
        self.set_tag(run_id, queries.NOTE_TAG, content)

    def log_artifact(
        self, run_id: str, path: str, size: int, digest: str, is_model: bool = False
    ) -> None:
        """Record that a file was stored under the run's artifacts (``digest``: sha256, hex).
        A path ending in ``MLmodel`` marks a logged model, as does ``is_model``."""
        path = _check_artifact_path(path)
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InvalidInput(f"size must be a non-negative integer, not {size!r}")
        if not isinstance(digest, str) or not _SHA256.match(digest):
            raise InvalidInput("digest must be the sha256 of the content, 64 lower-case hex digits")
        with self.node.store.reading() as cur:
            self._active_run(cur, run_id)
        body = _body(ArtifactLoggedBody, path=path, size=size, digest=digest, is_model=is_model)
        self._publish([self._event(ArtifactLogged, body, t=self.clock(), run_id=run_id)])

    # ------------------------------------------------------ delete and restore

    def _resolve(
        self, run_ids: Sequence[str], *, with_descendants: bool, from_stage: str
    ) -> list[tuple[str, str]]:
        """(run, requested_for) for every run to change: the given runs and, with
        ``with_descendants``, every run below them, keeping those now in ``from_stage``."""
        wanted = list(dict.fromkeys(run_ids))
        if not wanted:
            raise InvalidInput("run_ids must name at least one run")
        for run_id in wanted:
            if not isinstance(run_id, str) or not run_id:
                raise InvalidInput("run_ids must be non-empty strings")
        with self.node.store.reading() as cur:
            stages = dict(cur.execute(
                "SELECT run_id, lifecycle_stage FROM runs WHERE run_id IN (SELECT unnest(?))",
                [wanted],
            ).fetchall())
            for run_id in wanted:
                if run_id not in stages:
                    raise queries.run_not_found(cur, run_id)
            below = queries.run_descendants_by_root(cur, wanted) if with_descendants else {}
            extra = sorted({r for runs in below.values() for r in runs} - set(stages))
            if extra:
                stages.update(cur.execute(
                    "SELECT run_id, lifecycle_stage FROM runs WHERE run_id IN (SELECT unnest(?))",
                    [extra],
                ).fetchall())
        chosen: dict[str, str] = {}
        for root in wanted:
            for run_id in [root, *below.get(root, ())]:
                if stages.get(run_id) == from_stage:
                    chosen.setdefault(run_id, root)
        return list(chosen.items())

    def delete_runs(self, run_ids: Sequence[str], with_descendants: bool = True) -> int:
        """Soft-delete runs and, unless ``with_descendants`` is False, every run below them;
        one run.deleted per run, naming the run asked for. Returns how many runs went from
        active to deleted (deleting a deleted run is accepted and not counted)."""
        targets = self._resolve(run_ids, with_descendants=with_descendants, from_stage="active")
        t = self.clock()
        self._publish([
            self._event(RunDeleted, RunDeletedBody(requested_for=root), t=t, run_id=run_id)
            for run_id, root in targets
        ])
        return len(targets)

    def restore_runs(self, run_ids: Sequence[str], with_descendants: bool = True) -> int:
        """Restore deleted runs and, unless ``with_descendants`` is False, the deleted runs below
        them. Returns how many runs went from deleted to active; a purged run is NotFound."""
        targets = self._resolve(run_ids, with_descendants=with_descendants, from_stage="deleted")
        t = self.clock()
        self._publish([
            self._event(RunRestored, RunDeletedBody(requested_for=root), t=t, run_id=run_id)
            for run_id, root in targets
        ])
        return len(targets)

    def bulk_delete(
        self, experiment_id: str, max_timestamp_millis: int, max_runs: int = MAX_BULK_RUNS
    ) -> int:
        """Delete the active runs of an experiment created (started) at or before
        ``max_timestamp_millis``, oldest first, at most ``max_runs`` (1..10000); returns the
        count. Descendants are not added: each run qualifies on its own creation time."""
        _check_millis(max_timestamp_millis, "max_timestamp_millis")
        _check_max_runs(max_runs)
        with self.node.store.reading() as cur:
            self._experiment_row(cur, experiment_id)
            runs = [r for (r,) in cur.execute(
                "SELECT run_id FROM runs WHERE experiment_id = ? AND lifecycle_stage = 'active' "
                "AND start_time <= ? ORDER BY start_time, run_id LIMIT ?",
                [experiment_id, max_timestamp_millis, max_runs],
            ).fetchall()]
        t = self.clock()
        self._publish([self._event(RunDeleted, RunDeletedBody(), t=t, run_id=r) for r in runs])
        return len(runs)

    def bulk_restore(
        self, experiment_id: str, min_timestamp_millis: int, max_runs: int = MAX_BULK_RUNS
    ) -> int:
        """Restore the runs of an experiment deleted at or after ``min_timestamp_millis``,
        earliest deletion first, at most ``max_runs`` (1..10000); returns the count."""
        _check_millis(min_timestamp_millis, "min_timestamp_millis")
        _check_max_runs(max_runs)
        with self.node.store.reading() as cur:
            self._experiment_row(cur, experiment_id)
            runs = [r for (r,) in cur.execute(
                "SELECT run_id FROM runs WHERE experiment_id = ? AND lifecycle_stage = 'deleted' "
                "AND deleted_time >= ? ORDER BY deleted_time, run_id LIMIT ?",
                [experiment_id, min_timestamp_millis, max_runs],
            ).fetchall()]
        t = self.clock()
        self._publish([self._event(RunRestored, RunDeletedBody(), t=t, run_id=r) for r in runs])
        return len(runs)

