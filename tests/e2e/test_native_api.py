"""The native API (/api/v1) end to end: a real node on the real broker, served by uvicorn on a
free port, asked over HTTP. The designed data set (tests/query_dataset.py) is published as
events; writes go through the log and are read back at once (read-your-writes).
"""

from __future__ import annotations

import csv
import io
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from runstream.api.app import create_app
from runstream.commands import Commands
from runstream.deploy.brokers import free_port
from runstream.node import QueryNode
from runstream.schemas import now_ms
from runstream.settings import Settings

from tests import query_dataset as ds

pytestmark = pytest.mark.broker


@dataclass
class Served:
    node: QueryNode
    http: httpx.Client
    commands: Commands


def _serve(node: QueryNode) -> tuple[uvicorn.Server, threading.Thread, int]:
    port = free_port()
    config = uvicorn.Config(create_app(node), host="127.0.0.1", port=port, log_level="warning",
                            access_log=False, ws="none", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    return server, thread, port


@pytest.fixture(scope="module")
def api(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    settings = Settings(kafka_bootstrap=bootstrap, topic_prefix=f"t{uuid.uuid4().hex[:10]}",
                        partitions=3, data_dir=Path(tmp_path_factory.mktemp("native")) / "data",
                        batch_max_ms=20)
    node = QueryNode.open(settings, bootstrap)
    server, thread, port = _serve(node)
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    try:
        node.publish(ds.dataset_events())
        yield Served(node, http, Commands(node))
    finally:
        http.close()
        server.should_exit = True
        thread.join(10)
        node.close()


def search(api: Served, **body: object) -> tuple[str, str | None]:
    r = api.http.post("/api/v1/runs/search", json=body)
    assert r.status_code == 200, r.text
    data = r.json()
    return "".join(run["run_id"] for run in data["runs"]), data["next_page_token"]


def assert_error(r: httpx.Response, status: int, code: str, message: str = "") -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error_code"] == code and message in body["message"], body
    return body


# ----------------------------------------------------------------------- the query table


@pytest.mark.parametrize(("text", "expected"), ds.FEATURES_EXAMPLES + ds.MORE_FILTERS)
def test_filters(api: Served, text: str, expected: str) -> None:
    assert search(api, experiment_ids=ds.EXPS, filter=text) == (expected, None)


@pytest.mark.parametrize(("order_by", "expected"), ds.ORDERS)
def test_order_by(api: Served, order_by: list[str], expected: str) -> None:
    assert search(api, experiment_ids=ds.EXPS, order_by=order_by)[0] == expected


@pytest.mark.parametrize(("experiment_ids", "view", "has_model", "expected"), ds.SELECTIONS)
def test_views_experiments_has_model(api: Served, experiment_ids, view, has_model, expected) -> None:
    body = {"view": view, "has_model": has_model}
    if experiment_ids is not None:
        body["experiment_ids"] = experiment_ids
    assert search(api, **body)[0] == expected


def test_search_returns_whole_runs_with_nan_as_string(api: Served) -> None:
    r = api.http.post("/api/v1/runs/search", json={"experiment_ids": ["1"],
                                                   "filter": "run_id = 'C'"})
    (c,) = r.json()["runs"]
    assert c["parent_run_id"] == "A" and c["params"] == ds.PARAMS["C"]
    assert c["metrics"]["r2"]["latest_value"] == "NaN" and c["metrics"]["r2"]["min_value"] is None
    slim = api.http.post("/api/v1/runs/search", json={"experiment_ids": ["1"], "with_data": False})
    assert all(run["metrics"] == {} for run in slim.json()["runs"])


def test_pages_and_tokens(api: Served) -> None:
    seen, token, pages = "", None, 0
    while True:
        got, token = search(api, experiment_ids=ds.EXPS, order_by=["metrics.r2"], max_results=2,
                            **({"page_token": token} if token else {}))
        seen, pages = seen + got, pages + 1
        if token is None:
            break
    assert (seen, pages) == ("BEDAC", 3)
    _, token = search(api, experiment_ids=ds.EXPS, max_results=1)
    r = api.http.post("/api/v1/runs/search", json={"experiment_ids": ds.EXPS, "page_token": token,
                                                   "filter": "metrics.r2 > 0"})
    assert_error(r, 400, "INVALID_PARAMETER_VALUE", "different query")
    r = api.http.post("/api/v1/runs/search", json={"page_token": "not-a-token"})
    assert_error(r, 400, "INVALID_PARAMETER_VALUE", "Invalid page token")


# ------------------------------------------------------------------------------ errors


def test_malformed_filter_is_a_400_naming_position_and_expectation(api: Served) -> None:
    r = api.http.post("/api/v1/runs/search", json={"filter": "metrics.r2 > 0.3 AND tags.x ="})
    body = assert_error(r, 400, "INVALID_PARAMETER_VALUE", "Invalid filter at position 29")
    assert body["details"] == {"position": 29, "expected": "a value", "clause_index": None}
    r = api.http.post("/api/v1/runs/search", json={"order_by": ["start_time", "metrics.x DOWN"]})
    body = assert_error(r, 400, "INVALID_PARAMETER_VALUE", "order_by clause 1")
    assert body["details"]["clause_index"] == 1


@pytest.mark.parametrize(("body", "message"), [
    ({"max_results": 0}, "max_results"),
    ({"max_results": 50_001}, "max_results"),
    ({"view": "archived"}, "view"),
    ({"experiment_ids": "1"}, "experiment_ids"),
    ({"filters": "metrics.x > 1"}, "filters"),
    ({"order_by": "metrics.x"}, "order_by"),
])
def test_bad_search_bodies_are_400(api: Served, body: dict, message: str) -> None:
    r = api.http.post("/api/v1/runs/search", json=body)
    assert_error(r, 400, "INVALID_PARAMETER_VALUE", message)


def test_max_results_cap_is_accepted(api: Served) -> None:
    assert search(api, experiment_ids=ds.EXPS, max_results=50_000) == ("EDCBA", None)


def test_not_json_unknown_run_unknown_route(api: Served) -> None:
    r = api.http.post("/api/v1/runs/search", content=b"{not json",
                      headers={"content-type": "application/json"})
    assert_error(r, 400, "INVALID_PARAMETER_VALUE")
    assert_error(api.http.get("/api/v1/runs/nope"), 404, "RESOURCE_DOES_NOT_EXIST",
                 "Run with id=nope not found")
    assert_error(api.http.get("/api/v1/experiments/nope"), 404, "RESOURCE_DOES_NOT_EXIST")
    assert_error(api.http.get("/api/v1/no-such-route"), 404, "ENDPOINT_NOT_FOUND")
    assert_error(api.http.delete("/api/v1/runs.csv"), 405, "BAD_REQUEST")


# ----------------------------------------------------------------------- reads of a run


def test_run_detail(api: Served) -> None:
    r = api.http.get("/api/v1/runs/A")
    assert r.status_code == 200
    a = r.json()
    assert (a["name"], a["status"], a["experiment_id"], a["note"]) == (
        "alpha-run", "FINISHED", "1", "note A")
    assert a["params"] == ds.PARAMS["A"] and a["tags"] == ds.TAGS["A"]
    assert a["metrics"]["rmse"] == {"key": "rmse", "latest_value": 0.9, "latest_step": 1,
                                    "latest_timestamp": ds.T0 + 1000 + 1, "min_value": 0.9,
                                    "max_value": 2.0, "count": 2}
    assert a["artifacts"] == [{"path": "data", "is_dir": True, "size": None},
                              {"path": "model", "is_dir": True, "size": None},
                              {"path": "notes.txt", "is_dir": False, "size": 5}]
    assert (a["git_commit"], a["source_name"], a["python_version"], a["packages"]) == (
        "abc123", "train.py", "3.11.7", ["numpy==2.1.0"])
    assert a["has_model"] is True
    sub = api.http.get("/api/v1/runs/A/artifacts", params={"path": "model"}).json()
    assert [f["path"] for f in sub["files"]] == ["model/MLmodel", "model/model.pkl"]
    assert_error(api.http.get("/api/v1/runs/A/artifacts", params={"path": "../x"}), 400,
                 "INVALID_PARAMETER_VALUE")


def test_metric_history_full_and_paged(api: Served) -> None:
    full = api.http.get("/api/v1/runs/S/metric-history", params={"key": "wave"}).json()
    assert [p["step"] for p in full["points"]] == list(range(ds.WAVE_POINTS))
    assert full["next_page_token"] is None
    steps, token = [], None
    while True:
        params: dict[str, object] = {"key": "wave", "max_results": 900}
        if token:
            params["page_token"] = token
        page = api.http.get("/api/v1/runs/S/metric-history", params=params).json()
        steps += [p["step"] for p in page["points"]]
        token = page["next_page_token"]
        if token is None:
            break
    assert steps == list(range(ds.WAVE_POINTS))
    nan = api.http.get("/api/v1/runs/C/metric-history", params={"key": "r2"}).json()
    assert nan["points"] == [{"step": 0, "timestamp": ds.T0 + 3000, "value": "NaN"}]
    assert_error(api.http.get("/api/v1/runs/S/metric-history"), 400, "INVALID_PARAMETER_VALUE",
                 "Missing value for required parameter 'key'")
    assert_error(api.http.get("/api/v1/runs/S/metric-history",
                              params={"key": "wave", "max_results": 0}), 400,
                 "INVALID_PARAMETER_VALUE")


def test_downsampled_history_keeps_spikes(api: Served) -> None:
    r = api.http.get("/api/v1/runs/S/metric-history/downsampled",
                     params={"key": "wave", "points": 20})
    buckets = r.json()["buckets"]
    assert len(buckets) == 20 and sum(b["count"] for b in buckets) == ds.WAVE_POINTS
    top = max(buckets, key=lambda b: b["max"])
    bottom = min(buckets, key=lambda b: b["min"])
    assert (top["max"], top["max_x"]) == (ds.SPIKE, ds.SPIKE_STEP)
    assert (bottom["min"], bottom["min_x"]) == (ds.DIP, ds.DIP_STEP)
    by_time = api.http.get("/api/v1/runs/S/metric-history/downsampled",
                           params={"key": "wave", "points": 1, "x": "time"}).json()
    assert by_time["buckets"][0]["x_start"] == ds.T0
    assert_error(api.http.get("/api/v1/runs/S/metric-history/downsampled",
                              params={"key": "wave", "points": 100_001}), 400,
                 "INVALID_PARAMETER_VALUE", "points")


def test_compare(api: Served) -> None:
    r = api.http.post("/api/v1/runs/compare", json={
        "run_ids": ["A", "B", "D"], "hide_identical": True, "x": "params.lr", "y": "metrics.r2",
        "z": "MIN(metrics.rmse)"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert [run["experiment_name"] for run in out["runs"]] == ["fraud-detection",
                                                               "fraud-detection", "Fraud Model"]
    assert {row["key"] for row in out["params"]} == {"lr", "elasticNetParam", "batch size"}
    r2 = next(row for row in out["metrics"] if row["key"] == "r2")
    assert r2["values"] == [0.8, 0.2, 0.35]
    acc = next(row for row in out["metrics"] if row["key"] == "acc")
    assert acc["values"] == [0.9, "NaN", None]
    contour = out["plots"]["contour"]
    assert contour["x"]["values"] == [0.01, 0.1, None] and contour["z"]["values"] == [0.9, 0.5, 1.0]
    assert out["plots"]["parallel_coordinates"]["dimensions"]
    assert_error(api.http.post("/api/v1/runs/compare", json={"run_ids": ["A"]}), 400,
                 "INVALID_PARAMETER_VALUE")
    assert_error(api.http.post("/api/v1/runs/compare", json={"run_ids": ["A", "nope"]}), 404,
                 "RESOURCE_DOES_NOT_EXIST")


def test_csv(api: Served) -> None:
    with api.http.stream("GET", "/api/v1/runs.csv",
                         params={"experiment_ids": ds.EXPS}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/csv")
        assert "attachment" in r.headers["content-disposition"]
        text = "".join(r.iter_text())
    assert text.splitlines() == [ds.CSV_HEADER, *ds.CSV_ROWS]
    ordered = api.http.get("/api/v1/runs.csv", params={
        "experiment_ids": ds.EXPS, "filter": "metrics.r2 > 0.3", "order_by": "metrics.r2 DESC"})
    rows = list(csv.reader(io.StringIO(ordered.text)))
    assert [row[0] for row in rows[1:]] == ["A", "D", "E"]
    assert_error(api.http.get("/api/v1/runs.csv", params={"filter": "metrics.r2 >"}), 400,
                 "INVALID_PARAMETER_VALUE", "position 12")


def test_experiments(api: Served) -> None:
    body = api.http.get("/api/v1/experiments", params={"filter": "name LIKE '%raud%'",
                                                       "order_by": "name"}).json()
    assert [e["name"] for e in body["experiments"]] == ["Fraud Model", "fraud-detection"]
    assert api.http.get("/api/v1/experiments/1").json()["tags"] == {"team": "risk"}
    assert api.http.get("/api/v1/experiments/by-name",
                        params={"name": "spikes"}).json()["experiment_id"] == "3"
    assert_error(api.http.get("/api/v1/experiments/by-name", params={"name": "nope"}), 404,
                 "RESOURCE_DOES_NOT_EXIST", "Could not find experiment with name 'nope'")
    assert_error(api.http.get("/api/v1/experiments", params={"max_results": 0}), 400,
                 "INVALID_PARAMETER_VALUE")


def test_openapi_and_docs(api: Served) -> None:
    r = api.http.get("/openapi.json")
    # A 500 here with "Duplicate Operation ID" in the log means some router registers one
    # function under several paths without unique operation ids (warnings are errors here).
    assert r.status_code == 200, r.text
    spec = r.json()
    for path in ("/api/v1/runs/search", "/api/v1/runs.csv", "/api/v1/runs/{run_id}",
                 "/api/v1/runs/compare", "/api/v1/runs/delete",
                 "/api/v1/experiments/{experiment_id}/runs/bulk-delete"):
        assert path in spec["paths"], path
    assert "RunOut" in spec["components"]["schemas"]
    assert api.http.get("/docs").status_code == 200


# ------------------------------------------------------------------------------ writes


@pytest.fixture
def exp(api: Served) -> str:
    return api.commands.create_experiment(f"writes-{uuid.uuid4().hex[:8]}")


def run_ids(api: Served, exp: str, view: str = "active") -> set[str]:
    r = api.http.post("/api/v1/runs/search", json={"experiment_ids": [exp], "view": view,
                                                   "with_data": False})
    return {run["run_id"] for run in r.json()["runs"]}


def test_rename_tags_and_note(api: Served, exp: str) -> None:
    run = api.commands.create_run(exp, name="before")
    r = api.http.post(f"/api/v1/runs/{run}/rename", json={"name": "after"})
    assert r.status_code == 200 and r.json()["name"] == "after"
    assert search(api, experiment_ids=[exp], filter="run_name = 'after'")[0] == run
    r = api.http.post(f"/api/v1/runs/{run}/tags", json={"key": "stage", "value": "prod"})
    assert r.json()["tags"]["stage"] == "prod"
    assert search(api, experiment_ids=[exp], filter="tags.stage = 'prod'")[0] == run
    r = api.http.post(f"/api/v1/runs/{run}/tags/delete", json={"key": "stage"})
    assert "stage" not in r.json()["tags"]
    assert search(api, experiment_ids=[exp], filter="tags.stage IS NULL")[0] == run
    r = api.http.put(f"/api/v1/runs/{run}/note", json={"content": "**good** run"})
    assert r.json()["note"] == "**good** run"
    assert api.http.get(f"/api/v1/runs/{run}").json()["tags"]["mlflow.note.content"] == "**good** run"


def test_write_errors_change_nothing(api: Served, exp: str) -> None:
    run = api.commands.create_run(exp, name="keep")
    for path, body in [(f"/api/v1/runs/{run}/rename", {"name": ""}),
                       (f"/api/v1/runs/{run}/rename", {"name": "x" * 251}),
                       (f"/api/v1/runs/{run}/rename", {"name": "ok", "extra": 1}),
                       (f"/api/v1/runs/{run}/tags", {"key": "k"}),
                       (f"/api/v1/runs/{run}/tags", {"key": "k" * 251, "value": "v"}),
                       ("/api/v1/runs/delete", {"run_ids": []}),
                       ("/api/v1/runs/delete", {"run_ids": [run], "with_descendants": "maybe"})]:
        assert_error(api.http.post(path, json=body), 400, "INVALID_PARAMETER_VALUE")
    assert_error(api.http.post(f"/api/v1/runs/{run}/tags/delete", json={"key": "absent"}), 404,
                 "RESOURCE_DOES_NOT_EXIST", "No tag with name: absent")
    assert_error(api.http.post("/api/v1/runs/nope/rename", json={"name": "x"}), 404,
                 "RESOURCE_DOES_NOT_EXIST")
    assert_error(api.http.post("/api/v1/runs/delete", json={"run_ids": [run, "nope"]}), 404,
                 "RESOURCE_DOES_NOT_EXIST")
    after = api.http.get(f"/api/v1/runs/{run}").json()
    assert (after["name"], after["lifecycle_stage"], "k" in after["tags"]) == ("keep", "active", False)
    api.http.post("/api/v1/runs/delete", json={"run_ids": [run]})
    assert_error(api.http.post(f"/api/v1/runs/{run}/rename", json={"name": "x"}), 400,
                 "INVALID_PARAMETER_VALUE", "must be in the 'active' state")


def test_delete_and_restore_with_descendants(api: Served, exp: str) -> None:
    root = api.commands.create_run(exp, name="root")
    child = api.commands.create_run(exp, name="child", parent_run_id=root)
    grandchild = api.commands.create_run(exp, name="grandchild",
                                         tags={"mlflow.parentRunId": child})
    lone = api.commands.create_run(exp, name="lone")
    r = api.http.post("/api/v1/runs/delete", json={"run_ids": [root]})
    assert r.json() == {"runs_deleted": 3}
    assert run_ids(api, exp) == {lone}
    assert run_ids(api, exp, "deleted") == {root, child, grandchild}
    assert run_ids(api, exp, "all") == {root, child, grandchild, lone}
    deleted = api.http.get(f"/api/v1/runs/{child}").json()
    assert deleted["lifecycle_stage"] == "deleted" and deleted["deleted_time"] > 0
    r = api.http.post("/api/v1/runs/restore", json={"run_ids": [root], "with_descendants": False})
    assert r.json() == {"runs_restored": 1}
    assert run_ids(api, exp) == {root, lone}
    r = api.http.post("/api/v1/runs/restore", json={"run_ids": [root]})
    assert r.json() == {"runs_restored": 2}
    r = api.http.post("/api/v1/runs/delete", json={"run_ids": [child], "with_descendants": False})
    assert r.json() == {"runs_deleted": 1}
    assert run_ids(api, exp, "deleted") == {child}


def _wait_for_clock_after(t: int) -> None:
    # Deletion times are milliseconds: make the next batch's deletion time strictly later.
    while now_ms() <= t:
        time.sleep(0.001)


def test_bulk_delete_and_restore_hit_the_cap(api: Served, exp: str) -> None:
    t0 = now_ms() - 100_000
    runs = [api.commands.create_run(exp, name=f"b{i}", start_time=t0 + i) for i in range(5)]

    def deleted_time(run: str) -> int:
        return int(api.http.get(f"/api/v1/runs/{run}").json()["deleted_time"])

    delete = f"/api/v1/experiments/{exp}/runs/bulk-delete"
    r = api.http.post(delete, json={"max_timestamp_millis": t0 + 3, "max_runs": 2})
    assert r.json() == {"runs_deleted": 2}
    assert run_ids(api, exp, "deleted") == set(runs[:2])  # oldest first
    _wait_for_clock_after(deleted_time(runs[0]))
    r = api.http.post(delete, json={"max_timestamp_millis": t0 + 3})  # default max_runs 10000
    assert r.json() == {"runs_deleted": 2}
    assert run_ids(api, exp) == {runs[4]}  # created after the timestamp
    t_b = deleted_time(runs[2])
    _wait_for_clock_after(t_b)
    assert api.http.post(delete, json={"max_timestamp_millis": t0 + 10}).json() == {
        "runs_deleted": 1}
    t_c = deleted_time(runs[4])
    assert deleted_time(runs[0]) < t_b < t_c

    restore = f"/api/v1/experiments/{exp}/runs/bulk-restore"
    r = api.http.post(restore, json={"min_timestamp_millis": t_b, "max_runs": 1})
    assert r.json() == {"runs_restored": 1}  # one of runs 2, 3 (deleted at t_b)
    assert len(run_ids(api, exp) & {runs[2], runs[3]}) == 1
    r = api.http.post(restore, json={"min_timestamp_millis": t_c})
    assert r.json() == {"runs_restored": 1}  # run 4 only
    r = api.http.post(restore, json={"min_timestamp_millis": t_b, "max_runs": 10_000})
    assert r.json() == {"runs_restored": 1}  # the other of runs 2, 3
    assert run_ids(api, exp) == {runs[2], runs[3], runs[4]}
    assert run_ids(api, exp, "deleted") == {runs[0], runs[1]}  # deleted before t_b


@pytest.mark.parametrize(("suffix", "body"), [
    ("bulk-delete", {"max_timestamp_millis": 0, "max_runs": 10_001}),
    ("bulk-delete", {"max_timestamp_millis": 0, "max_runs": 0}),
    ("bulk-delete", {"max_timestamp_millis": -1}),
    ("bulk-delete", {}),
    ("bulk-restore", {"min_timestamp_millis": 0, "max_runs": 10_001}),
    ("bulk-restore", {"min_timestamp_millis": "soon"}),
])
def test_bulk_validation(api: Served, exp: str, suffix: str, body: dict) -> None:
    r = api.http.post(f"/api/v1/experiments/{exp}/runs/{suffix}", json=body)
    assert_error(r, 400, "INVALID_PARAMETER_VALUE")


def test_bulk_on_unknown_experiment_is_404(api: Served) -> None:
    r = api.http.post("/api/v1/experiments/nope/runs/bulk-delete",
                      json={"max_timestamp_millis": 0})
    assert_error(r, 404, "RESOURCE_DOES_NOT_EXIST")
