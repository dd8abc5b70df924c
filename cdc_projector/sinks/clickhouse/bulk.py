"""Bulk loads of a table view: rows encoded in another process, inserted as Native blocks.

A rebuild loads the initial snapshot of a ``kind: table`` shadow on every core
(:mod:`cdc_projector.rebuild.bulk`): worker processes compute the view rows and the
mirror rows of a chunk and encode them here - with the very encoders
:meth:`TableView.rows_for <.tables.TableView.rows_for>` and
:func:`~.state.mirror_record` that ``write`` uses - into ClickHouse's Native format,
one file per table and chunk; the process holding the connection inserts the files
(:meth:`ClickHouseProjectionTarget.bulk_write <.sink.ClickHouseProjectionTarget.bulk_write>`;
embedded chDB reads them itself, without the GIL).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from ...errors import ProjectionError
from ..base import ViewChange
from . import ddl
from .state import MIRROR_NAMES, MIRROR_TYPES, mirror_record
from .tables import TableView

if TYPE_CHECKING:  # pragma: no cover
    from ...engine.mirror import MirrorRow
    from .sink import ClickHouseProjectionTarget


def native_block(names: Sequence[str], types: Sequence[str], columns: Sequence[Sequence[Any]]) -> bytes:
    """``columns`` (one sequence of values per column) as one ClickHouse Native block,
    serialized by clickhouse-connect exactly as its ``insert`` sends them."""
    from clickhouse_connect.datatypes.registry import get_from_name
    from clickhouse_connect.driver.insert import InsertContext
    from clickhouse_connect.driver.transform import NativeTransform
    context = InsertContext("t", list(names), [get_from_name(t) for t in types], list(columns),
                            column_oriented=True)
    out = bytearray()
    for i, chunk in enumerate(NativeTransform.build_insert(context)):
        if i == 0:
            chunk = chunk[chunk.index(b"\n") + 1:]     # the INSERT statement before the data
        out += chunk
    if context.insert_exception is not None:
        raise context.insert_exception
    return bytes(out)


def _columns(rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """Rows pivoted to columns (one list comprehension per column: ``zip(*rows)`` over tens of
    thousands of rows costs three times more)."""
    return [[r[i] for r in rows] for i in range(len(rows[0]))] if rows else []


@dataclass
class EncodedChunk:
    """One chunk of a table view's bulk load, ready to insert (files in a temp directory)."""

    rows: int
    version: int
    spec: ddl.TableSpec | None
    view_file: str | None
    view_columns: tuple[str, ...] = ()
    mirror_file: str | None = None
    #: changes whose values the view cannot hold: (change, message, hint), dead-lettered by the loader
    rejected: list[tuple[ViewChange, str, str | None]] = field(default_factory=list)
    upserted: int = 0
    deleted: int = 0


class TableChunkEncoder:
    """Encodes chunks of one table projection's changes and mirror rows (any process)."""

    def __init__(self, target: "ClickHouseProjectionTarget", directory: str) -> None:
        self.plan = target.plan
        self._target = target
        self.spec: ddl.TableSpec | None = target.spec if isinstance(target.spec, ddl.TableSpec) else None
        self._view: TableView | None = None
        self.directory = directory

    def encode(self, name: str, changes: Sequence[ViewChange], rows: Sequence["MirrorRow"],
               ver: int) -> EncodedChunk:
        """Files ``<name>.view.native`` / ``<name>.mirror.native`` with the rows ``write`` would insert."""
        out = EncodedChunk(rows=len(rows), version=ver, spec=None, view_file=None)
        if changes:
            if self._view is None:
                spec = self.spec or self._target._spec_from(changes[0])  # noqa: SLF001 - same spec as write
                assert isinstance(spec, ddl.TableSpec)
                self.spec = spec
                self._view = TableView(None, spec)  # type: ignore[arg-type]  # encoding only: no connection
            view = self._view
            rejected: list[tuple[ViewChange, ProjectionError]] = []
            data = view.rows_for(self._target._flatten(changes), ver, rejected)  # noqa: SLF001
            out.rejected = [(c, e.message, e.hint) for c, e in rejected]
            out.spec = self.spec
            if data:
                names = [c.name for c in view._columns] + ["_version", "_is_deleted"]  # noqa: SLF001
                types = [c.type.name for c in view._columns] + ["UInt128", "UInt8"]    # noqa: SLF001
                out.view_file = self._write(f"{name}.view.native", native_block(names, types, _columns(data)))
                out.view_columns = tuple(names)
                out.deleted = sum(1 for r in data if r[-1])
                out.upserted = len(data) - out.deleted
        if rows:
            projection = self.plan.name
            records = [mirror_record(projection, r) for r in rows]
            out.mirror_file = self._write(f"{name}.mirror.native",
                                          native_block(MIRROR_NAMES, MIRROR_TYPES, _columns(records)))
        return out

    def _write(self, name: str, data: bytes) -> str:
        path = os.path.join(self.directory, name)
        with open(path, "wb") as f:
            f.write(data)
        return path
