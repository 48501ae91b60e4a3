"""HTTP routes of the expenses service (thin: the logic lives in service.py)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import date
from decimal import Decimal
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from expensetracker.expenses import rates, recurring, rules, service, statements, transfer
from expensetracker.expenses.schemas import (
    CategoryCreate,
    CategoryOut,
    CategoryUpdate,
    DateOrder,
    ExpenseCreate,
    ExpenseOut,
    ExpenseUpdate,
    HomeCurrency,
    HomeCurrencyIn,
    ImportFormat,
    ImportOut,
    RateIn,
    RateOut,
    RecurringCreate,
    RecurringOut,
    RuleCreate,
    RuleOut,
    RulesApplied,
    RuleUpdate,
    TagOut,
)
from expensetracker.expenses.shared import ExpenseFilter
from expensetracker.platform import idempotency, money
from expensetracker.platform.deps import (
    SINGLE_QUERY_VALUES,
    Creating,
    CurrentUser,
    DbConnection,
    DbSession,
    Paging,
    State,
)
from expensetracker.platform.errors import Problem, ValidationProblem, problems
from expensetracker.platform.idempotency import CREATES
from expensetracker.platform.pagination import Page
from expensetracker.platform.schemas import NO_CONTENT, TEXT, Currency, Day, JsonDocument

router = APIRouter(tags=["expenses"], dependencies=SINGLE_QUERY_VALUES)


class UnsupportedMediaType(Problem):
    status = 415


def _bound(name: str, value: str | None) -> Decimal | None:
    if value is None:
        return None
    try:
        return money.parse_bound(value)
    except ValueError as exc:
        raise ValidationProblem.of_field(f"query.{name}", f"{name} {exc}", "amount") from None


async def expense_filters(
    from_: Annotated[Day | None, Query(alias="from", description="First day, inclusive.")] = None,
    to: Annotated[Day | None, Query(description="Last day, inclusive.")] = None,
    category_id: Annotated[
        uuid.UUID | None, Query(description="A category, with its subcategories.")
    ] = None,
    tag: Annotated[str | None, Query(min_length=1, max_length=50), TEXT] = None,
    q: Annotated[
        str | None,
        Query(min_length=1, max_length=100, description="Text in description/notes."),
        TEXT,
    ] = None,
    min_amount: Annotated[str | None, Query(max_length=30), TEXT] = None,
    max_amount: Annotated[str | None, Query(max_length=30), TEXT] = None,
    currency: Annotated[Currency | None, Query()] = None,
) -> ExpenseFilter:
    return service.matchable(
        filters=ExpenseFilter(
            from_=from_,
            to=to,
            category_id=category_id,
            tag=tag,
            q=q,
            min_amount=_bound("min_amount", min_amount),
            max_amount=_bound("max_amount", max_amount),
            currency=currency,
        )
    )


ExpenseFilters = Annotated[ExpenseFilter, Depends(expense_filters)]


@router.post("/api/v1/expenses", response_model=ExpenseOut, **CREATES)
async def create_expense(
    body: ExpenseCreate, creation: Creating, connection: DbConnection
) -> Response:
    """Records an expense; its tags are created as they are first named. With an
    ``Idempotency-Key``, a repeated request answers as the first did and creates nothing."""
    result = await service.create_expense(connection, creation=creation, body=body)
    return idempotency.respond(result)


@router.get("/api/v1/expenses", response_model=Page[ExpenseOut])
async def list_expenses(
    paging: Paging, filters: ExpenseFilters, user: CurrentUser, connection: DbConnection
) -> Response:
    """The caller's expenses, newest first, filtered."""
    page = await service.list_expenses(
        connection, user_id=user.user_id, filters=filters, paging=paging
    )
    return JsonDocument(page)


_IMPORT_MEDIA_TYPES = [*statements.MEDIA_TYPES, *statements.SNIFFED_MEDIA_TYPES]


@router.post(
    "/api/v1/expenses/import",
    response_model=ImportOut,
    status_code=status.HTTP_201_CREATED,
    responses={
        status.HTTP_200_OK: {"model": ImportOut, "description": "A dry run: nothing was kept."},
        **problems(409, 415),
    },
    openapi_extra={
        "requestBody": {
            "content": {
                media_type: {"schema": {"type": "string"}} for media_type in _IMPORT_MEDIA_TYPES
            }
        }
    },
)
async def import_expenses(
    request: Request,
    creation: Creating,
    session: DbSession,
    dry_run: Annotated[
        bool,
        Query(
            description="Check and count all, list the first rows of each outcome (preview), "
            "keep nothing."
        ),
    ] = False,
    format: Annotated[
        ImportFormat | None, Query(description="Overrides the content type and the content.")
    ] = None,
    currency: Annotated[
        Currency | None, Query(description="QIF's currency (QIF has none).")
    ] = None,
    date_order: Annotated[
        DateOrder | None, Query(description="QIF's date order, where its dates do not prove it.")
    ] = None,
) -> Response:
    """A CSV file (UTF-8, header row; columns as in the export) or a bank statement (OFX/QFX,
    CAMT.053, MT940, QIF), sent as the request body: imported whole or not at all, with every
    bad row reported by its position. Rows with an external_id seen before are skipped, and a
    statement's credits. Under an Idempotency-Key, an import sent again happens once."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if format is None and media_type not in statements.SNIFFED_MEDIA_TYPES:
        format = statements.MEDIA_TYPES.get(media_type)
        if format is None:
            raise UnsupportedMediaType(f"Send the file as one of {', '.join(_IMPORT_MEDIA_TYPES)}.")
    try:
        result = await transfer.import_file(
            session,
            user_id=creation.user_id,
            chunks=request.stream(),
            format=format,
            options=statements.Options(currency=currency, date_order=date_order),
            dry_run=dry_run,
            keyed=creation.keyed,
        )
    except transfer.Replayed as replayed:
        return idempotency.respond(replayed.stored)
    # A dry run created nothing: 200.
    return idempotency.respond(transfer.import_answer(result), status_code=200 if dry_run else 201)


@router.get("/api/v1/expenses/export", response_class=StreamingResponse)
async def export_expenses(
    state: State,
    filters: ExpenseFilters,
    user: CurrentUser,
    format: Literal["csv", "json"] = "csv",
) -> StreamingResponse:
    """Every expense matching the filters, newest first, streamed (CSV in the import format)."""

    async def body() -> AsyncIterator[bytes]:
        # A connection of its own: it must outlive this function, until the last byte is sent.
        async with state.db.driver_pool.connection() as connection:
            rows = transfer.export_rows(connection, filters=filters, user_id=user.user_id)
            encode = transfer.as_csv if format == "csv" else transfer.as_json
            async for chunk in encode(rows):
                yield chunk

    media_type = "text/csv; charset=utf-8" if format == "csv" else "application/json"
    disposition = f'attachment; filename="expenses.{format}"'
    return StreamingResponse(
        body(), media_type=media_type, headers={"Content-Disposition": disposition}
    )


@router.post("/api/v1/expenses/recurring", response_model=RecurringOut, **CREATES)
async def create_recurring(
    body: RecurringCreate, creation: Creating, session: DbSession
) -> Response:
    """A weekly, monthly or yearly expense; occurrences already due are created at once, later
    ones when they fall due."""
    result = await recurring.create_rule(session, creation=creation, body=body, today=date.today())
    return idempotency.respond(result)


@router.get("/api/v1/expenses/recurring")
async def list_recurring(
    user: CurrentUser, session: DbSession, paging: Paging
) -> Page[RecurringOut]:
    """The caller's recurring expenses, with the day each falls due next."""
    return await recurring.list_rules(session, user_id=user.user_id, paging=paging)


@router.delete("/api/v1/expenses/recurring/{rule_id}", **NO_CONTENT, responses=problems(404))
async def delete_recurring(rule_id: uuid.UUID, user: CurrentUser, session: DbSession) -> None:
    """Stops the rule; the expenses it created stay."""
    await recurring.delete_rule(session, user_id=user.user_id, rule_id=rule_id)


@router.post("/api/v1/expenses/rules", response_model=RuleOut, **CREATES)
async def create_rule(body: RuleCreate, creation: Creating, session: DbSession) -> Response:
    """A categorisation rule, by default after the others (the first that matches wins)."""
    return idempotency.respond(await rules.create_rule(session, creation=creation, body=body))


@router.get("/api/v1/expenses/rules")
async def list_rules(user: CurrentUser, session: DbSession, paging: Paging) -> Page[RuleOut]:
    """The caller's rules (at most 100 in all), in their order."""
    return await rules.list_rules(session, user_id=user.user_id, paging=paging)


@router.post("/api/v1/expenses/rules/apply")
async def apply_rules(
    user: CurrentUser,
    session: DbSession,
    dry_run: Annotated[
        bool, Query(description="Report what would change, change nothing.")
    ] = False,
) -> RulesApplied:
    """The rules over the caller's uncategorised expenses."""
    return await rules.apply_rules(session, user_id=user.user_id, dry_run=dry_run)


@router.get("/api/v1/expenses/rules/{rule_id}", responses=problems(404))
async def get_rule(rule_id: uuid.UUID, user: CurrentUser, session: DbSession) -> RuleOut:
    """One of the caller's rules; another user's id answers 404."""
    return await rules.get_rule(session, user_id=user.user_id, rule_id=rule_id)


@router.patch("/api/v1/expenses/rules/{rule_id}", responses=problems(404, 409))
async def update_rule(
    rule_id: uuid.UUID, body: RuleUpdate, user: CurrentUser, session: DbSession
) -> RuleOut:
    """Changes the fields sent; ``null`` clears the currency, the bounds or the category. A
    position another rule holds is a 409."""
    return await rules.update_rule(session, user_id=user.user_id, rule_id=rule_id, body=body)


@router.delete("/api/v1/expenses/rules/{rule_id}", **NO_CONTENT, responses=problems(404))
async def delete_rule(rule_id: uuid.UUID, user: CurrentUser, session: DbSession) -> None:
    """The rule no longer applies; the expenses it categorised keep their category and tags."""
    await rules.delete_rule(session, user_id=user.user_id, rule_id=rule_id)


@router.get("/api/v1/expenses/home-currency")
async def get_home_currency(user: CurrentUser, connection: DbConnection) -> HomeCurrency:
    """What reports convert to with ``in=home``: as set, else the first expense's currency."""
    currency = await rates.home_currency(connection, user_id=user.user_id)
    return HomeCurrency(currency=currency)


@router.put("/api/v1/expenses/home-currency")
async def set_home_currency(
    body: HomeCurrencyIn, user: CurrentUser, connection: DbConnection
) -> HomeCurrency:
    """Sets what reports convert to with ``in=home``; no expense changes."""
    await rates.set_home_currency(connection, user_id=user.user_id, currency=body.currency)
    return HomeCurrency(currency=body.currency)


@router.get("/api/v1/expenses/rates", response_model=Page[RateOut])
async def list_rates(
    user: CurrentUser,
    connection: DbConnection,
    base: Annotated[Currency | None, Query()] = None,
    quote: Annotated[Currency | None, Query()] = None,
    *,
    paging: Paging,  # after the filters in the OpenAPI document, as they always were
) -> Response:
    """The exchange rates in use for the caller: the providers' and their own, newest first."""
    page = await rates.list_rates(
        connection, user_id=user.user_id, base=base, quote=quote, paging=paging
    )
    return JsonDocument(page)


RatePath = "/api/v1/expenses/rates/{day}/{base}/{quote}"


@router.put(RatePath)
async def put_rate(
    day: Day,
    base: Currency,
    quote: Currency,
    body: RateIn,
    user: CurrentUser,
    connection: DbConnection,
) -> RateOut:
    """The caller's own rate, 1 ``base`` = ``rate`` ``quote`` on ``day``: theirs alone, and
    preferred to a provider's of the same day."""
    if base == quote:
        raise ValidationProblem.of_field("path.quote", "must differ from the base currency", "pair")
    try:
        rate = rates.parse_rate(body.rate)
    except ValueError as exc:
        raise ValidationProblem.of_field("body.rate", f"rate {exc}", "rate") from None
    await rates.put_rate(
        connection, user_id=user.user_id, day=day, base=base, quote=quote, rate=rate
    )
    return RateOut(day=day, base=base, quote=quote, rate=format(rate, "f"), source="user")


@router.delete(RatePath, **NO_CONTENT, responses=problems(404))
async def delete_rate(
    day: Day, base: Currency, quote: Currency, user: CurrentUser, connection: DbConnection
) -> None:
    """Removes the caller's own rate of the day; the providers' rates stay. 404 without one."""
    await rates.delete_rate(connection, user_id=user.user_id, day=day, base=base, quote=quote)


@router.get("/api/v1/expenses/{expense_id}", response_model=ExpenseOut, responses=problems(404))
async def get_expense(
    expense_id: uuid.UUID, user: CurrentUser, connection: DbConnection
) -> Response:
    """One of the caller's expenses; another user's id answers 404."""
    expense = await service.get_expense(connection, user_id=user.user_id, expense_id=expense_id)
    return JsonDocument(expense)


@router.patch("/api/v1/expenses/{expense_id}", response_model=ExpenseOut, responses=problems(404))
async def update_expense(
    expense_id: uuid.UUID, body: ExpenseUpdate, user: CurrentUser, connection: DbConnection
) -> Response:
    """Changes the fields sent; ``null`` clears an optional one. The charged amount and its
    currency change together."""
    expense = await service.update_expense(
        connection, user_id=user.user_id, expense_id=expense_id, body=body
    )
    return JsonDocument(expense)


@router.delete("/api/v1/expenses/{expense_id}", **NO_CONTENT, responses=problems(404))
async def delete_expense(
    expense_id: uuid.UUID, user: CurrentUser, connection: DbConnection
) -> None:
    """Deletes the expense; the month's totals and the reports follow at once."""
    await service.delete_expense(connection, user_id=user.user_id, expense_id=expense_id)


@router.get("/api/v1/categories", response_model=Page[CategoryOut])
async def list_categories(user: CurrentUser, connection: DbConnection, paging: Paging) -> Response:
    """The caller's categories by name; a new user starts with a default set."""
    page = await service.list_categories(connection, user_id=user.user_id, paging=paging)
    return JsonDocument(page)


@router.post("/api/v1/categories", response_model=CategoryOut, **CREATES)
async def create_category(body: CategoryCreate, creation: Creating, session: DbSession) -> Response:
    """A category, or a subcategory of a top-level one (one level). A name the caller already
    has, in any case, is a 409."""
    return idempotency.respond(await service.create_category(session, creation=creation, body=body))


@router.patch("/api/v1/categories/{category_id}", responses=problems(404, 409))
async def update_category(
    category_id: uuid.UUID, body: CategoryUpdate, user: CurrentUser, session: DbSession
) -> CategoryOut:
    """Renames it or moves it; ``parent_id: null`` makes it top-level. A category with
    subcategories stays at the top level."""
    return await service.update_category(
        session, user_id=user.user_id, category_id=category_id, body=body
    )


@router.delete("/api/v1/categories/{category_id}", **NO_CONTENT, responses=problems(404, 422))
async def delete_category(
    category_id: uuid.UUID,
    user: CurrentUser,
    session: DbSession,
    move_to: Annotated[
        uuid.UUID | None,
        Query(description="Another of your categories, to take its expenses and rules."),
    ] = None,
) -> None:
    """Its subcategories move to the top level. Its expenses, recurring expenses and rules move
    to ``move_to`` when given (so that their months keep counting there, in reports and
    budgets), or are left without a category."""
    await service.delete_category(
        session, user_id=user.user_id, category_id=category_id, move_to=move_to
    )


@router.get("/api/v1/tags")
async def list_tags(user: CurrentUser, session: DbSession, paging: Paging) -> Page[TagOut]:
    """The caller's tags on at least one expense, by name (tags are created by naming them on an
    expense; one that no expense has any more is not listed)."""
    return await service.list_tags(session, user_id=user.user_id, paging=paging)
