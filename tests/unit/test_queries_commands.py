"""The write side (runstream.commands) against a node double: ``publish`` folds the events into
an in-memory read model at once, as a node's projector would (no broker).

What is checked: the events each command writes (one per run for multi-run commands, resolved
when accepted), validation before anything is published, and the state a read then sees.
"""

from __future__ import annotations

import itertools

import duckdb
import pytest
from runstream import queries
from runstream.commands import MAX_BULK_RUNS, Commands
from runstream.errors import AlreadyExists, Conflict, InvalidInput, NotFound
from runstream.projections.apply_events import apply_batch, create_read_model
from runstream.read_store import SingleFileStore
from runstream.schemas import Event, RunCreated, RunDeleted, RunPurged, RunRestored, new_event
from runstream.schemas.ids import experiment_id_for_name

from tests.event_factory import T0


class MemoryNode:
    """A node double: a read model in memory; publish applies the events straight away."""

    def __init__(self) -> None:
        self.con = duckdb.connect()
        create_read_model(self.con)
        self.store = SingleFileStore(self.con)
        self.reading = self.store.reading
        self.published: list[list[Event]] = []

    def publish(self, events: list[Event], *, wait: bool = True) -> list[object]:
        self.published.append(list(events))
        cur = self.con.cursor()
        cur.execute("BEGIN")
        result = apply_batch(cur, events)
        cur.execute("COMMIT")
        assert not result.rejected, result.rejected
        return []

    def events(self) -> list[Event]:
        return [e for batch in self.published for e in batch]

    def run(self, run_id: str) -> queries.RunRecord:
        with self.reading() as cur:
            return queries.get_run(cur, run_id)


class Clock:
    def __init__(self, start: int = T0) -> None:
        self.now = start

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def node() -> MemoryNode:
    return MemoryNode()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def commands(node: MemoryNode, clock: Clock) -> Commands:
    return Commands(node, producer="test", clock=clock)  # type: ignore[arg-type]


@pytest.fixture
def exp(commands: Commands) -> str:
    return commands.create_experiment("exp")


def refused(node: MemoryNode, error: type[Exception], match: str, call) -> None:
    """``call`` raises ``error`` and publishes nothing."""
    before = len(node.published)
    with pytest.raises(error, match=match):
        call()
    assert len(node.published) == before, "a refused command published events"


# ------------------------------------------------------------------------ experiments


def test_create_experiment(node: MemoryNode, commands: Commands) -> None:
    exp_id = commands.create_experiment("vision", tags={"team": "cv"})
    assert exp_id == experiment_id_for_name("vision")
    with node.reading() as cur:
        exp = queries.get_experiment(cur, exp_id)
    assert (exp.name, exp.artifact_location, exp.tags) == ("vision", f"mlflow-artifacts:/{exp_id}",
                                                           {"team": "cv"})
    assert exp.creation_time == T0


def test_create_experiment_name_taken(node: MemoryNode, commands: Commands) -> None:
    exp_id = commands.create_experiment("taken")
    refused(node, AlreadyExists, r"Experiment\(name=taken\) already exists\.",
            lambda: commands.create_experiment("taken"))
    commands.delete_experiment(exp_id)
    refused(node, AlreadyExists, "deleted state", lambda: commands.create_experiment("taken"))


def test_create_experiment_next_generation_when_old_id_renamed_away(commands: Commands) -> None:
    first = commands.create_experiment("reused")
    commands.rename_experiment(first, "archived")
    second = commands.create_experiment("reused")
    assert second == experiment_id_for_name("reused", 1) != first


def test_create_experiment_fills_a_placeholder(node: MemoryNode, commands: Commands) -> None:
    # An SDK run named the experiment before its creation event arrived.
    exp_id = experiment_id_for_name("from-sdk")
    node.publish([new_event(RunCreated, {"name": "r", "start_time_ms": T0,
                                         "experiment_name": "from-sdk"},
                            run_id="r1", experiment_id=exp_id)])
    assert commands.create_experiment("from-sdk") == exp_id
    with node.reading() as cur:
        assert cur.execute("SELECT placeholder FROM experiments WHERE experiment_id = ?",
                           [exp_id]).fetchone() == (False,)


@pytest.mark.parametrize(("name", "location", "match"), [
    ("", None, "name"), ("   ", None, "name"), ("x" * 501, None, "maximum length of 500"),
    ("ok", "runs:/abc", "runs:/"),
])
def test_create_experiment_validation(node, commands, name, location, match) -> None:
    refused(node, InvalidInput, match, lambda: commands.create_experiment(name, location))


def test_rename_experiment(node: MemoryNode, commands: Commands) -> None:
    a, b = commands.create_experiment("a"), commands.create_experiment("b")
    commands.rename_experiment(a, "a2")
    with node.reading() as cur:
        assert queries.get_experiment(cur, a).name == "a2"
    refused(node, AlreadyExists, "already exists", lambda: commands.rename_experiment(a, "b"))
    refused(node, NotFound, "No Experiment", lambda: commands.rename_experiment("nope", "c"))
    commands.delete_experiment(b)
    refused(node, Conflict, "non-active", lambda: commands.rename_experiment(b, "c"))


def test_delete_and_restore_experiment_take_their_runs(node, commands, clock, exp) -> None:
    early = commands.create_run(exp, name="deleted-before")
    runs = [commands.create_run(exp, name=f"r{i}") for i in range(3)]
    clock.now = T0 + 10
    commands.delete_runs([early])
    clock.now = T0 + 20
    assert commands.delete_experiment(exp) == 3
    deletes = [e for e in node.published[-1] if isinstance(e, RunDeleted)]
    assert sorted(e.run_id for e in deletes) == sorted(runs)
    assert {e.event_time_ms for e in node.published[-1]} == {T0 + 20}
    refused(node, NotFound, "No active Experiment", lambda: commands.delete_experiment(exp))
    clock.now = T0 + 30
    assert commands.restore_experiment(exp) == 3  # not the run deleted on its own before
    assert node.run(early).lifecycle_stage == "deleted"
    assert all(node.run(r).lifecycle_stage == "active" for r in runs)
    refused(node, NotFound, "No deleted Experiment", lambda: commands.restore_experiment(exp))


def test_set_experiment_tag(node: MemoryNode, commands: Commands, exp: str) -> None:
    commands.set_experiment_tag(exp, "owner", "ann")
    with node.reading() as cur:
        assert queries.get_experiment(cur, exp).tags == {"owner": "ann"}
    refused(node, InvalidInput, "maximum length", lambda: commands.set_experiment_tag(exp, "k", "v" * 20_001))
    refused(node, NotFound, "No Experiment", lambda: commands.set_experiment_tag("nope", "k", "v"))


def test_delete_experiment_tag(node: MemoryNode, commands: Commands, exp: str) -> None:
    commands.set_experiment_tag(exp, "owner", "ann")
    commands.set_experiment_tag(exp, "team", "nlp")
    commands.delete_experiment_tag(exp, "owner")
    with node.reading() as cur:
        assert queries.get_experiment(cur, exp).tags == {"team": "nlp"}
    refused(node, NotFound, "No tag with name: owner",
            lambda: commands.delete_experiment_tag(exp, "owner"))
    refused(node, NotFound, "No Experiment", lambda: commands.delete_experiment_tag("nope", "k"))


# ------------------------------------------------------------------------------- runs


def test_create_run_takes_fields_from_mlflow_system_tags(node, commands, exp) -> None:
    parent = commands.create_run(exp, name="parent", start_time=T0 - 5)
    run_id = commands.create_run(exp, tags={
        "mlflow.runName": "child", "mlflow.user": "bob", "mlflow.source.name": "train.py",
        "mlflow.source.type": "LOCAL", "mlflow.source.git.commit": "abc",
        "mlflow.parentRunId": parent,
    })
    run = node.run(run_id)
    assert (run.name, run.user_id, run.source_name, run.source_type, run.git_commit) == (
        "child", "bob", "train.py", "LOCAL", "abc")
    assert run.parent_run_id == parent and run.status == "RUNNING"
    assert run.start_time == T0 and node.run(parent).start_time == T0 - 5
    assert run.artifact_uri == f"mlflow-artifacts:/{exp}/{run_id}/artifacts"
    assert run.tags["mlflow.runName"] == "child"
    assert len(run_id) == 32


def test_create_run_name_rules(node, commands, exp) -> None:
    unnamed = node.run(commands.create_run(exp))
    assert unnamed.name and unnamed.tags["mlflow.runName"] == unnamed.name
    assert node.run(commands.create_run(exp, name="x", tags={"mlflow.runName": "x"})).name == "x"
    refused(node, InvalidInput, "Both 'run_name' argument and 'mlflow.runName' tag",
            lambda: commands.create_run(exp, name="x", tags={"mlflow.runName": "y"}))
    refused(node, InvalidInput, "maximum length", lambda: commands.create_run(exp, name="n" * 251))
    refused(node, InvalidInput, "start_time", lambda: commands.create_run(exp, start_time=-1))


def test_create_run_needs_an_active_experiment(node, commands, exp) -> None:
    refused(node, NotFound, "No Experiment with id=nope", lambda: commands.create_run("nope"))
    commands.delete_experiment(exp)
    refused(node, Conflict, "must be in the 'active' state", lambda: commands.create_run(exp))


def test_update_run(node, commands, exp) -> None:
    run_id = commands.create_run(exp, name="a")
    record = commands.update_run(run_id, status="FINISHED", end_time=T0 + 9, name="b")
    assert (record.status, record.end_time, record.name, record.tags["mlflow.runName"]) == (
        "FINISHED", T0 + 9, "b", "b")
    assert commands.update_run(run_id, status="RUNNING").end_time == T0 + 9  # resume keeps it
    assert commands.update_run(run_id, end_time=T0 + 20).status == "RUNNING"
    refused(node, InvalidInput, "Invalid status", lambda: commands.update_run(run_id, status="DONE"))
    refused(node, NotFound, "not found", lambda: commands.update_run("nope", status="FAILED"))
    commands.delete_runs([run_id])
    refused(node, Conflict, "must be in the 'active' state. Current state is deleted",
            lambda: commands.update_run(run_id, status="FAILED"))


def test_log_batch(node, commands, exp) -> None:
    run_id = commands.create_run(exp)
    commands.log_batch(run_id, metrics=[("loss", 1.0, 0, T0), ("loss", 0.5, 1, T0 + 1),
                                        ("acc", float("nan"), 0, T0)],
                       params={"lr": "0.1"}, tags=[("team", "a"), ("team", "b")])
    run = node.run(run_id)
    assert run.metrics["loss"].latest_value == 0.5 and run.metrics["loss"].count == 2
    assert run.params == {"lr": "0.1"} and run.tags["team"] == "b"  # duplicate tags: last wins
    kinds = [e.type for e in node.published[-1]]
    assert kinds == ["params.logged", "metrics.logged", "tag.set"]


def test_log_batch_same_param_again_is_accepted_and_not_resent(node, commands, exp) -> None:
    run_id = commands.create_run(exp)
    commands.log_batch(run_id, params={"lr": "0.1"})
    before = len(node.published)
    commands.log_batch(run_id, params={"lr": "0.1"})
    assert len(node.published) == before


def test_log_batch_changed_param_is_refused_before_publishing(node, commands, exp) -> None:
    run_id = commands.create_run(exp)
    commands.log_batch(run_id, params={"lr": "0.1"})
    refused(node, Conflict,
            f"Changing param values is not allowed. Param with key='lr' was already logged "
            f"with value='0.1' for run ID='{run_id}'. Attempted logging new value '0.2'.",
            lambda: commands.log_batch(run_id, metrics=[("m", 1.0, 0, T0)],
                                       params={"lr": "0.2", "other": "x"}))
    assert node.run(run_id).params == {"lr": "0.1"} and not node.run(run_id).metrics


def test_log_batch_to_unknown_or_deleted_run(node, commands, exp) -> None:
    refused(node, NotFound, "Run with id=nope not found",
            lambda: commands.log_batch("nope", params={"a": "b"}))
    run_id = commands.create_run(exp)
    commands.delete_runs([run_id])
    refused(node, Conflict, "must be in the 'active' state",
            lambda: commands.log_batch(run_id, metrics=[("m", 1.0, 0, T0)]))


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"metrics": [("m", 1.0, i, T0) for i in range(1001)]}, "at most 1000 metrics"),
    ({"params": {f"p{i}": "v" for i in range(101)}}, "at most 100 params"),
    ({"tags": {f"t{i}": "v" for i in range(101)}}, "at most 100 tags"),
    ({"metrics": [("m", 1.0, i, T0) for i in range(950)], "params": {f"p{i}": "v" for i in range(51)}},
     "at most 1000 metrics, params, and tags in total"),
    ({"params": {"k" * 251: "v"}}, "maximum length of 250"),
    ({"params": {"": "v"}}, "Missing value"),
    ({"params": {"k": "v" * 6001}}, "maximum length of 6000"),
    ({"tags": {"k": "v" * 8001}}, "maximum length of 8000"),
    ({"params": [("a", "1"), ("a", "1")]}, r"Duplicate parameter keys have been submitted: \['a'\]"),
    ({"metrics": [("m", "high", 0, T0)]}, "must be a number"),
    ({"metrics": [("m", 1.0, 0.5, T0)]}, "step must be a 64-bit integer"),
    ({"metrics": [("m", 1.0, 0, -1)]}, "Timestamp must be a nonnegative long"),
    ({"metrics": [("m", 1.0)]}, r"must be \(key, value, step, timestamp\)"),
    ({"tags": {"mlflow.runName": "n" * 251}}, "maximum length"),
])
def test_log_batch_validation(node, commands, exp, kwargs, match) -> None:
    run_id = commands.create_run(exp)
    refused(node, InvalidInput, match, lambda: commands.log_batch(run_id, **kwargs))


def test_empty_batch_publishes_nothing(node, commands, exp) -> None:
    run_id = commands.create_run(exp)
    before = len(node.published)
    commands.log_batch(run_id)
    assert len(node.published) == before


def test_tags_note_and_rename(node, commands, exp) -> None:
    run_id = commands.create_run(exp, name="old")
    commands.set_tag(run_id, "k", "v")
    commands.set_note(run_id, "# Findings\nit works")
    commands.rename_run(run_id, "new")
    run = node.run(run_id)
    assert run.tags["k"] == "v" and run.note == "# Findings\nit works"
    assert run.name == "new" and run.tags["mlflow.runName"] == "new"
    commands.set_tag(run_id, "mlflow.runName", "via-tag")  # as MLflow: the tag renames
    assert node.run(run_id).name == "via-tag"
    commands.delete_tag(run_id, "k")
    assert "k" not in node.run(run_id).tags
    refused(node, NotFound, f"No tag with name: k in run with id {run_id}",
            lambda: commands.delete_tag(run_id, "k"))
    refused(node, InvalidInput, "maximum length of 8000", lambda: commands.set_note(run_id, "x" * 8001))
    refused(node, InvalidInput, "maximum length", lambda: commands.rename_run(run_id, "x" * 251))


def test_log_artifact(node, commands, exp) -> None:
    run_id = commands.create_run(exp)
    commands.log_artifact(run_id, "plots/loss.png", 10, "ab" * 32)
    assert not node.run(run_id).has_model
    commands.log_artifact(run_id, "model/MLmodel", 10, "cd" * 32)
    assert node.run(run_id).has_model
    for path in ("../x", "/abs", "a//b", "a/./b", "C:/x", "a\\b", ""):
        refused(node, InvalidInput, "path", lambda path=path: commands.log_artifact(
            run_id, path, 1, "ab" * 32))
    refused(node, InvalidInput, "sha256", lambda: commands.log_artifact(run_id, "f", 1, "xyz"))
    refused(node, InvalidInput, "size", lambda: commands.log_artifact(run_id, "f", -1, "ab" * 32))


# ------------------------------------------------------------------- delete / restore


def _tree(commands: Commands, exp: str) -> dict[str, str]:
    """root -> child -> grandchild, plus a lone run."""
    root = commands.create_run(exp, name="root")
    child = commands.create_run(exp, name="child", parent_run_id=root)
    grandchild = commands.create_run(exp, name="grandchild", tags={"mlflow.parentRunId": child})
    lone = commands.create_run(exp, name="lone")
    return {"root": root, "child": child, "grandchild": grandchild, "lone": lone}


def test_delete_takes_descendants_one_event_per_run(node, commands, exp) -> None:
    t = _tree(commands, exp)
    assert commands.delete_runs([t["root"]]) == 3
    batch = node.published[-1]
    assert all(isinstance(e, RunDeleted) for e in batch)
    assert sorted(e.run_id for e in batch) == sorted([t["root"], t["child"], t["grandchild"]])
    assert {e.body.requested_for for e in batch} == {t["root"]}
    assert node.run(t["lone"]).lifecycle_stage == "active"
    assert commands.delete_runs([t["root"]]) == 0  # idempotent, nothing left to delete


def test_delete_without_descendants(node, commands, exp) -> None:
    t = _tree(commands, exp)
    assert commands.delete_runs([t["child"]], with_descendants=False) == 1
    assert node.run(t["grandchild"]).lifecycle_stage == "active"
    assert commands.restore_runs([t["child"]]) == 1


def test_restore_takes_deleted_descendants(node, commands, exp) -> None:
    t = _tree(commands, exp)
    commands.delete_runs([t["root"], t["lone"]])
    assert commands.restore_runs([t["root"]]) == 3
    assert all(isinstance(e, RunRestored) for e in node.published[-1])
    assert node.run(t["lone"]).lifecycle_stage == "deleted"
    assert commands.restore_runs([t["root"]], with_descendants=False) == 0


def test_delete_unknown_run_refuses_the_whole_command(node, commands, exp) -> None:
    t = _tree(commands, exp)
    refused(node, NotFound, "Run with id=nope not found",
            lambda: commands.delete_runs([t["lone"], "nope"]))
    assert node.run(t["lone"]).lifecycle_stage == "active"
    refused(node, InvalidInput, "at least one", lambda: commands.delete_runs([]))


def test_restore_purged_run_says_so(node, commands, exp) -> None:
    run_id = commands.create_run(exp)
    commands.delete_runs([run_id])
    node.publish([new_event(RunPurged, run_id=run_id)])
    refused(node, NotFound, "was purged", lambda: commands.restore_runs([run_id]))


def test_bulk_delete_by_creation_time_hits_the_cap(node, commands, exp) -> None:
    runs = [commands.create_run(exp, start_time=T0 + i) for i in range(5)]
    assert commands.bulk_delete(exp, max_timestamp_millis=T0 + 3, max_runs=2) == 2
    assert [node.run(r).lifecycle_stage for r in runs] == ["deleted"] * 2 + ["active"] * 3
    assert len(node.published[-1]) == 2  # one event per run
    assert commands.bulk_delete(exp, max_timestamp_millis=T0 + 3) == 2  # runs 2 and 3
    assert node.run(runs[4]).lifecycle_stage == "active"  # created after the timestamp
    assert commands.bulk_delete(exp, max_timestamp_millis=T0 + 3) == 0


def test_bulk_restore_by_deletion_time_hits_the_cap(node, commands, clock, exp) -> None:
    runs = [commands.create_run(exp, start_time=T0 + i) for i in range(5)]
    for i, run_id in enumerate(runs):
        clock.now = T0 + 100 + i
        commands.delete_runs([run_id])
    assert commands.bulk_restore(exp, min_timestamp_millis=T0 + 102, max_runs=2) == 2
    assert [node.run(r).lifecycle_stage for r in runs] == (
        ["deleted"] * 2 + ["active"] * 2 + ["deleted"])  # earliest deletions first
    assert commands.bulk_restore(exp, min_timestamp_millis=T0 + 102) == 1
    assert commands.bulk_restore(exp, min_timestamp_millis=T0 + 102) == 0


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"max_runs": 0}, "max_runs"), ({"max_runs": MAX_BULK_RUNS + 1}, "between 1 and 10000"),
    ({"max_runs": True}, "max_runs"), ({"max_timestamp_millis": -1}, "non-negative"),
])
def test_bulk_validation(node, commands, exp, kwargs, match) -> None:
    args = {"max_timestamp_millis": T0, **kwargs}
    refused(node, InvalidInput, match, lambda: commands.bulk_delete(exp, **args))
    refused(node, NotFound, "No Experiment", lambda: commands.bulk_delete("nope", T0))
    refused(node, NotFound, "No Experiment", lambda: commands.bulk_restore("nope", T0))


def test_bulk_cap_value_is_accepted(commands, exp) -> None:
    assert commands.bulk_delete(exp, T0, max_runs=MAX_BULK_RUNS) == 0
    assert commands.bulk_restore(exp, T0, max_runs=MAX_BULK_RUNS) == 0


def test_every_event_names_the_producer(node, commands, exp) -> None:
    commands.create_run(exp)
    assert {e.producer for e in node.events()} == {"test"}
    assert len({e.event_id for e in node.events()}) == len(node.events())
    assert list(itertools.chain.from_iterable(node.published)) == node.events()
