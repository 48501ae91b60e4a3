"""The expenses service: expenses, categories, tags, idempotency records, import and export."""
