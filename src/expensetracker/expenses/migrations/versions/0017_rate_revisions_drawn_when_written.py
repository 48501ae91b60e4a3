"""A month's rate revision drawn when the row is written, so that it only grows.

Migration 0014's trigger (0015's since) upserted ``revision = excluded.revision``: the number the
proposed row drew from ``expenses.revisions`` before the upsert met the existing row. When that
row was locked by a concurrent transaction, the upsert waited, and once that transaction had
committed a larger number it wrote its own smaller one over it: the month's revision went down,
against 0014's promise, and a consumer comparing sums of revisions could take a changed month
for an unchanged one. The update now draws its number as the monthly totals' does, after the
wait.

Revision ID: 0017
Revises: 0016
"""

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

SCHEMA = "expenses"
# 0014's LONGEST_RATE_AGE_DAYS.
LONGEST_RATE_AGE_DAYS = 366


def _rates_changed(*, revision: str) -> str:
    """0015's trigger function, an updated row's revision being ``revision``."""

    def bump(rows: str) -> str:
        return f"""
        INSERT INTO {SCHEMA}.rate_revisions AS r (user_id, month)
        SELECT DISTINCT user_id, month::date
        FROM (SELECT DISTINCT user_id, day FROM {rows} changed
              WHERE changed.user_id IS NULL OR EXISTS
                  (SELECT FROM {SCHEMA}.owners o WHERE o.user_id = changed.user_id)) days,
             generate_series(date_trunc('month', day), day + {LONGEST_RATE_AGE_DAYS},
                             interval '1 month') AS month
        ORDER BY 1, 2
        ON CONFLICT ON CONSTRAINT rate_revisions_key DO UPDATE SET revision = {revision};
        """

    changed_rows = (
        "((SELECT * FROM new_rows EXCEPT SELECT * FROM old_rows) "
        "UNION ALL (SELECT * FROM old_rows EXCEPT SELECT * FROM new_rows))"
    )
    return f"""
    CREATE OR REPLACE FUNCTION {SCHEMA}.rate_revisions_changed() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'INSERT' THEN {bump("new_rows")}
        ELSIF TG_OP = 'DELETE' THEN {bump("old_rows")}
        ELSE {bump(changed_rows)}
        END IF;
        RETURN NULL;
    END $$
    """


def upgrade() -> None:
    op.execute(_rates_changed(revision=f"nextval('{SCHEMA}.revisions')"))


def downgrade() -> None:
    op.execute(_rates_changed(revision="excluded.revision"))
