"""Direct PostgreSQL source: pgoutput logical replication, no Kafka (see docs/direct-mode.md).

Public API: :class:`PostgresSource` (the Source), :class:`TableSnapshot` (consistent
snapshot of some tables), :func:`preflight`, :func:`slot_status`, :func:`drop_slot`.
"""
from .pgoutput import PgOutputDecoder
from .preflight import PreflightReport, preflight
from .replication import PostgresSource
from .slot import SlotInfo, drop_slot, slot_status
from .snapshot import TableSnapshot

__all__ = ["PgOutputDecoder", "PostgresSource", "PreflightReport", "SlotInfo", "TableSnapshot",
           "drop_slot", "preflight", "slot_status"]
