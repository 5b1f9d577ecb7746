"""MLflow wire details that need no broker: request fields, proto-JSON types, entity shapes."""

from __future__ import annotations

import json
import math

import pytest
from runstream.api.mlflow_rest import MLFLOW_PREFIXES, ROUTES, build_router
from runstream.api.mlflow_wire import (
    DATASET_TAG_PREFIX,
    Message,
    MlflowError,
    as_double,
    as_int,
    body_message,
    check_name,
    double,
    error_body,
    run_json,
)
from runstream.errors import AlreadyExists, InvalidInput, NotFound, NotReady
from runstream.queries import MetricSummary, RunRecord


def _run(**changes: object) -> RunRecord:
    fields: dict[str, object] = dict(
        run_id="r1", experiment_id="e1", name="n", user_id="u", status="RUNNING", start_time=5,
        end_time=None, lifecycle_stage="active", deleted_time=None, artifact_uri=None,
        source_name=None, source_type=None, entry_point=None, git_commit=None, git_dirty=None,
        parent_run_id=None, has_model=False, python_version=None, packages=[], command_line=[],
        host=None,
    )
    fields.update(changes)
    return RunRecord(**fields)  # type: ignore[arg-type]


def test_proto_json_numbers() -> None:
    assert as_int(5, "x") == 5 and as_int("-12", "x") == -12 and as_int(3.0, "x") == 3
    for bad in (True, 1.5, "1.5", "abc", None, [1]):
        with pytest.raises(InvalidInput, match="parameter 'x'"):
            as_int(bad, "x")
    with pytest.raises(InvalidInput):
        as_int(2**63, "x")
    assert as_double("1.5", "v") == 1.5 and as_double(2, "v") == 2.0
    assert math.isnan(as_double("NaN", "v")) and as_double("-Infinity", "v") == -math.inf
    for bad in (True, "nan", "inf", "abc", None, {}):
        with pytest.raises(InvalidInput):
            as_double(bad, "v")
    assert double(math.nan) == "NaN" and double(math.inf) == "Infinity" and double(1.0) == 1.0


def test_bodies_malformed_double_encoded_and_content_type() -> None:
    assert body_message(b"", None).fields == {}
    assert body_message(json.dumps(json.dumps({"a": 1})).encode(), "application/json").fields == {"a": 1}
    for raw in (b"{bad", b"[1]", b'"x"', b"\xff\xfe", b"1e999999"):
        with pytest.raises(MlflowError) as err:
            body_message(raw, "application/json; charset=utf-8")
        assert err.value.http_status == 400 and err.value.error_code == "INVALID_PARAMETER_VALUE"
    with pytest.raises(MlflowError, match="Content-Type must be one of"):
        body_message(b"{}", "text/plain")


def test_fields_by_proto_name_camel_case_and_run_uuid() -> None:
    msg = Message({"runUuid": "r", "max_results": "7", "ids": ["a"], "status": 3}, from_query=False)
    assert msg.run_id() == "r" and msg.integer("max_results") == 7 and msg.strings("ids") == ["a"]
    assert msg.enum("status", {"RUNNING": 1, "FINISHED": 3}) == "FINISHED"
    with pytest.raises(InvalidInput, match="expected one of"):
        Message({"status": "BOGUS"}, from_query=False).enum("status", {"RUNNING": 1})
    with pytest.raises(InvalidInput, match="given twice"):
        Message({"run_id": "a", "runId": "b"}, from_query=False).run_id()
    with pytest.raises(InvalidInput, match="Missing value for required parameter 'name'"):
        Message({"name": ""}, from_query=False).required_text("name")
    with pytest.raises(InvalidInput, match="Value was of type 'int'"):
        Message({"name": 7}, from_query=False).text("name")
    query = Message({"run_ids": ["a", "b"], "flag": ["true"]}, from_query=True)
    assert query.strings("run_ids") == ["a", "b"] and query.flag("flag") is True


def test_key_names_follow_mlflow() -> None:
    for good in ("loss", "val loss", "a/b", "x:y", "m-1.2_z"):
        assert check_name(good, "key") == good
    for bad, why in (("bad@key", "Names may only contain"), ("../up", "would resolve to"),
                     ("/abs", "would resolve to"), ("a//b", "would resolve to"),
                     ("k" * 251, "maximum length of 250")):
        with pytest.raises(InvalidInput, match=why):
            check_name(bad, "key")


def test_run_json_omits_empty_fields_and_maps_dataset_tags() -> None:
    body = run_json(_run())
    assert body["data"] == {} and body["inputs"] == {} and body["outputs"] == {}
    assert "end_time" not in body["info"]
    assert body["info"]["artifact_uri"] == "mlflow-artifacts:/e1/r1/artifacts"
    entry = {"dataset": {"name": "d", "digest": "x"}}
    body = run_json(_run(
        tags={"t": "1", DATASET_TAG_PREFIX + "abc": json.dumps(entry)},
        metrics={"m": MetricSummary("m", math.nan, 1, 2, None, None, 1)},
    ))
    assert body["data"]["tags"] == [{"key": "t", "value": "1"}]
    assert body["inputs"] == {"dataset_inputs": [entry]}
    assert body["data"]["metrics"] == [{"key": "m", "value": "NaN", "timestamp": 2, "step": 1}]


def test_error_codes_and_statuses() -> None:
    assert error_body(NotFound("x")) == (404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "x"})
    assert error_body(AlreadyExists("x"))[0] == 400
    assert error_body(AlreadyExists("x"))[1]["error_code"] == "RESOURCE_ALREADY_EXISTS"
    assert error_body(InvalidInput("x"))[0] == 400
    assert error_body(NotReady("x"))[0] == 503
    assert error_body(MlflowError("NOT_IMPLEMENTED", "x")) == (
        501, {"error_code": "NOT_IMPLEMENTED", "message": "x"})
    status, body = error_body(RuntimeError("boom"))
    assert status == 500 and body["error_code"] == "INTERNAL_ERROR"


def test_every_route_under_both_prefixes() -> None:
    paths = {(r.path, m) for r in build_router().routes for m in getattr(r, "methods", ())}
    for route in ROUTES:
        for prefix in MLFLOW_PREFIXES:
            for method in route.methods:
                assert (prefix + route.path, method) in paths
    needed = {"/runs/create", "/runs/get", "/runs/update", "/runs/delete", "/runs/restore",
              "/runs/search", "/runs/log-batch", "/runs/log-metric", "/runs/log-parameter",
              "/runs/set-tag", "/runs/delete-tag", "/runs/log-inputs", "/metrics/get-history",
              "/metrics/get-history-bulk-interval", "/experiments/create", "/experiments/get",
              "/experiments/get-by-name", "/experiments/search", "/experiments/update",
              "/experiments/delete", "/experiments/restore", "/experiments/set-experiment-tag",
              "/logged-models/search", "/databricks/runs/delete-runs",
              "/databricks/runs/restore-runs"}
    assert needed <= {r.path for r in ROUTES}


def test_openapi_schema_builds_without_warnings() -> None:
    from fastapi import FastAPI
    from runstream.api import mlflow_artifacts, mlflow_rest

    app = FastAPI()
    app.include_router(mlflow_rest.router)
    app.include_router(mlflow_artifacts.router)
    paths = app.openapi()["paths"]  # warnings are errors here: no duplicate operation ids
    assert "/api/2.0/mlflow/runs/log-batch" in paths
    assert "/api/2.0/mlflow-artifacts/artifacts/{path}" in paths
