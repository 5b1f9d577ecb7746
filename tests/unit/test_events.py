"""The event contract: round trips, version rules, and generated JSON Schema files."""

from __future__ import annotations

import json
import math

import pytest
from runstream.schemas import (
    EVENT_TYPES,
    EventDecodeError,
    MetricsLoggedBody,
    decode_event,
    encode_event,
)
from runstream.schemas.json_schema_export import JSON_DIR, rendered_schemas

from tests.event_factory import one_of_each


def _same(a: object, b: object) -> bool:
    """Equality that treats NaN as equal to NaN (events carry NaN metric values)."""
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def test_one_of_each_covers_every_event_type() -> None:
    assert {e.type for e in one_of_each()} == set(EVENT_TYPES)  # type: ignore[attr-defined]


@pytest.mark.parametrize("event", one_of_each(), ids=lambda e: e.type)
def test_every_event_round_trips(event: object) -> None:
    decoded = decode_event(encode_event(event))  # type: ignore[arg-type]
    assert type(decoded) is type(event)
    assert _same(decoded.model_dump(mode="json"), event.model_dump(mode="json"))  # type: ignore[attr-defined]


def test_nan_and_infinities_survive_as_strings_on_the_wire() -> None:
    event = next(e for e in one_of_each() if e.type == "metrics.logged")  # type: ignore[attr-defined]
    wire = encode_event(event)
    assert b'"NaN"' in wire and b'"Infinity"' in wire and b'"-Infinity"' in wire
    values = decode_event(wire).body.values  # type: ignore[attr-defined]
    assert values[0] == 1.0 and math.isnan(values[1])
    assert values[2] == math.inf and values[3] == -math.inf
    json.loads(wire)  # strict JSON: no bare NaN literals


def test_unknown_fields_are_ignored() -> None:
    event = one_of_each()[0]
    raw = json.loads(encode_event(event))
    raw["added_in_1_1"] = {"anything": 1}
    raw["body"]["also_new"] = [1, 2]
    raw["schema_minor"] = 7
    decoded = decode_event(json.dumps(raw))
    assert decoded.event_id == event.event_id


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "invalid_json"),
        (b"[1, 2]", "invalid_envelope"),
        (b'{"type": "run.created"}', "invalid_envelope"),
        (b'{"schema_version": 1, "type": "run.teleported", "event_id": "x", "event_time_ms": 1}',
         "unknown_type"),
        (b'{"schema_version": 2, "type": "run.created", "event_id": "x", "event_time_ms": 1}',
         "unknown_major_version"),
        (b'{"schema_version": 1, "type": "tag.set", "event_id": "x", "event_time_ms": 1, '
         b'"run_id": "r", "body": {"value": "v"}}', "invalid_event"),
        (b"\xff\xfe", "invalid_json"),
    ],
)
def test_malformed_messages_get_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(EventDecodeError) as info:
        decode_event(payload)
    assert info.value.reason == reason


@pytest.mark.parametrize(
    "body",
    [
        {"keys": ["a"], "key_index": [0, 0], "values": [1.0], "steps": [0], "timestamps": [0]},
        {"keys": ["a"], "key_index": [1], "values": [1.0], "steps": [0], "timestamps": [0]},
        {"keys": ["a"], "key_index": [], "values": [], "steps": [], "timestamps": []},
        {"keys": [], "key_index": [0], "values": [1.0], "steps": [0], "timestamps": [0]},
    ],
)
def test_inconsistent_metric_columns_are_refused(body: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        MetricsLoggedBody.model_validate(body)


def test_metric_batch_points_round_trip() -> None:
    pts = [("a", 1.0, 0, 10), ("b", 2.0, 0, 10), ("a", 3.0, 1, 11)]
    body = MetricsLoggedBody.from_points(pts)
    assert body.keys == ["a", "b"] and body.key_index == [0, 1, 0]
    assert body.points() == pts


def test_json_schema_files_are_up_to_date() -> None:
    expected = rendered_schemas()
    on_disk = {p.name: p.read_text() for p in JSON_DIR.glob("*.json")}
    assert set(on_disk) == set(expected), (
        "schemas/json is stale: run python -m runstream.schemas.json_schema_export"
    )
    for name, text in expected.items():
        assert on_disk[name] == text, f"{name} is stale: run python -m runstream.schemas.json_schema_export"


def test_an_experiment_tag_value_of_minor_1_decodes_and_minor_2_allows_20000() -> None:
    """Minor 2 relaxed the bound from 5,000 to MLflow's 20,000: every event of minor 1 still
    decodes, 20,000 characters decode, one more is an invalid event."""
    from runstream.schemas import ExperimentTagSet, ExperimentTagSetBody, new_event

    def tag_event(value: str, minor: int) -> bytes:
        raw = json.loads(encode_event(new_event(
            ExperimentTagSet, ExperimentTagSetBody(key="k", value="v"), experiment_id="e1")))
        raw["schema_minor"], raw["body"]["value"] = minor, value
        return json.dumps(raw).encode()

    assert decode_event(tag_event("x" * 5000, 1)).body.value == "x" * 5000
    assert decode_event(tag_event("x" * 20_000, 2)).body.value == "x" * 20_000
    with pytest.raises(EventDecodeError) as info:
        decode_event(tag_event("x" * 20_001, 2))
    assert info.value.reason == "invalid_event"


def _with(event: object, path: tuple[str, ...], value: int) -> bytes:
    raw = json.loads(encode_event(event))  # type: ignore[arg-type]
    node = raw
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return json.dumps(raw).encode()


@pytest.mark.parametrize(
    ("event_type", "path"),
    [
        ("artifact.logged", ("body", "size")),
        ("run.created", ("body", "start_time_ms")),
        ("run.ended", ("body", "end_time_ms")),
        ("experiment.created", ("body", "creation_time_ms")),
    ],
)
def test_an_integer_the_read_model_cannot_store_is_refused_when_decoded(
    event_type: str, path: tuple[str, ...]
) -> None:
    """Every stored number is a 64-bit column: 2**63 used to decode and then stop the
    projector when applied (a batch of one failing is retried forever)."""
    event = next(e for e in one_of_each() if e.type == event_type)  # type: ignore[attr-defined]
    decode_event(_with(event, path, 2**63 - 1))
    with pytest.raises(EventDecodeError) as info:
        decode_event(_with(event, path, 2**63))
    assert info.value.reason == "invalid_event"
    assert "less than or equal to 9223372036854775807" in info.value.detail


def test_an_event_time_beyond_64_bits_still_decodes_as_before() -> None:
    """Most types never store event_time_ms: a log they were applied from replays the same."""
    event = next(e for e in one_of_each() if e.type == "tag.set")  # type: ignore[attr-defined]
    assert decode_event(_with(event, ("event_time_ms",), 2**64)).event_time_ms == 2**64
