"""The ClickHouse sink: the engine's :class:`~cdc_projector.sinks.base.Sink` protocol over
:mod:`.tables` / :mod:`.aggregates`, with the mirror, checkpoints and dead letters
kept in the same ClickHouse database as the views.

``write(changes, rows, checkpoint)`` keeps the crash-safe order: view rows
(aggregates: group rows, then contributions), then mirror rows, then the
checkpoint. Every row written carries the batch's source position as its
``_version``, so replaying a batch after a crash rewrites the same result.
"""
from __future__ import annotations

import datetime as dt
import decimal
import itertools
import logging
import os
import re
import time
import uuid
from typing import TYPE_CHECKING, Any, Collection, Mapping, Sequence

import orjson

from ...config.models import SinkConfig
from ...engine import definition as fingerprints
from ...errors import ProjectionError, SinkError
from ...events import Position, TableId
from ...expr.types import SqlType
from ..base import StoredCheckpoint, ViewChange, WriteStats, register_planner, register_sink
from . import ddl
from .aggregates import AggregateView
from .client import ClickHouse, connect, trace
from .state import MIRROR, MIRROR_NAMES, StateTables, checkpoint_record, dumps, loads, mirror_record, version
from .tables import TableView

if TYPE_CHECKING:  # pragma: no cover
    from .bulk import EncodedChunk
    from ...config.models import Projection
    from ...engine.deadletter import DeadLetter
    from ...engine.mirror import MirrorRow
    from ...engine.plan import ProjectionPlan

DEADLETTERS = "_cdcp_deadletters"
#: :meth:`ClickHouseProjectionTarget.compact` merges a table when tombstones are this share of its rows ...
COMPACT_MIN_SHARE = float(os.environ.get("CDCP_COMPACT_MIN_SHARE", "0.1"))
#: ... and at least this many (both lowered by randomized campaigns, scripts/fuzz_oracle.py, so
#: that the few tombstones of a small test database are collected too)
COMPACT_MIN_ROWS = int(os.environ.get("CDCP_COMPACT_MIN_ROWS", "1000"))
log = logging.getLogger(__name__)


def infer_sql_type(value: Any) -> SqlType:
    """SqlType of a canonical Python value (used when the catalog gave no key types)."""
    if isinstance(value, bool):
        return SqlType("bool")
    if isinstance(value, int):
        return SqlType("int")
    if isinstance(value, decimal.Decimal):
        return SqlType("numeric")
    if isinstance(value, float):
        return SqlType("float")
    if isinstance(value, uuid.UUID):
        return SqlType("uuid")
    if isinstance(value, dt.datetime):
        return SqlType("timestamptz" if value.tzinfo else "timestamp")
    if isinstance(value, dt.date):
        return SqlType("date")
    return SqlType("text")


#: rows of one source table the mirror store remembers (the older half goes past it)
MIRROR_CACHE = 50_000
_UNKNOWN: Any = object()
#: an integer key id of at most 38 digits (an Int128, as the stored maximum is computed)
_INT_KEY = re.compile(r"^\[(-?[0-9]{1,38})\]$")


class ClickHouseStateStore:
    """The engine's mirror (:class:`~cdc_projector.engine.mirror.StateStore`) in ``_cdcp_mirror``.

    Remembers the rows it loaded (absent ones too) and wrote, per source table (bounded), so a
    batch reads only the key ids it does not know; for integer keys (key id ``[N]``) it also
    knows the highest stored one: a higher key id (a new row of a sequence) is absent without a
    read. Valid because this process is the only writer of the projection's mirror rows and a
    row is never changed once built; dropped by :meth:`forget` (a failed write, and every
    (re)open of the projection: a rebuild's swap replaces the mirror rows)."""

    def __init__(self, state: StateTables, projection: str, remember: bool = True,
                 indexed: Mapping[TableId, Collection[str]] | None = None) -> None:
        self._state = state
        self.projection = projection
        #: per source table, the columns rows are looked up by (their canonical values are
        #: stored); None: every column
        self._indexed = indexed
        #: False (a ClickHouse server, which other processes may write too): nothing is kept
        self.remember = remember
        self._known: dict[TableId, dict[str, "MirrorRow | None"]] = {}
        self._top: dict[TableId, Any] = {}

    def forget(self) -> None:
        self._known.clear()
        self._top.clear()

    def _rows(self, table: TableId, found: Sequence[tuple[str, str, str | None, int]]) -> list["MirrorRow"]:
        from ...engine.mirror import MirrorRow
        from .state import position_of
        return [MirrorRow(table, loads(key), None if row is None else loads(row), position_of(int(ver)),
                          _kid=kid) for kid, key, row, ver in found]

    def _highest(self, table: TableId) -> float:
        """The highest integer key id (of at most 38 digits) stored for ``table`` (-inf: none)."""
        top = self._top.get(table, _UNKNOWN)
        if top is _UNKNOWN:
            top = self._top[table] = self._state.mirror_max_int_key(self.projection, table)
        return top  # type: ignore[no-any-return]

    def load(self, table: TableId, key_ids: Collection[str]) -> dict[str, "MirrorRow"]:
        from ...engine.mirror import MirrorRow
        from .state import position_of
        known = self._known.setdefault(table, {})
        out: dict[str, MirrorRow] = {}
        missing: list[str] = []
        for kid in key_ids:
            row = known.get(kid, _UNKNOWN)
            if row is _UNKNOWN:
                missing.append(kid)
            elif row is not None:
                out[kid] = row
        if missing and self.remember:
            top = self._highest(table)
            unknown = []
            for kid in missing:
                m = _INT_KEY.match(kid)
                if m is not None and int(m.group(1)) > top:
                    known[kid] = None                     # above every stored key: absent
                else:
                    unknown.append(kid)
            missing = unknown
        if not missing:
            return out
        found = self._state.mirror_load(self.projection, table, missing)
        for kid in missing:
            known[kid] = None
        for kid, key, row, ver, departed in found:
            r = MirrorRow(table, loads(key), None if row is None else loads(row), position_of(int(ver)),
                          departed=None if departed is None else loads(departed), _kid=kid)
            out[kid] = known[kid] = r
        if self.remember:
            self._trim(known)
        else:
            self.forget()
        return out

    def find_by_column(self, table: TableId, column: str, values: Collection[Any]) -> list["MirrorRow"]:
        from ...engine.mirror import key_id
        canon = [key_id([v]) for v in values if v is not None]
        if not canon:
            return []
        return self._rows(table, self._state.mirror_find(self.projection, table, column, canon))

    def find_all(self, table: TableId) -> list["MirrorRow"]:
        return self._rows(table, self._state.mirror_all(self.projection, table))

    def write(self, rows: Sequence["MirrorRow"], extra: Sequence[list[Any]] = ()) -> None:
        """Store ``rows``, and ``extra`` mirror records (a checkpoint) in the same insert."""
        projection, indexed = self.projection, self._indexed
        out = [mirror_record(projection, r, None if indexed is None else indexed.get(r.table, ()))
               for r in rows]
        out.extend(extra)
        if not out:
            return
        try:
            self._state.mirror_write(out)
        except BaseException:
            self.forget()                # the insert may have landed in part
            raise
        if not self.remember:
            return
        for r in rows:                   # FINAL keeps the highest position: so does the cache
            known = self._known.setdefault(r.table, {})
            kid = r.key_id
            before = known.get(kid, _UNKNOWN)
            if before is _UNKNOWN:
                if r.stored is not None and r.stored > r.position:
                    continue             # an older change than the stored row: it stays unknown
            elif before is not None and before.position > r.position:
                continue
            known.pop(kid, None)
            known[kid] = r
            top = self._top.get(r.table, _UNKNOWN)
            if top is not _UNKNOWN:
                m = _INT_KEY.match(kid)
                if m is not None and int(m.group(1)) > top:
                    self._top[r.table] = int(m.group(1))
        for known in self._known.values():
            self._trim(known)

    @staticmethod
    def _trim(known: dict[str, Any]) -> None:
        if len(known) > MIRROR_CACHE:
            for kid in list(itertools.islice(known, len(known) - MIRROR_CACHE // 2)):
                del known[kid]


class ClickHouseProjectionTarget:
    """View, mirror and checkpoint of one table or aggregate projection."""

    def __init__(self, sink: "ClickHouseSink", plan: "ProjectionPlan",
                 spec: ddl.Spec | None = None) -> None:
        if plan.kind not in ("table", "aggregate"):
            raise SinkError(f"projection {plan.name!r}: kind {plan.kind!r} cannot be stored in ClickHouse",
                            hint="ClickHouse sinks hold `table` and `aggregate` projections")
        if plan.embeds:
            raise SinkError(f"projection {plan.name!r}: embeds are not supported in a ClickHouse table",
                            hint="use a document projection (MongoDB) for 1:N arrays")
        self._sink = sink
        self.plan = plan
        self.spec = spec
        self._view: TableView | AggregateView | None = None
        self._state = ClickHouseStateStore(sink.state, plan.name, remember=sink.ch.remembers, indexed=plan.indexed)
        self._ckpt_version = -1
        self._last_version = 0
        self._ckpt_position_version = 0
        self._recovered = False
        if spec is not None:
            self._open(spec)

    @property
    def state(self) -> ClickHouseStateStore:
        return self._state

    def _open(self, spec: ddl.Spec) -> None:
        ddl.apply(self._sink.ch, spec)
        self.spec = spec
        self._view = TableView(self._sink.ch, spec) if isinstance(spec, ddl.TableSpec) \
            else AggregateView(self._sink.ch, spec)

    def _spec_from(self, change: ViewChange) -> ddl.Spec:
        """Build the spec from the plan, taking key types from the first change's key values."""
        key_types = {k: infer_sql_type(v) for k, v in change.key.items()}
        table = self.plan.target
        if self.plan.kind == "table":
            fields: dict[str, SqlType] = {f.name: f.expr.type for f in self.plan.fields}
            for lk in self.plan.lookups:
                fields.update({f.name: f.expr.type for f in lk.fields})
            return ddl.table_spec(self.plan.name, table, key_types, fields)
        groups = getattr(self.plan, "groups", None)
        measures = getattr(self.plan, "measures", None)
        if groups is None or not measures:
            raise SinkError(f"aggregate {self.plan.name!r}: the engine plan carries no group_by/measures",
                            hint="build the target with an explicit AggregateSpec")
        return ddl.aggregate_spec(
            self.plan.name, table, key_types, {g.name: g.expr.type for g in groups},
            [(name, m.func, m.arg.type if m.arg is not None else None, m.distinct) for name, m in measures])

    def _flatten(self, changes: Sequence[ViewChange]) -> list[ViewChange]:
        if not self.plan.lookups:
            return list(changes)
        out = []
        for c in changes:
            if c.values is None:
                out.append(c)
                continue
            out.append(ViewChange(c.key, flatten_lookups(self.plan, c.values)))
        return out

    def _recover(self, ver: int) -> int:
        """First view write of this process: versions continue above everything stored (a batch
        that crashed before its checkpoint may have written a higher version than the replay's
        positions: the replay must win), and an aggregate recomputes the groups written after
        the checkpoint (see :meth:`AggregateView.recover`)."""
        assert self._view is not None
        if self._ckpt_version < 0:
            self.load_checkpoint()
        stored = self._view.max_version()
        if isinstance(self._view, AggregateView) and stored > self._ckpt_position_version:
            self._view.recover(self._ckpt_position_version)
        self._recovered = True
        self._last_version = max(ver, stored)
        return self._last_version

    def _dead_letter(self, change: ViewChange, error: ProjectionError) -> None:
        """A row whose value ClickHouse cannot hold exactly: the row keeps its stored content,
        the failure becomes a dead letter (the mirror still advances, like an expression error)."""
        from ...engine.deadletter import DeadLetter, letter_id
        reason = f"{error.message} ({error.hint})" if error.hint else error.message
        origin = {"sink": self._sink.name, "key": dumps(dict(change.key)), "row_key": dict(change.key)}
        letter = DeadLetter(id=letter_id(self.plan.name, [], f"{reason}|{origin['key']}"),
                            projection=self.plan.name, reason=reason,
                            raw=dumps(None if change.values is None else dict(change.values)), origin=origin)
        self._sink.dead_letters().put(letter)
        log.warning("%s: row %s not stored: %s", self.plan.name, dict(change.key), reason)

    def load_checkpoint(self) -> StoredCheckpoint | None:
        # the pipeline (re)opens: what the view and the mirror remember of their stored rows is
        # dropped (a rebuild may have exchanged the tables and the mirror while it was paused)
        self._state.forget()
        if isinstance(self._view, AggregateView):
            self._view.forget()
        found = self._sink.state.load_checkpoint(self.plan.name)
        if found is None:
            self._ckpt_version = 0
            return None
        streams, position, ts, updated, ver, definition = found
        self._ckpt_version = ver
        if position is not None:
            self._last_version = max(self._last_version, version(position))
            self._ckpt_position_version = version(position)
        return StoredCheckpoint(streams, position, ts, updated, fingerprints.loads(definition))

    def write(self, changes: Sequence[ViewChange], rows: Sequence["MirrorRow"],
              checkpoint: StoredCheckpoint | None) -> WriteStats:
        t0 = time.perf_counter()
        stats = WriteStats(mirror_rows=len(rows))
        positions = [r.position for r in rows]
        if checkpoint is not None and checkpoint.position is not None:
            positions.append(checkpoint.position)
        # never 0 and never below what this target wrote before: a batch without
        # positions (nothing new) rewrites with the last version it knows
        ver = max(version(max(positions)) if positions else 0, self._last_version)
        self._last_version = ver
        if changes:
            if self._view is None:
                self._open(self.spec or self._spec_from(changes[0]))
            assert self._view is not None
            if not self._recovered:
                ver = self._recover(ver)
            flat = self._flatten(changes) if self.plan.kind == "table" else list(changes)
            rejected: list[tuple[ViewChange, ProjectionError]] = []
            stats.upserted, stats.deleted = self._view.write(flat, ver, rejected)
            stats.rejected = len(rejected)
            for change, error in rejected:
                self._dead_letter(change, error)
        extra: list[list[Any]] = []
        if checkpoint is not None:                 # one insert with the mirror rows (state.py)
            if self._ckpt_version < 0:
                self.load_checkpoint()
            ck_ver = max(version(checkpoint.position), self._ckpt_version + 1)
            extra.append(checkpoint_record(self.plan.name, dict(checkpoint.streams), checkpoint.position,
                                           checkpoint.commit_ts_us, ck_ver, fingerprints.dumps(checkpoint.definition)))
        self._state.write(rows, extra)
        if extra:
            self._ckpt_version = ck_ver
        trace("write", t0, self.plan.name, len(changes))
        return stats

    def bulk_write(self, chunks: Sequence["EncodedChunk"]) -> WriteStats:
        """Insert chunks encoded by :class:`~.bulk.TableChunkEncoder`: their view rows as one
        insert, then their mirror rows as one (one part each, however many chunks); no
        checkpoint (the loader writes it at the end). The files are removed."""
        stats = WriteStats()
        try:
            views = [c for c in chunks if c.view_file is not None]
            if views:
                if self._view is None:
                    spec = self.spec or views[0].spec
                    assert spec is not None
                    self._open(spec)
                if not self._recovered:
                    self._recover(max(c.version for c in views))
                for columns in {c.view_columns for c in views}:
                    self._sink.ch.insert_files(self.plan.target + "_data", columns,
                                               [c.view_file for c in views
                                                if c.view_file is not None and c.view_columns == columns])
            for chunk in chunks:
                for change, message, hint in chunk.rejected:
                    self._dead_letter(change, ProjectionError(message, hint=hint))
            mirrors = [c.mirror_file for c in chunks if c.mirror_file is not None]
            if mirrors:
                self._sink.state.ensure()
                self._state.forget()            # rows written around the store: nothing it remembers holds
                self._sink.ch.insert_files(MIRROR, MIRROR_NAMES, mirrors)
        finally:
            for chunk in chunks:
                for path in (chunk.view_file, chunk.mirror_file):
                    if path is not None:
                        try:
                            os.unlink(path)
                        except OSError:
                            pass
        for chunk in chunks:
            stats.mirror_rows += chunk.rows
            stats.upserted += chunk.upserted
            stats.deleted += chunk.deleted
            self._last_version = max(self._last_version, chunk.version)
        return stats

    def read_view(self) -> list[dict[str, Any]]:
        if self._view is None:
            return []
        return self._view.read()

    def compact(self, min_share: float = COMPACT_MIN_SHARE, min_rows: int = COMPACT_MIN_ROWS,
                settled: Position | None = None) -> dict[str, Any]:
        """Drop the tombstones of deleted keys (and superseded versions) from the projection's
        tables whose tombstones are at least ``min_share`` of their stored rows and at least
        ``min_rows`` (:func:`ddl.compact_statements`; reads are unchanged: they skip both).
        With ``settled`` (the source never delivers an event below that position again), the
        same for the projection's mirror: the keys whose latest version is a tombstone below it
        (:meth:`StateTables.mirror_drop_tombstones`). Returns ``{table: {"rows": before,
        "tombstones": n, "after": rows left}}`` of the tables compacted. Called by the pipeline
        between batches (``runtime.compact_every_s``)."""
        ch = self._sink.ch
        done: dict[str, Any] = {}
        if settled is not None:
            state, below = self._sink.state, version(settled)
            tombstones, rows = state.mirror_tombstones(self.plan.name, below), state.mirror_rows(self.plan.name)
            if tombstones >= max(min_rows, min_share * rows):
                state.mirror_drop_tombstones(self.plan.name, below)
                done[MIRROR] = {"rows": rows, "tombstones": tombstones, "after": state.mirror_rows(self.plan.name)}
        for suffix in ddl.plan_suffixes(self.plan, scratch=False):
            table = self.plan.target + suffix
            if not ch.table_exists(table):
                continue
            qualified = ch.qualified(table)
            rows, tombstones = ch.query(f"SELECT count(), countIf(_is_deleted = 1) FROM {qualified}")[0]
            if tombstones < max(min_rows, min_share * rows):
                continue
            for statement in ddl.compact_statements(qualified):
                ch.command(statement)
            after = ch.query(f"SELECT count() FROM {qualified}")[0][0]
            done[table] = {"rows": int(rows), "tombstones": int(tombstones), "after": int(after)}
        return done

    def drop(self) -> None:
        self._state.forget()
        if self._view is not None:
            self._view.drop()
        self._sink.state.drop_projection(self.plan.name)

    def reset(self) -> None:
        # versions keep rising (they never go back), so what is written next wins anyway
        self._state.forget()
        if self._view is not None:
            self._view.truncate()
        else:                      # not opened yet in this process: the tables may exist
            ch = self._sink.ch
            for suffix in ddl.plan_suffixes(self.plan):
                ch.command(f"TRUNCATE TABLE IF EXISTS {ch.qualified(self.plan.target + suffix)}")
        self._sink.state.drop_projection(self.plan.name)


class ClickHouseDeadLetters:
    """Dead letters in ``_cdcp_deadletters`` (ReplacingMergeTree by projection and id)."""

    def __init__(self, ch: ClickHouse) -> None:
        self.ch = ch
        self._ready = False

    def _ensure(self) -> None:
        if not self._ready:
            self.ch.command(
                f"CREATE TABLE IF NOT EXISTS {self.ch.qualified(DEADLETTERS)} (projection_name String, id String, "
                "body String, status String, _version UInt64) ENGINE = ReplacingMergeTree(_version) "
                "ORDER BY (projection_name, id)")
            self._ready = True

    def put(self, letter: "DeadLetter") -> None:
        from ...engine.deadletter import event_to_json
        self._ensure()
        body = orjson.dumps({"reason": letter.reason, "events": [event_to_json(e) for e in letter.events],
                             "raw": letter.raw, "origin": dumps(letter.origin), "created_at": letter.created_at,
                             "resolution": dumps(letter.resolution)}).decode()
        self.ch.insert(DEADLETTERS, [[letter.projection, letter.id, body, letter.status, time.time_ns()]],
                       ["projection_name", "id", "body", "status", "_version"],
                       ["String", "String", "String", "String", "UInt64"])

    def _decode(self, projection: str, letter_id: str, body: str, status: str) -> "DeadLetter":
        from ...engine.deadletter import DeadLetter, event_from_json
        d = orjson.loads(body)
        return DeadLetter(letter_id, projection, d["reason"], [event_from_json(e) for e in d["events"]],
                          d["raw"], loads(d["origin"]), d["created_at"], status, loads(d["resolution"]))

    def list(self, projection: str, status: str | None = "open") -> list["DeadLetter"]:
        self._ensure()
        rows = self.ch.query(f"SELECT id, body, status FROM {self.ch.qualified(DEADLETTERS)} FINAL "
                             "WHERE projection_name = {p:String} ORDER BY id", {"p": projection})
        return [self._decode(projection, i, b, s) for i, b, s in rows if status is None or s == status]

    def get(self, projection: str, letter_id: str) -> "DeadLetter | None":
        return next((d for d in self.list(projection, None) if d.id == letter_id), None)

    def resolve(self, projection: str, letter_id: str, status: str, resolution: dict[str, Any]) -> None:
        letter = self.get(projection, letter_id)
        if letter is None:
            raise SinkError(f"no dead letter {letter_id!r} for projection {projection!r}")
        letter.status, letter.resolution = status, dict(resolution)
        self.put(letter)


class ClickHouseSink:
    """A ``type: clickhouse`` sink (embedded chDB or a server)."""

    def __init__(self, name: str, config: SinkConfig) -> None:
        self.name = name
        self.config = config
        self._ch: ClickHouse | None = None
        self._state: StateTables | None = None

    @property
    def ch(self) -> ClickHouse:
        if self._ch is None:
            raise SinkError(f"sink {self.name!r} is not connected")
        return self._ch

    @property
    def state(self) -> StateTables:
        if self._state is None:
            self._state = StateTables(self.ch)
            self._state.ensure()
        return self._state

    def connect(self) -> None:
        if self._ch is None:
            self._ch = connect(self.config.url, self.config.database)

    def projection(self, plan: "ProjectionPlan", spec: ddl.Spec | None = None) -> ClickHouseProjectionTarget:
        """The target of one projection; with ``spec`` its tables are created now."""
        return ClickHouseProjectionTarget(self, plan, spec)

    def dead_letters(self) -> ClickHouseDeadLetters:
        return ClickHouseDeadLetters(self.ch)

    def close(self) -> None:
        if self._ch is not None:
            self._ch.close()
            self._ch = None
            self._state = None


def plan_lines(name: str, projection: "Projection") -> list[str]:
    """What ``cdc-projector plan`` prints for a ClickHouse projection: its full DDL.

    Without the source catalog the root key and untyped expressions cannot be
    typed here; the key is shown as ``id Int64`` and noted as such.
    """
    from ...engine.plan import build_plan
    plan_ = build_plan(name, projection)
    target = ClickHouseProjectionTarget.__new__(ClickHouseProjectionTarget)
    target.plan = plan_
    try:
        spec = target._spec_from(ViewChange({"id": 0}, None))
    except SinkError as exc:
        return [f"-- {name}: cannot describe the ClickHouse layout: {exc}"]
    lines = [f"-- {projection.kind} {name} over {projection.from_}; key column(s) = the primary key of "
             f"{projection.from_} (shown as `id`); column types from the source catalog at run time"]
    return lines + ddl.describe(spec, "database").splitlines()


register_sink("clickhouse", ClickHouseSink)  # type: ignore[arg-type]
register_planner("clickhouse", plan_lines)


def flatten_lookups(plan: ProjectionPlan, values: Mapping[str, Any]) -> dict[str, Any]:
    """A table view's document with each lookup's sub-document spread into columns."""
    flat = dict(values)
    for lk in plan.lookups:
        flat.update(flat.pop(lk.name, None) or {})
    return flat
