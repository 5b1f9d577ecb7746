"""The exception tree of runstream; Kafka, DuckDB and HTTP errors are translated into it.

    RunstreamError
    ├── ConfigError            bad settings or flags
    ├── LogError               the Kafka log could not be reached or written
    │   └── DeliveryError      an event was not acknowledged by the broker
    ├── InvalidInput           a request, filter or file is malformed (HTTP 400)
    ├── NotFound               a run, experiment or artifact does not exist (HTTP 404)
    ├── Conflict               the change contradicts recorded state (HTTP 400, as MLflow)
    └── NotReady               the read model has not caught up in time (HTTP 503)
"""

from __future__ import annotations


class RunstreamError(Exception):
    """Root of every error runstream raises on purpose."""

    error_code = "INTERNAL_ERROR"
    http_status = 500


class ConfigError(RunstreamError):
    """A setting or flag is invalid."""

    error_code = "INVALID_PARAMETER_VALUE"
    http_status = 400


class LogError(RunstreamError):
    """The Kafka log could not be reached or written."""

    error_code = "TEMPORARILY_UNAVAILABLE"
    http_status = 503


class DeliveryError(LogError):
    """The broker did not acknowledge one or more events."""


class InvalidInput(RunstreamError):
    """Malformed input: a filter, a request body, a file."""

    error_code = "INVALID_PARAMETER_VALUE"
    http_status = 400


class NotFound(RunstreamError):
    """The thing asked for does not exist."""

    error_code = "RESOURCE_DOES_NOT_EXIST"
    http_status = 404


class Conflict(RunstreamError):
    """The change contradicts state already recorded (for example a changed param)."""

    error_code = "INVALID_PARAMETER_VALUE"
    http_status = 400


class NotReady(RunstreamError):
    """The read model did not reach the needed position in time."""

    error_code = "TEMPORARILY_UNAVAILABLE"
    http_status = 503


# Appended for the query side (issue #7); both sit under the classes above in the tree:
#     InvalidInput └── InvalidFilter     a filter or order_by that does not parse (HTTP 400)
#     Conflict     └── AlreadyExists     the name or id is taken (HTTP 400, as MLflow)


class InvalidFilter(InvalidInput):
    """A filter or order_by clause that does not parse: where (``position``) and what was expected.

    ``clause_index`` numbers the order_by clause the position is in; None for a filter.
    """

    def __init__(
        self, message: str, *, position: int, expected: str, clause_index: int | None = None
    ) -> None:
        super().__init__(message)
        self.position = position
        self.expected = expected
        self.clause_index = clause_index


class AlreadyExists(Conflict):
    """Something with this name or id exists already (MLflow answers 400, not 409)."""

    error_code = "RESOURCE_ALREADY_EXISTS"
    http_status = 400
