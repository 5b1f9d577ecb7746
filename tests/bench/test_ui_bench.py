"""Web UI benchmark at 100,000 runs, measured in the browser (on demand, no broker).

Run: ``.venv/bin/pytest tests/bench/test_ui_bench.py -s --override-ini addopts=``

The read model is the query benchmark's (``tests/bench/test_query_bench.py``: 100,000 runs x
20 metrics x 10 params x 5 tags, built with the projection's ``apply_batch`` into a DuckDB file
and cached under ``$RUNSTREAM_BENCH_DIR``). It is served by ``create_app`` over a stand-in node
whose store reads that file (what a node's ``ReadStore`` does, minus the projector and Kafka),
by uvicorn in a process of its own (as ``runstream up`` serves: the browser driver does not
share its interpreter), on a loopback port, and opened in headless Debian chromium.

Figures, printed, not asserted (target <= 1000 ms each, median of several loads):
* first rows: from navigation start to the first rows of the runs page of all four
  experiments on screen (``performance.mark("runstream:rows")`` set by the page);
* re-sort: from the click on a metric column's header to the re-sorted rows on screen;
* deep scroll: from a scroll to row 60,000 to its rows on screen (virtual scrolling).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import duckdb
import pytest
import uvicorn
from runstream.api.app import create_app
from runstream.deploy.brokers import free_port
from runstream.read_store import SingleFileStore
from runstream.settings import Settings

from tests.bench.test_query_bench import DATASET_VERSION, EXPERIMENTS, RUNS, build_bench_db
from tests.e2e.test_ui import browser_session, require_chromium

REPEAT = 5
TARGET_MS = 1000


@pytest.fixture(scope="module")
def bench_path() -> Path:
    root = Path(os.environ.get("RUNSTREAM_BENCH_DIR", "/tmp/runstream-bench"))
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"read-model-{DATASET_VERSION}.duckdb"
    if not path.exists():
        t0 = time.perf_counter()
        partial = path.with_suffix(".building")
        partial.unlink(missing_ok=True)
        build_bench_db(partial)
        partial.rename(path)
        print(f"\nbuilt {path} in {time.perf_counter() - t0:.0f}s")
    return path


def _report(name: str, samples: list[float]) -> None:
    p50 = statistics.median(samples)
    flag = "ok " if p50 <= TARGET_MS else "SLOW"
    print(f"{flag} {name:<58} p50 {p50:7.0f} ms  max {max(samples):7.0f} ms  "
          f"(target {TARGET_MS}; {len(samples)} loads)")


def serve_file(path: Path, port: int, data_dir: Path) -> None:
    """The node's app over a read-model file, in this process (the server's entry point)."""
    node = SimpleNamespace(
        # The node's DuckDB settings (ReadStore: 2 threads, 4 GB), on the file, read only.
        store=SingleFileStore(duckdb.connect(str(path), read_only=True,
                                             config={"threads": 2, "memory_limit": "4GB"})),
        settings=Settings(data_dir=data_dir),
        health=lambda: {"status": "ok", "lag": {"total": 0}},
    )
    uvicorn.run(create_app(node), host="127.0.0.1", port=port, log_level="warning",  # type: ignore[arg-type]
                access_log=False)


@contextmanager
def _server(path: Path, data_dir: Path) -> Iterator[str]:
    port = free_port()
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.bench.test_ui_bench", str(path), str(port), str(data_dir)],
        cwd=root,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(base + "/health", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the benchmark server did not start") from None
                time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.timeout(3600)  # the first run builds the data set (a few minutes)
def test_ui_benchmark(bench_path: Path, tmp_path: Path) -> None:
    require_chromium()
    exps = ",".join(f"bench{e}" for e in range(EXPERIMENTS))
    con = duckdb.connect(str(bench_path), read_only=True)
    (total,) = con.execute("SELECT count(*) FROM runs").fetchall()[0]
    con.close()
    print(f"\nread model: {total} runs ({RUNS} + 1 big); browser: /usr/bin/chromium")
    with _server(bench_path, tmp_path) as base, browser_session() as browser:
        url = f"{base}/#/runs?e={exps}"
        first: list[float] = []
        resort: list[float] = []
        scroll: list[float] = []
        for i in range(REPEAT + 1):
            context = browser.new_context(viewport={"width": 1440, "height": 900})
            page = context.new_page()
            page.goto(url)
            page.wait_for_function(
                "() => performance.getEntriesByName('runstream:rows').length > 0",
                timeout=30_000)
            rows_ms = page.evaluate(
                "() => performance.getEntriesByName('runstream:rows')[0].startTime")
            shown = page.locator(".vt-row[data-run-id]").count()
            assert shown > 10, "the first rows are not on screen"
            assert page.locator("#runs-total").inner_text() == f"{total:,} top-level runs"
            # Re-sort by a metric from its column header, timed in the page.
            top = page.eval_on_selector(".vt-row[data-run-id]", "r => r.dataset.runId")
            resort_ms = _timed_resort(page, top)
            scroll_ms = _timed_scroll(page, 60_000)
            context.close()
            if i == 0:
                continue  # warm-up: the first touch of the columns in DuckDB
            first.append(rows_ms)
            resort.append(resort_ms)
            scroll.append(scroll_ms)
        print(f"runs page of {EXPERIMENTS} experiments, {total:,} runs:")
        _report("time to first rendered rows (navigation start)", first)
        _report("re-sort by a metric column (click to rows)", resort)
        _report("scroll to row 60,000 (scroll to rows)", scroll)


def _timed_resort(page: Any, top_before: str) -> float:
    page.evaluate("""() => {
        window.__t0 = performance.now();
        const header = [...document.querySelectorAll('.vt-head button.sort')]
            .find(b => b.textContent.startsWith('metric'));
        header.click();
    }""")
    page.wait_for_function(
        """top => {
            const marks = performance.getEntriesByName('runstream:rows');
            const row = document.querySelector('.vt-row[data-run-id]');
            return marks.length && marks[marks.length - 1].startTime > window.__t0
                && location.hash.includes('sort=') && row && row.dataset.runId !== top;
        }""", arg=top_before, timeout=30_000)
    return float(page.evaluate("""() => {
        const marks = performance.getEntriesByName('runstream:rows');
        return marks[marks.length - 1].startTime - window.__t0;
    }"""))


def _timed_scroll(page: Any, row: int) -> float:
    page.evaluate(f"""() => {{
        window.__t0 = performance.now();
        document.querySelector('.vt-scroll').scrollTop = {row} * 34;
    }}""")
    page.wait_for_function(
        f"""() => [...document.querySelectorAll('.vt-row[data-run-id]')]
            .some(r => Math.abs(parseFloat(r.style.top) / 34 - {row}) < 5)""", timeout=30_000)
    return float(page.evaluate("() => performance.now() - window.__t0"))


if __name__ == "__main__":
    serve_file(Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]))
