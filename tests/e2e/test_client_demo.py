"""`runstream up --demo` (what `make up` runs): the node serves, then the demo logs into it."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from runstream.deploy.brokers import free_port

pytestmark = pytest.mark.broker


def _health(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
            return json.loads(r.read()) if r.status == 200 else None
    except OSError:
        return None


def test_up_with_demo_serves_and_logs_the_demo(bootstrap: str, tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items()
           if k not in ("RUNSTREAM_KAFKA_BOOTSTRAP", "KAFKA_BOOTSTRAP_SERVERS")}
    env["RUNSTREAM_SPOOL_DIR"] = str(tmp_path / "spool")
    proc = subprocess.Popen(
        [sys.executable, "-m", "runstream.cli", "up", "--demo", "--bootstrap", bootstrap,
         "--topic-prefix", f"t{uuid.uuid4().hex[:10]}", "--port", str(port),
         "--data-dir", str(data), "--partitions", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while not any(line.startswith("demo: 11 runs") for line in seen):
            assert time.monotonic() < deadline, "".join(seen)
            assert proc.poll() is None, "".join(seen)
            with contextlib.suppress(queue.Empty):
                seen.append(lines.get(timeout=0.5))
        out = "".join(seen)
        assert "is serving" in out and "(delivered)" in out, out
        # The node applies what the demo logged: 11 runs, their params, tags, points.
        deadline = time.monotonic() + 60
        while True:
            health = _health(port)
            assert health is not None
            if health["projected"]["events"] >= 11 + 1 and health["lag"]["total"] == 0:
                break
            assert time.monotonic() < deadline, health
            time.sleep(0.2)
        assert not health["dead_letters"], health
        assert list((data / "artifacts").glob("*/*/artifacts/model/MLmodel")), \
            "the demo's model is in the node's artifact store"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        reader.join(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == 0, "".join(seen)
