"""runstream: event-sourced experiment tracking on Kafka and DuckDB.

A training script needs one import::

    import runstream

    with runstream.start_run(experiment_name="demo", run_name="lr-0.1") as run:
        runstream.log_params({"lr": 0.1})
        for step in range(100):
            runstream.log_metric("loss", 1 / (step + 1), step=step)

The training client logs straight to Kafka (``RUNSTREAM_KAFKA_BOOTSTRAP``), never blocks the
training loop, and keeps every event in a local spool until the broker acknowledged it; see
the README's "Training client" section. The command line is ``runstream --help``.
"""

__version__ = "0.1.0"

from runstream.client import (  # noqa: E402 - __version__ first: the CLI imports it
    BackpressureTimeout,
    Client,
    ClientSettings,
    Run,
    active_run,
    configure,
    delete_tag,
    end_run,
    flush,
    get_artifact_uri,
    get_client,
    last_active_run,
    log_artifact,
    log_artifacts,
    log_dict,
    log_metric,
    log_metric_history,
    log_metrics,
    log_model,
    log_param,
    log_params,
    log_text,
    set_experiment,
    set_experiment_tag,
    set_note,
    set_run_name,
    set_tag,
    set_tags,
    shutdown,
    start_run,
)
from runstream.schemas.ids import new_run_id  # noqa: E402

__all__ = [
    "BackpressureTimeout",
    "Client",
    "ClientSettings",
    "Run",
    "__version__",
    "active_run",
    "configure",
    "delete_tag",
    "end_run",
    "flush",
    "get_artifact_uri",
    "get_client",
    "last_active_run",
    "log_artifact",
    "log_artifacts",
    "log_dict",
    "log_metric",
    "log_metric_history",
    "log_metrics",
    "log_model",
    "log_param",
    "log_params",
    "log_text",
    "new_run_id",
    "set_experiment",
    "set_experiment_tag",
    "set_note",
    "set_run_name",
    "set_tag",
    "set_tags",
    "shutdown",
    "start_run",
]
