"""Monthly totals per user, category and currency, kept exact by a statement-level trigger on
``expenses`` and published to reports as ``monthly_spending_v1``: a year's summary reads a few
hundred rows instead of every expense.

Revision ID: 0007
Revises: 0006
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

SCHEMA = "expenses"


def _apply(rows: str, sign: str) -> str:
    """Adds (``+``) or removes (``-``) a transition table's rows, in a stable key order so that
    concurrent transactions lock rollup rows in the same order."""
    return f"""
        INSERT INTO {SCHEMA}.monthly_totals AS t
            (user_id, month, category_id, currency, total_minor, expense_count)
        SELECT user_id, date_trunc('month', occurred_on)::date, category_id, currency,
               {sign}sum(amount_minor), {sign}count(*)
        FROM {rows} GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
        ON CONFLICT ON CONSTRAINT monthly_totals_key DO UPDATE
        SET total_minor = t.total_minor + excluded.total_minor,
            expense_count = t.expense_count + excluded.expense_count;
    """


STATEMENTS = [
    f"""
    CREATE TABLE {SCHEMA}.monthly_totals (
        user_id uuid NOT NULL,
        month date NOT NULL,
        category_id uuid,
        currency char(3) NOT NULL,
        total_minor bigint NOT NULL,
        expense_count integer NOT NULL,
        CONSTRAINT monthly_totals_key UNIQUE NULLS NOT DISTINCT
            (user_id, month, category_id, currency)
    )
    """,
    # Finds the rows that dropped to zero at once, whatever the size of the table.
    f"CREATE INDEX monthly_totals_empty ON {SCHEMA}.monthly_totals (user_id) "
    "WHERE expense_count = 0",
    f"""
    CREATE FUNCTION {SCHEMA}.monthly_totals_changed() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP IN ('DELETE', 'UPDATE') THEN {_apply("old_rows", "-")} END IF;
        IF TG_OP IN ('INSERT', 'UPDATE') THEN {_apply("new_rows", "")} END IF;
        DELETE FROM {SCHEMA}.monthly_totals WHERE expense_count = 0;
        RETURN NULL;
    END $$
    """,
    f"""
    CREATE TRIGGER monthly_totals_insert AFTER INSERT ON {SCHEMA}.expenses
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {SCHEMA}.monthly_totals_changed()
    """,
    f"""
    CREATE TRIGGER monthly_totals_delete AFTER DELETE ON {SCHEMA}.expenses
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {SCHEMA}.monthly_totals_changed()
    """,
    f"""
    CREATE TRIGGER monthly_totals_update AFTER UPDATE ON {SCHEMA}.expenses
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {SCHEMA}.monthly_totals_changed()
    """,
    f"""
    INSERT INTO {SCHEMA}.monthly_totals
    SELECT user_id, date_trunc('month', occurred_on)::date, category_id, currency,
           sum(amount_minor), count(*)
    FROM {SCHEMA}.expenses GROUP BY 1, 2, 3, 4
    """,
    f"""
    CREATE VIEW {SCHEMA}.monthly_spending_v1 AS
    SELECT t.user_id, t.month, t.category_id, c.parent_id AS category_parent_id, t.currency,
           t.total_minor, t.expense_count
    FROM {SCHEMA}.monthly_totals t
    LEFT JOIN {SCHEMA}.categories c ON c.user_id = t.user_id AND c.id = t.category_id
    """,
]


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(statement)


def downgrade() -> None:
    op.execute(f"DROP VIEW {SCHEMA}.monthly_spending_v1")
    for event in ("insert", "delete", "update"):
        op.execute(f"DROP TRIGGER monthly_totals_{event} ON {SCHEMA}.expenses")
    op.execute(f"DROP FUNCTION {SCHEMA}.monthly_totals_changed()")
    op.execute(f"DROP TABLE {SCHEMA}.monthly_totals")
