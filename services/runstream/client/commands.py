"""Client commands of the CLI: ``runstream sync``, ``runstream demo``, and ``up --demo``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from runstream.settings import Settings, env_var

log = logging.getLogger("runstream")


def _flag_help(text: str, field: str) -> str:
    return f"{text} [env: {env_var(field)}]"


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def cmd_sync(args: argparse.Namespace) -> int:
    """Re-send the events training processes left in the spool (broker away, killed, ...).

    Every segment whose process is gone is sent, oldest first, to the broker and topic it
    was meant for (or to --bootstrap), as the same bytes: the projector skips events it
    already has. Delivered segments are deleted. Exit status 0 when nothing is left, 1
    when some events could not be delivered (they stay spooled).
    """
    from runstream.client.replay import sync_spool
    from runstream.client.settings import ClientSettings

    options = ClientSettings(**{k: v for k, v in vars(args).items()
                                if k in ClientSettings.model_fields and v is not None})
    timeout = args.timeout
    if timeout is None:
        timeout = float(os.environ.get("RUNSTREAM_SYNC_TIMEOUT_S", "120"))
    bootstrap = args.kafka_bootstrap or os.environ.get("RUNSTREAM_KAFKA_BOOTSTRAP") or None
    print(f"spool: {options.spool_dir}", flush=True)
    report = sync_spool(options.spool_dir, bootstrap=bootstrap, timeout_s=timeout,
                        delivery_timeout_ms=options.delivery_timeout_ms)
    print(report.summary(), flush=True)
    for path in report.remaining:
        print(f"  still spooled: {path}")
    for path in report.busy:
        print(f"  in use by a running client: {path}")
    return 0 if report.complete else 1


def cmd_demo(args: argparse.Namespace) -> int:
    """Train a small elastic-net regression over a grid of params, for real, and log it.

    Several runs under the experiment "runstream-demo": a parent run with a note, nested
    runs with per-epoch metrics (train_loss, rmse, r2, mae), a run that diverges and ends
    FAILED, tags, and artifacts (a CSV, coefficients, an MLmodel-style model directory).
    Needs a broker: --bootstrap, RUNSTREAM_KAFKA_BOOTSTRAP or KAFKA_BOOTSTRAP_SERVERS;
    creates the topics there if missing, as `runstream up` does.
    """
    from runstream.deploy.brokers import bootstrap_from_env

    settings = Settings(**{k: v for k, v in vars(args).items()
                           if k in Settings.model_fields and v is not None})
    bootstrap = settings.kafka_bootstrap or bootstrap_from_env()
    if not bootstrap:
        print("runstream: error: the demo needs a broker: --bootstrap HOST:PORT (or "
              f"{env_var('kafka_bootstrap')}); `runstream up --demo` starts one and runs it",
              file=sys.stderr)
        return 2
    from runstream.kafka_log import ensure_topics

    # As `runstream up` does: the events topic with retention -1 (idempotent).
    report = ensure_topics(bootstrap, settings.events_topic, settings.dead_letter_topic,
                           partitions=settings.partitions,
                           replication_factor=settings.replication_factor)
    for problem in report.problems:
        print(f"WARNING: {problem}", file=sys.stderr, flush=True)
    overrides: dict[str, Any] = {"kafka_bootstrap": bootstrap}
    for key in ("topic_prefix", "data_dir", "artifact_root", "spool_dir"):
        value = getattr(args, key, None)
        if value is not None:
            overrides[key] = value
    return run_demo_command(overrides, args.experiment_name, epochs=args.epochs)


def run_demo_command(overrides: dict[str, Any], experiment: str | None, *,
                     epochs: int = 60) -> int:
    import runstream
    from runstream.client.demo import run_demo

    runstream.configure(**overrides)
    client = runstream.get_client()
    name = experiment or client.options.experiment_name or "runstream-demo"
    print(f"demo: training an elastic-net grid, logging to {client.bootstrap} "
          f"(topic {client.topic}), experiment {name!r}", flush=True)
    try:
        result = run_demo(name, epochs=epochs, out=lambda line: print(line, flush=True))
    finally:
        delivered = runstream.shutdown()
    print(
        f"demo: {len(result.child_run_ids) + 2} runs, {result.points} metric points in "
        f"{result.seconds:.1f}s ({delivered}); best alpha={result.best['alpha']} "
        f"elasticNetParam={result.best['elasticNetParam']} rmse={result.best['rmse']:.4f}\n"
        f"      experiment {result.experiment_id}, parent run {result.parent_run_id}, "
        f"artifacts under {client.settings.artifacts_dir.resolve()}",
        flush=True,
    )
    return 0


def demo_when_serving(server: Any, settings: Settings, bootstrap: str) -> threading.Thread:
    """``runstream up --demo``: run the demo against this node once it serves HTTP."""

    def demo() -> None:
        while not server.started:
            if server.should_exit:
                return
            time.sleep(0.05)
        try:
            run_demo_command(
                {"kafka_bootstrap": bootstrap, "topic_prefix": settings.topic_prefix,
                 "data_dir": settings.data_dir, "artifact_root": settings.artifact_root},
                None,
            )
        except Exception:  # noqa: BLE001 - the node keeps serving
            log.exception("the demo failed")

    thread = threading.Thread(target=demo, name="demo", daemon=True)
    thread.start()
    return thread


def add_up_flags(up: argparse.ArgumentParser) -> None:
    up.add_argument(
        "--demo",
        action="store_true",
        default=env_flag("RUNSTREAM_DEMO"),
        help="once the node serves, run the demo training job against it "
        "(see `runstream demo`) [env: RUNSTREAM_DEMO=1]",
    )


def register(sub: Any) -> None:
    """Add ``sync`` and ``demo`` to the ``runstream`` command line."""
    sync = sub.add_parser(
        "sync",
        help="re-send events that training processes left in the local spool",
        description=cmd_sync.__doc__,
    )
    sync.add_argument(
        "--spool-dir", type=Path,
        help=_flag_help("the spool directory (default ~/.cache/runstream/spool)", "spool_dir"),
    )
    sync.add_argument(
        "--bootstrap", dest="kafka_bootstrap",
        help=_flag_help("send to this broker instead of the one each segment recorded",
                        "kafka_bootstrap"),
    )
    sync.add_argument(
        "--timeout", type=float, default=None,
        help="give up after this many seconds; what is left stays spooled (default 120) "
        "[env: RUNSTREAM_SYNC_TIMEOUT_S]",
    )
    sync.add_argument(
        "--delivery-timeout-ms", type=int,
        help=_flag_help("acknowledgement timeout per event (default 5000)", "delivery_timeout_ms"),
    )
    sync.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sync.set_defaults(func=cmd_sync)

    demo = sub.add_parser(
        "demo",
        help="train a small elastic-net grid for real and log it through the training client",
        description=cmd_demo.__doc__,
    )
    demo.add_argument(
        "--bootstrap", dest="kafka_bootstrap",
        help=_flag_help("Kafka bootstrap servers (required; KAFKA_BOOTSTRAP_SERVERS is "
                        "honoured too)", "kafka_bootstrap"),
    )
    demo.add_argument("--topic-prefix", help=_flag_help("prefix of the topics", "topic_prefix"))
    demo.add_argument(
        "--data-dir", type=Path,
        help=_flag_help("data directory; artifacts go to <data-dir>/artifacts "
                        "(default ./runstream-data)", "data_dir"),
    )
    demo.add_argument(
        "--artifact-root", type=Path,
        help=_flag_help("where artifacts are written (default <data-dir>/artifacts)",
                        "artifact_root"),
    )
    demo.add_argument(
        "--experiment", dest="experiment_name",
        help=_flag_help("experiment name (default runstream-demo)", "experiment_name"),
    )
    demo.add_argument(
        "--spool-dir", type=Path,
        help=_flag_help("the client's spool directory (default ~/.cache/runstream/spool)",
                        "spool_dir"),
    )
    demo.add_argument("--epochs", type=int,
                      default=int(os.environ.get("RUNSTREAM_DEMO_EPOCHS", "60")),
                      help="training epochs per run (default 60) [env: RUNSTREAM_DEMO_EPOCHS]")
    demo.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    demo.set_defaults(func=cmd_demo)
