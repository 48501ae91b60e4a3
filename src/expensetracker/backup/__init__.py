"""Backups of the whole database: pg_dump archives with a manifest, verified by restoring them."""
