"""RFC 9457 problem details for every error the API returns.

Service code raises :class:`Problem` (or a subclass), and a route declares the errors particular
to it with :func:`problems`. The app's handlers (error_handlers.py) answer problems, and turn
framework errors (404, 405, validation) into the same shape; unexpected exceptions become a 500
problem, without stack trace, in the request middleware. Nothing here needs FastAPI: the command
line raises and reads the same problems.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import date
from http import HTTPStatus
from typing import Any

from starlette.responses import JSONResponse


def chained(exc: BaseException | None) -> Iterator[BaseException]:
    """``exc``, then the exception it was raised from or while handling, and so on."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "urn:expensetracker:problem:"


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_JSON


def problem_response(
    status: int,
    *,
    detail: str | None = None,
    type_: str = "about:blank",
    title: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extensions: Any,
) -> ProblemResponse:
    body = {
        "type": type_,
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail or HTTPStatus(status).description,
        **extensions,
    }
    return ProblemResponse(body, status_code=status, headers=headers)


class Problem(Exception):
    """An error with a status and a message meant for the API client."""

    status: int = 400
    type_: str = "about:blank"
    title: str | None = None
    default_detail: str | None = None

    def __init__(
        self,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        detail = detail or self.default_detail or HTTPStatus(self.status).description
        super().__init__(detail)
        self.detail = detail
        self.headers = headers
        self.extensions = extensions

    def response(self) -> ProblemResponse:
        return problem_response(
            self.status,
            detail=self.detail,
            type_=self.type_,
            title=self.title,
            headers=self.headers,
            **self.extensions,
        )


class NotFound(Problem):
    """Missing and foreign objects answer alike: nobody learns what another user has."""

    status = 404


class Conflict(Problem):
    status = 409


class InvalidToken(Problem):
    """A request's access token is missing, invalid or expired, or its account is gone."""

    status = 401
    default_detail = "The access token is missing, invalid or expired."

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


class ValidationProblem(Problem):
    """A 422 naming the offending fields: where and why, never the submitted value (it may be a
    password)."""

    status = 422
    type_ = PROBLEM_BASE + "validation-error"
    title = "Invalid request"

    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__(
            "The request has fields that are missing, unknown or invalid.", errors=errors
        )

    @classmethod
    def of_field(cls, field: str, message: str, type_: str) -> ValidationProblem:
        return cls([{"field": field, "message": message, "type": type_}])


def reversed_range(*, from_: date | None, to: date | None) -> list[dict[str, str]]:
    """The error of a query's range whose last day (``to``) comes before its first (``from``),
    or none: every service refuses such a range in these words, where it would answer as if
    there were nothing in it."""
    if from_ is not None and to is not None and to < from_:
        return [
            {"field": "query.to", "message": "Must not be before the first day.", "type": "range"}
        ]
    return []


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """A route's ``responses``: the errors particular to it. Those its kind of route shares (400,
    401, 413, 422, 429) are added by error_handlers.document_problems."""
    return {status: {"description": HTTPStatus(status).phrase} for status in statuses}
