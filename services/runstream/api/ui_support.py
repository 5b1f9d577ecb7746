"""Read endpoints the web UI needs beyond the native API, under ``/api/v1/ui``.

The runs table of the UI scrolls through 100,000 runs: it needs the total, random access by
offset (a virtual scroller jumps anywhere), only the columns on screen, and runs nested under
their parent even when parent and children land on different pages. The native search pages
with opaque tokens and returns every param, tag and metric of a run, so the table has its own
endpoint here. Filter, order_by, view and has_model go through the same compiled selection as
``queries.search_runs`` (``queries.select_runs``): one filter language, one set of errors.

Also here: the key catalog (which params and metrics exist, for column and axis pickers),
experiments with their run counts, the CSV of chosen runs as a form post (10,000 ids do not
fit in a URL), and the experiment writes the native API does not have (create, rename,
delete, restore), through ``runstream.commands`` like every write. Errors leave through the
app's handlers (``runstream.api.errors``): a malformed filter is a 400 naming its position.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Annotated, Any
from urllib.parse import parse_qs

import duckdb
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from runstream import queries
from runstream.api.native import stream_runs_csv
from runstream.api.responses import JSONResponse
from runstream.commands import Commands
from runstream.errors import InvalidInput
from runstream.node import QueryNode

router = APIRouter(prefix="/api/v1/ui", tags=["ui"])

MAX_PAGE = 500
MAX_IDS = 10_000  # as many runs as one bulk command may touch
MAX_SUBTREE = 2_000
MAX_KEYS = 2_000

_ROW_COLUMNS = (
    "run_id", "name", "experiment_id", "user_id", "source_name", "source_type", "status",
    "start_time", "end_time", "has_model", "parent_run_id", "lifecycle_stage", "git_commit",
)
_ROW_SELECT = ", ".join(f"r.{c}" for c in _ROW_COLUMNS)
# A run is a root of the nested view when its parent is not among the selected runs. The
# runs that are not roots (a selected run under a selected parent) are few and found first:
# excluding them keeps the top-N sort of the page query (a NOT IN over every selected parent
# would cost ~5x more at 100,000 runs).
_NOT_ROOT = (
    "SELECT r.run_id FROM runs r WHERE {where} AND r.parent_run_id IS NOT NULL "
    "AND r.parent_run_id IN (SELECT r.run_id FROM runs r WHERE {where})"
)
AUTO_PARAMS = 3
AUTO_METRICS = 5


def _node(request: Request) -> QueryNode:
    node: QueryNode = request.app.state.node
    return node


def _split(values: Sequence[str] | None) -> list[str]:
    """Ids given as repeated parameters, comma-separated values, or both."""
    out: list[str] = []
    for value in values or ():
        out.extend(v for v in value.split(",") if v)
    return list(dict.fromkeys(out))


def _keys(values: Sequence[str] | None) -> list[str]:
    """Param or metric keys, one per repeated parameter (a key may hold a comma)."""
    return list(dict.fromkeys(v for v in values or () if v))


def _selection(
    experiment_ids: list[str] | None, filter: str | None, order_by: list[str] | None,
    view: str, has_model: bool | None,
) -> Any:
    # The native search's own selection: same parser, same SQL, same error messages.
    return queries.select_runs(experiment_ids, filter, order_by, view, has_model)


# (table, value column) of param and metric columns: fixed SQL, chosen by name.
_VALUES = {"params": ("run_params", "value"), "metrics": ("run_metric_summary", "latest_value")}
# The rows of a per-run table for some run ids (keyed by run_key there).
_OF_RUNS = "{table} t JOIN runs r USING (run_key) WHERE r.run_id IN (SELECT unnest(?))"
# Choosing columns from a page reads every value of its runs in one scan, unless they hold
# more than this many (thousands of keys per run): then the keys are counted first.
_AUTO_SCAN_CAP = 100_000


def _values(
    cur: duckdb.DuckDBPyConnection, kind: str, run_ids: list[str], keys: list[str] | int,
) -> tuple[list[str], list[tuple[str, str, Any]]]:
    """(keys, [(run_id, key, value)]) of params or metrics (latest value) of some runs.

    ``keys`` is the list wanted, or a count: the keys most of these runs have (ties by name).
    """
    table, column = _VALUES[kind]
    if isinstance(keys, int):
        found = cur.execute(
            f"SELECT r.run_id, t.key, t.{column} FROM {_OF_RUNS.format(table=table)} LIMIT ?",
            [run_ids, _AUTO_SCAN_CAP + 1],
        ).fetchall()
        if len(found) <= _AUTO_SCAN_CAP:
            counts = Counter(key for _, key, _ in found)
            chosen = sorted(sorted(counts, key=lambda k: (-counts[k], k))[:keys])
            keep = set(chosen)
            return chosen, [t for t in found if t[1] in keep]
        keys = sorted(k for (k,) in cur.execute(
            f"SELECT t.key FROM {_OF_RUNS.format(table=table)} "
            "GROUP BY t.key ORDER BY count(*) DESC, t.key LIMIT ?", [run_ids, keys],
        ).fetchall())
    if not keys or not run_ids:
        return keys, []
    return keys, cur.execute(
        f"SELECT r.run_id, t.key, t.{column} FROM {_OF_RUNS.format(table=table)} "
        "AND t.key IN (SELECT unnest(?))", [run_ids, keys],
    ).fetchall()


def _rows(
    cur: duckdb.DuckDBPyConnection, run_ids: list[str], params: list[str] | int,
    metrics: list[str] | int, where: str, where_params: tuple[object, ...],
) -> tuple[dict[str, dict[str, Any]], list[str], list[str]]:
    """Table rows for runs (any order): the run's fields, the params and metrics (latest
    value) of the columns, and how many of its direct children are in the selection; with
    the columns (chosen here when ``params``/``metrics`` is a count, see ``_values``)."""
    rows: dict[str, dict[str, Any]] = {}
    if not run_ids:
        return rows, [] if isinstance(params, int) else params, [] if isinstance(metrics, int) else metrics
    for values in cur.execute(
        f"SELECT {_ROW_SELECT} FROM runs r WHERE r.run_id IN (SELECT unnest(?))", [run_ids]
    ).fetchall():
        row = dict(zip(_ROW_COLUMNS, values, strict=True))
        row.update(params={}, metrics={}, children=0)
        rows[row["run_id"]] = row
    param_keys, found = _values(cur, "params", run_ids, params)
    for run_id, key, value in found:
        rows[run_id]["params"][key] = value
    metric_keys, found = _values(cur, "metrics", run_ids, metrics)
    for run_id, key, value in found:
        rows[run_id]["metrics"][key] = _number(value)
    for parent, count in cur.execute(
        f"SELECT r.parent_run_id, count(*) FROM runs r WHERE {where} "
        "AND r.parent_run_id IN (SELECT unnest(?)) GROUP BY r.parent_run_id",
        [*where_params, run_ids],
    ).fetchall():
        rows[parent]["children"] = count
    return rows, param_keys, metric_keys


def _number(value: float | None) -> float | str | None:
    # JSON has no NaN or infinities; send them as the strings MLflow's wire format uses.
    if value is None:
        return None
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "Infinity" if value > 0 else "-Infinity"
    return value


SearchArgs = dict[str, Any]


def _search_args(
    experiment_ids: list[str] | None, filter: str | None, view: str, has_model: bool | None,
    order_by: list[str] | None,
) -> SearchArgs:
    ids = _split(experiment_ids)
    return {
        "experiment_ids": ids or None,
        "filter": filter or None,
        "order_by": [o for o in (order_by or []) if o.strip()] or None,
        "view": view,
        "has_model": has_model,
    }


ExperimentIds = Annotated[list[str] | None, Query(description="experiment ids (repeat or comma)")]
FilterText = Annotated[str | None, Query(description="the run filter language")]
OrderBy = Annotated[list[str] | None, Query(description="order_by clauses, one per parameter")]
View = Annotated[str, Query(pattern="^(active|deleted|all)$")]


@router.get("/runs", summary="One window of the runs table: total, rows at an offset, chosen columns")
def runs_table(
    request: Request,
    experiment_ids: ExperimentIds = None,
    filter: FilterText = None,
    view: View = "active",
    has_model: bool | None = None,
    order_by: OrderBy = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    params: Annotated[list[str] | None, Query(description="param columns")] = None,
    metrics: Annotated[list[str] | None, Query(description="metric columns")] = None,
    nested: bool = True,
    with_total: bool = True,
    auto_params: Annotated[bool, Query(description="choose param columns from the page")] = False,
    auto_metrics: Annotated[bool, Query(description="choose metric columns from the page")] = False,
) -> Response:
    """``auto_params``/``auto_metrics`` pick the columns from the runs of this page (the keys
    most of them have), so a first visit needs no key catalog before its first rows."""
    args = _search_args(experiment_ids, filter, view, has_model, order_by)
    sel = _selection(**args)
    param_keys, metric_keys = _keys(params), _keys(metrics)
    if sel.empty:
        return JSONResponse({"total": 0, "offset": offset, "rows": [],
                             "columns": {"params": param_keys, "metrics": metric_keys}})
    where = sel.where
    where_params: tuple[object, ...] = sel.params
    page_where, page_params = where, list(where_params)
    if nested:
        page_where = f"{where} AND r.run_id NOT IN ({_NOT_ROOT.format(where=where)})"
        page_params = [*where_params, *where_params, *where_params]
    with _node(request).store.reading() as cur:
        # The search's own paging (newest-first windows included), over the page's roots.
        page_sel = replace(sel, where=page_where, params=tuple(page_params))
        ids = [run_id for _, run_id, _ in queries.page_runs(cur, page_sel, limit, offset)]
        total = None
        if with_total:
            (total,) = cur.execute(
                f"SELECT count(*) FROM runs r WHERE {page_where}", page_params
            ).fetchall()[0]
        rows, param_keys, metric_keys = _rows(
            cur, ids, AUTO_PARAMS if auto_params else param_keys,
            AUTO_METRICS if auto_metrics else metric_keys, where, where_params,
        )
    return JSONResponse({
        "total": total, "offset": offset,
        "rows": [{**rows[i], "depth": 0} for i in ids if i in rows],
        "columns": {"params": param_keys, "metrics": metric_keys},
    })


@router.get("/runs/{run_id}/subtree",
            summary="The selected runs below a run, depth first, in the table's order")
def runs_subtree(
    request: Request,
    run_id: str,
    experiment_ids: ExperimentIds = None,
    filter: FilterText = None,
    view: View = "active",
    has_model: bool | None = None,
    order_by: OrderBy = None,
    params: Annotated[list[str] | None, Query()] = None,
    metrics: Annotated[list[str] | None, Query()] = None,
) -> Response:
    args = _search_args(experiment_ids, filter, view, has_model, order_by)
    sel = _selection(**args)
    if sel.empty:
        return JSONResponse({"rows": [], "truncated": False})
    with _node(request).store.reading() as cur:
        found = cur.execute(
            "WITH RECURSIVE sel AS (SELECT r.run_id, r.parent_run_id FROM runs r "
            f"  WHERE {sel.where}), "
            "tree(run_id, depth) AS ("
            "  SELECT run_id, 1 FROM sel WHERE parent_run_id = ? "
            "  UNION SELECT s.run_id, t.depth + 1 FROM sel s JOIN tree t "
            "    ON s.parent_run_id = t.run_id WHERE t.depth < 32"
            ") SELECT run_id, min(depth) FROM tree GROUP BY run_id LIMIT ?",
            [*sel.params, run_id, MAX_SUBTREE + 1],
        ).fetchall()
        truncated = len(found) > MAX_SUBTREE
        depth = dict(found[:MAX_SUBTREE])
        # Siblings in the table's order.
        ids = [r for (r,) in cur.execute(
            f"SELECT r.run_id FROM runs r WHERE r.run_id IN (SELECT unnest(?)) "
            f"ORDER BY {sel.order.sql}",
            [list(depth), *sel.order.params],
        ).fetchall()]
        rows, _, _ = _rows(cur, ids, _keys(params), _keys(metrics), sel.where, sel.params)
    # Depth first: each run right after its parent, siblings in the table's order.
    children: dict[str | None, list[str]] = {}
    for i in ids:
        if i in rows:
            parent = rows[i]["parent_run_id"]
            children.setdefault(parent if parent in depth else run_id, []).append(i)
    ordered: list[dict[str, Any]] = []

    def walk(parent: str, level: int) -> None:
        for child in children.get(parent, ()):
            ordered.append({**rows[child], "depth": level})
            if level < 32:
                walk(child, level + 1)

    walk(run_id, 1)
    return JSONResponse({"rows": ordered, "truncated": truncated})


@router.get("/run-ids", summary="The ids of the selected runs (for select-all), at most 10,000")
def run_ids(
    request: Request,
    experiment_ids: ExperimentIds = None,
    filter: FilterText = None,
    view: View = "active",
    has_model: bool | None = None,
    order_by: OrderBy = None,
) -> Response:
    args = _search_args(experiment_ids, filter, view, has_model, order_by)
    sel = _selection(**args)
    if sel.empty:
        return JSONResponse({"run_ids": [], "total": 0})
    with _node(request).store.reading() as cur:
        ids = [r for (r,) in cur.execute(
            f"SELECT r.run_id FROM runs r WHERE {sel.where} ORDER BY {sel.order.sql} LIMIT ?",
            [*sel.params, *sel.order.params, MAX_IDS],
        ).fetchall()]
        (total,) = cur.execute(f"SELECT count(*) FROM runs r WHERE {sel.where}",
                               list(sel.params)).fetchall()[0]
    return JSONResponse({"run_ids": ids, "total": total, "truncated": total > len(ids)})


@router.get("/keys", summary="The param and metric keys of some experiments, with run counts")
def keys(request: Request, experiment_ids: ExperimentIds = None) -> Response:
    ids = _split(experiment_ids)
    scope = "WHERE run_key IN (SELECT run_key FROM runs WHERE experiment_id IN (SELECT unnest(?)))"
    args: list[object] = [ids] if ids else []
    if not ids:
        scope = ""
    with _node(request).store.reading() as cur:
        params = cur.execute(
            f"SELECT key, count(*) FROM run_params {scope} GROUP BY key ORDER BY key LIMIT ?",
            [*args, MAX_KEYS],
        ).fetchall()
        metrics = cur.execute(
            f"SELECT key, count(*) FROM run_metric_summary {scope} GROUP BY key ORDER BY key "
            "LIMIT ?",
            [*args, MAX_KEYS],
        ).fetchall()
        tags = cur.execute(
            f"SELECT key, count(*) FROM run_tags {scope} GROUP BY key ORDER BY key LIMIT ?",
            [*args, MAX_KEYS],
        ).fetchall()
    return JSONResponse({
        "params": [{"key": k, "runs": n} for k, n in params],
        "metrics": [{"key": k, "runs": n} for k, n in metrics],
        "tags": [{"key": k, "runs": n} for k, n in tags if not k.startswith("mlflow.")],
    })


@router.get("/experiments", summary="Experiments with their run counts and last run start")
def experiments(request: Request, view: View = "active") -> Response:
    with _node(request).store.reading() as cur:
        records, _ = queries.search_experiments(
            cur, view=view, max_results=queries.MAX_RESULTS_CAP,  # type: ignore[arg-type]
            order_by=["name"],
        )
        counts = {
            exp: (active, deleted, last) for exp, active, deleted, last in cur.execute(
                "SELECT experiment_id, count(*) FILTER (WHERE lifecycle_stage = 'active'), "
                "count(*) FILTER (WHERE lifecycle_stage = 'deleted'), max(start_time) "
                "FROM runs GROUP BY experiment_id"
            ).fetchall()
        }
    out = []
    for e in records:
        active, deleted, last = counts.get(e.experiment_id, (0, 0, None))
        out.append({
            "experiment_id": e.experiment_id, "name": e.name,
            "lifecycle_stage": e.lifecycle_stage, "creation_time": e.creation_time,
            "last_update_time": e.last_update_time, "artifact_location": e.artifact_location,
            "tags": e.tags, "active_runs": active, "deleted_runs": deleted, "last_run_start": last,
        })
    return JSONResponse({"experiments": out})


def _form_list(raw: bytes, name: str) -> list[str]:
    values = parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=False).get(name, [])
    return _split(values)


def _quoted(run_id: str) -> str:
    # The filter language has no escapes: quote with the quote the id does not contain.
    if "'" not in run_id:
        return f"'{run_id}'"
    if '"' not in run_id:
        return f'"{run_id}"'
    raise InvalidInput(f"run id {run_id[:60]!r} cannot be written in a filter")


@router.post("/runs.csv", summary="CSV of chosen runs (a form post: too many ids for a URL)")
async def runs_csv(request: Request) -> Response:
    """The native CSV (``queries.iter_runs_csv``) of the runs named in the form field
    ``run_ids`` (comma-separated, at most 10,000), ordered by ``order_by``. A browser posts
    the form and saves the answer as a file."""
    form = await request.body()
    ids = _form_list(form, "run_ids")
    order_by = [o for o in parse_qs(form.decode("utf-8", "replace")).get("order_by", []) if o]
    if not ids or len(ids) > MAX_IDS:
        raise InvalidInput(f"run_ids must name between 1 and {MAX_IDS} runs")
    return stream_runs_csv(
        _node(request), experiment_ids=None, view="all", order_by=order_by or None,
        filter=f"attributes.run_id IN ({', '.join(_quoted(i) for i in ids)})",
    )


# ---------------------------------------------------------------- experiment writes


class ExperimentName(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=500)


def _write(request: Request, action: Callable[[Commands], Any]) -> Response:
    result = action(Commands(_node(request)))
    return JSONResponse(result if isinstance(result, dict) else {})


@router.post("/experiments", summary="Create an experiment")
def create_experiment(request: Request, body: ExperimentName) -> Response:
    return _write(request, lambda c: {"experiment_id": c.create_experiment(body.name)})


@router.post("/experiments/{experiment_id}/rename", summary="Rename an experiment")
def rename_experiment(request: Request, experiment_id: str, body: ExperimentName) -> Response:
    return _write(request, lambda c: c.rename_experiment(experiment_id, body.name))


@router.post("/experiments/{experiment_id}/delete",
             summary="Delete an experiment and its active runs")
def delete_experiment(request: Request, experiment_id: str) -> Response:
    return _write(request, lambda c: {"runs_deleted": c.delete_experiment(experiment_id)})


@router.post("/experiments/{experiment_id}/restore",
             summary="Restore an experiment and the runs deleted with it")
def restore_experiment(request: Request, experiment_id: str) -> Response:
    return _write(request, lambda c: {"runs_restored": c.restore_experiment(experiment_id)})
