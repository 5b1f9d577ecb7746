"""Knobs of the training client only (``RUNSTREAM_*``); the shared ones live in ``Settings``."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_spool_dir() -> Path:
    """``$RUNSTREAM_CACHE_DIR/spool``, else ``$XDG_CACHE_HOME/runstream/spool``, else ``~/.cache``."""
    env = os.environ.get("RUNSTREAM_CACHE_DIR")
    if env:
        return Path(env).expanduser() / "spool"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "runstream" / "spool"


class ClientSettings(BaseSettings):
    """What a training process needs beyond the broker address and topic prefix.

    Every field reads ``RUNSTREAM_<FIELD>`` from the environment (for example
    ``RUNSTREAM_SPOOL_DIR``, ``RUNSTREAM_MAX_PENDING_POINTS``, ``RUNSTREAM_RUN_ID``).
    """

    model_config = SettingsConfigDict(env_prefix="RUNSTREAM_", frozen=True, extra="ignore")

    # ------------------------------------------------------------------ spool
    spool_dir: Path = Field(
        default_factory=default_spool_dir,
        description="append-only spool of every event until the broker acknowledged it",
    )
    spool_max_bytes: int = Field(
        default=1 << 30,
        ge=64 * 1024,
        description="per process: beyond this many unacknowledged bytes on disk the client "
        "stops taking points from memory (callers then block, see max_pending_points)",
    )
    spool_segment_bytes: int = Field(default=16 << 20, ge=4096)
    spool_fsync: bool = Field(default=True, description="fdatasync every flush (power-loss safe)")

    # ------------------------------------------------------------ batching
    flush_interval_ms: int = Field(
        default=25, ge=1, le=10_000,
        description="the background thread moves pending points to the spool this often; "
        "it is also the window a SIGKILL can lose",
    )
    flush_points: int = Field(
        # ≤ 100,000 points keeps an event under ~5 MB, well below the topic's 8 MB limit.
        default=10_000, ge=1, le=100_000,
        description="pending points that wake the flusher early; also the largest batch per event",
    )
    max_pending_points: int = Field(
        default=250_000, ge=1,
        description="points held in memory at most; at the bound log_metric blocks until the "
        "flusher makes room (it never drops a point)",
    )
    max_block_s: float | None = Field(
        default=None, gt=0,
        description="raise BackpressureTimeout after blocking this long (unset: wait)",
    )

    # ------------------------------------------------------------ delivery
    delivery_timeout_ms: int = Field(
        default=5000, ge=500,
        description="librdkafka message.timeout.ms: an event not acknowledged within it "
        "counts as an outage and is re-sent from the spool",
    )
    flush_timeout_s: float = Field(
        default=30.0, ge=0,
        description="end_run and exit wait at most this long for acknowledgements (with the "
        "broker away they return once a delivery attempt failed: the events are on disk)",
    )
    start_ack_timeout_s: float = Field(
        default=10.0, ge=0,
        description="distributed rank 0 waits this long for run.created to be acknowledged",
    )
    inflight_max_messages: int = Field(default=256, ge=1)
    inflight_max_bytes: int = Field(default=16 << 20, ge=1024)
    replay_on_start: bool = Field(
        default=True, description="resend events left in the spool by earlier processes"
    )

    # ------------------------------------------------------- distributed jobs
    run_id: str | None = Field(
        default=None, description="the run every rank logs to (rank 0 creates it)"
    )
    rank: int | None = Field(default=None, ge=0, description="this process's rank (else $RANK)")
    experiment_id: str | None = None
    experiment_name: str | None = None

    def effective_rank(self) -> int:
        if self.rank is not None:
            return self.rank
        for name in ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "SLURM_PROCID"):
            value = os.environ.get(name, "").strip()
            if value.isdigit():
                return int(value)
        return 0
