"""Months as reports count them: a month is the date of its first day."""

from __future__ import annotations

import calendar
from datetime import date


def parse_month(value: str) -> date:
    year, month = value.split("-")
    return date(int(year), int(month), 1)


def month_label(value: date) -> str:
    return f"{value.year:04d}-{value.month:02d}"


def add_months(value: date, months: int) -> date:
    year, month = divmod(value.month - 1 + months, 12)
    return date(value.year + year, month + 1, 1)


def month_end(value: date) -> date:
    return value.replace(day=calendar.monthrange(value.year, value.month)[1])


def whole_months(start: date, end: date) -> tuple[date, date] | None:
    """The first and last month lying entirely within [start, end], if any."""
    first = start if start.day == 1 else add_months(start.replace(day=1), 1)
    last = end.replace(day=1) if end == month_end(end) else add_months(end.replace(day=1), -1)
    return (first, last) if first <= last else None
