"""Revisions, so that a consumer may keep what it computes from the published views and know
when it went stale (the reports service's converted monthly totals, reports/conversion.py).

- ``monthly_totals.revision``: a fresh number from ``expenses.revisions`` whenever the row is
  written, published as ``monthly_spending_v1.revision``.
- ``rate_revisions`` (``rate_revisions_v1``): per owner (null: the providers') and month, a fresh
  number whenever a rate is added, changed or removed on a day that may serve the month: from
  the month's first day back to the longest maximum age of a rate (366 days, the setting's
  bound), so that a consumer reads one row per month and owner, not one per day. A rate written
  again with the same value changes nothing.

A fresh number is larger than every number handed out before it, so a row's revision only
grows: the sum and the count of the revisions of a set of rows change whenever one of them
does, whatever order concurrent transactions commit in (a removed row lowers the count; one
added in its place brings a larger number than it took).

Revision ID: 0014
Revises: 0013
"""

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

SCHEMA = "expenses"

_MONTHLY_SPENDING_V1 = f"""
    SELECT t.user_id, t.month, t.category_id, c.parent_id AS category_parent_id, t.currency,
           t.total_minor, t.expense_count{{}}
    FROM {SCHEMA}.monthly_totals t
    LEFT JOIN {SCHEMA}.categories c ON c.user_id = t.user_id AND c.id = t.category_id
"""


def _apply_totals(rows: str, sign: str, *, revision: str) -> str:
    """Migration 0007's upsert of a transition table's rows into the monthly totals, in a stable
    key order (concurrent transactions lock rollup rows in the same order), with ``revision``
    the value an updated row's revision takes."""
    return f"""
        INSERT INTO {SCHEMA}.monthly_totals AS t
            (user_id, month, category_id, currency, total_minor, expense_count)
        SELECT user_id, date_trunc('month', occurred_on)::date, category_id, currency,
               {sign}sum(amount_minor), {sign}count(*)
        FROM {rows} GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
        ON CONFLICT ON CONSTRAINT monthly_totals_key DO UPDATE
        SET total_minor = t.total_minor + excluded.total_minor,
            expense_count = t.expense_count + excluded.expense_count{revision};
    """


def _totals_function(*, revision: str) -> str:
    return f"""
    CREATE OR REPLACE FUNCTION {SCHEMA}.monthly_totals_changed() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP IN ('DELETE', 'UPDATE') THEN
            {_apply_totals("old_rows", "-", revision=revision)}
        END IF;
        IF TG_OP IN ('INSERT', 'UPDATE') THEN
            {_apply_totals("new_rows", "", revision=revision)}
        END IF;
        DELETE FROM {SCHEMA}.monthly_totals WHERE expense_count = 0;
        RETURN NULL;
    END $$
    """


# The longest a rate may hold for later days (EXPENSETRACKER_RATES_MAX_AGE_DAYS's bound).
LONGEST_RATE_AGE_DAYS = 366


def _bump_rate_months(rows: str) -> str:
    """A fresh revision for each owner and month that the days of ``rows`` may serve, in a
    stable key order."""
    return f"""
        INSERT INTO {SCHEMA}.rate_revisions AS r (user_id, month)
        SELECT DISTINCT user_id, month::date
        FROM (SELECT DISTINCT user_id, day FROM {rows} changed) days,
             generate_series(date_trunc('month', day), day + {LONGEST_RATE_AGE_DAYS},
                             interval '1 month') AS month
        ORDER BY 1, 2
        ON CONFLICT ON CONSTRAINT rate_revisions_key DO UPDATE SET revision = excluded.revision;
    """


# An update changes the days of the rows that the other transition table does not hold alike:
# an upsert that writes a rate again with its value changes no month.
_RATES_CHANGED = f"""
    CREATE FUNCTION {SCHEMA}.rate_revisions_changed() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'INSERT' THEN {_bump_rate_months("new_rows")}
        ELSIF TG_OP = 'DELETE' THEN {_bump_rate_months("old_rows")}
        ELSE {
    _bump_rate_months(
        "((SELECT * FROM new_rows EXCEPT SELECT * FROM old_rows) "
        "UNION ALL (SELECT * FROM old_rows EXCEPT SELECT * FROM new_rows))"
    )
}
        END IF;
        RETURN NULL;
    END $$
"""

_NEXT = f", revision = nextval('{SCHEMA}.revisions')"


def upgrade() -> None:
    op.execute(f"CREATE SEQUENCE {SCHEMA}.revisions")
    op.execute(
        f"ALTER TABLE {SCHEMA}.monthly_totals "
        f"ADD COLUMN revision bigint NOT NULL DEFAULT nextval('{SCHEMA}.revisions')"
    )
    op.execute(_totals_function(revision=_NEXT))
    op.execute(
        f"CREATE OR REPLACE VIEW {SCHEMA}.monthly_spending_v1 AS "
        + _MONTHLY_SPENDING_V1.format(", t.revision")
    )
    op.execute(
        f"""
        CREATE TABLE {SCHEMA}.rate_revisions (
            user_id uuid REFERENCES {SCHEMA}.owners (user_id) ON DELETE CASCADE,
            month date NOT NULL,
            revision bigint NOT NULL DEFAULT nextval('{SCHEMA}.revisions'),
            -- Also the index of a consumer's read: the months of a range, the user's and
            -- everyone's.
            CONSTRAINT rate_revisions_key UNIQUE NULLS NOT DISTINCT (month, user_id)
        )
        """
    )
    op.execute(_bump_rate_months(f"{SCHEMA}.rates"))
    op.execute(_RATES_CHANGED)
    for event, tables in (
        ("insert", "NEW TABLE AS new_rows"),
        ("delete", "OLD TABLE AS old_rows"),
        ("update", "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
    ):
        op.execute(
            f"CREATE TRIGGER rate_revisions_{event} AFTER {event.upper()} ON {SCHEMA}.rates "
            f"REFERENCING {tables} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {SCHEMA}.rate_revisions_changed()"
        )
    op.execute(
        f"CREATE VIEW {SCHEMA}.rate_revisions_v1 AS "
        f"SELECT user_id, month, revision FROM {SCHEMA}.rate_revisions"
    )


def downgrade() -> None:
    op.execute(f"DROP VIEW {SCHEMA}.rate_revisions_v1")
    for event in ("insert", "delete", "update"):
        op.execute(f"DROP TRIGGER rate_revisions_{event} ON {SCHEMA}.rates")
    op.execute(f"DROP FUNCTION {SCHEMA}.rate_revisions_changed()")
    op.execute(f"DROP TABLE {SCHEMA}.rate_revisions")
    # A view loses columns only by being made again.
    op.execute(f"DROP VIEW {SCHEMA}.monthly_spending_v1")
    op.execute(f"CREATE VIEW {SCHEMA}.monthly_spending_v1 AS " + _MONTHLY_SPENDING_V1.format(""))
    op.execute(_totals_function(revision=""))
    op.execute(f"ALTER TABLE {SCHEMA}.monthly_totals DROP COLUMN revision")
    op.execute(f"DROP SEQUENCE {SCHEMA}.revisions")
