"""The broker fixture in each of its modes: environment, container, local Java."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from runstream.deploy.brokers import (
    ExternalBroker,
    LocalKafka,
    docker_engine_answers,
    provision_broker,
)
from runstream.kafka_log import EventProducer, ensure_topics

from tests.event_factory import one_of_each
from tests.integration.test_event_log import _consume_all

pytestmark = pytest.mark.broker


def test_external_mode_uses_the_address_from_the_environment(
    bootstrap: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RUNSTREAM_KAFKA_BOOTSTRAP", bootstrap)
    broker = provision_broker(tmp_path, mode="auto")
    assert isinstance(broker, ExternalBroker) and broker.bootstrap == bootstrap
    assert not list(tmp_path.iterdir()), "an external broker must not start anything locally"


def test_container_mode(tmp_path: Path) -> None:
    answers, why = docker_engine_answers()
    if not answers:
        pytest.skip(f"container broker not testable here: {why}")
    broker = provision_broker(tmp_path, mode="container")
    try:
        EventProducer(broker.bootstrap, "x")  # reachable
        assert broker.kind == "container"
    finally:
        broker.stop()


def test_local_mode_keeps_every_event_across_a_restart(tmp_path: Path) -> None:
    kafka = LocalKafka(tmp_path / "kafka").start()
    try:
        assert kafka.process is not None
        ensure_topics(kafka.bootstrap, "keep.events", "keep.dlq", partitions=2, replication_factor=1)
        events = one_of_each()
        EventProducer(kafka.bootstrap, "keep.events").publish_and_wait(events)
    finally:
        kafka.stop()
    assert kafka.process is not None and kafka.process.poll() is not None, "stopped cleanly"
    assert (tmp_path / "kafka" / "log" / "meta.properties").exists()

    again = LocalKafka(tmp_path / "kafka").start()
    try:
        got = _consume_all(again.bootstrap, "keep.events", len(events))
        assert sorted(m.value() for m in got) == sorted(
            __import__("runstream.schemas", fromlist=["encode_event"]).encode_event(e)
            for e in events
        )
    finally:
        again.stop()


def test_a_local_broker_dies_with_a_killed_parent(tmp_path: Path) -> None:
    """SIGKILL leaves no chance to stop the broker in order: it must go anyway."""
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from runstream.deploy.brokers import LocalKafka\n"
        "k = LocalKafka(Path(sys.argv[1])).start()\n"
        "print(k.process.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    jvm = None
    with subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "kafka")],
                          stdout=subprocess.PIPE, text=True) as parent:
        try:
            assert parent.stdout is not None
            jvm = int(parent.stdout.readline())
            assert _running(jvm)
            parent.kill()
            parent.wait(10)
            deadline = time.monotonic() + 60
            while _running(jvm) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert not _running(jvm), "the broker JVM outlived its killed parent"
        finally:
            parent.kill()
            if jvm is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(jvm, signal.SIGKILL)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has exited; only its exit status is left
