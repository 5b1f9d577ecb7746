"""A message nested deeper than the JSON parsers go is a dead letter, not a crash: before,
the RecursionError of the second parse left decode_event and stopped the projector."""

from __future__ import annotations

import pytest
from runstream.schemas import EventDecodeError, decode_event, encode_event

from tests.event_factory import one_of_each


@pytest.mark.parametrize(
    "payload",
    [
        b"[" * 100_000,
        b'{"a":' * 5_000 + b"1" + b"}" * 5_000,
        # A valid event whose ignored extra field is nested too deeply.
        encode_event(one_of_each()[0])[:-1] + b',"x":' + b"[" * 3_000 + b"]" * 3_000 + b"}",
    ],
    ids=["open-arrays", "nested-objects", "deep-extra-field"],
)
def test_deeply_nested_messages_are_rejected_with_a_reason(payload: bytes) -> None:
    with pytest.raises(EventDecodeError) as info:
        decode_event(payload)
    assert info.value.reason == "invalid_json"
    assert info.value.detail == "nested too deeply"
