"""The database: the request ledger's tables (`tables`), the `Ledger` that writes and reads
them (`ledger`), and their schema migrations (`migrate`, Alembic scripts in `migrations/`)."""

from .ledger import Ledger
from .tables import Base, RequestRow

__all__ = ["Base", "Ledger", "RequestRow"]
