"""Fast encoding of metric batches straight from the client's point tuples.

A ``metrics.logged`` event is five JSON arrays. Validating the pydantic model of a batch and
serialising it costs about 0.5 µs a point, ``json.dumps`` of the floats alone as much;
pydantic-core's serializer (Rust, shortest round-trip float formatting) writes the columns
in about 0.1 µs a point. The output is the wire form ``encode_event`` produces (a unit
test decodes both and compares), with NaN and ±inf as the strings "NaN", "Infinity" and
"-Infinity".
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from functools import partial

from pydantic_core import to_json

from runstream.schemas.events import CURRENT_SCHEMA_MINOR, CURRENT_SCHEMA_VERSION

_dumps = json.dumps
_columns_json = partial(to_json, inf_nan_mode="strings")


def encode_metrics(
    run_id: str,
    keys: Sequence[str],
    values: Sequence[float],
    steps: Sequence[int],
    timestamps: Sequence[int],
    *,
    producer: str,
    event_time_ms: int,
    event_id: str | None = None,
) -> bytes:
    """The wire form of one ``metrics.logged`` event for points given column by column.

    ``keys[i]`` is the metric name of point ``i``; values are floats, steps and timestamps
    ints (the caller converted them when the point was logged).
    """
    names = list(dict.fromkeys(keys))
    if len(names) == 1:
        key_index = "[" + ",".join(["0"] * len(keys)) + "]"
    else:
        index = {k: i for i, k in enumerate(names)}
        key_index = _columns_json(list(map(index.__getitem__, keys))).decode()
    return (
        '{"schema_version":%d,"schema_minor":%d,"event_id":%s,"event_time_ms":%d,'  # noqa: UP031 - no brace escaping in JSON
        '"producer":%s,"run_id":%s,"type":"metrics.logged","body":{"keys":%s,'
        '"key_index":%s,"values":%s,"steps":%s,"timestamps":%s}}'
        % (
            CURRENT_SCHEMA_VERSION,
            CURRENT_SCHEMA_MINOR,
            _dumps(event_id or uuid.uuid4().hex),
            event_time_ms,
            _dumps(producer),
            _dumps(run_id),
            _dumps(names),
            key_index,
            _columns_json(values).decode(),
            _columns_json(steps).decode(),
            _columns_json(timestamps).decode(),
        )
    ).encode()
