"""MLflow's tracking REST API (3.17) over runstream: the unmodified ``mlflow`` client logs here.

Served under ``/api/2.0/mlflow/...`` and, as MLflow's web UI expects, ``/ajax-api/2.0/mlflow/...``
(same handlers), plus ``/api/3.0/mlflow/server-info``. Reads go to the read model through
``runstream.queries``; every write goes through ``runstream.commands`` and so becomes the same
events the native client publishes, and returns only once this node's projector applied them
(read-your-writes: ``start_run`` then ``log_metric`` then ``search_runs`` sees the metric).

Where MLflow is lenient, runstream is explicit: over-long param and tag values are refused (400)
instead of truncated; an unknown enum name (status, view type) is refused instead of ignored; a
malformed or non-object JSON body is a 400 naming the problem; a repeated order_by key is a 400
(MLflow: a 500, which its client retries for minutes); metrics linked to logged models or datasets
(``model_id``, ``dataset_*``) are refused rather than stored unlinked; ±Infinity is kept and
returned as "Infinity" rather than clamped to ±1.8e308. Unknown routes and wrong methods under
these prefixes answer JSON (ENDPOINT_NOT_FOUND 404, 405) that the client can read.
"""

from __future__ import annotations

import json
import logging
import threading
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from runstream import commands as cmd
from runstream import queries
from runstream.api.mlflow_wire import (
    Message,
    MlflowError,
    as_double,
    as_int,
    body_message,
    check_name,
    dataset_tag_key,
    double,
    error_response,
    experiment_json,
    json_response,
    key_value_pairs,
    missing,
    query_message,
    run_info,
    run_json,
)
from runstream.api.responses import json_bytes
from runstream.commands import Commands, RunCreatedNotApplied
from runstream.errors import InvalidInput
from runstream.node import QueryNode

__all__ = ["MLFLOW_PREFIXES", "ROUTES", "router"]

log = logging.getLogger("runstream.api.mlflow")

MLFLOW_PREFIXES = ("/api/2.0/mlflow", "/ajax-api/2.0/mlflow")

VIEW_TYPES = {"ACTIVE_ONLY": 1, "DELETED_ONLY": 2, "ALL": 3}
_VIEWS: dict[str, queries.View] = {"ACTIVE_ONLY": "active", "DELETED_ONLY": "deleted", "ALL": "all"}
RUN_STATUSES = {"RUNNING": 1, "SCHEDULED": 2, "FINISHED": 3, "FAILED": 4, "KILLED": 5}

SEARCH_MAX_RESULTS = 50_000  # MLflow's SEARCH_MAX_RESULTS_THRESHOLD
SEARCH_DEFAULT_RESULTS = 1000
BULK_INTERVAL_MAX_RUNS = 100
BULK_INTERVAL_MAX_RESULTS = 2500
HISTORY_BULK_MAX_RESULTS = 25_000
MAX_DATASET_INPUTS = 100
MAX_DATASET_NAME = 500
MAX_DATASET_DIGEST = 36
MAX_INPUT_TAG_KEY = 255
MAX_INPUT_TAG_VALUE = 500
# A full log-batch (1000 items, tags of 8000 characters) is well under this.
MAX_BODY_BYTES = 32 * 1024 * 1024


# ------------------------------------------------------------------------------- plumbing


@dataclass
class Ctx:
    """What a handler gets: the node (reads) and its commands (writes)."""

    node: QueryNode
    commands: Commands

    def reading(self) -> Any:
        return self.node.store.reading()


HandlerFn = Callable[[Ctx, Message], Any]


@dataclass(frozen=True)
class Route:
    path: str  # below the prefix, e.g. "/runs/search"
    methods: tuple[str, ...]
    handler: HandlerFn


ROUTES: list[Route] = []


def rpc(path: str, *methods: str) -> Callable[[HandlerFn], HandlerFn]:
    def register(fn: HandlerFn) -> HandlerFn:
        ROUTES.append(Route(path, methods or ("POST",), fn))
        return fn

    return register


def _ctx(request: Request) -> Ctx:
    state = request.app.state
    ctx: Ctx | None = getattr(state, "mlflow_ctx", None)
    if ctx is None or ctx.node is not state.node:
        ctx = Ctx(state.node, Commands(state.node))
        state.mlflow_ctx = ctx
    return ctx


async def _message(request: Request) -> Message:
    if request.method in ("GET", "DELETE"):
        return query_message(request)
    return body_message(await _body(request), request.headers.get("content-type"))


async def _body(request: Request) -> bytes:
    """The request body, refused (400, not a 5xx the client would retry) beyond MAX_BODY_BYTES."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _too_large(int(declared))
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _too_large(size)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(size: int) -> InvalidInput:
    return InvalidInput(
        f"The request body is {size} bytes or more; at most {MAX_BODY_BYTES} are accepted. "
        "Split the request (log-batch takes at most 1000 items)."
    )


def _endpoint(handler: HandlerFn) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> Response:
        try:
            msg = await _message(request)
            result = await run_in_threadpool(handler, _ctx(request), msg)
        except Exception as exc:  # noqa: BLE001 - every failure becomes an MLflow error body
            return error_response(exc)
        if isinstance(result, Response):
            return result
        return Response(json_bytes(result), media_type="application/json")

    endpoint.__name__ = f"mlflow_{handler.__name__}"
    return endpoint


def _omit_empty(payload: dict[str, Any]) -> dict[str, Any]:
    """Protobuf JSON leaves unset and empty fields out: an empty list is no field at all."""
    return {k: v for k, v in payload.items() if v not in (None, [], "")}


# ----------------------------------------------------------------------------- experiments


# Creations of one name on this node run one at a time: the second waits until the first is
# applied, then finds the name taken (RESOURCE_ALREADY_EXISTS, on which the client's
# set_experiment reads the experiment by name). Across nodes, the id derived from the name
# makes concurrent creators agree.
_CREATE_LOCKS = tuple(threading.Lock() for _ in range(64))


@rpc("/experiments/create", "POST")
def create_experiment(ctx: Ctx, msg: Message) -> dict[str, Any]:
    name = msg.required_text("name")
    location = msg.text("artifact_location") or None
    tags = key_value_pairs(msg.objects("tags"), "tags")
    lock = _CREATE_LOCKS[zlib.crc32(name.encode("utf-8", "surrogatepass")) % len(_CREATE_LOCKS)]
    with lock:
        return {"experiment_id": ctx.commands.create_experiment(name, location, tags)}


@rpc("/experiments/get", "GET")
def get_experiment(ctx: Ctx, msg: Message) -> dict[str, Any]:
    experiment_id = msg.required_text("experiment_id")
    with ctx.reading() as cur:
        return {"experiment": experiment_json(queries.get_experiment(cur, experiment_id))}


@rpc("/experiments/get-by-name", "GET")
def get_experiment_by_name(ctx: Ctx, msg: Message) -> dict[str, Any]:
    name = msg.required_text("experiment_name")
    with ctx.reading() as cur:
        return {"experiment": experiment_json(queries.get_experiment_by_name(cur, name))}


@rpc("/experiments/search", "POST", "GET")
def search_experiments(ctx: Ctx, msg: Message) -> dict[str, Any]:
    # MLflow requires max_results here (the client always sends 1000); without it we use 1000.
    max_results = msg.integer("max_results", default=SEARCH_DEFAULT_RESULTS)
    assert max_results is not None
    view = msg.enum("view_type", VIEW_TYPES, default="ACTIVE_ONLY")
    with ctx.reading() as cur:
        records, token = queries.search_experiments(
            cur,
            filter=msg.text("filter") or None,
            order_by=msg.strings("order_by") or None,
            view=_VIEWS[view or "ACTIVE_ONLY"],
            max_results=max_results,
            page_token=msg.text("page_token") or None,
        )
    return _omit_empty({
        "experiments": [experiment_json(r) for r in records], "next_page_token": token
    })


@rpc("/experiments/update", "POST")
def update_experiment(ctx: Ctx, msg: Message) -> dict[str, Any]:
    experiment_id = msg.required_text("experiment_id")
    new_name = msg.required_text("new_name")
    ctx.commands.rename_experiment(experiment_id, new_name)
    return {}


@rpc("/experiments/delete", "POST")
def delete_experiment(ctx: Ctx, msg: Message) -> dict[str, Any]:
    ctx.commands.delete_experiment(msg.required_text("experiment_id"))
    return {}


@rpc("/experiments/restore", "POST")
def restore_experiment(ctx: Ctx, msg: Message) -> dict[str, Any]:
    ctx.commands.restore_experiment(msg.required_text("experiment_id"))
    return {}


@rpc("/experiments/set-experiment-tag", "POST")
def set_experiment_tag(ctx: Ctx, msg: Message) -> dict[str, Any]:
    experiment_id = msg.required_text("experiment_id")
    key = check_name(msg.required_text("key"), "key")
    value = msg.text("value", default="")
    assert value is not None
    ctx.commands.set_experiment_tag(experiment_id, key, value)
    return {}


@rpc("/experiments/delete-experiment-tag", "POST")
def delete_experiment_tag(ctx: Ctx, msg: Message) -> dict[str, Any]:
    experiment_id = msg.required_text("experiment_id")
    key = msg.required_text("key")
    ctx.commands.delete_experiment_tag(experiment_id, key)
    return {}


# ------------------------------------------------------------------------------------ runs


def _run_response(ctx: Ctx, run_id: str) -> dict[str, Any]:
    with ctx.reading() as cur:
        return {"run": run_json(queries.get_run(cur, run_id))}


@rpc("/runs/create", "POST")
def create_run(ctx: Ctx, msg: Message) -> dict[str, Any]:
    experiment_id = msg.text("experiment_id") or "0"
    tags = key_value_pairs(msg.objects("tags"), "tags")
    try:
        run_id = ctx.commands.create_run(
            experiment_id,
            name=msg.text("run_name") or None,
            user=msg.text("user_id") or None,
            start_time=msg.integer("start_time", lo=0),
            tags=tags,
        )
    except RunCreatedNotApplied as pending:
        # The run is on the log: answer with it as published. A 503 here would make the
        # mlflow client retry, and every retry would create another run.
        return {"run": run_json(pending.record)}
    return _run_response(ctx, run_id)


@rpc("/runs/get", "GET")
def get_run(ctx: Ctx, msg: Message) -> dict[str, Any]:
    return _run_response(ctx, msg.run_id())


@rpc("/runs/update", "POST")
def update_run(ctx: Ctx, msg: Message) -> dict[str, Any]:
    run_id = msg.run_id()
    record = ctx.commands.update_run(
        run_id,
        status=msg.enum("status", RUN_STATUSES),
        end_time=msg.integer("end_time", lo=0),
        name=msg.text("run_name") or None,
    )
    return {"run_info": run_info(record)}


@rpc("/runs/delete", "POST")
def delete_run(ctx: Ctx, msg: Message) -> dict[str, Any]:
    # As MLflow's runs/delete: this run only (the UI deletes children with calls of its own).
    ctx.commands.delete_runs([msg.run_id()], with_descendants=False)
    return {}


@rpc("/runs/restore", "POST")
def restore_run(ctx: Ctx, msg: Message) -> dict[str, Any]:
    ctx.commands.restore_runs([msg.run_id()], with_descendants=False)
    return {}


@rpc("/runs/search", "POST")
def search_runs(ctx: Ctx, msg: Message) -> dict[str, Any]:
    experiment_ids = msg.strings("experiment_ids")
    view = msg.enum("run_view_type", VIEW_TYPES, default="ACTIVE_ONLY")
    max_results = msg.integer("max_results", default=SEARCH_DEFAULT_RESULTS)
    assert max_results is not None
    with ctx.reading() as cur:
        records, token = queries.search_runs(
            cur,
            experiment_ids=experiment_ids,
            filter=msg.text("filter") or None,
            order_by=msg.strings("order_by") or None,
            view=_VIEWS[view or "ACTIVE_ONLY"],
            max_results=max_results,
            page_token=msg.text("page_token") or None,
        )
    return _omit_empty({"runs": [run_json(r) for r in records], "next_page_token": token})


def _no_model_links(item: Any, where: str) -> None:
    """Metrics linked to logged models or datasets (3.x fields) are refused, not unlinked."""
    get = item.get if isinstance(item, dict) else (lambda name: item.raw(name))
    for field in ("model_id", "dataset_name", "dataset_digest"):
        if get(field):
            raise InvalidInput(
                f"'{where}{field}' is not supported: runstream does not link metrics to logged "
                "models or datasets. Log the metric without it."
            )


def _metric(item: Mapping[str, Any], index: int, run_id: str) -> tuple[str, float, int, int]:
    where = f"metrics[{index}]."
    key = item.get("key")
    if key is None or key == "":
        raise missing(where + "key")
    if not isinstance(key, str):
        raise InvalidInput(f"'{where}key' must be a string")
    check_name(key, where + "key")
    value = item.get("value")
    if value is None:
        raise missing(where + "value")
    timestamp = item.get("timestamp")
    if timestamp is None:
        raise missing(where + "timestamp")
    step = item.get("step")
    value_f = as_double(value, where + "value")
    ts = _timestamp(timestamp, key, value_f, where + "timestamp")
    other_run = item.get("run_id")
    if other_run and other_run != run_id:
        raise InvalidInput(
            f"'{where}run_id' is {other_run!r} but the batch is for run {run_id!r}"
        )
    if item.get("model_id") or item.get("dataset_name") or item.get("dataset_digest"):
        _no_model_links(item, where)
    return key, value_f, 0 if step is None else as_int(step, where + "step"), ts


def _timestamp(raw: Any, key: str, value: float, name: str) -> int:
    ts = as_int(raw, name)
    if ts < 0:
        raise InvalidInput(
            f"Invalid value {ts} for parameter 'timestamp' supplied: metric '{key}' "
            f"(value={value}). Timestamp must be a nonnegative long (64-bit integer)"
        )
    return ts


@rpc("/runs/log-metric", "POST")
def log_metric(ctx: Ctx, msg: Message) -> dict[str, Any]:
    run_id = msg.run_id()
    key = check_name(msg.required_text("key"), "key")
    value = msg.raw("value")
    if value is None:
        raise missing("value")
    value_f = as_double(value, "value")
    timestamp = msg.raw("timestamp")
    if timestamp is None:
        raise missing("timestamp")
    ts = _timestamp(timestamp, key, value_f, "timestamp")
    step = msg.integer("step", default=0)
    assert step is not None
    _no_model_links(msg, "")
    ctx.commands.log_batch(run_id, metrics=[(key, value_f, step, ts)])
    return {}


@rpc("/runs/log-parameter", "POST")
def log_param(ctx: Ctx, msg: Message) -> dict[str, Any]:
    run_id = msg.run_id()
    key = check_name(msg.required_text("key"), "key")
    value = msg.text("value", default="")
    assert value is not None
    ctx.commands.log_batch(run_id, params=[(key, value)])
    return {}


@rpc("/runs/set-tag", "POST")
def set_tag(ctx: Ctx, msg: Message) -> dict[str, Any]:
    run_id = msg.run_id()
    key = check_name(msg.required_text("key"), "key")
    value = msg.text("value", default="")
    assert value is not None
    ctx.commands.set_tag(run_id, key, value)
    return {}


@rpc("/runs/delete-tag", "POST")
def delete_tag(ctx: Ctx, msg: Message) -> dict[str, Any]:
    run_id = msg.run_id()
    ctx.commands.delete_tag(run_id, msg.required_text("key"))
    return {}


@rpc("/runs/log-batch", "POST")
def log_batch(ctx: Ctx, msg: Message) -> dict[str, Any]:
    run_id = msg.run_id()
    metrics = msg.objects("metrics")
    params = msg.objects("params")
    tags = msg.objects("tags")
    # The limits first: a huge batch is refused before its items are read.
    for what, items, limit in (("metrics", metrics, cmd.BATCH_MAX_METRICS),
                               ("params", params, cmd.BATCH_MAX_PARAMS),
                               ("tags", tags, cmd.BATCH_MAX_TAGS)):
        if len(items) > limit:
            raise InvalidInput(
                f"A batch logging request can contain at most {limit} {what}. Got {len(items)} "
                f"{what}. Please split up {what} across multiple requests and try again."
            )
    points = [_metric(m, i, run_id) for i, m in enumerate(metrics)]
    ctx.commands.log_batch(
        run_id,
        metrics=points,
        params=key_value_pairs(params, "params"),
        tags=key_value_pairs(tags, "tags"),
    )
    return {}


def _bounded(value: Any, name: str, limit: int, *, required: bool = False) -> str | None:
    if value is None or value == "":
        if required:
            raise missing(name)
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"'{name}' must be a string")
    if len(value) > limit:
        raise InvalidInput(f"'{name}' exceeds the maximum length of {limit} characters")
    return value


@rpc("/runs/log-inputs", "POST")
def log_inputs(ctx: Ctx, msg: Message) -> dict[str, Any]:
    """Dataset inputs are kept as run tags (one per dataset and context), whole: they come back
    as ``inputs.dataset_inputs`` of the run. Model inputs (logged models) are refused."""
    run_id = msg.run_id()
    datasets = msg.objects("datasets")
    if msg.array("models"):
        raise InvalidInput(
            "'models' is not supported: runstream does not record logged-model inputs"
        )
    if len(datasets) > MAX_DATASET_INPUTS:
        raise InvalidInput(
            f"A log-inputs request can contain at most {MAX_DATASET_INPUTS} datasets. "
            f"Got {len(datasets)}."
        )
    tags: list[tuple[str, str]] = []
    for i, item in enumerate(datasets):
        where = f"datasets[{i}]"
        dataset = item.get("dataset")
        if not isinstance(dataset, dict):
            raise missing(f"{where}.dataset")
        name = _bounded(dataset.get("name"), f"{where}.dataset.name", MAX_DATASET_NAME,
                        required=True)
        digest = _bounded(dataset.get("digest"), f"{where}.dataset.digest", MAX_DATASET_DIGEST,
                          required=True)
        assert name is not None and digest is not None
        clean: dict[str, Any] = {"name": name, "digest": digest}
        for field, limit in (("source_type", 500), ("source", 65535), ("schema", 1048575),
                             ("profile", 16777215)):
            value = _bounded(dataset.get(field), f"{where}.dataset.{field}", limit,
                             required=field in ("source_type", "source"))
            if value is not None:
                clean[field] = value
        input_tags: list[dict[str, str]] = []
        raw_tags = item.get("tags") or []
        if not isinstance(raw_tags, list):
            raise InvalidInput(f"'{where}.tags' must be a list")
        for j, tag in enumerate(raw_tags):
            if not isinstance(tag, dict):
                raise InvalidInput(f"'{where}.tags[{j}]' must be an object")
            key = _bounded(tag.get("key"), f"{where}.tags[{j}].key", MAX_INPUT_TAG_KEY,
                           required=True)
            value = _bounded(tag.get("value"), f"{where}.tags[{j}].value", MAX_INPUT_TAG_VALUE,
                             required=True)
            assert key is not None and value is not None
            input_tags.append({"key": key, "value": value})
        entry: dict[str, Any] = {"dataset": clean}
        if input_tags:
            entry["tags"] = input_tags
        context = next((t["value"] for t in input_tags if t["key"] == "mlflow.data.context"), None)
        blob = json.dumps(entry, separators=(",", ":"), ensure_ascii=False)
        if len(blob) > cmd.MAX_TAG_VALUE_LENGTH:
            raise InvalidInput(
                f"Dataset input {name!r} is {len(blob)} characters long once encoded; runstream "
                f"keeps a dataset input as a run tag of at most {cmd.MAX_TAG_VALUE_LENGTH} "
                "characters. Log a smaller schema or profile."
            )
        tags.append((dataset_tag_key(name, digest, context), blob))
    if tags:
        ctx.commands.log_batch(run_id, tags=tags)
    else:
        with ctx.reading() as cur:
            queries.run_stage(cur, run_id)
    return {}


# ---------------------------------------------------------------------------------- metrics


@rpc("/metrics/get-history", "GET")
def get_metric_history(ctx: Ctx, msg: Message) -> dict[str, Any]:
    run_id = msg.run_id()
    key = msg.required_text("metric_key")
    max_results = msg.integer("max_results")
    if max_results is not None and max_results <= 0:
        raise InvalidInput(
            f"Invalid value {max_results} for parameter 'max_results' supplied. It must be a "
            "positive integer."
        )
    with ctx.reading() as cur:
        points, token = queries.metric_history(
            cur, run_id, key, max_results=max_results, page_token=msg.text("page_token") or None
        )
    metrics = [{"key": key, "value": double(v), "timestamp": t, "step": s} for s, t, v in points]
    return _omit_empty({"metrics": metrics, "next_page_token": token})


def _bulk_run_ids(msg: Message, field: str, too_many: str) -> list[str]:
    """The distinct run ids of a bulk history request: at least one, at most
    BULK_INTERVAL_MAX_RUNS (``too_many`` is MLflow's message, with {cap} and {n})."""
    run_ids = list(dict.fromkeys(msg.strings(field)))
    if not run_ids:
        raise missing(field)
    if len(run_ids) > BULK_INTERVAL_MAX_RUNS:
        raise InvalidInput(too_many.format(cap=BULK_INTERVAL_MAX_RUNS, n=len(run_ids)))
    return run_ids


@rpc("/metrics/get-history-bulk-interval", "GET")
def get_metric_history_bulk_interval(ctx: Ctx, msg: Message) -> dict[str, Any]:
    run_ids = _bulk_run_ids(
        msg, "run_ids", "GetMetricHistoryBulkInterval request must specify at most {cap} "
        "run_ids. Received {n} run_ids."
    )
    key = msg.required_text("metric_key")
    start, end = msg.integer("start_step"), msg.integer("end_step")
    if (start is None) != (end is None):
        raise InvalidInput(
            "If either start step or end step are specified, both must be specified."
        )
    if start is not None and end is not None and start > end:
        raise InvalidInput(
            "end_step must be greater than start_step. "
            f"Found start_step={start} and end_step={end}."
        )
    max_results = msg.integer("max_results", default=BULK_INTERVAL_MAX_RESULTS)
    assert max_results is not None
    if not 1 <= max_results <= BULK_INTERVAL_MAX_RESULTS:
        raise InvalidInput(f"max_results must be between 1 and {BULK_INTERVAL_MAX_RESULTS}.")
    with ctx.reading() as cur:
        for run_id in run_ids:
            queries.run_stage(cur, run_id)
        sampled = _sample_history(cur, run_ids, key, max_results, start, end)
    out = [
        {"key": key, "value": double(v), "timestamp": t, "step": s, "run_id": run_id}
        for run_id in run_ids for s, t, v in sampled.get(run_id, ())
    ]
    return _omit_empty({"metrics": out})


def _sample_history(
    cur: Any, run_ids: Sequence[str], key: str, max_results: int, start: int | None,
    end: int | None,
) -> dict[str, list[tuple[int, int, float]]]:
    """At most ``max_results`` points per run, evenly spread over its ordered history (the
    first point of each of ``max_results`` equal buckets), always ending with the last point:
    MLflow's SQL store sampling."""
    where = "ru.run_id IN (SELECT unnest(?)) AND h.key = ?"
    args: list[object] = [list(run_ids), key]
    if start is not None and end is not None:
        where += " AND h.step BETWEEN ? AND ?"
        args += [start, end]
    rows = cur.execute(
        "WITH b AS (SELECT ru.run_id, h.step, h.timestamp, h.value, "
        "  ntile(?) OVER (PARTITION BY run_id ORDER BY step, timestamp, value) AS bucket, "
        "  row_number() OVER (PARTITION BY run_id ORDER BY step DESC, timestamp DESC, "
        "    value DESC) AS from_end "
        f"  FROM run_metric_history h JOIN runs ru USING (run_key) WHERE {where}), "
        "r AS (SELECT *, row_number() OVER (PARTITION BY run_id, bucket "
        "  ORDER BY step, timestamp, value) AS rn FROM b) "
        "SELECT run_id, step, timestamp, value, rn = 1, from_end = 1 FROM r "
        "WHERE rn = 1 OR from_end = 1 ORDER BY run_id, step, timestamp, value",
        [max_results, *args],
    ).fetchall()
    out: dict[str, list[tuple[int, int, float]]] = {}
    last: dict[str, tuple[int, int, float]] = {}
    for run_id, step, ts, value, first_of_bucket, is_last in rows:
        if first_of_bucket:
            out.setdefault(run_id, []).append((step, ts, value))
        if is_last:
            last[run_id] = (step, ts, value)
    for run_id, point in last.items():
        points = out.setdefault(run_id, [])
        if not points or points[-1] != point:
            if len(points) >= max_results:
                points[-1] = point
            else:
                points.append(point)
    return out


@rpc("/metrics/get-history-bulk", "GET")
def get_metric_history_bulk(ctx: Ctx, msg: Message) -> dict[str, Any]:
    """The web UI's variant (not in MLflow's proto): whole histories of up to 100 runs."""
    run_ids = _bulk_run_ids(
        msg, "run_id", "GetMetricHistoryBulk request cannot specify more than {cap} run_ids. "
        "Received {n} run_ids."
    )
    key = msg.required_text("metric_key")
    max_results = msg.integer("max_results", default=HISTORY_BULK_MAX_RESULTS)
    assert max_results is not None
    if not 1 <= max_results <= HISTORY_BULK_MAX_RESULTS:
        raise InvalidInput(f"max_results must be between 1 and {HISTORY_BULK_MAX_RESULTS}.")
    out: list[dict[str, Any]] = []
    with ctx.reading() as cur:
        for run_id in run_ids:
            points, _ = queries.metric_history(cur, run_id, key, max_results=max_results)
            out += [{"key": key, "value": double(v), "timestamp": t, "step": s, "run_id": run_id}
                    for s, t, v in points]
    return _omit_empty({"metrics": out})


# -------------------------------------------------------------------------------- artifacts


@rpc("/artifacts/list", "GET")
def list_artifacts(ctx: Ctx, msg: Message) -> dict[str, Any]:
    run_id = msg.run_id()
    path = msg.text("path") or None
    if msg.text("page_token"):
        raise InvalidInput("Invalid page token: artifact listings are not paged here")
    with ctx.reading() as cur:
        record = queries.get_run(cur, run_id)
        entries = queries.list_artifacts(cur, run_id, path)
    files = []
    for entry in entries:
        info: dict[str, Any] = {"path": entry.path, "is_dir": entry.is_dir}
        if not entry.is_dir and entry.size is not None:
            info["file_size"] = entry.size
        files.append(info)
    root = record.artifact_uri or f"mlflow-artifacts:/{record.experiment_id}/{run_id}/artifacts"
    return _omit_empty({"root_uri": root, "files": files})


@rpc("/logged-models/search", "POST")
def search_logged_models(ctx: Ctx, msg: Message) -> dict[str, Any]:
    """runstream has no logged models (MLflow 3's LoggedModel): the search finds none. The
    client asks it from ``list_artifacts(run_id, path)`` and ``download_artifacts``."""
    msg.strings("experiment_ids")
    return {}


# ------------------------------------------------------- Databricks' bulk delete / restore


@rpc("/databricks/runs/delete-runs", "POST")
def delete_runs_bulk(ctx: Ctx, msg: Message) -> dict[str, Any]:
    experiment_id = msg.required_text("experiment_id")
    max_ts = msg.integer("max_timestamp_millis", required=True)
    max_runs = msg.integer("max_runs", default=cmd.MAX_BULK_RUNS)
    assert max_ts is not None and max_runs is not None
    return {"runs_deleted": ctx.commands.bulk_delete(experiment_id, max_ts, max_runs)}


@rpc("/databricks/runs/restore-runs", "POST")
def restore_runs_bulk(ctx: Ctx, msg: Message) -> dict[str, Any]:
    experiment_id = msg.required_text("experiment_id")
    min_ts = msg.integer("min_timestamp_millis", required=True)
    max_runs = msg.integer("max_runs", default=cmd.MAX_BULK_RUNS)
    assert min_ts is not None and max_runs is not None
    return {"runs_restored": ctx.commands.bulk_restore(experiment_id, min_ts, max_runs)}


# ------------------------------------------------------------------------------- the router


def _server_info() -> Response:
    return json_response({
        "store_type": "runstream",
        "workspaces_enabled": False,
        "trace_archival_enabled": False,
        "multipart_uploads_enabled": False,
        "multipart_downloads_enabled": False,
    })


def _not_found(known: dict[str, set[str]]) -> Callable[[Request], Any]:
    async def fallback(request: Request) -> Response:
        path = request.url.path
        allowed = known.get(path.rstrip("/"))
        if allowed:
            return error_response(MlflowError(
                "BAD_REQUEST",
                f"Method {request.method} is not allowed for {path}; use "
                f"{' or '.join(sorted(allowed))}",
                http_status=405,
            ))
        return error_response(MlflowError(
            "ENDPOINT_NOT_FOUND", f"No MLflow endpoint {request.method} {path} on runstream"
        ))

    return fallback


def build_router() -> APIRouter:
    """Every MLflow route under both prefixes, then a JSON 404/405 for the rest of them."""
    router = APIRouter(tags=["mlflow"])
    known: dict[str, set[str]] = {}
    for prefix in MLFLOW_PREFIXES:
        for route in ROUTES:
            path = prefix + route.path
            for method in route.methods:  # one route per method: one OpenAPI operation each
                router.add_api_route(path, _endpoint(route.handler), methods=[method],
                                     include_in_schema=prefix.startswith("/api"),
                                     operation_id=f"mlflow_{method.lower()}{path}".replace("/", "_"))
            known.setdefault(path, set()).update(route.methods)
    for prefix in ("/api/3.0/mlflow", "/ajax-api/3.0/mlflow"):
        router.add_api_route(prefix + "/server-info", _server_info, methods=["GET"],
                             include_in_schema=False)
        known[prefix + "/server-info"] = {"GET"}
    fallback = _not_found(known)
    for prefix in (*MLFLOW_PREFIXES, "/api/3.0/mlflow", "/ajax-api/3.0/mlflow"):
        router.add_api_route(prefix + "/{rest:path}", fallback,
                             methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                             include_in_schema=False)
    return router


router = build_router()
