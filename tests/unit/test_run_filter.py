"""Unit tests of the run-search filter language (projections/run_filter.py), checked in DuckDB.

Most cases run the compiled SQL against a small designed data set (below) and compare the EXACT
set of run ids. The MLflow 3.17.2 vectors of shared/reference/mlflow-search-grammar.md §12-§13
are included, adapted to this data set and to our rules where they differ (marked "ours").
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from runstream.projections.read_model import DDL
from runstream.projections.run_filter import (
    And,
    Comparison,
    CompiledFilter,
    FilterSyntaxError,
    Identifier,
    ListLiteral,
    Not,
    NumberLiteral,
    Or,
    StringLiteral,
    compile_experiment_filter,
    compile_order_by,
    compile_run_filter,
    parse_order_by,
    parse_run_filter,
    tokenize,
)

NAN = float("nan")

# --------------------------------------------------------------------------------------------
# The data set: 8 runs, A..H
# --------------------------------------------------------------------------------------------

# run_id, name, user_id, status, start_time, end_time, artifact_uri, source_type, parent_run_id
RUNS = [
    ("A", "alpha-run", "alice", "FINISHED", 1000, 2000, "mlflow-artifacts:/1/A", "LOCAL", None),
    ("B", "beta", "bob", "FAILED", 2000, 3000, "mlflow-artifacts:/1/B", "JOB", None),
    ("C", "Gamma_run", "alice", "RUNNING", 3000, None, "mlflow-artifacts:/1/C", "LOCAL", None),
    ("D", "delta", "carol", "KILLED", 4000, 4500, "s3://bucket/D", "NOTEBOOK", "A"),
    ("E", "epsilon", "bob", "FINISHED", 5000, 6000, "mlflow-artifacts:/2/E", "LOCAL", "A"),
    ("F", "zeta run", "dave", "SCHEDULED", 6000, None, "mlflow-artifacts:/2/F", "UNKNOWN", None),
    ("G", "eta", "Alice", "FINISHED", 7000, 8000, "mlflow-artifacts:/2/G", "LOCAL", None),
    ("H", None, None, "FINISHED", 8000, 9000, None, "LOCAL", None),
]
ALL = "ABCDEFGH"

PARAMS = {
    "A": {"lr": "0.01", "batch size": "32", "epochs": "10", "model.name": "resnet",
          "elasticNetParam": "0.5", "num": "0.5"},
    "B": {"lr": "0.1", "epochs": "9", "quote": "a'b", "elasticNetParam": "0.50", "num": "0.50"},
    "D": {"lr": "0.01", "elasticNetParam": "abc", "num": "abc"},
    "E": {"lr": "1e-3", "elasticNetParam": "1", "num": "nan"},
    "F": {"epochs": "11", "num": "-2", "model-type": "cnn"},
    "G": {"lr": "LR", "num": "1e1"},
}

TAGS = {
    "A": {"team": "vision", "my tag": "x", "mlflow.runName": "alpha-run",
          "estimator_name": "RandomForestRegressor", "color": "blue", "size": "5",
          "my custom tag": "my value"},
    "B": {"team": "nlp", "estimator_name": "LinearRegression", "color": "blue", "size": "5.0",
          "mlflow.runName": "beta"},
    "D": {"team": "Vision", "color": "red", "size": "5", "my custom tag": "My Value",
          "estimator_name": "RandomForestRegressor"},
    "E": {"team": "vision", "color": "blue", "size": "large", "my custom tag": "my value "},
    "F": {"color": "blue", "size": "6", "pct": "50%"},
    "G": {"team": "nlp", "under": "a_b"},
}

# key: latest or (latest, min, max)
Metric = float | tuple[float, float | None, float | None]
METRICS: dict[str, dict[str, Metric]] = {
    "A": {"loss": (0.5, 0.5, 0.9), "val loss": 0.7, "acc": 0.9, "r2": 0.8,
          "rmse": (1.2, 0.8, 2.0), "memUsage": (0.0, 0.0, 0.95), "avg_areaUnderROC": 0.7},
    "B": {"loss": 1.5, "acc": (NAN, 0.3, 0.5), "r2": 0.2, "rmse": (0.9, 0.9, 3.0),
          "memUsage": (0.5, 0.1, 0.5), "avg_areaUnderROC": 0.2},
    "C": {"loss": -2.0, "r2": (NAN, None, None)},
    "D": {"loss": (0.3, 0.1, 0.3), "acc": 0.9, "rmse": (5.0, 1.0, 5.0),
          "memUsage": (0.0, 0.0, 0.5), "avg_areaUnderROC": 0.9},
    "E": {"r2": 0.31, "rmse": (2.0, None, None), "avg_areaUnderROC": 0.31,
          "memUsage": (0.95, 0.2, 0.95)},
    "F": {"loss": (0.5, 0.2, 0.8), "acc": 1.0},
    "H": {"loss": 1e9},
}

# experiment_id, name, creation_time, last_update_time ('0' Default comes from the DDL)
EXPERIMENTS = [
    ("1", "fraud-detection", 1000, 5000),
    ("2", "Fraud Model", 2000, 2000),
    ("3", "nlp_exp", 3000, None),
]
EXPERIMENT_TAGS = {"1": {"team": "risk", "owner name": "ann"},
                   "2": {"team": "Risk", "version": "2"},
                   "3": {"version": "10"}}


def _build_db() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    for statement in DDL:
        con.execute(statement)
    for i, (run_id, name, user, status, start, end, uri, source_type, parent) in enumerate(RUNS):
        con.execute(
            "INSERT INTO runs (run_id, run_key, experiment_id, name, user_id, status, start_time, "
            "end_time, artifact_uri, source_type, parent_run_id) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            [run_id, i + 1, str(i // 3), name, user, status, start, end, uri, source_type, parent],
        )
    key_of = "(SELECT run_key FROM runs WHERE run_id = ?)"
    for run_id, kv in PARAMS.items():
        for key, value in kv.items():
            con.execute(f"INSERT INTO run_params VALUES ({key_of}, ?, ?)", [run_id, key, value])
    for run_id, kv in TAGS.items():
        for key, value in kv.items():
            con.execute(f"INSERT INTO run_tags VALUES ({key_of}, ?, ?)", [run_id, key, value])
    for run_id, metrics in METRICS.items():
        for key, spec in metrics.items():
            latest, low, high = spec if isinstance(spec, tuple) else (spec, spec, spec)
            con.execute(
                f"INSERT INTO run_metric_summary VALUES ({key_of}, ?, ?, ?, ?, 3, 100, 3)",
                [run_id, key, low, high, latest],
            )
    for exp_id, name, created, updated in EXPERIMENTS:
        con.execute(
            "INSERT INTO experiments (experiment_id, name, creation_time, last_update_time) "
            "VALUES (?, ?, ?, ?)", [exp_id, name, created, updated],
        )
    for exp_id, kv in EXPERIMENT_TAGS.items():
        for key, value in kv.items():
            con.execute("INSERT INTO experiment_tags VALUES (?, ?, ?)", [exp_id, key, value])
    return con


@pytest.fixture(scope="module")
def db() -> Iterator[duckdb.DuckDBPyConnection]:
    """The designed data set in an in-memory DuckDB, shared by the whole module."""
    con = _build_db()
    yield con
    con.close()


def run_ids(con: duckdb.DuckDBPyConnection, compiled: CompiledFilter) -> str:
    rows = con.execute(
        f"SELECT r.run_id FROM runs r WHERE {compiled.sql}", list(compiled.params)
    ).fetchall()
    return "".join(sorted(row[0] for row in rows))


def ordered_ids(con: duckdb.DuckDBPyConnection, clauses: Sequence[str] | None) -> str:
    order = compile_order_by(clauses)
    rows = con.execute(f"SELECT r.run_id FROM runs r ORDER BY {order.sql}", list(order.params))
    return "".join(row[0] for row in rows.fetchall())


def experiment_ids(con: duckdb.DuckDBPyConnection, compiled: CompiledFilter) -> str:
    rows = con.execute(
        f"SELECT e.experiment_id FROM experiments e WHERE {compiled.sql}", list(compiled.params)
    ).fetchall()
    return "".join(sorted(row[0] for row in rows))


# --------------------------------------------------------------------------------------------
# Valid run filters: (filter, exact run ids)
# --------------------------------------------------------------------------------------------

FEATURE_CASES = [
    ("metrics.r2 > 0.3", "AE"),  # C's r2 is NaN
    ("params.elasticNetParam = 0.5", "AB"),  # '0.5' and '0.50', never 'abc'
    ("params.elasticNetParam = 0.5 AND metrics.avg_areaUnderROC > 0.3", "A"),
    ("MIN(metrics.rmse) <= 1", "ABD"),  # E's min is NULL
    ("MAX(metrics.memUsage) > 0.9", "AE"),
    ("LATEST(metrics.memUsage) = 0 AND MIN(metrics.rmse) <= 1", "AD"),
    ('tags.estimator_name="RandomForestRegressor"', "AD"),
    ('tags.color="blue" AND tags.size=5', "AB"),  # size '5' and '5.0'
    ('tags.`my custom tag` = "my value"', "A"),  # not 'My Value', not 'my value '
]

MLFLOW_CASES = [  # §12, by vector number
    ("", ALL),  # 1
    ("metrics.loss < 1", "ACDF"),  # 2
    ("metrics.loss <= 0.5", "ACDF"),  # 3
    ("metrics.loss = 0.5", "AF"),  # 4
    ("metrics.loss = 0.9", ""),  # 5: A's max, not its latest
    ("metrics.loss != 0.5", "BCDH"),  # 6: runs without loss excluded
    ("metric.loss > 1", "BH"),  # 7
    ("metrics.loss > 1e0", "BH"),  # 8
    ("metrics.loss > .5", "BH"),  # 9
    ("metrics.loss < -1", "C"),  # 10
    ("metrics.loss<1", "ACDF"),  # 11
    ("`metrics`.loss < 1", "ACDF"),  # 12
    ("metrics.acc > 0", "ADF"),  # 18: B's NaN fails
    ("metrics.acc != 0.9", "BF"),  # 19: NaN passes !=
    ("metrics.`val loss` > 0.6", "A"),  # 20
    ('metrics."val loss" > 0.6', "A"),  # 21
    ("metrics.'val loss' > 0.6", "A"),  # 22
    ('metrics."2019-04-02 error rate" > 1', ""),  # 24
    ("params.lr = '0.01'", "AD"),  # 26
    ('params.lr = "0.01"', "AD"),  # 27
    ("params.lr = 0.01", "AD"),  # 28, ours: numeric param comparison (MLflow: error)
    ("params.lr = '0.010'", ""),  # 29
    ("params.lr = '0.01 '", ""),  # 30
    ("params.epochs > 9", "AF"),  # 31, ours: unquoted number (quoted is an error below)
    ("params.epochs != '10'", "BF"),  # 32
    ("params.epochs LIKE '1%'", "AF"),  # 33
    ("params.lr LIKE '0.0_'", "AD"),  # 34
    ("params.lr ILIKE '0.1'", "B"),  # 35
    ("params.lr LIKE '%'", "ABDEG"),  # 36
    ("params.lr = '%'", ""),  # 37
    ("params.lr IN ('0.01', '0.1')", "ABD"),  # 38, ours: IN for params (MLflow: error)
    ("params.`batch size` = '32'", "A"),  # 39
    ('params."batch size" = \'32\'', "A"),  # 40
    ("params.model.name = 'resnet'", "A"),  # 41
    ("params.`model-type` = 'x'", ""),  # 43
    ("params.`model-type` = 'cnn'", "F"),
    ("params.lr IS NULL", "CFH"),  # 44
    ("params.lr IS NOT NULL", "ABDEG"),  # 45a
    ("params.lr is null", "CFH"),  # 45b
    ("parameters.lr = '0.1'", "B"),  # 46
    ('params.quote = "a\'b"', "B"),  # 48
    ("params.lr != ''", "ABDEG"),  # 49
    ("tags.team = 'vision'", "AE"),  # 50
    ("tags.team = 'VISION'", ""),  # 51
    ("tags.team ILIKE 'VISION'", "ADE"),  # 52
    ("tag.team != 'vision'", "BDG"),  # 53
    ("NOT tags.team LIKE 'v%'", "BCDFGH"),  # 54 rewritten: NOT LIKE is NOT before the clause
    ("tags.team IN ('vision', 'nlp')", "ABEG"),  # 55, ours: IN for tags
    ("tags.team IS NULL", "CFH"),  # 56
    ("tags.`my tag` = 'x'", "A"),  # 57
    ("tags.mlflow.runName = 'alpha-run'", "A"),  # 58
    ("tags.`mlflow.runName` ILIKE 'ALPHA%'", "A"),  # 59
    ("attributes.run_name = 'beta'", "B"),  # 62
    ("attribute.run_name LIKE 'alpha%'", "A"),  # 63
    ("run_name ILIKE 'gamma%'", "C"),  # 64
    ("attributes.`Run Name` = 'beta'", "B"),  # 65
    ("MIN(metrics.loss) < 1", "ACDF"),  # 67, ours: aggregates
    ("MAX(metrics.acc) > 0.5", "ADF"),  # 68, ours
    ("LATEST(metrics.loss) < 1", "ACDF"),  # 69, ours
    ("attr.status = 'FINISHED'", "AEGH"),  # 70
    ("attributes.status = 'finished'", ""),  # 71
    ("attributes.status IN ('FINISHED', 'FAILED')", "ABEGH"),  # 73, ours: IN for attributes
    ("attributes.run_id IN ('A', 'B')", "AB"),  # 74
    ('attributes.run_id IN ("A", "B")', "AB"),  # 75
    ("attributes.run_id NOT IN ('A')", "BCDEFGH"),  # 76
    ("run_id = 'A'", "A"),  # 79
    ("attributes.run_id LIKE 'A%'", "A"),  # 80
    ("attributes.start_time > 0", ALL),  # 81
    ("start_time > 0", ALL),  # 82
    ("attributes.created > 0", ALL),  # 83
    ("attributes.start_time >= 9999999999999", ""),  # 84
    ("attributes.start_time > 1.5", ALL),  # 85
    ("attributes.end_time > 0", "ABDEGH"),  # 87: C and F have no end_time
    ("attributes.user_id = 'alice'", "AC"),  # 89
    ("attributes.artifact_uri LIKE 'mlflow-artifacts:%'", "ABCEFG"),  # 90
    ("metrics.loss < 1 AND params.lr = '0.01'", "AD"),  # 93
    ("metrics.loss < 1 and tags.team = 'vision'", "A"),  # 94
    ("params.lr = '0.01'   and   metrics.loss<1", "AD"),  # 95
    ("metrics.loss > 0 AND metrics.loss < 1", "ADF"),  # 96
    ("params.lr = '0.01' AND params.lr = '0.1'", ""),  # 97
    ("metrics.loss < 1 OR params.lr = '0.1'", "ABCDF"),  # 98, ours: OR
    ("(metrics.loss < 1)", "ACDF"),  # 99, ours: parentheses
    ("metrics.loss < 1 AND (params.lr = '0.1')", ""),  # 100, ours
    ("NOT metrics.loss < 1", "BEGH"),  # 101, ours: NOT is the complement
]

EXTRA_CASES = [
    # whitespace and case
    ("   ", ALL),
    ("\tmetrics.loss\n<\n1 ", "ACDF"),
    ("tags.team = 'nlp' or tags.team = 'vision'", "ABEG"),
    ("params.lr Like '0.0%'", "AD"),
    ("tags.team iLike 'VISION'", "ADE"),
    ("params.lr Is Not Null", "ABDEG"),
    ("attributes.run_id not in ('A', 'B')", "CDEFGH"),
    # precedence: NOT > AND > OR
    ("tags.team = 'nlp' OR metrics.loss < 1 AND params.lr = '0.01'", "ABDG"),
    ("(tags.team = 'nlp' OR metrics.loss < 1) AND params.lr = '0.01'", "AD"),
    ("metrics.loss < 1 AND params.lr = '0.01' OR tags.team = 'nlp'", "ABDG"),
    ("NOT tags.team = 'nlp' AND metrics.loss < 1", "ACDF"),
    ("NOT (tags.team = 'nlp' AND metrics.loss < 1)", ALL),
    ("NOT NOT tags.team = 'nlp'", "BG"),
    ("not metrics.loss >= 1 or status = 'RUNNING'", "ACDEFG"),
    ("((metrics.loss < 1))", "ACDF"),
    ("metrics.loss < 1 AND (params.lr = '0.1' OR tags.team = 'vision')", "A"),
    ("NOT (metrics.loss < 1 OR metrics.loss >= 1)", "EG"),  # runs without loss
    ("metrics.loss < 1 OR NOT metrics.loss < 1", ALL),
    # numeric params and tags (ours): the same number, never a non-number
    ("params.num = 0.5", "AB"),
    ("params.num = .5", "AB"),
    ("params.num = '0.5'", "A"),  # quoted: string equality
    ("params.num != 0.5", "EFG"),  # 'abc' fails, 'nan' passes, missing fails
    ("params.num > 0", "ABG"),  # 'nan' fails
    ("params.num < 0", "F"),
    ("params.num >= 10", "G"),  # '1e1'
    ("params.num <= -2", "F"),
    ("params.num = 10", "G"),
    ("params.num = 1e1", "G"),
    ("params.num = -2", "F"),
    ("tags.size = 5", "ABD"),
    ("tags.size = '5'", "AD"),
    ("tags.size > 5", "F"),  # 'large' is not a number
    ("tags.size != 5", "F"),
    ("tags.size IN ('5', 'large')", "ADE"),
    ("tags.size NOT IN ('5')", "BEF"),
    ("params.lr NOT IN ('0.01')", "BEG"),
    ('params.lr IN ("0.01")', "AD"),
    # LIKE: anchored, % and _ wildcards, no escape
    ("tags.pct LIKE '50%'", "F"),
    ("tags.pct LIKE '50\\%'", ""),  # backslash is a literal character
    ("tags.under LIKE 'a_b'", "G"),
    ("tags.under LIKE 'axb'", ""),
    ("tags.under LIKE 'a'", ""),
    ("tags.team LIKE 'vis'", ""),
    ("tags.team LIKE '%isio%'", "ADE"),
    ("tags.team LIKE 'v%'", "AE"),
    ("tags.team ILIKE 'v%'", "ADE"),
    ("tags.team = ''", ""),
    # attributes
    ("status = 'RUNNING'", "C"),
    ("status != 'FINISHED'", "BCDF"),
    ("run.status = 'KILLED'", "D"),
    ("attributes.status ILIKE 'finished'", "AEGH"),
    ("run_name = 'zeta run'", "F"),
    ("`run name` = 'zeta run'", "F"),
    ("`Run name` LIKE '%run'", "ACF"),
    ("attributes.\"Run name\" LIKE '%run'", "ACF"),
    ("run_name != 'beta'", "ACDEFG"),  # H has no name: missing never matches
    ("NOT run_name = 'beta'", "ACDEFGH"),  # the complement includes H
    ("user_id != 'alice'", "BDEFG"),
    ("user_id ILIKE 'alice'", "ACG"),
    ("end_time != 4500", "ABEGH"),
    ("end_time < 3000", "A"),
    ("created >= 7000", "GH"),
    ("Created < 2000", "A"),
    ("start_time = 1000", "A"),
    ("end_time >= 3000 AND end_time <= 6000", "BDE"),
    ("source_type = 'NOTEBOOK'", "D"),
    ("parent_run_id = 'A'", "DE"),
    ("parent_run_id != 'A'", ""),
    ("git_commit LIKE '%'", ""),
    ("artifact_uri = 's3://bucket/D'", "D"),
    # metrics: NaN, NULL min/max, aggregates
    ("metrics.acc = 0.9", "AD"),
    ("metrics.acc < 2", "ADF"),
    ("metrics.acc >= 0", "ADF"),
    ("metrics.r2 != 0.8", "BCE"),
    ("metrics.r2 <= 1", "ABE"),
    ("NOT metrics.acc > 0", "BCEGH"),
    ("MIN(metrics.r2) < 100", "ABE"),  # C's min is NULL
    ("MAX(metrics.r2) != 0", "ABE"),
    ("MIN(metrics.rmse) != 0.8", "BD"),
    ("MAX(metrics.loss) >= 0.9", "ABH"),
    ("min(metrics.loss) < 0", "C"),
    ("Max(metric.loss) = 0.9", "A"),
    ("LATEST(metric.acc) != 0.9", "BF"),
    ("MIN( metrics.loss ) < 0", "C"),
    ("metrics.loss > -1e10", "ABCDFH"),
    ("metrics.loss = 1e9", "H"),
    ("metrics.loss = 1000000000", "H"),
    ("metrics.loss > 1E-3", "ABDFH"),
    # quoting keys and prefixes
    ("tags.'my tag' = 'x'", "A"),
    ('tags."mlflow.runName" = \'beta\'', "B"),
    ("`tags`.team = 'nlp'", "BG"),
    ("`params`.lr = '0.1'", "B"),
    ("attributes.`run_id` = 'B'", "B"),
]

VALID_CASES = FEATURE_CASES + MLFLOW_CASES + EXTRA_CASES


@pytest.mark.parametrize(("text", "expected"), VALID_CASES)
def test_valid_filter_selects_exact_runs(
    db: duckdb.DuckDBPyConnection, text: str, expected: str
) -> None:
    assert run_ids(db, compile_run_filter(text)) == expected


# Fixed SQL vocabulary: anything the user writes (values, keys) must be in params, never here.
_SQL_VOCABULARY = (
    """EXISTS SELECT FROM WHERE AND OR NOT IS NULL LIKE ILIKE IN COALESCE FALSE TRUE TRY_CAST AS
    DOUBLE isnan run_metric_summary m run_id run_key r key latest_value min_value max_value
    run_params run_tags kv
    value name status user_id artifact_uri source_name source_type git_commit parent_run_id
    start_time end_time e experiment_tags experiment_id creation_time last_update_time"""
)
SQL_WORDS = set(_SQL_VOCABULARY.split())


def test_user_text_never_reaches_sql() -> None:
    for text, _ in VALID_CASES:
        _check_sql_vocabulary(compile_run_filter(text))
    for text, _ in EXPERIMENT_CASES:
        _check_sql_vocabulary(compile_experiment_filter(text))


def _check_sql_vocabulary(compiled: CompiledFilter) -> None:
    assert set(re.findall(r"[A-Za-z_]+", compiled.sql)) <= SQL_WORDS
    assert not re.search(r"['\"`0-9;]", compiled.sql.replace("SELECT 1 FROM", "SELECT FROM"))
    assert compiled.sql.count("?") == len(compiled.params)


def test_empty_filter_is_true() -> None:
    assert compile_run_filter(None) == CompiledFilter("TRUE", ())
    assert compile_run_filter("") == CompiledFilter("TRUE", ())
    assert compile_run_filter(" \n\t") == CompiledFilter("TRUE", ())
    assert compile_experiment_filter(None) == CompiledFilter("TRUE", ())


def test_params_are_typed() -> None:
    assert compile_run_filter("start_time > 5").params == (5,)
    assert compile_run_filter("start_time > 5.5").params == (5.5,)
    assert compile_run_filter("metrics.x > 5").params == ("x", 5.0)
    assert compile_run_filter("start_time > 99999999999999999999").params == (1e20,)
    assert compile_run_filter("params.lr = 0.5").params == ("lr", 0.5)


# --------------------------------------------------------------------------------------------
# Invalid run filters: (filter, position, text the message must contain)
# --------------------------------------------------------------------------------------------

ERROR_CASES = [
    # MLflow §12 errors (13-17, 23, 25, 31, 42, 54, 60, 61, 66, 72, 77, 78, 86, 88, 91, 92,
    # 102-114), and MLflow leniencies we do not copy (104-106)
    ("metrics.loss < '1'", 0, "compares with a number, not the string '1'"),
    ("metrics.loss LIKE '0%'", 0, "LIKE cannot be used with metric"),
    ("metrics.loss IN (1, 2)", 0, "IN cannot be used with metric"),
    ("metrics.loss IS NULL", 0, "IS NULL cannot be used with metric"),
    ("metrics.acc = NaN", 14, "expected a value, found 'NaN'"),
    ("metrics.val loss > 0.6", 12, "expected a comparison operator, found 'loss'"),
    ("metrics.2019 > 1", 8, "must be quoted"),
    ("params.epochs > '9'", 0, "needs an unquoted number"),
    ("params.model-type = 'x'", 12, "unexpected character '-'"),
    ("tags.team NOT LIKE 'v%'", 14, "expected IN after NOT, found 'LIKE'"),
    ("tags.team == 'vision'", 10, "'==' is not an operator"),
    ("tags.team <> 'vision'", 10, "'<>' is not an operator"),
    ("Run_Name = 'beta'", 0, "unknown run attribute 'Run_Name'"),
    ("attributes.run_id = ('A')", 20, "a list of values needs IN"),
    ("attributes.run_id IN ()", 22, "non-empty list"),
    ("attributes.run_id IN ('A', 1)", 27, "expected a quoted string in the list, found '1'"),
    ("attributes.start_time > '0'", 0, "numeric attribute 'attributes.start_time' compares"),
    ("attributes.end_time IS NULL", 0, "IS NULL cannot be used with numeric attribute"),
    ("attributes.experiment_id = '2'", 0, "experiment_ids"),
    ("attributes.lifecycle_stage = 'deleted'", 0, "run_view_type"),
    ("deleted_time > 0", 0, "cannot be searched"),
    ("experiment_id = '1'", 0, "experiment_ids"),
    ("metrics.loss BETWEEN 0 AND 1", 13, "expected a comparison operator, found 'BETWEEN'"),
    ("metrics.loss < 1 && params.lr = '0.01'", 17, "unexpected character '&'"),
    ("metrics.loss < 1 AND", 20, "found end of input"),
    ("AND metrics.loss < 1", 0, "expected an identifier, NOT or '(', found 'AND'"),
    ("metrics.loss < 1 AND AND params.lr = '0.01'", 21, "found 'AND'"),
    ("metrics.loss < 1; params.lr = '0.1'", 16, "unexpected character ';'"),
    ("metrics.loss", 12, "expected a comparison operator, found end of input"),
    ("metrics.loss = = 1", 15, "expected a value, found '='"),
    ("`params.lr` = '0.01'", 0, "quote only the key"),
    ("datasets.name = 'train'", 0, "dataset filters are not supported"),
    ("dataset.digest IN ('abc', 'def')", 0, "dataset filters are not supported"),
    ("datasets.foo = 'x'", 0, "dataset filters are not supported"),
    ("foo.bar = 'x'", 0, "unknown entity 'foo'"),
    ("params.quote = 'a''b'", 18, "strings have no escapes"),
    # structure
    ("metrics.loss < 1 OR", 19, "found end of input"),
    ("(metrics.loss < 1", 0, "unbalanced '('"),
    ("metrics.loss < 1)", 16, "unbalanced ')'"),
    ("()", 1, "expected an identifier"),
    ("metrics.loss < 1 metrics.acc > 0", 17, "expected AND, OR or end of input"),
    ("params.lr = 'x' 'y'", 16, "expected AND, OR or end of input, found \"'y'\""),
    ("metrics.loss < 1 AND NOT", 24, "found end of input"),
    ("NOT", 3, "found end of input"),
    ("tags.team = 'a' and or tags.team = 'b'", 20, "found 'or'"),
    ("tags.team = 'a' ORtags.team = 'b'", 16, "found 'ORtags.team'"),
    ("metrics.loss < 1 AND (params.lr = '0.1' OR", 42, "found end of input"),
    ("(metrics.loss < 1 tags.a = 'x')", 18, "expected ')', AND or OR"),
    ("metrics.loss < 1 ()", 17, "expected AND, OR or end of input"),
    ("tags.team ILIKE 'x' ESCAPE '\\'", 20, "found 'ESCAPE'"),
    ("params.lr = 'x';", 15, "unexpected character ';'"),
    # lexical
    ("params.lr = 'abc", 12, "unterminated string"),
    ("tags.`my tag = 'x'", 5, "unterminated quoted key"),
    ("tags.`` = 'x'", 5, "empty quoted key"),
    ("`` = 'x'", 0, "empty quoted name"),
    ("metrics. loss < 1", 8, "expected a key after '.', found ' '"),
    ("metrics.loss. < 1", 13, "expected a name after '.'"),
    ("metrics.loss < 1e999", 15, "out of range"),
    ("metrics.loss < 1.2.3", 15, "invalid number"),
    ("metrics.loss < 1abc", 15, "invalid number"),
    ("metrics.loss < - 1", 15, "unexpected character '-'"),
    ("metrics.loss ! 1", 13, "expected '!='"),
    ("tags.a = '\ud800'", 10, "invalid character"),
    ("metrics.loss < 1 #", 17, "unexpected character '#'"),
    # identifiers and functions
    ("METRICS.loss < 1", 0, "unknown entity 'METRICS'"),
    ("attributes.foo = 'x'", 0, "unknown run attribute 'foo'"),
    ("MEAN(metrics.loss) < 1", 0, "unknown function 'MEAN'"),
    ("MIN(params.lr) < 1", 0, "applies to metrics only"),
    ("MIN(metrics.loss < 1", 17, "expected ')', found '<'"),
    ("MIN() < 1", 4, "expected a metric"),
    ('"team" = \'x\'', 0, "quote only the key"),
    ("'x'", 0, "expected an identifier"),
    ("1 = 1", 0, "expected an identifier"),
    ("metrics", 0, "unknown run attribute 'metrics' (did you mean metrics.<key>?)"),
    ("min = 1", 0, "unknown run attribute 'min'"),
    # comparator / value does not fit the type
    ("params.lr > 'a'", 0, "needs an unquoted number"),
    ("params.lr LIKE 5", 0, "needs a quoted pattern"),
    ("tags.team IN 'vision'", 13, "expected '(' starting a list"),
    ("tags.team IN ('a',)", 18, "expected a quoted string in the list, found ')'"),
    ("tags.team IN ('a' 'b')", 18, "expected ',' or ')'"),
    ("tags.team IN (5)", 14, "expected a quoted string in the list"),
    ("tags.team IS 'x'", 13, "expected NULL or NOT NULL"),
    ("tags.team IS NOT 'x'", 17, "expected NULL"),
    ("params.x IS NULLX", 12, "found 'NULLX'"),
    ("status = FINISHED", 9, "put strings in quotes"),
    ("tags.team = NULL", 12, "write IS NULL or IS NOT NULL"),
    ("tags.team != null", 13, "write IS NULL or IS NOT NULL"),
    ("status = 1", 0, "compares with a quoted string"),
    ("status > 'A'", 0, "> cannot be used with attribute 'status'"),
    ("status IS NULL", 0, "IS NULL cannot be used with attribute 'status'"),
    ("run_name IN", 11, "expected '(' starting a list of quoted strings, found end of input"),
    ("metrics.loss IS NOT NULL", 0, "IS NOT NULL cannot be used with metric"),
    ("created = 'x'", 0, "numeric attribute 'created'"),
    ("start_time LIKE '1%'", 0, "LIKE cannot be used with numeric attribute"),
    ("start_time IN ('1')", 0, "IN cannot be used with numeric attribute"),
    ("metrics.acc > 0 AND tags.team < 'x'", 20, "needs an unquoted number"),
    ("tags.a = 1 AND MAX(metrics.x) LIKE 'y'", 15, "LIKE cannot be used with metric"),
]


@pytest.mark.parametrize(("text", "position", "message"), ERROR_CASES)
def test_invalid_filter_raises_at_position(text: str, position: int, message: str) -> None:
    with pytest.raises(FilterSyntaxError) as info:
        compile_run_filter(text)
    error = info.value
    assert message in str(error)
    assert error.position == position, str(error)
    assert str(error).startswith(f"Invalid filter at position {position}: ")
    assert error.clause_index is None
    assert error.expected
    assert isinstance(error, ValueError)


def test_error_message_shape() -> None:
    with pytest.raises(FilterSyntaxError) as info:
        compile_run_filter("metrics.loss < 1 AND tags.x")
    assert str(info.value) == (
        "Invalid filter at position 27: expected a comparison operator, found end of input"
    )
    assert info.value.expected == "a comparison operator"
    with pytest.raises(FilterSyntaxError) as info:
        compile_run_filter("metrics.loss < 1 AND tags.x bar")
    assert str(info.value) == (
        "Invalid filter at position 28: expected a comparison operator, found 'bar'"
    )


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    for text in ("(" * 200 + "metrics.loss < 1" + ")" * 200, "NOT " * 500 + "metrics.loss < 1"):
        with pytest.raises(FilterSyntaxError, match="nesting deeper than"):
            compile_run_filter(text)
    compile_run_filter("(" * 30 + "NOT " * 30 + "metrics.loss < 1" + ")" * 30)


def test_long_flat_filter_compiles(db: duckdb.DuckDBPyConnection) -> None:
    text = " OR ".join(f"run_id = '{c}'" for c in "ABC" * 300)
    assert run_ids(db, compile_run_filter(text)) == "ABC"


# --------------------------------------------------------------------------------------------
# AST and tokens
# --------------------------------------------------------------------------------------------


def test_ast_with_positions() -> None:
    text = "NOT (metrics.loss < 1 OR tags.`a b` IS NULL) AND MIN(metrics.x) >= -2.5"
    assert parse_run_filter(text) == And((
        Not(
            Or((
                Comparison(Identifier("metric", "loss", 5, "metrics.loss", "latest"), "<",
                           NumberLiteral("1", 1.0, 20, 1), 5),
                Comparison(Identifier("tag", "a b", 25, "tags.`a b`"), "IS NULL", None, 25),
            )),
            0,
        ),
        Comparison(Identifier("metric", "x", 49, "MIN(metrics.x)", "min"), ">=",
                   NumberLiteral("-2.5", -2.5, 67), 49),
    ))
    assert parse_run_filter("`Run Name` IN ('a', \"b\")") == Comparison(
        Identifier("attribute", "run_name", 0, "`Run Name`"), "IN",
        ListLiteral((StringLiteral("a", 15), StringLiteral("b", 20)), 14), 0,
    )
    assert parse_run_filter("") is None
    assert parse_run_filter(None) is None


def test_tokens() -> None:
    kinds = [(t.kind, t.value, t.key, t.position) for t in tokenize("tags.a.b>=.5 and(`x`.`y`")]
    assert kinds == [
        ("name", "tags", "a.b", 0), ("op", ">=", None, 8), ("number", ".5", None, 10),
        ("keyword", "AND", None, 13), ("lparen", "(", None, 16), ("name", "x", "y", 17),
        ("eof", "", None, 24),
    ]


# --------------------------------------------------------------------------------------------
# order_by
# --------------------------------------------------------------------------------------------

ORDER_CASES = [  # MLflow §13 adapted to this data set, plus ours
    (["metrics.loss DESC"], "HBFADCGE"),  # ties (A, F at 0.5) by start_time DESC
    (["metrics.loss"], "CDFABHGE"),
    (["metrics.loss asc"], "CDFABHGE"),
    (["metrics.acc DESC"], "FDABHGEC"),  # NaN (B) after numbers, missing last
    (["metrics.acc ASC"], "DAFBHGEC"),
    (["metrics.`val loss` DESC"], "AHGFEDCB"),
    (["params.lr"], "DABEGHFC"),  # byte order, missing last
    (["tags.team DESC"], "EAGBDHFC"),
    (["run_name"], "CABDEGFH"),  # 'Gamma_run' < 'alpha-run'; H has no name
    (["attributes.run_name DESC"], "FGEDBACH"),
    (["start_time"], "ABCDEFGH"),
    (["attributes.start_time ASC"], "ABCDEFGH"),
    (["created DESC"], "HGFEDCBA"),
    (["status", "end_time DESC"], "BHGEADCF"),
    (["user_id"], "GCAEBDFH"),
    ([], "HGFEDCBA"),
    (None, "HGFEDCBA"),
    (["MIN(metrics.rmse)"], "ABDHGFEC"),  # E's NULL min sorts as missing
    (["MAX(metrics.memUsage) DESC"], "EADBHGFC"),
    (["LATEST(metrics.r2) DESC"], "AEBCHGFD"),
    (["metrics.r2"], "BEACHGFD"),
    (["params.num DESC"], "EDGBAFHC"),  # params sort as strings
    (["tags.`my custom tag`"], "DAEHGFCB"),
    (["metrics.loss DESC", "params.lr"], "HBAFDCEG"),
    (["run_id DESC"], "HGFEDCBA"),
    (["start_time DESC"], "HGFEDCBA"),
    (["end_time"], "ABDEGHFC"),
    (["Created"], "ABCDEFGH"),
    (["run.status DESC", "run_name"], "FCDAEGHB"),
    (["tags.size", "MIN(metrics.loss) DESC"], "ADBFEHCG"),  # '5' < '5.0' < '6' < 'large'
]


@pytest.mark.parametrize(("clauses", "expected"), ORDER_CASES)
def test_order_by_exact_order(
    db: duckdb.DuckDBPyConnection, clauses: list[str] | None, expected: str
) -> None:
    assert ordered_ids(db, clauses) == expected


def test_order_by_sql_shape() -> None:
    assert compile_order_by(None).sql == "r.start_time DESC NULLS LAST, r.run_id ASC"
    order = compile_order_by(["params.`a b` DESC", "run_id"])
    assert order.params == ("a b",)
    assert order.sql.endswith("r.run_id ASC NULLS LAST, r.start_time DESC NULLS LAST")
    assert [k.descending for k in parse_order_by(["metrics.x desc", "tags.y"])] == [True, False]


ORDER_ERROR_CASES = [
    (["metrics.loss DESC NULLS LAST"], 0, 18, "expected end of clause, found 'NULLS'"),
    (["metrics.loss DESC, params.lr"], 0, 17, "one key per order_by element"),
    (["metrics.loss DOWN"], 0, 13, "expected ASC, DESC or end of clause, found 'DOWN'"),
    (["foo"], 0, 0, "unknown run attribute 'foo'"),
    (["timestamp"], 0, 0, "unknown run attribute 'timestamp'"),
    (["attributes.experiment_id"], 0, 0, "experiment_ids"),
    (["`Run name` DESC"], 0, 0, "cannot be used in order_by"),
    (["metrics.loss", "attributes.`run name`"], 1, 0, "cannot be used in order_by"),
    (["datasets.name"], 0, 0, "dataset filters are not supported"),
    (["metrics.loss DESC", "metrics.loss ASC"], 1, 0, "repeats order_by clause 0"),
    (["start_time", "created DESC"], 1, 0, "repeats order_by clause 0"),
    (["metrics.loss", "tags.a", "LATEST(metrics.loss)"], 2, 0, "repeats order_by clause 0"),
    (["metrics.loss", ""], 1, 0, "found end of input"),
    (["params.lr", "NOT params.lr"], 1, 0, "found 'NOT'"),
    (["MIN(metrics.loss"], 0, 16, "expected ')'"),
    (["metrics.loss ASC DESC"], 0, 17, "expected end of clause"),
    (["metrics.loss < 1"], 0, 13, "expected ASC, DESC or end of clause, found '<'"),
    (["MIN(tags.x)"], 0, 0, "applies to metrics only"),
    (["tags.`x"], 0, 5, "unterminated quoted key"),
]


@pytest.mark.parametrize(("clauses", "index", "position", "message"), ORDER_ERROR_CASES)
def test_order_by_errors(clauses: list[str], index: int, position: int, message: str) -> None:
    with pytest.raises(FilterSyntaxError) as info:
        compile_order_by(clauses)
    error = info.value
    assert message in str(error)
    assert (error.clause_index, error.position) == (index, position), str(error)
    assert str(error).startswith(f"Invalid order_by clause {index} at position {position}: ")


# --------------------------------------------------------------------------------------------
# Experiment filters
# --------------------------------------------------------------------------------------------

EXPERIMENT_CASES = [
    ("", "0123"),
    ("name = 'Default'", "0"),
    ("name LIKE 'fraud%'", "1"),
    ("name ILIKE 'fraud%'", "12"),
    ("attributes.name != 'Default'", "123"),
    ("creation_time > 1500", "23"),
    ("last_update_time >= 2000", "12"),
    ("last_update_time != 0", "12"),  # 3 has none: missing never matches
    ("tags.team = 'risk'", "1"),
    ("tags.team ILIKE 'RISK'", "12"),
    ("tags.team != 'risk'", "2"),
    ("tags.team IS NULL", "03"),
    ("tags.`owner name` = 'ann'", "1"),
    ("tags.version = 2", "2"),
    ("tags.version > 5", "3"),
    ("experiment_id IN ('1', '3')", "13"),
    ("experiment_id = '0'", "0"),
    ("name LIKE 'fraud%' OR tags.version IS NOT NULL", "123"),
    ("NOT name = 'Default'", "123"),
    ("attr.creation_time < 1500 AND NOT tags.team IS NOT NULL", "0"),
]


@pytest.mark.parametrize(("text", "expected"), EXPERIMENT_CASES)
def test_experiment_filter(db: duckdb.DuckDBPyConnection, text: str, expected: str) -> None:
    assert experiment_ids(db, compile_experiment_filter(text)) == expected


EXPERIMENT_ERROR_CASES = [
    ("metrics.x > 1", 0, "metric filters are not supported in experiment search"),
    ("params.a = 'x'", 0, "param filters are not supported in experiment search"),
    ("MIN(metrics.x) < 1", 4, "metric filters are not supported"),
    ("name > 'a'", 0, "> cannot be used with attribute 'name'"),
    ("name IN ('a')", 0, "IN cannot be used with attribute 'name'"),
    ("experiment_id LIKE '1%'", 0, "LIKE cannot be used with attribute 'experiment_id'"),
    ("creation_time = 'x'", 0, "compares with a number"),
    ("foo = 'x'", 0, "unknown experiment attribute 'foo'"),
    ("run_name = 'x'", 0, "unknown experiment attribute 'run_name'"),
    ("lifecycle_stage = 'active'", 0, "view_type"),
    ("name = 'a' OR", 13, "found end of input"),
]


@pytest.mark.parametrize(("text", "position", "message"), EXPERIMENT_ERROR_CASES)
def test_experiment_filter_errors(text: str, position: int, message: str) -> None:
    with pytest.raises(FilterSyntaxError) as info:
        compile_experiment_filter(text)
    assert message in str(info.value)
    assert info.value.position == position, str(info.value)


# --------------------------------------------------------------------------------------------
# Properties (hypothesis): any string compiles or raises FilterSyntaxError; compiled SQL runs
# --------------------------------------------------------------------------------------------

GRAMMAR_TOKENS = [
    "metrics.loss", "metric.acc", "params.lr", "params.num", "tags.team", "tags.`my tag`",
    "`metrics`.loss", "attributes.status", "run_name", "start_time", "end_time", "created",
    "`Run Name`", "run_id", "name", "creation_time", "tags.size", "metrics.'val loss'",
    "MIN", "MAX", "LATEST", "min", "(", ")", ",", "AND", "OR", "NOT", "and", "not", "or",
    "=", "!=", "<", "<=", ">", ">=", "==", "<>", "!", "LIKE", "ILIKE", "IN", "IS", "NULL",
    "'x'", '"vision"', "''", "'0.5'", "'%'", "'a''b'", "0.5", "-1", ".5", "1e-3", "1",
    "99999999999999999999", "1e999", "foo", "foo.bar", "datasets.name", "experiment_id",
    ";", "ASC", "DESC", "`", "'", '"', ".", "-", "\\", "\x00", "é",
]
SEPARATORS = st.sampled_from(["", " ", " ", " ", "\n"])
token_soup = st.lists(st.tuples(st.sampled_from(GRAMMAR_TOKENS), SEPARATORS), max_size=14).map(
    lambda parts: "".join(tok + sep for tok, sep in parts)
)
OPERANDS = [
    "metrics.loss", "metric.acc", "MIN(metrics.rmse)", "max(metrics.r2)", "LATEST(metrics.x)",
    "params.lr", "params.num", "tags.team", "tags.`my tag`", "tags.size", "status", "run_name",
    "`Run Name`", "start_time", "end_time", "created", "run_id", "user_id", "name",
    "creation_time", "tags.version", "experiment_id", "attributes.parent_run_id",
]
COMPARATORS = [
    "=", "!=", "<", "<=", ">", ">=", "LIKE", "ilike", "IN", "NOT IN", "IS NULL", "is not null",
]
VALUES = [
    "'vision'", '"0.5"', "''", "'%a_'", "0.5", "-1", ".5", "1e-3", "7000", "('A', \"B\")",
    "('x')", "()", "(1)",
]
clause = st.builds(
    lambda o, c, v: f"{o} {c}" if "NULL" in c.upper() else f"{o} {c} {v}",
    st.sampled_from(OPERANDS), st.sampled_from(COMPARATORS), st.sampled_from(VALUES),
)
sentence = st.recursive(
    clause,
    lambda inner: st.one_of(
        inner.map(lambda e: f"NOT {e}"),
        inner.map(lambda e: f"({e})"),
        st.tuples(inner, st.sampled_from(["AND", "OR", "and", "or"]), inner).map(" ".join),
    ),
    max_leaves=5,
)


@st.composite
def mutated_sentence(draw: st.DrawFn) -> str:
    """A grammatical filter, sometimes with one grammar token inserted or a character cut."""
    text = draw(sentence)
    if text and draw(st.booleans()):
        at = draw(st.integers(0, len(text) - 1))
        if draw(st.booleans()):
            text = text[:at] + text[at + 1 :]
        else:
            text = text[:at] + " " + draw(st.sampled_from(GRAMMAR_TOKENS)) + " " + text[at:]
    return text


FUZZ = settings(max_examples=250, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])


def _check_run_filter(con: duckdb.DuckDBPyConnection, text: str) -> None:
    try:
        compiled = compile_run_filter(text)
    except FilterSyntaxError as error:
        assert 0 <= error.position <= len(text)
        assert error.expected
        return
    run_ids(con, compiled)  # valid SQL: DuckDB runs it


@FUZZ
@given(text=st.text(max_size=60))
def test_fuzz_random_text(db: duckdb.DuckDBPyConnection, text: str) -> None:
    _check_run_filter(db, text)


@FUZZ
@given(text=st.one_of(token_soup, mutated_sentence()))
def test_fuzz_token_soup(db: duckdb.DuckDBPyConnection, text: str) -> None:
    _check_run_filter(db, text)
    try:
        compiled = compile_experiment_filter(text)
    except FilterSyntaxError as error:
        assert 0 <= error.position <= len(text)
    else:
        experiment_ids(db, compiled)


@FUZZ
@given(
    clauses=st.lists(
        st.one_of(
            token_soup, st.text(max_size=20), st.sampled_from(OPERANDS),
            st.builds("{} {}".format, st.sampled_from(OPERANDS), st.sampled_from(GRAMMAR_TOKENS)),
        ),
        max_size=3,
    )
)
def test_fuzz_order_by(db: duckdb.DuckDBPyConnection, clauses: list[str]) -> None:
    try:
        compile_order_by(clauses)
    except FilterSyntaxError as error:
        assert error.clause_index is not None and 0 <= error.clause_index < len(clauses)
        assert 0 <= error.position <= len(clauses[error.clause_index])
        return
    assert len(ordered_ids(db, clauses)) == len(RUNS)


# Boolean structure: the result of any AND / OR / NOT combination of atoms equals the same set
# algebra over the atoms' known results (NOT is the complement; precedence NOT > AND > OR).
ATOMS = [
    (text if isinstance(parse_run_filter(text), Comparison) else f"({text})", set(ids))
    for text, ids in VALID_CASES
    if text.strip()
]


def _expressions() -> st.SearchStrategy[tuple[str, set[str], int]]:
    # (text, expected ids, precedence: 3 atom/parenthesised, 2 NOT, 1 AND, 0 OR)
    atoms = st.sampled_from(ATOMS).map(lambda a: (a[0], a[1], 3))

    def extend(
        inner: st.SearchStrategy[tuple[str, set[str], int]],
    ) -> st.SearchStrategy[tuple[str, set[str], int]]:
        def wrap(e: tuple[str, set[str], int], level: int) -> str:
            return e[0] if e[2] >= level else f"({e[0]})"

        nots = inner.map(lambda e: (f"NOT {wrap(e, 2)}", set(ALL) - e[1], 2))
        ands = st.tuples(inner, inner).map(
            lambda p: (f"{wrap(p[0], 1)} AND {wrap(p[1], 2)}", p[0][1] & p[1][1], 1)
        )
        ors = st.tuples(inner, inner).map(
            lambda p: (f"{wrap(p[0], 0)} or {wrap(p[1], 1)}", p[0][1] | p[1][1], 0)
        )
        parens = inner.map(lambda e: (f"({e[0]})", e[1], 3))
        return st.one_of(nots, ands, ors, parens)

    return st.recursive(atoms, extend, max_leaves=6)


@settings(max_examples=150, deadline=None, database=None)
@given(expr=_expressions())
def test_boolean_combinations_match_set_algebra(
    db: duckdb.DuckDBPyConnection, expr: tuple[str, set[str], int]
) -> None:
    text, expected, _ = expr
    assert run_ids(db, compile_run_filter(text)) == "".join(sorted(expected))


def test_numbers_and_nan_guard() -> None:
    # Sanity of the data set itself: NaN is stored and DuckDB treats NaN = NaN as true, which is
    # why the compiler guards with isnan.
    con = _build_db()
    (value,) = con.execute(
        "SELECT latest_value FROM metric_summary WHERE run_id = 'B' AND key = 'acc'"
    ).fetchone() or (None,)
    assert isinstance(value, float) and math.isnan(value)
    assert con.execute("SELECT 'nan'::DOUBLE = 'nan'::DOUBLE").fetchone() == (True,)
    con.close()
