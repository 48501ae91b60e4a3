"""Tables of the reports service, all in its own PostgreSQL schema."""

from sqlalchemy import MetaData

SCHEMA = "reports"

metadata = MetaData(schema=SCHEMA)
