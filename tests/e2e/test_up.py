"""`runstream up`: one command starts broker, topics and node; SIGTERM stops all of it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from runstream.deploy.brokers import free_port
from runstream.kafka_log import EventProducer

from tests.event_factory import one_of_each

pytestmark = pytest.mark.broker


def _health(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
            return json.loads(r.read()) if r.status == 200 else None
    except OSError:
        return None


def _start(data_dir: Path, port: int) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RUNSTREAM_KAFKA_BOOTSTRAP", "KAFKA_BOOTSTRAP_SERVERS")}
    return subprocess.Popen(
        [sys.executable, "-m", "runstream.cli", "up", "--data-dir", str(data_dir),
         "--port", str(port), "--broker", "local", "--partitions", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )


def _wait_healthy(proc: subprocess.Popen[str], port: int, timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"runstream up exited {proc.returncode}:\n{proc.stdout.read()}")
        body = _health(port)
        if body is not None:
            return body
        time.sleep(0.2)
    raise AssertionError("runstream up never answered /health")


def _children_of(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(x) for x in out.stdout.split()]


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    return out


def test_up_serves_health_stops_on_sigterm_and_keeps_events(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    proc = _start(data, port)
    try:
        health = _wait_healthy(proc, port)
        assert health["status"] == "ok"
        java = _children_of(proc.pid)
        assert java, "the local broker runs as a child process"
        events = one_of_each()
        EventProducer(health["bootstrap"], health["events_topic"]).publish_and_wait(events)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            body = _health(port)
            assert body is not None
            applied = sum(p["next_offset"] for p in body["lag"]["partitions"].values())
            if applied == len(events):
                break
            time.sleep(0.2)
        assert applied == len(events)
    finally:
        out = _stop(proc)
    assert proc.returncode == 0, out
    assert "serving" in out and "stopped" in out
    for pid in java:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower(), \
            f"broker process {pid} survived SIGTERM"

    # A second start on the same data directory still has the first run's events.
    proc = _start(data, port)
    try:
        health = _wait_healthy(proc, port)
        parts = health["lag"]["partitions"]
        assert sum(p["next_offset"] for p in parts.values()) == len(events)
        # The log itself still holds them (the high watermarks are polled about once a second).
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            parts = (_health(port) or {"lag": {"partitions": {}}})["lag"]["partitions"]
            if all(p["high_watermark"] is not None for p in parts.values()):
                break
            time.sleep(0.2)
        assert sum(p["high_watermark"] or 0 for p in parts.values()) == len(events)
    finally:
        out = _stop(proc)
    assert proc.returncode == 0, out
