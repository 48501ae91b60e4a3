"""A shorter pending list for the search index: 1 MB instead of PostgreSQL's 4 MB.

GIN adds new rows to a pending list that every search reads whole until it is merged into the
index. With 4 MB (about 11,000 expenses) the list a search found after a run of creations cost
it up to 5 ms more (0.3 ms with an empty list, for a word in no row); 1 MB bounds that near
1 ms. Measured on 1,000,000 expenses: creations one at a time and imports in batches of 5,000
cost the same with either size, and the longest single creation (the one that merges the list)
fell from 30-57 ms to 22-25 ms (docs/performance.md).

Revision ID: 0016
Revises: 0015
"""

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

INDEX = "expenses.ix_expenses_user_search"


def upgrade() -> None:
    op.execute(f"ALTER INDEX {INDEX} SET (gin_pending_list_limit = 1024)")  # in kB


def downgrade() -> None:
    op.execute(f"ALTER INDEX {INDEX} RESET (gin_pending_list_limit)")
