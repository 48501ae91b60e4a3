"""Request and response bodies of the reports service."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, StringConstraints

from expensetracker.platform.schemas import (
    NAME,
    TEXT,
    Amount,
    Currency,
    Month,
    PricedModel,
    StrictModel,
)

Name = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100), TEXT, NAME
]


def _thresholds(values: list[int]) -> list[int]:
    return sorted(set(values))


Thresholds = Annotated[
    list[Annotated[int, Field(ge=1, le=1000, strict=True)]],  # 80, not "80" nor 80.0
    Field(min_length=1, max_length=5),
    AfterValidator(_thresholds),
]


class BudgetIn(PricedModel):
    """A monthly budget; ``PUT`` takes the whole budget again."""

    name: Name
    category_id: uuid.UUID | None = Field(
        default=None, description="A category (its subcategories included); none for everything."
    )
    rollover: bool = Field(
        default=False,
        strict=True,  # true or false, not "yes" nor 1
        description="Carry what is left (or overspent) into the next month.",
    )
    thresholds: Thresholds = Field(default_factory=lambda: [80, 100])
    starts: Month | None = Field(default=None, description="First month, YYYY-MM (default: now).")
    converted: bool = Field(
        default=False,
        strict=True,
        description="Count spending in every currency, converted to this one (as in=home).",
    )


class BudgetOut(StrictModel):
    id: uuid.UUID
    name: str
    category_id: uuid.UUID | None
    currency: Currency
    amount: Amount
    rollover: bool
    thresholds: list[int]
    starts: str
    converted: bool
    created_at: datetime
    updated_at: datetime


class BudgetStatus(StrictModel):
    budget_id: uuid.UUID
    name: str
    category_id: uuid.UUID | None
    currency: str
    limit: str
    rollover_in: str
    available: str
    spent: str
    remaining: str
    percent_used: float | None = Field(
        description="spent / available; null when nothing is available"
    )
    thresholds: list[int] = Field(description="The budget's alert thresholds, in percent.")
    state: Literal["ok", "warning", "over"]
    category_deleted: bool = Field(
        default=False,
        description="Its category was deleted (its expenses uncategorised, or moved to another "
        "category): the budget counts nothing until a PUT gives it another category (or none).",
    )
    conversion: Conversion | None = Field(
        default=None, description="A converted budget's: how its spending was converted."
    )
    unconverted: list[CurrencyTotal] | None = Field(
        default=None, description="A converted budget's spending without a rate (not in spent)."
    )


class BudgetReport(StrictModel):
    month: str
    budgets: list[BudgetStatus]


class CurrencyTotal(StrictModel):
    currency: str
    amount: str
    count: int


class Conversion(StrictModel):
    """How a converted total was made (reports/conversion.py)."""

    in_currency: int = Field(description="Expenses already in the currency.")
    charged: int = Field(description="Expenses counted at the amount charged in the currency.")
    rated: int = Field(description="Expenses converted at an exchange rate.")
    oldest_rate_day: date | None = Field(description="The day of the oldest rate used.")
    missing: int = Field(description="Expenses without a rate: left out, listed in unconverted.")


class ConvertedTotal(StrictModel):
    currency: str
    amount: str
    count: int = Field(description="Expenses in the amount (in_currency + charged + rated).")
    conversion: Conversion
    unconverted: list[CurrencyTotal] = Field(
        description="Expenses without a rate, per their own currency: not in the amount."
    )


class SummaryGroup(StrictModel):
    key: str | None = Field(description="Category id, month (YYYY-MM) or tag; null: none")
    name: str | None
    totals: list[CurrencyTotal]


class Summary(StrictModel):
    from_: date = Field(alias="from")
    to: date
    group_by: Literal["category", "month", "tag"]
    groups: list[SummaryGroup]


class ConvertedGroup(StrictModel):
    key: str | None = Field(description="Category id, month (YYYY-MM) or tag; null: none")
    name: str | None
    total: ConvertedTotal


class ConvertedSummary(StrictModel):
    from_: date = Field(alias="from")
    to: date
    group_by: Literal["category", "month", "tag"]
    currency: str
    total: ConvertedTotal = Field(
        description="Everything in the range (with group_by=tag, an "
        "expense with several tags counts once here)."
    )
    groups: list[ConvertedGroup]


class Overview(StrictModel):
    """A month at a glance, in one call: what a dashboard shows."""

    month: str
    by_category: Summary = Field(description="The month's totals per category.")
    by_month: Summary = Field(description="Totals per month, over the months up to the month.")
    budgets: list[BudgetStatus] = Field(description="As GET /api/v1/reports/budgets has them.")


class ConvertedOverview(StrictModel):
    """The overview in the home currency (``in=home``)."""

    month: str
    by_category: ConvertedSummary
    by_month: ConvertedSummary
    budgets: list[BudgetStatus]


class TrendLine(StrictModel):
    category_id: uuid.UUID | None
    name: str | None
    currency: str
    totals: list[str]
    change: str = Field(description="Last month minus the month before.")
    change_percent: float | None


class Trends(StrictModel):
    months: list[str]
    categories: list[TrendLine]


class MerchantTotal(StrictModel):
    merchant: str
    currency: str
    amount: str
    count: int


class AlertOut(StrictModel):
    id: uuid.UUID
    budget_id: uuid.UUID
    month: str
    threshold: int
    spent: str
    available: str
    currency: str
    created_at: datetime


class ConvertedTrendLine(TrendLine):
    conversion: Conversion = Field(description="How the line's months were converted.")
    unconverted: list[CurrencyTotal]


class ConvertedTrends(StrictModel):
    months: list[str]
    currency: str
    categories: list[ConvertedTrendLine]


class ConvertedMerchant(ConvertedTotal):
    merchant: str
