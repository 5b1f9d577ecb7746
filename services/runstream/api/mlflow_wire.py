"""MLflow's wire format, shared by the MLflow routers: request fields, entities, errors.

Requests: a POST carries a JSON object (``Content-Type: application/json``), a GET its
fields as query parameters (repeated keys for lists). :class:`Message` reads fields by their
proto names (``run_id``; the lowerCamelCase spelling ``runId`` is accepted too, never both),
with proto-JSON types: strings are strings, int64 a number or a string of digits, doubles a
number or "NaN"/"Infinity"/"-Infinity", enums a name or a number. Anything else is a 400
INVALID_PARAMETER_VALUE naming the field, never a 500 and never a silent default.

Responses: proto-JSON as MLflow writes it: snake_case names, int64 as numbers, non-finite
doubles as "NaN"/"Infinity"/"-Infinity", unset or empty fields left out (an empty list is
``{}``), errors as ``{"error_code", "message"}`` with MLflow's HTTP status for the code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import posixpath
import re
from collections.abc import Iterable, Mapping
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from runstream.api.errors import status_and_code
from runstream.api.responses import json_bytes
from runstream.errors import InvalidFilter, InvalidInput, RunstreamError
from runstream.queries import ExperimentRecord, RunRecord

log = logging.getLogger("runstream.api.mlflow")

# ---------------------------------------------------------------------------------- errors

# MLflow's mapping from error_code to HTTP status (mlflow/exceptions.py); others give 500.
_STATUS_BY_CODE: dict[str, int] = {
    "INVALID_PARAMETER_VALUE": 400, "BAD_REQUEST": 400, "RESOURCE_ALREADY_EXISTS": 400,
    "INVALID_STATE": 400,  # MLflow answers 500 (which its client retries); a state is not transient
    "CUSTOMER_UNAUTHORIZED": 401, "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403,
    "RESOURCE_DOES_NOT_EXIST": 404, "ENDPOINT_NOT_FOUND": 404, "NOT_FOUND": 404,
    "RESOURCE_CONFLICT": 409, "ALREADY_EXISTS": 409, "ABORTED": 409,
    "REQUEST_LIMIT_EXCEEDED": 429, "RESOURCE_EXHAUSTED": 429,
    "INTERNAL_ERROR": 500, "DATA_LOSS": 500, "NOT_IMPLEMENTED": 501,
    "TEMPORARILY_UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504,
}


class MlflowError(RunstreamError):
    """An error with an explicit MLflow error code (the status follows from the code)."""

    def __init__(self, error_code: str, message: str, http_status: int | None = None) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.http_status = http_status or _STATUS_BY_CODE.get(error_code, 500)


def error_body(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """The HTTP status and MLflow error body for an exception raised while serving a call.

    runstream's exceptions go through the project's one table (``runstream.api.errors``);
    :class:`MlflowError` carries its own MLflow code."""
    if isinstance(exc, MlflowError):
        return exc.http_status, {"error_code": exc.error_code, "message": str(exc)}
    if isinstance(exc, RunstreamError):
        status, code = status_and_code(exc)
        body: dict[str, Any] = {"error_code": code, "message": str(exc)}
        if isinstance(exc, InvalidFilter):
            body["details"] = {"position": exc.position, "expected": exc.expected,
                               "clause_index": exc.clause_index}
        if status >= 500:
            log.error("%s: %s", type(exc).__name__, exc)
        return status, body
    log.exception("MLflow API call failed", exc_info=exc)
    return 500, {"error_code": "INTERNAL_ERROR", "message": f"internal error: {type(exc).__name__}"}


def error_response(exc: BaseException) -> Response:
    status, body = error_body(exc)
    return json_response(body, status)


# -------------------------------------------------------------------------------- responses


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(json_bytes(payload), status_code=status, media_type="application/json")


def double(value: float) -> float | str:
    """A double as proto-JSON writes it: non-finite values as strings."""
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def _key_values(items: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"key": k, "value": v} for k, v in items.items()]


# Dataset inputs (runs/log-inputs) are kept as run tags under this prefix, one per input; they
# come back as ``inputs.dataset_inputs`` and are left out of ``data.tags``.
DATASET_TAG_PREFIX = "mlflow.runstream.datasetInput."


def dataset_tag_key(name: str, digest: str, context: str | None) -> str:
    blob = json.dumps([name, digest, context], separators=(",", ":"))
    return DATASET_TAG_PREFIX + hashlib.sha256(blob.encode()).hexdigest()[:20]


def run_info(record: RunRecord) -> dict[str, Any]:
    info: dict[str, Any] = {
        "run_uuid": record.run_id,
        "experiment_id": record.experiment_id,
        "run_name": record.name or "",
        "user_id": record.user_id or "",
        "status": record.status,
    }
    if record.start_time is not None:
        info["start_time"] = record.start_time
    if record.end_time is not None:
        info["end_time"] = record.end_time
    info["artifact_uri"] = record.artifact_uri or (
        f"mlflow-artifacts:/{record.experiment_id}/{record.run_id}/artifacts"
    )
    info["lifecycle_stage"] = record.lifecycle_stage
    info["run_id"] = record.run_id
    return info


def run_json(record: RunRecord) -> dict[str, Any]:
    """A Run message: info, data (latest metric values only), inputs, outputs. Made once per
    record (``RunRecord.derive``): callers must not change it."""
    return record.derive("mlflow", _run_json)


def _run_json(record: RunRecord) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if record.metrics:
        data["metrics"] = [
            {"key": m.key, "value": double(m.latest_value), "timestamp": m.latest_timestamp,
             "step": m.latest_step}
            for m in record.metrics.values()
        ]
    if record.params:
        data["params"] = _key_values(record.params)
    tags: dict[str, str] = {}
    datasets: list[dict[str, Any]] = []
    for key, value in record.tags.items():
        if key.startswith(DATASET_TAG_PREFIX):
            try:
                datasets.append(json.loads(value))
                continue
            except ValueError:
                pass
        tags[key] = value
    if tags:
        data["tags"] = _key_values(tags)
    inputs: dict[str, Any] = {"dataset_inputs": datasets} if datasets else {}
    return {"info": run_info(record), "data": data, "inputs": inputs, "outputs": {}}


def experiment_json(record: ExperimentRecord) -> dict[str, Any]:
    exp: dict[str, Any] = {
        "experiment_id": record.experiment_id,
        "name": record.name,
        "artifact_location": record.artifact_location or f"mlflow-artifacts:/{record.experiment_id}",
        "lifecycle_stage": record.lifecycle_stage,
    }
    if record.last_update_time is not None:
        exp["last_update_time"] = record.last_update_time
    if record.creation_time is not None:
        exp["creation_time"] = record.creation_time
    if record.tags:
        exp["tags"] = _key_values(record.tags)
    return exp


# --------------------------------------------------------------------------------- requests

_JSON_TYPES = {str: "str", int: "int", float: "float", bool: "bool", list: "list", dict: "dict",
               type(None): "NoneType"}


def _hint(value: Any, name: str, expected: str) -> InvalidInput:
    shown = json.dumps(value, separators=(",", ":"), allow_nan=True, default=str)
    if len(shown) > 200:
        shown = shown[:200] + "..."
    return InvalidInput(
        f"Invalid value {shown} for parameter '{name}' supplied: Hint: Value was of type "
        f"'{_JSON_TYPES.get(type(value), type(value).__name__)}', expected {expected}. "
        "See the API docs for more information about request parameters."
    )


def missing(name: str) -> InvalidInput:
    return InvalidInput(
        f"Missing value for required parameter '{name}'. See the API docs for more "
        "information about request parameters."
    )


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


_INT_RE = re.compile(r"^-?[0-9]+$")
_INT64 = (-(2**63), 2**63 - 1)
_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def as_int(value: Any, name: str, *, lo: int = _INT64[0], hi: int = _INT64[1]) -> int:
    """An int64 as proto-JSON allows it: a JSON integer, an integral float, or a digit string."""
    if isinstance(value, bool):
        raise _hint(value, name, "an integer")
    if isinstance(value, int):
        out = value
    elif isinstance(value, float) and value.is_integer():
        out = int(value)
    elif isinstance(value, str) and _INT_RE.match(value.strip()):
        out = int(value.strip())
    else:
        raise _hint(value, name, "an integer")
    if not lo <= out <= hi:
        raise InvalidInput(
            f"Invalid value {out} for parameter '{name}' supplied: it must be between {lo} and {hi}"
        )
    return out


def as_double(value: Any, name: str) -> float:
    """A double as proto-JSON allows it: a number, a numeric string, "NaN" or "±Infinity"."""
    if isinstance(value, bool):
        raise _hint(value, name, "a number")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        if value in _NON_FINITE:
            return _NON_FINITE[value]
        try:
            out = float(value)
        except ValueError:
            raise _hint(value, name, "a number") from None
        if not math.isfinite(out):  # "nan", "inf" spelled otherwise: not proto-JSON
            raise _hint(value, name, 'a number, "NaN", "Infinity" or "-Infinity"')
        return out
    raise _hint(value, name, "a number")


class Message:
    """The fields of one request, read by proto name with proto-JSON types."""

    def __init__(self, fields: Mapping[str, Any], *, from_query: bool) -> None:
        self.fields = fields
        self.from_query = from_query  # values are strings, lists are repeated keys

    def raw(self, name: str) -> Any:
        """The value given for ``name`` (or its camelCase spelling), or None."""
        camel = _camel(name)
        if camel != name and camel in self.fields:
            if name in self.fields:
                raise InvalidInput(
                    f"Parameter '{name}' is given twice, as '{name}' and as '{camel}'; give one"
                )
            value = self.fields[camel]
        else:
            value = self.fields.get(name)
        if self.from_query and isinstance(value, list):
            return value[-1] if value else None
        return value

    def has(self, name: str) -> bool:
        return self.raw(name) is not None

    def text(self, name: str, *, required: bool = False, default: str | None = None) -> str | None:
        value = self.raw(name)
        if value is None or (required and value == ""):
            if required:
                raise missing(name)
            return default
        if not isinstance(value, str):
            raise _hint(value, name, "a string")
        return value

    def required_text(self, name: str) -> str:
        value = self.text(name, required=True)
        assert value is not None
        return value

    def run_id(self) -> str:
        """``run_id``, falling back to the deprecated ``run_uuid`` (the client sends both)."""
        run_id = self.text("run_id")
        if not run_id:
            run_id = self.text("run_uuid")
        if not run_id:
            raise missing("run_id")
        return run_id

    def integer(self, name: str, *, required: bool = False, default: int | None = None,
            lo: int = _INT64[0], hi: int = _INT64[1]) -> int | None:
        value = self.raw(name)
        if value is None or value == "":
            if required:
                raise missing(name)
            return default
        return as_int(value, name, lo=lo, hi=hi)

    def flag(self, name: str, *, default: bool | None = None) -> bool | None:
        value = self.raw(name)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise _hint(value, name, "true or false")

    def enum(self, name: str, names: Mapping[str, int], *, default: str | None = None) -> str | None:
        """An enum by name or number; an unknown one is refused (MLflow ignores it silently)."""
        value = self.raw(name)
        if value is None or value == "":
            return default
        by_number = {v: k for k, v in names.items()}
        if isinstance(value, str) and value in names:
            return value
        if isinstance(value, int | str) and not isinstance(value, bool):
            try:
                number = int(value)
            except ValueError:
                number = None
            if number is not None and number in by_number:
                return by_number[number]
        raise InvalidInput(
            f"Invalid value {json.dumps(value)} for parameter '{name}' supplied: expected one of "
            f"{', '.join(names)} (or their numbers {', '.join(str(n) for n in names.values())})"
        )

    def array(self, name: str) -> list[Any]:
        if self.from_query:
            value = self.fields.get(name)
            if value is None:
                value = self.fields.get(_camel(name))
            return list(value or [])
        value = self.raw(name)
        if value is None:
            return []
        if not isinstance(value, list):
            raise _hint(value, name, "a list")
        return value

    def strings(self, name: str) -> list[str]:
        items = self.array(name)
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise _hint(item, f"{name}[{i}]", "a string")
        return items

    def objects(self, name: str) -> list[Mapping[str, Any]]:
        items = self.array(name)
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise _hint(item, f"{name}[{i}]", "an object")
        return items


def query_message(request: Request) -> Message:
    fields: dict[str, list[str]] = {}
    for key, value in request.query_params.multi_items():
        fields.setdefault(key, []).append(value)
    return Message(fields, from_query=True)


def body_message(raw: bytes, content_type: str | None) -> Message:
    """The JSON object of a POST body; 400 for any other body (never a 500)."""
    if not raw.strip():
        return Message({}, from_query=False)
    media = (content_type or "").split(";")[0].strip().lower()
    if media != "application/json":
        raise MlflowError(
            "INVALID_PARAMETER_VALUE",
            "Bad Request. Content-Type must be one of ['application/json'].",
        )
    try:
        data = json.loads(raw)
        if isinstance(data, str):  # double-encoded by old clients
            data = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise MlflowError("INVALID_PARAMETER_VALUE", f"Malformed JSON request body: {exc}") from None
    if not isinstance(data, dict):
        raise MlflowError(
            "INVALID_PARAMETER_VALUE",
            f"The request body must be a JSON object, not {_JSON_TYPES.get(type(data), 'a value')}",
        )
    return Message(data, from_query=False)


# ------------------------------------------------------------------------------ validation

MAX_KEY_LENGTH = 250
_NAME_RE = re.compile(r"^[/\w.\- :]*$")
_GOOD_NAMES: set[str] = set()


def check_name(name: str, field: str) -> str:
    """MLflow's rule for metric, param and tag keys: characters, length, no path tricks."""
    if name in _GOOD_NAMES:
        return name
    if not name:
        raise missing(field)
    if len(name) > MAX_KEY_LENGTH:
        raise InvalidInput(f"'{field}' exceeds the maximum length of {MAX_KEY_LENGTH} characters")
    if not _NAME_RE.match(name):
        raise InvalidInput(
            f"Invalid value {json.dumps(name)} for parameter '{field}' supplied: Names may only "
            "contain alphanumerics, underscores (_), dashes (-), periods (.), spaces ( ), "
            "colon(:) and slashes (/)."
        )
    norm = posixpath.normpath(name)
    if norm != name or norm == "." or norm.startswith("..") or norm.startswith("/"):
        raise InvalidInput(
            f"Invalid value {json.dumps(name)} for parameter '{field}' supplied: Names may be "
            "treated as files in certain cases, and must not resolve to other names when treated "
            f"as such. This name would resolve to {norm!r}"
        )
    if len(_GOOD_NAMES) > 100_000:
        _GOOD_NAMES.clear()
    _GOOD_NAMES.add(name)
    return name


def key_value_pairs(items: Iterable[Mapping[str, Any]], field: str) -> list[tuple[str, str]]:
    """``[{key, value}]`` as pairs; the key is required and checked, a missing value is ""."""
    out: list[tuple[str, str]] = []
    for i, item in enumerate(items):
        key = item.get("key")
        if key is None or key == "":
            raise missing(f"{field}[{i}].key")
        if not isinstance(key, str):
            raise _hint(key, f"{field}[{i}].key", "a string")
        check_name(key, f"{field}[{i}].key")
        value = item.get("value")
        if value is None:
            value = ""
        elif not isinstance(value, str):
            raise _hint(value, f"{field}[{i}].value", "a string")
        out.append((key, value))
    return out
