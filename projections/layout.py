"""Physical layout upkeep of the read model: key/value tables kept clustered by key.

Every search clause and every ordering by a metric, param or tag reads one key of a per-run
key/value table (``metrics.loss`` reads the ``loss`` rows of ``run_metric_summary``). DuckDB
keeps the min and max of each column per row group (about 120,000 rows) and skips a row group
whose range cannot match, so a table sorted by key answers ``key = 'loss'`` from the one or
two row groups holding it, instead of reading all of them: a search over 100,000 runs with
20 metrics each reads 100,000 summary rows instead of 2,000,000.

The projector appends rows in log order, so the table is a sorted part followed by an unsorted
tail that every lookup reads whole. When the tail grows past a share of the table, the table
is rewritten in key order inside the caller's transaction: a pure reordering, so a crash
during it changes nothing and a rebuild may do it at other moments with the same content.
New (run, key) rows come from new runs and new keys, not from new points, so this happens
as often as runs are created, not as often as metrics are logged.
"""

from __future__ import annotations

from typing import Any, Protocol

# table -> the order it is kept in.
CLUSTERED: dict[str, str] = {
    "run_metric_summary": "key, run_key",
    "run_params": "key, run_key",
    "run_tags": "key, run_key",
}
# Rewrite once the tail holds this many rows and this share of the table. Every lookup of a
# key reads the whole tail: at 100,000 runs a tail of a quarter of the summary (5 of its 19
# row groups) made a search ordered by a metric 30 ms where a sorted table takes 18. A tenth
# rewrites each row about 11 times over the table's growth instead of 5 (a 2,000,000-row
# summary takes about a second).
MIN_TAIL_ROWS = 20_000
TAIL_SHARE = 0.1

_META_KEY = "clustered_rows.{table}"


class SqlConnection(Protocol):
    def execute(self, query: str, parameters: Any = None) -> Any: ...


def _row_count(con: SqlConnection, table: str) -> int:
    ((count,),) = con.execute(f"SELECT count(*) FROM {table}").fetchall()
    return int(count)


def _sorted_rows(con: SqlConnection, table: str) -> int:
    rows = con.execute(
        "SELECT value FROM read_model_meta WHERE key = ?", [_META_KEY.format(table=table)]
    ).fetchall()
    return int(rows[0][0]) if rows else 0


def tail_rows(con: SqlConnection, table: str) -> int:
    """Rows appended to a clustered table since it was last sorted (an estimate: rows
    deleted since then are not subtracted from the sorted part)."""
    return max(0, _row_count(con, table) - _sorted_rows(con, table))


def due(con: SqlConnection) -> list[str]:
    """The clustered tables whose unsorted tail is large enough to rewrite."""
    out = []
    for table in CLUSTERED:
        tail = tail_rows(con, table)
        if tail >= MIN_TAIL_ROWS and tail >= TAIL_SHARE * _row_count(con, table):
            out.append(table)
    return out


def cluster(con: SqlConnection, table: str) -> int:
    """Rewrite ``table`` in its key order, inside the caller's transaction; return its rows.

    The rows are copied aside, deleted and inserted back sorted: the table keeps its
    definition, and the row groups left empty are dropped at the next checkpoint.
    """
    order = CLUSTERED[table]
    con.execute(f"CREATE OR REPLACE TEMP TABLE _clustered AS SELECT * FROM {table} ORDER BY {order}")
    try:
        con.execute(f"DELETE FROM {table}")
        con.execute(f"INSERT INTO {table} SELECT * FROM _clustered")
    finally:
        con.execute("DROP TABLE IF EXISTS _clustered")
    count = _row_count(con, table)
    con.execute(
        "INSERT INTO read_model_meta VALUES (?, ?) ON CONFLICT DO UPDATE SET value = excluded.value",
        [_META_KEY.format(table=table), str(count)],
    )
    return count
