"""The JSON every endpoint answers with (runstream.api.responses)."""

from __future__ import annotations

import json
import math

from runstream.api.responses import JSONResponse, json_bytes


def test_json_is_compact_utf8_and_reads_back_the_same() -> None:
    payload = {"runs": [{"name": "élan ✓", "value": 0.1, "small": 1e-7, "big": 10**20,
                         "flag": True, "none": None, "keys": [1, 2.5, "x"]}]}
    body = json_bytes(payload)
    assert "élan ✓".encode() in body  # UTF-8, not \\u escapes
    assert b" " not in body.replace("élan ✓".encode(), b"")  # no padding
    assert json.loads(body) == payload


def test_non_finite_floats_become_proto_json_strings() -> None:
    body = json_bytes({"v": [math.nan, math.inf, -math.inf, 1.5]})
    assert json.loads(body) == {"v": ["NaN", "Infinity", "-Infinity", 1.5]}


def test_the_response_carries_the_same_bytes() -> None:
    response = JSONResponse({"a": [1, "b"]}, status_code=201)
    assert response.body == b'{"a":[1,"b"]}'
    assert response.status_code == 201
    assert response.headers["content-type"] == "application/json"
