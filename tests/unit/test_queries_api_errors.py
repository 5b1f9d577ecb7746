"""The HTTP error table (runstream.api.errors) and the exception tree agree."""

from __future__ import annotations

import pytest
from runstream import errors
from runstream.api.errors import ERROR_TABLE, status_and_code


@pytest.mark.parametrize(("cls", "status", "code"), ERROR_TABLE)
def test_table_agrees_with_the_exception_classes(cls, status: int, code: str) -> None:
    # Other routers read exc.http_status / exc.error_code directly; both must say the same.
    assert (cls.http_status, cls.error_code) == (status, code)
    exc = cls("x", position=0, expected="a value") if cls is errors.InvalidFilter else cls("x")
    assert status_and_code(exc) == (status, code)


def test_most_specific_class_wins() -> None:
    assert status_and_code(errors.AlreadyExists("x")) == (400, "RESOURCE_ALREADY_EXISTS")
    assert status_and_code(errors.DeliveryError("x")) == (503, "TEMPORARILY_UNAVAILABLE")
    assert status_and_code(
        errors.InvalidFilter("x", position=1, expected="a value")
    ) == (400, "INVALID_PARAMETER_VALUE")
    assert status_and_code(errors.RunstreamError("x")) == (500, "INTERNAL_ERROR")


def test_every_error_class_is_in_the_table() -> None:
    classes = {c for c in vars(errors).values()
               if isinstance(c, type) and issubclass(c, errors.RunstreamError)}
    listed = {cls for cls, _, _ in ERROR_TABLE}
    assert classes - listed <= {errors.DeliveryError}  # covered by LogError, its parent
