"""cdc-projector: CQRS read models from a legacy PostgreSQL database."""
from __future__ import annotations

__version__ = "0.1.0"

from .errors import CdcProjectorError
from .events import ChangeEvent, Op, Position, TableId
from .ops.wait import current_lsn, wait_for

__all__ = ["CdcProjectorError", "ChangeEvent", "Op", "Position", "TableId", "__version__", "current_lsn", "wait_for"]
