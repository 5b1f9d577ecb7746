"""The ``runstream`` command line: one composition root per sub-command."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from runstream import __version__
from runstream.client import commands as client_commands
from runstream.settings import Settings, env_var

log = logging.getLogger("runstream")


def _flag_help(text: str, field: str) -> str:
    return f"{text} [env: {env_var(field)}]"


def _add_node_flags(p: argparse.ArgumentParser, *, with_http: bool = True) -> None:
    p.add_argument(
        "--data-dir",
        type=Path,
        help=_flag_help("where the broker's log, the read model and artifacts live "
                        "(default ./runstream-data)", "data_dir"),
    )
    p.add_argument(
        "--bootstrap",
        dest="kafka_bootstrap",
        help=_flag_help("Kafka bootstrap servers; without it a local broker is started "
                        "(KAFKA_BOOTSTRAP_SERVERS is honoured too)", "kafka_bootstrap"),
    )
    p.add_argument("--topic-prefix", help=_flag_help("prefix of the topics", "topic_prefix"))
    p.add_argument(
        "--partitions",
        type=int,
        help=_flag_help("partitions of a new events topic (default 6)", "partitions"),
    )
    p.add_argument(
        "--replication-factor",
        type=int,
        help=_flag_help("replication factor of new topics (default 1)", "replication_factor"),
    )
    if with_http:
        p.add_argument("--host", help=_flag_help("HTTP listen address (default 127.0.0.1)", "host"))
        p.add_argument(
            "--port", type=int, help=_flag_help("HTTP port (default 5005; 0 = any free)", "port")
        )
    p.add_argument(
        "--broker-port",
        type=int,
        help=_flag_help("port of the local broker (default: a free one)", "broker_port"),
    )
    p.add_argument(
        "--broker",
        choices=["auto", "external", "container", "local"],
        default="auto",
        help="which broker to use when --bootstrap is not given: auto tries the environment, "
        "then a Docker container, then a local Kafka run with Java (default auto)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")


def _settings(args: argparse.Namespace) -> Settings:
    fields = Settings.model_fields
    overrides = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    return Settings(**overrides)


def _raise_system_exit(signum: int, _frame: Any) -> None:
    # SIGTERM is a request to stop, handled exactly like Ctrl-C: clean up, exit 0.
    raise KeyboardInterrupt


def cmd_up(args: argparse.Namespace) -> int:
    """Start the broker (unless one is given), create the topics and serve a query node."""
    import uvicorn

    from runstream.api.app import create_app
    from runstream.deploy.brokers import bootstrap_from_env, provision_broker
    from runstream.node import QueryNode

    settings = _settings(args)
    # SIGTERM ends the process through the same clean-up path as Ctrl-C.
    signal.signal(signal.SIGTERM, _raise_system_exit)
    broker = None
    node = None
    try:
        bootstrap = settings.kafka_bootstrap or bootstrap_from_env()
        if bootstrap is None:
            t0 = time.monotonic()
            print(f"starting Kafka ({args.broker}) under {settings.broker_dir} ...", flush=True)
            broker = provision_broker(settings.broker_dir, mode=args.broker, port=settings.broker_port)
            bootstrap = broker.bootstrap
            print(f"Kafka ({broker.kind}) ready at {bootstrap} in {time.monotonic() - t0:.1f}s",
                  flush=True)
        node = QueryNode.open(settings, bootstrap)
        node.start_retention_job()
        for problem in node.topics.problems:
            print(f"WARNING: {problem}", file=sys.stderr, flush=True)
        app = create_app(node)
        config = uvicorn.Config(
            app, host=settings.host, port=settings.port, log_level="warning", access_log=False
        )
        server = uvicorn.Server(config)
        _announce_when_serving(server, settings, bootstrap)
        if getattr(args, "demo", False):
            client_commands.demo_when_serving(server, settings, bootstrap)
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        print("stopping ...", flush=True)
        if node is not None:
            node.close()
        if broker is not None:
            broker.stop()
        print("stopped", flush=True)
    return 0


def _announce_when_serving(server: Any, settings: Settings, bootstrap: str) -> None:
    import threading

    def announce() -> None:
        while not server.started:
            if server.should_exit:
                return
            time.sleep(0.05)
        port = settings.port
        for s in getattr(server, "servers", []):
            for sock in s.sockets:
                port = sock.getsockname()[1]
        url = f"http://{settings.host}:{port}"
        print(
            f"runstream {__version__} is serving\n"
            f"  web UI and API:  {url}/\n"
            f"  health:          {url}/health\n"
            f"  mlflow client:   export MLFLOW_TRACKING_URI={url}\n"
            f"  runstream client: export RUNSTREAM_KAFKA_BOOTSTRAP={bootstrap} "
            f"RUNSTREAM_ARTIFACT_ROOT={settings.artifacts_dir.resolve()}"
            + ("" if settings.topic_prefix == "runstream"
               else f" RUNSTREAM_TOPIC_PREFIX={settings.topic_prefix}")
            + "\n"
            f"  data:            {settings.data_dir.resolve()}\n"
            "Press Ctrl-C to stop.",
            flush=True,
        )

    threading.Thread(target=announce, name="announce", daemon=True).start()


def cmd_broker(args: argparse.Namespace) -> int:
    """Run only the local Kafka broker in the foreground (or just resolve its jars)."""
    from runstream.deploy.brokers import LocalKafka, resolve_kafka_classpath

    if args.prepare:
        t0 = time.monotonic()
        cp = resolve_kafka_classpath(quiet=False)
        print(f"Kafka jars resolved ({len(cp.split(':'))} jars) in {time.monotonic() - t0:.1f}s")
        return 0
    settings = _settings(args)
    signal.signal(signal.SIGTERM, _raise_system_exit)
    broker = LocalKafka(settings.broker_dir, port=settings.broker_port)
    try:
        broker.start()
        print(f"Kafka ready at {broker.bootstrap} in {broker.started_in_s:.1f}s "
              f"(log: {broker.broker_log}); Ctrl-C to stop", flush=True)
        while broker.process is not None and broker.process.poll() is None:
            time.sleep(0.5)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        broker.stop()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="runstream",
        description="Event-sourced experiment tracking: training jobs log to Kafka, query "
        "nodes project the log into DuckDB and serve search, compare and an MLflow-compatible API.",
    )
    parser.add_argument("--version", action="version", version=f"runstream {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    up = sub.add_parser(
        "up",
        help="start a broker, create the topics and serve a query node (API, UI, projector)",
        description=cmd_up.__doc__,
    )
    _add_node_flags(up)
    client_commands.add_up_flags(up)
    up.set_defaults(func=cmd_up)

    broker = sub.add_parser(
        "broker",
        help="run only the local single-node Kafka (KRaft) in the foreground",
        description=cmd_broker.__doc__,
    )
    broker.add_argument("--data-dir", type=Path, help=_flag_help("data directory", "data_dir"))
    broker.add_argument(
        "--broker-port", type=int, help=_flag_help("listen port (default: free)", "broker_port")
    )
    broker.add_argument(
        "--prepare",
        action="store_true",
        help="only resolve the broker's jars with Maven into the cache and exit",
    )
    broker.set_defaults(func=cmd_broker)

    from runstream import ops_commands

    ops_commands.register(sub)
    client_commands.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "verbose", False):
        # Connection-refused chatter while a broker starts or stops is not news.
        logging.getLogger("runstream.librdkafka").setLevel(logging.CRITICAL)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except Exception as exc:
        from runstream.deploy.brokers import BrokerError
        from runstream.errors import RunstreamError

        if isinstance(exc, RunstreamError | BrokerError):
            print(f"runstream: error: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
