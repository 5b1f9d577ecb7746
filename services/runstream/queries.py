"""The read side of a query node: run search, run detail, metric history, compare, CSV, experiments.

Every function takes a DuckDB cursor and only reads. User text never becomes SQL: filters and
order_by compile through ``runstream.projections.run_filter``, which binds every key and value
to a ``?`` placeholder; every other SQL fragment here is a constant of this module, chosen from
a fixed table by a validated name, or a run of placeholders whose length is a count.

Page tokens are opaque: URL-safe base64 of ``{"offset": N, "query": <hash>}``. The hash covers
everything that decides the result set and its order (not the page size), so a token reused
with another query is refused instead of silently paging through the wrong result.
"""

from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import io
import json
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from operator import itemgetter
from typing import Any, Literal, NamedTuple, TypeVar

import duckdb
import orjson

from runstream.errors import InvalidFilter, InvalidInput, NotFound
from runstream.projections.read_model import RECORD_RUN_COLUMNS, RUN_RECORDS_SELECT
from runstream.projections.run_filter import (
    CompiledOrder,
    FilterSyntaxError,
    compile_experiment_filter,
    compile_order_by,
    compile_run_filter,
    parse_order_by,
)

__all__ = [
    "CSV_FIXED_COLUMNS",
    "DEFAULT_MAX_RESULTS",
    "MAX_COMPARE_RUNS",
    "MAX_DOWNSAMPLE_POINTS",
    "MAX_RESULTS_CAP",
    "NOTE_TAG",
    "PARENT_TAG",
    "ArtifactEntry",
    "ExperimentRecord",
    "MetricSummary",
    "RECORDS",
    "RecordCache",
    "RunRecord",
    "RunSelection",
    "View",
    "compare_runs",
    "get_experiment",
    "get_experiment_by_name",
    "get_run",
    "get_runs",
    "iter_runs_csv",
    "list_artifacts",
    "metric_history",
    "metric_history_downsampled",
    "run_descendants",
    "run_descendants_by_root",
    "run_not_found",
    "run_stage",
    "search_experiments",
    "search_runs",
    "select_runs",
]

Cursor = duckdb.DuckDBPyConnection
T = TypeVar("T")
View = Literal["active", "deleted", "all"]

DEFAULT_MAX_RESULTS = 1000
# MLflow's SEARCH_MAX_RESULTS_THRESHOLD: runs/search and experiments/search refuse more.
MAX_RESULTS_CAP = 50_000
MAX_DOWNSAMPLE_POINTS = 100_000
MAX_COMPARE_RUNS = 1000
NOTE_TAG = "mlflow.note.content"
PARENT_TAG = "mlflow.parentRunId"
CSV_FIXED_COLUMNS = ("Run ID", "Name", "Source Type", "Source Name", "User", "Status")

# view -> the lifecycle condition, as constant SQL. A bound list (IN (SELECT unnest(?))) turns
# a condition into a semi-join and costs DuckDB its top-N plan: 120 ms instead of 1.5 ms for a
# page of 100,000 runs. Experiment ids are bound as IN (?, ?, ...) for the same reason.
_VIEW_RUNS: dict[str, str] = {
    "active": "r.lifecycle_stage = 'active'",
    "deleted": "r.lifecycle_stage = 'deleted'",
    "all": "TRUE",
}
_VIEW_EXPERIMENTS: dict[str, str] = {
    "active": "e.lifecycle_stage = 'active'",
    "deleted": "e.lifecycle_stage = 'deleted'",
    "all": "TRUE",
}


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


class MetricSummary(NamedTuple):
    """One metric of a run: its latest point (MLflow's rule: greatest step, timestamp, value),
    the min and max over every point (NaN ignored; None when every point is NaN), and the count.
    A NamedTuple, not a dataclass: a page of 1000 runs builds 20,000 of them, and a frozen
    dataclass costs 5x more to construct."""

    key: str
    latest_value: float
    latest_step: int
    latest_timestamp: int
    min_value: float | None
    max_value: float | None
    count: int


@dataclass(frozen=True)
class RunRecord:
    """A run as the read model holds it, with its params, tags and metric summaries."""

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
    parent_run_id: str | None
    has_model: bool
    python_version: str | None
    packages: list[str]
    command_line: list[str]
    host: str | None
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, MetricSummary] = field(default_factory=dict)
    git_remote: str | None = None
    # Forms derived from the record, kept with it by whoever makes them (the API layers keep
    # their wire form here): a record never changes, and the record cache shares it between
    # requests, so a page of runs seen before is not turned into JSON objects again.
    derived: dict[str, Any] = field(default_factory=dict, init=False, compare=False, repr=False)

    def derive(self, name: str, make: Callable[[RunRecord], T]) -> T:
        """``make(self)``, made once per record and kept in ``derived`` under ``name`` (the
        API layers' wire forms): callers share it, so they must not change it."""
        made = self.derived.get(name)
        if made is None:
            made = self.derived[name] = make(self)
        return made

    @property
    def note(self) -> str | None:
        """The run's note (MLflow keeps it in the ``mlflow.note.content`` tag)."""
        return self.tags.get(NOTE_TAG)


@dataclass(frozen=True)
class ExperimentRecord:
    """An experiment and its tags."""

    experiment_id: str
    name: str
    artifact_location: str | None
    lifecycle_stage: str
    creation_time: int | None
    last_update_time: int | None
    tags: dict[str, str] = field(default_factory=dict)


class ArtifactEntry(NamedTuple):
    """One entry of an artifact listing: a path relative to the run's artifact root."""

    path: str
    is_dir: bool
    size: int | None


_EXPERIMENT_SELECT = (
    "e.experiment_id, e.name, e.artifact_location, e.lifecycle_stage, e.creation_time, "
    "e.last_update_time"
)


# --------------------------------------------------------------------------------------------
# Validation shared by the searches
# --------------------------------------------------------------------------------------------


def _check_max_results(max_results: int, cap: int = MAX_RESULTS_CAP) -> None:
    if isinstance(max_results, bool) or not isinstance(max_results, int):
        raise InvalidInput(f"max_results must be an integer, not {max_results!r}")
    if not 1 <= max_results <= cap:
        raise InvalidInput(
            f"Invalid value {max_results} for parameter 'max_results': "
            f"it must be between 1 and {cap}"
        )


def _check_view(view: str) -> None:
    if view not in _VIEW_RUNS:
        raise InvalidInput(f"view must be one of active, deleted, all; not {view!r}")


def _placeholders(count: int) -> str:
    """``?, ?, ?``: SQL shaped by a count only; the values are bound."""
    return ", ".join("?" * count)


def _invalid_filter(exc: FilterSyntaxError, what: str | None = None) -> InvalidFilter:
    """Our error for a parser error; ``what`` renames the text parsed (default: the parser's
    own message, which names the filter or the order_by clause)."""
    message = str(exc) if what is None else f"Invalid {what} at position {exc.position}: {exc.reason}"
    return InvalidFilter(
        message, position=exc.position, expected=exc.expected, clause_index=exc.clause_index
    )


# --------------------------------------------------------------------------------------------
# Page tokens
# --------------------------------------------------------------------------------------------


def _fingerprint(*parts: object) -> str:
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _encode_page_token(offset: int, fingerprint: str) -> str:
    raw = json.dumps({"offset": offset, "query": fingerprint}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _decode_page_token(token: str | None, fingerprint: str) -> int:
    """The offset a token points at (0 without a token); InvalidInput for any bad token."""
    if token is None or token == "":
        return 0
    if len(token) > 512:
        raise InvalidInput("Invalid page token: too long")
    try:
        raw = base64.b64decode(token.encode("ascii"), altchars=b"-_", validate=True)
        data = json.loads(raw)
    except (binascii.Error, UnicodeError, ValueError):
        raise InvalidInput("Invalid page token: it is not a token this server issued") from None
    offset = data.get("offset") if isinstance(data, dict) else None
    if isinstance(offset, bool) or not isinstance(offset, int) or offset <= 0:
        raise InvalidInput("Invalid page token: it is not a token this server issued")
    if data.get("query") != fingerprint:
        raise InvalidInput(
            "Invalid page token: it belongs to a different query; repeat the query that "
            "returned it (same filter, order_by, view and experiments) or start without a token"
        )
    return offset


# --------------------------------------------------------------------------------------------
# Run search
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSelection:
    """The WHERE clause (over ``runs r``) and ORDER BY of a run search, with their values:
    ``f"SELECT ... FROM runs r WHERE {where} ORDER BY {order.sql}"`` binds
    ``[*params, *order.params]``. ``fingerprint`` identifies the query for page tokens."""

    where: str
    params: tuple[object, ...]
    order: CompiledOrder
    fingerprint: str
    empty: bool  # an empty experiment list: nothing can match (as MLflow), skip the query
    # The part of ``where`` without the user's filter (view, experiments, has_model): cheap
    # to evaluate, and true of every run ``where`` selects.
    base_where: str = "TRUE"
    base_params: tuple[object, ...] = ()


def select_runs(
    experiment_ids: Sequence[str] | None,
    filter: str | None,
    order_by: Sequence[str] | None,
    view: str,
    has_model: bool | None,
) -> RunSelection:
    """Compile a run search (filter, order_by, view, experiments, has_model) into SQL parts;
    the one place a run selection is built, shared by search, CSV and the UI's table.
    Raises InvalidFilter or InvalidInput."""
    _check_view(view)
    if isinstance(order_by, str):
        raise InvalidInput("order_by is a list of clauses, one key per element")
    try:
        compiled = compile_run_filter(filter)
    except FilterSyntaxError as exc:
        raise _invalid_filter(exc) from exc
    try:
        order = compile_order_by(order_by)
    except FilterSyntaxError as exc:
        raise _invalid_filter(exc) from exc
    where: list[str] = [_VIEW_RUNS[view]]
    params: list[object] = []
    exp_ids = None if experiment_ids is None else sorted({str(e) for e in experiment_ids})
    if exp_ids:
        where.append(f"r.experiment_id IN ({_placeholders(len(exp_ids))})")
        params.extend(exp_ids)
    elif exp_ids is not None:
        where.append("FALSE")  # an empty list selects nothing, whoever runs the SQL
    if has_model is not None:
        where.append("r.has_model = ?")
        params.append(bool(has_model))
    base_where, base_params = " AND ".join(where), tuple(params)
    where.append(f"({compiled.sql})")
    params.extend(compiled.params)
    fingerprint = _fingerprint("runs", exp_ids, filter or "", list(order_by or ()), view, has_model)
    return RunSelection(
        " AND ".join(where), tuple(params), order, fingerprint, exp_ids is not None and not exp_ids,
        base_where, base_params,
    )


# The first window of recent runs a newest-first page is looked for in, and how it grows.
_FIRST_WINDOW = 4096
_WINDOW_GROWTH = 8
# The first window of best metric values: a few times the page, at least this many rows.
# A top-N's heap costs with its size (4096 best values of 100,000 cost 10 ms, 400 cost 2).
_FIRST_METRIC_WINDOW = 256

# A page's row: (run key, run id, the run's record version).
PageRow = tuple[int, str, int]


def _best_metric_window(
    cur: Cursor, sel: RunSelection, limit: int, offset: int
) -> list[PageRow] | None:
    """A page ordered first by a metric, looked for among the runs with the best values of
    it (a growing window of the summary's rows for that key), or None to sort everything.

    The window's page is the true page when its last row's value is strictly better than the
    window's worst: every run outside the window then sorts after it (a worse or equal value,
    NaN, or no value at all, which sort last). A NaN on either side: the window grows. A
    window holding every row of the key (fewer rows than asked for) is exact as soon as it
    fills the page, since runs without the metric sort after all of them.
    """
    assert sel.order.leading_metric is not None
    key, value = sel.order.leading_metric
    order = "top.v ASC NULLS LAST" + (f", {sel.order.rest_sql}" if sel.order.rest_sql else "")
    window = max(_FIRST_METRIC_WINDOW, 4 * (limit + offset))
    while True:
        rows = cur.execute(
            f"WITH top AS MATERIALIZED (SELECT m.run_key, {value} AS v FROM run_metric_summary m "
            "WHERE m.key = ? ORDER BY v ASC NULLS LAST LIMIT ?) "
            "SELECT r.run_key, r.run_id, r.version, top.v, (SELECT max(v) FROM top), "
            "(SELECT count(*) FROM top) "
            f"FROM top JOIN runs r ON r.run_key = top.run_key WHERE {sel.where} "
            f"ORDER BY {order} LIMIT ? OFFSET ?",
            [key, window, *sel.params, *sel.order.rest_params, limit, offset],
        ).fetchall()
        if rows:
            whole_key = rows[0][5] < window  # the window holds every row of the key
        else:
            ((rows_of_key,),) = cur.execute(
                "SELECT count(*) FROM run_metric_summary WHERE key = ?", [key]
            ).fetchall()
            whole_key = rows_of_key <= window
        if len(rows) == limit:
            _, _, _, last, worst, _ = rows[-1]
            # A NULL value (MIN or MAX of an all-NaN history) sorts among the runs without the
            # metric, which are not in the window: never exact. (max() skips NULLs.)
            if last is not None and (
                whole_key or (worst is not None and not math.isnan(worst) and last < worst)
            ):
                return [(run_key, run_id, version) for run_key, run_id, version, *_ in rows]
        if whole_key:
            return None  # the page goes on among runs without the metric: sort them all
        window *= _WINDOW_GROWTH


def page_runs(cur: Cursor, sel: RunSelection, limit: int, offset: int) -> list[PageRow]:
    """(run key, run id, record version) of each run of one page of a selection, in its
    order (``limit`` rows from ``offset``).

    DuckDB finds a top-N with a heap fed in table order. Runs are stored in creation order, so
    for the default order, newest first, every run scanned is newer than the heap's worst
    and replaces it: 100,000 runs cost 25 ms where the opposite order costs 2. So a
    newest-first page is looked for among the most recently created runs (the greatest run
    keys) first, in a window that grows 8-fold until it holds the page. The window's page
    is the true page when no run outside the window could sort before its last row: when
    every older run started strictly earlier than that row (read from the first run above
    the window, which recorded the latest start below it; clock skew or imported runs only
    make the window grow).
    """
    order, args = sel.order, [*sel.params, *sel.order.params]
    if order.leading_metric is not None and limit + offset > 0:
        found = _best_metric_window(cur, sel, limit, offset)
        if found is not None:
            return found
    if order.newest_first and limit + offset > 0:
        ((newest,),) = cur.execute("SELECT coalesce(max(run_key), 0) FROM runs").fetchall()
        window = max(_FIRST_WINDOW, 4 * (limit + offset))
        while window < newest:
            floor = newest - window
            # With each row, the latest start among the runs below the window, as the first
            # run above it recorded when it was created (runs.prior_start_max; a purged run's
            # start may still count there, which only makes the window grow): in the same
            # statement, a constant subquery, so the window's bound still prunes the scan.
            rows = cur.execute(
                f"SELECT r.run_key, r.run_id, r.version, r.start_time, (SELECT prior_start_max "
                f"FROM runs WHERE run_key > ? ORDER BY run_key LIMIT 1) FROM runs r "
                f"WHERE r.run_key > ? AND {sel.where} ORDER BY {order.sql} LIMIT ? OFFSET ?",
                [floor, floor, *args, limit, offset],
            ).fetchall()
            if len(rows) == limit and rows[-1][3] is not None:
                older = rows[-1][4]
                if older is None or older < rows[-1][3]:
                    return [(key, run_id, version) for key, run_id, version, *_ in rows]
            window *= _WINDOW_GROWTH
    return cur.execute(
        f"SELECT r.run_key, r.run_id, r.version FROM runs r WHERE {sel.where} "
        f"ORDER BY {order.sql} LIMIT ? OFFSET ?",
        [*args, limit, offset],
    ).fetchall()


def search_runs(
    cur: Cursor,
    *,
    experiment_ids: Sequence[str] | None,
    filter: str | None = None,
    order_by: Sequence[str] | None = None,
    view: View = "active",
    max_results: int = DEFAULT_MAX_RESULTS,
    page_token: str | None = None,
    has_model: bool | None = None,
    with_data: bool = True,
) -> tuple[list[RunRecord], str | None]:
    """One page of the runs matching a filter, and the token of the next page (None at the end).

    ``experiment_ids`` None searches every experiment; an empty list finds nothing (as MLflow).
    ``order_by`` takes MLflow clauses ("metrics.loss DESC", "MIN(metrics.rmse)", "params.lr");
    runs without the key sort last; ties end with start_time DESC, run_id. ``view`` picks
    active, deleted or all runs; ``has_model`` keeps runs with (True) or without (False) a
    logged model. ``with_data=False`` leaves params, tags and metrics empty (cheaper).
    Raises InvalidFilter for a malformed filter or order_by, InvalidInput for a bad
    max_results, view or page token.
    """
    _check_max_results(max_results)
    sel = select_runs(experiment_ids, filter, order_by, view, has_model)
    offset = _decode_page_token(page_token, sel.fingerprint)
    if sel.empty:
        return [], None
    page = page_runs(cur, sel, max_results + 1, offset)
    token = None
    if len(page) > max_results:
        page = page[:max_results]
        token = _encode_page_token(offset + max_results, sel.fingerprint)
    return _records(cur, page, with_data=with_data), token


class RecordCache:
    """The run records a node read lately, served again while their run is unchanged.

    A record is kept under (read model id, run key) with the run id and the run's version it
    was read at. It is served only to a query whose own snapshot shows the same run id and
    version: the projector raises a run's version in the transaction of every batch that
    changes the run's record (``projections.apply_events``), and a request reads in one
    snapshot (``read_store.reading()``), so a served record is what that query would have
    read. Nothing is invalidated: a reader on another snapshot sees another version and reads
    the run again. The read model id keeps a rebuilt file (other run keys and versions) from
    ever matching.

    The bound is on size, not count: a record weighs one item per param, tag and metric
    (plus one), and past ``capacity`` items the least recently used records go; 0 turns the
    cache off. A page weighing more than a quarter of it (a search of 50,000 runs) is served
    without being kept, so that it does not push out everything else.

    Records are shared between requests: read-only by contract (RunRecord is frozen; its
    dicts and lists are never changed after they are built; ``derived`` only gains forms).
    """

    def __init__(self, capacity: int = 250_000) -> None:
        self.capacity = capacity
        # key -> (run id, version, record, weight)
        self._items: OrderedDict[tuple[str, int], tuple[str, int, RunRecord, int]] = OrderedDict()
        self._weight = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def weight(self) -> int:
        """Items held: params, tags and metrics of the records kept, plus one each."""
        return self._weight

    def get_many(self, model: str, page: Sequence[PageRow]) -> dict[int, RunRecord]:
        """The records of the page's runs whose cached run id and version match."""
        found: dict[int, RunRecord] = {}
        items = self._items
        with self._lock:
            for run_key, run_id, version in page:
                entry = items.get((model, run_key))
                if entry is not None and entry[0] == run_id and entry[1] == version:
                    items.move_to_end((model, run_key))
                    found[run_key] = entry[2]
            self.hits += len(found)
            self.misses += len(page) - len(found)
        return found

    def put_many(self, model: str, records: dict[int, tuple[int, RunRecord]]) -> None:
        weighed = [
            (run_key, version, record,
             1 + len(record.params) + len(record.tags) + len(record.metrics))
            for run_key, (version, record) in records.items()
        ]
        if sum(w for *_, w in weighed) * 4 > self.capacity:
            return
        items = self._items
        with self._lock:
            for run_key, version, record, weight in weighed:
                key = (model, run_key)
                old = items.get(key)
                if old is not None:
                    if old[0] == record.run_id and old[1] > version:
                        continue  # a slower reader's older snapshot: keep the newer record
                    self._weight -= old[3]
                items[key] = (record.run_id, version, record, weight)
                items.move_to_end(key)
                self._weight += weight
            self._shrink()

    def _shrink(self) -> None:
        items = self._items
        while self._weight > self.capacity and items:
            self._weight -= items.popitem(last=False)[1][3]

    def resize(self, capacity: int) -> None:
        with self._lock:
            self.capacity = capacity
            self._shrink()

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._weight = 0


# The process's record cache: every store in the process shares it (keyed by read model id).
RECORDS = RecordCache()


def _model_id(cur: Cursor) -> str | None:
    rows = cur.execute("SELECT value FROM read_model_meta WHERE key = 'model_id'").fetchall()
    return rows[0][0] if rows else None


# The runs table's rows for a set of run keys (records without their data).
_RUNS_BY_KEY = (
    f"SELECT run_key, version, {', '.join(RECORD_RUN_COLUMNS)} FROM runs "
    "WHERE run_key IN (SELECT unnest(?))"
)
# Up to this many run keys are looked up in run_records as IN (?, ?, ...), which DuckDB answers
# through the primary key's index (its index_scan_max_count): 3-4 ms for 100 runs of 100,000.
# A bound list (IN (SELECT unnest(?))) is a semi-join scanning every document: 70 ms. Past
# it, DuckDB scans anyway, and one scan beats many lookups.
_INDEX_LOOKUP_KEYS = 2048
# Keys spread over at most this many times their number are read as the range of keys they
# span, the documents of other runs left out here: a page's runs are mostly recent and close
# (a newest-first page of a filtered search spans ~140 keys for 100 runs: 1.6 ms, where
# their 100 index lookups take 4).
_RANGE_SPREAD = 4


def _record_documents(cur: Cursor, run_keys: list[int]) -> list[tuple[int, int, str]]:
    """(run key, version, JSON document) of run_records for these runs (see read_model)."""
    if not run_keys:
        return []
    low, high = min(run_keys), max(run_keys)
    if high - low < _RANGE_SPREAD * len(run_keys):
        wanted = set(run_keys)
        return [row for row in cur.execute(
            "SELECT run_key, version, record FROM run_records WHERE run_key BETWEEN ? AND ?",
            [low, high],
        ).fetchall() if row[0] in wanted]
    if len(run_keys) <= _INDEX_LOOKUP_KEYS:
        return cur.execute(
            "SELECT run_key, version, record FROM run_records "
            f"WHERE run_key IN ({_placeholders(len(run_keys))})",
            run_keys,
        ).fetchall()
    return cur.execute(
        "SELECT run_key, version, record FROM run_records WHERE run_key IN (SELECT unnest(?))",
        [run_keys],
    ).fetchall()


def _run_record(row: Sequence[Any], params: dict[str, str], tags: dict[str, str],
                metrics: dict[str, MetricSummary]) -> RunRecord:
    """A RunRecord of the runs columns in RECORD_RUN_COLUMNS order and the run's data."""
    (run_id, experiment_id, name, user_id, status, start_time, end_time, stage, deleted_time,
     artifact_uri, source_name, source_type, entry_point, git_commit, git_dirty, parent,
     has_model, python_version, packages, command_line, host, git_remote) = row
    return RunRecord(
        run_id, experiment_id, name, user_id, status, start_time, end_time, stage,
        deleted_time, artifact_uri, source_name, source_type, entry_point, git_commit,
        git_dirty, parent, bool(has_model), python_version, list(packages or ()),
        list(command_line or ()), host, params, tags, metrics, git_remote,
    )


_first = itemgetter(0)


def _decoded_record(document: str) -> RunRecord:
    """A RunRecord of its run_records document, read by orjson (3x faster than json here;
    json reads a document holding NaN or an infinity, which orjson refuses). Each summary is
    tuple.__new__ of its row (the document's order is MetricSummary's), with no loop in
    Python: a page of 1000 runs makes 20,000 of them."""
    try:
        row, params, tags, metrics = orjson.loads(document)
    except orjson.JSONDecodeError:
        row, params, tags, metrics = json.loads(document)
    summaries = dict(zip(map(_first, metrics), map(tuple.__new__, repeat(MetricSummary), metrics),
                         strict=True))
    return _run_record(row, params, tags, summaries)


def _run_records(cur: Cursor, run_ids: list[str], *, with_data: bool) -> list[RunRecord]:
    """RunRecords for run ids, in their order (ids not found are left out)."""
    if not run_ids:
        return []
    found = {
        run_id: (run_key, run_id, version)
        for run_key, run_id, version in cur.execute(
            "SELECT run_key, run_id, version FROM runs WHERE run_id IN (SELECT unnest(?))",
            [run_ids],
        ).fetchall()
    }
    return _records(
        cur, [found[run_id] for run_id in run_ids if run_id in found], with_data=with_data
    )


def _records(cur: Cursor, page: Sequence[PageRow], *, with_data: bool) -> list[RunRecord]:
    """RunRecords for a page's runs, in its order: from the record cache where the run's
    version is the one cached, read from the tables for the others. ``cur`` must read in
    one snapshot (``read_store.reading()``) for records to be filed under the right version;
    outside one, runs purged since the page query, or whose key names another run by now,
    are left out."""
    if not page:
        return []
    model = _model_id(cur) if with_data and RECORDS.capacity else None
    found = RECORDS.get_many(model, page) if model is not None else {}
    missing = [row for row in page if row[0] not in found]
    if missing:
        read = _read_records(cur, missing, with_data=with_data)
        if model is not None:
            RECORDS.put_many(model, read)
        for run_key, (_, fresh) in read.items():
            found[run_key] = fresh
    records = []
    for run_key, run_id, _ in page:
        record = found.get(run_key)
        if record is not None and record.run_id == run_id:
            records.append(record)
    return records


def _read_records(
    cur: Cursor, page: Sequence[PageRow], *, with_data: bool
) -> dict[int, tuple[int, RunRecord]]:
    """(version, RunRecord) by run key of a page's runs, read in the caller's snapshot: with
    data, their run_records documents (one statement, by index), those older than the run's
    version in the page made from the tables (runs the projector has not refreshed yet);
    without, their runs rows."""
    run_keys = [run_key for run_key, _, _ in page]
    if not with_data:
        return {
            row[0]: (row[1], _run_record(row[2:], {}, {}, {}))
            for row in cur.execute(_RUNS_BY_KEY, [run_keys]).fetchall()
        }
    documents = {key: (version, doc) for key, version, doc in _record_documents(cur, run_keys)}
    stale = [key for key, _, version in page if documents.get(key, (None,))[0] != version]
    if stale:
        documents.update(
            (key, (version, doc))
            for key, version, doc in cur.execute(RUN_RECORDS_SELECT, {"keys": stale}).fetchall()
        )
    return {key: (version, _decoded_record(doc)) for key, (version, doc) in documents.items()}


def run_stage(cur: Cursor, run_id: str) -> str:
    """The run's lifecycle stage ('active' or 'deleted'); NotFound if unknown or purged."""
    row = cur.execute("SELECT lifecycle_stage FROM runs WHERE run_id = ?", [run_id]).fetchone()
    if row is None:
        raise run_not_found(cur, run_id)
    return str(row[0])


def _run_key(cur: Cursor, run_id: str) -> int:
    """The run's integer key in the read model; NotFound if unknown or purged."""
    row = cur.execute("SELECT run_key FROM runs WHERE run_id = ?", [run_id]).fetchone()
    if row is None:
        raise run_not_found(cur, run_id)
    return int(row[0])


def run_not_found(cur: Cursor, run_id: str) -> NotFound:
    """The NotFound for an unknown run id, saying so when the run was purged."""
    purged = cur.execute("SELECT 1 FROM purged_runs WHERE run_id = ?", [run_id]).fetchone()
    if purged is not None:
        return NotFound(f"Run with id={run_id} was purged (deleted for good)")
    return NotFound(f"Run with id={run_id} not found")


def get_run(cur: Cursor, run_id: str) -> RunRecord:
    """One run, active or deleted, with params, tags and metric summaries; NotFound if unknown."""
    records = _run_records(cur, [run_id], with_data=True)
    if not records:
        raise run_not_found(cur, run_id)
    return records[0]


def get_runs(cur: Cursor, run_ids: Sequence[str]) -> list[RunRecord]:
    """Several runs in the order asked (duplicates dropped); NotFound names every unknown id."""
    wanted = list(dict.fromkeys(run_ids))
    records = _run_records(cur, wanted, with_data=True)
    if len(records) < len(wanted):
        found = {r.run_id for r in records}
        missing = [run_id for run_id in wanted if run_id not in found]
        shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise NotFound(f"{len(missing)} run(s) not found: {shown}")
    return records


def run_descendants(cur: Cursor, run_ids: Sequence[str]) -> list[str]:
    """Every run below the given runs (children, grandchildren, ...), the given runs excluded.

    A run's parent is its ``parent_run_id`` or its ``mlflow.parentRunId`` tag (the MLflow
    client's way); a cycle ends the walk instead of looping. Sorted by run id.
    """
    return sorted({run_id for pairs in run_descendants_by_root(cur, run_ids).values()
                   for run_id in pairs})


def run_descendants_by_root(cur: Cursor, run_ids: Sequence[str]) -> dict[str, list[str]]:
    """For each given run, the runs below it (itself and the other given runs excluded), in
    one recursive query; a run below two given runs is listed under both."""
    roots = list(dict.fromkeys(run_ids))
    if not roots:
        return {}
    rows = cur.execute(
        "WITH RECURSIVE edges(child, parent) AS ("
        "  SELECT run_id, parent_run_id FROM runs WHERE parent_run_id IS NOT NULL"
        "  UNION SELECT run_id, value FROM tags WHERE key = ?"
        "), tree(root, run_id) AS ("
        "  SELECT parent, child FROM edges WHERE parent IN (SELECT unnest(?))"
        "  UNION SELECT t.root, e.child FROM edges e JOIN tree t ON e.parent = t.run_id"
        ") SELECT root, run_id FROM tree WHERE run_id NOT IN (SELECT unnest(?)) "
        "ORDER BY root, run_id",
        [PARENT_TAG, roots, roots],
    ).fetchall()
    out: dict[str, list[str]] = {root: [] for root in roots}
    for root, run_id in rows:
        out[root].append(run_id)
    return out


# --------------------------------------------------------------------------------------------
# Metric history
# --------------------------------------------------------------------------------------------


def metric_history(
    cur: Cursor,
    run_id: str,
    key: str,
    *,
    max_results: int | None = None,
    page_token: str | None = None,
) -> tuple[list[tuple[int, int, float]], str | None]:
    """Every logged point of a metric as (step, timestamp, value), ordered by (timestamp, step,
    value) as MLflow's get-history; paged when ``max_results`` is given. An unknown key gives
    no points; an unknown run is NotFound."""
    if max_results is not None:
        _check_max_results(max_results, cap=2**31 - 1)
    run_key = _run_key(cur, run_id)
    fingerprint = _fingerprint("history", run_id, key)
    offset = _decode_page_token(page_token, fingerprint)
    sql = (
        "SELECT step, timestamp, value FROM run_metric_history WHERE run_key = ? AND key = ? "
        "ORDER BY timestamp, step, value"
    )
    args: list[object] = [run_key, key]
    if max_results is None:
        rows = cur.execute(sql + " OFFSET ?", [*args, offset]).fetchall()
        return [(s, t, v) for s, t, v in rows], None
    rows = cur.execute(sql + " LIMIT ? OFFSET ?", [*args, max_results + 1, offset]).fetchall()
    token = None
    if len(rows) > max_results:
        rows = rows[:max_results]
        token = _encode_page_token(offset + max_results, fingerprint)
    return [(s, t, v) for s, t, v in rows], token


# x axis name -> column; fixed SQL chosen by a validated name.
_DOWNSAMPLE_AXES = {"step": "step", "time": "timestamp"}


def metric_history_downsampled(
    cur: Cursor, run_id: str, key: str, *, points: int, x: Literal["step", "time"] = "step"
) -> list[dict[str, Any]]:
    """A metric's history cut into at most ``points`` equal-width buckets along x (step or time).

    Each bucket keeps ``x_start``/``x_end`` (first and last x in it), ``count``, ``first`` and
    ``last`` (values at the bucket's smallest and largest x), and ``min``/``max`` with
    ``min_x``/``max_x`` where they occur, so a one-point spike survives any reduction. min and
    max ignore NaN (None when a bucket holds only NaN). Done in one SQL pass over the history.
    """
    if isinstance(points, bool) or not isinstance(points, int) or not (
        1 <= points <= MAX_DOWNSAMPLE_POINTS
    ):
        raise InvalidInput(f"points must be between 1 and {MAX_DOWNSAMPLE_POINTS}, not {points!r}")
    if x not in _DOWNSAMPLE_AXES:
        raise InvalidInput(f"x must be 'step' or 'time', not {x!r}")
    run_key = _run_key(cur, run_id)
    column = _DOWNSAMPLE_AXES[x]
    # One pass over the history; NaN becomes NULL for min and max, which aggregates skip. Plain
    # (not tuple) ordering keys: tuples double the cost at 1,000,000 points. So among points
    # with the same x (first, last) or the same value (min_x, max_x) any one may be picked;
    # the value shown is the same whichever it is.
    rows = cur.execute(
        f"WITH pts AS (SELECT {column} AS x, value, "
        "  CASE WHEN isnan(value) THEN NULL ELSE value END AS v "
        "  FROM run_metric_history WHERE run_key = ? AND key = ?), "
        "span AS (SELECT min(x) AS lo, max(x) AS hi FROM pts), "
        "b AS (SELECT least(CAST(floor(CAST(pts.x - span.lo AS DOUBLE) * ? "
        "  / (CAST(span.hi - span.lo AS DOUBLE) + 1.0)) AS BIGINT), ? - 1) AS bucket, pts.* "
        "  FROM pts, span) "
        "SELECT min(x), max(x), count(*), arg_min(value, x), arg_max(value, x), "
        "min(v), max(v), arg_min(x, v), arg_max(x, v) "
        "FROM b GROUP BY bucket ORDER BY bucket",
        [run_key, key, points, points],
    ).fetchall()
    return [
        {
            "x_start": x_start, "x_end": x_end, "count": count, "first": first, "last": last,
            "min": low, "max": high, "min_x": low_x, "max_x": high_x,
        }
        for x_start, x_end, count, first, last, low, high, low_x, high_x in rows
    ]


# --------------------------------------------------------------------------------------------
# Compare
# --------------------------------------------------------------------------------------------


def _same(values: Sequence[object]) -> bool:
    """True when every value is equal (NaN equals NaN here; a missing value is a value)."""
    canon = {("nan",) if isinstance(v, float) and math.isnan(v) else (v,) for v in values}
    return len(canon) <= 1


def _as_numbers(values: Sequence[str | None]) -> list[float | None] | None:
    """The values as floats when every present one reads as a number, else None."""
    out: list[float | None] = []
    for v in values:
        if v is None:
            out.append(None)
            continue
        try:
            out.append(float(v))
        except ValueError:
            return None
    return out


_ATTRIBUTE_FIELDS = {"run_name": "name"}
_AGGREGATE_COLUMNS = {"latest": "latest_value", "min": "min_value", "max": "max_value"}


class _Axis(NamedTuple):
    label: str
    entity: str
    key: str
    aggregate: str | None = None


def _parse_axis(spec: str) -> _Axis:
    """A plot axis written like an order_by key: ``params.lr``, ``MAX(metrics.acc)``, ..."""
    try:
        (order_key,) = parse_order_by([spec])
    except FilterSyntaxError as exc:
        raise _invalid_filter(exc, f"plot key {spec!r}") from exc
    ident = order_key.ident
    return _Axis(spec, ident.entity, ident.key, ident.aggregate)


def _dimension(axis: _Axis, records: Sequence[RunRecord]) -> dict[str, Any]:
    """The values of one plot axis for each run, typed numeric or categorical."""
    raw: list[Any]
    if axis.entity == "metric":
        column = _AGGREGATE_COLUMNS[axis.aggregate or "latest"]
        summaries = [r.metrics.get(axis.key) for r in records]
        values = [None if s is None else getattr(s, column) for s in summaries]
        return {"key": axis.label, "type": "numeric", "values": values}
    if axis.entity in ("param", "tag"):
        raw = [(r.params if axis.entity == "param" else r.tags).get(axis.key) for r in records]
    else:
        raw = [getattr(r, _ATTRIBUTE_FIELDS.get(axis.key, axis.key)) for r in records]
        if all(v is None or isinstance(v, int) for v in raw):
            return {"key": axis.label, "type": "numeric", "values": raw}
    numbers = _as_numbers(raw)
    if numbers is not None and any(v is not None for v in numbers):
        return {"key": axis.label, "type": "numeric", "values": numbers}
    return {"key": axis.label, "type": "categorical", "values": raw}


def compare_runs(
    cur: Cursor,
    run_ids: Sequence[str],
    *,
    hide_identical: bool = False,
    param_keys: Sequence[str] | None = None,
    metric_keys: Sequence[str] | None = None,
    plot_keys: Sequence[str] | None = None,
    x: str | None = None,
    y: str | None = None,
    z: str | None = None,
) -> dict[str, Any]:
    """Two or more runs (any experiments) side by side, with data for the compare plots.

    Returns ``runs`` (one summary per run, in the order asked), then ``params``, ``metrics`` and
    ``tags`` as rows ``{"key", "values": [one per run, None when missing], "identical"}``
    (metric rows also carry ``min`` and ``max``); ``hide_identical`` drops the rows whose values
    are equal in every run. ``param_keys``/``metric_keys`` restrict the rows to those keys.
    ``plots`` holds ``parallel_coordinates`` (the ``plot_keys`` axes, by default every param
    and metric that differs), ``scatter`` (``x`` and ``y``) and ``contour`` (``x``, ``y`` and
    ``z`` as colour); axes are written like order_by keys, e.g. ``params.lr``,
    ``metrics.loss``, ``MIN(metrics.loss)``.
    """
    wanted = list(dict.fromkeys(run_ids))
    if len(wanted) < 2:
        raise InvalidInput("compare needs at least two different runs")
    if len(wanted) > MAX_COMPARE_RUNS:
        raise InvalidInput(f"compare takes at most {MAX_COMPARE_RUNS} runs, not {len(wanted)}")
    if (z is not None) and (x is None or y is None):
        raise InvalidInput("a contour plot needs x, y and z")
    if (x is None) != (y is None):
        raise InvalidInput("a scatter plot needs both x and y")
    # Axes are checked before any lookup: a bad key is a 400 whatever the runs.
    axes = None if plot_keys is None else [_parse_axis(k) for k in plot_keys]
    xyz = [None if spec is None else _parse_axis(spec) for spec in (x, y, z)]
    records = get_runs(cur, wanted)
    experiment_names = dict(
        cur.execute(
            "SELECT experiment_id, name FROM experiments WHERE experiment_id IN (SELECT unnest(?))",
            [sorted({r.experiment_id for r in records})],
        ).fetchall()
    )

    def rows(kind: str, keys: Sequence[str] | None) -> list[dict[str, Any]]:
        maps = [r.params if kind == "params" else r.tags for r in records]
        chosen = sorted({k for m in maps for k in m}) if keys is None else list(keys)
        out = []
        for key in chosen:
            values = [m.get(key) for m in maps]
            out.append({"key": key, "values": values, "identical": _same(values)})
        return out

    chosen_metrics = (
        sorted({k for r in records for k in r.metrics}) if metric_keys is None else list(metric_keys)
    )
    metric_rows: list[dict[str, Any]] = []
    for key in chosen_metrics:
        summaries = [r.metrics.get(key) for r in records]
        latest = [None if s is None else s.latest_value for s in summaries]
        metric_rows.append({
            "key": key,
            "values": latest,
            "min": [None if s is None else s.min_value for s in summaries],
            "max": [None if s is None else s.max_value for s in summaries],
            "steps": [None if s is None else s.latest_step for s in summaries],
            "identical": _same(latest),
        })
    tables: dict[str, list[dict[str, Any]]] = {
        "params": rows("params", param_keys),
        "metrics": metric_rows,
        "tags": rows("tags", None),
    }
    if axes is None:
        # By default every param and metric that differs between the runs.
        axes = [_Axis(f"params.{row['key']}", "param", row["key"])
                for row in tables["params"] if not row["identical"]]
        axes += [_Axis(f"metrics.{row['key']}", "metric", row["key"])
                 for row in metric_rows if not row["identical"]]
    if hide_identical:
        tables = {name: [row for row in t if not row["identical"]] for name, t in tables.items()}
    x_axis, y_axis, z_axis = xyz
    plots: dict[str, Any] = {
        "parallel_coordinates": {"dimensions": [_dimension(a, records) for a in axes]},
        "scatter": None,
        "contour": None,
    }
    if x_axis is not None and y_axis is not None:
        plots["scatter"] = {"x": _dimension(x_axis, records), "y": _dimension(y_axis, records)}
        if z_axis is not None:
            plots["contour"] = {**plots["scatter"], "z": _dimension(z_axis, records)}
    return {
        "runs": [
            {
                "run_id": r.run_id, "name": r.name, "experiment_id": r.experiment_id,
                "experiment_name": experiment_names.get(r.experiment_id), "status": r.status,
                "user_id": r.user_id, "start_time": r.start_time, "end_time": r.end_time,
                "lifecycle_stage": r.lifecycle_stage,
            }
            for r in records
        ],
        **tables,
        "plots": plots,
    }


# --------------------------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------------------------


def iter_runs_csv(
    cur: Cursor,
    *,
    experiment_ids: Sequence[str] | None,
    filter: str | None = None,
    order_by: Sequence[str] | None = None,
    view: View = "active",
    has_model: bool | None = None,
    chunk_rows: int = 5000,
) -> Iterator[str]:
    """Every run matching a search (not a page) as CSV text, streamed in chunks of lines.

    Columns: ``Run ID,Name,Source Type,Source Name,User,Status``, then one column per param key
    and one per metric key (latest value), each the union over the whole result, sorted. The
    query is checked before this returns (a bad filter raises here, not mid-stream); the
    cursor must stay open until the iterator is exhausted or closed.
    """
    sel = select_runs(experiment_ids, filter, order_by, view, has_model)
    if sel.empty:
        return iter([_csv_line(CSV_FIXED_COLUMNS)])
    matching = f"SELECT r.run_key FROM runs r WHERE {sel.where}"
    param_keys = [
        k for (k,) in cur.execute(
            f"SELECT DISTINCT key FROM run_params WHERE run_key IN ({matching}) ORDER BY key",
            list(sel.params),
        ).fetchall()
    ]
    metric_keys = [
        k for (k,) in cur.execute(
            f"SELECT DISTINCT key FROM run_metric_summary WHERE run_key IN ({matching}) "
            "ORDER BY key",
            list(sel.params),
        ).fetchall()
    ]
    # One column per key, pivoted in DuckDB: the key strings are bound, only the count of
    # FILTER aggregates shapes the SQL text.
    param_cols = ", ".join(
        f"max(value) FILTER (WHERE key = ?) AS p{i}" for i in range(len(param_keys))
    )
    metric_cols = ", ".join(
        f"max(latest_value) FILTER (WHERE key = ?) AS m{i}" for i in range(len(metric_keys))
    )
    pivots = []
    args: list[object] = []
    if param_keys:
        pivots.append(
            f"p AS (SELECT run_key, {param_cols} FROM run_params WHERE run_key IN ({matching}) "
            "AND key IN (SELECT unnest(?)) GROUP BY run_key)"
        )
        args += [*param_keys, *sel.params, param_keys]
    if metric_keys:
        pivots.append(
            f"m AS (SELECT run_key, {metric_cols} FROM run_metric_summary "
            f"WHERE run_key IN ({matching}) AND key IN (SELECT unnest(?)) GROUP BY run_key)"
        )
        args += [*metric_keys, *sel.params, metric_keys]
    texts = ["r.run_id", "r.name", "r.source_type", "r.source_name", "r.user_id", "r.status"]
    texts += [f"p.p{i}" for i in range(len(param_keys))]
    cells = [_CSV_TEXT.format(text) for text in texts]
    cells += [f"coalesce(CAST(m.m{i} AS VARCHAR), '')" for i in range(len(metric_keys))]
    joins = (" LEFT JOIN p ON p.run_key = r.run_key" if param_keys else "") + (
        " LEFT JOIN m ON m.run_key = r.run_key" if metric_keys else ""
    )
    # DuckDB writes each line: Python's csv module took 3.5 s to format 100,000 runs x 30
    # cells, DuckDB a fraction of that. Floats print as Python prints them (0.1, 1.0, nan).
    line = " || ',' || ".join(cells)
    sql = (
        ("WITH " + ", ".join(pivots) + " " if pivots else "")
        + f"SELECT {line} FROM runs r{joins} WHERE {sel.where} ORDER BY {sel.order.sql}"
    )
    args += [*sel.params, *sel.order.params]
    header = _csv_line([*CSV_FIXED_COLUMNS, *param_keys, *metric_keys])
    result = cur.execute(sql, args)
    return _csv_chunks(result, header, chunk_rows)


# One text cell, quoted as Python's csv module does (QUOTE_MINIMAL): only when the value holds
# a comma, a quote or a line break; quotes doubled; NULL is empty. (A number never needs it.)
_CSV_TEXT = (
    r"""coalesce(CASE WHEN regexp_matches({0}, '[",\r\n]') """
    r"""THEN '"' || replace({0}, '"', '""') || '"' ELSE {0} END, '')"""
)


def _csv_line(values: Sequence[object]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(values)
    return buffer.getvalue()


def _csv_chunks(result: Cursor, header: str, chunk_rows: int) -> Iterator[str]:
    yield header
    while True:
        rows = result.fetchmany(chunk_rows)
        if not rows:
            return
        yield "\n".join(row[0] for row in rows) + "\n"


# --------------------------------------------------------------------------------------------
# Artifacts
# --------------------------------------------------------------------------------------------


def _clean_artifact_dir(path: str | None) -> str:
    if path is None or path.strip("/") == "":
        return ""
    parts = path.strip("/").split("/")
    if any(p in ("", ".", "..") for p in parts) or "\\" in path:
        raise InvalidInput(f"Invalid artifact path {path!r}: use a relative path without '..'")
    return "/".join(parts) + "/"


def list_artifacts(cur: Cursor, run_id: str, path: str | None = None) -> list[ArtifactEntry]:
    """The direct children of a directory of a run's artifacts (the root when ``path`` is
    None): files with their size, and sub-directories (``is_dir``, size None), sorted by path.
    A path naming a file or nothing lists nothing; an unknown run is NotFound."""
    prefix = _clean_artifact_dir(path)
    run_key = _run_key(cur, run_id)
    rows = cur.execute(
        "SELECT path, size FROM run_artifacts WHERE run_key = ? AND starts_with(path, ?) "
        "ORDER BY path",
        [run_key, prefix],
    ).fetchall()
    entries: dict[str, ArtifactEntry] = {}
    for full, size in rows:
        head, sep, _ = full[len(prefix):].partition("/")
        child = prefix + head
        if sep:
            entries.setdefault(child, ArtifactEntry(child, True, None))
        else:
            entries[child] = ArtifactEntry(child, False, size)
    return sorted(entries.values())


# --------------------------------------------------------------------------------------------
# Experiments
# --------------------------------------------------------------------------------------------


def _experiment_records(cur: Cursor, rows: list[tuple[Any, ...]]) -> list[ExperimentRecord]:
    if not rows:
        return []
    tags: dict[str, dict[str, str]] = {}
    for exp_id, key, value in cur.execute(
        "SELECT experiment_id, key, value FROM experiment_tags "
        "WHERE experiment_id IN (SELECT unnest(?)) ORDER BY key",
        [[row[0] for row in rows]],
    ).fetchall():
        tags.setdefault(exp_id, {})[key] = value
    return [
        ExperimentRecord(exp_id, name, location, stage, created, updated, tags.get(exp_id, {}))
        for exp_id, name, location, stage, created, updated in rows
    ]


def get_experiment(cur: Cursor, experiment_id: str) -> ExperimentRecord:
    """One experiment, active or deleted; NotFound if unknown."""
    rows = cur.execute(
        f"SELECT {_EXPERIMENT_SELECT} FROM experiments e WHERE e.experiment_id = ?",
        [experiment_id],
    ).fetchall()
    if not rows:
        raise NotFound(f"No Experiment with id={experiment_id} exists")
    return _experiment_records(cur, rows)[0]


def get_experiment_by_name(cur: Cursor, name: str) -> ExperimentRecord:
    """The experiment called ``name`` (the active one when a deleted one shares the name)."""
    rows = cur.execute(
        f"SELECT {_EXPERIMENT_SELECT} FROM experiments e WHERE e.name = ? "
        "ORDER BY e.lifecycle_stage = 'active' DESC, e.creation_time DESC, e.experiment_id LIMIT 1",
        [name],
    ).fetchall()
    if not rows:
        raise NotFound(f"Could not find experiment with name '{name}'")
    return _experiment_records(cur, rows)[0]


_EXPERIMENT_ORDER_COLUMNS = {
    "name": "e.name",
    "experiment_id": "e.experiment_id",
    "creation_time": "e.creation_time",
    "last_update_time": "e.last_update_time",
}
_EXPERIMENT_ORDER_PREFIXES = ("attribute.", "attributes.", "attr.")


def _experiment_order(order_by: Sequence[str] | None) -> str:
    """ORDER BY text for experiment order_by clauses ("name", "creation_time DESC", ...)."""
    if isinstance(order_by, str):
        raise InvalidInput("order_by is a list of clauses, one key per element")
    parts: list[str] = []
    seen: set[str] = set()
    for index, clause in enumerate(order_by or ()):
        words = clause.split()
        key = words[0] if words else ""
        for prefix in _EXPERIMENT_ORDER_PREFIXES:
            key = key.removeprefix(prefix)
        direction = words[1].upper() if len(words) > 1 else "ASC"
        if key not in _EXPERIMENT_ORDER_COLUMNS or direction not in ("ASC", "DESC") or len(words) > 2:
            raise InvalidInput(
                f"Invalid order_by clause {index} {clause!r}: expected one of "
                f"{', '.join(_EXPERIMENT_ORDER_COLUMNS)} optionally followed by ASC or DESC"
            )
        if key in seen:
            raise InvalidInput(f"Invalid order_by clause {index} {clause!r}: {key} is listed twice")
        seen.add(key)
        parts.append(f"{_EXPERIMENT_ORDER_COLUMNS[key]} {direction} NULLS LAST")
    # MLflow's default and tie-break: newest first, then by id.
    if "creation_time" not in seen:
        parts.append("e.creation_time DESC NULLS LAST")
    if "experiment_id" not in seen:
        parts.append("e.experiment_id ASC")
    return ", ".join(parts)


def search_experiments(
    cur: Cursor,
    *,
    filter: str | None = None,
    order_by: Sequence[str] | None = None,
    view: View = "active",
    max_results: int = DEFAULT_MAX_RESULTS,
    page_token: str | None = None,
) -> tuple[list[ExperimentRecord], str | None]:
    """One page of experiments matching a filter (name, experiment_id, creation_time,
    last_update_time, tags.*), ordered by those attributes (default: newest first)."""
    _check_max_results(max_results)
    _check_view(view)
    try:
        compiled = compile_experiment_filter(filter)
    except FilterSyntaxError as exc:
        raise _invalid_filter(exc) from exc
    order = _experiment_order(order_by)
    fingerprint = _fingerprint("experiments", filter or "", list(order_by or ()), view)
    offset = _decode_page_token(page_token, fingerprint)
    rows = cur.execute(
        f"SELECT {_EXPERIMENT_SELECT} FROM experiments e "
        f"WHERE {_VIEW_EXPERIMENTS[view]} AND ({compiled.sql}) "
        f"ORDER BY {order} LIMIT ? OFFSET ?",
        [*compiled.params, max_results + 1, offset],
    ).fetchall()
    token = None
    if len(rows) > max_results:
        rows = rows[:max_results]
        token = _encode_page_token(offset + max_results, fingerprint)
    return _experiment_records(cur, rows), token
