"""Bulk loads of a table view: rows encoded in another process, inserted as Native blocks.

A rebuild loads the initial snapshot of a ``kind: table`` shadow on every core
(:mod:`cdc_projector.rebuild.bulk`): worker processes compute the view rows and the
mirror rows of a chunk and encode them here - with the very encoders
:meth:`TableView.row_for <.tables.TableView.row_for>` and
:func:`~.state.mirror_record` that ``write`` uses - into ClickHouse's Native format,
one file per table and chunk; the process holding the connection inserts the files
(:meth:`ClickHouseProjectionTarget.bulk_write <.sink.ClickHouseProjectionTarget.bulk_write>`;
embedded chDB reads them itself, without the GIL).
"""
from __future__ import annotations

import array
import datetime as dt
import decimal
import math
import os
import re
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ..base import ViewChange
from . import ddl
from .state import MIRROR_NAMES, MIRROR_TYPES, mirror_record
from .tables import TableView

if TYPE_CHECKING:  # pragma: no cover
    from ...engine.mirror import MirrorRow
    from .sink import ClickHouseProjectionTarget


def native_block(names: Sequence[str], types: Sequence[str], columns: Sequence[Sequence[Any]]) -> bytes:
    """``columns`` (one sequence of values per column) as one ClickHouse Native block: the bytes
    clickhouse-connect's ``insert`` sends for them (one block), decimals of up to 18 digits and
    microsecond UTC timestamps written without its per-value Python (:func:`_fast_column`)."""
    from clickhouse_connect.datatypes.registry import get_from_name
    from clickhouse_connect.driver.insert import InsertContext
    rows = len(columns[0]) if columns else 0
    col_types = [get_from_name(t) for t in types]
    context = InsertContext("t", list(names), col_types, list(columns), column_oriented=True, block_size=rows)
    out = bytearray()
    _leb128(len(names), out)
    _leb128(rows, out)
    for name, type_name, col_type, data in zip(names, types, col_types, columns):
        for text in (name, col_type.insert_name):
            raw = text.encode()
            _leb128(len(raw), out)
            out += raw
        fast = _fast_column(type_name, data)
        if fast is not None:
            out += fast
            continue
        context.start_column(name)
        col_type.write_column(data, out, context)
        if context.insert_exception is not None:
            raise context.insert_exception
    return bytes(out)


def _leb128(value: int, out: bytearray) -> None:
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return


_DECIMAL_RE = re.compile(r"^(Nullable\()?Decimal\((\d+), (\d+)\)\)?$")
_DT64_UTC = {"DateTime64(6, 'UTC')": False, "Nullable(DateTime64(6, 'UTC'))": True}


def _fast_column(type_name: str, values: Sequence[Any]) -> bytes | None:
    """The Native data of a ``Decimal(p<=18, s)`` or ``DateTime64(6, 'UTC')`` column (nullable
    or not) holding only decimals / aware datetimes (and NULLs): the very bytes
    clickhouse-connect writes (its ``int(Decimal(str(x)) * 10**s)`` at precision ``p``, exact
    for a value of at most ``p`` digits; ``floor(x.timestamp()) * 10**6 + x.microsecond``),
    computed in fewer steps. None for anything else (clickhouse-connect writes it)."""
    nullable = type_name.startswith("Nullable(")
    m = _DECIMAL_RE.match(type_name)
    if m is not None and bool(m.group(1)) == nullable:
        p, s = int(m.group(2)), int(m.group(3))
        if p > 18:
            return None
        mult, bound = 10 ** s, 10 ** p
        ints = []
        for x in values:
            if x is None:
                if not nullable:
                    return None
                ints.append(0)
                continue
            if type(x) is not decimal.Decimal or not x.is_finite():
                return None
            n, d = x.as_integer_ratio()
            if mult % d:
                return None
            v = n * (mult // d)
            if not -bound < v < bound:
                return None
            ints.append(v)
        data = array.array("i" if p <= 9 else "q", ints)
    elif type_name in _DT64_UTC and _DT64_UTC[type_name] == nullable:
        ticks = []
        for x in values:
            if x is None:
                if not nullable:
                    return None
                ticks.append(0)
                continue
            if type(x) is not dt.datetime or x.utcoffset() is None:
                return None
            ticks.append(math.floor(x.timestamp()) * 1_000_000 + x.microsecond)
        data = array.array("q", ticks)
    else:
        return None
    if sys.byteorder != "little":
        data.byteswap()
    head = bytes([1 if x is None else 0 for x in values]) if nullable else b""
    return head + data.tobytes()


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
    """Encodes chunks of one table projection's view rows and mirror rows (any process)."""

    def __init__(self, target: "ClickHouseProjectionTarget", directory: str) -> None:
        self.plan = target.plan
        self._target = target
        self.spec: ddl.TableSpec | None = target.spec if isinstance(target.spec, ddl.TableSpec) else None
        self._view: TableView | None = None
        self.directory = directory

    def view(self, key: Mapping[str, Any]) -> TableView:
        """The view's row encoder (:meth:`TableView.row_for`), its spec typed by ``key`` the first
        time (as ``write`` types it by its first change's key)."""
        if self._view is None:
            spec = self.spec or self._target._spec_from(ViewChange(key, None))  # noqa: SLF001 - as write
            assert isinstance(spec, ddl.TableSpec)
            self.spec = spec
            self._view = TableView(None, spec)  # type: ignore[arg-type]  # encoding only: no connection
        return self._view

    def encode(self, name: str, view_rows: Sequence[list[Any]], rows: Sequence["MirrorRow"], ver: int,
               rejected: Sequence[tuple[ViewChange, str, str | None]] = ()) -> EncodedChunk:
        """Files ``<name>.view.native`` / ``<name>.mirror.native`` with the rows ``write`` would
        insert: ``view_rows`` from :meth:`view` (version ``ver``), the mirror rows encoded here."""
        out = EncodedChunk(rows=len(rows), version=ver, spec=self.spec, view_file=None, rejected=list(rejected))
        if view_rows:
            view = self._view
            assert view is not None
            names = [c.name for c in view._columns] + ["_version", "_is_deleted"]  # noqa: SLF001
            types = [c.type.name for c in view._columns] + ["UInt128", "UInt8"]    # noqa: SLF001
            out.view_file = self._write(f"{name}.view.native", native_block(names, types, _columns(view_rows)))
            out.view_columns = tuple(names)
            out.deleted = sum(1 for r in view_rows if r[-1])
            out.upserted = len(view_rows) - out.deleted
        if rows:
            projection = self.plan.name
            indexed = self.plan.indexed
            records = [mirror_record(projection, r, indexed.get(r.table, ())) for r in rows]
            out.mirror_file = self._write(f"{name}.mirror.native",
                                          native_block(MIRROR_NAMES, MIRROR_TYPES, _columns(records)))
        return out

    def _write(self, name: str, data: bytes) -> str:
        path = os.path.join(self.directory, name)
        with open(path, "wb") as f:
            f.write(data)
        return path
