"""Tables of the expenses service, all in its own PostgreSQL schema."""

from sqlalchemy import MetaData

SCHEMA = "expenses"

metadata = MetaData(schema=SCHEMA)
