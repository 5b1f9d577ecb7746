"""Shared fixtures: one real Kafka broker per test session, unique topics per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from runstream.deploy.brokers import Broker, provision_broker
from runstream.kafka_log import ensure_topics
from runstream.settings import Settings


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """The session's broker: from the environment, a container, or a local Kafka with Java."""
    mode = os.environ.get("RUNSTREAM_TEST_BROKER", "auto")
    b = provision_broker(tmp_path_factory.mktemp("kafka"), mode=mode)  # type: ignore[arg-type]
    yield b
    b.stop()


@pytest.fixture(scope="session")
def bootstrap(broker: Broker) -> str:
    return broker.bootstrap


@pytest.fixture
def settings(bootstrap: str, tmp_path: Path) -> Settings:
    """Settings with a unique topic prefix and data directory for one test."""
    return Settings(
        kafka_bootstrap=bootstrap,
        topic_prefix=f"t{uuid.uuid4().hex[:10]}",
        partitions=3,
        data_dir=tmp_path / "data",
        batch_max_ms=20,
    )


@pytest.fixture
def topics(settings: Settings, bootstrap: str) -> Settings:
    """``settings`` with its events and dead-letter topics created."""
    ensure_topics(
        bootstrap,
        settings.events_topic,
        settings.dead_letter_topic,
        partitions=settings.partitions,
        replication_factor=1,
    )
    return settings
