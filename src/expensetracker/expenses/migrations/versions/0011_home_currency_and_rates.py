"""A home currency per user, the amount actually charged in it per expense, and exchange rates,
published to reports (docs/contracts/expenses-spending-v1.md).

- ``owners.home_currency``: set by the user, or by the first expense written (a statement-level
  trigger on insert, so every way of writing expenses sets it; a first import, the file's most
  common currency; existing users get the currency of their earliest expense).
- ``expenses.charged_minor``, ``charged_currency``, ``charged_exponent``: what the bank took,
  when known.
- ``rates``: one rate per day, pair, source and owner (null: a provider's rate, for everyone;
  a user's own rates are theirs alone). NUMERIC, never floats.

Revision ID: 0011
Revises: 0010
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

SCHEMA = "expenses"

SPENDING_V1 = f"""
    SELECT e.user_id, e.id AS expense_id, e.occurred_on, e.amount_minor, e.currency,
           e.currency_exponent, e.category_id, c.parent_id AS category_parent_id, e.merchant{{}}
    FROM {SCHEMA}.expenses e
    LEFT JOIN {SCHEMA}.categories c ON c.user_id = e.user_id AND c.id = e.category_id
"""

STATEMENTS = [
    f"ALTER TABLE {SCHEMA}.owners ADD COLUMN home_currency char(3)",
    f"""
    ALTER TABLE {SCHEMA}.expenses
        ADD COLUMN charged_minor bigint,
        ADD COLUMN charged_currency char(3),
        ADD COLUMN charged_exponent smallint,
        ADD CONSTRAINT expenses_charged_whole CHECK (
            (charged_minor IS NULL) = (charged_currency IS NULL)
            AND (charged_minor IS NULL) = (charged_exponent IS NULL) AND charged_minor > 0)
    """,
    f"""
    UPDATE {SCHEMA}.owners o SET home_currency = (
        SELECT e.currency FROM {SCHEMA}.expenses e WHERE e.user_id = o.user_id
        ORDER BY e.created_at, e.id LIMIT 1)
    """,
    # The owner's first expense names their home currency (a first import of many: its most
    # common currency, the rows of one statement having no order); later ones find it set and
    # change nothing (a primary-key lookup per user of the statement).
    f"""
    CREATE FUNCTION {SCHEMA}.home_currency_from_first_expense() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE {SCHEMA}.owners o SET home_currency = first.currency
        FROM (SELECT user_id, mode() WITHIN GROUP (ORDER BY currency) AS currency
              FROM new_rows GROUP BY user_id) first
        WHERE o.user_id = first.user_id AND o.home_currency IS NULL;
        RETURN NULL;
    END $$
    """,
    f"""
    CREATE TRIGGER home_currency_from_first_expense AFTER INSERT ON {SCHEMA}.expenses
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {SCHEMA}.home_currency_from_first_expense()
    """,
    f"""
    CREATE TABLE {SCHEMA}.rates (
        user_id uuid REFERENCES {SCHEMA}.owners (user_id) ON DELETE CASCADE,
        day date NOT NULL,
        base char(3) NOT NULL,
        quote char(3) NOT NULL,
        rate numeric NOT NULL CHECK (rate > 0),
        source text NOT NULL CHECK (source IN ('ecb', 'frankfurter', 'user')),
        CHECK (base <> quote),
        CHECK ((source = 'user') = (user_id IS NOT NULL)),
        -- Also the index of a lookup: a pair's latest day up to a date.
        CONSTRAINT rates_key UNIQUE NULLS NOT DISTINCT (base, quote, day, source, user_id)
    )
    """,
    # Reports read a range of days of the currencies they convert (reports/conversion.py).
    f"CREATE INDEX rates_quote_day ON {SCHEMA}.rates (quote, day)",
    f"CREATE OR REPLACE VIEW {SCHEMA}.spending_v1 AS "
    + SPENDING_V1.format(", e.charged_minor, e.charged_currency"),
    f"""
    CREATE VIEW {SCHEMA}.home_currencies_v1 AS
    SELECT user_id, home_currency FROM {SCHEMA}.owners WHERE home_currency IS NOT NULL
    """,
    f"""
    CREATE VIEW {SCHEMA}.rates_v1 AS
    SELECT user_id, day, base, quote, rate, source FROM {SCHEMA}.rates
    """,
]


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(statement)


def downgrade() -> None:
    op.execute(f"DROP VIEW {SCHEMA}.rates_v1")
    op.execute(f"DROP VIEW {SCHEMA}.home_currencies_v1")
    # A view loses columns only by being made again.
    op.execute(f"DROP VIEW {SCHEMA}.spending_v1")
    op.execute(f"CREATE VIEW {SCHEMA}.spending_v1 AS " + SPENDING_V1.format(""))
    op.execute(f"DROP TABLE {SCHEMA}.rates")
    op.execute(f"DROP TRIGGER home_currency_from_first_expense ON {SCHEMA}.expenses")
    op.execute(f"DROP FUNCTION {SCHEMA}.home_currency_from_first_expense()")
    op.execute(
        f"ALTER TABLE {SCHEMA}.expenses DROP CONSTRAINT expenses_charged_whole, "
        "DROP COLUMN charged_minor, DROP COLUMN charged_currency, DROP COLUMN charged_exponent"
    )
    op.execute(f"ALTER TABLE {SCHEMA}.owners DROP COLUMN home_currency")
