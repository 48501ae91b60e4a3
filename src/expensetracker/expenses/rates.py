"""Exchange rates and each user's home currency, kept by the expenses service and published to
reports through ``expenses.rates_v1`` and ``expenses.home_currencies_v1`` (migration 0011).

A rate says 1 ``base`` = ``rate`` ``quote`` on a day. It comes from a provider (for everyone):
the European Central Bank's reference-rate XML file, or a Frankfurter-compatible HTTP API; or
from a user (theirs alone). Rates are decimals from the text they were written in, never floats:
Frankfurter's JSON numbers are read as decimals too. A provider that is down only leaves rates
missing: nothing that writes an expense waits for one.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Literal

import asyncpg
import httpx
import structlog
from defusedxml import ElementTree
from defusedxml.common import DefusedXmlException

from expensetracker.expenses.owners import ensure_owner
from expensetracker.platform import money
from expensetracker.platform.config import Settings
from expensetracker.platform.db import DriverPool
from expensetracker.platform.errors import NotFound, Problem
from expensetracker.platform.pagination import PageRequest, decode_cursor, json_page

log = structlog.get_logger(__name__)

Source = Literal["ecb", "frankfurter", "user"]
# A rate as written: up to 12 digits before the point and 12 after, ASCII only.
_RATE = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,12})?", re.ASCII)
# A provider's answer larger than this is not a rate file (the ECB's full history is ~15 MiB).
MAX_DOCUMENT_BYTES = 32 * 1024 * 1024
FETCH_TIMEOUT_SECONDS = 30.0
_ECB_NAMESPACE = "{http://www.ecb.int/vocabulary/2002-08-01/eurofxref}"


class InvalidRates(Problem):
    status = 422
    type_ = "urn:expensetracker:problem:invalid-rates"
    title = "Invalid rates"


@dataclass(frozen=True)
class Rate:
    day: date
    base: str
    quote: str
    rate: Decimal


def parse_rate(text: str) -> Decimal:
    """``"1.0832"`` -> Decimal; a positive decimal string or ValueError."""
    if not _RATE.fullmatch(text):
        if text.startswith("-") and _RATE.fullmatch(text[1:]):
            raise ValueError("must be greater than zero")
        raise ValueError(
            'must be a decimal string such as "1.0832", up to 12 digits each side of the point'
        )
    rate = Decimal(text)
    if rate <= 0:
        raise ValueError("must be greater than zero")
    return rate


def _known(currency: str) -> bool:
    try:
        money.exponent(currency)
    except ValueError:
        return False
    return True


def _rates(day: date, base: str, quoted: Iterable[tuple[str, str]]) -> list[Rate]:
    """The rates of one day; a currency without an ISO 4217 minor unit is left out (no expense
    can be in it), a malformed rate refuses the whole document."""
    rates = []
    for quote, text in quoted:
        try:
            rate = parse_rate(text)
        except ValueError as exc:
            raise InvalidRates(f"{day} {base}/{quote}: the rate {exc}.") from None
        if quote != base and _known(quote):
            rates.append(Rate(day, base, quote, rate))
    return rates


def _day(text: str | None) -> date:
    try:
        return date.fromisoformat(text or "")
    except ValueError:
        raise InvalidRates(f"Not a day: {text!r}.") from None


def parse_ecb(document: bytes) -> list[Rate]:
    """The ECB's eurofxref XML (daily, 90-day or full history): ``<Cube time=...>`` per day,
    ``<Cube currency=... rate=...>`` per currency, each 1 EUR in it. Parsed without entities
    or external references (defusedxml): such a file is refused."""
    try:
        root = ElementTree.fromstring(document, forbid_dtd=True)
    except (ElementTree.ParseError, DefusedXmlException) as exc:
        raise InvalidRates(f"Not a rate file of the ECB's format: {exc}.") from None
    days = [cube for cube in root.iter(f"{_ECB_NAMESPACE}Cube") if "time" in cube.attrib]
    if not days:
        raise InvalidRates("Not a rate file of the ECB's format: no day found.")
    rates = []
    for cube in days:
        quoted = [(c.get("currency", ""), c.get("rate", "")) for c in cube]
        rates += _rates(_day(cube.get("time")), "EUR", quoted)
    return rates


def parse_frankfurter(document: bytes) -> list[Rate]:
    """A Frankfurter answer: ``/latest`` (``{"base", "date", "rates": {code: rate}}``) or a time
    series (``{"base", "rates": {day: {code: rate}}}``). Numbers are read as decimals."""
    try:
        answer = json.loads(document, parse_float=str, parse_int=str)
        base, rates = answer["base"], answer["rates"]
        per_day = {answer["date"]: rates} if "date" in answer else rates
        if not (isinstance(base, str) and _known(base) and isinstance(per_day, dict)):
            raise TypeError(base)
        return [
            rate
            for day, quoted in per_day.items()
            for rate in _rates(_day(day), base, quoted.items())
        ]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InvalidRates(f"Not a Frankfurter answer: {type(exc).__name__}.") from None


_STORE = """
INSERT INTO expenses.rates AS r (user_id, day, base, quote, rate, source)
SELECT $1, * , $6 FROM unnest($2::date[], $3::text[], $4::text[], $5::numeric[])
ON CONFLICT ON CONSTRAINT rates_key DO UPDATE SET rate = excluded.rate
"""


async def store(
    connection: asyncpg.Connection,
    rates: list[Rate],
    *,
    source: Source,
    user_id: uuid.UUID | None = None,
) -> int:
    """Adds the rates, replacing those of the same day, pair and source: one statement, so a
    document is kept whole or not at all."""
    await connection.execute(
        _STORE,
        user_id,
        [r.day for r in rates],
        [r.base for r in rates],
        [r.quote for r in rates],
        [r.rate for r in rates],
        source,
    )
    return len(rates)


async def download(client: httpx.AsyncClient, url: str) -> bytes:
    """The document at ``url``, refused past MAX_DOCUMENT_BYTES."""
    async with client.stream("GET", url, timeout=FETCH_TIMEOUT_SECONDS) as response:
        response.raise_for_status()
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > MAX_DOCUMENT_BYTES:
                raise InvalidRates(f"{url} answered more than {MAX_DOCUMENT_BYTES} bytes.")
        return bytes(body)


async def load_ecb(connection: asyncpg.Connection, location: str) -> int:
    """An ECB file, from a path or an http(s) URL; the number of rates kept."""
    if location.startswith(("http://", "https://")):
        async with httpx.AsyncClient(follow_redirects=True) as client:
            document = await download(client, location)
    elif "://" in location:
        raise InvalidRates("Only http:// and https:// URLs are fetched; a path is read as a file.")
    else:
        document = await asyncio.to_thread(Path(location).read_bytes)
    return await store(connection, parse_ecb(document), source="ecb")


async def refresh_providers(pool: DriverPool, settings: Settings) -> int:
    """The background job: every configured provider's latest rates. A provider that fails is
    logged and tried again at the next turn; the others are still kept."""
    providers: list[tuple[Source, str, Callable[[bytes], list[Rate]]]] = []
    if settings.rates_ecb_url:
        providers.append(("ecb", settings.rates_ecb_url, parse_ecb))
    if settings.rates_frankfurter_url:
        url = settings.rates_frankfurter_url.rstrip("/") + "/latest"
        providers.append(("frankfurter", url, parse_frankfurter))
    kept = 0
    async with httpx.AsyncClient(follow_redirects=True) as client:
        for source, url, parse in providers:
            try:
                rates = parse(await download(client, url))
                async with pool.connection() as connection:
                    kept += await store(connection, rates, source=source)
            except (httpx.HTTPError, InvalidRates, OSError) as exc:
                log.warning("rates_fetch_failed", source=source, error=str(exc))
    return kept


# --- the home currency -------------------------------------------------------------------------


async def home_currency(connection: asyncpg.Connection, *, user_id: uuid.UUID) -> str | None:
    return await connection.fetchval(
        "SELECT home_currency FROM expenses.owners WHERE user_id = $1", user_id
    )


async def set_home_currency(
    connection: asyncpg.Connection, *, user_id: uuid.UUID, currency: str
) -> None:
    async with connection.transaction():
        await ensure_owner(connection, user_id=user_id)
        await connection.execute(
            "UPDATE expenses.owners SET home_currency = $2 WHERE user_id = $1", user_id, currency
        )


# --- rates entered by a user -------------------------------------------------------------------

_RATE_JSON = (
    "json_build_object('day', day, 'base', base, 'quote', quote, 'rate', rate::text, "
    "'source', source)::text"
)
# Newest first; on one day by pair, then the user's own before a provider's ("user" sorts last).
_AFTER = (
    " AND (day < $5 OR (day = $5 AND (base, quote) > ($6, $7)) "
    "OR (day = $5 AND (base, quote) = ($6, $7) AND source < $8))"
)
_RATES, _RATES_AFTER = (
    f"SELECT {_RATE_JSON}, day, base, quote, source FROM expenses.rates "  # noqa: S608
    "WHERE (user_id = $1 OR user_id IS NULL) AND base = coalesce($2, base) "
    f"AND quote = coalesce($3, quote){after} "
    "ORDER BY day DESC, base, quote, source DESC LIMIT $4"
    for after in ("", _AFTER)
)


async def list_rates(
    connection: asyncpg.Connection,
    *,
    user_id: uuid.UUID,
    base: str | None,
    quote: str | None,
    paging: PageRequest,
) -> str:
    """The rates the user sees (the providers' and their own) as Page JSON."""
    limit = paging.limit
    after = decode_cursor(
        paging.cursor, list_name="rates", types=(date.fromisoformat, str, str, str)
    )
    sql = _RATES if after is None else _RATES_AFTER
    rows = await connection.fetch(sql, user_id, base, quote, limit + 1, *(after or ()))
    last = rows[limit - 1] if len(rows) > limit else None
    return json_page(
        [row[0] for row in rows[:limit]],
        list_name="rates",
        next_key=[last[1].isoformat(), *last[2:]] if last is not None else None,
    )


async def put_rate(
    connection: asyncpg.Connection,
    *,
    user_id: uuid.UUID,
    day: date,
    base: str,
    quote: str,
    rate: Decimal,
) -> None:
    async with connection.transaction():
        await ensure_owner(connection, user_id=user_id)
        await store(connection, [Rate(day, base, quote, rate)], source="user", user_id=user_id)


async def delete_rate(
    connection: asyncpg.Connection, *, user_id: uuid.UUID, day: date, base: str, quote: str
) -> None:
    deleted = await connection.execute(
        "DELETE FROM expenses.rates WHERE user_id = $1 AND day = $2 AND base = $3 "
        "AND quote = $4 AND source = 'user'",
        user_id,
        day,
        base,
        quote,
    )
    if deleted != "DELETE 1":
        raise NotFound("No rate of yours for this day and pair.")
