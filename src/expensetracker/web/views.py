"""Rendering: the Jinja2 templates, money and dates in the reader's locale (Babel), the static
files under content-hashed names, and the pages shown for errors."""

from __future__ import annotations

import gzip
import hashlib
import math
import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from functools import lru_cache, partial
from importlib import resources
from typing import Any, NamedTuple

import structlog
from babel import Locale, UnknownLocaleError
from babel.dates import format_date
from babel.numbers import format_currency, format_decimal, format_percent
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from expensetracker.web.schemas import Category, Conversion, Expense

DEFAULT_LOCALE = Locale.parse("en_US")
# Security headers of every page (the platform adds nosniff, frame and referrer headers).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; object-src 'none'"
)
_COMPRESS_FROM_BYTES = 1024


@dataclass(frozen=True)
class Asset:
    name: str
    hashed_name: str
    content: bytes
    gzipped: bytes
    media_type: str


def _media_type(name: str) -> str:
    return {
        ".js": "text/javascript; charset=utf-8",
        ".css": "text/css; charset=utf-8",
        ".svg": "image/svg+xml",
    }[name[name.rfind(".") :]]


@lru_cache(maxsize=1)
def assets() -> dict[str, Asset]:
    """Every file of ``static/`` by its content-hashed name (``htmx.min.3f2a9c1b.js``): a new
    version is a new URL, so each can be cached for a year."""
    found: dict[str, Asset] = {}
    root = resources.files("expensetracker.web") / "static"
    for entry in root.iterdir():
        if not entry.is_file() or entry.name.endswith((".md", ".txt")):
            continue
        content = entry.read_bytes()
        digest = hashlib.sha256(content).hexdigest()[:12]
        stem, dot, suffix = entry.name.rpartition(".")
        hashed = f"{stem}.{digest}{dot}{suffix}"
        found[hashed] = Asset(
            name=entry.name,
            hashed_name=hashed,
            content=content,
            gzipped=gzip.compress(content, compresslevel=9, mtime=0),
            media_type=_media_type(entry.name),
        )
    return found


@lru_cache(maxsize=1)
def _static_urls() -> dict[str, str]:
    return {asset.name: f"/static/{asset.hashed_name}" for asset in assets().values()}


def static_url(name: str) -> str:
    return _static_urls()[name]


@lru_cache(maxsize=64)
def _locale(header: str) -> Locale:
    for part in header.split(","):
        tag = part.split(";")[0].strip()
        if not tag or tag == "*":
            continue
        try:
            return Locale.parse(tag, sep="-")
        except (ValueError, UnknownLocaleError):
            continue
    return DEFAULT_LOCALE


def request_locale(request: Request) -> Locale:
    return _locale(request.headers.get("accept-language", "")[:200])


# Formatted amounts, days and months are kept, escaped once: a page shows the same ones again
# (the same totals on each visit, the same days down a list), and Babel takes 10-30 us for each.
# They are kept by the locale's tag ("en_US"): a Locale object hashes in Python, 1 us a lookup.
@lru_cache(maxsize=16384)
def money(amount: str, currency: str, locale: str) -> Markup:
    """The API's exact decimal string in the reader's format; never rounded (the API already
    gives the currency's number of decimals)."""
    return escape(
        format_currency(Decimal(amount), currency, locale=locale, decimal_quantization=False)
    )


def number(value: Decimal | int | str, locale: Locale) -> str:
    return format_decimal(Decimal(value), locale=locale, decimal_quantization=False)


def percent(value: float, locale: Locale, *, signed: bool = False) -> str:
    """A whole percent in the reader's format ("61,790%", "61.790 %"); ``signed`` marks a rise
    with a plus, as a fall has its minus."""
    text = format_percent(Decimal(str(value)) / 100, locale=locale)
    return f"+{text}" if signed and value > 0 else text


def used_percent(spent: str, available: str, *, over: bool) -> int:
    """The whole percent of ``available`` spent, rounded towards the budget's state: down while
    it is within its limit, up once over it, so 99.6 % never reads "100%" beside "On track" nor
    100.4 % "100%" beside "Over budget". Exact, from the amounts: the API's percent has one
    decimal, and 99.96 % is 100.0 there."""
    exact = Decimal(spent) * 100 / Decimal(available)
    return math.ceil(exact) if over else math.floor(exact)


@lru_cache(maxsize=4096)
def day(value: str | date, locale: str) -> Markup:
    parsed = value if isinstance(value, date) else date.fromisoformat(value)
    return escape(format_date(parsed, format="medium", locale=locale))


@lru_cache(maxsize=1024)
def month_name(value: str, locale: str) -> str:
    return format_date(date.fromisoformat(value + "-01"), format="MMM yyyy", locale=locale)


_NO_CATEGORY = Markup("—")


class ExpenseRow(NamedTuple):
    """An expense as its row in the list shows it, every value escaped for HTML already."""

    id: Markup
    day: Markup
    description: Markup
    merchant: Markup
    category: Markup
    tags: list[Markup]
    amount: Markup
    charged: Markup | None


def expense_rows(
    expenses: list[Expense],
    category_names: dict[str, str],
    *,
    csrf_token: str,
    back: str,
    updated: bool,
    locale: str,
) -> Markup:
    """The rows of the expense list (``_expense_row.html``). Each is rendered once for
    everything it shows, which is its key, as Rails caches a collection's rows: a list shows the
    same rows again on every visit and after every add, and rendering them was an eighth of the
    web process's CPU for the list (docs/performance.md). A changed expense, category name,
    locale, form token or list position is a new key, so no row is ever shown stale."""
    csrf, place = escape(csrf_token), escape(back)
    return Markup("").join(
        [
            _expense_row(
                expense["id"],
                expense["occurred_on"],
                expense["description"],
                expense["merchant"],
                category_names.get(expense["category_id"] or ""),
                tuple(expense["tags"]),
                expense["amount"],
                expense["currency"],
                expense["charged_amount"],
                expense["charged_currency"],
                csrf,
                place,
                updated,
                locale,
            )
            for expense in expenses
        ]
    )


# About 3 KB a row with its key (tracemalloc): 40 pages of the list, 6 MiB at most.
@lru_cache(maxsize=2048)
def _expense_row(
    id: str,
    occurred_on: str,
    description: str,
    merchant: str | None,
    category: str | None,
    tags: tuple[str, ...],
    amount: str,
    currency: str,
    charged_amount: str | None,
    charged_currency: str | None,
    csrf: Markup,
    back: Markup,
    updated: bool,
    locale: str,
) -> Markup:
    """One row, from what it shows: every argument is part of the cache's key."""
    row = ExpenseRow(
        id=escape(id),
        day=day(occurred_on, locale),
        description=escape(description),
        # A merchant that only repeats the description (a bank's payee is often both) is not
        # shown twice, as in the import's preview.
        merchant=escape("" if merchant in (None, description) else merchant),
        category=_NO_CATEGORY if category is None else escape(category),
        tags=[escape(tag) for tag in tags],
        amount=money(amount, currency, locale),
        charged=(
            money(charged_amount, charged_currency, locale)
            if charged_amount and charged_currency
            else None
        ),
    )
    macro = templates.get_template("_expense_row.html").module.expense_row  # type: ignore[attr-defined]
    return Markup(macro(row, csrf, back, updated))  # noqa: S704 (every value escaped above)


def made_of(conversion: Conversion, currency: str, *, locale: str) -> str:
    """How a converted total was made, in words: never a guessed rate."""
    parts = []
    if conversion["in_currency"]:
        parts.append(f"{conversion['in_currency']} already in {currency}")
    if conversion["charged"]:
        parts.append(f"{conversion['charged']} at the amount charged")
    if conversion["rated"]:
        oldest = conversion["oldest_rate_day"]
        parts.append(
            f"{conversion['rated']} at an exchange rate"
            + (f" (oldest {day(oldest, locale)})" if oldest else "")
        )
    if conversion["missing"]:
        parts.append(f"{conversion['missing']} without a rate, not included")
    return "; ".join(parts) or "no expenses"


# A category as the filter form shows it: its id and name, and its subcategories'.
_Choice = tuple[str, str, tuple[tuple[str, str], ...]]


def filter_form(
    filters: dict[str, str],
    errors: dict[str, str],
    categories: list[tuple[Category, list[Category]]],
) -> Markup:
    """The expense list's filter form (``_expense_filters.html``). Its eight macro calls were a
    tenth of the web process's CPU under the benchmark, and a person's form changes only with
    their filters, their problems and their categories: it is rendered once for each such set,
    and its key is everything it shows, so that no one's form is anyone else's."""
    choices = tuple(
        (parent["id"], parent["name"], tuple((child["id"], child["name"]) for child in children))
        for parent, children in categories
    )
    return _filter_form(tuple(filters.items()), tuple(errors.items()), choices)


@lru_cache(maxsize=1024)
def _filter_form(
    filters: tuple[tuple[str, str], ...],
    errors: tuple[tuple[str, str], ...],
    choices: tuple[_Choice, ...],
) -> Markup:
    categories = [
        ({"id": id, "name": name}, [{"id": cid, "name": cname} for cid, cname in children])
        for id, name, children in choices
    ]
    form = templates.get_template("_expense_filters.html")
    rendered = form.render(filters=dict(filters), errors=dict(errors), categories=categories)
    return Markup(rendered)  # noqa: S704 (the template escaped every value in it)


# What the field macros render next to a field with a problem, and the field's label.
_FIELD_PROBLEM = re.compile(r'<p class="error" id="([^"]+)-error">(.*?)</p>', re.DOTALL)
_LABEL = r'<label for="{}">(.*?)</label>'


def field_problems(form: Markup) -> list[tuple[str, str, Markup]]:
    """The id, label and problem of each field marked refused in a rendered form, in its order:
    the error summary links to exactly what is said next to the fields, whichever macro or
    template drew them."""
    problems = []
    for id, message in _FIELD_PROBLEM.findall(form):
        label = re.search(_LABEL.format(re.escape(id)), form, re.DOTALL)
        name = Markup(label.group(1)).striptags() if label else ""  # noqa: S704 (rendered, escaped)
        problems.append((id, name, Markup(message)))  # noqa: S704 (the template escaped it)
    return problems


templates = Environment(
    loader=PackageLoader("expensetracker.web", "templates"),
    autoescape=select_autoescape(default=True),
    trim_blocks=True,
    lstrip_blocks=True,
    # Templates ship with the package: no file check on every include.
    auto_reload=False,
)
templates.globals["static_url"] = static_url
templates.globals["used_percent"] = used_percent
templates.globals["filter_form"] = filter_form
templates.filters["field_problems"] = field_problems


def _wants_gzip(request: Request) -> bool:
    return "gzip" in request.headers.get("accept-encoding", "")


def html(request: Request, body: str, *, status: int = 200) -> Response:
    content = body.encode()
    headers = {
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "Cache-Control": "no-store",
        "Vary": "Accept-Encoding, HX-Request, Cookie",
    }
    if len(content) >= _COMPRESS_FROM_BYTES and _wants_gzip(request):
        # The fastest level: most of the gain, a fraction of the time of the default.
        content = gzip.compress(content, compresslevel=1)
        headers["Content-Encoding"] = "gzip"
    return HTMLResponse(content, status_code=status, headers=headers)


def render(
    request: Request, template: str, context: dict[str, Any], *, status: int = 200
) -> Response:
    locale = request_locale(request)
    tag = str(locale)
    body = templates.get_template(template).render(
        request=request,
        locale=locale,
        lang=locale.language,
        money=partial(money, locale=tag),
        number=partial(number, locale=locale),
        percent=partial(percent, locale=locale),
        day=partial(day, locale=tag),
        made_of=partial(made_of, locale=tag),
        month_name=partial(month_name, locale=tag),
        expense_rows=partial(expense_rows, locale=tag),
        **context,
    )
    return html(request, body, status=status)


_TITLES = {
    400: "This request could not be understood",
    403: "This request was refused",
    404: "Page not found",
    405: "This page does not accept that",
    413: "That file is too large",
    422: "This page cannot show that",
    429: "Too many requests",
    503: "ExpenseTracker is not available right now",
}


def error_page(
    request: Request, status: int, detail: str | None, *, upload_page: str | None = None
) -> Response:
    """A friendly page with the request id, never a stack trace; ``upload_page``, where a file
    too large can be chosen again."""
    context = structlog.contextvars.get_contextvars()
    return render(
        request,
        "error.html",
        {
            "status": status,
            "title": _TITLES.get(status, "Something went wrong"),
            "detail": detail,
            "request_id": context.get("request_id", ""),
            "upload_page": upload_page,
            "account": None,
            "csrf_token": "",
        },
        status=status,
    )
