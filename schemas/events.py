"""Event models: one pydantic model per event type, each an envelope around a typed body.

Wire format (UTF-8 JSON, one event per Kafka message)::

    {"type": "run.created", "schema_version": 1, "schema_minor": 0,
     "event_id": "…", "event_time_ms": 1732800000000, "producer": "host/pid",
     "experiment_id": "…", "run_id": "…", "body": {…}}

Version rules are in ``VERSIONING.md`` beside this file. In short: ``schema_version`` is
the major version and a consumer dead-letters a major it does not know; changes within a
major are additive (a new optional field or a new event type) and bump ``schema_minor``;
unknown fields are ignored; a published version is never edited.
"""

from __future__ import annotations

import binascii
import functools
import json
import sys
import time
import uuid
from array import array
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Final, Literal, Union

import pybase64
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

CURRENT_SCHEMA_VERSION: Final = 1
# Minor 1: experiment.tag_deleted. Minor 2: experiment tag values up to 20,000 characters.
# Minor 3: metrics.packed (metric columns as base64 of little-endian arrays).
CURRENT_SCHEMA_MINOR: Final = 3

# The body numbers the read model always stores are 64-bit integer columns: a larger one
# is refused when the event is decoded, with the reason, not when the projector stores it.
_INT64_MAX: Final = 2**63 - 1
_Int64 = Annotated[int, Field(ge=-(2**63), le=_INT64_MAX)]

# Envelope ids and keys are bounded so a single malformed producer cannot blow up a row.
_ID = Annotated[str, Field(min_length=1, max_length=256)]


class _Body(BaseModel):
    # Unknown fields are ignored: a newer producer (same major) may add optional fields.
    # NaN and ±inf travel as the strings "NaN", "Infinity", "-Infinity": plain JSON has no
    # literal for them, and every JSON library in every language can read a string.
    # defer_build: a model's validator is built when first used, not at import. A training
    # script's client uses a few event types; building all of them cost every rank process
    # a tenth of a second at start.
    model_config = ConfigDict(
        extra="ignore", frozen=True, ser_json_inf_nan="strings", defer_build=True
    )


class _Envelope(BaseModel):
    model_config = ConfigDict(
        extra="ignore", frozen=True, ser_json_inf_nan="strings", defer_build=True
    )

    schema_version: Literal[1] = CURRENT_SCHEMA_VERSION
    schema_minor: int = CURRENT_SCHEMA_MINOR
    event_id: _ID
    # Not bounded like the body's numbers: most event types never store it, and a log that
    # applied before must replay the same (one that stores it and cannot is dead-lettered
    # by the projector as apply_error).
    event_time_ms: int = Field(ge=0)
    producer: str = ""
    experiment_id: str | None = None
    run_id: str | None = None

    @property
    def key(self) -> str:
        """The Kafka message key: the run id, or the experiment id for experiment events."""
        return self.run_id or self.experiment_id or self.event_id


# ---------------------------------------------------------------- experiments


class ExperimentCreatedBody(_Body):
    name: str = Field(min_length=1, max_length=500)
    artifact_location: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    creation_time_ms: _Int64 | None = None


class ExperimentCreated(_Envelope):
    type: Literal["experiment.created"] = "experiment.created"
    experiment_id: _ID
    body: ExperimentCreatedBody


class ExperimentRenamedBody(_Body):
    name: str = Field(min_length=1, max_length=500)


class ExperimentRenamed(_Envelope):
    type: Literal["experiment.renamed"] = "experiment.renamed"
    experiment_id: _ID
    body: ExperimentRenamedBody


class _EmptyBody(_Body):
    pass


class ExperimentDeleted(_Envelope):
    type: Literal["experiment.deleted"] = "experiment.deleted"
    experiment_id: _ID
    body: _EmptyBody = Field(default_factory=_EmptyBody)


class ExperimentRestored(_Envelope):
    type: Literal["experiment.restored"] = "experiment.restored"
    experiment_id: _ID
    body: _EmptyBody = Field(default_factory=_EmptyBody)


# MLflow's bound for an experiment tag value (its UI keeps notes and descriptions there).
MAX_EXPERIMENT_TAG_VALUE_LENGTH: Final = 20_000


class ExperimentTagSetBody(_Body):
    key: str = Field(min_length=1, max_length=250)
    # 5000 up to minor 1: every value valid then is valid now. A consumer of minor 1
    # dead-letters a longer one (invalid_event) instead of dropping it.
    value: str = Field(max_length=MAX_EXPERIMENT_TAG_VALUE_LENGTH)


class ExperimentTagSet(_Envelope):
    type: Literal["experiment.tag_set"] = "experiment.tag_set"
    experiment_id: _ID
    body: ExperimentTagSetBody


class ExperimentTagDeletedBody(_Body):
    key: str = Field(min_length=1, max_length=250)


class ExperimentTagDeleted(_Envelope):
    """Since minor 1."""

    type: Literal["experiment.tag_deleted"] = "experiment.tag_deleted"
    experiment_id: _ID
    body: ExperimentTagDeletedBody


# ------------------------------------------------------------------------ runs

RunStatus = Literal["RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"]
SourceType = Literal["NOTEBOOK", "JOB", "PROJECT", "LOCAL", "UNKNOWN"]


class RunCreatedBody(_Body):
    name: str = Field(default="", max_length=250)
    user: str = ""
    source_name: str = ""
    source_type: SourceType = "UNKNOWN"
    entry_point: str | None = None
    git_commit: str | None = None
    git_dirty: bool | None = None
    git_remote: str | None = None
    start_time_ms: int = Field(ge=0, le=_INT64_MAX)
    parent_run_id: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    # What "reproduce" needs, captured by the client at start.
    python_version: str | None = None
    packages: list[str] = Field(default_factory=list)
    command_line: list[str] = Field(default_factory=list)
    host: str | None = None
    artifact_uri: str | None = None
    # The experiment's name when the client chose it by name: lets the read model
    # create the experiment even if this event is applied before experiment.created.
    experiment_name: str | None = None


class RunCreated(_Envelope):
    type: Literal["run.created"] = "run.created"
    experiment_id: _ID
    run_id: _ID
    body: RunCreatedBody


class RunRenamedBody(_Body):
    name: str = Field(max_length=250)


class RunRenamed(_Envelope):
    type: Literal["run.renamed"] = "run.renamed"
    run_id: _ID
    body: RunRenamedBody


class RunEndedBody(_Body):
    status: RunStatus
    end_time_ms: int | None = Field(default=None, ge=0, le=_INT64_MAX)


class RunEnded(_Envelope):
    """The run's status changed; with a terminal status and an end time, the run ended."""

    type: Literal["run.ended"] = "run.ended"
    run_id: _ID
    body: RunEndedBody


class ParamKV(_Body):
    key: str = Field(min_length=1, max_length=250)
    value: str = Field(max_length=6000)


class ParamsLoggedBody(_Body):
    params: list[ParamKV] = Field(min_length=1)


class ParamsLogged(_Envelope):
    type: Literal["params.logged"] = "params.logged"
    run_id: _ID
    body: ParamsLoggedBody


class MetricsLoggedBody(_Body):
    """A batch of metric points, column by column.

    Columns, not a list of point objects: a batch of thousands of points is then five
    JSON arrays, which encode and decode in one pass each, and the projector hands
    them to DuckDB as columns without touching points one by one. ``keys`` holds each
    distinct metric name once; ``key_index[i]`` says which name point ``i`` belongs to.
    """

    keys: list[Annotated[str, Field(min_length=1, max_length=250)]] = Field(min_length=1)
    key_index: list[int]
    values: list[float]
    # 64-bit in the read model, as in MLflow's.
    steps: list[_Int64]
    timestamps: list[_Int64]

    @model_validator(mode="after")
    def _columns_agree(self) -> MetricsLoggedBody:
        n = len(self.values)
        if n == 0:
            raise ValueError("a metrics batch needs at least one point")
        if not (len(self.key_index) == len(self.steps) == len(self.timestamps) == n):
            raise ValueError(
                "metrics columns differ in length: "
                f"key_index={len(self.key_index)} values={n} steps={len(self.steps)} "
                f"timestamps={len(self.timestamps)}"
            )
        nkeys = len(self.keys)
        if min(self.key_index) < 0 or max(self.key_index) >= nkeys:
            raise ValueError(f"key_index out of range for {nkeys} keys")
        return self

    @classmethod
    def from_points(cls, points: list[tuple[str, float, int, int]]) -> MetricsLoggedBody:
        """Build a batch from ``(key, value, step, timestamp_ms)`` tuples."""
        index: dict[str, int] = {}
        key_index = [index.setdefault(k, len(index)) for k, _, _, _ in points]
        return cls(
            keys=list(index),
            key_index=key_index,
            values=[float(p[1]) for p in points],
            steps=[p[2] for p in points],
            timestamps=[p[3] for p in points],
        )

    def points(self) -> list[tuple[str, float, int, int]]:
        """The batch as ``(key, value, step, timestamp_ms)`` tuples, in order."""
        keys = self.keys
        return [
            (keys[i], v, s, t)
            for i, v, s, t in zip(
                self.key_index, self.values, self.steps, self.timestamps, strict=True
            )
        ]


class MetricsLogged(_Envelope):
    type: Literal["metrics.logged"] = "metrics.logged"
    run_id: _ID
    body: MetricsLoggedBody


def _from_base64(value: Any) -> bytes:
    if isinstance(value, bytes):  # built in Python: the raw column already
        return value
    if not isinstance(value, str):
        raise ValueError("a packed column is a base64 string")
    try:
        return pybase64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"a packed column is not valid base64: {exc}") from None


def _to_base64(value: bytes) -> str:
    return pybase64.b64encode(value).decode("ascii")


# A column of MetricsPackedBody: raw little-endian bytes in Python, base64 on the wire.
_Packed = Annotated[
    bytes,
    PlainValidator(_from_base64),
    PlainSerializer(_to_base64, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "contentEncoding": "base64"}),
]


# The byte width of each column's items, and their array typecodes (native order).
_PACKED_COLUMNS: Final = (("key_index", "i", 4), ("values", "d", 8), ("steps", "q", 8),
                          ("timestamps", "q", 8))
_LITTLE_ENDIAN: Final = sys.byteorder == "little"
_BYTES: Final = bytes(range(256))


def pack_column(typecode: str, data: Sequence[float] | Sequence[int]) -> bytes:
    """A column's wire bytes in a packed body: little-endian items of ``array`` typecode
    ``i``, ``q`` or ``d``. OverflowError when an integer does not fit."""
    column = array(typecode, data)
    if not _LITTLE_ENDIAN:
        column.byteswap()
    return column.tobytes()


def _unpack_column(typecode: str, raw: bytes) -> array[Any]:
    """The items of a packed column, in this machine's byte order."""
    column = array(typecode)
    column.frombytes(raw)
    if not _LITTLE_ENDIAN:
        column.byteswap()
    return column


def _key_index_in_range(raw: bytes, nkeys: int) -> bool:
    """Whether every little-endian int32 of ``raw`` is in [0, nkeys). Up to 256 keys (the
    usual case) this looks at bytes: the three high ones of each index must be zero, and
    deleting the bytes below nkeys from the low ones must leave nothing. Both are C loops;
    min and max over the indices cost twenty times more."""
    if nkeys <= 256:
        high = raw[1::4] + raw[2::4] + raw[3::4]
        return high.count(0) == len(high) and not raw[0::4].translate(None, _BYTES[:nkeys])
    index = _unpack_column("i", raw)
    return bool(min(index) >= 0 and max(index) < nkeys)


class MetricsPackedBody(_Body):
    """The same batch as :class:`MetricsLoggedBody`, each column packed as the base64 of a
    little-endian array: ``key_index`` int32, ``values`` float64 (NaN and ±inf as IEEE 754),
    ``steps`` and ``timestamps`` int64.

    JSON numbers cost a consumer a Python object a point to parse and another to turn into
    a column; a packed column is one base64 decode away from the array DuckDB reads. The
    runstream client sends this form; ``metrics.logged`` stays for hand-written producers
    and the REST API.
    """

    keys: list[Annotated[str, Field(min_length=1, max_length=250)]] = Field(min_length=1)
    key_index: _Packed = Field(description="base64 of little-endian int32: each point's index into keys")
    values: _Packed = Field(description="base64 of little-endian float64: each point's value")
    steps: _Packed = Field(description="base64 of little-endian int64: each point's step")
    timestamps: _Packed = Field(
        description="base64 of little-endian int64: each point's time, ms since the epoch"
    )

    @model_validator(mode="after")
    def _columns_agree(self) -> MetricsPackedBody:
        n, rest = divmod(len(self.values), 8)
        if rest or n == 0:
            raise ValueError(f"values holds {len(self.values)} bytes: a positive multiple of 8")
        sizes = {name: len(getattr(self, name)) // width
                 for name, _, width in _PACKED_COLUMNS
                 if len(getattr(self, name)) % width == 0}
        if len(sizes) < len(_PACKED_COLUMNS) or len(set(sizes.values())) != 1:
            raise ValueError(
                "packed columns differ in length: "
                + " ".join(f"{name}={len(getattr(self, name))} bytes"
                           for name, _, _ in _PACKED_COLUMNS)
            )
        nkeys = len(self.keys)
        if not _key_index_in_range(self.key_index, nkeys):
            raise ValueError(f"key_index out of range for {nkeys} keys")
        return self

    def __len__(self) -> int:
        return len(self.values) // 8

    def column(self, name: str) -> array[Any]:
        """One column as an array in this machine's byte order."""
        typecode = next(code for n, code, _ in _PACKED_COLUMNS if n == name)
        return _unpack_column(typecode, getattr(self, name))

    def native(self, name: str) -> bytes:
        """One column's bytes in this machine's byte order (the wire bytes on little-endian)."""
        raw: bytes = getattr(self, name)
        return raw if _LITTLE_ENDIAN else self.column(name).tobytes()

    @classmethod
    def from_columns(
        cls,
        keys: Sequence[str],
        key_index: Sequence[int],
        values: Sequence[float],
        steps: Sequence[int],
        timestamps: Sequence[int],
    ) -> MetricsPackedBody:
        """Pack columns given as sequences (``keys`` holds each name once)."""
        columns = {
            name: pack_column(typecode, data)
            for (name, typecode, _), data in zip(
                _PACKED_COLUMNS, (key_index, values, steps, timestamps), strict=True
            )
        }
        return cls(keys=list(keys), **columns)

    @classmethod
    def from_points(cls, points: list[tuple[str, float, int, int]]) -> MetricsPackedBody:
        """Build a batch from ``(key, value, step, timestamp_ms)`` tuples."""
        index: dict[str, int] = {}
        key_index = [index.setdefault(k, len(index)) for k, _, _, _ in points]
        return cls.from_columns(list(index), key_index, [float(p[1]) for p in points],
                                [p[2] for p in points], [p[3] for p in points])

    def points(self) -> list[tuple[str, float, int, int]]:
        """The batch as ``(key, value, step, timestamp_ms)`` tuples, in order."""
        keys = self.keys
        return [
            (keys[i], v, s, t)
            for i, v, s, t in zip(self.column("key_index"), self.column("values"),
                                  self.column("steps"), self.column("timestamps"), strict=True)
        ]


class MetricsPacked(_Envelope):
    type: Literal["metrics.packed"] = "metrics.packed"
    run_id: _ID
    body: MetricsPackedBody


class TagSetBody(_Body):
    key: str = Field(min_length=1, max_length=250)
    value: str = Field(max_length=8000)


class TagSet(_Envelope):
    type: Literal["tag.set"] = "tag.set"
    run_id: _ID
    body: TagSetBody


class TagDeletedBody(_Body):
    key: str = Field(min_length=1, max_length=250)


class TagDeleted(_Envelope):
    type: Literal["tag.deleted"] = "tag.deleted"
    run_id: _ID
    body: TagDeletedBody


class RunDeletedBody(_Body):
    # A delete that reaches descendants is resolved to concrete runs when the command is
    # accepted and written as one event per run (replay must not re-evaluate a tree whose
    # shape depends on partition interleaving); ``requested_for`` names the run the user
    # asked to delete, for the audit trail.
    requested_for: str | None = None


class RunDeleted(_Envelope):
    type: Literal["run.deleted"] = "run.deleted"
    run_id: _ID
    body: RunDeletedBody = Field(default_factory=RunDeletedBody)


class RunRestored(_Envelope):
    type: Literal["run.restored"] = "run.restored"
    run_id: _ID
    body: RunDeletedBody = Field(default_factory=RunDeletedBody)


class RunPurged(_Envelope):
    type: Literal["run.purged"] = "run.purged"
    run_id: _ID
    body: _EmptyBody = Field(default_factory=_EmptyBody)


class ArtifactLoggedBody(_Body):
    path: str = Field(min_length=1, max_length=1000)
    size: int = Field(ge=0, le=_INT64_MAX)
    digest: str = Field(description="sha256 of the content, hex")
    # The client marks a model explicitly; a path ending in MLmodel marks one too.
    is_model: bool = False


class ArtifactLogged(_Envelope):
    type: Literal["artifact.logged"] = "artifact.logged"
    run_id: _ID
    body: ArtifactLoggedBody


AnyEvent = Annotated[
    Union[  # noqa: UP007 - a discriminated union reads better spelled out
        ExperimentCreated,
        ExperimentRenamed,
        ExperimentDeleted,
        ExperimentRestored,
        ExperimentTagSet,
        ExperimentTagDeleted,
        RunCreated,
        RunRenamed,
        RunEnded,
        ParamsLogged,
        MetricsLogged,
        MetricsPacked,
        TagSet,
        TagDeleted,
        RunDeleted,
        RunRestored,
        RunPurged,
        ArtifactLogged,
    ],
    Field(discriminator="type"),
]
Event = _Envelope

_EVENT_CLASSES: tuple[type[_Envelope], ...] = (
    ExperimentCreated,
    ExperimentRenamed,
    ExperimentDeleted,
    ExperimentRestored,
    ExperimentTagSet,
    ExperimentTagDeleted,
    RunCreated,
    RunRenamed,
    RunEnded,
    ParamsLogged,
    MetricsLogged,
    MetricsPacked,
    TagSet,
    TagDeleted,
    RunDeleted,
    RunRestored,
    RunPurged,
    ArtifactLogged,
)
EVENT_TYPES: dict[str, type[_Envelope]] = {
    cls.model_fields["type"].default: cls for cls in _EVENT_CLASSES
}

@functools.cache
def _adapter() -> TypeAdapter[Any]:
    """The validator of any event, built on first use (a consumer's, not a producer's, cost)."""
    return TypeAdapter(AnyEvent)

# Upgrades from older majors to the current one: pure dict -> dict functions, applied
# before validation. Version 1 is the first published major, so there are none yet.
UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}


class EventDecodeError(ValueError):
    """A message is not a valid event; ``reason`` is a short machine-readable cause."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def encode_event(event: _Envelope) -> bytes:
    """Serialise an event to its wire form."""
    return event.model_dump_json(exclude_none=True).encode()


def decode_event(data: bytes | str) -> _Envelope:
    """Parse and validate one message; raise :class:`EventDecodeError` with a reason.

    The common case (current major, valid) costs one pydantic-core pass. Only a message
    that fails it is parsed again, to upgrade an older major or to name the problem.
    """
    try:
        event: _Envelope = _adapter().validate_json(data)
        return event
    except ValidationError as first_error:
        return _decode_slow(data, first_error)


def _decode_slow(data: bytes | str, first_error: ValidationError) -> _Envelope:
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise EventDecodeError("invalid_json", str(exc)) from None
    except RecursionError:
        # Nested deeper than the parser goes: a message, not a reason to stop the projector.
        raise EventDecodeError("invalid_json", "nested too deeply") from None
    if not isinstance(raw, dict):
        raise EventDecodeError("invalid_envelope", "an event is a JSON object")
    version = raw.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise EventDecodeError("invalid_envelope", f"schema_version is {version!r}")
    if version in UPGRADES:
        raw = UPGRADES[version](raw)
    elif version != CURRENT_SCHEMA_VERSION:
        raise EventDecodeError(
            "unknown_major_version",
            f"schema_version {version}; this consumer knows {CURRENT_SCHEMA_VERSION}",
        )
    event_type = raw.get("type")
    if event_type not in EVENT_TYPES:
        raise EventDecodeError("unknown_type", f"event type {event_type!r}")
    try:
        upgraded: _Envelope = _adapter().validate_python(raw)
        return upgraded
    except ValidationError as exc:
        errors = exc.errors(include_url=False)[:3]
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors
        )
        raise EventDecodeError("invalid_event", detail or str(first_error)) from None


def now_ms() -> int:
    """Milliseconds since the epoch, UTC."""
    return time.time_ns() // 1_000_000


def new_event(
    cls: type[_Envelope],
    body: BaseModel | Mapping[str, Any] | None = None,
    *,
    producer: str = "",
    event_time_ms: int | None = None,
    event_id: str | None = None,
    **ids: str | None,
) -> Any:
    """Build an event of type ``cls`` with a fresh id and the current time."""
    fields: dict[str, Any] = {
        "event_id": event_id or uuid.uuid4().hex,
        "event_time_ms": now_ms() if event_time_ms is None else event_time_ms,
        "producer": producer,
        **{k: v for k, v in ids.items() if v is not None},
    }
    if body is not None:
        fields["body"] = body
    return cls(**fields)
