"""Operator commands: ``runstream project``, ``rebuild``, ``retention``, ``export``, ``import``
and ``dead-letters``."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from runstream.settings import Settings, env_var


def _settings(args: argparse.Namespace) -> Settings:
    fields = Settings.model_fields
    return Settings(**{k: v for k, v in vars(args).items() if k in fields and v is not None})


def _bootstrap(settings: Settings) -> str:
    from runstream.deploy.brokers import bootstrap_from_env
    from runstream.errors import ConfigError

    bootstrap = settings.kafka_bootstrap or bootstrap_from_env()
    if not bootstrap:
        raise ConfigError(f"no broker given: pass --bootstrap or set {env_var('kafka_bootstrap')}")
    return bootstrap


def _progress_line(done: int, total: int, started: float) -> None:
    rate = done / max(time.monotonic() - started, 1e-9)
    pct = 100.0 * done / total if total else 100.0
    sys.stderr.write(f"\r  {done:,}/{total:,} messages ({pct:5.1f}%), {rate:,.0f}/s   ")
    sys.stderr.flush()


def cmd_project(args: argparse.Namespace) -> int:
    """Run the projector alone: consume the log into this data directory's read model."""
    from runstream.kafka_log import ensure_topics
    from runstream.projector import Projector
    from runstream.read_store import ReadStore

    settings = _settings(args)
    bootstrap = _bootstrap(settings)
    ensure_topics(bootstrap, settings.events_topic, settings.dead_letter_topic,
                  partitions=settings.partitions, replication_factor=settings.replication_factor)
    store = ReadStore(settings.read_model_dir)
    projector = Projector(store, bootstrap, settings.events_topic, settings.dead_letter_topic,
                          batch_max_messages=settings.batch_max_messages,
                          batch_max_ms=settings.batch_max_ms)

    def stop(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        if args.until_caught_up:
            started = time.monotonic()
            high = projector.consumer.high_watermarks(projector.partitions)
            projector.run_until(high, lambda a, h: _progress_line(sum(a.values()), sum(h.values()), started))
            projector.settle_records()
            sys.stderr.write("\n")
        else:
            print(f"projecting {settings.events_topic} into {store.path}; Ctrl-C to stop", flush=True)
            projector.run()
    except KeyboardInterrupt:
        pass
    finally:
        projector.stop()
        store.close()
    return 0


def _node_url(args: argparse.Namespace, settings: Settings) -> str:
    return args.node or f"http://{settings.host}:{settings.port}"


def _post(url: str, body: dict[str, Any] | None = None, timeout: float = 600) -> dict[str, Any]:
    data = json.dumps(body or {}).encode()
    req = urllib.request.Request(url, data=data, method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        result: dict[str, Any] = json.loads(r.read())
        return result


def _node_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def cmd_rebuild(args: argparse.Namespace) -> int:
    """Replay the log from its first offset into a new read-model file and switch to it.

    With a node running (at --node, or the configured host and port), the node rebuilds
    while it keeps answering from the old file. Without one, the data directory's read
    model is rebuilt in place; the next start uses the new file.
    """
    settings = _settings(args)
    url = _node_url(args, settings)
    started = time.monotonic()
    if _node_answers(url):
        print(f"asking the node at {url} to rebuild", flush=True)
        _post(f"{url}/admin/rebuild")
        while True:
            with urllib.request.urlopen(f"{url}/admin/rebuild", timeout=10) as r:
                status = json.loads(r.read())
            _progress_line(status["applied"], status["target"], started)
            if status["state"] in ("done", "failed"):
                break
            time.sleep(0.5)
        sys.stderr.write("\n")
        if status["state"] == "failed":
            print(f"rebuild failed: {status['error']}", file=sys.stderr)
            return 1
        print(f"rebuilt into generation {status['generation']} in {time.monotonic() - started:.1f}s")
        return 0
    return _rebuild_offline(settings, started)


def _rebuild_offline(settings: Settings, started: float) -> int:
    from runstream.projector import Projector
    from runstream.read_store import ReadStore, SingleFileStore

    bootstrap = _bootstrap(settings)
    store = ReadStore(settings.read_model_dir)
    new_path = store.next_path()
    con = store.open_other(new_path)
    print(f"no node answers; rebuilding {store.path.name} -> {new_path.name}", flush=True)
    projector = Projector(SingleFileStore(con), bootstrap, settings.events_topic,
                          settings.dead_letter_topic, group_id="runstream-rebuild",
                          batch_max_messages=settings.batch_max_messages,
                          batch_max_ms=settings.batch_max_ms, send_dead_letters=False)
    try:
        high = projector.consumer.high_watermarks(projector.partitions)
        projector.run_until(high, lambda a, h: _progress_line(sum(a.values()), sum(h.values()), started))
        projector.settle_records()
    finally:
        projector.stop()
    sys.stderr.write("\n")
    con.execute("CHECKPOINT")
    store.swap(con, new_path)
    time.sleep(5.5)  # let the old file be released and removed
    store.close()
    print(f"rebuilt into {new_path} in {time.monotonic() - started:.1f}s")
    return 0


def cmd_retention(args: argparse.Namespace) -> int:
    """Purge runs deleted longer ago than the retention window (through the running node)."""
    settings = _settings(args)
    url = _node_url(args, settings)
    if not _node_answers(url):
        print(f"no node answers at {url}; start one (runstream up) or pass --node", file=sys.stderr)
        return 2
    result = _post(f"{url}/admin/retention", {"dry_run": args.dry_run, "as_of_ms": args.as_of_ms})
    verb = "would purge" if args.dry_run else "purged"
    print(f"{verb} {result['count']} run(s)")
    for run_id in result["runs"]:
        print(f"  {run_id}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Write the events of runs (all, or of --experiment-id / --run-id) to a JSON Lines file."""
    from runstream.transfer import Selection, export_events

    settings = _settings(args)
    started = time.monotonic()
    selection = Selection(frozenset(args.experiment_id or ()), frozenset(args.run_id or ()))
    n = export_events(_bootstrap(settings), settings.events_topic, args.file, selection,
                      lambda d, t: _progress_line(d, t, started))
    sys.stderr.write("\n")
    print(f"exported {n:,} events to {args.file}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """Publish the events of an export file into this deployment; importing twice is harmless."""
    from runstream.transfer import import_events

    settings = _settings(args)
    started = time.monotonic()
    n = import_events(_bootstrap(settings), settings.events_topic, args.file,
                      lambda d, t: _progress_line(d, t, started))
    sys.stderr.write("\n")
    print(f"imported {n:,} events from {args.file} (events already applied are skipped)")
    return 0


# Dead letters a newer projector can apply: an event type or major a consumer did not know.
REDRIVABLE = ("unknown_type", "unknown_major_version")


def cmd_dead_letters(args: argparse.Namespace) -> int:
    """Show the dead-letter topic by reason, or re-drive its messages into the events topic.

    list     counts by reason, and the last few letters of each with where they came from
             and why (nothing is changed).
    redrive  publishes the letters of the given reasons (by default the ones a newer
             projector can apply: unknown_type, unknown_major_version) to the events topic
             again, unchanged, once per distinct message. Safe to repeat: projectors skip
             event ids they already applied; a message that still cannot be applied is
             dead-lettered again.
    """
    from runstream.dead_letters import read_dead_letters, redrive

    settings = _settings(args)
    bootstrap = _bootstrap(settings)
    started = time.monotonic()
    progress = (lambda d, t: _progress_line(d, t, started)) if sys.stderr.isatty() else None
    if args.action == "list":
        counts: dict[str, int] = {}
        last: dict[str, list[str]] = {}
        for letter in read_dead_letters(bootstrap, settings.dead_letter_topic, progress):
            counts[letter.reason] = counts.get(letter.reason, 0) + 1
            shown = last.setdefault(letter.reason, [])
            shown.append(f"    {letter.source}: {letter.detail[:160]}")
            if len(shown) > max(args.show, 0):
                shown.pop(0)
        if progress:
            sys.stderr.write("\n")
        if not counts:
            print(f"no dead letters in {settings.dead_letter_topic}")
            return 0
        print(f"{sum(counts.values()):,} dead letter(s) in {settings.dead_letter_topic}:")
        for reason, n in sorted(counts.items(), key=lambda kv: -kv[1]):
            print(f"  {reason}: {n:,}" + ("   (re-drivable)" if reason in REDRIVABLE else ""))
            for line in last[reason]:
                print(line)
        return 0
    reasons = args.reason or list(REDRIVABLE)
    result = redrive(bootstrap, settings.dead_letter_topic, settings.events_topic, reasons,
                     dry_run=args.dry_run, progress=progress)
    if progress:
        sys.stderr.write("\n")
    verb = "would re-drive" if args.dry_run else "re-drove"
    print(f"{verb} {result.sent:,} message(s) of reason {', '.join(sorted(reasons))} "
          f"into {settings.events_topic}")
    if result.repeats:
        print(f"  {result.repeats:,} more letter(s) repeated a message already re-driven")
    for reason, n in sorted(result.skipped.items()):
        print(f"  left alone: {n:,} of reason {reason}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the operator commands to the ``runstream`` parser."""

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", type=Path, help=f"data directory [env: {env_var('data_dir')}]")
        p.add_argument("--bootstrap", dest="kafka_bootstrap",
                       help=f"Kafka bootstrap servers [env: {env_var('kafka_bootstrap')}]")
        p.add_argument("--topic-prefix", help=f"prefix of the topics [env: {env_var('topic_prefix')}]")

    p = sub.add_parser("project", help="run the projector alone (no HTTP)", description=cmd_project.__doc__)
    common(p)
    p.add_argument("--until-caught-up", action="store_true",
                   help="exit once the log's current end is applied")
    p.set_defaults(func=cmd_project)

    p = sub.add_parser("export", help="export runs' events to a file (copy between deployments)",
                       description=cmd_export.__doc__)
    common(p)
    p.add_argument("file", type=Path, help="output file (.jsonl, or .jsonl.gz to compress)")
    p.add_argument("--experiment-id", action="append", help="export this experiment's runs (repeatable)")
    p.add_argument("--run-id", action="append", help="export this run (repeatable)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("import", help="import an export file into this deployment",
                       description=cmd_import.__doc__)
    common(p)
    p.add_argument("file", type=Path, help="a file written by runstream export")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("dead-letters", help="show the dead-letter topic, or re-drive its messages",
                       description=cmd_dead_letters.__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    common(p)
    p.add_argument("action", choices=("list", "redrive"), help="what to do (see above)")
    p.add_argument("--reason", action="append",
                   help="redrive: the letters of this reason (repeatable; default: "
                   + ", ".join(REDRIVABLE) + ")")
    p.add_argument("--dry-run", action="store_true", help="redrive: count, publish nothing")
    p.add_argument("--show", type=int, default=3,
                   help="list: how many of the last letters of each reason to show (default 3)")
    p.set_defaults(func=cmd_dead_letters)

    for name, func, helptext in (
        ("rebuild", cmd_rebuild, "replay the log into a new read-model file and switch to it"),
        ("retention", cmd_retention, "purge runs deleted longer ago than the retention window"),
    ):
        p = sub.add_parser(name, help=helptext, description=func.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        common(p)
        p.add_argument("--node", help="URL of the running node (default http://HOST:PORT from settings)")
        p.add_argument("--host", help=f"node host [env: {env_var('host')}]")
        p.add_argument("--port", type=int, help=f"node port [env: {env_var('port')}]")
        if name == "retention":
            p.add_argument("--dry-run", action="store_true", help="list the runs, purge nothing")
            p.add_argument("--as-of-ms", type=int, help="the clock in ms since the epoch (default now)")
        p.set_defaults(func=func)
