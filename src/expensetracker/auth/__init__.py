"""The auth service: users, credentials, sessions and signing keys."""
