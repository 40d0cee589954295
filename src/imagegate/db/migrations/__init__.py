"""Alembic's migration environment for the ledger (a package so that it ships in the wheel)."""
