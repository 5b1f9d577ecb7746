"""Typed, frozen configuration read from ``RUNSTREAM_*`` environment variables and flags."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of a runstream process. Flags override the environment."""

    model_config = SettingsConfigDict(env_prefix="RUNSTREAM_", frozen=True, extra="ignore")

    kafka_bootstrap: str | None = Field(
        default=None, description="Kafka bootstrap servers; unset means start a local broker"
    )
    topic_prefix: str = Field(default="runstream", pattern=r"^[A-Za-z0-9._-]{1,200}$")
    partitions: int = Field(default=6, ge=1, le=1000)
    replication_factor: int = Field(default=1, ge=1, le=10)
    data_dir: Path = Field(default=Path("./runstream-data"))
    host: str = "127.0.0.1"
    port: int = Field(default=5005, ge=0, le=65535)
    broker_port: int | None = Field(default=None, ge=1, le=65535)
    retention_days: float = Field(default=30.0, gt=0)
    # Projector batching: a batch closes at this many messages or this many ms.
    batch_max_messages: int = Field(default=2000, ge=1)
    batch_max_ms: int = Field(default=50, ge=1)
    # Read-your-writes: how long a write call waits for its own projector.
    read_your_writes_timeout_s: float = Field(default=10.0, ge=0)
    artifact_root: Path | None = None
    # How much a query node keeps of the run records it read, to serve them again while the
    # run is unchanged: in items (a run's params, tags and metrics, plus one). An item costs
    # about 400 bytes with its wire forms, so the default is about 100 MB; 0 turns it off.
    record_cache_items: int = Field(default=250_000, ge=0)

    @property
    def events_topic(self) -> str:
        return f"{self.topic_prefix}.events"

    @property
    def dead_letter_topic(self) -> str:
        return f"{self.topic_prefix}.events.dlq"

    @property
    def read_model_dir(self) -> Path:
        return self.data_dir / "node"

    @property
    def artifacts_dir(self) -> Path:
        return self.artifact_root or (self.data_dir / "artifacts")

    @property
    def broker_dir(self) -> Path:
        return self.data_dir / "kafka"


def env_var(field_name: str) -> str:
    """The environment variable behind a settings field, for --help texts."""
    return f"RUNSTREAM_{field_name.upper()}"
