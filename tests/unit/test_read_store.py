"""runstream.read_store: generations, and what a node does with a read model of another layout."""

from __future__ import annotations

from pathlib import Path

import duckdb
from runstream.projections.read_model import SCHEMA_REVISION
from runstream.read_store import CURRENT_FILE, ReadStore, stored_revision


def test_a_new_directory_starts_at_generation_zero(tmp_path: Path) -> None:
    store = ReadStore(tmp_path)
    try:
        assert store.path.name == "read-model.0.duckdb"
        assert (tmp_path / CURRENT_FILE).read_text().strip() == "read-model.0.duckdb"
    finally:
        store.close()
    assert stored_revision(tmp_path / "read-model.0.duckdb") == SCHEMA_REVISION


def test_a_read_model_of_an_older_revision_is_replaced_by_an_empty_next_generation(
    tmp_path: Path,
) -> None:
    old = tmp_path / "read-model.3.duckdb"
    con = duckdb.connect(str(old))
    con.execute("CREATE TABLE read_model_meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
    con.execute("INSERT INTO read_model_meta VALUES ('schema_revision', '1')")
    con.execute("CREATE TABLE params (run_id VARCHAR, key VARCHAR, value VARCHAR)")
    con.execute("CREATE TABLE projector_offsets (topic VARCHAR, partition INTEGER, "
                "next_offset BIGINT, PRIMARY KEY (topic, partition))")
    con.execute("INSERT INTO projector_offsets VALUES ('t', 0, 42)")
    con.close()
    (tmp_path / CURRENT_FILE).write_text("read-model.3.duckdb\n")

    store = ReadStore(tmp_path)
    try:
        assert store.path.name == "read-model.4.duckdb"
        assert (tmp_path / CURRENT_FILE).read_text().strip() == "read-model.4.duckdb"
        assert not old.exists()
        # Offsets start over: the projector replays the whole log into the new file.
        assert store.next_offsets("t") == {}
    finally:
        store.close()
    assert stored_revision(tmp_path / "read-model.4.duckdb") == SCHEMA_REVISION


def test_a_read_model_of_this_revision_is_kept(tmp_path: Path) -> None:
    store = ReadStore(tmp_path)
    cur = store.cursor()  # as the projector writes (reading() only reads)
    cur.execute("INSERT INTO projector_offsets VALUES ('t', 0, 7)")
    cur.close()
    store.close()
    again = ReadStore(tmp_path)
    try:
        assert again.path.name == "read-model.0.duckdb"
        assert again.next_offsets("t") == {0: 7}
    finally:
        again.close()
