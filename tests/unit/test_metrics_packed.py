"""metrics.packed: the client's encoder, the wire form, and what a consumer refuses."""

from __future__ import annotations

import base64
import json
import math
import struct
from array import array

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from runstream.client.encode import encode_metric_series, encode_metrics
from runstream.schemas import (
    EventDecodeError,
    MetricsPacked,
    MetricsPackedBody,
    decode_event,
    encode_event,
    new_event,
)


def _b64(fmt: str, values: list) -> str:
    return base64.b64encode(struct.pack(f"<{len(values)}{fmt}", *values)).decode()


def _wire(**body: object) -> bytes:
    good = {
        "keys": ["loss"],
        "key_index": _b64("i", [0, 0]),
        "values": _b64("d", [1.0, 2.0]),
        "steps": _b64("q", [0, 1]),
        "timestamps": _b64("q", [10, 11]),
    }
    good.update(body)
    return json.dumps({
        "schema_version": 1, "schema_minor": 3, "event_id": "e1", "event_time_ms": 1,
        "run_id": "r1", "type": "metrics.packed", "body": good,
    }).encode()


def test_the_wire_form_is_little_endian_base64_any_language_can_write() -> None:
    event = decode_event(_wire())
    assert isinstance(event, MetricsPacked)
    assert event.body.points() == [("loss", 1.0, 0, 10), ("loss", 2.0, 1, 11)]
    assert len(event.body) == 2
    # And it writes back the same columns.
    assert json.loads(encode_event(event))["body"]["values"] == _b64("d", [1.0, 2.0])


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ({"values": "not base64!"}, "not valid base64"),
        ({"values": "AAAA"}, "multiple of 8"),  # 3 bytes
        ({"values": ""}, "multiple of 8"),  # no points
        ({"steps": _b64("q", [0])}, "differ in length"),
        ({"timestamps": _b64("i", [10, 11])}, "differ in length"),  # int32, not int64
        ({"key_index": _b64("i", [0, 1])}, "out of range for 1 keys"),
        ({"key_index": _b64("i", [0, -1])}, "out of range for 1 keys"),
        ({"key_index": _b64("i", [0, 256]), "keys": ["a"] * 2}, "out of range for 2 keys"),
        ({"key_index": _b64("i", [299, 300]), "keys": [f"k{i}" for i in range(300)]},
         "out of range for 300 keys"),
        ({"keys": []}, "at least 1 item"),
        ({"keys": [""]}, "at least 1 character"),
        ({"values": [1.0, 2.0]}, "base64 string"),
    ],
)
def test_a_malformed_packed_batch_is_refused_with_the_reason(body: dict, why: str) -> None:
    with pytest.raises(EventDecodeError) as info:
        decode_event(_wire(**body))
    assert info.value.reason == "invalid_event"
    assert why in info.value.detail


def test_more_than_256_keys_take_the_general_range_check() -> None:
    keys = [f"k{i}" for i in range(300)]
    event = decode_event(_wire(keys=keys, key_index=_b64("i", [299, 0])))
    assert [p[0] for p in event.body.points()] == ["k299", "k0"]


finite = st.floats(allow_nan=False, allow_infinity=True)
points = st.lists(
    st.tuples(st.sampled_from(["loss", "acc", "lr"]), finite | st.just(math.nan),
              st.integers(-(2**63), 2**63 - 1), st.integers(0, 2**63 - 1)),
    min_size=1, max_size=50,
)


@settings(max_examples=60, deadline=None)
@given(pts=points)
def test_the_clients_encoder_writes_what_the_model_writes(pts: list) -> None:
    wire = encode_metrics("run-1", [p[0] for p in pts], [p[1] for p in pts],
                          [p[2] for p in pts], [p[3] for p in pts],
                          producer="host/1", event_time_ms=5, event_id="e" * 32)
    decoded = decode_event(wire)
    assert isinstance(decoded, MetricsPacked)
    expected = new_event(MetricsPacked, MetricsPackedBody.from_points(pts), run_id="run-1")
    assert repr(decoded.body.points()) == repr(pts)
    assert decoded.body == expected.body  # the same bytes: NaN compares as its bits here


@settings(max_examples=40, deadline=None)
@given(pts=st.lists(st.tuples(st.just("loss"), finite | st.just(math.nan),
                              st.integers(-(2**63), 2**63 - 1), st.integers(-(2**63), 2**63 - 1)),
                    min_size=1, max_size=50))
def test_a_metric_series_encodes_as_its_points_would(pts: list) -> None:
    columns = [array(code, [p[i] for p in pts]) for i, code in ((1, "d"), (2, "q"), (3, "q"))]
    wire = encode_metric_series("run-1", "loss", *columns, producer="host/1", event_time_ms=5,
                                event_id="e" * 32)
    assert wire == encode_metrics("run-1", [p[0] for p in pts], *([p[i] for p in pts]
                                                                   for i in (1, 2, 3)),
                                  producer="host/1", event_time_ms=5, event_id="e" * 32)


@pytest.mark.parametrize(("step", "timestamp"), [(2**63, 10), (-(2**63) - 1, 10), (0, 2**63)])
def test_a_step_or_time_beyond_64_bits_goes_as_json_and_is_refused_with_the_reason(
    step: int, timestamp: int
) -> None:
    wire = encode_metrics("run-1", ["loss"], [1.0], [step], [timestamp], producer="p",
                          event_time_ms=5)
    assert json.loads(wire)["type"] == "metrics.logged"
    with pytest.raises(EventDecodeError) as info:
        decode_event(wire)
    assert info.value.reason == "invalid_event"
    assert "less than or equal to 9223372036854775807" in info.value.detail or (
        "greater than or equal to -9223372036854775808" in info.value.detail
    )


def test_the_64_bit_bounds_themselves_pack_and_decode() -> None:
    lo, hi = -(2**63), 2**63 - 1
    wire = encode_metrics("run-1", ["loss", "loss"], [1.0, 2.0], [lo, hi], [0, hi],
                          producer="p", event_time_ms=5)
    assert decode_event(wire).body.points() == [("loss", 1.0, lo, 0), ("loss", 2.0, hi, hi)]
