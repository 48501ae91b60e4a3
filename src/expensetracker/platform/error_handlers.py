"""The app's side of errors.py: the handlers that answer a :class:`Problem`, and turn
framework errors (404, 405, validation) into the same shape, and the OpenAPI document's list of
every error an operation answers, as a :class:`ProblemDetails`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import iter_route_contexts
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import Scope

from expensetracker.platform.errors import (
    PROBLEM_JSON,
    Problem,
    ProblemResponse,
    ValidationProblem,
    problem_response,
)
from expensetracker.platform.schemas import NOT_A_DAY

if TYPE_CHECKING:
    from expensetracker.platform.spec import ErrorPage


async def _on_problem(_request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, Problem)
    return exc.response()


def _allowed_methods(request: Request) -> str:
    """Every method of the path's routes. Starlette's 405 names those of the first route whose
    path matched: `Allow: POST` for /api/v1/expenses, which GET reads too (RFC 9110: all)."""
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.router.routes):  # in included routers too
        if route.matches(request.scope)[0] is not Match.NONE:
            methods |= route.methods or set()
    return ", ".join(sorted(methods))


def _unreadable_json(exc: StarletteHTTPException) -> str | None:
    """Why a JSON body could not be read, when FastAPI answered its bare 400 ("There was an
    error parsing the body", raised from the parser's own error): said by field as the 422 of
    any other body that is not valid JSON."""
    if exc.status_code != HTTPStatus.BAD_REQUEST:
        return None
    match exc.__cause__:
        case RecursionError():
            return "is not JSON this API can read: it is nested too deeply"
        case UnicodeDecodeError():
            return "is not valid JSON: it is not UTF-8 text"
        case ValueError():  # the only other: an integer beyond Python's limit of digits
            return "is not JSON this API can read: it has a number with too many digits"
    return None


def _http_exception_handler(
    error_page: Callable[[str], ErrorPage | None],
) -> Callable[[Request, Exception], Any]:
    async def on_http_exception(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        detail: str | None = exc.detail if isinstance(exc.detail, str) else None
        if detail == HTTPStatus(exc.status_code).phrase:
            detail = None
        headers = exc.headers
        if exc.status_code == HTTPStatus.METHOD_NOT_ALLOWED and (
            allowed := _allowed_methods(request)
        ):
            headers = {**(headers or {}), "Allow": allowed}
        if unreadable := _unreadable_json(exc):  # a JSON body: the API's, never a page's
            return ValidationProblem.of_field("body", unreadable, "json_invalid").response()
        # A page's 405 names what the path takes too (RFC 9110), as a problem's does.
        return refusal(
            request.scope, exc.status_code, detail=detail, headers=headers, error_page=error_page
        )

    return on_http_exception


# The library's sentences people meet, said as our own checks say things ({...}: its context).
_PLAIN_WORDS = {
    "missing": "is required",
    "extra_forbidden": "is not a field this request takes",
    "string_too_short": "must have at least {min_length} characters",
    "string_too_long": "must have at most {max_length} characters",
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "greater_than_equal": "must be at least {ge}",
    "less_than_equal": "must be at most {le}",
    "bool_parsing": "must be true or false",
    "uuid_parsing": "must be an id as the API gives it, such as {example_id}",
    "literal_error": "must be one of {expected}",
    "date_parsing": NOT_A_DAY,
    "date_from_datetime_parsing": NOT_A_DAY,
    "date_type": NOT_A_DAY,
    "string_type": "must be a string, in quotes",
    "bool_type": "must be true or false",
    "list_type": "must be a list",
    "model_attributes_type": "must be a JSON object",
    "model_type": "must be a JSON object",
    "dict_type": "must be a JSON object",
    "json_invalid": "is not valid JSON ({error} at character {position})",
}
# A body sent with another Content-Type reaches the model unparsed: that is what to say.
_NOT_SENT_AS_JSON = "must be sent as JSON, with Content-Type: application/json"


def _field(error: Mapping[str, Any]) -> str:
    # Invalid JSON is located at ("body", character position): the field is the body.
    location = error["loc"][:1] if error["type"] == "json_invalid" else error["loc"]
    return ".".join(str(part) for part in location)


def _sent_as_json(request: Request) -> bool:
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


def _message(error: Mapping[str, Any], request: Request) -> str:
    """What to show the person who typed the value. Our own checks raise ValueError with a
    sentence of their own, which pydantic prefixes with "Value error, ": shown as raised."""
    kind, context = error["type"], error.get("ctx", {})
    if kind == "model_attributes_type" and not _sent_as_json(request):
        return _NOT_SENT_AS_JSON
    if kind == "json_invalid":
        context = {**context, "position": error["loc"][-1]}
    if kind == "value_error" and context.get("error"):
        return str(context["error"])
    if kind == "string_too_short" and context.get("min_length") == 1:
        return "must not be empty"
    if kind in ("too_long", "too_short") and context.get("field_type") == "List":
        bound = context["max_length" if kind == "too_long" else "min_length"]
        most = "most" if kind == "too_long" else "least"
        return f"must have at {most} {bound} item{'s' if bound != 1 else ''}"
    if said := _PLAIN_WORDS.get(kind):
        return said.format(**context, example_id='"0b6d3f5e-1c2a-4e8b-9f00-3a7c2d1e4b5f"')
    return str(error["msg"])


def _validation_error_handler(
    error_page: Callable[[str], ErrorPage | None],
) -> Callable[[Request, Exception], Any]:
    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {
                "field": _field(error),
                "message": _message(error, request),
                "type": error["type"],
            }
            for error in exc.errors()
        ]
        if render := error_page(request.url.path):
            # A page's address or form with a value it does not take: said on a page, by name.
            said = "; ".join(
                f"{error['field'].rpartition('.')[2]} {error['message']}" for error in errors
            )
            return render(request, 422, f"{said[0].upper()}{said[1:]}.")
        return ValidationProblem(errors).response()

    return on_validation_error


def refusal(
    scope: Scope,
    status: int,
    *,
    detail: str | None,
    headers: Mapping[str, str] | None = None,
    error_page: Callable[[str], ErrorPage | None],
) -> Response:
    """A refusal (a middleware's, made before any route runs, or an HTTP exception's): the page
    of the path's service where it renders its errors as pages (a browser's), else a problem
    document."""
    if render := error_page(scope["path"]):
        page = render(Request(scope), status, detail)
        page.headers.update(headers or {})
        return page
    return problem_response(status, detail=detail, headers=headers)


def install_problem_handlers(
    app: FastAPI, *, error_page: Callable[[str], ErrorPage | None] = lambda _path: None
) -> None:
    """``error_page`` gives, for a path, the service's own renderer of HTTP errors, if any."""
    app.add_exception_handler(Problem, _on_problem)
    app.add_exception_handler(StarletteHTTPException, _http_exception_handler(error_page))
    app.add_exception_handler(RequestValidationError, _validation_error_handler(error_page))


class FieldError(BaseModel):
    field: str
    message: str
    type: str


class ProblemDetails(BaseModel):
    """An error (RFC 9457); a 422 also names the offending fields."""

    model_config = ConfigDict(title="Problem")

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldError] | None = None


def document_problems(app: FastAPI, *, rate_limited: bool) -> None:
    """The app's OpenAPI document lists each operation's errors as problem+json: those routes
    declare with :func:`problems`, and those shared by every route of a kind. It replaces
    FastAPI's default 422, whose body is not what :func:`_on_validation_error` answers."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _with_problems(generate(), rate_limited=rate_limited)
        return app.openapi_schema

    # Assigning app.openapi is how FastAPI documents changing the document; mypy sees a method.
    app.openapi = openapi  # type: ignore[method-assign]


def _with_problems(document: dict[str, Any], *, rate_limited: bool) -> dict[str, Any]:
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    problem = ProblemDetails.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(problem.pop("$defs"))
    schemas["Problem"] = problem
    content = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for item in document.get("paths", {}).values():
        for operation in item.values():
            shared = [429] if rate_limited else []
            if "security" in operation:
                shared.append(401)
            if "requestBody" in operation:
                # 400: a body that cannot be read as its media type (not UTF-8, say).
                shared += [400, 413, 422]
            if "parameters" in operation:
                shared.append(422)
            responses = operation["responses"]
            for status in shared:
                responses.setdefault(str(status), {"description": HTTPStatus(status).phrase})
            for status, response in responses.items():
                if int(status) >= 400:
                    response["content"] = content
            operation["responses"] = dict(sorted(responses.items()))
    return document
