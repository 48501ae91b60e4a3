"""What the web app exchanges: the shapes of the public API's answers it reads (typed only, not
validated again: the services already did), and the forms people send."""

from __future__ import annotations

from typing import Generic, NotRequired, TypedDict, TypeVar

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
    charged_amount: str | None
    charged_currency: str | None
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


class PreviewExpense(TypedDict):
    position: int
    occurred_on: str
    amount: str
    currency: str
    charged_amount: str | None
    charged_currency: str | None
    description: str
    merchant: str | None
    category_id: str | None
    category: str | None
    tags: list[str]
    external_id: str | None


class PreviewUnchanged(TypedDict):
    position: int
    external_id: str


class PreviewSkipped(TypedDict):
    position: int
    reason: str


class ImportPreview(TypedDict):
    """A dry run's rows: the first ones of each list, and whether more exist."""

    limit: int
    expenses: list[PreviewExpense]
    more_expenses: bool
    unchanged: list[PreviewUnchanged]
    more_unchanged: bool
    skipped: list[PreviewSkipped]
    more_skipped: bool


class ImportResult(TypedDict):
    format: str
    rows: int
    created: int
    unchanged: int
    skipped: int
    dry_run: bool
    preview: ImportPreview | None


class HomeCurrency(TypedDict):
    currency: str | None


class Rate(TypedDict):
    day: str
    base: str
    quote: str
    rate: str
    source: str


class Rule(TypedDict):
    id: str
    position: int
    field: str
    match: str
    pattern: str
    currency: str | None
    min_amount: str | None
    max_amount: str | None
    category_id: str | None
    tags: list[str]
    created_at: str


class RuleChange(TypedDict):
    expense_id: str
    rule_id: str
    description: str
    category_id: str | None
    tags: list[str]


class RulesApplied(TypedDict):
    matched: int
    dry_run: bool
    changes: list[RuleChange]


class Budget(TypedDict):
    id: str
    name: str
    category_id: str | None
    currency: str
    amount: str
    rollover: bool
    thresholds: list[int]
    starts: str
    converted: bool


class BudgetStatus(TypedDict):
    """What the web app reads of a budget's status: the API sends more (its category_id and
    limit), which the pages do not show."""

    budget_id: str
    name: str
    currency: str
    rollover_in: str
    available: str
    spent: str
    remaining: str
    percent_used: float | None
    thresholds: list[int]
    state: str
    # A converted budget's (spending in every currency counted in its own): how, and what not.
    conversion: NotRequired[Conversion | None]
    unconverted: NotRequired[list[CurrencyTotal] | None]


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


class Conversion(TypedDict):
    """How a converted total was made: never a guessed rate."""

    in_currency: int
    charged: int
    rated: int
    oldest_rate_day: str | None
    missing: int


class ConvertedTotal(TypedDict):
    currency: str
    amount: str
    count: int
    conversion: Conversion
    unconverted: list[CurrencyTotal]


class ConvertedGroup(TypedDict):
    key: str | None
    name: str | None
    total: ConvertedTotal


class ConvertedSummary(TypedDict):
    currency: str
    total: ConvertedTotal
    groups: list[ConvertedGroup]


class Overview(TypedDict, Generic[T]):
    """The reports' overview, its summaries of shape T: Summary, or ConvertedSummary (in=home)."""

    month: str
    by_category: T
    by_month: T
    budgets: list[BudgetStatus]


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


class ConvertedTrendLine(TrendLine):
    conversion: Conversion
    unconverted: list[CurrencyTotal]


class ConvertedTrends(TypedDict):
    months: list[str]
    currency: str
    categories: list[ConvertedTrendLine]


class Merchant(TypedDict):
    merchant: str
    currency: str
    amount: str
    count: int


class ConvertedMerchant(ConvertedTotal):
    merchant: str


# The filters of the expense list, as the API names them; kept in the page's URL.
EXPENSE_FILTERS = ("from", "to", "category_id", "tag", "q", "min_amount", "max_amount", "currency")

# What an import file may be (the API's ImportFormat), and QIF's date orders.
IMPORT_FORMATS = {
    "csv": "CSV (the export's columns)",
    "ofx": "OFX / QFX",
    "qif": "QIF",
    "mt940": "MT940",
    "camt053": "CAMT.053",
}
QIF_DATE_ORDERS = {"dmy": "Day first (31/12/2026)", "mdy": "Month first (12/31/2026)"}
# Rules: what a pattern is matched against, and how (the API's RuleField and RuleMatch).
RULE_FIELDS = {
    "any": "Description or merchant",
    "description": "Description",
    "merchant": "Merchant",
}
RULE_MATCHES = {"contains": "Contains (any case)", "regex": "Regular expression (RE2)"}
