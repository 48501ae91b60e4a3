"""Tables of the auth service, all in its own PostgreSQL schema."""

from sqlalchemy import MetaData

SCHEMA = "auth"

metadata = MetaData(schema=SCHEMA)
