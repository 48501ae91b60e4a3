"""The reports service: budgets, spending summaries and trends."""
