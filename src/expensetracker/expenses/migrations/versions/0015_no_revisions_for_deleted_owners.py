"""No rate revision for an owner who is being deleted.

Deleting an owner row (an account deleted: ``owners.forget_user``) cascades to the user's own
rates, and migration 0014's trigger then gave that user's months a fresh revision: a row
referring to the owner row being deleted, so its foreign key failed the whole deletion. The
account's expenses data stayed, and the consumer of account events retried that event for ever,
applying none after it. A revision only tells its owner's readers that their rates changed; an
owner who is gone has none.

Revision ID: 0015
Revises: 0014
"""

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

SCHEMA = "expenses"
# 0014's LONGEST_RATE_AGE_DAYS.
LONGEST_RATE_AGE_DAYS = 366


def _rates_changed(*, owners_only: bool) -> str:
    """0014's trigger function; with ``owners_only`` it skips the rows of owners that are gone
    (the providers' rates have none)."""
    owners = (
        f" WHERE changed.user_id IS NULL OR EXISTS "
        f"(SELECT FROM {SCHEMA}.owners o WHERE o.user_id = changed.user_id)"
        if owners_only
        else ""
    )

    def bump(rows: str) -> str:
        return f"""
        INSERT INTO {SCHEMA}.rate_revisions AS r (user_id, month)
        SELECT DISTINCT user_id, month::date
        FROM (SELECT DISTINCT user_id, day FROM {rows} changed{owners}) days,
             generate_series(date_trunc('month', day), day + {LONGEST_RATE_AGE_DAYS},
                             interval '1 month') AS month
        ORDER BY 1, 2
        ON CONFLICT ON CONSTRAINT rate_revisions_key DO UPDATE SET revision = excluded.revision;
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
    op.execute(_rates_changed(owners_only=True))


def downgrade() -> None:
    op.execute(_rates_changed(owners_only=False))
