"""The native query API of a node, under ``/api/v1``: search, run detail, metric history,
compare, CSV, experiments, and the run-management writes (rename, tags, note, delete, restore,
bulk delete and restore).

Reads go to ``runstream.queries`` on a cursor of their own; writes go to
``runstream.commands``, which publishes events and waits until this node applied them, so the
response already shows the change. Every request is a pydantic model that refuses unknown
fields; errors leave through ``runstream.api.errors`` in MLflow's shape. Metric values that
JSON cannot carry travel as the strings "NaN", "Infinity" and "-Infinity" (as proto JSON).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Annotated, Any, Literal

import duckdb
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from runstream import queries
from runstream.api.responses import JSONResponse
from runstream.commands import MAX_BULK_RUNS, MAX_RUN_NAME_LENGTH, MAX_TAG_VALUE_LENGTH, Commands
from runstream.node import QueryNode
from runstream.queries import ExperimentRecord, MetricSummary, RunRecord

router = APIRouter(prefix="/api/v1")

RUNS = "runs"
EXPERIMENTS = "experiments"
MAX_FILTER_LENGTH = 20_000
MAX_ORDER_BY = 50

JsonFloat = float | Literal["NaN", "Infinity", "-Infinity"]


# --------------------------------------------------------------------------------------------
# JSON
# --------------------------------------------------------------------------------------------


def _num(value: float | None) -> JsonFloat | None:
    """A float JSON can carry: NaN and infinities become proto-JSON strings."""
    if value is None or math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def _jsonable(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by its string (compare, downsampled)."""
    if isinstance(obj, float):
        return _num(obj)
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    return obj


def _metric_json(m: MetricSummary) -> dict[str, Any]:
    return {
        "key": m.key, "latest_value": _num(m.latest_value), "latest_step": m.latest_step,
        "latest_timestamp": m.latest_timestamp, "min_value": _num(m.min_value),
        "max_value": _num(m.max_value), "count": m.count,
    }


def run_json(run: RunRecord) -> dict[str, Any]:
    """The wire form of a run (``RunOut``). Made once per record (``RunRecord.derive``):
    callers must not change it."""
    return run.derive("native", _run_json)


def _run_json(run: RunRecord) -> dict[str, Any]:
    return {
        "run_id": run.run_id, "experiment_id": run.experiment_id, "name": run.name,
        "user_id": run.user_id, "status": run.status, "start_time": run.start_time,
        "end_time": run.end_time, "lifecycle_stage": run.lifecycle_stage,
        "deleted_time": run.deleted_time, "artifact_uri": run.artifact_uri,
        "source_name": run.source_name, "source_type": run.source_type,
        "entry_point": run.entry_point, "git_commit": run.git_commit, "git_dirty": run.git_dirty,
        "git_remote": run.git_remote, "parent_run_id": run.parent_run_id,
        "has_model": run.has_model, "python_version": run.python_version,
        "packages": run.packages, "command_line": run.command_line, "host": run.host,
        "note": run.note, "params": run.params, "tags": run.tags,
        "metrics": {key: _metric_json(m) for key, m in run.metrics.items()},
    }


def experiment_json(exp: ExperimentRecord) -> dict[str, Any]:
    """The wire form of an experiment (``ExperimentOut``)."""
    return {
        "experiment_id": exp.experiment_id, "name": exp.name,
        "artifact_location": exp.artifact_location, "lifecycle_stage": exp.lifecycle_stage,
        "creation_time": exp.creation_time, "last_update_time": exp.last_update_time,
        "tags": exp.tags,
    }


# --------------------------------------------------------------------------------------------
# Response models: what /openapi.json documents (handlers return JSONResponse directly, so
# large results skip a second validation pass).
# --------------------------------------------------------------------------------------------


class MetricOut(BaseModel):
    key: str
    latest_value: JsonFloat
    latest_step: int
    latest_timestamp: int
    min_value: JsonFloat | None
    max_value: JsonFloat | None
    count: int


class RunOut(BaseModel):
    run_id: str
    experiment_id: str
    name: str | None
    user_id: str | None
    status: str
    start_time: int | None
    end_time: int | None
    lifecycle_stage: str
    deleted_time: int | None
    artifact_uri: str | None
    source_name: str | None
    source_type: str | None
    entry_point: str | None
    git_commit: str | None
    git_dirty: bool | None
    git_remote: str | None
    parent_run_id: str | None
    has_model: bool
    python_version: str | None
    packages: list[str]
    command_line: list[str]
    host: str | None
    note: str | None
    params: dict[str, str]
    tags: dict[str, str]
    metrics: dict[str, MetricOut]


class ArtifactOut(BaseModel):
    path: str
    is_dir: bool
    size: int | None


class RunDetailOut(RunOut):
    artifacts: list[ArtifactOut] = Field(description="the root of the run's artifacts")


class SearchRunsOut(BaseModel):
    runs: list[RunOut]
    next_page_token: str | None


class ExperimentOut(BaseModel):
    experiment_id: str
    name: str
    artifact_location: str | None
    lifecycle_stage: str
    creation_time: int | None
    last_update_time: int | None
    tags: dict[str, str]


class SearchExperimentsOut(BaseModel):
    experiments: list[ExperimentOut]
    next_page_token: str | None


class MetricPoint(BaseModel):
    step: int
    timestamp: int
    value: JsonFloat


class MetricHistoryOut(BaseModel):
    run_id: str
    key: str
    points: list[MetricPoint]
    next_page_token: str | None


class Bucket(BaseModel):
    x_start: int
    x_end: int
    count: int
    first: JsonFloat
    last: JsonFloat
    min: JsonFloat | None
    max: JsonFloat | None
    min_x: int | None
    max_x: int | None


class DownsampledOut(BaseModel):
    run_id: str
    key: str
    x: Literal["step", "time"]
    buckets: list[Bucket]


class ArtifactsOut(BaseModel):
    run_id: str
    path: str | None
    files: list[ArtifactOut]


class RunsDeletedOut(BaseModel):
    runs_deleted: int


class RunsRestoredOut(BaseModel):
    runs_restored: int


# --------------------------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------------------------


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


ViewField = Annotated[
    Literal["active", "deleted", "all"],
    Field(description="active runs (default), deleted runs (kept until purged), or both"),
]
FilterField = Annotated[
    str | None,
    Field(default=None, max_length=MAX_FILTER_LENGTH,
          description="MLflow search filter plus OR, NOT, parentheses and MIN/MAX/LATEST, "
                      "e.g. metrics.r2 > 0.3 AND params.lr = '0.01'"),
]
OrderByField = Annotated[
    list[str],
    Field(default_factory=list, max_length=MAX_ORDER_BY,
          description='one key per element, e.g. ["metrics.loss DESC", "params.lr"]; '
                      "runs without the key sort last"),
]
ExperimentIdsField = Annotated[
    list[str] | None,
    Field(default=None, max_length=1000,
          description="experiments to search; omitted = every experiment, [] = none"),
]


class SearchRunsRequest(_Request):
    experiment_ids: ExperimentIdsField
    filter: FilterField
    order_by: OrderByField
    view: ViewField = "active"
    max_results: int = Field(default=queries.DEFAULT_MAX_RESULTS, ge=1, le=queries.MAX_RESULTS_CAP)
    page_token: str | None = Field(default=None, max_length=512)
    has_model: bool | None = Field(default=None, description="only runs with (true) or "
                                                               "without (false) a logged model")
    with_data: bool = Field(default=True, description="false leaves params, tags, metrics out")


class RunsCsvQuery(_Request):
    experiment_ids: ExperimentIdsField
    filter: FilterField
    order_by: OrderByField
    view: ViewField = "active"
    has_model: bool | None = None


class ExperimentsQuery(_Request):
    filter: FilterField
    order_by: OrderByField
    view: ViewField = "active"
    max_results: int = Field(default=queries.DEFAULT_MAX_RESULTS, ge=1, le=queries.MAX_RESULTS_CAP)
    page_token: str | None = Field(default=None, max_length=512)


class ExperimentByNameQuery(_Request):
    name: str = Field(min_length=1, max_length=500)


class HistoryQuery(_Request):
    key: str = Field(min_length=1, max_length=250)
    max_results: int | None = Field(default=None, ge=1, le=1_000_000,
                                    description="page size; omitted = every point")
    page_token: str | None = Field(default=None, max_length=512)


class DownsampleQuery(_Request):
    key: str = Field(min_length=1, max_length=250)
    points: int = Field(default=1000, ge=1, le=queries.MAX_DOWNSAMPLE_POINTS)
    x: Literal["step", "time"] = "step"


class ArtifactsQuery(_Request):
    path: str | None = Field(default=None, max_length=1000)


class CompareRunsRequest(_Request):
    run_ids: list[str] = Field(min_length=2, max_length=queries.MAX_COMPARE_RUNS)
    hide_identical: bool = False
    param_keys: list[str] | None = Field(default=None, max_length=1000)
    metric_keys: list[str] | None = Field(default=None, max_length=1000)
    plot_keys: list[str] | None = Field(
        default=None, max_length=100,
        description="parallel-coordinates axes, written like order_by keys "
                    "(params.lr, metrics.loss, MIN(metrics.loss)); default: what differs",
    )
    x: str | None = Field(default=None, max_length=500, description="scatter/contour x axis")
    y: str | None = Field(default=None, max_length=500, description="scatter/contour y axis")
    z: str | None = Field(default=None, max_length=500, description="contour colour")


class RenameRunRequest(_Request):
    name: str = Field(min_length=1, max_length=MAX_RUN_NAME_LENGTH)


class SetTagRequest(_Request):
    key: str = Field(min_length=1, max_length=250)
    value: str = Field(max_length=MAX_TAG_VALUE_LENGTH)


class DeleteTagRequest(_Request):
    key: str = Field(min_length=1, max_length=250)


class SetNoteRequest(_Request):
    content: str = Field(max_length=MAX_TAG_VALUE_LENGTH, description="markdown")


class RunIdsRequest(_Request):
    run_ids: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        min_length=1, max_length=MAX_BULK_RUNS
    )
    with_descendants: bool = Field(default=True, description="also every run below these")


class BulkDeleteRequest(_Request):
    max_timestamp_millis: int = Field(ge=0, description="delete runs created at or before this")
    max_runs: int = Field(default=MAX_BULK_RUNS, ge=1, le=MAX_BULK_RUNS)


class BulkRestoreRequest(_Request):
    min_timestamp_millis: int = Field(ge=0, description="restore runs deleted at or after this")
    max_runs: int = Field(default=MAX_BULK_RUNS, ge=1, le=MAX_BULK_RUNS)


# --------------------------------------------------------------------------------------------
# Dependencies
# --------------------------------------------------------------------------------------------


def _node(request: Request) -> QueryNode:
    node: QueryNode = request.app.state.node
    return node


def _cursor(request: Request) -> Iterator[duckdb.DuckDBPyConnection]:
    with _node(request).store.reading() as cur:
        yield cur


def _commands(request: Request) -> Commands:
    return Commands(_node(request))


Cursor = Annotated[duckdb.DuckDBPyConnection, Depends(_cursor)]
Writer = Annotated[Commands, Depends(_commands)]


def _run_detail(cur: duckdb.DuckDBPyConnection, run_id: str) -> JSONResponse:
    body = {**run_json(queries.get_run(cur, run_id))}
    body["artifacts"] = [a._asdict() for a in queries.list_artifacts(cur, run_id)]
    return JSONResponse(body)


def _fresh_run_detail(request: Request, run_id: str) -> JSONResponse:
    # After a write: a new cursor, so the read starts after the projector applied it.
    with _node(request).store.reading() as cur:
        return _run_detail(cur, run_id)


# --------------------------------------------------------------------------------------------
# Runs: reads
# --------------------------------------------------------------------------------------------


@router.post("/runs/search", tags=[RUNS], response_model=SearchRunsOut,
             summary="Search runs: filter, order, page")
def search_runs(body: SearchRunsRequest, cur: Cursor) -> JSONResponse:
    runs, token = queries.search_runs(
        cur, experiment_ids=body.experiment_ids, filter=body.filter, order_by=body.order_by,
        view=body.view, max_results=body.max_results, page_token=body.page_token,
        has_model=body.has_model, with_data=body.with_data,
    )
    return JSONResponse({"runs": [run_json(r) for r in runs], "next_page_token": token})


@router.get("/runs.csv", tags=[RUNS], response_class=StreamingResponse,
            responses={200: {"content": {"text/csv": {}}, "description": "every matching run"}},
            summary="Every run matching a search, as CSV (streamed)")
def runs_csv(request: Request, query: Annotated[RunsCsvQuery, Query()]) -> StreamingResponse:
    return stream_runs_csv(
        _node(request), experiment_ids=query.experiment_ids, filter=query.filter,
        order_by=query.order_by, view=query.view, has_model=query.has_model,
    )


def stream_runs_csv(node: QueryNode, **search: Any) -> StreamingResponse:
    """``queries.iter_runs_csv(**search)`` as a streamed CSV download, on a cursor of its own
    that lives as long as the stream. The search is compiled before the 200 goes out: a bad
    filter is a 400, not a broken stream."""
    cur = node.store.cursor()
    try:
        chunks = queries.iter_runs_csv(cur, **search)
    except BaseException:
        cur.close()
        raise

    def stream() -> Iterator[str]:
        try:
            yield from chunks
        finally:
            cur.close()

    return StreamingResponse(
        stream(), media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="runs.csv"'},
    )


@router.post("/runs/compare", tags=[RUNS], summary="Two or more runs side by side, with plot data")
def compare_runs(body: CompareRunsRequest, cur: Cursor) -> JSONResponse:
    result = queries.compare_runs(
        cur, body.run_ids, hide_identical=body.hide_identical, param_keys=body.param_keys,
        metric_keys=body.metric_keys, plot_keys=body.plot_keys, x=body.x, y=body.y, z=body.z,
    )
    return JSONResponse(_jsonable(result))


@router.get("/runs/{run_id}", tags=[RUNS], response_model=RunDetailOut,
            summary="A run: info, params, tags, note, metric summaries, artifacts, reproduce")
def get_run(run_id: str, cur: Cursor) -> JSONResponse:
    return _run_detail(cur, run_id)


@router.get("/runs/{run_id}/metric-history", tags=[RUNS], response_model=MetricHistoryOut,
            summary="Every point of a metric, ordered by (timestamp, step, value); paged")
def metric_history(run_id: str, query: Annotated[HistoryQuery, Query()],
                   cur: Cursor) -> JSONResponse:
    points, token = queries.metric_history(
        cur, run_id, query.key, max_results=query.max_results, page_token=query.page_token
    )
    return JSONResponse({
        "run_id": run_id, "key": query.key,
        "points": [{"step": s, "timestamp": t, "value": _num(v)} for s, t, v in points],
        "next_page_token": token,
    })


@router.get("/runs/{run_id}/metric-history/downsampled", tags=[RUNS],
            response_model=DownsampledOut,
            summary="A metric's history in at most N buckets, keeping each bucket's min and max")
def metric_history_downsampled(run_id: str, query: Annotated[DownsampleQuery, Query()],
                               cur: Cursor) -> JSONResponse:
    buckets = queries.metric_history_downsampled(cur, run_id, query.key, points=query.points,
                                                 x=query.x)
    return JSONResponse(
        {"run_id": run_id, "key": query.key, "x": query.x, "buckets": _jsonable(buckets)}
    )


@router.get("/runs/{run_id}/artifacts", tags=[RUNS], response_model=ArtifactsOut,
            summary="One directory of a run's artifacts")
def list_artifacts(run_id: str, query: Annotated[ArtifactsQuery, Query()],
                   cur: Cursor) -> JSONResponse:
    entries = queries.list_artifacts(cur, run_id, query.path)
    return JSONResponse(
        {"run_id": run_id, "path": query.path, "files": [e._asdict() for e in entries]}
    )


# --------------------------------------------------------------------------------------------
# Runs: writes (each one = events on the log; the response shows the applied result)
# --------------------------------------------------------------------------------------------


@router.post("/runs/{run_id}/rename", tags=[RUNS], response_model=RunDetailOut,
             summary="Rename a run")
def rename_run(run_id: str, body: RenameRunRequest, request: Request,
               commands: Writer) -> JSONResponse:
    commands.rename_run(run_id, body.name)
    return _fresh_run_detail(request, run_id)


@router.post("/runs/{run_id}/tags", tags=[RUNS], response_model=RunDetailOut,
             summary="Set (add or change) a tag")
def set_tag(run_id: str, body: SetTagRequest, request: Request, commands: Writer) -> JSONResponse:
    commands.set_tag(run_id, body.key, body.value)
    return _fresh_run_detail(request, run_id)


@router.post("/runs/{run_id}/tags/delete", tags=[RUNS], response_model=RunDetailOut,
             summary="Delete a tag")
def delete_tag(run_id: str, body: DeleteTagRequest, request: Request,
               commands: Writer) -> JSONResponse:
    commands.delete_tag(run_id, body.key)
    return _fresh_run_detail(request, run_id)


@router.put("/runs/{run_id}/note", tags=[RUNS], response_model=RunDetailOut,
            summary="Set the run's note (markdown)")
def set_note(run_id: str, body: SetNoteRequest, request: Request,
             commands: Writer) -> JSONResponse:
    commands.set_note(run_id, body.content)
    return _fresh_run_detail(request, run_id)


@router.post("/runs/delete", tags=[RUNS], response_model=RunsDeletedOut,
             summary="Delete runs (and, by default, every run below them)")
def delete_runs(body: RunIdsRequest, commands: Writer) -> dict[str, int]:
    return {"runs_deleted": commands.delete_runs(body.run_ids, body.with_descendants)}


@router.post("/runs/restore", tags=[RUNS], response_model=RunsRestoredOut,
             summary="Restore deleted runs (and, by default, the deleted runs below them)")
def restore_runs(body: RunIdsRequest, commands: Writer) -> dict[str, int]:
    return {"runs_restored": commands.restore_runs(body.run_ids, body.with_descendants)}


# --------------------------------------------------------------------------------------------
# Experiments
# --------------------------------------------------------------------------------------------


@router.get("/experiments", tags=[EXPERIMENTS], response_model=SearchExperimentsOut,
            summary="Search experiments")
def search_experiments(query: Annotated[ExperimentsQuery, Query()], cur: Cursor) -> JSONResponse:
    experiments, token = queries.search_experiments(
        cur, filter=query.filter, order_by=query.order_by, view=query.view,
        max_results=query.max_results, page_token=query.page_token,
    )
    return JSONResponse(
        {"experiments": [experiment_json(e) for e in experiments], "next_page_token": token}
    )


@router.get("/experiments/by-name", tags=[EXPERIMENTS], response_model=ExperimentOut,
            summary="The experiment with this name")
def get_experiment_by_name(query: Annotated[ExperimentByNameQuery, Query()],
                           cur: Cursor) -> JSONResponse:
    return JSONResponse(experiment_json(queries.get_experiment_by_name(cur, query.name)))


@router.get("/experiments/{experiment_id}", tags=[EXPERIMENTS], response_model=ExperimentOut,
            summary="An experiment")
def get_experiment(experiment_id: str, cur: Cursor) -> JSONResponse:
    return JSONResponse(experiment_json(queries.get_experiment(cur, experiment_id)))


@router.post("/experiments/{experiment_id}/runs/bulk-delete", tags=[EXPERIMENTS],
             response_model=RunsDeletedOut,
             summary="Delete the runs created at or before a time (at most max_runs, oldest "
                     "first)")
def bulk_delete(experiment_id: str, body: BulkDeleteRequest, commands: Writer) -> dict[str, int]:
    return {"runs_deleted": commands.bulk_delete(experiment_id, body.max_timestamp_millis,
                                                 body.max_runs)}


@router.post("/experiments/{experiment_id}/runs/bulk-restore", tags=[EXPERIMENTS],
             response_model=RunsRestoredOut,
             summary="Restore the runs deleted at or after a time (at most max_runs)")
def bulk_restore(experiment_id: str, body: BulkRestoreRequest,
                 commands: Writer) -> dict[str, int]:
    return {"runs_restored": commands.bulk_restore(experiment_id, body.min_timestamp_millis,
                                                   body.max_runs)}
