"""Base classes and field types of request and response bodies, shared by every service."""

import re
import unicodedata
from datetime import date, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)
from starlette.responses import Response

from expensetracker.platform import money

# A route that answers 204 with no body: `@router.delete(path, **NO_CONTENT)`.
NO_CONTENT: dict[str, Any] = {"status_code": 204, "response_class": Response}

_SURROGATE = re.compile("[\ud800-\udfff]")


def check_text(value: str) -> str:
    """Text PostgreSQL can store: no NUL (text columns refuse it) and no lone surrogate (UTF-8
    cannot encode one). The one rule for bodies, query parameters, CSV cells and cursors, so that
    such input is a 422 and never a database error."""
    if "\x00" in value:
        raise ValueError("must not contain the NUL character")
    if _SURROGATE.search(value):
        raise ValueError("must be valid Unicode (a lone surrogate is not)")
    return value


# The rule as annotation metadata, placed after a field's own constraints (length limits and
# stripping apply first): `Annotated[str, Field(max_length=50), TEXT]`.
TEXT = AfterValidator(check_text)
# Every free-text field and parameter without other constraints.
SafeText = Annotated[str, TEXT]

# Controls, format characters (zero-width space, direction marks) and line separators: nothing
# shows of them.
_INVISIBLE = frozenset({"Cc", "Cf", "Zl", "Zp"})
# Zero-width (non-)joiners are part of emoji sequences and of words in some scripts: allowed
# between two characters.
_JOINERS = "\u200c\u200d"


def check_name(value: str) -> str:
    """A name as it is shown and compared (a category, a tag, a budget): composed (NFC), each
    run of spaces one space, and nothing invisible in it, so that two names that look the same
    are the same name."""
    value = " ".join(unicodedata.normalize("NFC", value).split())
    last = len(value) - 1
    for index, char in enumerate(value):
        if unicodedata.category(char) in _INVISIBLE and not (char in _JOINERS and 0 < index < last):
            raise ValueError(f"must not contain an invisible character (U+{ord(char):04X} here)")
    return value


# The rule as annotation metadata, after TEXT: `Annotated[str, StringConstraints(...), TEXT, NAME]`.
NAME = AfterValidator(check_name)

# Days and months a request may name: wide enough for any real expense or report, narrow enough
# that month arithmetic around them never leaves what Python and PostgreSQL can represent.
EARLIEST_DAY = date(1900, 1, 1)
LATEST_DAY = date(2999, 12, 31)


# What a day that is no date is told, by the API's checks and an import's rows alike.
NOT_A_DAY = 'must be a real calendar date, such as "2026-03-01"'


# YYYY-MM-DD with ASCII digits, the whole string (no trailing newline).
DAY_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"


def check_day_alone(value: object) -> object:
    """A day as the API writes one, checked before pydantic reads it: pydantic also takes a
    datetime at midnight ("2026-03-01T00:00:00", in any time zone) or a Unix timestamp and
    keeps its date alone, silently dropping a time or zone the client meant. A date object
    (from our own code) passes; a datetime, a date too to Python, does not."""
    if isinstance(value, str) and re.fullmatch(DAY_PATTERN, value):
        return value
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    raise ValueError('must be a date as YYYY-MM-DD, such as "2026-03-01", without a time')


# The rule as annotation metadata, before a date's own checks: `Annotated[date, DAY_ALONE, ...]`.
DAY_ALONE = BeforeValidator(check_day_alone)


def check_day(value: date) -> date:
    if not EARLIEST_DAY <= value <= LATEST_DAY:
        raise ValueError(f"must be between {EARLIEST_DAY} and {LATEST_DAY}")
    return value


# YYYY-MM with ASCII digits, the whole string (no trailing newline).
MONTH_PATTERN = r"^[0-9]{4}-(0[1-9]|1[0-2])$"


def check_month(value: str) -> str:
    if not re.fullmatch(MONTH_PATTERN, value):
        raise ValueError('must be a month as YYYY-MM, such as "2026-03"')
    if not EARLIEST_DAY.year <= int(value[:4]) <= LATEST_DAY.year:
        raise ValueError(f"must be between {EARLIEST_DAY.year}-01 and {LATEST_DAY.year}-12")
    return value


Day = Annotated[date, DAY_ALONE, AfterValidator(check_day)]
# The pattern stays in the API's schema; the check says what a month is in words.
Month = Annotated[
    str, Field(json_schema_extra={"pattern": MONTH_PATTERN}), AfterValidator(check_month)
]


class StrictModel(BaseModel):
    """Unknown fields are a 422: a client can never set what the API does not name."""

    model_config = ConfigDict(extra="forbid")


def _currency(value: str) -> str:
    money.exponent(value)  # raises ValueError with the reason
    return value


# The length stays in the API's schema; the check says what a currency is in words.
Currency = Annotated[
    str, Field(json_schema_extra={"minLength": 3, "maxLength": 3}), AfterValidator(_currency)
]
Amount = Annotated[str, Field(max_length=30, examples=["12.34"]), TEXT]


class PricedModel(StrictModel):
    """A body with an amount in a currency: the amount must fit the currency's decimals."""

    # `currency` before `amount`: validated first, so the amount can be checked against it.
    currency: Currency
    amount: Amount

    @field_validator("amount")
    @classmethod
    def _amount_fits_currency(cls, value: str, info: ValidationInfo) -> str:
        if "currency" in info.data:
            money.parse_amount(value, info.data["currency"])
        return value


class JsonDocument(Response):
    """A body whose JSON PostgreSQL already wrote (in the shape of the route's response model):
    passed on as it is, neither parsed nor validated again. The model's tests check the shape."""

    media_type = "application/json"
