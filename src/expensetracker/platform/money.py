"""Money: integers in minor units inside, decimal strings outside, never floats.

The number of decimals of each currency comes from ISO 4217 (the ``iso4217`` package's bundled
table): JPY 0, EUR 2, KWD 3. Funds, metals and test codes have no minor unit and are refused.
"""

from __future__ import annotations

import re
from decimal import Decimal
from functools import cache

from iso4217 import Currency

# No single expense reaches a billion units of any currency; more is a typo or an attack.
MAX_MAJOR_UNITS = 10**9
# ASCII digits only, matched against the whole string (fullmatch): `\d` would take Arabic-Indic
# or full-width digits and `$` a trailing newline.
_AMOUNT = re.compile(r"([0-9]{1,13})(?:\.([0-9]{1,6}))?", re.ASCII)
# A decimal string with more whole digits than any amount has: too large, not malformed.
_TOO_MANY_DIGITS = re.compile(r"[0-9]{14,}(?:\.[0-9]+)?", re.ASCII)
_CODE = re.compile(r"[A-Z]{3}", re.ASCII)


@cache
def _exponents() -> dict[str, int]:
    return {c.code: c.exponent for c in Currency if c.exponent is not None}


def exponent(currency: str) -> int:
    """Decimals of ``currency``; ValueError when it is not an ISO 4217 currency with a minor unit
    (codes are upper case: ``eur`` is refused, not guessed)."""
    if not _CODE.fullmatch(currency) or currency not in _exponents():
        # The value is not repeated: a refusal never echoes what was sent.
        raise ValueError("must be an ISO 4217 currency code in capitals, such as EUR or JPY")
    return _exponents()[currency]


def parse_amount(amount: str, currency: str) -> int:
    """``"12.34"`` in EUR -> 1234. Positive, at most the currency's decimals, below the cap."""
    match = _AMOUNT.fullmatch(amount)
    if match is None:
        if amount.startswith("-") and _AMOUNT.fullmatch(amount[1:]):
            raise ValueError("amount must be greater than zero")
        if _TOO_MANY_DIGITS.fullmatch(amount):
            raise ValueError(f"amount must be below {MAX_MAJOR_UNITS:,}")
        raise ValueError('amount must be a decimal string such as "12.34"')
    decimals = exponent(currency)
    whole, fraction = match.group(1), match.group(2) or ""
    if len(fraction) > decimals:
        raise _too_many_decimals(currency, decimals)
    minor = int(whole + fraction.ljust(decimals, "0"))
    if minor <= 0:
        raise ValueError("amount must be greater than zero")
    if minor >= MAX_MAJOR_UNITS * 10**decimals:
        raise ValueError(f"amount must be below {MAX_MAJOR_UNITS:,} {currency}")
    return minor


def _too_many_decimals(currency: str, decimals: int) -> ValueError:
    allowed = {0: "no decimals", 1: "at most 1 decimal"}.get(
        decimals, f"at most {decimals} decimals"
    )
    return ValueError(f"{currency} amounts have {allowed}")


def stored(amount: str, currency: str) -> dict[str, int | str]:
    """The columns every table with money keeps: minor units, currency and its decimals."""
    return {
        "amount_minor": parse_amount(amount, currency),
        "currency": currency,
        "currency_exponent": exponent(currency),
    }


def rescale(minor: int, currency: str, new_currency: str) -> int:
    """The same amount in another currency's minor units: 500 EUR (5.00) -> 5 JPY, 500 EUR ->
    5000 KWD (5.000); ValueError when it has more decimals than ``new_currency`` has (5.50 EUR
    in JPY), never rounded."""
    decimals, new_decimals = exponent(currency), exponent(new_currency)
    scale: int = 10 ** abs(new_decimals - decimals)
    if new_decimals >= decimals:
        return minor * scale
    whole, rest = divmod(minor, scale)
    if rest:
        raise _too_many_decimals(new_currency, new_decimals)
    return whole


def parse_bound(amount: str) -> Decimal:
    """A filter bound (``min_amount``): a non-negative decimal string, any decimals."""
    if _AMOUNT.fullmatch(amount) is None:
        raise ValueError('must be a decimal string such as "12.34"')
    return Decimal(amount)


def format_amount(minor: int, currency: str) -> str:
    """1234 in EUR -> ``"12.34"``; 1234 in JPY -> ``"1234"``."""
    decimals = exponent(currency)
    sign = "-" if minor < 0 else ""
    digits = str(abs(minor)).rjust(decimals + 1, "0")
    if decimals == 0:
        return sign + digits
    return f"{sign}{digits[:-decimals]}.{digits[-decimals:]}"
