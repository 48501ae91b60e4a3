"""Request and response bodies of the expenses service."""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from expensetracker.platform import money
from expensetracker.platform.schemas import (
    DAY_ALONE,
    NAME,
    TEXT,
    Amount,
    Currency,
    Day,
    PricedModel,
    StrictModel,
)

EARLIEST_DATE = date(1970, 1, 1)
# Planned expenses may lie ahead, but not beyond a year.
FUTURE_DAYS = 366
# A recurring expense may start at most this long ago: its past occurrences are created at once,
# and a rule from 1970 made hundreds of expenses in one request.
RECURRING_PAST_DAYS = 366


def _within_range(value: date) -> date:
    latest = date.today() + timedelta(days=FUTURE_DAYS)
    if not EARLIEST_DATE <= value <= latest:
        raise ValueError(f"must be between {EARLIEST_DATE} and {latest}")
    return value


# The longest each field may be, here and in the CSV import's checks (transfer.py).
NAME_MAX = 50
DESCRIPTION_MAX = 200
NOTES_MAX = 2000
MERCHANT_MAX = 100
TAGS_MAX = 20

# Stripped before the length check: "  " is no name.
Name = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=NAME_MAX), TEXT, NAME
]
OccurredOn = Annotated[date, DAY_ALONE, AfterValidator(_within_range)]


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be only spaces")
    return value


# Not stripped, as an import keeps it; but blank is no description (an import refuses it too).
Description = Annotated[
    str, Field(min_length=1, max_length=DESCRIPTION_MAX), TEXT, AfterValidator(_not_blank)
]
Notes = Annotated[str, Field(max_length=NOTES_MAX), TEXT]
Merchant = Annotated[str, Field(min_length=1, max_length=MERCHANT_MAX), TEXT]
# What separates tags in a CSV cell and in the import's statements; the web's form separates them
# with commas. No tag name holds either, so that a name reads the same whichever way it came in.
TAG_SEPARATOR = ";"


def check_tag_name(value: str) -> str:
    """A name (checked as check_name does) that is one tag's."""
    if TAG_SEPARATOR in value or "," in value:
        raise ValueError("must not contain ';' or ',', which separate tags")
    return value


TagName = Annotated[Name, AfterValidator(check_tag_name)]
# Names differing only in case are one tag: PostgreSQL's lower() decides (service.set_tags), so
# that Python and the database never disagree about which names are the same.
TagNames = Annotated[list[TagName], Field(max_length=TAGS_MAX)]


class CategoryCreate(StrictModel):
    name: Name
    parent_id: uuid.UUID | None = None


class CategoryUpdate(StrictModel):
    name: Name | None = None
    parent_id: uuid.UUID | None = None


class CategoryOut(StrictModel):
    id: uuid.UUID
    name: str
    parent_id: uuid.UUID | None
    created_at: datetime


class TagOut(StrictModel):
    id: uuid.UUID
    name: str


class Charged(StrictModel):
    """What the bank actually took, in the home currency: given together, or not at all."""

    # `charged_currency` before `charged_amount`: validated first, so that an amount that does
    # not fit it is refused as the amount's own fault, by name (as PricedModel does).
    charged_currency: Currency | None = None
    # Checked when left out too, so that one sent without the other is refused by name.
    charged_amount: Amount | None = Field(
        default=None,
        validate_default=True,
        description="Beats any exchange rate in reports converted to it.",
    )

    @field_validator("charged_amount")
    @classmethod
    def _charged_fits_currency(cls, value: str | None, info: ValidationInfo) -> str | None:
        if "charged_currency" not in info.data:
            return value  # its currency was refused, by name
        currency = info.data["charged_currency"]
        if (value is None) != (currency is None):
            # Named as an import names it: the charged amount is what the pair gives.
            raise ValueError("charged_amount and charged_currency go together")
        if value is not None:
            money.parse_amount(value, currency)
        return value


class ExpenseCreate(PricedModel, Charged):
    occurred_on: OccurredOn
    description: Description
    notes: Notes | None = None
    merchant: Merchant | None = None
    category_id: uuid.UUID | None = None
    tags: TagNames = Field(default_factory=list)


class RecurringCreate(PricedModel):
    description: Description
    notes: Notes | None = None
    merchant: Merchant | None = None
    category_id: uuid.UUID | None = None
    tags: TagNames = Field(default_factory=list)
    frequency: Literal["weekly", "monthly", "yearly"]
    starts_on: OccurredOn
    ends_on: OccurredOn | None = None

    @field_validator("starts_on")
    @classmethod
    def _starts_recently(cls, value: date) -> date:
        earliest = date.today() - timedelta(days=RECURRING_PAST_DAYS)
        if value < earliest:
            raise ValueError(f"must not be before {earliest} ({RECURRING_PAST_DAYS} days ago)")
        return value

    @field_validator("ends_on")
    @classmethod
    def _ends_after_start(cls, value: date | None, info: ValidationInfo) -> date | None:
        if value is not None and "starts_on" in info.data and value < info.data["starts_on"]:
            raise ValueError("must not be before the first date")
        return value


class RecurringOut(StrictModel):
    id: uuid.UUID
    amount: str
    currency: str
    description: str
    notes: str | None
    merchant: str | None
    category_id: uuid.UUID | None
    tags: list[str]
    frequency: str
    starts_on: date
    ends_on: date | None
    next_due_on: date | None = Field(description="null once the rule has ended")
    created_at: datetime


class ExpenseUpdate(Charged):
    """Only the fields sent change; ``null`` clears an optional field (the charged amount: both
    of its fields, sent together)."""

    currency: Currency | None = Field(
        default=None,
        description="Sent alone, the stored amount is kept in it (a 422 when it cannot hold it).",
    )
    amount: Amount | None = Field(
        default=None, description="Sent alone, it is read in the stored currency."
    )
    occurred_on: OccurredOn | None = None
    description: Description | None = None
    notes: Notes | None = None
    merchant: Merchant | None = None
    category_id: uuid.UUID | None = Field(default=None, description="null: uncategorised.")
    tags: TagNames | None = Field(default=None, description="Replaces them all; [] removes them.")


class ExpenseOut(StrictModel):
    id: uuid.UUID
    amount: str
    currency: str
    occurred_on: date
    description: str
    notes: str | None
    merchant: str | None
    category_id: uuid.UUID | None
    tags: list[str]
    charged_amount: str | None
    charged_currency: str | None
    created_at: datetime
    updated_at: datetime


# Import formats: a CSV file (the export's) or a bank statement (statements.py).
ImportFormat = Literal["csv", "ofx", "camt053", "mt940", "qif"]
# QIF's dates: day first or month first.
DateOrder = Literal["dmy", "mdy"]


# A dry run lists at most this many rows of each kind: the first ones in the file.
PREVIEW_ROWS = 100
POSITION = (
    "The row's line in a CSV file (the header is line 1), or the transaction's number in a "
    "statement (1 for the first, credits counted): as the 422 problem's line or transaction."
)
# Why a statement's transaction is not imported: money coming in, or nothing at all.
SkipReason = Literal["credit", "zero"]


class PreviewExpense(StrictModel):
    """A row as the import would create it: its category and tags after the rules ran."""

    position: int = Field(description=POSITION)
    occurred_on: date
    amount: str = Field(description="A decimal string with the currency's decimals.")
    currency: str
    charged_amount: str | None = Field(
        description="What the bank took in the home currency, when the row gives it."
    )
    charged_currency: str | None
    description: str
    merchant: str | None
    category_id: uuid.UUID | None = Field(
        description="The row's own category, else the one the first matching rule sets."
    )
    category: str | None = Field(description="That category's name.")
    tags: list[str] = Field(
        description="The row's tags and the matching rule's, named as the import would name "
        "them: an existing tag's spelling wins, as in the answers of GET /api/v1/expenses."
    )
    external_id: str | None = Field(
        description="The row's external_id, or the bank's id of a statement's transaction."
    )


class PreviewUnchanged(StrictModel):
    """A row skipped because its external id was imported before."""

    position: int = Field(description=POSITION)
    external_id: str


class PreviewSkipped(StrictModel):
    """A statement's transaction that is not spending."""

    position: int = Field(description=POSITION)
    reason: SkipReason = Field(description="credit: money coming in; zero: no amount.")


class ImportPreview(StrictModel):
    """What an import of the file would do, row by row: the first PREVIEW_ROWS of each list, in
    the file's order. The rows that would be refused are the 422 problem's errors instead."""

    limit: int = Field(description="The most rows each list holds.")
    expenses: list[PreviewExpense] = Field(description="The rows that would be created.")
    more_expenses: bool = Field(description="True: more than these would be (see created).")
    unchanged: list[PreviewUnchanged] = Field(description="The rows skipped as imported before.")
    more_unchanged: bool = Field(description="True: more than these (see unchanged).")
    skipped: list[PreviewSkipped] = Field(
        description="A statement's transactions that are not spending."
    )
    more_skipped: bool = Field(description="True: more than these (see skipped).")


class ImportOut(StrictModel):
    format: ImportFormat
    rows: int = Field(description="Rows (CSV) or spending transactions (statements) read.")
    created: int
    unchanged: int = Field(description="Rows whose external_id had been imported before.")
    skipped: int = Field(
        default=0, description="A statement's credits and zero amounts: not spending, not kept."
    )
    dry_run: bool = Field(default=False, description="True: nothing was kept.")
    preview: ImportPreview | None = Field(
        default=None,
        description=f"A dry run's rows (the first {PREVIEW_ROWS} of each kind); null for an "
        "import.",
    )


# Categorisation rules (rules.py): what a pattern is matched against, and how.
RuleField = Literal["any", "description", "merchant"]
RuleMatch = Literal["contains", "regex"]


# Not stripped: spaces around a word may be what a rule looks for ("shop "), but never alone.
Pattern = Annotated[str, Field(min_length=1, max_length=200), TEXT, AfterValidator(_not_blank)]
POSITION_MAX = 1_000_000
Position = Annotated[int, Field(ge=1, le=POSITION_MAX)]


class RuleCreate(StrictModel):
    position: Position | None = Field(default=None, description="Default: after the last rule.")
    field: RuleField = Field(
        default="any", description="any: the description or the merchant (a statement's payee)."
    )
    match: RuleMatch = Field(
        default="contains",
        description="contains: the text, case-insensitively; regex: RE2 syntax, linear time.",
    )
    pattern: Pattern
    currency: Currency | None = Field(default=None, description="Only expenses in it.")
    min_amount: Amount | None = Field(default=None, description="Inclusive; needs currency.")
    max_amount: Amount | None = Field(default=None, description="Inclusive; needs currency.")
    category_id: uuid.UUID | None = None
    tags: TagNames = Field(default_factory=list)


class RuleUpdate(StrictModel):
    """The fields sent change; ``null`` clears an optional one."""

    position: Position | None = Field(
        default=None, description="Moves the rule; a position another rule holds is a 409."
    )
    field: RuleField | None = None
    match: RuleMatch | None = None
    pattern: Pattern | None = None
    currency: Currency | None = Field(
        default=None,
        description=(
            "The bounds not sent keep their amounts in it (a 422 when it cannot hold them); "
            "null (any currency) needs none."
        ),
    )
    min_amount: Amount | None = None
    max_amount: Amount | None = None
    category_id: uuid.UUID | None = Field(
        default=None, description="null: the rule sets none, and then needs tags."
    )
    tags: TagNames | None = Field(default=None, description="Replaces the rule's tags.")


class RuleOut(StrictModel):
    id: uuid.UUID
    position: int
    field: RuleField
    match: RuleMatch
    pattern: str
    currency: str | None
    min_amount: str | None
    max_amount: str | None
    category_id: uuid.UUID | None
    tags: list[str]
    created_at: datetime


class RuleChange(StrictModel):
    expense_id: uuid.UUID
    rule_id: uuid.UUID
    description: str
    category_id: uuid.UUID | None
    tags: list[str]


class RulesApplied(StrictModel):
    matched: int = Field(description="Uncategorised expenses a rule matched.")
    dry_run: bool
    changes: list[RuleChange] = Field(description="The first 100 of them, oldest first.")


class HomeCurrency(StrictModel):
    currency: Currency | None = Field(
        description="What reports convert to with in=home; until set, the first expense's."
    )


class HomeCurrencyIn(StrictModel):
    currency: Currency


class RateIn(StrictModel):
    rate: Annotated[str, Field(max_length=30, examples=["1.0832"]), TEXT] = Field(
        description="1 base = rate quote, a decimal string."
    )


class RateOut(StrictModel):
    day: Day
    base: str
    quote: str
    rate: str
    source: Literal["ecb", "frankfurter", "user"]
