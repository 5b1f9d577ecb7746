"""Projector benchmarks: replay rate, freshness under sustained load, file size per point.

Run: .venv/bin/pytest tests/bench/test_projector_bench.py -s --override-ini addopts=
Sizes via RUNSTREAM_BENCH_POINTS (default 10,000,000) and RUNSTREAM_BENCH_RUNS (10,000);
replays of the same log via RUNSTREAM_BENCH_REPEAT (3, the median is printed). Metric batches
are ``metrics.packed`` events, what the runstream client sends; RUNSTREAM_BENCH_FORM=json
makes them ``metrics.logged`` (JSON arrays, what the REST API and other producers send).
"""

from __future__ import annotations

import os
import random
import statistics
import threading
import time
from pathlib import Path

import duckdb
import pytest
from runstream.kafka_log import EventProducer
from runstream.projections.apply_events import create_read_model
from runstream.projector import Projector, ProjectorStats
from runstream.read_store import SingleFileStore
from runstream.schemas import (
    Event,
    MetricsLogged,
    MetricsLoggedBody,
    MetricsPacked,
    MetricsPackedBody,
    new_event,
)
from runstream.settings import Settings

from tests.event_factory import run_created

POINTS = int(os.environ.get("RUNSTREAM_BENCH_POINTS", 10_000_000))
RUNS = int(os.environ.get("RUNSTREAM_BENCH_RUNS", 10_000))
REPEAT = int(os.environ.get("RUNSTREAM_BENCH_REPEAT", 3))
FORM = os.environ.get("RUNSTREAM_BENCH_FORM", "packed")
KEYS = [f"metric_{i}" for i in range(10)]


def _metric_event(run_id: str, step0: int, n: int, t: int) -> Event:
    columns = (
        KEYS,
        [i % len(KEYS) for i in range(n)],
        [random.random() for _ in range(n)],
        [step0 + i // len(KEYS) for i in range(n)],
        [t] * n,
    )
    if FORM == "json":
        return new_event(MetricsLogged, MetricsLoggedBody(
            keys=columns[0], key_index=columns[1], values=columns[2], steps=columns[3],
            timestamps=columns[4]), run_id=run_id)
    return new_event(MetricsPacked, MetricsPackedBody.from_columns(*columns), run_id=run_id)


@pytest.mark.timeout(1800)  # REPEAT replays of 10M points on a shared machine
def test_replay_rate_and_file_size(topics: Settings, bootstrap: str, tmp_path: Path) -> None:
    per_run = POINTS // RUNS
    chunk = 1000  # points per event
    producer = EventProducer(bootstrap, topics.events_topic)
    t0 = time.perf_counter()
    runs = [f"r{i:06d}" for i in range(RUNS)]
    for run in runs:
        producer.publish(run_created(run))
    sent = 0
    for run in runs:
        for step0 in range(0, per_run, chunk):
            n = min(chunk, per_run - step0)
            producer.publish(_metric_event(run, step0 // len(KEYS), n, 1_700_000_000_000 + step0))
            sent += n
    producer.flush(300)
    print(f"\nproduced {sent:,} points in {RUNS:,} runs as {FORM} events in "
          f"{time.perf_counter() - t0:.1f}s")

    # The machine is shared: REPEAT replays of the same log, each into a fresh file, with
    # the load average before each, and their median.
    rates = []
    for i in range(REPEAT):
        db = tmp_path / f"replay-{i}.duckdb"
        load = os.getloadavg()[0]
        stored, elapsed, settled, stats = _replay(topics, bootstrap, db)
        assert stored == sent
        rates.append(stored / elapsed)
        print(f"replay: {stored:,} points in {elapsed:.1f}s = {stored / elapsed:,.0f} points/s "
              f"(load average before: {load:.2f}); then the run_records documents of every "
              f"run in {settled:.2f}s ({stats.records_refreshed:,} made in all)")
        size = db.stat().st_size
        db.unlink()
    print(f"replay, median of {REPEAT}: {statistics.median(rates):,.0f} points/s "
          "(target >= 1,000,000)")
    print(f"DuckDB file: {size / 1e6:.1f} MB = {size / 1e6 / (sent / 1e6):.1f} MB per million points")


def _replay(
    topics: Settings, bootstrap: str, db: Path
) -> tuple[int, float, float, ProjectorStats]:
    """Replay the whole events topic into a fresh read-model file: (points stored, seconds,
    seconds to settle the run_records documents after, the projector's counters)."""
    con = duckdb.connect(str(db))
    create_read_model(con)
    projector = Projector(SingleFileStore(con), bootstrap, topics.events_topic,
                          topics.dead_letter_topic, batch_max_messages=500, batch_max_ms=100)
    high = projector.consumer.high_watermarks(projector.partitions)
    t0 = time.perf_counter()
    projector.run_until(high)
    elapsed = time.perf_counter() - t0
    projector.settle_records()  # what rebuild and project --until-caught-up do next
    settled = time.perf_counter() - t0 - elapsed
    projector.stop()
    con.execute("CHECKPOINT")
    stored = con.execute("SELECT count(*) FROM metric_history").fetchone()[0]
    con.close()
    return stored, elapsed, settled, projector.stats


def test_freshness_at_sustained_rate(topics: Settings, bootstrap: str, tmp_path: Path) -> None:
    """Time from produce() to visible in the read model, at a sustained points/s rate."""
    rate = int(os.environ.get("RUNSTREAM_BENCH_RATE", 100_000))
    seconds = int(os.environ.get("RUNSTREAM_BENCH_SECONDS", 20))
    chunk = 1000
    con = duckdb.connect(str(tmp_path / "fresh.duckdb"))
    create_read_model(con)
    projector = Projector(SingleFileStore(con), bootstrap, topics.events_topic,
                          topics.dead_letter_topic, batch_max_messages=500, batch_max_ms=20)
    projector.start()
    producer = EventProducer(bootstrap, topics.events_topic, **{"linger.ms": 2})
    runs = [f"f{i:03d}" for i in range(100)]
    producer.publish_and_wait([run_created(r) for r in runs])
    events = [_metric_event(runs[i % len(runs)], i, chunk, 1_700_000_000_000 + i)
              for i in range(rate * seconds // chunk)]
    delivered: list[tuple[object, float]] = []
    latencies: list[float] = []
    lock = threading.Lock()
    sending = threading.Event()
    sending.set()

    def watch() -> None:
        # Visible = the projector's applied offset passed the message (committed in DuckDB);
        # checked every 2 ms while the load runs, not afterwards.
        waiting: list[tuple[object, float]] = []
        while sending.is_set() or waiting or delivered:
            with lock:
                waiting.extend(delivered)
                delivered.clear()
            applied = projector.applied_offsets()
            now = time.perf_counter()
            still = []
            for pos, t_sent in waiting:
                if applied.get(pos.partition, 0) > pos.offset:
                    latencies.append(now - t_sent)
                else:
                    still.append((pos, t_sent))
            waiting = still
            time.sleep(0.002)

    watcher = threading.Thread(target=watch)
    watcher.start()
    interval = chunk / rate
    start = time.perf_counter()
    for i, ev in enumerate(events):
        due = start + i * interval
        now = time.perf_counter()
        if now < due:
            time.sleep(due - now)
        t_sent = time.perf_counter()

        def on_delivery(pos, err, t_sent=t_sent):
            if pos is not None:
                with lock:
                    delivered.append((pos, t_sent))

        producer.publish(ev, on_delivery)
        producer.poll(0)
    achieved = len(events) * chunk / (time.perf_counter() - start)
    producer.flush(60)
    sending.clear()
    watcher.join(120)
    remaining = watcher.is_alive()
    projector.stop()
    q = statistics.quantiles(latencies, n=100)
    print(f"\nfreshness at {rate:,} points/s ({achieved:,.0f} achieved, {len(latencies)} batches "
          f"of {chunk}): p50 {q[49] * 1000:.0f} ms, p99 {q[98] * 1000:.0f} ms (target p99 <= 1000 ms)")
    assert not remaining
