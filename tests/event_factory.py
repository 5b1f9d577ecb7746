"""Hand-made events for tests: one valid example of every event type."""

from __future__ import annotations

import uuid

from runstream.schemas import (
    ArtifactLogged,
    ArtifactLoggedBody,
    Event,
    ExperimentCreated,
    ExperimentCreatedBody,
    ExperimentDeleted,
    ExperimentRenamed,
    ExperimentRenamedBody,
    ExperimentRestored,
    ExperimentTagDeleted,
    ExperimentTagDeletedBody,
    ExperimentTagSet,
    ExperimentTagSetBody,
    MetricsLogged,
    MetricsLoggedBody,
    MetricsPacked,
    MetricsPackedBody,
    ParamsLogged,
    ParamsLoggedBody,
    RunCreated,
    RunCreatedBody,
    RunDeleted,
    RunEnded,
    RunEndedBody,
    RunPurged,
    RunRenamed,
    RunRenamedBody,
    RunRestored,
    TagDeleted,
    TagDeletedBody,
    TagSet,
    TagSetBody,
    new_event,
)

T0 = 1_764_000_000_000


def ev(cls: type, body: object = None, *, t: int = T0, **ids: str) -> Event:
    return new_event(cls, body, event_time_ms=t, producer="test", **ids)  # type: ignore[no-any-return]


def run_created(run_id: str, exp_id: str = "0", *, t: int = T0, parent: str | None = None,
                name: str = "", exp_name: str | None = None, tags: dict[str, str] | None = None
                ) -> Event:
    return ev(
        RunCreated,
        RunCreatedBody(name=name or run_id, user="alice", source_name="train.py",
                       source_type="LOCAL", git_commit="abc123", start_time_ms=t,
                       parent_run_id=parent, tags=tags or {}, python_version="3.11.7",
                       packages=["numpy==2.1.0"], experiment_name=exp_name),
        t=t, run_id=run_id, experiment_id=exp_id,
    )


def metrics(run_id: str, points: list[tuple[str, float, int, int]], *, t: int = T0) -> Event:
    return ev(MetricsLogged, MetricsLoggedBody.from_points(points), t=t, run_id=run_id)


def packed_metrics(run_id: str, points: list[tuple[str, float, int, int]], *, t: int = T0) -> Event:
    """The same points as :func:`metrics`, in the packed form the runstream client sends."""
    return ev(MetricsPacked, MetricsPackedBody.from_points(points), t=t, run_id=run_id)


def params(run_id: str, kv: dict[str, str], *, t: int = T0) -> Event:
    body = ParamsLoggedBody(params=[{"key": k, "value": v} for k, v in kv.items()])
    return ev(ParamsLogged, body, t=t, run_id=run_id)


def one_of_each() -> list[Event]:
    """A valid event of every type, in an order a projector can apply."""
    exp = uuid.uuid4().hex[:16]
    run = uuid.uuid4().hex
    return [
        ev(ExperimentCreated, ExperimentCreatedBody(name=f"exp-{exp}", tags={"team": "a"}),
           experiment_id=exp),
        ev(ExperimentRenamed, ExperimentRenamedBody(name=f"exp-{exp}-renamed"), experiment_id=exp),
        ev(ExperimentTagSet, ExperimentTagSetBody(key="k", value="v"), experiment_id=exp),
        ev(ExperimentTagSet, ExperimentTagSetBody(key="gone", value="v"), experiment_id=exp),
        ev(ExperimentTagDeleted, ExperimentTagDeletedBody(key="gone"), experiment_id=exp),
        ev(ExperimentDeleted, experiment_id=exp),
        ev(ExperimentRestored, experiment_id=exp),
        run_created(run, exp, tags={"mlflow.user": "alice"}),
        ev(RunRenamed, RunRenamedBody(name="better-name"), run_id=run),
        params(run, {"lr": "0.1", "layers": "3"}),
        metrics(run, [("loss", 1.0, 0, T0), ("loss", float("nan"), 1, T0 + 1),
                      ("acc", float("inf"), 0, T0), ("acc", float("-inf"), 1, T0 + 1)]),
        packed_metrics(run, [("loss", 0.5, 2, T0 + 2), ("acc", float("nan"), 2, T0 + 2)]),
        ev(TagSet, TagSetBody(key="color", value="blue"), run_id=run),
        ev(TagDeleted, TagDeletedBody(key="color"), run_id=run),
        ev(ArtifactLogged, ArtifactLoggedBody(path="model/MLmodel", size=10, digest="ab" * 32),
           run_id=run),
        ev(RunEnded, RunEndedBody(status="FINISHED", end_time_ms=T0 + 10), run_id=run),
        ev(RunDeleted, run_id=run),
        ev(RunRestored, run_id=run),
        ev(RunPurged, run_id=run),
    ]
