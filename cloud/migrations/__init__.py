"""Alembic migrations of the cloud's schema; ``cloud.migrate`` runs them (the cloud upgrades to head at start)."""
