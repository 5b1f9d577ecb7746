"""The read side (runstream.queries) on an in-memory read model folded from events (no broker).

The designed data set and the exact expected runs are in tests/query_dataset.py; the
end-to-end tests ask the same questions over HTTP against a real broker.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterator
from dataclasses import replace

import duckdb
import pytest
from runstream import queries
from runstream.errors import InvalidFilter, InvalidInput, NotFound
from runstream.projections.apply_events import apply_batch, create_read_model
from runstream.schemas import RunDeleted, TagSet, TagSetBody

from tests import query_dataset as ds
from tests.event_factory import T0, ev, metrics, params, run_created


def _fold(events: list) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    create_read_model(con)
    con.execute("BEGIN")
    result = apply_batch(con, events)
    con.execute("COMMIT")
    assert not result.rejected, result.rejected
    return con


@pytest.fixture(scope="module")
def db() -> Iterator[duckdb.DuckDBPyConnection]:
    con = _fold(ds.dataset_events())
    yield con
    con.close()


@pytest.fixture
def cur(db: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    c = db.cursor()
    yield c
    c.close()


def ids(runs: list[queries.RunRecord]) -> str:
    return "".join(r.run_id for r in runs)


# ---------------------------------------------------------------------------- search


@pytest.mark.parametrize(("text", "expected"), ds.FEATURES_EXAMPLES + ds.MORE_FILTERS)
def test_filter_selects_exact_runs(cur, text: str, expected: str) -> None:
    runs, token = queries.search_runs(cur, experiment_ids=ds.EXPS, filter=text)
    assert ids(runs) == expected
    assert token is None


@pytest.mark.parametrize(("order_by", "expected"), ds.ORDERS)
def test_order_by(cur, order_by: list[str], expected: str) -> None:
    runs, _ = queries.search_runs(cur, experiment_ids=ds.EXPS, order_by=order_by)
    assert ids(runs) == expected


@pytest.mark.parametrize(("experiment_ids", "view", "has_model", "expected"), ds.SELECTIONS)
def test_view_experiments_and_has_model(cur, experiment_ids, view, has_model, expected) -> None:
    runs, _ = queries.search_runs(cur, experiment_ids=experiment_ids, view=view,
                                  has_model=has_model)
    assert ids(runs) == expected


def test_records_carry_params_tags_and_metric_summaries(cur) -> None:
    (a,) = queries.search_runs(cur, experiment_ids=["1"], filter="run_id = 'A'")[0]
    assert a == queries.get_run(cur, "A")
    assert a.params == ds.PARAMS["A"]
    assert a.tags == ds.TAGS["A"] and a.note == "note A"
    assert a.metrics["r2"] == queries.MetricSummary("r2", 0.8, 1, T0 + 1000 + 1, 0.1, 0.8, 2)
    assert (a.has_model, a.status, a.end_time, a.user_id) == (True, "FINISHED", T0 + 1500, "alice")
    assert (a.source_name, a.source_type, a.git_commit) == ("train.py", "LOCAL", "abc123")
    assert (a.python_version, a.packages) == ("3.11.7", ["numpy==2.1.0"])
    b = queries.get_run(cur, "B")
    assert math.isnan(b.metrics["acc"].latest_value) and b.metrics["acc"].min_value is None
    f = queries.get_run(cur, "F")  # deleted runs are still readable
    assert (f.lifecycle_stage, f.deleted_time) == ("deleted", T0 + 7000)


def test_without_data_leaves_params_tags_metrics_empty(cur) -> None:
    runs, _ = queries.search_runs(cur, experiment_ids=ds.EXPS, with_data=False)
    assert ids(runs) == "EDCBA"
    assert all(not r.params and not r.tags and not r.metrics for r in runs)


def test_get_run_unknown_is_not_found(cur) -> None:
    with pytest.raises(NotFound, match="Run with id=nope not found"):
        queries.get_run(cur, "nope")


# ---------------------------------------------------------------------------- paging


def test_pages_walk_the_whole_result_in_order(cur) -> None:
    seen, token, pages = "", None, 0
    while True:
        runs, token = queries.search_runs(cur, experiment_ids=ds.EXPS, order_by=["metrics.r2"],
                                          max_results=2, page_token=token)
        seen += ids(runs)
        pages += 1
        if token is None:
            break
    assert (seen, pages) == ("BEDAC", 3)


def test_exact_last_page_has_no_token(cur) -> None:
    runs, token = queries.search_runs(cur, experiment_ids=ds.EXPS, max_results=5)
    assert (ids(runs), token) == ("EDCBA", None)
    runs, token = queries.search_runs(cur, experiment_ids=ds.EXPS, max_results=4)
    assert ids(runs) == "EDCB" and token


def test_page_token_of_another_query_is_refused(cur) -> None:
    _, token = queries.search_runs(cur, experiment_ids=ds.EXPS, filter="metrics.r2 > 0",
                                   max_results=1)
    assert token
    for other in ({"filter": "metrics.r2 > 0.1"}, {"order_by": ["start_time"]},
                  {"view": "all"}, {"experiment_ids": ["1"]}, {"has_model": True}):
        args = {"experiment_ids": ds.EXPS, "filter": "metrics.r2 > 0", **other}
        with pytest.raises(InvalidInput, match="different query"):
            queries.search_runs(cur, page_token=token, **args)  # type: ignore[arg-type]
    # The page size may change between pages; the query may not.
    runs, _ = queries.search_runs(cur, experiment_ids=ds.EXPS, filter="metrics.r2 > 0",
                                  max_results=10, page_token=token)
    assert ids(runs) == "DBA"


@pytest.mark.parametrize("token", [
    "garbage!", "bm90IGpzb24=", base64.urlsafe_b64encode(b'{"offset": 0}').decode(),
    base64.urlsafe_b64encode(b'{"offset": "1"}').decode(), base64.urlsafe_b64encode(b"[1]").decode(),
    "x" * 600,
])
def test_bad_page_tokens_are_invalid_input(cur, token: str) -> None:
    with pytest.raises(InvalidInput, match="Invalid page token"):
        queries.search_runs(cur, experiment_ids=ds.EXPS, page_token=token)


def test_page_token_is_base64_json_with_offset(cur) -> None:
    _, token = queries.search_runs(cur, experiment_ids=ds.EXPS, max_results=3)
    assert token is not None
    assert json.loads(base64.urlsafe_b64decode(token))["offset"] == 3


@pytest.mark.parametrize("max_results", [0, -1, 50_001, True])
def test_max_results_bounds(cur, max_results: int) -> None:
    with pytest.raises(InvalidInput, match="max_results"):
        queries.search_runs(cur, experiment_ids=ds.EXPS, max_results=max_results)


def test_max_results_cap_is_accepted(cur) -> None:
    runs, token = queries.search_runs(cur, experiment_ids=ds.EXPS, max_results=50_000)
    assert ids(runs) == "EDCBA" and token is None


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize(("text", "position", "expected"), [
    ("metrics.r2 > 'x'", 0, "a number"),
    ("metrics.r2 >", 12, "a value"),
    ("params.lr = '0.1' AND", 21, "an identifier, NOT or '('"),
    ("(metrics.r2 > 1", 0, "')'"),
    ("foo.bar = 'x'", 0, "a known entity"),
])
def test_malformed_filter_names_position_and_expectation(cur, text, position, expected) -> None:
    with pytest.raises(InvalidFilter) as info:
        queries.search_runs(cur, experiment_ids=ds.EXPS, filter=text)
    assert (info.value.position, info.value.expected) == (position, expected)
    assert f"position {position}" in str(info.value)


def test_malformed_order_by_names_the_clause(cur) -> None:
    with pytest.raises(InvalidFilter) as info:
        queries.search_runs(cur, experiment_ids=ds.EXPS,
                            order_by=["metrics.r2", "metrics.loss SIDEWAYS"])
    assert info.value.clause_index == 1 and "order_by clause 1" in str(info.value)
    with pytest.raises(InvalidInput, match="list of clauses"):
        queries.search_runs(cur, experiment_ids=ds.EXPS, order_by="metrics.r2")


def test_bad_view_is_invalid_input(cur) -> None:
    with pytest.raises(InvalidInput, match="view"):
        queries.search_runs(cur, experiment_ids=ds.EXPS, view="archived")  # type: ignore[arg-type]


def test_user_text_is_bound_not_spliced() -> None:
    sel = queries.select_runs(["x'); DROP TABLE runs; --"], "tags.`a'b` = \"c'--\"",
                              ["params.`z\"`"], "active", True)
    assert "DROP" not in sel.where and "a'b" not in sel.where and 'z"' not in sel.order.sql
    assert "x'); DROP TABLE runs; --" in sel.params


# ---------------------------------------------------------------------------- history


def test_metric_history_is_ordered_by_timestamp_step_value() -> None:
    con = _fold([run_created("r"), metrics("r", [("m", 1.0, 2, 100), ("m", 2.0, 1, 999),
                                                 ("m", 0.5, 2, 100), ("m", 0.7, 2, 50)])])
    points, token = queries.metric_history(con.cursor(), "r", "m")
    assert points == [(2, 50, 0.7), (2, 100, 0.5), (2, 100, 1.0), (1, 999, 2.0)]
    assert token is None


def test_metric_history_pages(cur) -> None:
    collected, token = [], None
    while True:
        page, token = queries.metric_history(cur, "S", "wave", max_results=700, page_token=token)
        collected += page
        if token is None:
            break
    assert [s for s, _, _ in collected] == list(range(ds.WAVE_POINTS))
    with pytest.raises(InvalidInput, match="different query"):
        queries.metric_history(cur, "A", "r2", max_results=1,
                               page_token=queries.metric_history(cur, "S", "wave", max_results=1)[1])


def test_metric_history_unknown_key_is_empty_unknown_run_not_found(cur) -> None:
    assert queries.metric_history(cur, "A", "nope") == ([], None)
    with pytest.raises(NotFound):
        queries.metric_history(cur, "nope", "r2")
    with pytest.raises(InvalidInput):
        queries.metric_history(cur, "A", "r2", max_results=0)


def test_downsampling_keeps_the_spike_and_the_dip(cur) -> None:
    buckets = queries.metric_history_downsampled(cur, "S", "wave", points=10)
    assert len(buckets) == 10
    assert sum(b["count"] for b in buckets) == ds.WAVE_POINTS
    assert [(b["x_start"], b["x_end"]) for b in buckets][:2] == [(0, 199), (200, 399)]
    highest = max(buckets, key=lambda b: b["max"])
    lowest = min(buckets, key=lambda b: b["min"])
    assert (highest["max"], highest["max_x"]) == (ds.SPIKE, ds.SPIKE_STEP)
    assert (lowest["min"], lowest["min_x"]) == (ds.DIP, ds.DIP_STEP)
    first = buckets[0]
    assert (first["first"], first["last"]) == (ds.wave_value(0), ds.wave_value(199))


def test_downsampling_by_time_and_to_one_point(cur) -> None:
    (only,) = queries.metric_history_downsampled(cur, "S", "wave", points=1, x="time")
    assert (only["x_start"], only["x_end"], only["count"]) == (T0, T0 + 1999, ds.WAVE_POINTS)
    assert (only["max"], only["min"]) == (ds.SPIKE, ds.DIP)
    # Fewer points than buckets: one bucket per point.
    a = queries.metric_history_downsampled(cur, "A", "r2", points=1000)
    assert [(b["x_start"], b["first"], b["count"]) for b in a] == [(0, 0.1, 1), (1, 0.8, 1)]


def test_downsampling_nan_only_bucket_has_no_min_max(cur) -> None:
    (c,) = queries.metric_history_downsampled(cur, "C", "r2", points=5)
    assert c["count"] == 1 and math.isnan(c["first"]) and c["min"] is None and c["max"] is None
    assert c["min_x"] is None and c["max_x"] is None


@pytest.mark.parametrize("kwargs", [{"points": 0}, {"points": 100_001}, {"points": 10, "x": "wall"}])
def test_downsampling_refuses_bad_arguments(cur, kwargs) -> None:
    with pytest.raises(InvalidInput):
        queries.metric_history_downsampled(cur, "S", "wave", **kwargs)


# ---------------------------------------------------------------------------- compare


def test_compare_tables_side_by_side(cur) -> None:
    out = queries.compare_runs(cur, ["A", "D", "E"])
    assert [r["run_id"] for r in out["runs"]] == ["A", "D", "E"]
    assert [r["experiment_name"] for r in out["runs"]] == ["fraud-detection", "Fraud Model",
                                                           "Fraud Model"]
    params = {row["key"]: row for row in out["params"]}
    assert params["lr"]["values"] == ["0.01", None, "1e-3"]
    assert params["elasticNetParam"] == {"key": "elasticNetParam", "values": ["0.5", "0.5", None],
                                         "identical": False}
    r2 = next(row for row in out["metrics"] if row["key"] == "r2")
    assert r2["values"] == [0.8, 0.35, 0.31] and r2["min"] == [0.1, 0.35, 0.31]
    assert not r2["identical"]


def test_compare_hide_identical(cur) -> None:
    shown = queries.compare_runs(cur, ["A", "C"], hide_identical=True)
    everything = queries.compare_runs(cur, ["A", "C"])
    assert {r["key"] for r in everything["params"]} == {"lr", "elasticNetParam", "batch size"}
    assert {r["key"] for r in shown["params"]} == {"elasticNetParam", "batch size"}  # lr equal
    assert "memUsage" not in {r["key"] for r in shown["metrics"]}  # latest 0.0 in both
    assert "memUsage" in {r["key"] for r in everything["metrics"]}
    assert all(not r["identical"] for t in ("params", "metrics", "tags") for r in shown[t])


def test_compare_plot_data(cur) -> None:
    out = queries.compare_runs(cur, ["A", "B", "C"], plot_keys=["params.lr", "MIN(metrics.rmse)",
                                                                "tags.color", "run_name"],
                               x="params.elasticNetParam", y="metrics.r2", z="metrics.loss")
    dims = out["plots"]["parallel_coordinates"]["dimensions"]
    assert dims[0] == {"key": "params.lr", "type": "numeric", "values": [0.01, 0.1, 0.01]}
    assert dims[1] == {"key": "MIN(metrics.rmse)", "type": "numeric", "values": [0.9, 0.5, 5.0]}
    assert dims[2] == {"key": "tags.color", "type": "categorical",
                       "values": ["blue", "blue", "red"]}
    assert dims[3]["values"] == ["alpha-run", "beta", "Gamma_run"]
    scatter = out["plots"]["scatter"]
    assert scatter["x"]["type"] == "categorical"  # 'abc' is not a number
    assert scatter["y"]["values"][:2] == [0.8, 0.2] and math.isnan(scatter["y"]["values"][2])
    assert out["plots"]["contour"]["z"]["values"] == [0.5, 1.5, -2.0]


def test_compare_default_axes_are_what_differs(cur) -> None:
    out = queries.compare_runs(cur, ["A", "C"])
    keys = [d["key"] for d in out["plots"]["parallel_coordinates"]["dimensions"]]
    assert "params.lr" not in keys and "params.elasticNetParam" in keys
    assert "metrics.r2" in keys and "metrics.memUsage" not in keys
    assert out["plots"]["scatter"] is None and out["plots"]["contour"] is None


@pytest.mark.parametrize(("run_ids", "kwargs", "error", "match"), [
    (["A"], {}, InvalidInput, "at least two"),
    (["A", "A"], {}, InvalidInput, "at least two"),
    (["A", "nope"], {}, NotFound, "nope"),
    (["A", "B"], {"x": "params.lr"}, InvalidInput, "both x and y"),
    (["A", "B"], {"z": "metrics.loss"}, InvalidInput, "x, y and z"),
    (["A", "B"], {"plot_keys": ["metrics.loss <"]}, InvalidFilter, "plot key"),
])
def test_compare_errors(cur, run_ids, kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        queries.compare_runs(cur, run_ids, **kwargs)


# ---------------------------------------------------------------------------- CSV


def test_csv_header_and_rows(cur) -> None:
    text = "".join(queries.iter_runs_csv(cur, experiment_ids=ds.EXPS))
    assert text.splitlines() == [ds.CSV_HEADER, *ds.CSV_ROWS]


def test_csv_streams_all_matches_in_chunks(cur) -> None:
    chunks = list(queries.iter_runs_csv(cur, experiment_ids=ds.EXPS, filter="metrics.r2 > 0",
                                        order_by=["metrics.r2"], chunk_rows=2))
    assert len(chunks) == 1 + 2  # header, then 4 rows in chunks of two
    lines = "".join(chunks).splitlines()
    assert lines[0] == ds.CSV_HEADER  # A, B, D, E hold every key of the full set
    assert [line.split(",")[0] for line in lines[1:]] == list("BEDA")


def test_csv_keys_are_the_union_over_the_selection(cur) -> None:
    lines = "".join(queries.iter_runs_csv(cur, experiment_ids=["2"])).splitlines()
    assert lines[0] == ("Run ID,Name,Source Type,Source Name,User,Status,elasticNetParam,lr,"
                        "avg_areaUnderROC,loss,memUsage,r2,rmse")
    empty = "".join(queries.iter_runs_csv(cur, experiment_ids=[])).splitlines()
    assert empty == ["Run ID,Name,Source Type,Source Name,User,Status"]


def test_csv_checks_the_query_before_streaming(cur) -> None:
    with pytest.raises(InvalidFilter):
        queries.iter_runs_csv(cur, experiment_ids=ds.EXPS, filter="metrics.r2 >")


def test_csv_quotes_awkward_keys_and_values() -> None:
    con = _fold([run_created("q", name='a "quoted", name'),
                 params("q", {'we,ird "key"': "x\ny"})])
    lines = "".join(queries.iter_runs_csv(con.cursor(), experiment_ids=None))
    assert lines.startswith('Run ID,Name,Source Type,Source Name,User,Status,"we,ird ""key"""\n')
    assert '"a ""quoted"", name"' in lines and '"x\ny"' in lines


# ---------------------------------------------------------------------------- artifacts


def test_list_artifacts(cur) -> None:
    root = queries.list_artifacts(cur, "A")
    assert root == [("data", True, None), ("model", True, None), ("notes.txt", False, 5)]
    assert queries.list_artifacts(cur, "A", "model/") == [("model/MLmodel", False, 120),
                                                         ("model/model.pkl", False, 4096)]
    assert queries.list_artifacts(cur, "A", "notes.txt") == []
    assert queries.list_artifacts(cur, "B") == []
    with pytest.raises(InvalidInput):
        queries.list_artifacts(cur, "A", "../etc")
    with pytest.raises(NotFound):
        queries.list_artifacts(cur, "nope")


# ---------------------------------------------------------------------------- descendants


def test_run_descendants(cur) -> None:
    assert queries.run_descendants(cur, ["A"]) == ["C", "E"]
    assert queries.run_descendants(cur, ["C"]) == ["E"]
    assert queries.run_descendants(cur, ["A", "C"]) == ["E"]  # given runs are not descendants
    assert queries.run_descendants(cur, ["B", "nope"]) == []
    assert queries.run_descendants_by_root(cur, ["A", "D"]) == {"A": ["C", "E"], "D": []}


def test_run_descendants_follow_the_parent_tag_and_survive_cycles() -> None:
    con = _fold([run_created("p"), run_created("c"), run_created("g", parent="c"),
                 ev(TagSet, TagSetBody(key="mlflow.parentRunId", value="p"), run_id="c"),
                 ev(TagSet, TagSetBody(key="mlflow.parentRunId", value="g"), run_id="p")])
    assert queries.run_descendants(con.cursor(), ["p"]) == ["c", "g"]


# ---------------------------------------------------------------------------- experiments


def test_get_experiment_and_by_name(cur) -> None:
    exp = queries.get_experiment(cur, "1")
    assert (exp.name, exp.lifecycle_stage, exp.tags) == ("fraud-detection", "active",
                                                         {"team": "risk"})
    assert queries.get_experiment_by_name(cur, "Fraud Model").experiment_id == "2"
    with pytest.raises(NotFound, match="No Experiment with id=9"):
        queries.get_experiment(cur, "9")
    with pytest.raises(NotFound, match="Could not find experiment with name 'x'"):
        queries.get_experiment_by_name(cur, "x")


def test_search_experiments(cur) -> None:
    def names(**kwargs) -> list[str]:
        return [e.name for e in queries.search_experiments(cur, **kwargs)[0]]

    assert names() == ["spikes", "Fraud Model", "fraud-detection", "Default"]
    assert names(filter="name ILIKE 'fraud%'") == ["Fraud Model", "fraud-detection"]
    assert names(filter="tags.team = 'risk'") == ["fraud-detection"]
    assert names(order_by=["name"]) == ["Default", "Fraud Model", "fraud-detection", "spikes"]
    assert names(order_by=["attributes.creation_time ASC"])[0] == "Default"
    assert names(view="deleted") == []
    page, token = queries.search_experiments(cur, max_results=3)
    assert len(page) == 3 and token
    rest, token = queries.search_experiments(cur, max_results=3, page_token=token)
    assert [e.name for e in rest] == ["Default"] and token is None


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"filter": "name = "}, InvalidFilter),
    ({"order_by": ["name sideways"]}, InvalidInput),
    ({"order_by": ["color"]}, InvalidInput),
    ({"order_by": ["name", "name DESC"]}, InvalidInput),
    ({"max_results": 0}, InvalidInput),
    ({"view": "nope"}, InvalidInput),
])
def test_search_experiments_errors(cur, kwargs, error) -> None:
    with pytest.raises(error):
        queries.search_experiments(cur, **kwargs)


# ------------------------------------------------------------- newest-first page windows


def _window_db(seed: int) -> duckdb.DuckDBPyConnection:
    """300 runs created mostly in start-time order, with the cases that break that order:
    runs created late with an early start time (imported), created early with a late one
    (clock skew), equal start times, deleted runs and two experiments. Seed 0: every run
    starts at the same time (the order is then by run id alone)."""
    import random

    rng = random.Random(seed)
    events = []
    for i in range(300):
        run = f"{rng.getrandbits(128):032x}"
        start = T0 + i * 1000 if seed else T0
        roll = rng.random() if seed else 1.0
        if roll < 0.05:
            start = T0 + rng.randrange(0, 300) * 1000  # imported: any time, created now
        elif roll < 0.08:
            start = T0 + 400_000 + rng.randrange(0, 10) * 1000  # from a fast clock
        elif roll < 0.20:
            start = T0 + (i // 7) * 7000  # groups sharing a start time
        events.append(run_created(run, f"exp{i % 2}", t=start))
        events.append(metrics(run, [("loss", rng.random(), 0, start)], t=start))
        if rng.random() < 0.1:
            events.append(ev(RunDeleted, run_id=run, t=start))
    return _fold(events)


@pytest.mark.parametrize("seed", range(4))
def test_newest_first_window_gives_the_same_pages_as_a_full_sort(monkeypatch, seed: int) -> None:
    con = _window_db(seed)
    monkeypatch.setattr(queries, "_FIRST_WINDOW", 8)
    cases = [(None, None), (None, ["attributes.start_time DESC"]), ("metrics.loss > 0.5", None),
             ("metrics.loss < 0.05", None)]
    for (filter, order_by), exps, view in [
        (case, exps, view) for case in cases for exps in (["exp0", "exp1"], ["exp1"])
        for view in ("active", "deleted", "all")
    ]:
        sel = queries.select_runs(exps, filter, order_by, view, None)
        assert sel.order.newest_first
        full = replace(sel, order=replace(sel.order, newest_first=False))
        for limit, offset in [(1, 0), (5, 0), (10, 3), (10, 40), (50, 100), (400, 0)]:
            assert queries.page_runs(con, sel, limit, offset) == queries.page_runs(
                con, full, limit, offset
            ), (filter, order_by, exps, view, limit, offset)


def test_a_late_start_just_below_the_window_is_found(monkeypatch) -> None:
    """The run right below the window (key 6 of 10, window of 4) started last of all: the
    window must see it through the first run above it and grow."""
    monkeypatch.setattr(queries, "_FIRST_WINDOW", 4)
    runs = [f"{i:032x}" for i in range(1, 11)]
    events = []
    for i, run in enumerate(runs, start=1):
        start = T0 + 10**9 if i == 6 else T0 + i * 1000
        events.append(run_created(run, "exp0", t=start))
    con = _fold(events)
    sel = queries.select_runs(["exp0"], None, None, "active", None)
    assert [run_id for _, run_id, _ in queries.page_runs(con, sel, 1, 0)] == [runs[5]]
    assert [run_id for _, run_id, _ in queries.page_runs(con, sel, 2, 0)] == [runs[5], runs[9]]


def test_only_a_leading_start_time_desc_is_newest_first() -> None:
    def newest_first(order_by: list[str] | None) -> bool:
        return queries.select_runs(None, None, order_by, "active", None).order.newest_first

    assert newest_first(None)
    assert newest_first(["start_time DESC", "metrics.loss"])
    assert not newest_first(["start_time"])
    assert not newest_first(["metrics.loss DESC"])
    assert not newest_first(["run_name", "start_time DESC"])


def _metric_window_db(seed: int) -> duckdb.DuckDBPyConnection:
    """200 runs; 'loss' with ties, NaN latest values, all-NaN histories (NULL min and max),
    runs without it, deleted runs, a param for a second order key."""
    import random

    rng = random.Random(seed)
    events = []
    for i in range(200):
        run = f"{rng.getrandbits(128):032x}"
        events += [run_created(run, f"exp{i % 2}", t=T0 + i), params(run, {"p": str(i % 3)})]
        roll = rng.random()
        if roll < 0.1:
            pass  # no loss at all
        elif roll < 0.15:
            events.append(metrics(run, [("loss", math.nan, 0, T0)]))
        elif roll < 0.2:
            events.append(metrics(run, [("loss", 0.5, 0, T0), ("loss", math.nan, 1, T0)]))
        else:
            value = rng.choice([0.25, 0.5, 0.75]) if roll < 0.4 else rng.random()
            events.append(metrics(run, [("loss", value * 3, 0, T0), ("loss", value, 1, T0)]))
        if rng.random() < 0.1:
            events.append(ev(RunDeleted, run_id=run))
    return _fold(events)


@pytest.mark.parametrize("seed", range(3))
def test_best_metric_window_gives_the_same_pages_as_a_full_sort(monkeypatch, seed: int) -> None:
    con = _metric_window_db(seed)
    monkeypatch.setattr(queries, "_FIRST_METRIC_WINDOW", 4)
    orders = [["metrics.loss"], ["metrics.loss DESC"], ["MIN(metrics.loss)", "params.p DESC"],
              ["MAX(metrics.loss) DESC"], ["LATEST(metrics.loss)", "start_time"]]
    windowed = 0
    for order_by in orders:
        for filter in (None, "params.p = '1'", "metrics.loss > 0.3"):
            for exps, view in ((["exp0", "exp1"], "active"), (["exp1"], "all")):
                sel = queries.select_runs(exps, filter, order_by, view, None)
                assert sel.order.leading_metric is not None
                full = replace(sel, order=replace(sel.order, leading_metric=None))
                for limit, offset in [(1, 0), (3, 2), (10, 0), (20, 30), (8, 52), (10, 160), (300, 0)]:
                    got = queries.page_runs(con, sel, limit, offset)
                    assert got == queries.page_runs(con, full, limit, offset), (
                        order_by, filter, exps, view, limit, offset)
                    windowed += queries._best_metric_window(con, sel, limit, offset) is not None
    assert windowed > 50  # the window answered often, not only the fallback
