"""The read model's tables, views and macros (DuckDB DDL); every statement is idempotent."""

from __future__ import annotations

DEFAULT_EXPERIMENT_ID = "0"
DEFAULT_EXPERIMENT_NAME = "Default"
# Revision 2: child tables keyed by the run's integer run_key (revision 1 joined on run_id
# strings, 3-10x slower to search). Revision 3: parked_events. A node finding a read model
# of another revision replays the log into a new one (see runstream.read_store). Revision 4:
# runs.version and the model_id, which let a query node reuse the records it read.
# Revision 5: runs.prior_start_max. Revision 6: run_records. Revision 7: a run_records
# document's metrics as rows.
SCHEMA_REVISION = 7

# The runs columns a run_records document opens with, in runstream.queries.RunRecord's order.
RECORD_RUN_COLUMNS: tuple[str, ...] = (
    "run_id", "experiment_id", "name", "user_id", "status", "start_time", "end_time",
    "lifecycle_stage", "deleted_time", "artifact_uri", "source_name", "source_type",
    "entry_point", "git_commit", "git_dirty", "parent_run_id", "has_model", "python_version",
    "packages", "command_line", "host", "git_remote",
)

# A key/value table's rows for the runs $keys as one JSON text a run, keys sorted (the order
# the API shows them in, and one text for one content: a rebuild writes the same documents):
# an object of ``item`` (key: value), or an array of ``item`` ([key, values...]).
_KEY_VALUE_JSON = (
    "SELECT run_key, '{open}' || string_agg({item}, ',' ORDER BY key) || '{close}' AS j "
    "FROM {table} WHERE run_key IN (SELECT unnest($keys)) GROUP BY run_key"
)
# (run_key, version, document) of the runs $keys, from their runs rows and key/value tables:
# ``[[RECORD_RUN_COLUMNS...], {param: value}, {tag: value}, [[metric, latest_value,
# latest_step, latest_timestamp, min_value, max_value, count], ...]]``, a metric as a row
# in MetricSummary's order (a reader makes each summary of its list without a loop).
# DuckDB writes doubles as the shortest text that reads back as the same double, NaN and
# infinities as NaN and Infinity (Python's json reads them; strict JSON readers refuse).
RUN_RECORDS_SELECT = (
    "SELECT r.run_key, r.version, '[' || json_array({columns}) || ',' || coalesce(p.j, '{{}}') "
    "|| ',' || coalesce(t.j, '{{}}') || ',' || coalesce(m.j, '[]') || ']' "
    "FROM runs r LEFT JOIN ({params}) p USING (run_key) LEFT JOIN ({tags}) t USING (run_key) "
    "LEFT JOIN ({metrics}) m USING (run_key) WHERE r.run_key IN (SELECT unnest($keys))"
).format(
    columns=", ".join(RECORD_RUN_COLUMNS),
    params=_KEY_VALUE_JSON.format(table="run_params", open="{", close="}",
                                  item="to_json(key) || ':' || to_json(value)"),
    tags=_KEY_VALUE_JSON.format(table="run_tags", open="{", close="}",
                                item="to_json(key) || ':' || to_json(value)"),
    metrics=_KEY_VALUE_JSON.format(
        table="run_metric_summary", open="[", close="]",
        item="json_array(key, latest_value, latest_step, latest_timestamp, min_value, "
             "max_value, count)",
    ),
)

DDL: tuple[str, ...] = (
    # Where the projector stands: the next offset of each partition, written in the same
    # transaction as the changes of the batch that moved it.
    """CREATE TABLE IF NOT EXISTS projector_offsets (
        topic VARCHAR NOT NULL,
        partition INTEGER NOT NULL,
        next_offset BIGINT NOT NULL,
        PRIMARY KEY (topic, partition))""",
    # Event ids already applied: a client that resends an event it could not confirm
    # (after a broker outage) must not count it twice.
    """CREATE TABLE IF NOT EXISTS applied_events (event_id VARCHAR PRIMARY KEY)""",
    """CREATE TABLE IF NOT EXISTS read_model_meta (key VARCHAR PRIMARY KEY, value VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS experiments (
        experiment_id VARCHAR PRIMARY KEY,
        name VARCHAR NOT NULL,
        artifact_location VARCHAR,
        lifecycle_stage VARCHAR NOT NULL DEFAULT 'active',
        creation_time BIGINT,
        last_update_time BIGINT,
        deleted_time BIGINT,
        -- TRUE while only a run has named it: its experiment.created is on another
        -- partition and not applied yet.
        placeholder BOOLEAN NOT NULL DEFAULT FALSE)""",
    """CREATE TABLE IF NOT EXISTS experiment_tags (
        experiment_id VARCHAR NOT NULL,
        key VARCHAR NOT NULL,
        value VARCHAR,
        PRIMARY KEY (experiment_id, key))""",
    # run_key: the run's small integer key, given in log order as runs are created (one more
    # than the greatest so far). Every per-run table is keyed by it: joins and lookups on an
    # integer are several times cheaper than on the 32-character run id, and since keys grow
    # with time, the rows of recent runs sit together at the end of each table, where
    # DuckDB's min/max zone maps find them without reading the rest. It never leaves the
    # read model: the API speaks run ids, and a rebuild may number runs differently.
    """CREATE TABLE IF NOT EXISTS runs (
        run_id VARCHAR PRIMARY KEY,
        run_key INTEGER NOT NULL UNIQUE,
        experiment_id VARCHAR NOT NULL,
        name VARCHAR,
        user_id VARCHAR,
        source_name VARCHAR,
        source_type VARCHAR,
        entry_point VARCHAR,
        git_commit VARCHAR,
        git_dirty BOOLEAN,
        git_remote VARCHAR,
        status VARCHAR NOT NULL,
        start_time BIGINT,
        end_time BIGINT,
        lifecycle_stage VARCHAR NOT NULL DEFAULT 'active',
        deleted_time BIGINT,
        parent_run_id VARCHAR,
        artifact_uri VARCHAR,
        python_version VARCHAR,
        packages VARCHAR[],
        command_line VARCHAR[],
        host VARCHAR,
        has_model BOOLEAN NOT NULL DEFAULT FALSE,
        -- Raised in the transaction of every batch that changes the run's record (its row,
        -- params, tags or metric summaries): a record read at one version is the record
        -- until the version moves (runstream.queries.RecordCache). Like run_key, it depends
        -- on batch boundaries and never leaves the read model.
        version BIGINT NOT NULL DEFAULT 0,
        -- The latest start_time among the runs with a smaller run_key when this one was
        -- created (NULL for none): a newest-first search reads here that no older run can
        -- sort before its window's page, instead of scanning them (runstream.queries).
        prior_start_max BIGINT)""",
    """CREATE TABLE IF NOT EXISTS run_params (
        run_key INTEGER NOT NULL,
        key VARCHAR NOT NULL,
        value VARCHAR NOT NULL)""",
    # A param is set once; a later, different value is refused here and recorded for an
    # operator to see, whatever order the log is replayed in (first in log order wins).
    """CREATE TABLE IF NOT EXISTS param_conflicts (
        run_id VARCHAR NOT NULL,
        key VARCHAR NOT NULL,
        kept_value VARCHAR,
        rejected_value VARCHAR,
        event_id VARCHAR NOT NULL,
        event_time BIGINT)""",
    """CREATE TABLE IF NOT EXISTS run_tags (
        run_key INTEGER NOT NULL,
        key VARCHAR NOT NULL,
        value VARCHAR NOT NULL)""",
    # Every point ever logged, except exact duplicates of (run, key, step, timestamp, value).
    """CREATE TABLE IF NOT EXISTS run_metric_history (
        run_key INTEGER NOT NULL,
        key VARCHAR NOT NULL,
        step BIGINT NOT NULL,
        timestamp BIGINT NOT NULL,
        value DOUBLE NOT NULL)""",
    # One row per (run, key), merged batch by batch (apply_events.merge_metric_points).
    """CREATE TABLE IF NOT EXISTS run_metric_summary (
        run_key INTEGER NOT NULL,
        key VARCHAR NOT NULL,
        min_value DOUBLE,
        max_value DOUBLE,
        latest_value DOUBLE NOT NULL,
        latest_step BIGINT NOT NULL,
        latest_timestamp BIGINT NOT NULL,
        count BIGINT NOT NULL)""",
    # Each run's whole record (its runs row, params, tags and metric summaries) as one JSON
    # document (RUN_RECORDS_SELECT), filed under the run's version it was made at. A query
    # node reads a page's records here in one statement, through the primary key's index:
    # reading them from the key/value tables, clustered by key, scans all of them (3
    # statements, 20 ms for 100 runs of 100,000, where this takes 3). The projector refreshes
    # the documents of changed runs as a chore, at most once a second (making them in the
    # batch's own transaction cost 10-15 ms a batch at 100,000 runs, 50 for a batch touching
    # 100 runs); a reader finding a document older than its run makes that one from the
    # tables. Not in PROJECTED_TABLES: a cache of them, current or not by timing.
    """CREATE TABLE IF NOT EXISTS run_records (
        run_key INTEGER PRIMARY KEY,
        version BIGINT NOT NULL,
        record VARCHAR NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS run_artifacts (
        run_key INTEGER NOT NULL,
        path VARCHAR NOT NULL,
        size BIGINT NOT NULL,
        digest VARCHAR NOT NULL,
        is_model BOOLEAN NOT NULL,
        logged_time BIGINT)""",
    # Events of a run whose run.created is not applied yet (another rank's points can reach
    # the log first), in log order (seq); applied and removed when the run is created.
    """CREATE TABLE IF NOT EXISTS parked_events (
        run_id VARCHAR NOT NULL,
        seq BIGINT NOT NULL,
        event VARCHAR NOT NULL)""",
    # Runs removed for good; restoring one is an error that says so.
    """CREATE TABLE IF NOT EXISTS purged_runs (
        run_id VARCHAR PRIMARY KEY,
        purged_time BIGINT)""",
    # Events that reached the projector but could not be applied (unknown run, ...).
    """CREATE TABLE IF NOT EXISTS rejected_events (
        event_id VARCHAR,
        type VARCHAR,
        run_id VARCHAR,
        reason VARCHAR,
        partition INTEGER,
        "offset" BIGINT)""",
    # The per-run tables by run id, for operators, tests and cold paths; the hot queries
    # (search, run pages) read the run_* tables by run_key.
    *(
        f"""CREATE OR REPLACE VIEW {view} AS
            SELECT r.run_id, t.* EXCLUDE (run_key) FROM {table} t JOIN runs r USING (run_key)"""
        for view, table in (
            ("params", "run_params"),
            ("tags", "run_tags"),
            ("metric_history", "run_metric_history"),
            ("metric_summary", "run_metric_summary"),
            ("artifacts", "run_artifacts"),
        )
    ),
    """CREATE OR REPLACE VIEW active_runs AS
        SELECT * FROM runs WHERE lifecycle_stage = 'active'""",
    # Time is data: the window's edges are arguments, never the clock.
    """CREATE OR REPLACE MACRO runs_deleted_within(as_of_ms, window_ms) AS TABLE
        SELECT * FROM runs
        WHERE lifecycle_stage = 'deleted' AND deleted_time > as_of_ms - window_ms""",
    """CREATE OR REPLACE MACRO runs_past_retention(as_of_ms, window_ms) AS TABLE
        SELECT * FROM runs
        WHERE lifecycle_stage = 'deleted' AND deleted_time <= as_of_ms - window_ms""",
    f"""INSERT INTO experiments (experiment_id, name, lifecycle_stage, creation_time,
            last_update_time, placeholder)
        VALUES ('{DEFAULT_EXPERIMENT_ID}', '{DEFAULT_EXPERIMENT_NAME}', 'active', 0, 0, FALSE)
        ON CONFLICT DO NOTHING""",
    f"""INSERT INTO read_model_meta VALUES ('schema_revision', '{SCHEMA_REVISION}')
        ON CONFLICT DO NOTHING""",
    # This file's identity: cached records are keyed by it, so a rebuilt or another node's
    # read model (other run keys and versions) never serves a record read from this one.
    """INSERT INTO read_model_meta VALUES ('model_id', uuid()::VARCHAR) ON CONFLICT DO NOTHING""",
)

# Relations whose content is the projection (everything but the projector's own bookkeeping);
# a rebuild or a crash test compares them through projected_rows_sql.
PROJECTED_TABLES: tuple[str, ...] = (
    "experiments",
    "experiment_tags",
    "runs",
    "params",
    "param_conflicts",
    "tags",
    "metric_history",
    "metric_summary",
    "artifacts",
    "purged_runs",
    "parked_events",
)


def projected_rows_sql(relation: str) -> str:
    """SQL for the rows of a projected relation that must match between two projections of
    the same log: everything but run keys, record versions and prior_start_max, which depend
    on how partitions interleaved and where batches were cut."""
    if relation not in PROJECTED_TABLES:
        raise ValueError(f"not a projected relation: {relation!r}")
    if relation == "runs":
        return "SELECT * EXCLUDE (run_key, version, prior_start_max) FROM runs"
    if relation == "parked_events":
        return "SELECT run_id, event FROM parked_events"
    return f"SELECT * FROM {relation}"
