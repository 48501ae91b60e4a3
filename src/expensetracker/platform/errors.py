"""RFC 9457 problem details for every error the API returns.

Route code raises :class:`Problem` (or a subclass); the handlers installed by
:func:`install_problem_handlers` turn framework errors (404, 405, validation) into the same
shape. Unexpected exceptions become a 500 problem, without stack trace, in the request middleware.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

if TYPE_CHECKING:
    from expensetracker.platform.spec import ErrorPage

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


async def _on_problem(_request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, Problem)
    return exc.response()


def _http_exception_handler(
    error_page: Callable[[str], ErrorPage | None],
) -> Callable[[Request, Exception], Any]:
    async def on_http_exception(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        detail: str | None = exc.detail if isinstance(exc.detail, str) else None
        if detail == HTTPStatus(exc.status_code).phrase:
            detail = None
        if render := error_page(request.url.path):
            return render(request, exc.status_code, detail)
        return problem_response(exc.status_code, detail=detail, headers=exc.headers)

    return on_http_exception


async def _on_validation_error(_request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {
            "field": ".".join(str(part) for part in error["loc"]),
            "message": error["msg"],
            "type": error["type"],
        }
        for error in exc.errors()
    ]
    return ValidationProblem(errors).response()


def install_problem_handlers(
    app: FastAPI, *, error_page: Callable[[str], ErrorPage | None] = lambda _path: None
) -> None:
    """``error_page`` gives, for a path, the service's own renderer of HTTP errors, if any."""
    app.add_exception_handler(Problem, _on_problem)
    app.add_exception_handler(StarletteHTTPException, _http_exception_handler(error_page))
    app.add_exception_handler(RequestValidationError, _on_validation_error)
