"""The web UI's serving side through HTTP, without a browser or a broker: the shell and its
headers, plotly.js from the installed package, static files, and the UI's read endpoints over
a read model filled by the projection's own ``apply_batch``."""

from __future__ import annotations

import gzip
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import duckdb
import pytest
from runstream.api.app import create_app
from runstream.projections.apply_events import apply_batch, create_read_model
from runstream.read_store import SingleFileStore
from runstream.schemas import (
    ExperimentCreated,
    ExperimentCreatedBody,
    MetricsLogged,
    MetricsLoggedBody,
    ParamsLogged,
    ParamsLoggedBody,
    RunCreated,
    RunCreatedBody,
    new_event,
)
from runstream.settings import Settings

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's notice about httpx, not ours
    from fastapi.testclient import TestClient

T0 = 1_764_000_000_000


def _events() -> list[object]:
    out: list[object] = [new_event(ExperimentCreated, ExperimentCreatedBody(name="e", creation_time_ms=T0),
                                   experiment_id="e1")]

    def run(run_id: str, i: int, parent: str | None = None, r2: float | None = None) -> None:
        out.append(new_event(RunCreated, RunCreatedBody(name=run_id, start_time_ms=T0 + i, parent_run_id=parent),
                             run_id=run_id, experiment_id="e1"))
        out.append(new_event(ParamsLogged, ParamsLoggedBody(params=[{"key": "lr", "value": str(i)}]),
                             run_id=run_id))
        if r2 is not None:
            out.append(new_event(MetricsLogged, MetricsLoggedBody.from_points([("r2", r2, 0, T0)]),
                                 run_id=run_id))

    run("top1", 1, r2=0.9)
    run("top2", 2, r2=0.1)
    run("kid1", 3, parent="top1", r2=0.5)
    run("kid2", 4, parent="top1", r2=0.2)
    run("grandkid", 5, parent="kid1", r2=0.7)
    return out


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    con = duckdb.connect(":memory:")
    create_read_model(con)
    con.execute("BEGIN TRANSACTION")
    apply_batch(con, _events())  # type: ignore[arg-type]
    con.execute("COMMIT")
    node = SimpleNamespace(store=SingleFileStore(con), settings=Settings(data_dir=tmp_path_factory.mktemp("d")),
                           health=lambda: {"status": "ok"})
    with TestClient(create_app(node)) as c:  # type: ignore[arg-type]
        yield c
    con.close()


def test_the_shell_is_served_at_root_with_a_strict_policy(client: TestClient) -> None:
    res = client.get("/")
    assert res.status_code == 200 and res.headers["content-type"].startswith("text/html")
    csp = res.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp.split("style-src")[0]
    assert "{{" not in res.text  # placeholders filled
    assert 'src="/ui/static/app.js"' in res.text
    assert not re.search(r"""(src|href|content)=["']https?:""", res.text)  # nothing from the internet


def test_plotly_comes_from_the_installed_package_gzipped_and_cached(client: TestClient) -> None:
    import plotly

    url = client.get("/").text.split('name="plotly-url" content="')[1].split('"')[0]
    res = client.get(url, headers={"Accept-Encoding": "gzip"})
    assert res.status_code == 200
    assert res.headers["content-encoding"] == "gzip"
    assert "immutable" in res.headers["cache-control"]
    bundle = (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_bytes()
    assert res.content == bundle  # httpx decodes the gzip
    assert len(gzip.compress(bundle)) < len(bundle) / 3
    again = client.get(url, headers={"If-None-Match": res.headers["etag"]})
    assert again.status_code == 304
    # An old version's URL leads to the current one.
    assert client.get("/ui/vendor/plotly-000000000000.min.js", follow_redirects=False).status_code == 307


def test_static_files_and_no_way_out_of_the_web_folder(client: TestClient) -> None:
    assert client.get("/ui/static/pages/runs.js").headers["content-type"].startswith("text/javascript")
    for path in ("/ui/static/../api/ui.py", "/ui/static/%2e%2e/api/ui.py", "/ui/static/nope.js"):
        assert client.get(path).status_code == 404


def test_runs_table_nests_children_and_pages_by_offset(client: TestClient) -> None:
    body = client.get("/api/v1/ui/runs", params={"experiment_ids": "e1", "metrics": "r2"}).json()
    assert body["total"] == 2
    assert [(r["run_id"], r["children"]) for r in body["rows"]] == [("top2", 0), ("top1", 2)]
    flat = client.get("/api/v1/ui/runs", params={"experiment_ids": "e1", "nested": "false",
                                                 "order_by": "metrics.r2 DESC", "offset": 1,
                                                 "limit": 2}).json()
    assert flat["total"] == 5 and [r["run_id"] for r in flat["rows"]] == ["grandkid", "kid1"]
    tree = client.get("/api/v1/ui/runs/top1/subtree", params={"experiment_ids": "e1"}).json()
    assert [(r["run_id"], r["depth"]) for r in tree["rows"]] == [("kid2", 1), ("kid1", 1), ("grandkid", 2)]
    # A child whose parent is filtered out is a top-level row of that search.
    only = client.get("/api/v1/ui/runs", params={"experiment_ids": "e1", "filter": "metrics.r2 > 0.4"}).json()
    assert {r["run_id"] for r in only["rows"]} == {"top1"} and only["rows"][0]["children"] == 1
    auto = client.get("/api/v1/ui/runs", params={"experiment_ids": "e1", "auto_params": "true",
                                                 "auto_metrics": "true"}).json()
    assert auto["columns"] == {"params": ["lr"], "metrics": ["r2"]}
    assert auto["rows"][0]["params"] == {"lr": "2"}


def test_a_malformed_filter_is_a_400_that_says_where(client: TestClient) -> None:
    res = client.get("/api/v1/ui/runs", params={"experiment_ids": "e1", "filter": "metrics.r2 >> 1"})
    assert res.status_code == 400
    assert res.json()["details"]["position"] == 12
    assert "position 12" in res.json()["message"]


def test_select_all_ids_and_csv_of_chosen_runs(client: TestClient) -> None:
    ids = client.get("/api/v1/ui/run-ids", params={"experiment_ids": "e1"}).json()
    assert ids["total"] == 5 and len(ids["run_ids"]) == 5 and not ids["truncated"]
    res = client.post("/api/v1/ui/runs.csv", content="run_ids=top1%2Ckid2&order_by=metrics.r2+DESC",
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert res.status_code == 200 and "attachment" in res.headers["content-disposition"]
    lines = res.text.splitlines()
    assert lines[0] == "Run ID,Name,Source Type,Source Name,User,Status,lr,r2"
    assert [line.split(",")[0] for line in lines[1:]] == ["top1", "kid2"]
    assert client.post("/api/v1/ui/runs.csv", content="run_ids=",
                       headers={"Content-Type": "application/x-www-form-urlencoded"}).status_code == 400


def test_key_catalog_and_experiments_with_counts(client: TestClient) -> None:
    keys = client.get("/api/v1/ui/keys", params={"experiment_ids": "e1"}).json()
    assert keys["params"] == [{"key": "lr", "runs": 5}] and keys["metrics"] == [{"key": "r2", "runs": 5}]
    exps = {e["experiment_id"]: e for e in client.get("/api/v1/ui/experiments").json()["experiments"]}
    assert exps["e1"]["active_runs"] == 5 and exps["e1"]["deleted_runs"] == 0
