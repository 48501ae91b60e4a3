"""What the web app exchanges: the shapes of the public API's answers it reads (typed only, not
validated again: the services already did), and the forms people send."""

from __future__ import annotations

from typing import Generic, TypedDict, TypeVar

T = TypeVar("T")


class Page(TypedDict, Generic[T]):
    items: list[T]
    next_cursor: str | None


class TokenPair(TypedDict):
    access_token: str
    refresh_token: str
    token_type: str
    expires_in: int


class User(TypedDict):
    id: str
    email: str
    display_name: str
    created_at: str


class Category(TypedDict):
    id: str
    name: str
    parent_id: str | None
    created_at: str


class Tag(TypedDict):
    id: str
    name: str


class Expense(TypedDict):
    id: str
    amount: str
    currency: str
    occurred_on: str
    description: str
    notes: str | None
    merchant: str | None
    category_id: str | None
    tags: list[str]
    created_at: str
    updated_at: str


class Recurring(TypedDict):
    id: str
    amount: str
    currency: str
    description: str
    notes: str | None
    merchant: str | None
    category_id: str | None
    tags: list[str]
    frequency: str
    starts_on: str
    ends_on: str | None
    next_due_on: str | None


class ImportPreview(TypedDict):
    rows: int
    created: int
    unchanged: int
    dry_run: bool
    unchanged_lines: list[int]


class Budget(TypedDict):
    id: str
    name: str
    category_id: str | None
    currency: str
    amount: str
    rollover: bool
    thresholds: list[int]
    starts: str


class BudgetStatus(TypedDict):
    budget_id: str
    name: str
    category_id: str | None
    currency: str
    limit: str
    rollover_in: str
    available: str
    spent: str
    remaining: str
    percent_used: float | None
    thresholds: list[int]
    state: str


class BudgetReport(TypedDict):
    month: str
    budgets: list[BudgetStatus]


class CurrencyTotal(TypedDict):
    currency: str
    amount: str
    count: int


class SummaryGroup(TypedDict):
    key: str | None
    name: str | None
    totals: list[CurrencyTotal]


class Summary(TypedDict):
    groups: list[SummaryGroup]


class TrendLine(TypedDict):
    category_id: str | None
    name: str | None
    currency: str
    totals: list[str]
    change: str
    change_percent: float | None


class Trends(TypedDict):
    months: list[str]
    categories: list[TrendLine]


class Merchant(TypedDict):
    merchant: str
    currency: str
    amount: str
    count: int


# The filters of the expense list, as the API names them; kept in the page's URL.
EXPENSE_FILTERS = ("from", "to", "category_id", "tag", "q", "min_amount", "max_amount", "currency")
