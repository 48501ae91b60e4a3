"""What the web pages do: sessions kept with auth's refresh-token rotation, and each page's data
gathered from the public API. Routes call these with keyword arguments only."""

from __future__ import annotations

import asyncio
import base64
import calendar
import gzip
import io
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any
from urllib.parse import urlencode

from babel.numbers import get_currency_precision

from expensetracker.web.client import (
    CATEGORIES,
    EXPENSES,
    RULES,
    ApiClient,
    ApiError,
    Unauthorized,
)
from expensetracker.web.schemas import (
    EXPENSE_FILTERS,
    IMPORT_FORMATS,
    QIF_DATE_ORDERS,
    Budget,
    Category,
    ConvertedGroup,
    CurrencyTotal,
    Expense,
    Page,
    Rule,
    SummaryGroup,
    User,
)
from expensetracker.web.session import SessionCodec, Tokens, tokens_from

PAGE_SIZE = 50
RATES_PAGE_SIZE = 100
LATEST_EXPENSES = 10
TREND_MONTHS = 12
TOP_MERCHANTS = 10
# A rotated refresh token is remembered this long, so that requests racing with the rotation
# (a page and its partial updates) share its result instead of replaying the old token, which
# auth would take for a stolen one.
_ROTATION_MEMORY_SECONDS = 60.0
_ROTATION_MEMORY_SIZE = 10_000


@dataclass(frozen=True, kw_only=True)
class Credentials:
    """A session cookie's tokens, fresh, its session not yet checked with auth."""

    tokens: Tokens
    # A new session cookie when the tokens were refreshed during this request.
    renewed: str | None = None

    @property
    def token(self) -> str:
        return self.tokens.access


@dataclass(frozen=True, kw_only=True)
class Account(Credentials):
    """The signed-in person of a request (auth has checked the session), with the token to call
    the API for them."""

    user: User


@dataclass
class WebState:
    api: ApiClient
    codec: SessionCodec
    refresh_ttl_seconds: int
    _rotations: OrderedDict[str, tuple[float, asyncio.Future[Tokens]]] = field(
        default_factory=OrderedDict
    )

    async def rotate(self, refresh_token: str) -> Tokens:
        """Auth's refresh, once per refresh token however many requests ask at the same time."""
        now = time.monotonic()
        remembered = self._rotations.get(refresh_token)
        if remembered is not None and now - remembered[0] < _ROTATION_MEMORY_SECONDS:
            return await asyncio.shield(remembered[1])
        future: asyncio.Future[Tokens] = asyncio.get_running_loop().create_future()
        self._rotations[refresh_token] = (now, future)
        while len(self._rotations) > _ROTATION_MEMORY_SIZE:
            self._rotations.popitem(last=False)
        try:
            pair = await self.api.refresh(refresh_token=refresh_token)
        except BaseException as exc:
            self._rotations.pop(refresh_token, None)
            future.set_exception(exc)
            future.exception()  # retrieved: waiters see it, nobody is warned about it
            raise
        future.set_result(tokens_from(dict(pair)))
        return future.result()


async def open_session(*, state: WebState, cookie: str | None) -> Account | None:
    """The account of a session cookie, or None when it is missing, forged, expired, or its
    session has ended (signed out here or elsewhere, password changed, account deleted)."""
    credentials = await session_credentials(state=state, cookie=cookie)
    return None if credentials is None else await check_session(state=state, of=credentials)


async def session_credentials(*, state: WebState, cookie: str | None) -> Credentials | None:
    """A session cookie's tokens, refreshed when they are about to expire; None when the cookie
    is missing or forged, or auth refuses the refresh. The session itself is not checked."""
    tokens = state.codec.open(cookie)
    if tokens is None:
        return None
    if not tokens.expiring(time.time()):
        return Credentials(tokens=tokens)
    try:
        tokens = await state.rotate(tokens.refresh)
    except Unauthorized:
        return None
    return Credentials(tokens=tokens, renewed=state.codec.seal(tokens))


async def check_session(*, state: WebState, of: Credentials) -> Account | None:
    """The account, when auth says the session still lives (checked on every request: an old
    cookie opens nothing once its session ended, whichever replica signed it out)."""
    try:
        user = await state.api.live_session(token=of.token)
    except Unauthorized:
        return None
    return Account(user=user, tokens=of.tokens, renewed=of.renewed)


async def checked_reads(
    *, state: WebState, of: Credentials, reads: Sequence[Awaitable[Any]]
) -> tuple[Account | None, list[Any]]:
    """The session checked while a page's reads (GETs, which change nothing) are already on
    their way to the API: the page waits for one round trip instead of two. Their answers are
    used only once auth has said the session lives; otherwise they are dropped unseen (None, and
    no answers), as is everything after a read that failed."""
    tasks = [asyncio.ensure_future(read) for read in reads]
    try:
        account = await check_session(state=state, of=of)
        if account is None:
            return None, []
        return account, list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
            elif not task.cancelled():
                task.exception()  # retrieved: dropped with the page, nothing to warn about


async def sign_in(*, state: WebState, email: str, password: str, client: str) -> str:
    """The new session cookie's value; raises ApiError (401, 429, 422) as auth answers."""
    pair = await state.api.login(email=email, password=password, client=client)
    return state.codec.seal(tokens_from(dict(pair)))


async def sign_up(
    *, state: WebState, email: str, password: str, display_name: str, client: str
) -> str | None:
    """Registers, then signs in with the same credentials. None when signing in fails: the
    address may have been registered before, which is never said (auth answers alike)."""
    await state.api.register(
        email=email, password=password, display_name=display_name or email.split("@")[0]
    )
    try:
        return await sign_in(state=state, email=email, password=password, client=client)
    except ApiError as exc:
        if exc.status in (401, 429):
            return None
        raise


def sign_up_errors(field_errors: Mapping[str, str], *, display_name: str) -> dict[str, str]:
    """The API's problems with a sign-up, by field. Without a name typed, the name sent was made
    from the address: its problem (empty, too long) is the address's, which has its own."""
    errors = dict(field_errors)
    if not display_name:
        errors.pop("display_name", None)
    return errors


def month_bounds(day: date) -> tuple[date, date]:
    last = calendar.monthrange(day.year, day.month)[1]
    return day.replace(day=1), day.replace(day=last)


def months_back(day: date, count: int) -> date:
    """The first day of the month ``count - 1`` months before ``day``'s month."""
    index = day.year * 12 + day.month - 1 - (count - 1)
    return date(index // 12, index % 12 + 1, 1)


def currencies_of(groups: list[SummaryGroup]) -> list[str]:
    return sorted({total["currency"] for group in groups for total in group["totals"]})


def totals_by_currency(groups: list[SummaryGroup]) -> dict[str, dict[str | None, CurrencyTotal]]:
    """currency -> group key -> total: what one chart (one currency, never added across
    currencies) and one table column show."""
    table: dict[str, dict[str | None, CurrencyTotal]] = {}
    for group in groups:
        for total in group["totals"]:
            table.setdefault(total["currency"], {})[group["key"]] = total
    return table


def category_names(categories: list[Category]) -> dict[str, str]:
    parents = {category["id"]: category["name"] for category in categories}
    return {
        category["id"]: (
            f"{parents.get(category['parent_id'], '')} \u203a {category['name']}"
            if category["parent_id"]
            else category["name"]
        )
        for category in categories
    }


def category_tree(categories: list[Category]) -> list[tuple[Category, list[Category]]]:
    """Top-level categories by name, each with its subcategories (one level of nesting)."""
    children: dict[str, list[Category]] = {}
    for category in categories:
        if category["parent_id"]:
            children.setdefault(category["parent_id"], []).append(category)
    return [
        (category, sorted(children.get(category["id"], []), key=lambda c: c["name"].casefold()))
        for category in sorted(categories, key=lambda c: c["name"].casefold())
        if not category["parent_id"]
    ]


async def dashboard(*, api: ApiClient, token: str, today: date, home: bool) -> dict[str, Any]:
    """The dashboard's data, its API calls at once: the reports' overview of the month and the
    latest expenses; with ``home``, the month and the trend in the home currency (the API's 422
    when there is none yet goes to the caller)."""
    month = today.strftime("%Y-%m")
    trend_start = months_back(today, TREND_MONTHS)
    # Either overview's shape: each branch below reads the one it asked for.
    overview: Callable[..., Awaitable[Any]] = api.converted_overview if home else api.overview
    month_at_a_glance, latest = await asyncio.gather(
        overview(token=token, month=month, months=TREND_MONTHS),
        latest_expenses(api=api, token=token),
    )
    by_category, by_month = month_at_a_glance["by_category"], month_at_a_glance["by_month"]
    shown: dict[str, Any] = (
        {
            "home_currency": by_category["currency"],
            "month_total": by_category["total"],
            "trend": converted_months(by_month["groups"], start=trend_start, months=TREND_MONTHS),
        }
        if home
        else {
            "home_currency": None,
            "category_currencies": currencies_of(by_category["groups"]),
            "category_totals": totals_by_currency(by_category["groups"]),
            "trend": month_series(by_month["groups"], start=trend_start, months=TREND_MONTHS),
        }
    )
    return {
        "month": month,
        "by_category": by_category["groups"],
        "budgets": month_at_a_glance["budgets"],
        **latest,
        **shown,
    }


async def latest_expenses(*, api: ApiClient, token: str) -> dict[str, Any]:
    """The dashboard's latest expenses, with the names of their categories: the part of it that
    reloads after an expense is added in the dialog."""
    latest, categories = await asyncio.gather(
        api.page(EXPENSES, token=token, filters={}, cursor=None, limit=LATEST_EXPENSES),
        api.every(CATEGORIES, token=token),
    )
    return {"latest": latest["items"], "category_names": category_names(categories)}


def _month_keys(start: date, months: int) -> list[str]:
    first = start.year * 12 + start.month - 1
    return [f"{index // 12:04d}-{index % 12 + 1:02d}" for index in range(first, first + months)]


def converted_months(
    groups: list[ConvertedGroup], *, start: date, months: int
) -> list[dict[str, Any]]:
    """Every month of the range, empty ones too (with no total), in the home currency."""
    by_month = {group["key"]: group for group in groups}
    return [
        {"key": key, "name": None, "total": by_month[key]["total"] if key in by_month else None}
        for key in _month_keys(start, months)
    ]


def month_series(groups: list[SummaryGroup], *, start: date, months: int) -> dict[str, Any]:
    """Every month of the range (empty ones too) against each currency's total."""
    keys = _month_keys(start, months)
    totals = totals_by_currency(groups)
    return {"months": keys, "currencies": sorted(totals), "totals": totals}


def expense_filters(query: Mapping[str, str]) -> dict[str, str]:
    """The API filters present in a page's query string, as given (the API checks them), but for
    the currency in capitals and the amounts read as typed ("12,50"), as every form of the app
    takes them."""
    filters = {name: query[name].strip() for name in EXPENSE_FILTERS if query.get(name, "").strip()}
    if "currency" in filters:
        filters["currency"] = filters["currency"].upper()
    for name in ("min_amount", "max_amount"):
        if name in filters:
            filters[name] = typed_amount(filters[name], filters.get("currency", ""))
    return filters


def list_query(query: Mapping[str, str]) -> str:
    """The list's place in ``query`` (its filters and cursor) as a query string, and nothing
    else: a form carries it, and the redirect after a save or a delete without scripts goes back
    to that place."""
    place = expense_filters(query)
    if query.get("cursor"):
        place["cursor"] = query["cursor"]
    return urlencode(place)


async def expense_page(
    *, api: ApiClient, token: str, filters: dict[str, str], cursor: str | None
) -> Page[Expense]:
    return await api.page(EXPENSES, token=token, filters=filters, cursor=cursor, limit=PAGE_SIZE)


# Thousands in groups of three, then maybe decimals: "1,500,000.50", or "1.500.000,50".
_GROUPED_POINT = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_GROUPED_COMMA = re.compile(r"\d{1,3}(?:\.\d{3})+,\d+")


def typed_amount(amount: str, currency: str = "") -> str:
    """An amount as typed, in the API's form (digits, a point before the decimals); the API
    checks the rest (the currency's decimals). A comma alone is the decimal mark ("12,50"),
    except before three digits in a currency that has no three decimals: "1,500" yen are 1500.
    Thousands separators go: "1,500,000.50", "1.500.000,50"."""
    amount = amount.strip()
    if _GROUPED_COMMA.fullmatch(amount):
        return amount.replace(".", "").replace(",", ".")
    if amount.count(",") == 1 and "." not in amount:
        whole, fraction = amount.split(",")
        # The currency's decimals are CLDR's, by Babel; an unknown code is the API's to refuse.
        thousands = len(fraction) == 3 and bool(currency) and get_currency_precision(currency) != 3
        return whole + fraction if thousands else f"{whole}.{fraction}"
    if _GROUPED_POINT.fullmatch(amount):
        return amount.replace(",", "")
    return amount


def _typed_amount(form: Mapping[str, str], name: str = "amount", currency: str = "currency") -> str:
    return typed_amount(form.get(name, ""), form.get(currency, "").strip().upper())


def expense_body(form: Mapping[str, str], *, partial: bool = False) -> dict[str, Any]:
    """The API body of an expense form. Empty optional fields are left out on create and
    cleared (null) on update; an emptied required field is sent empty, for the API to refuse
    next to it rather than the old value being kept unsaid."""
    body: dict[str, Any] = {}
    for name in ("description", "occurred_on", "currency"):
        if name in form or not partial:
            value = form.get(name, "").strip()
            body[name] = value.upper() if name == "currency" else value
    if "amount" in form or not partial:
        body["amount"] = _typed_amount(form)
    for name in ("merchant", "notes", "category_id"):
        value = form.get(name, "").strip()
        if value:
            body[name] = value
        elif partial:
            body[name] = None
    body["tags"] = _tags(form)
    if not body["tags"] and not partial:
        del body["tags"]
    if "charged_amount" in form:
        # What the bank took in the home currency: both fields, or (cleared) neither.
        charged = _typed_amount(form, "charged_amount", "charged_currency")
        if charged:
            body["charged_amount"] = charged
            body["charged_currency"] = form.get("charged_currency", "").strip().upper()
        elif partial:
            body["charged_amount"] = body["charged_currency"] = None
    return body


def _tags(form: Mapping[str, str]) -> list[str]:
    return [tag.strip() for tag in form.get("tags", "").split(",") if tag.strip()]


def budget_body(form: Mapping[str, str], *, thresholds: list[str] | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": form.get("name", "").strip(),
        "amount": _typed_amount(form),
        "currency": form.get("currency", "").strip().upper(),
        "category_id": form.get("category_id") or None,
        "rollover": form.get("rollover") == "on",
    }
    if thresholds is not None:  # as typed: what is no whole number is the API's to refuse
        body["thresholds"] = [
            int(value) if value.isdigit() else value for value in thresholds if value
        ]
    if form.get("starts", "").strip():
        body["starts"] = form["starts"].strip()
    if form.get("converted") == "on":
        body["converted"] = True
    return body


def budget_form(budget: Budget) -> dict[str, Any]:
    """A budget as its edit form shows it."""
    return {
        **budget,
        "thresholds": ", ".join(str(t) for t in budget["thresholds"]),
        "rollover": "on" if budget["rollover"] else "",
    }


async def reports(
    *, api: ApiClient, token: str, start: date, end: date, home: bool
) -> dict[str, Any]:
    if home:
        return await converted_reports(api=api, token=token, start=start, end=end)
    by_category, by_month, by_tag, trends, merchants, categories = await asyncio.gather(
        api.summary(token=token, start=start.isoformat(), end=end.isoformat(), group_by="category"),
        api.summary(token=token, start=start.isoformat(), end=end.isoformat(), group_by="month"),
        api.summary(token=token, start=start.isoformat(), end=end.isoformat(), group_by="tag"),
        api.trends(token=token, month=end.strftime("%Y-%m"), months=6),
        api.merchants(
            token=token, start=start.isoformat(), end=end.isoformat(), limit=TOP_MERCHANTS
        ),
        api.every(CATEGORIES, token=token),
    )
    months = (end.year * 12 + end.month) - (start.year * 12 + start.month) + 1
    return {
        "home_currency": None,
        "by_category": by_category["groups"],
        "by_tag": by_tag["groups"],
        "by_month": month_series(by_month["groups"], start=start.replace(day=1), months=months),
        "trends": trends,
        "merchants": merchants,
        "category_names": category_names(categories),
        "currencies": {
            "category": currencies_of(by_category["groups"]),
            "tag": currencies_of(by_tag["groups"]),
        },
        "totals": {
            "category": totals_by_currency(by_category["groups"]),
            "tag": totals_by_currency(by_tag["groups"]),
        },
    }


async def converted_reports(
    *, api: ApiClient, token: str, start: date, end: date
) -> dict[str, Any]:
    """The reports in the home currency, each total with how it was made."""
    first, last = start.isoformat(), end.isoformat()
    by_category, by_month, by_tag, trends, merchants = await asyncio.gather(
        api.converted_summary(token=token, start=first, end=last, group_by="category"),
        api.converted_summary(token=token, start=first, end=last, group_by="month"),
        api.converted_summary(token=token, start=first, end=last, group_by="tag"),
        api.converted_trends(token=token, month=end.strftime("%Y-%m"), months=6),
        api.converted_merchants(token=token, start=first, end=last, limit=TOP_MERCHANTS),
    )
    months = (end.year * 12 + end.month) - (start.year * 12 + start.month) + 1
    return {
        "home_currency": by_category["currency"],
        "total": by_category["total"],
        "by_category": by_category["groups"],
        "by_tag": by_tag["groups"],
        "by_month": converted_months(by_month["groups"], start=start.replace(day=1), months=months),
        "trends": trends,
        "merchants": merchants,
    }


def import_options(form: Mapping[str, str]) -> dict[str, str]:
    """The import's options as the API names them: the format chosen (none: let the API detect
    it) and QIF's options. An unknown choice is passed on: the API's 422 says what is allowed."""
    return {
        name: form[name].strip().upper() if name == "currency" else form[name].strip()
        for name in ("format", "currency", "date_order")
        if form.get(name, "").strip()
    }


def option_errors(problem: Mapping[str, Any]) -> dict[str, str]:
    """An import refusal's problems with the form's options (format, currency, date order),
    not with the file's rows, by option name."""
    errors: dict[str, str] = {}
    for error in problem.get("errors") or []:
        where = str(error.get("field", ""))
        if where.startswith("query."):
            errors.setdefault(where.removeprefix("query."), str(error.get("message", "invalid")))
    detail = str(problem.get("detail") or "")
    if not errors and "date_order" in detail:
        errors["date_order"] = detail
    if not errors and "currency option" in detail:
        errors["currency"] = detail
    return errors


def import_choices() -> dict[str, Any]:
    return {"formats": IMPORT_FORMATS, "date_orders": QIF_DATE_ORDERS}


def rate_filters(query: Mapping[str, str]) -> dict[str, str]:
    return {
        name: query[name].strip().upper()
        for name in ("base", "quote")
        if query.get(name, "").strip()
    }


def own_rate(form: Mapping[str, str]) -> dict[str, str]:
    """A rate form's day, pair and rate as the API's path and body take them."""
    return {
        "day": form.get("day", "").strip(),
        "base": form.get("base", "").strip().upper(),
        "quote": form.get("quote", "").strip().upper(),
        "rate": _typed_amount(form, "rate"),
    }


def home_currency(form: Mapping[str, str]) -> dict[str, str]:
    """The home currency form's choice as the API takes it."""
    return {"currency": form.get("currency", "").strip().upper()}


def rule_body(form: Mapping[str, str]) -> dict[str, Any]:
    """The API body of a rule form. An empty optional field is sent as null: a new rule leaves it
    unset, an edited one has it cleared."""
    currency = form.get("currency", "").strip().upper()
    return {
        "field": form.get("field", "any"),
        "match": form.get("match", "contains"),
        "pattern": form.get("pattern", ""),
        "tags": _tags(form),
        "currency": currency or None,
        "min_amount": _typed_amount(form, "min_amount") or None,
        "max_amount": _typed_amount(form, "max_amount") or None,
        "category_id": form.get("category_id") or None,
    }


def rule_form(rule: Rule) -> dict[str, str]:
    """A rule as its edit form shows it."""
    return {
        "field": rule["field"],
        "match": rule["match"],
        "pattern": rule["pattern"],
        "currency": rule["currency"] or "",
        "min_amount": rule["min_amount"] or "",
        "max_amount": rule["max_amount"] or "",
        "category_id": rule["category_id"] or "",
        "tags": ", ".join(rule["tags"]),
    }


async def move_rule(*, api: ApiClient, token: str, rule_id: str, direction: str) -> None:
    """Swaps a rule with its neighbour above or below. Positions are unique, so one of the two
    passes through a free position (after the last); each step leaves a valid order."""
    rules = await api.every(RULES, token=token)
    index = next((i for i, rule in enumerate(rules) if rule["id"] == rule_id), None)
    if index is None:
        raise ApiError(404, {"detail": "No such rule."})
    other = index - 1 if direction == "up" else index + 1
    if not 0 <= other < len(rules):
        return
    mine, theirs = rules[index], rules[other]
    free = max(rule["position"] for rule in rules) + 1
    await api.change(RULES, token=token, id=mine["id"], body={"position": free})
    await api.change(RULES, token=token, id=theirs["id"], body={"position": mine["position"]})
    await api.change(RULES, token=token, id=mine["id"], body={"position": theirs["position"]})


def pack_upload(content: bytes) -> str:
    """The uploaded file, carried by the preview page's confirm form: the web app keeps nothing."""
    return base64.b64encode(gzip.compress(content, compresslevel=6, mtime=0)).decode()


def unpack_upload(packed: str, *, limit: int) -> bytes | None:
    try:
        raw = base64.b64decode(packed.encode(), validate=True)
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as stream:
            content = stream.read(limit + 1)
    except (ValueError, OSError, EOFError):
        return None
    return content if len(content) <= limit else None


def new_form_key() -> str:
    """The Idempotency-Key a rendered form carries: submitting it twice creates one object."""
    return str(uuid.uuid4())
