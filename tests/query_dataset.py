"""A designed data set for the query side, and the exact runs each query must return.

Unit tests fold these events with ``apply_batch``; end-to-end tests publish them to a real
broker and ask over HTTP. Either way the tables below are the truth. Run ids are single
letters; "EDA" means runs E, D, A in that order.

    run exp name          status    start   parent  model  notes
    A   1   alpha-run     FINISHED  +1000   -       yes    r2 .1 -> .8, rmse 2 -> .9, memUsage .95 -> 0
    B   1   beta          FAILED    +2000   -       -      acc NaN, rmse .5 -> 3, loss 1.5
    C   1   Gamma_run     RUNNING   +3000   A       -      r2 NaN, memUsage .2 -> 0
    D   2   delta         KILLED    +4000   -       yes    r2 .35, memUsage .99 -> .1
    E   2   epsilon       FINISHED  +5000   C       -      r2 .31, no rmse, no color
    F   1   zeta-deleted  FINISHED  +6000   -       -      deleted at +7000
    S   3   spiky         RUNNING   +500    -       -      2,000-point "wave" with one spike, one dip
"""

from __future__ import annotations

import math

from runstream.schemas import (
    ArtifactLogged,
    ArtifactLoggedBody,
    Event,
    ExperimentCreated,
    ExperimentCreatedBody,
    ExperimentTagSet,
    ExperimentTagSetBody,
    RunDeleted,
    RunEnded,
    RunEndedBody,
    TagSet,
    TagSetBody,
)

from tests.event_factory import T0, ev, metrics, params, run_created

NAN = float("nan")
EXPS = ["1", "2"]  # the experiments most queries search
SPIKE_STEP, SPIKE = 1234, 1000.0
DIP_STEP, DIP = 777, -500.0
WAVE_POINTS = 2000
DIGEST = "ab" * 32


def wave_value(step: int) -> float:
    if step == SPIKE_STEP:
        return SPIKE
    if step == DIP_STEP:
        return DIP
    return math.sin(step / 50)


def _points(series: dict[str, list[float]], t: int) -> list[tuple[str, float, int, int]]:
    return [(key, v, step, t + step) for key, values in series.items()
            for step, v in enumerate(values)]


RUNS = {
    # id: (experiment, name, status, start offset, parent)
    "A": ("1", "alpha-run", "FINISHED", 1000, None),
    "B": ("1", "beta", "FAILED", 2000, None),
    "C": ("1", "Gamma_run", "RUNNING", 3000, "A"),
    "D": ("2", "delta", "KILLED", 4000, None),
    "E": ("2", "epsilon", "FINISHED", 5000, "C"),
    "F": ("1", "zeta-deleted", "FINISHED", 6000, None),
    "S": ("3", "spiky", "RUNNING", 500, None),
}
PARAMS = {
    "A": {"lr": "0.01", "elasticNetParam": "0.5", "batch size": "32"},
    "B": {"lr": "0.1", "elasticNetParam": "0.50"},
    "C": {"lr": "0.01", "elasticNetParam": "abc"},
    "D": {"elasticNetParam": "0.5"},
    "E": {"lr": "1e-3"},
    "F": {"elasticNetParam": "0.5"},
}
METRICS = {  # key -> values at steps 0, 1, ...; the last one is the latest
    "A": {"r2": [0.1, 0.8], "avg_areaUnderROC": [0.7], "rmse": [2.0, 0.9],
          "memUsage": [0.95, 0.0], "loss": [0.9, 0.5], "acc": [0.9]},
    "B": {"r2": [0.2], "avg_areaUnderROC": [0.9], "rmse": [0.5, 3.0], "memUsage": [0.5],
          "loss": [1.5], "acc": [NAN]},
    "C": {"r2": [NAN], "rmse": [5.0], "memUsage": [0.2, 0.0], "loss": [-2.0]},
    "D": {"r2": [0.35], "avg_areaUnderROC": [0.2], "memUsage": [0.99, 0.1], "rmse": [1.0]},
    "E": {"r2": [0.31], "loss": [0.1]},
    "F": {"r2": [0.99]},
}
TAGS = {
    "A": {"estimator_name": "RandomForestRegressor", "color": "blue", "size": "5",
          "my custom tag": "my value", "mlflow.note.content": "note A"},
    "B": {"estimator_name": "LinearRegression", "color": "blue", "size": "5.0",
          "my custom tag": "other"},
    "C": {"estimator_name": "RandomForestRegressor", "color": "red", "size": "5"},
    "D": {"color": "blue", "size": "6", "my custom tag": "my value"},
    "E": {"my custom tag": "My Value"},
    "F": {"estimator_name": "RandomForestRegressor"},
}
ARTIFACTS = {  # run -> [(path, size, is_model)]
    "A": [("model/MLmodel", 120, False), ("model/model.pkl", 4096, False), ("data/x.csv", 10, False),
          ("notes.txt", 5, False)],
    "D": [("weights.bin", 64, True)],
}


def dataset_events() -> list[Event]:
    """Every event of the data set, in an order a single partition could hold them."""
    events: list[Event] = [
        ev(ExperimentCreated, ExperimentCreatedBody(name="fraud-detection", creation_time_ms=T0),
           experiment_id="1"),
        ev(ExperimentCreated, ExperimentCreatedBody(name="Fraud Model", creation_time_ms=T0 + 1),
           experiment_id="2"),
        ev(ExperimentCreated, ExperimentCreatedBody(name="spikes", creation_time_ms=T0 + 2),
           experiment_id="3"),
        ev(ExperimentTagSet, ExperimentTagSetBody(key="team", value="risk"), experiment_id="1"),
    ]
    for run_id, (exp, name, status, offset, parent) in RUNS.items():
        t = T0 + offset
        events.append(run_created(run_id, exp, t=t, parent=parent, name=name))
        if run_id in PARAMS:
            events.append(params(run_id, PARAMS[run_id], t=t))
        if run_id in METRICS:
            events.append(metrics(run_id, _points(METRICS[run_id], t), t=t))
        for key, value in TAGS.get(run_id, {}).items():
            events.append(ev(TagSet, TagSetBody(key=key, value=value), t=t, run_id=run_id))
        for path, size, is_model in ARTIFACTS.get(run_id, []):
            events.append(ev(ArtifactLogged, ArtifactLoggedBody(
                path=path, size=size, digest=DIGEST, is_model=is_model), t=t, run_id=run_id))
        if status != "RUNNING":
            events.append(ev(RunEnded, RunEndedBody(status=status, end_time_ms=t + 500), t=t,
                             run_id=run_id))
    events.append(metrics("S", [("wave", wave_value(s), s, T0 + s) for s in range(WAVE_POINTS)]))
    events.append(ev(RunDeleted, t=T0 + 7000, run_id="F"))
    return events


# ------------------------------------------------------------------------ filter -> runs
# Over experiments 1 and 2, active runs, default order (newest first): E D C B A.

FEATURES_EXAMPLES = [  # shared/FEATURES.md, exactly as written
    ("metrics.r2 > 0.3", "EDA"),  # C's NaN fails; F is deleted
    ("params.elasticNetParam = 0.5", "DBA"),  # numeric: '0.50' matches, 'abc' does not
    ("params.elasticNetParam = 0.5 AND metrics.avg_areaUnderROC > 0.3", "BA"),
    ("MIN(metrics.rmse) <= 1", "DBA"),  # B's min .5 although latest 3
    ("MAX(metrics.memUsage) > 0.9", "DA"),  # although their latest values are low
    ("LATEST(metrics.memUsage) = 0 AND MIN(metrics.rmse) <= 1", "A"),
    ('tags.estimator_name="RandomForestRegressor"', "CA"),
    ('tags.color="blue" AND tags.size=5', "BA"),  # size '5.0' is 5; D's size is 6
    ('tags.`my custom tag` = "my value"', "DA"),  # case-sensitive: E's 'My Value' is not
]

MORE_FILTERS = [
    ("", "EDCBA"),
    ("metrics.r2 > 0.3 OR tags.color = 'red'", "EDCA"),
    ("NOT metrics.r2 > 0.3", "CB"),
    ("(params.lr = '0.01' OR params.lr = '0.1') AND metrics.loss < 1", "CA"),
    ("attributes.status = 'FINISHED'", "EA"),
    ("status IN ('FAILED', 'KILLED')", "DB"),
    ("run_name LIKE '%a'", "DB"),
    ("attributes.`Run Name` ILIKE 'gamma%'", "C"),
    ("attributes.run_id IN ('A', 'E')", "EA"),
    ("attributes.run_id NOT IN ('A', 'E')", "DCB"),
    (f"start_time >= {T0 + 3000}", "EDC"),
    (f"attributes.end_time <= {T0 + 2500}", "BA"),
    ("params.lr IS NULL", "D"),
    ("params.`batch size` = '32'", "A"),
    ("tags.mlflow.note.content = 'note A'", "A"),
    ("metrics.acc != 0.9", "B"),  # NaN passes !=
    ("metrics.acc > 0", "A"),  # NaN fails >
    ("metrics.loss != 0.5", "ECB"),  # D has no loss: a missing key never matches
    ("parent_run_id = 'A'", "C"),
    ("tags.color != 'blue'", "C"),
    ("params.lr LIKE '0.0%' AND metrics.r2 > 0", "A"),
    ("metrics.loss<1 and tags.size = '5'", "CA"),
]

# (order_by, expected) over experiments 1 and 2.
ORDERS = [
    (["metrics.r2 DESC"], "ADEBC"),  # NaN after numbers
    (["metrics.r2"], "BEDAC"),
    (["MIN(metrics.rmse)"], "BADCE"),  # E has no rmse: last
    (["params.lr DESC"], "EBCAD"),  # strings; C and A tie -> start_time DESC; D has no lr
    (["tags.color", "metrics.loss DESC"], "BADCE"),
    (["start_time"], "ABCDE"),
    (["run_name"], "CABDE"),  # byte order: 'G' < 'a'
    (["attributes.status", "end_time DESC"], "BEADC"),
]

# (experiment_ids, view, has_model, expected): the selection around the filter.
SELECTIONS = [
    (EXPS, "deleted", None, "F"),
    (EXPS, "all", None, "FEDCBA"),
    (["2"], "active", None, "ED"),
    (["1"], "active", None, "CBA"),
    ([], "active", None, ""),
    (None, "active", None, "EDCBAS"),
    (EXPS, "active", True, "DA"),
    (EXPS, "active", False, "ECB"),
    (["1", "2", "no-such-experiment"], "all", True, "DA"),
]

CSV_HEADER = ("Run ID,Name,Source Type,Source Name,User,Status,batch size,elasticNetParam,lr,"
              "acc,avg_areaUnderROC,loss,memUsage,r2,rmse")
CSV_ROWS = [  # experiments 1 and 2, default order
    "E,epsilon,LOCAL,train.py,alice,FINISHED,,,1e-3,,,0.1,,0.31,",
    "D,delta,LOCAL,train.py,alice,KILLED,,0.5,,,0.2,,0.1,0.35,1.0",
    "C,Gamma_run,LOCAL,train.py,alice,RUNNING,,abc,0.01,,,-2.0,0.0,nan,5.0",
    "B,beta,LOCAL,train.py,alice,FAILED,,0.50,0.1,nan,0.9,1.5,0.5,0.2,3.0",
    "A,alpha-run,LOCAL,train.py,alice,FINISHED,32,0.5,0.01,0.9,0.7,0.5,0.0,0.8,0.9",
]
