"""The web app's one way to the other services: their public JSON API, with the signed-in user's
token, exactly as a third-party client would call it. No code of auth, expenses or reports is
imported here; the shapes of their answers are in ``schemas.py``.

Two transports carry the calls: aiohttp to services in other processes (Kubernetes), and, when
they run in this process (``up``), the app itself through httpx's ASGI transport, without a
socket. aiohttp because the page waits on several calls per request: its client costs a
fraction of httpx's per call (docs/web.md, the benchmark)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, cast
from urllib.parse import quote

import aiohttp
import httpx
import orjson
from opentelemetry import propagate
from starlette.types import ASGIApp

from expensetracker.web.schemas import (
    Budget,
    BudgetReport,
    Category,
    ConvertedMerchant,
    ConvertedSummary,
    ConvertedTrends,
    Expense,
    HomeCurrency,
    ImportResult,
    Merchant,
    Overview,
    Page,
    Rate,
    Recurring,
    Rule,
    RulesApplied,
    Summary,
    Tag,
    TokenPair,
    Trends,
    User,
)

SERVICES = ("auth", "expenses", "reports")
TIMEOUT_SECONDS = 10.0
# Connections kept to each service process: more only queue at its database pool.
CONNECTIONS_PER_SERVICE = 16
_STREAMED_HEADERS = ("content-type", "content-disposition")
T = TypeVar("T")
# Covariant: Things[Category] stands where Things[object] is asked for (only read from).
Kind = TypeVar("Kind", covariant=True)


@dataclass(frozen=True)
class Things(Generic[Kind]):
    """A kind of thing a service keeps for the user: all of them at ``path``, one at
    ``path/{id}``. ApiClient's calls ``page``, ``every``, ``one``, ``create``, ``change`` and
    ``delete`` take it first, so the calls of every kind live once."""

    kind: type[Kind]  # its shape in schemas.py
    service: str
    path: str
    # Budgets are replaced whole (PUT); the others take a partial update.
    change_method: str = "PATCH"

    def item(self, id: str) -> str:
        return f"{self.path}/{_segment(id)}"


EXPENSES = Things(Expense, "expenses", "/api/v1/expenses")
CATEGORIES = Things(Category, "expenses", "/api/v1/categories")
TAGS = Things(Tag, "expenses", "/api/v1/tags")
RECURRING = Things(Recurring, "expenses", "/api/v1/expenses/recurring")
RATES = Things(Rate, "expenses", "/api/v1/expenses/rates")
RULES = Things(Rule, "expenses", "/api/v1/expenses/rules")
BUDGETS = Things(Budget, "reports", "/api/v1/budgets", change_method="PUT")
# What a report is asked with to be converted to the home currency.
_HOME = {"in": "home"}


class ApiError(Exception):
    """A 4xx answer: its problem document, with the offending fields by name."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        super().__init__(problem.get("detail") or problem.get("title") or str(status))
        self.status = status
        self.problem = problem

    @property
    def detail(self) -> str:
        return str(self)

    @property
    def field_errors(self) -> dict[str, str]:
        """Field name (the last part of the API's location that is no list index: a problem
        with ``body.thresholds.0`` is the thresholds field's) -> message, for the form."""
        errors: dict[str, str] = {}
        for error in self.problem.get("errors") or []:
            parts = str(error.get("field", "")).split(".")
            name = next((part for part in reversed(parts) if not part.isdigit()), "")
            errors.setdefault(name, str(error.get("message", "invalid")))
        return errors


class Unauthorized(ApiError):
    """The token or the session is no longer accepted."""


class ServiceUnavailable(Exception):
    """A service did not answer, or answered with a 5xx."""

    def __init__(self, service: str, reason: str) -> None:
        super().__init__(f"{service}: {reason}")
        self.service = service


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes

    def json(self) -> Any:
        # orjson: a page of 50 expenses decodes in a quarter of json's time (48 against 178 us).
        return orjson.loads(self.body)


@dataclass(frozen=True)
class Streamed:
    status: int
    headers: dict[str, str]
    chunks: AsyncIterator[bytes]


class Transport(Protocol):
    async def request(
        self, method: str, path: str, *, headers: dict[str, str], **kwargs: Any
    ) -> Answer: ...

    def stream(
        self, path: str, *, headers: dict[str, str], **kwargs: Any
    ) -> AbstractAsyncContextManager[Streamed]: ...


@dataclass(frozen=True)
class RemoteTransport:
    """A service in another process, over HTTP."""

    service: str
    session: aiohttp.ClientSession

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str],
        content: bytes | None = None,
        **kwargs: Any,
    ) -> Answer:
        propagate.inject(headers)  # the service's log lines name the page's trace
        try:
            # Never after a redirect: this API sends none, and the token must not follow one.
            async with self.session.request(
                method, path, headers=headers, data=content, allow_redirects=False, **kwargs
            ) as response:
                return Answer(response.status, await response.read())
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ServiceUnavailable(self.service, type(exc).__name__) from exc

    @asynccontextmanager
    async def stream(
        self, path: str, *, headers: dict[str, str], **kwargs: Any
    ) -> AsyncIterator[Streamed]:
        propagate.inject(headers)
        try:
            async with self.session.get(
                path, headers=headers, allow_redirects=False, **kwargs
            ) as response:
                headers = {
                    k: response.headers[k] for k in _STREAMED_HEADERS if k in response.headers
                }
                yield Streamed(response.status, headers, response.content.iter_any())
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ServiceUnavailable(self.service, type(exc).__name__) from exc


@dataclass(frozen=True)
class LocalTransport:
    """The services of this very process, called through the app without a socket."""

    client: httpx.AsyncClient

    async def request(self, method: str, path: str, **kwargs: Any) -> Answer:
        response = await self.client.request(method, path, **kwargs)
        return Answer(response.status_code, response.content)

    @asynccontextmanager
    async def stream(self, path: str, **kwargs: Any) -> AsyncIterator[Streamed]:
        async with self.client.stream("GET", path, **kwargs) as response:
            headers = {k: response.headers[k] for k in _STREAMED_HEADERS if k in response.headers}
            yield Streamed(response.status_code, headers, response.aiter_raw())


def in_process_client(app: ASGIApp, client: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(client, 0))
    return httpx.AsyncClient(
        transport=transport, base_url="http://in-process", timeout=TIMEOUT_SECONDS
    )


@dataclass(frozen=True)
class ApiClient:
    transports: Mapping[str, Transport]
    # The app that serves auth in this process, if it does: a call that checks a password (a
    # login) is sent through it with the person's own address, which auth's throttle counts.
    local_app: ASGIApp | None = None

    async def _send(
        self,
        service: str,
        method: str,
        path: str,
        *,
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> Answer:
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        answer = await self.transports[service].request(method, path, headers=all_headers, **kwargs)
        _raise_for(service, answer)
        return answer

    async def _json(self, shape: type[T], service: str, method: str, path: str, **kwargs: Any) -> T:
        """The answer's JSON, taken to be of ``shape`` (schemas.py): the API's contract."""
        return cast(T, (await self._send(service, method, path, **kwargs)).json())

    # Things of every kind (see Things)

    async def page(
        self,
        things: Things[T],
        *,
        token: str,
        filters: Mapping[str, str],
        cursor: str | None,
        limit: int,
    ) -> Page[T]:
        params = {**filters, "limit": str(limit), **({"cursor": cursor} if cursor else {})}
        return await self._json(
            Page[T], things.service, "GET", things.path, token=token, params=params
        )

    async def every(self, things: Things[T], *, token: str) -> list[T]:
        """Every item of a short list (categories, tags, rules, recurring expenses, budgets), page
        after page."""
        items: list[T] = []
        cursor: str | None = None
        while True:
            page = await self.page(things, token=token, filters={}, cursor=cursor, limit=500)
            items += page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return items

    async def one(self, things: Things[T], *, token: str, id: str) -> T:
        with _malformed_id_not_found():
            return await self._json(
                things.kind, things.service, "GET", things.item(id), token=token
            )

    async def create(
        self, things: Things[T], *, token: str, body: dict[str, Any], idempotency_key: str
    ) -> T:
        """A POST that creates, under the form's Idempotency-Key: sent twice, it creates once."""
        headers = {"Idempotency-Key": idempotency_key}
        return await self._json(
            things.kind,
            things.service,
            "POST",
            things.path,
            token=token,
            json=body,
            headers=headers,
        )

    async def change(self, things: Things[T], *, token: str, id: str, body: dict[str, Any]) -> T:
        method, path = things.change_method, things.item(id)
        with _malformed_id_not_found():
            return await self._json(
                things.kind, things.service, method, path, token=token, json=body
            )

    async def delete(
        self, things: Things[Any], *, token: str, id: str, params: Mapping[str, str] | None = None
    ) -> None:
        with _malformed_id_not_found():
            await self._send(things.service, "DELETE", things.item(id), token=token, params=params)

    # auth

    async def register(self, *, email: str, password: str, display_name: str) -> None:
        body = {"email": email, "password": password, "display_name": display_name}
        await self._send("auth", "POST", "/api/v1/auth/register", json=body)

    async def _checking_password(
        self, method: str, path: str, *, client: str, **kwargs: Any
    ) -> Answer:
        """A call of auth's that checks a password, from the person's own address ``client``:
        auth's throttle counts failures by address, and this app's would be everyone's."""
        if self.local_app is None:
            # Believed by auth only where it trusts this app as a proxy (docs/deploy.md).
            return await self._send(
                "auth", method, path, headers={"X-Forwarded-For": client}, **kwargs
            )
        async with in_process_client(self.local_app, client) as http:
            local = ApiClient({"auth": LocalTransport(http)})
            return await local._send("auth", method, path, **kwargs)

    async def login(self, *, email: str, password: str, client: str) -> TokenPair:
        body = {"email": email, "password": password}
        answer = await self._checking_password(
            "POST", "/api/v1/auth/login", client=client, json=body
        )
        return cast(TokenPair, answer.json())

    async def refresh(self, *, refresh_token: str) -> TokenPair:
        body = {"refresh_token": refresh_token}
        return await self._json(TokenPair, "auth", "POST", "/api/v1/auth/refresh", json=body)

    async def live_session(self, *, token: str) -> User:
        return await self._json(User, "auth", "GET", "/api/v1/auth/session", token=token)

    async def logout(self, *, token: str, everywhere: bool = False) -> None:
        path = "/api/v1/auth/logout-all" if everywhere else "/api/v1/auth/logout"
        await self._send("auth", "POST", path, token=token)

    async def change_password(self, *, token: str, current: str, new: str, client: str) -> None:
        body = {"current_password": current, "new_password": new}
        await self._checking_password(
            "POST", "/api/v1/auth/password", client=client, token=token, json=body
        )

    async def delete_account(self, *, token: str, password: str, client: str) -> None:
        body = {"password": password}
        await self._checking_password(
            "DELETE", "/api/v1/auth/me", client=client, token=token, json=body
        )

    # expenses

    async def import_file(
        self,
        *,
        token: str,
        content: bytes,
        dry_run: bool,
        options: Mapping[str, str],
        idempotency_key: str | None,
    ) -> ImportResult:
        """A CSV file or a bank statement, with the import's ``options`` (``format`` and QIF's
        own). Without ``format``, the API detects it from the content (sent as
        application/octet-stream, a type it looks into)."""
        params = {"dry_run": "true" if dry_run else "false", **options}
        headers = {"Content-Type": "application/octet-stream"}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        return await self._json(
            ImportResult,
            "expenses",
            "POST",
            "/api/v1/expenses/import",
            token=token,
            content=content,
            params=params,
            headers=headers,
        )

    async def home_currency(self, *, token: str) -> HomeCurrency:
        path = "/api/v1/expenses/home-currency"
        return await self._json(HomeCurrency, "expenses", "GET", path, token=token)

    async def set_home_currency(self, *, token: str, currency: str) -> HomeCurrency:
        path, body = "/api/v1/expenses/home-currency", {"currency": currency}
        return await self._json(HomeCurrency, "expenses", "PUT", path, token=token, json=body)

    async def put_rate(self, *, token: str, day: str, base: str, quote: str, rate: str) -> Rate:
        path, body = _rate_path(day, base, quote), {"rate": rate}
        return await self._json(Rate, "expenses", "PUT", path, token=token, json=body)

    async def delete_rate(self, *, token: str, day: str, base: str, quote: str) -> None:
        await self._send("expenses", "DELETE", _rate_path(day, base, quote), token=token)

    async def apply_rules(self, *, token: str, dry_run: bool) -> RulesApplied:
        path, params = "/api/v1/expenses/rules/apply", {"dry_run": "true" if dry_run else "false"}
        return await self._json(RulesApplied, "expenses", "POST", path, token=token, params=params)

    @asynccontextmanager
    async def export(self, *, token: str, fmt: str) -> AsyncIterator[Streamed]:
        """The export, streamed: the caller passes its body on without holding it."""
        async with self.transports["expenses"].stream(
            "/api/v1/expenses/export",
            params={"format": fmt},
            headers={"Authorization": f"Bearer {token}"},
        ) as streamed:
            if streamed.status >= 300:
                body = b"".join([chunk async for chunk in streamed.chunks])
                _raise_for("expenses", Answer(streamed.status, body))
            yield streamed

    # reports: each in every currency apart, or (the converted_ ones) in the home currency

    async def _report(self, shape: type[T], name: str, *, token: str, **params: str) -> T:
        path = f"/api/v1/reports/{name}"
        return await self._json(shape, "reports", "GET", path, token=token, params=params)

    async def budget_report(self, *, token: str, month: str) -> BudgetReport:
        return await self._report(BudgetReport, "budgets", token=token, month=month)

    async def overview(self, *, token: str, month: str, months: int) -> Overview[Summary]:
        return await self._report(
            Overview[Summary], "overview", token=token, month=month, months=str(months)
        )

    async def converted_overview(
        self, *, token: str, month: str, months: int
    ) -> Overview[ConvertedSummary]:
        return await self._report(
            Overview[ConvertedSummary],
            "overview",
            token=token,
            month=month,
            months=str(months),
            **_HOME,
        )

    async def summary(self, *, token: str, start: str, end: str, group_by: str) -> Summary:
        span = {"from": start, "to": end}
        return await self._report(Summary, "summary", token=token, group_by=group_by, **span)

    async def converted_summary(
        self, *, token: str, start: str, end: str, group_by: str
    ) -> ConvertedSummary:
        span = {"from": start, "to": end}
        return await self._report(
            ConvertedSummary, "summary", token=token, group_by=group_by, **span, **_HOME
        )

    async def trends(self, *, token: str, month: str, months: int) -> Trends:
        return await self._report(Trends, "trends", token=token, month=month, months=str(months))

    async def converted_trends(self, *, token: str, month: str, months: int) -> ConvertedTrends:
        return await self._report(
            ConvertedTrends, "trends", token=token, month=month, months=str(months), **_HOME
        )

    async def merchants(self, *, token: str, start: str, end: str, limit: int) -> list[Merchant]:
        span = {"from": start, "to": end}
        return await self._report(
            list[Merchant], "merchants", token=token, limit=str(limit), **span
        )

    async def converted_merchants(
        self, *, token: str, start: str, end: str, limit: int
    ) -> list[ConvertedMerchant]:
        span = {"from": start, "to": end}
        return await self._report(
            list[ConvertedMerchant], "merchants", token=token, limit=str(limit), **span, **_HOME
        )


@contextmanager
def _malformed_id_not_found() -> Iterator[None]:
    """An id the API refuses as malformed (a 422 at the path alone) names nothing, as an unknown
    id does: a page's URL that holds one is "not found", not "something went wrong"."""
    try:
        yield
    except ApiError as exc:
        fields = [str(error.get("field", "")) for error in exc.problem.get("errors") or []]
        if exc.status == 422 and fields and all(f.startswith("path.") for f in fields):
            raise ApiError(404, {"detail": "Not found."}) from None
        raise


def _segment(value: str) -> str:
    """An id from a page's URL as one path segment of the API's: whatever it holds (a slash, a
    NUL, a lone surrogate) it names no other path, and the API judges it."""
    return quote(value.encode("utf-8", "surrogatepass"), safe="")


_RATE_PARTS = {
    "day": "must be a date as YYYY-MM-DD",
    "base": "must be a currency code, such as EUR",
    "quote": "must be a currency code, such as EUR",
}


def _rate_path(day: str, base: str, quote: str) -> str:
    """A rate's path. An empty part would name another path (the API redirects one that ends
    in a slash), so it is refused here as the API refuses a field left out; so is a part that
    no path segment can carry."""
    parts = {"day": day, "base": base, "quote": quote}
    # A slash, or a dot or two alone, would name another path too (the route is not found).
    errors = [
        {"field": f"path.{name}", "message": _RATE_PARTS[name] if value else "is required"}
        for name, value in parts.items()
        if not value or "/" in value or value in (".", "..")
    ]
    if errors:
        raise ApiError(
            422, {"detail": "A rate needs its day and both currencies.", "errors": errors}
        )
    return f"{RATES.path}/{_segment(day)}/{_segment(base)}/{_segment(quote)}"


def _raise_for(service: str, answer: Answer) -> None:
    if answer.status < 300:
        return
    # A redirect is no answer of this API: the page says the service failed, as for a 5xx.
    if answer.status >= 500 or answer.status < 400:
        raise ServiceUnavailable(service, f"HTTP {answer.status}")
    try:
        problem = answer.json()
    except ValueError:
        problem = {}
    if not isinstance(problem, dict):
        problem = {}
    error = Unauthorized if answer.status == 401 else ApiError
    raise error(answer.status, problem)
