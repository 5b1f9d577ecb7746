"""A query node served over real HTTP in a background thread, for the `mlflow` client tests."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import uvicorn
from runstream.api.app import create_app
from runstream.deploy.brokers import free_port
from runstream.node import QueryNode
from runstream.settings import Settings

# The mlflow client retries 5xx for minutes: a bug must fail fast instead.
MLFLOW_TEST_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}


def node_settings(bootstrap: str, data_dir: Path, **overrides: object) -> Settings:
    """Settings as tests/conftest.py builds them: a unique topic prefix, a private data dir."""
    fields: dict[str, object] = {
        "kafka_bootstrap": bootstrap,
        "topic_prefix": f"t{uuid.uuid4().hex[:10]}",
        "partitions": 3,
        "data_dir": data_dir,
        "batch_max_ms": 20,
    }
    fields.update(overrides)
    return Settings(**fields)  # type: ignore[arg-type]


class ServedNode:
    """``QueryNode.open`` plus ``create_app`` served by uvicorn on a free port."""

    def __init__(self, settings: Settings, bootstrap: str) -> None:
        self.settings = settings
        self.node = QueryNode.open(settings, bootstrap)
        self.port = free_port()
        config = uvicorn.Config(
            create_app(self.node), host="127.0.0.1", port=self.port, log_level="warning",
            access_log=False, lifespan="off",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.close()
                raise RuntimeError("the test node's HTTP server did not start")
            time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.node.close()
