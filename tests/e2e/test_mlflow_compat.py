"""The unmodified `mlflow` client against a runstream node over real HTTP (issue #5).

One node per module (real broker from tests/conftest.py, its own topics and data dir), served
by uvicorn on a free port; the tests use the fluent API and MlflowClient as a training script
would, plus a few raw HTTP calls for wire details the client hides.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.entities import ViewType
from mlflow.exceptions import MlflowException

from tests.e2e.mlflow_node import MLFLOW_TEST_ENV, ServedNode, node_settings

pytestmark = pytest.mark.broker


@pytest.fixture(scope="module")
def served(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedNode]:
    node = ServedNode(node_settings(bootstrap, tmp_path_factory.mktemp("mlflow-node")), bootstrap)
    yield node
    node.close()


@pytest.fixture(autouse=True)
def tracking(served: ServedNode, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for key, value in MLFLOW_TEST_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", served.url)
    mlflow.set_tracking_uri(served.url)
    yield served.url
    while mlflow.active_run() is not None:
        mlflow.end_run()


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _post(url: str, path: str, body: object, **kwargs: object) -> httpx.Response:
    return httpx.post(f"{url}/api/2.0/mlflow/{path}", json=body, timeout=30, **kwargs)


def _get(url: str, path: str, params: object = None) -> httpx.Response:
    return httpx.get(f"{url}/api/2.0/mlflow/{path}", params=params, timeout=30)


# ------------------------------------------------------------------------------ experiments


def test_an_experiment_tag_value_goes_up_to_mlflows_20000_characters() -> None:
    client = MlflowClient()
    exp_id = client.create_experiment(_name("long-tag"))
    client.set_experiment_tag(exp_id, "mlflow.note.content", "n" * 20_000)
    assert client.get_experiment(exp_id).tags["mlflow.note.content"] == "n" * 20_000
    with pytest.raises(MlflowException) as err:
        client.set_experiment_tag(exp_id, "too.long", "n" * 20_001)
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"
    assert "too.long" not in client.get_experiment(exp_id).tags


def test_experiments_by_name_rename_tags_delete_restore() -> None:
    client = MlflowClient()
    name = _name("exp")
    assert client.get_experiment_by_name(name) is None
    exp = mlflow.set_experiment(name)
    assert exp.name == name and exp.lifecycle_stage == "active"
    assert exp.artifact_location == f"mlflow-artifacts:/{exp.experiment_id}"
    assert mlflow.set_experiment(name).experiment_id == exp.experiment_id
    assert client.get_experiment(exp.experiment_id).name == name
    with pytest.raises(MlflowException) as err:
        client.create_experiment(name)
    assert err.value.error_code == "RESOURCE_ALREADY_EXISTS"

    client.set_experiment_tag(exp.experiment_id, "team", "vision")
    client.set_experiment_tag(exp.experiment_id, "team", "nlp")
    client.set_experiment_tag(exp.experiment_id, "scratch", "x")
    client.delete_experiment_tag(exp.experiment_id, "scratch")
    assert client.get_experiment(exp.experiment_id).tags == {"team": "nlp"}
    with pytest.raises(MlflowException) as err:
        client.delete_experiment_tag(exp.experiment_id, "scratch")
    assert err.value.error_code == "RESOURCE_DOES_NOT_EXIST"

    found = client.search_experiments(filter_string=f"name = '{name}'")
    assert [e.experiment_id for e in found] == [exp.experiment_id]
    assert client.search_experiments(filter_string="tags.team = 'nlp'")

    new_name = _name("renamed")
    client.rename_experiment(exp.experiment_id, new_name)
    assert client.get_experiment_by_name(new_name).experiment_id == exp.experiment_id
    assert client.get_experiment_by_name(name) is None

    client.delete_experiment(exp.experiment_id)
    assert client.get_experiment(exp.experiment_id).lifecycle_stage == "deleted"
    with pytest.raises(MlflowException, match="deleted experiment"):
        mlflow.set_experiment(new_name)
    deleted = client.search_experiments(view_type=ViewType.DELETED_ONLY)
    assert exp.experiment_id in {e.experiment_id for e in deleted}
    client.restore_experiment(exp.experiment_id)
    assert mlflow.set_experiment(new_name).lifecycle_stage == "active"


def test_default_experiment_zero() -> None:
    exp = MlflowClient().get_experiment("0")
    assert exp.name == "Default" and exp.lifecycle_stage == "active"
    run = MlflowClient().create_run("0")
    assert run.info.experiment_id == "0"
    assert run.info.artifact_uri == f"mlflow-artifacts:/0/{run.info.run_id}/artifacts"


# ------------------------------------------------------------------------------------- runs


def test_run_params_metrics_tags_and_system_tags(served: ServedNode) -> None:
    exp = mlflow.set_experiment(_name("runs"))
    with mlflow.start_run(run_name="first", description="a *note*") as run:
        run_id = run.info.run_id
        mlflow.log_param("lr", 0.01)
        mlflow.log_params({"epochs": 10, "batch size": 32})
        # Out of order, as several workers of one job log: latest = greatest step.
        for step, value in ((3, 0.3), (1, 0.9), (2, 0.5), (0, 1.2)):
            mlflow.log_metric("loss", value, step=step)
        mlflow.log_metrics({"acc": 0.7, "f1": 0.6}, step=5)
        mlflow.set_tag("team", "vision")
        mlflow.set_tags({"a": "1", "b": "2"})
        # Same param, same value: accepted (idempotent), as MLflow.
        mlflow.log_param("lr", 0.01)
        # Visible to a search right away: every write returns after its projector applied it.
        seen = mlflow.search_runs([exp.experiment_id], filter_string="metrics.loss < 0.4")
        assert list(seen["run_id"]) == [run_id]
        assert seen["metrics.loss"][0] == pytest.approx(0.3)

    got = MlflowClient().get_run(run_id)
    assert got.info.status == "FINISHED" and got.info.end_time >= got.info.start_time > 0
    assert got.info.run_name == "first" and got.info.lifecycle_stage == "active"
    assert got.data.params == {"lr": "0.01", "epochs": "10", "batch size": "32"}
    assert got.data.metrics == {"loss": 0.3, "acc": 0.7, "f1": 0.6}
    tags = got.data.tags
    assert tags["team"] == "vision" and tags["a"] == "1" and tags["b"] == "2"
    assert tags["mlflow.runName"] == "first"
    assert tags["mlflow.note.content"] == "a *note*"
    assert tags["mlflow.source.type"] == "LOCAL"
    # System tags land in the run's columns too (user, source, git commit when in a repo).
    assert got.info.user_id == tags["mlflow.user"]
    served_run = _read_model_run(served, run_id)
    assert served_run["user_id"] == tags["mlflow.user"]
    assert served_run["source_name"] == tags["mlflow.source.name"]
    assert served_run["source_type"] == "LOCAL"
    assert served_run["git_commit"] == tags.get("mlflow.source.git.commit")


def _read_model_run(served: ServedNode, run_id: str) -> dict[str, object]:
    with served.node.store.reading() as cur:
        cur.execute("SELECT * FROM runs WHERE run_id = ?", [run_id])
        cols = [d[0] for d in cur.description]
        row = cur.fetchone()
    assert row is not None
    return dict(zip(cols, row, strict=True))


def test_tags_change_after_the_run_ended_and_rename() -> None:
    client = MlflowClient()
    mlflow.set_experiment(_name("tags"))
    with mlflow.start_run() as run:
        mlflow.set_tag("stage", "train")
    run_id = run.info.run_id
    # A run created without a name gets one, as MLflow's adjective-animal-NNN.
    assert run.info.run_name and client.get_run(run_id).data.tags["mlflow.runName"] == run.info.run_name
    client.set_tag(run_id, "stage", "evaluated")
    client.set_tag(run_id, "reviewer", "ada")
    client.delete_tag(run_id, "reviewer")
    client.update_run(run_id, name="renamed-run")
    got = client.get_run(run_id)
    assert got.data.tags["stage"] == "evaluated"
    assert "reviewer" not in got.data.tags
    assert got.info.run_name == "renamed-run" and got.data.tags["mlflow.runName"] == "renamed-run"
    assert got.info.status == "FINISHED"
    # Setting the mlflow.runName tag renames the run too (observed MLflow behaviour).
    client.set_tag(run_id, "mlflow.runName", "by-tag")
    assert client.get_run(run_id).info.run_name == "by-tag"
    with pytest.raises(MlflowException) as err:
        client.delete_tag(run_id, "never-set")
    assert err.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    # Resuming a finished run (start_run(run_id=...)) moves it back to RUNNING.
    with mlflow.start_run(run_id=run_id):
        assert client.get_run(run_id).info.status == "RUNNING"
    assert client.get_run(run_id).info.status == "FINISHED"


def test_nested_runs(served: ServedNode) -> None:
    exp = mlflow.set_experiment(_name("nested"))
    with mlflow.start_run(run_name="parent") as parent:
        with mlflow.start_run(run_name="child-a", nested=True) as a:
            mlflow.log_metric("loss", 0.5)
        with mlflow.start_run(run_name="child-b", nested=True) as b:
            mlflow.log_metric("loss", 0.7)
    pid = parent.info.run_id
    children = mlflow.search_runs(
        [exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{pid}'",
        order_by=["attributes.run_name"], output_format="list",
    )
    assert [r.info.run_id for r in children] == [a.info.run_id, b.info.run_id]
    assert _read_model_run(served, a.info.run_id)["parent_run_id"] == pid
    # runstream's superset: the parent is an attribute too.
    by_attr = mlflow.search_runs([exp.experiment_id], filter_string=f"parent_run_id = '{pid}'")
    assert len(by_attr) == 2


# ----------------------------------------------------------------------------------- search


def test_search_filters_order_by_and_pages() -> None:
    client = MlflowClient()
    exp = mlflow.set_experiment(_name("search"))
    eid = exp.experiment_id
    ids = {}
    for name, lr, loss, team in (("alpha", "0.01", 0.5, "vision"), ("beta", "0.1", 1.5, "nlp"),
                                 ("gamma", "0.01", -2.0, None), ("delta", "0.3", 0.9, "vision"),
                                 ("eps", "0.2", 0.1, "nlp")):
        with mlflow.start_run(run_name=name) as run:
            mlflow.log_param("lr", lr)
            mlflow.log_metric("loss", loss, step=1)
            if team:
                mlflow.set_tag("team", team)
        ids[name] = run.info.run_id

    def names(filter_string: str = "", order_by: list[str] | None = None) -> list[str]:
        runs = client.search_runs([eid], filter_string, order_by=order_by)
        return [r.info.run_name for r in runs]

    assert names("metrics.loss < 1", ["metrics.loss DESC"]) == ["delta", "alpha", "eps", "gamma"]
    assert names("params.lr = '0.01' AND metrics.loss > 0") == ["alpha"]
    assert names("tags.team = 'vision'", ["metrics.loss"]) == ["alpha", "delta"]
    assert names("tags.team IS NULL") == ["gamma"]
    assert names("attributes.run_name LIKE 'al%'") == ["alpha"]
    assert names("params.lr ILIKE '0.0%'", ["run_name"]) == ["alpha", "gamma"]
    assert names(f"attributes.run_id IN ('{ids['beta']}', '{ids['eps']}')", ["run_name"]) == ["beta", "eps"]
    # Beyond MLflow: OR, NOT, parentheses, MIN/MAX.
    assert names("metrics.loss > 1 OR tags.team = 'nlp'", ["run_name"]) == ["beta", "eps"]
    assert names("NOT (tags.team = 'vision' OR metrics.loss < 0)", ["run_name"]) == ["beta", "eps"]
    assert names("MAX(metrics.loss) >= 1.5") == ["beta"]
    # Default order: newest first.
    assert names() == ["eps", "delta", "gamma", "beta", "alpha"]

    # Pages: MlflowClient hands the token back; every run once, in order.
    seen: list[str] = []
    token = None
    while True:
        page = client.search_runs([eid], order_by=["metrics.loss ASC"], max_results=2, page_token=token)
        seen += [r.info.run_name for r in page]
        token = page.token
        if not token:
            break
    assert seen == ["gamma", "eps", "alpha", "delta", "beta"]

    df = mlflow.search_runs([eid], order_by=["params.lr DESC"])
    assert list(df["tags.mlflow.runName"]) == ["delta", "eps", "beta", "gamma", "alpha"]
    assert list(mlflow.search_runs(experiment_names=[exp.name], max_results=2)["run_id"]) == [
        ids["eps"], ids["delta"]]


def test_metric_history_out_of_order_nan_and_inf() -> None:
    client = MlflowClient()
    mlflow.set_experiment(_name("history"))
    with mlflow.start_run() as run:
        run_id = run.info.run_id
        points = [(2, 100, 1.0), (1, 999, 2.0), (2, 100, 0.5), (2, 50, 0.7)]
        for step, ts, value in points:
            client.log_metric(run_id, "lat", value, timestamp=ts, step=step)
        client.log_metric(run_id, "lat", 1.0, timestamp=100, step=2)  # exact duplicate: dropped
        client.log_metric(run_id, "odd", float("nan"), step=1)
        client.log_metric(run_id, "odd", float("inf"), step=0)
        client.log_batch(run_id, metrics=[
            mlflow.entities.Metric("big", float(i), 1_000 + i, 1000 - i) for i in range(1000)])
    history = client.get_metric_history(run_id, "lat")
    # Every point, ordered by (timestamp, step, value), as MLflow's get-history.
    assert [(m.timestamp, m.step, m.value) for m in history] == [
        (50, 2, 0.7), (100, 2, 0.5), (100, 2, 1.0), (999, 1, 2.0)]
    latest = client.get_run(run_id).data.metrics
    assert latest["lat"] == 1.0  # step first, then timestamp, then value
    assert latest["big"] == 0.0  # step 1000 is the greatest step
    odd = {m.step: m.value for m in client.get_metric_history(run_id, "odd")}
    assert math.isnan(odd[1]) and odd[0] == math.inf  # kept whole, not clamped to 1.8e308
    assert math.isnan(latest["odd"])
    assert len(client.get_metric_history(run_id, "big")) == 1000
    assert client.get_metric_history(run_id, "never-logged") == []


def test_metric_history_bulk_interval_samples_like_mlflow(tracking: str) -> None:
    client = MlflowClient()
    mlflow.set_experiment(_name("bulk"))
    runs = []
    for n in (10, 300):
        with mlflow.start_run() as run:
            client.log_batch(run.info.run_id, metrics=[
                mlflow.entities.Metric("m", float(i), 1000 + i, i) for i in range(n)])
        runs.append(run.info.run_id)
    r = httpx.get(f"{tracking}/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval",
                  params={"run_ids": runs, "metric_key": "m", "max_results": 50}, timeout=30)
    assert r.status_code == 200, r.text
    by_run: dict[str, list[int]] = {}
    for m in r.json()["metrics"]:
        by_run.setdefault(m["run_id"], []).append(m["step"])
    assert by_run[runs[0]] == list(range(10))
    steps = by_run[runs[1]]
    assert len(steps) == 50 and steps[0] == 0 and steps[-1] == 299 and steps == sorted(steps)
    r = httpx.get(f"{tracking}/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval",
                  params={"run_ids": runs, "metric_key": "m", "start_step": 5}, timeout=30)
    assert r.status_code == 400 and r.json()["error_code"] == "INVALID_PARAMETER_VALUE"


# -------------------------------------------------------------------------- delete, restore


def test_delete_restore_and_the_deleted_view(tracking: str) -> None:
    client = MlflowClient()
    exp = mlflow.set_experiment(_name("delete"))
    eid = exp.experiment_id
    with mlflow.start_run(run_name="keep") as keep:
        pass
    with mlflow.start_run(run_name="drop") as drop:
        mlflow.log_metric("m", 1.0)

    def view(vt: int) -> set[str]:
        return {r.info.run_name for r in client.search_runs([eid], run_view_type=vt)}

    mlflow.delete_run(drop.info.run_id)
    mlflow.delete_run(drop.info.run_id)  # idempotent, as MLflow
    assert view(ViewType.ACTIVE_ONLY) == {"keep"}
    assert view(ViewType.DELETED_ONLY) == {"drop"}
    assert view(ViewType.ALL) == {"keep", "drop"}
    got = client.get_run(drop.info.run_id)  # reads still work on a deleted run
    assert got.info.lifecycle_stage == "deleted"
    assert [m.value for m in client.get_metric_history(drop.info.run_id, "m")] == [1.0]
    with pytest.raises(MlflowException, match="must be in the 'active' state") as err:
        client.log_metric(drop.info.run_id, "m", 2.0)
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"
    with pytest.raises(MlflowException, match="deleted state"):
        mlflow.start_run(run_id=drop.info.run_id)
    client.restore_run(drop.info.run_id)
    client.restore_run(drop.info.run_id)
    assert view(ViewType.ACTIVE_ONLY) == {"keep", "drop"}
    assert view(ViewType.DELETED_ONLY) == set()

    # Databricks' bulk endpoints: delete by creation time, restore by deletion time.
    cutoff = keep.info.start_time
    r = _post(tracking, "databricks/runs/delete-runs",
              {"experiment_id": eid, "max_timestamp_millis": cutoff})
    assert r.status_code == 200 and r.json() == {"runs_deleted": 1}, r.text
    assert view(ViewType.DELETED_ONLY) == {"keep"}
    r = _post(tracking, "databricks/runs/restore-runs",
              {"experiment_id": eid, "min_timestamp_millis": 0, "max_runs": 10})
    assert r.json() == {"runs_restored": 1}
    r = _post(tracking, "databricks/runs/delete-runs",
              {"experiment_id": eid, "max_timestamp_millis": cutoff, "max_runs": 10001})
    assert r.status_code == 400 and r.json()["error_code"] == "INVALID_PARAMETER_VALUE"


# -------------------------------------------------------------------------------- artifacts


def test_artifacts_up_and_down(tmp_path: Path, tracking: str, served: ServedNode) -> None:
    client = MlflowClient()
    mlflow.set_experiment(_name("artifacts"))
    src = tmp_path / "src"
    (src / "plots" / "deep").mkdir(parents=True)
    (src / "notes.txt").write_text("hello runstream\n")
    (src / "plots" / "a.csv").write_text("x,y\n1,2\n")
    (src / "plots" / "deep" / "b.bin").write_bytes(bytes(range(256)) * 1000)
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(src / "notes.txt"))
        mlflow.log_artifacts(str(src / "plots"), artifact_path="plots")
        mlflow.log_text("text body", "inline/t.txt")
    run_id = run.info.run_id
    root = client.list_artifacts(run_id)
    assert [(f.path, f.is_dir, f.file_size) for f in root] == [
        ("inline", True, None), ("notes.txt", False, 16), ("plots", True, None)]
    plots = client.list_artifacts(run_id, "plots")
    assert [(f.path, f.is_dir) for f in plots] == [("plots/a.csv", False), ("plots/deep", True)]
    assert client.list_artifacts(run_id, "plots/a.csv") == []

    out = Path(mlflow.artifacts.download_artifacts(run_id=run_id, dst_path=str(tmp_path / "d1")))
    assert (out / "notes.txt").read_text() == "hello runstream\n"
    assert (out / "plots" / "deep" / "b.bin").read_bytes() == bytes(range(256)) * 1000
    one = client.download_artifacts(run_id, "plots/a.csv", str(tmp_path / "d2"))
    assert Path(one).read_text() == "x,y\n1,2\n"
    assert mlflow.artifacts.load_text(f"runs:/{run_id}/inline/t.txt") == "text body"

    # Every upload is an artifact.logged event: size and sha256 in the read model.
    with served.node.store.reading() as cur:
        rows = dict(cur.execute(
            "SELECT path, size FROM artifacts WHERE run_id = ?", [run_id]).fetchall())
    assert rows == {"notes.txt": 16, "plots/a.csv": 8, "plots/deep/b.bin": 256_000,
                    "inline/t.txt": 9}
    # Paths that would leave the run are refused.
    bad = httpx.put(f"{tracking}/api/2.0/mlflow-artifacts/artifacts/x/{run_id}/artifacts/../../e",
                    content=b"x", timeout=30)
    assert bad.status_code in (400, 404)
    missing_file = httpx.get(
        f"{tracking}/api/2.0/mlflow-artifacts/artifacts/{run.info.experiment_id}/{run_id}/artifacts/nope",
        timeout=30)
    assert missing_file.status_code == 404
    assert missing_file.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"


# ----------------------------------------------------------------------------------- errors


def test_errors_unknown_run_changed_param_malformed_filter() -> None:
    client = MlflowClient()
    exp = mlflow.set_experiment(_name("errors"))
    with pytest.raises(MlflowException) as err:
        client.get_run("0" * 32)
    assert err.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    with mlflow.start_run() as run:
        mlflow.log_param("p", "1")
        with pytest.raises(MlflowException) as err:
            mlflow.log_param("p", "2")
        assert err.value.error_code == "INVALID_PARAMETER_VALUE"
        assert "Changing param values is not allowed" in err.value.message
        assert "value='1'" in err.value.message and "'2'" in err.value.message
        with pytest.raises(MlflowException) as err:
            mlflow.log_params({"q": "1", "p": "3"})  # refused as a whole
        assert err.value.error_code == "INVALID_PARAMETER_VALUE"
    assert client.get_run(run.info.run_id).data.params == {"p": "1"}
    for bad in ("metrics.loss <<< 1", "params.lr = 0.01 AND (", "foo.bar = 'x'"):
        with pytest.raises(MlflowException) as err:
            mlflow.search_runs([exp.experiment_id], filter_string=bad)
        assert err.value.error_code == "INVALID_PARAMETER_VALUE", bad
        assert "position" in err.value.message or "Invalid" in err.value.message
    with pytest.raises(MlflowException) as err:
        client.search_runs([exp.experiment_id], order_by=["metrics.a DESC", "metrics.a ASC"])
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"  # MLflow: a 500 its client retries


def test_validation_limits_are_4xx_never_silent(tracking: str) -> None:
    client = MlflowClient()
    mlflow.set_experiment(_name("limits"))
    with mlflow.start_run() as run:
        run_id = run.info.run_id
    # Over-long values are refused whole, not truncated as MLflow does by default.
    with pytest.raises(MlflowException) as err:
        client.log_param(run_id, "long", "x" * 6001)
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"
    with pytest.raises(MlflowException):
        client.set_tag(run_id, "long", "x" * 8001)
    client.set_tag(run_id, "max", "y" * 8000)
    assert client.get_run(run_id).data.tags["max"] == "y" * 8000
    with pytest.raises(MlflowException, match="Names may only contain"):
        client.log_metric(run_id, "bad@key", 1.0)
    with pytest.raises(MlflowException, match="would resolve to"):
        client.log_param(run_id, "../up", "1")
    with pytest.raises(MlflowException, match="exceeds the maximum length of 250"):
        client.set_tag(run_id, "k" * 251, "v")
    with pytest.raises(MlflowException, match="exceeds the maximum length of 500"):
        client.create_experiment("n" * 501)

    def post(path: str, body: object, **kw: object) -> httpx.Response:
        return _post(tracking, path, body, **kw)

    cases = [
        post("runs/log-batch", {"run_id": run_id, "metrics": [
            {"key": "m", "value": 1, "timestamp": 1, "step": i} for i in range(1001)]}),
        post("runs/log-batch", {"run_id": run_id, "params": [
            {"key": f"p{i}", "value": "1"} for i in range(101)]}),
        post("runs/log-batch", {"run_id": run_id, "params": [
            {"key": "dup", "value": "1"}, {"key": "dup", "value": "2"}]}),
        post("runs/log-batch", {"run_id": run_id, "metrics": [{"key": "m", "value": 1}]}),
        post("runs/log-metric", {"run_id": run_id, "key": "m", "value": 1, "timestamp": -1}),
        post("runs/log-metric", {"run_id": run_id, "key": "m", "value": "abc", "timestamp": 1}),
        post("runs/log-metric", {"run_id": run_id, "key": "m", "value": True, "timestamp": 1}),
        post("runs/update", {"run_id": run_id, "status": "BOGUS"}),
        post("runs/search", {"experiment_ids": ["0"], "run_view_type": "BOGUS"}),
        post("runs/search", {"experiment_ids": ["0"], "max_results": 0}),
        post("runs/search", {"experiment_ids": ["0"], "max_results": 50001}),
        post("runs/search", {"experiment_ids": ["0"], "page_token": "garbage"}),
        post("runs/search", {"experiment_ids": "0"}),
        post("runs/create", {"experiment_id": "0", "run_name": "a",
                             "tags": [{"key": "mlflow.runName", "value": "b"}]}),
        post("runs/search", None, content=b"{not json", headers={"Content-Type": "application/json"}),
        post("runs/search", None, content=b"[1, 2]", headers={"Content-Type": "application/json"}),
        post("runs/search", None, content=b"{}", headers={"Content-Type": "text/plain"}),
        post("experiments/create", {"name": ""}),
        post("experiments/create", {"name": 7}),
        post("runs/log-parameter", {"run_id": run_id, "runId": run_id, "key": "k", "value": "v"}),
        post("runs/log-metric", {"run_id": run_id, "key": "m", "value": 1, "timestamp": 1,
                                 "model_id": "abc"}),
    ]
    for r in cases:
        assert r.status_code == 400, (r.request.content[:200], r.status_code, r.text)
        assert r.json()["error_code"] == "INVALID_PARAMETER_VALUE", r.text
    assert client.get_run(run_id).data.params == {}  # nothing of the refused batches landed


def test_wire_format_details(tracking: str) -> None:
    mlflow.set_experiment(_name("wire"))
    with mlflow.start_run() as run:
        mlflow.log_metric("m", 1.0)
    run_id = run.info.run_id
    body = _get(tracking, "runs/get", {"run_id": run_id}).json()["run"]
    assert body["info"]["run_id"] == body["info"]["run_uuid"] == run_id
    assert body["inputs"] == {} and body["outputs"] == {}
    assert isinstance(body["info"]["start_time"], int)
    assert "params" not in body["data"]  # empty lists are left out
    # The deprecated run_uuid alone is accepted.
    assert _get(tracking, "runs/get", {"run_uuid": run_id}).status_code == 200
    assert _post(tracking, "runs/search", {"experiment_ids": []}).json() == {}
    assert _post(tracking, "runs/search", {"experiment_ids": ["no-such"]}).json() == {}
    assert _get(tracking, "metrics/get-history",
                {"run_id": run_id, "metric_key": "none"}).json() == {}
    # Enums by number, int64 as strings, double-encoded JSON bodies.
    r = _post(tracking, "runs/search", {"experiment_ids": [run.info.experiment_id],
                                        "run_view_type": 3, "max_results": "5"})
    assert [x["info"]["run_id"] for x in r.json()["runs"]] == [run_id]
    r = httpx.post(f"{tracking}/api/2.0/mlflow/runs/log-metric", timeout=30,
                   content=json.dumps(json.dumps(
                       {"run_id": run_id, "key": "n", "value": "NaN", "timestamp": "5"})),
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 200 and r.json() == {}
    hist = _get(tracking, "metrics/get-history", {"run_id": run_id, "metric_key": "n"}).json()
    assert hist["metrics"][0]["value"] == "NaN" and hist["metrics"][0]["timestamp"] == 5
    # Unknown routes and wrong methods are JSON errors the client understands.
    r = _post(tracking, "no/such/endpoint", {})
    assert r.status_code == 404 and r.json()["error_code"] == "ENDPOINT_NOT_FOUND"
    r = _get(tracking, "runs/search")
    assert r.status_code == 405
    assert _post(tracking, "logged-models/search", {"experiment_ids": ["0"]}).json() == {}
    info = httpx.get(f"{tracking}/api/3.0/mlflow/server-info", timeout=30).json()
    assert info["multipart_uploads_enabled"] is False
    # The UI's prefix serves the same handlers.
    r = httpx.get(f"{tracking}/ajax-api/2.0/mlflow/runs/get", params={"run_id": run_id}, timeout=30)
    assert r.json()["run"]["info"]["run_id"] == run_id


# mlflow 3.17's digest of a pandas frame calls DataFrame.all positionally (pandas 3 warns).
@pytest.mark.filterwarnings("ignore:Starting with pandas version 4.0")
def test_log_inputs_are_kept_as_dataset_inputs() -> None:
    import pandas as pd

    mlflow.set_experiment(_name("inputs"))
    df = pd.DataFrame({"x": [1, 2, 3], "y": [0.1, 0.2, 0.3]})
    dataset = mlflow.data.from_pandas(df, name="train-set")
    with mlflow.start_run() as run:
        mlflow.log_input(dataset, context="training")
        mlflow.log_input(dataset, context="training")  # the same input once
    got = MlflowClient().get_run(run.info.run_id)
    inputs = got.inputs.dataset_inputs
    assert len(inputs) == 1
    assert inputs[0].dataset.name == "train-set" and inputs[0].dataset.digest == dataset.digest
    assert {t.key: t.value for t in inputs[0].tags}["mlflow.data.context"] == "training"
    assert not any(k.startswith("mlflow.runstream.") for k in got.data.tags)


# ------------------------------------------------------------------------------ concurrency

_SET_EXPERIMENT_PROCS = 20

_RANKS = textwrap.dedent("""
    import multiprocessing as mp
    import os
    import sys

    import mlflow

    def rank(barrier, name, out):
        barrier.wait()
        out.put(mlflow.set_experiment(name).experiment_id)

    if __name__ == "__main__":
        name, n = sys.argv[1], int(sys.argv[2])
        ctx = mp.get_context("fork")
        barrier, out = ctx.Barrier(n), ctx.Queue()
        procs = [ctx.Process(target=rank, args=(barrier, name, out)) for _ in range(n)]
        for p in procs:
            p.start()
        ids = [out.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(timeout=60)
        print(" ".join(ids))
        sys.exit(max(p.exitcode or 0 for p in procs))
""")


def test_twenty_processes_set_one_new_experiment(tracking: str, tmp_path: Path) -> None:
    """Twenty processes (forked after one mlflow import, released together by a barrier) call
    set_experiment with one new name: all end with the same experiment, and only one exists."""
    name = _name("ranks")
    script = tmp_path / "ranks.py"
    script.write_text(_RANKS)
    env = {**os.environ, **MLFLOW_TEST_ENV, "MLFLOW_TRACKING_URI": tracking}
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, str(script), name, str(_SET_EXPERIMENT_PROCS)],
                          capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ids = proc.stdout.split()
    assert len(ids) == _SET_EXPERIMENT_PROCS and len(set(ids)) == 1, (ids, proc.stderr[-2000:])
    found = MlflowClient().search_experiments(filter_string=f"name = '{name}'",
                                              view_type=ViewType.ALL)
    assert [e.experiment_id for e in found] == [ids[0]]
    assert time.monotonic() - t0 < 120


def test_create_run_on_a_lagging_node_answers_once_and_creates_one_run(
    bootstrap: str, tmp_path: Path
) -> None:
    """A node whose projector is behind cannot show the new run in time. A 503 would make
    the mlflow client retry and create a run per retry; the run as published is returned."""
    settings = node_settings(bootstrap, tmp_path / "lagging", read_your_writes_timeout_s=0.3)
    lagging = ServedNode(settings, bootstrap)
    try:
        lagging.node.projector.stop()
        run = MlflowClient(tracking_uri=lagging.url).create_run("0", run_name="while-lagging", tags={"k": "v"})
        assert run.info.run_name == "while-lagging" and run.info.status == "RUNNING"
        assert run.data.tags["k"] == "v"
    finally:
        lagging.close()
    # Another node on the same log, caught up, finds exactly that run.
    from runstream.node import QueryNode

    other = QueryNode.open(settings.model_copy(update={"data_dir": tmp_path / "other"}), bootstrap)
    try:
        query = "SELECT run_id FROM runs WHERE name = 'while-lagging'"
        deadline = time.monotonic() + 60
        found: list = []
        while not found and time.monotonic() < deadline:
            time.sleep(0.2)
            with other.store.reading() as cur:
                found = cur.execute(query).fetchall()
        time.sleep(1)  # a duplicate would be right behind it on the same partition
        with other.store.reading() as cur:
            assert cur.execute(query).fetchall() == [(run.info.run_id,)]
    finally:
        other.close()
