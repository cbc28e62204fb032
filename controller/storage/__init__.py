"""State storage: SQL through SQLAlchemy Core, SQLite by default, PostgreSQL alike.

It must not hold the legal log (a store of its own) nor any statistics.
"""

from controller.storage.db import (
    UNAVAILABLE,
    Database,
    StorageError,
    migrate,
    open_database,
    retry_while_unavailable,
)

__all__ = [
    "UNAVAILABLE",
    "Database",
    "StorageError",
    "migrate",
    "open_database",
    "retry_while_unavailable",
]
