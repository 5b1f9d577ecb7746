"""The web UI end to end: a node on a real broker, its pages in headless Debian chromium.

Data is made through the node's commands (events on the log, applied by its projector), never
written into DuckDB. Each test uses runs of its own so the order of tests does not matter.
Screenshots of every page land in ``test-artifacts/`` (gitignored) for a person to look at.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from runstream import queries
from runstream.api.app import create_app
from runstream.commands import Commands
from runstream.deploy.brokers import free_port
from runstream.node import QueryNode
from runstream.settings import Settings

pytestmark = [pytest.mark.broker, pytest.mark.browser]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-artifacts"
VIEWPORT = {"width": 1440, "height": 900}
TIMEOUT_MS = 15_000


# ------------------------------------------------------------------------------------------
# Harness (also used by tests/bench/test_ui_bench.py)
# ------------------------------------------------------------------------------------------


def require_chromium() -> None:
    """Skip (not fail) where the browser or its driver is missing."""
    if not CHROMIUM.exists():
        pytest.skip("chromium is not installed at /usr/bin/chromium (apt-get install -y chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("playwright (the test extra) is not installed")


@contextmanager
def browser_session() -> Iterator[Any]:
    """Headless Debian chromium through Playwright (never a downloaded browser)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def serve(node: Any) -> Iterator[str]:
    """create_app(node) on a free loopback port in a background thread; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(create_app(node), host="127.0.0.1", port=port, log_level="warning",
                            access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="ui-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def screenshot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"ui-{name}.png"), full_page=True)


def png(width: int = 160, height: int = 100) -> bytes:
    """A small gradient PNG, written by hand (no imaging library needed)."""
    rows = b"".join(
        b"\x00" + bytes(v for x in range(width) for v in (x * 255 // width, y * 255 // height, 200))
        for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


@dataclass
class Seeder:
    """Makes experiments, runs, metrics, params, tags and artifacts through ``Commands``."""

    node: QueryNode
    experiments: dict[str, str] = field(default_factory=dict)
    runs: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.commands = Commands(self.node)
        self.t0 = int(time.time() * 1000) - 3_600_000

    def experiment(self, name: str) -> str:
        self.experiments[name] = self.commands.create_experiment(name)
        return self.experiments[name]

    def run(
        self, exp_id: str, name: str, *, params: dict[str, str] | None = None,
        metrics: dict[str, list[float]] | None = None, tags: dict[str, str] | None = None,
        parent: str | None = None, status: str = "FINISHED", offset_s: int = 0,
        user: str = "ada",
    ) -> str:
        start = self.t0 + offset_s * 1000
        run_id = self.commands.create_run(
            exp_id, name=name, user=user, start_time=start, parent_run_id=parent,
            source_name="train.py", source_type="LOCAL", git_commit="3f2c1e9a" * 5,
            git_remote="https://example.invalid/team/model.git",
            python_version="3.11.9", packages=["numpy==2.1.0", "scikit-learn==1.5.2"],
            command_line=["python", "train.py", "--alpha", "0.5"], tags=tags or {},
        )
        points = [
            (key, value, step, start + 1000 * step)
            for key, values in (metrics or {}).items() for step, value in enumerate(values)
        ]
        self.commands.log_batch(run_id, metrics=points, params=params or {})
        if status != "RUNNING":
            self.commands.update_run(run_id, status=status, end_time=start + 90_000)
        self.runs[name] = run_id
        return run_id

    def artifact(self, exp_id: str, run_id: str, path: str, data: bytes) -> None:
        file = self.node.settings.artifacts_dir / exp_id / run_id / "artifacts" / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(data)
        self.commands.log_artifact(run_id, path, len(data), hashlib.sha256(data).hexdigest())


def _curve(last: float, steps: int = 12) -> list[float]:
    """A rising history that ends exactly at ``last``."""
    return [last * (1 - 0.8 ** (s + 1)) / (1 - 0.8 ** steps) for s in range(steps)]


def seed(s: Seeder) -> None:
    a = s.experiment("ui-regression")
    b = s.experiment("ui-other")
    for i, (name, r2, alpha, enet, solver) in enumerate([
        ("ridge-a", 0.45, "0.1", "0.0", "lbfgs"),
        ("ridge-b", 0.82, "1.0", "0.0", "saga"),
        ("lasso-a", 0.12, "0.1", "1.0", "saga"),
        ("lasso-b", 0.29, "10.0", "1.0", "lbfgs"),
        ("enet", 0.31, "1.0", "0.5", "saga"),
    ]):
        s.run(a, name, offset_s=i * 60,
              params={"alpha": alpha, "elasticNetParam": enet, "solver": solver, "max_iter": "100"},
              metrics={"r2": _curve(r2), "rmse": [3 - 2 * r2 + 1 / (k + 1) for k in range(20)],
                       "avg_areaUnderROC": [0.5 + r2 / 2]},
              tags={"estimator_name": "RandomForestRegressor" if i % 2 else "LinearRegression"})
    sweep = s.run(a, "sweep", offset_s=400, params={"kind": "sweep"})
    s.run(a, "trial-1", parent=sweep, offset_s=410, metrics={"r2": [0.2]})
    t2 = s.run(a, "trial-2", parent=sweep, offset_s=420, metrics={"r2": [0.25]})
    s.run(a, "trial-2a", parent=t2, offset_s=430, metrics={"r2": [0.05]})
    s.run(b, "other-1", offset_s=500,
          params={"alpha": "2.0", "elasticNetParam": "0.9", "max_iter": "100"},
          metrics={"r2": _curve(0.6)}, user="grace")
    s.run(b, "other-2", offset_s=510, params={"alpha": "5.0", "elasticNetParam": "0.2"},
          metrics={"r2": _curve(0.4)}, user="grace")
    s.run(b, "tag-me", offset_s=520, tags={"team": "vision", "color": "blue"},
          metrics={"loss": [1.0, 0.5]})
    live = s.run(b, "live-run", offset_s=530, status="RUNNING",
                 metrics={"loss": [1 / (k + 1) for k in range(30)]}, params={"lr": "0.01"})
    s.commands.set_note(live, "## Plan\nTry **warm restarts** with `lr=0.01`.\n\n- one\n- two\n\n"
                              "<script>alert('x')</script> [docs](https://example.invalid/docs)")
    s.artifact(b, live, "plots/loss.png", png())
    s.artifact(b, live, "logs/train.log", b"epoch 1 loss 1.0\nepoch 2 loss 0.5\n")
    s.artifact(b, live, "model/MLmodel", b"flavors:\n  sklearn:\n    version: 1.5.2\n")


# ------------------------------------------------------------------------------------------
# Fixtures
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ui(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Seeder]]:
    require_chromium()
    settings = Settings(
        kafka_bootstrap=bootstrap, topic_prefix=f"ui{uuid.uuid4().hex[:10]}", partitions=3,
        data_dir=tmp_path_factory.mktemp("ui") / "data", batch_max_ms=20,
    )
    node = QueryNode.open(settings, bootstrap)
    try:
        seeder = Seeder(node)
        seed(seeder)
        with serve(node) as base:
            yield base, seeder
    finally:
        node.close()


@pytest.fixture(scope="module")
def browser(ui: tuple[str, Seeder]) -> Iterator[Any]:
    with browser_session() as b:
        yield b


@pytest.fixture
def page(browser: Any, ui: tuple[str, Seeder]) -> Iterator[Any]:
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    base, _ = ui
    outside: list[str] = []

    def only_the_node(route: Any) -> None:
        # Nothing may come from the internet: any request elsewhere is refused and recorded.
        if route.request.url.startswith((base + "/", "data:", "blob:")):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", only_the_node)
    p = context.new_page()
    p.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    p.on("pageerror", lambda exc: errors.append(str(exc)))
    yield p
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"
    assert not outside, f"the page asked for something outside the node: {outside}"


def _runs_url(base: str, *exp_ids: str, **query: str) -> str:
    q = "&".join([f"e={','.join(exp_ids)}", *(f"{k}={v}" for k, v in query.items())])
    return f"{base}/#/runs?{q}"


def _shown_runs(page: Any) -> list[str]:
    return page.eval_on_selector_all(".vt-row[data-run-id]", "rows => rows.map(r => r.dataset.runId)")


def _wait_total(page: Any, text: str) -> None:
    page.wait_for_function(
        "t => (document.getElementById('runs-total') || {}).textContent === t", arg=text)


def _names(seeder: Seeder, ids: list[str]) -> set[str]:
    by_id = {v: k for k, v in seeder.runs.items()}
    return {by_id.get(i, i) for i in ids}


# ------------------------------------------------------------------------------------------
# Tests
# ------------------------------------------------------------------------------------------


def test_search_with_a_seed_example_shows_the_matching_runs(page: Any, ui: tuple[str, Seeder]) -> None:
    base, s = ui
    page.goto(_runs_url(base, s.experiments["ui-regression"]))
    _wait_total(page, "6 top-level runs")
    page.fill("#run-filter", "metrics.r2 > 0.3")
    page.press("#run-filter", "Enter")
    _wait_total(page, "3 top-level runs")
    assert _names(s, _shown_runs(page)) == {"ridge-a", "ridge-b", "enet"}
    assert "q=metrics.r2" in page.url  # the search is in the address: a deep link
    # Sorting by a metric column, from its header: highest r2 first.
    page.get_by_role("button", name=re.compile(r"^metric\s*r2")).click()
    page.wait_for_function("() => location.hash.includes('sort=')")
    _wait_total(page, "3 top-level runs")
    page.wait_for_function(
        "id => document.querySelector('.vt-row[data-run-id]')?.dataset.runId === id",
        arg=s.runs["ridge-b"])
    screenshot(page, "runs")


def test_a_malformed_filter_shows_its_error_at_its_position(page: Any, ui: tuple[str, Seeder]) -> None:
    base, s = ui
    page.goto(_runs_url(base, s.experiments["ui-regression"]))
    _wait_total(page, "6 top-level runs")
    page.fill("#run-filter", "metrics.r2 >> 0.3")
    page.press("#run-filter", "Enter")
    error = page.locator(".filter-error")
    error.wait_for()
    assert "position 12" in error.inner_text()
    assert page.locator(".filter-error mark").inner_text() == ">"
    assert page.get_attribute("#run-filter", "aria-invalid") == "true"
    screenshot(page, "runs-filter-error")


def test_compare_selected_runs_draws_the_three_plots(page: Any, ui: tuple[str, Seeder]) -> None:
    base, s = ui
    page.goto(_runs_url(base, s.experiments["ui-regression"], s.experiments["ui-other"]))
    _wait_total(page, "10 top-level runs")
    for name in ("ridge-a", "ridge-b", "lasso-b", "enet", "other-1"):
        page.get_by_label(f"Select run {name}", exact=True).check()
    page.get_by_role("button", name="Compare", exact=True).click()
    page.wait_for_function("() => location.hash.startsWith('#/compare')")
    page.get_by_role("heading", name="Comparing 5 runs").wait_for()
    page.wait_for_selector("#plot-parallel canvas")
    page.wait_for_selector("#plot-scatter .scatterlayer .point")
    page.wait_for_selector("#plot-contour .contourlayer path")
    page.wait_for_selector("#plot-history .scatterlayer path.js-line")
    # Every picked run is a point once the y axis is a metric all of them logged.
    page.select_option("#scatter-y", "metrics.r2")
    page.wait_for_function("() => document.querySelectorAll('#plot-scatter .scatterlayer .point').length === 5")
    # The switch hides the rows that are the same in every picked run.
    rows = page.locator("#compare-params tbody tr")
    before = rows.count()
    page.get_by_label("Hide identical rows").check()
    page.wait_for_function(f"() => document.querySelectorAll('#compare-params tbody tr').length < {before}")
    assert page.locator("#compare-params tbody tr.diff").count() == rows.count()
    # A second axis choice re-draws from the node's data.
    page.select_option("#scatter-x", "params.solver")
    page.wait_for_function("() => location.hash.includes('x=params.solver')")
    # An axis may be a metric's best value over its history, not only its last.
    page.select_option("#contour-z", "MIN(metrics.rmse)")
    page.wait_for_function("() => decodeURIComponent(location.hash).includes('cz=MIN(metrics.rmse)')")
    page.wait_for_selector("#plot-contour .contourlayer path")
    screenshot(page, "compare")
    # The compare selection is a deep link: a fresh page opens on the same view.
    link = page.url
    fresh = page.context.new_page()
    fresh.goto(link)
    fresh.get_by_role("heading", name="Comparing 5 runs").wait_for()
    fresh.wait_for_selector("#plot-scatter .scatterlayer .point")
    fresh.close()


def test_delete_with_descendants_then_restore_from_deleted(page: Any, ui: tuple[str, Seeder]) -> None:
    base, s = ui
    exp = s.experiments["ui-regression"]
    family = [s.runs[n] for n in ("sweep", "trial-1", "trial-2", "trial-2a")]
    page.goto(_runs_url(base, exp))
    _wait_total(page, "6 top-level runs")
    # Children are nested under their parent and shown on demand.
    page.get_by_label(re.compile(r"Show 2 child runs of sweep")).click()
    page.wait_for_function("id => !!document.querySelector(`.vt-row[data-run-id='${id}']`)",
                           arg=s.runs["trial-2a"])
    page.get_by_label("Select run sweep", exact=True).check()
    page.get_by_role("button", name="Delete", exact=True).click()
    dialog = page.get_by_role("dialog")
    box = dialog.get_by_label("Also delete descendant runs")
    assert box.is_checked()  # checked by default
    screenshot(page, "runs-delete-dialog")
    dialog.get_by_role("button", name="Delete").click()
    _wait_total(page, "5 top-level runs")
    with s.node.store.reading() as cur:
        assert {queries.run_stage(cur, r) for r in family} == {"deleted"}
    # Under "Deleted" they are there, nested as before.
    page.get_by_role("button", name="Deleted", exact=True).click()
    _wait_total(page, "1 top-level run")
    page.get_by_label(re.compile(r"Show 2 child runs of sweep")).click()
    page.wait_for_function("() => document.querySelectorAll('.vt-row[data-run-id]').length === 4")
    screenshot(page, "runs-deleted")
    page.get_by_label("Select all matching runs").check()
    page.get_by_role("button", name="Restore", exact=True).click()
    page.get_by_role("dialog").get_by_role("button", name="Restore").click()
    _wait_total(page, "0 top-level runs")
    with s.node.store.reading() as cur:
        assert {queries.run_stage(cur, r) for r in family} == {"active"}
    page.get_by_role("button", name="Active", exact=True).click()
    _wait_total(page, "6 top-level runs")


def test_tags_and_rename_on_the_run_page(page: Any, ui: tuple[str, Seeder]) -> None:
    base, s = ui
    run_id = s.runs["tag-me"]
    page.goto(f"{base}/#/run/{run_id}")
    page.get_by_role("heading", name="tag-me").wait_for()
    # Add a tag.
    page.fill("#tag-key", "stage")
    page.fill("#tag-value", "candidate")
    page.get_by_role("button", name="Add tag").click()
    page.locator("#tags-table tr[data-tag='stage']").wait_for()
    # Edit one.
    page.get_by_role("button", name="Edit tag color").click()
    page.get_by_label("Value of tag color").fill("green")
    page.get_by_label("Value of tag color").press("Enter")
    page.wait_for_function("() => document.querySelector(\"#tags-table tr[data-tag='color'] td\")?.textContent === 'green'")
    # Delete one (with a confirmation).
    page.get_by_role("button", name="Delete tag team").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    page.locator("#tags-table tr[data-tag='team']").wait_for(state="detached")
    # Rename in place: click the name, type, Enter.
    page.locator("#run-name").click()
    page.fill("#rename-input", "tagged-and-renamed")
    page.press("#rename-input", "Enter")
    page.get_by_role("heading", name="tagged-and-renamed").wait_for()
    # The note: edited as Markdown, shown rendered, HTML kept as text.
    page.get_by_role("button", name="Add a note").click()
    page.fill("#note-input", "Looks **good**; <b>not bold</b>")
    page.get_by_role("button", name="Save note").click()
    page.locator("#note-view strong").wait_for()
    assert page.locator("#note-view strong").inner_text() == "good"
    assert page.locator("#note-view b").count() == 0
    with s.node.store.reading() as cur:
        run = queries.get_run(cur, run_id)
    assert run.note == "Looks **good**; <b>not bold</b>"
    assert run.name == "tagged-and-renamed"
    assert run.tags["stage"] == "candidate" and run.tags["color"] == "green"
    assert "team" not in run.tags


def test_run_page_shows_everything_and_updates_while_the_run_logs(page: Any, ui: tuple[str, Seeder]) -> None:
    base, s = ui
    run_id = s.runs["live-run"]
    page.goto(f"{base}/#/run/{run_id}")
    page.get_by_role("heading", name="live-run").wait_for()
    page.locator(".live-dot").wait_for()
    # Note: Markdown rendered, HTML escaped.
    note = page.locator("#note-view")
    assert note.locator("strong").inner_text() == "warm restarts"
    assert note.locator("script").count() == 0 and "<script>" in note.inner_text()
    # Metric history chart, artifacts (image preview), reproduce.
    page.wait_for_selector(".chart[data-metric='loss'] .scatterlayer path.js-line")
    page.locator("#artifact-image").wait_for()
    page.wait_for_function("() => document.getElementById('artifact-image').naturalWidth === 160")
    assert "git checkout " + "3f2c1e9a" * 5 in page.locator("#repro-commands").inner_text()
    screenshot(page, "run")
    # A text artifact in a folder (top-level folders open one level by themselves).
    assert page.get_by_role("treeitem", name=re.compile("logs")).get_attribute("aria-expanded") == "true"
    page.get_by_role("treeitem", name=re.compile("train.log")).click()
    page.locator("#artifact-text").wait_for()
    assert "epoch 2 loss 0.5" in page.locator("#artifact-text").inner_text()
    # The run logs more: the page follows without a reload.
    s.commands.log_batch(run_id, metrics=[("loss", 0.01, 99, s.t0 + 99_000), ("acc", 0.9, 99, s.t0)])
    page.wait_for_function(
        "() => [...document.querySelectorAll('#metrics-table tbody tr')].some(r => r.textContent.startsWith('acc'))")
    s.commands.update_run(run_id, status="FINISHED", end_time=s.t0 + 200_000)
    page.locator(".badge.st-FINISHED").wait_for()
    assert page.locator(".live-dot").count() == 0


def test_download_csv_of_selected_runs(page: Any, ui: tuple[str, Seeder]) -> None:
    base, s = ui
    page.goto(_runs_url(base, s.experiments["ui-regression"]))
    _wait_total(page, "6 top-level runs")
    page.get_by_label("Select run ridge-a", exact=True).check()
    page.get_by_label("Select run enet", exact=True).check()
    with page.expect_download() as info:
        page.get_by_role("button", name="Download CSV").click()
    text = Path(info.value.path()).read_text()
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["Run ID", "Name", "Source Type", "Source Name", "User", "Status",
                       "alpha", "elasticNetParam", "max_iter", "solver",
                       "avg_areaUnderROC", "r2", "rmse"]
    assert {r[0] for r in rows[1:]} == {s.runs["ridge-a"], s.runs["enet"]}
    assert {r[1] for r in rows[1:]} == {"ridge-a", "enet"}
    by_name = {r[1]: r for r in rows[1:]}
    assert by_name["enet"][6:10] == ["1.0", "0.5", "100", "saga"]
    assert float(by_name["enet"][11]) == pytest.approx(0.31)
    # "Download all as CSV": every run of the search (the node streams it).
    with page.expect_download() as info:
        page.locator("#csv-all").click()
    all_rows = list(csv.reader(io.StringIO(Path(info.value.path()).read_text())))
    assert len(all_rows) == 1 + 9  # header, 6 top-level runs and the 3 below sweep


def test_experiments_page_manages_and_opens_several(page: Any, ui: tuple[str, Seeder]) -> None:
    base, s = ui
    page.goto(base)
    page.get_by_role("heading", name="Experiments").wait_for()
    page.get_by_role("link", name="ui-regression").wait_for()
    # Create, rename, delete, restore.
    page.get_by_role("button", name="New experiment").click()
    page.get_by_role("dialog").get_by_label("Name").fill("ui-created")
    page.get_by_role("dialog").get_by_role("button", name="Create").click()
    page.get_by_role("link", name="ui-created").wait_for()
    page.get_by_role("button", name="Rename ui-created").click()
    page.get_by_role("dialog").get_by_label("New name").fill("ui-renamed")
    page.get_by_role("dialog").get_by_role("button", name="Rename").click()
    page.get_by_role("link", name="ui-renamed").wait_for()
    page.get_by_role("button", name="Delete ui-renamed").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    page.get_by_role("link", name="ui-renamed").wait_for(state="detached")
    page.get_by_role("button", name="Deleted", exact=True).click()
    page.get_by_role("link", name="ui-renamed").wait_for()
    page.get_by_role("button", name="Restore").click()
    page.get_by_role("button", name="Active", exact=True).click()
    page.get_by_role("link", name="ui-renamed").wait_for()
    screenshot(page, "experiments")
    # Pick two and open their runs together.
    page.get_by_label("Select experiment ui-regression").check()
    page.get_by_label("Select experiment ui-other").check()
    page.get_by_role("button", name="Open runs of 2 experiments").click()
    page.get_by_role("heading", name="Runs of 2 experiments").wait_for()
    _wait_total(page, "10 top-level runs")
    assert page.get_by_role("columnheader", name="Experiment").count() == 1


def test_model_filter_and_keyboard_basics(page: Any, ui: tuple[str, Seeder]) -> None:
    base, s = ui
    page.goto(_runs_url(base, s.experiments["ui-other"], model="with"))
    _wait_total(page, "1 top-level run")
    assert _names(s, _shown_runs(page)) == {"live-run"}
    # Every form control on the page has an accessible name.
    unnamed = page.evaluate("""() => [...document.querySelectorAll('input, select, button, textarea')]
        .filter(el => !el.closest('[hidden]'))
        .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                      && !el.textContent.trim() && !el.getAttribute('title'))
        .map(el => el.outerHTML.slice(0, 80))""")
    assert unnamed == []
    # Tab reaches the search box and Enter searches from it.
    page.locator("#run-filter").focus()
    page.keyboard.type("params.lr = '0.01'")
    page.keyboard.press("Enter")
    _wait_total(page, "1 top-level run")
    assert "q=params.lr" in page.evaluate("() => location.hash")
