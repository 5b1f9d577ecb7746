"""The module-level API, as MLflow's: ``runstream.start_run()``, ``runstream.log_metric()``...

One default :class:`~runstream.client.core.Client` per process, made on first use from
``RUNSTREAM_*`` settings (or :func:`configure`), and a stack of active runs: ``start_run``
pushes, ``end_run`` (or leaving the ``with`` block) pops. Logging without an active run
starts one, as MLflow does.

Distributed jobs: every rank gets the same ``RUNSTREAM_RUN_ID`` (and ideally
``RUNSTREAM_EXPERIMENT_ID`` or ``RUNSTREAM_EXPERIMENT_NAME``). The first top-level
``start_run()`` of rank 0 (``RUNSTREAM_RANK``, else ``RANK``) creates that run and returns
once ``run.created`` is acknowledged; every other rank attaches: it logs to the run but
never creates or ends it. Other ranks need not wait for rank 0: events that reach the log
before ``run.created`` wait in the read model and are applied right after it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from runstream.client.core import (
    _EXIT_HOOKS,
    _GOOD_KEYS,
    Client,
    Run,
    _check_metric_key,
    _time_ns,
    exit_status,
    successor,
)
from runstream.client.settings import ClientSettings
from runstream.errors import InvalidInput
from runstream.schemas.ids import experiment_id_for_name
from runstream.settings import Settings

_lock = threading.RLock()
_client: Client | None = None
_overrides: dict[str, Any] = {}
_stack: list[Run] = []
_last: Run | None = None
_experiment: tuple[str | None, str | None] = (None, None)  # (id, name) from set_experiment
_env_run_used = False
_attached: dict[str, Run] = {}


# ------------------------------------------------------------------ the client


def configure(**overrides: Any) -> Client:
    """Set up the default client (closing the previous one); unknown keys are an error.

    Accepts any :class:`~runstream.settings.Settings` field (``kafka_bootstrap``,
    ``topic_prefix``, ``data_dir``, ``artifact_root``) and any
    :class:`~runstream.client.settings.ClientSettings` field (``spool_dir``,
    ``max_pending_points``, ``flush_interval_ms``, ...); the rest comes from ``RUNSTREAM_*``.
    """
    global _client
    unknown = set(overrides) - set(Settings.model_fields) - set(ClientSettings.model_fields)
    if unknown:
        raise InvalidInput(f"unknown setting(s): {', '.join(sorted(unknown))}")
    with _lock:
        old, _client = _client, None
        _overrides.clear()
        _overrides.update(overrides)
        _reset_state()
    if old is not None:
        old.close()
    return get_client()


def get_client() -> Client:
    """The process's default client (made from ``RUNSTREAM_*`` and :func:`configure`)."""
    global _client
    client = _client
    if client is not None and not client._closed:
        return client
    with _lock:
        if _client is not None and _client._pid != os.getpid():
            _client = successor(_client)  # a forked child carries on with its own client
        if _client is None or _client._closed:
            settings = Settings(**{k: v for k, v in _overrides.items() if k in Settings.model_fields})
            options = ClientSettings(
                **{k: v for k, v in _overrides.items() if k in ClientSettings.model_fields})
            _client = Client(settings, options)
        return _client


def _reset_state() -> None:
    global _last, _experiment, _env_run_used
    _stack.clear()
    _attached.clear()
    _last = None
    _experiment = (None, None)
    _env_run_used = False


def shutdown(timeout_s: float | None = None) -> str:
    """End active runs, flush and stop the default client (``atexit`` does this too)."""
    global _client
    with _lock:
        client, _client = _client, None
    if client is None:
        return "closed"
    result = client.close(timeout_s)
    with _lock:
        _reset_state()
    return result


def _end_active_runs_at_exit() -> None:
    status = exit_status()
    while _stack:
        _stack[-1].end(status)


_EXIT_HOOKS.append(_end_active_runs_at_exit)


# ------------------------------------------------------------------ experiments


def set_experiment(experiment_name: str | None = None, experiment_id: str | None = None) -> str:
    """Make later runs go to this experiment (created, by name, with its first run)."""
    global _experiment
    if (experiment_name is None) == (experiment_id is None):
        raise InvalidInput("set_experiment needs exactly one of experiment_name, experiment_id")
    if experiment_name is not None:
        exp_id = get_client().create_experiment(experiment_name)
        _experiment = (exp_id, experiment_name)
    else:
        exp_id = str(experiment_id)
        _experiment = (exp_id, None)
    return exp_id


def set_experiment_tag(key: str, value: Any) -> None:
    exp_id = _experiment[0] or _default_experiment(get_client())[0] or "0"
    get_client().set_experiment_tag(exp_id, key, value)


def _default_experiment(client: Client) -> tuple[str | None, str | None]:
    if _experiment != (None, None):
        return _experiment
    opts = client.options
    if opts.experiment_name:
        return experiment_id_for_name(opts.experiment_name), opts.experiment_name
    if opts.experiment_id:
        return opts.experiment_id, None
    return None, None


# ------------------------------------------------------------------------ runs


def start_run(
    run_id: str | None = None,
    experiment_id: str | None = None,
    run_name: str | None = None,
    nested: bool = False,
    parent_run_id: str | None = None,
    tags: Mapping[str, Any] | None = None,
    description: str | None = None,
    *,
    experiment_name: str | None = None,
) -> Run:
    """Start a run and make it active; use as ``with runstream.start_run(...) as run:``.

    - ``experiment_name`` or ``experiment_id`` choose the experiment (else the one given to
      :func:`set_experiment`, ``RUNSTREAM_EXPERIMENT_NAME``/``_ID``, or the default "0");
    - ``nested=True`` makes it a child of the active run (``mlflow.parentRunId``); a
      nested run goes to its parent's experiment unless told otherwise;
    - ``run_id`` resumes an existing run: nothing is created, ending it publishes its end;
    - ``tags`` and ``description`` (the note) are set at creation.
    """
    global _env_run_used, _last
    client = get_client()
    with _lock:
        active = _stack[-1] if _stack else None
        if active is not None and not nested and parent_run_id is None:
            raise InvalidInput(
                f"run {active.run_id} is already active; end it first or pass nested=True")
        if nested and active is not None and parent_run_id is None:
            parent_run_id = active.run_id
        if experiment_id is None and experiment_name is None:
            if nested and active is not None and active.experiment_id:
                experiment_id = active.experiment_id
            else:
                experiment_id, experiment_name = _default_experiment(client)
        if experiment_id is None and experiment_name is not None:
            experiment_id = experiment_id_for_name(experiment_name)
        create, owner, wait = True, True, False
        opts = client.options
        if run_id is None and active is None and opts.run_id and not _env_run_used:
            # A distributed job: rank 0 creates the shared run, the others attach to it.
            _env_run_used = True
            run_id = opts.run_id
            if opts.effective_rank() == 0:
                wait = True
            else:
                create = owner = False
        elif run_id is not None:
            create = False  # resume: the run exists
        run = client.start_run(
            run_id=run_id,
            experiment_id=experiment_id,
            experiment_name=experiment_name if create else None,
            run_name=run_name,
            parent_run_id=parent_run_id,
            tags=tags,
            description=description,
            create=create,
            owner=owner,
            wait_for_ack=wait,
            on_end=_popped,
        )
        if not create and (tags or description):
            run.set_tags({**(tags or {}), **({"mlflow.note.content": description}
                                              if description else {})})
        _stack.append(run)
        _last = run
        return run


def _popped(run: Run) -> None:
    with _lock:
        if run in _stack:
            _stack.remove(run)


def end_run(status: str = "FINISHED") -> None:
    """End the active run (FINISHED by default) and wait until its events are delivered."""
    with _lock:
        run = _stack[-1] if _stack else None
    if run is not None:
        run.end(status)


def active_run() -> Run | None:
    return _stack[-1] if _stack else None


def last_active_run() -> Run | None:
    return _stack[-1] if _stack else _last


def _run(run_id: str | None = None) -> Run:
    if run_id is not None:
        for run in _stack:
            if run.run_id == run_id:
                return run
        attached = _attached.get(run_id)
        if attached is None or attached.ended:
            attached = _attached[run_id] = get_client().attach(run_id)
        return attached
    try:
        return _stack[-1]
    except IndexError:
        return start_run()


# -------------------------------------------------------------------- logging


def log_metric(
    key: str,
    value: float,
    step: int | None = None,
    timestamp: int | None = None,
    *,
    run_id: str | None = None,
    synchronous: bool | None = None,
) -> None:
    """Queue one metric point on the active run and return at once (``synchronous=True``
    also waits until it is delivered)."""
    if _stack and run_id is None:
        # The hot path, Run.log_metric inlined: a key check against a set, one tuple, one
        # deque append, one length check.
        run = _stack[-1]
        if key not in _GOOD_KEYS:
            _check_metric_key(key)
        q = run._q
        q.append((
            run.run_id,
            key,
            value if value.__class__ is float else float(value),  # a float as is: ~10% less
            0 if step is None else step if step.__class__ is int else int(step),
            _time_ns() // 1_000_000 if timestamp is None else int(timestamp),
        ))
        if len(q) >= run._soft:
            run._client._pressure()
    else:
        run = _run(run_id)
        run.log_metric(key, value, step, timestamp)
    if synchronous:
        run._client.flush()


def log_metrics(
    metrics: Mapping[str, float],
    step: int | None = None,
    timestamp: int | None = None,
    *,
    run_id: str | None = None,
    synchronous: bool | None = None,
) -> None:
    run = _run(run_id)
    run.log_metrics(metrics, step, timestamp)
    if synchronous:
        run._client.flush()


def log_metric_history(
    key: str,
    values: Iterable[float],
    steps: Iterable[int],
    timestamps: Iterable[int] | int | None = None,
    *,
    run_id: str | None = None,
    synchronous: bool | None = None,
) -> int:
    """Queue many points of one metric at once, column by column (see
    ``Run.log_metric_history``); returns how many."""
    run = _run(run_id)
    n = run.log_metric_history(key, values, steps, timestamps)
    if synchronous:
        run._client.flush()
    return n


def log_param(key: str, value: Any) -> Any:
    return _run().log_param(key, value)


def log_params(params: Mapping[str, Any]) -> None:
    _run().log_params(params)


def set_tag(key: str, value: Any) -> None:
    _run().set_tag(key, value)


def set_tags(tags: Mapping[str, Any]) -> None:
    _run().set_tags(tags)


def delete_tag(key: str) -> None:
    _run().delete_tag(key)


def set_note(text: str) -> None:
    _run().set_note(text)


def set_run_name(name: str) -> None:
    _run().set_name(name)


def log_artifact(local_path: str | Path, artifact_path: str | None = None) -> None:
    _run().log_artifact(local_path, artifact_path)


def log_artifacts(local_dir: str | Path, artifact_path: str | None = None) -> None:
    _run().log_artifacts(local_dir, artifact_path)


def log_model(local_dir: str | Path, artifact_path: str = "model") -> None:
    _run().log_model(local_dir, artifact_path)


def log_text(text: str, artifact_file: str) -> None:
    _run().log_text(text, artifact_file)


def log_dict(dictionary: Mapping[str, Any], artifact_file: str) -> None:
    _run().log_dict(dictionary, artifact_file)


def get_artifact_uri(artifact_path: str | None = None) -> str:
    return _run().get_artifact_uri(artifact_path)


def flush(timeout_s: float | None = None) -> str:
    """Wait until everything logged so far is delivered: "delivered", "spooled" or "timeout"."""
    return get_client().flush(timeout_s)
