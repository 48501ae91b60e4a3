"""What every service shares: configuration, database, logging, errors, HTTP middleware, health."""
