"""The shadow of a projection and how it replaces the live one.

A rebuild writes into a *shadow* projection beside the live one: the same plan
renamed ``<name>__rebuild`` with target ``<target>__rebuild``. Because the sinks
derive every stored object from the plan's name and target, the shadow gets its
own view (collection / ClickHouse tables), its own mirror and its own checkpoint
without any special code in the sinks.

:class:`Swapper` replaces the live view, mirror and checkpoint by the shadow's,
while the live pipeline is stopped at a batch boundary. Each step is idempotent,
so an interrupted swap is completed by running the steps again (the shadow's
checkpoint carries a ``rebuild:swap`` journal entry until the swap is done):

1. mirror: the shadow's mirror becomes the live mirror (MongoDB rename; ClickHouse:
   the live rows of the shared mirror table are replaced by copies of the shadow's);
2. view: MongoDB ``renameCollection`` with ``dropTarget`` (atomic); FerretDB v1 does
   not implement ``dropTarget``, so there the live collection is *reconciled* to the
   shadow's documents (replace what differs, delete what is gone - never empty, each
   document atomic); ClickHouse ``EXCHANGE TABLES`` of the data (and contribution)
   tables under the unchanged live VIEW (atomic for readers); a table comment
   marks the shadow's tables so that an interrupted exchange is never repeated;
3. (caller) the live checkpoint, then the journal is removed, then the leftovers
   (the shadow objects now holding the old view) are dropped.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Protocol

from ..engine.definition import SHADOW_SUFFIX
from ..engine.plan import ProjectionPlan
from ..errors import RebuildError, SinkError
from ..sinks.base import ProjectionTarget, Sink, StoredCheckpoint

log = logging.getLogger(__name__)

SUFFIX = SHADOW_SUFFIX


def shadow_name(name: str) -> str:
    """The shadow projection's name for projection ``name``."""
    return f"{name}{SUFFIX}"


def shadow_plan(plan: ProjectionPlan) -> ProjectionPlan:
    """The live plan renamed: ``<name>__rebuild`` writing to ``<target>__rebuild``."""
    return dataclasses.replace(plan, name=shadow_name(plan.name), target=f"{plan.target}{SUFFIX}")


class Swapper(Protocol):
    """Sink-specific steps of a swap (see the module docs); every step is idempotent."""

    def prepare(self, shadow: ProjectionTarget, token: int) -> None:
        """Before the journal: make sure both views exist so the swap has two sides."""

    def swap_mirror(self) -> None:
        """The shadow's mirror becomes the live one (safe to repeat until the journal goes)."""

    def swap_view(self, token: int) -> None:
        """The shadow's view becomes the live one, atomically for readers where the store can."""

    def drop_leftovers(self) -> None:
        """Drop every shadow object (after the swap they hold the old view)."""

    def shadow_checkpoint(self) -> StoredCheckpoint | None:
        """The shadow's stored checkpoint (journal included), without creating anything."""

    def shadow_exists(self) -> bool:
        """Does any shadow object (view, mirror, checkpoint) exist?"""

    def live_view_label(self) -> str:
        """Where readers find the live view (for messages)."""

    def shadow_view_label(self) -> str:
        """Where the shadow view is (for ``--no-swap``)."""


# ---------------------------------------------------------------- MongoDB / FerretDB
class MongoSwapper:
    """Swap of a document projection in a MongoDB (or FerretDB) database."""

    def __init__(self, sink: Any, live: ProjectionPlan, shadow: ProjectionPlan) -> None:
        from ..sinks.mongodb.sink import mirror_collection
        self.sink, self.live, self.shadow = sink, live, shadow
        self.live_mirror = mirror_collection(live.name)
        self.shadow_mirror = mirror_collection(shadow.name)

    def _exists(self, name: str) -> bool:
        return bool(self.sink.db.list_collection_names(filter={"name": name}))

    def _rename(self, src: str, dst: str) -> None:
        """Rename ``src`` to ``dst`` replacing it: atomic ``dropTarget`` on MongoDB; FerretDB v1
        does not implement it (error 238), there: drop, then rename."""
        db = self.sink.database
        admin = self.sink.db.client.admin
        if self.sink.decimal128:                      # MongoDB (FerretDB v1 is detected at connect)
            try:
                admin.command("renameCollection", f"{db}.{src}", to=f"{db}.{dst}", dropTarget=True)
                return
            except Exception as exc:  # noqa: BLE001
                if getattr(exc, "code", None) not in (238, 48):
                    raise self._error(exc, f"renaming {src} to {dst}") from exc
        last: Exception | None = None
        for _attempt in range(5):
            try:
                if self._exists(dst):
                    self.sink.db[dst].drop()
                admin.command("renameCollection", f"{db}.{src}", to=f"{db}.{dst}")
                return
            except Exception as exc:  # noqa: BLE001 - FerretDB may report the dropped target briefly
                if getattr(exc, "code", None) != 48:
                    raise self._error(exc, f"renaming {src} to {dst}") from exc
                last = exc
                time.sleep(0.5)
        assert last is not None
        raise self._error(last, f"renaming {src} to {dst}") from last

    def _error(self, exc: Exception, what: str) -> SinkError:
        from ..sinks.mongodb.sink import translate
        return translate(exc, f"rebuild of {self.live.name}: {what}")

    def prepare(self, shadow: ProjectionTarget, token: int) -> None:
        for name in (self.shadow.target, self.live.target):
            if not self._exists(name):
                try:
                    self.sink.db.create_collection(name)
                except Exception as exc:  # noqa: BLE001 - created meanwhile: fine
                    if not self._exists(name):
                        raise self._error(exc, f"creating {name}") from exc

    def swap_mirror(self) -> None:
        if self._exists(self.shadow_mirror):
            self._rename(self.shadow_mirror, self.live_mirror)

    def swap_view(self, token: int) -> None:
        if not self._exists(self.shadow.target):
            return                                   # done by an earlier (interrupted) attempt
        if not self.sink.decimal128:                 # FerretDB v1: no dropTarget -> reconcile
            self._reconcile()
            self.sink.db[self.shadow.target].drop()
            return
        self._rename(self.shadow.target, self.live.target)

    def _reconcile(self) -> None:
        from pymongo import DeleteOne, ReplaceOne
        db = self.sink.db
        try:
            new = {repr(d["_id"]): d for d in db[self.shadow.target].find({})}
            old = {repr(d["_id"]): d for d in db[self.live.target].find({})}
        except Exception as exc:  # noqa: BLE001
            raise self._error(exc, "reading the views") from exc
        ops: list[Any] = [ReplaceOne({"_id": d["_id"]}, d, upsert=True)
                          for k, d in new.items() if old.get(k) != d]
        ops += [DeleteOne({"_id": d["_id"]}) for k, d in old.items() if k not in new]
        log.info("%s: reconciling %d changed document(s) into %s", self.live.name, len(ops), self.live.target)
        self.sink.bulk(db[self.live.target], ops, f"reconciling {self.live.target}")

    def shadow_checkpoint(self) -> StoredCheckpoint | None:
        from ..sinks.mongodb.sink import MongoProjectionTarget
        return MongoProjectionTarget(self.sink, self.shadow).load_checkpoint()

    def shadow_exists(self) -> bool:
        return (self._exists(self.shadow.target) or self._exists(self.shadow_mirror)
                or self.shadow_checkpoint() is not None)

    def drop_leftovers(self) -> None:
        from ..sinks.mongodb.sink import CHECKPOINTS, DEADLETTERS
        try:     # the journal (shadow checkpoint) first: see the module docs
            self.sink.db[CHECKPOINTS].delete_one({"_id": self.shadow.name})
            self.sink.db[DEADLETTERS].delete_many({"projection": self.shadow.name})
            for name in (self.shadow.target, self.shadow_mirror):
                if self._exists(name):
                    self.sink.db[name].drop()
        except Exception as exc:  # noqa: BLE001
            raise self._error(exc, "dropping the shadow") from exc

    def live_view_label(self) -> str:
        return f"{self.sink.database}.{self.live.target}"

    def shadow_view_label(self) -> str:
        return f"{self.sink.database}.{self.shadow.target}"


# ---------------------------------------------------------------- ClickHouse
MIRROR_COLUMNS = "source_table, key_id, key, row, canon, _version, departed"
#: table comment marking a table exchanged by the swap of one rebuild (+ its token)
_MARKER = "cdcp-rebuild:"


class ClickHouseSwapper:
    """Swap of a table or aggregate projection in a ClickHouse database (chDB or server)."""

    def __init__(self, sink: Any, live: ProjectionPlan, shadow: ProjectionPlan) -> None:
        self.sink, self.live, self.shadow = sink, live, shadow
        from ..sinks.clickhouse.ddl import plan_suffixes
        self.suffixes = tuple(plan_suffixes(live, scratch=False))
        self._shadow_suffixes = tuple(plan_suffixes(shadow))

    @property
    def ch(self) -> Any:
        return self.sink.ch

    def _exists(self, table: str) -> bool:
        return bool(self.ch.table_exists(table))

    def _comment(self, table: str) -> str:
        rows = self.ch.query("SELECT comment FROM system.tables WHERE database = {d:String} AND name = {n:String}",
                             {"d": self.ch.database, "n": table})
        return str(rows[0][0]) if rows else ""

    @staticmethod
    def marker(token: int) -> str:
        return f"{_MARKER}{token}"

    def prepare(self, shadow: ProjectionTarget, token: int) -> None:
        from ..sinks.clickhouse import ddl
        spec = getattr(shadow, "spec", None)
        other_layout = False
        if spec is not None:              # live tables (and view) exist with the same layout
            live_spec = dataclasses.replace(spec, table=self.live.target, projection=self.live.name)
            if ddl.plan(self.ch, live_spec).incompatible:
                # the live tables have another layout (e.g. an aggregate stored before per-group
                # state): they are exchanged whole, tables only the new layout has are created
                # empty on the live side, and the view is replaced after the exchange
                other_layout = True
            else:
                ddl.apply(self.ch, live_spec)
        for suffix in self.suffixes:
            live_t, shadow_t = self.live.target + suffix, self.shadow.target + suffix
            if not self._exists(live_t):
                if not self._exists(shadow_t):
                    continue                 # neither side ever held a row: nothing to swap
                if not other_layout:
                    raise RebuildError(f"rebuild of {self.live.name}: {live_t} does not exist",
                                       hint="run the projection once, or rebuild again")
                # a table only the new layout has: an empty twin on the live side, exchanged
                # (and marked) like the others
                self.ch.command(f"CREATE TABLE {self.ch.qualified(live_t)} AS {self.ch.qualified(shadow_t)}")
            elif not self._exists(shadow_t):   # the shadow never received a row: an empty twin
                self.ch.command(f"CREATE TABLE {self.ch.qualified(shadow_t)} AS {self.ch.qualified(live_t)}")
            self.ch.command(f"ALTER TABLE {self.ch.qualified(shadow_t)} MODIFY COMMENT "
                            f"'{self.marker(token)}'")

    def swap_mirror(self) -> None:
        from ..sinks.clickhouse.state import CHECKPOINT_TABLE, MIRROR
        mirror = self.ch.qualified(MIRROR)
        self.sink.state.ensure()
        # the checkpoint rows (source_table '') stay: the live one is written after the swap,
        # the shadow's (the journal) is dropped with the leftovers
        self.ch.command(f"DELETE FROM {mirror} WHERE projection_name = {{p:String}} AND source_table != {{t:String}}",
                        {"p": self.live.name, "t": CHECKPOINT_TABLE})
        # every stored version is copied (no FINAL: cheaper). Every mirror read is FINAL and
        # keeps the highest _version of a key, so the copy reads exactly like the shadow; two
        # versions of a key with equal _version are the same change (same position), same row
        self.ch.command(f"INSERT INTO {mirror} (projection_name, {MIRROR_COLUMNS}) "
                        f"SELECT {{live:String}}, {MIRROR_COLUMNS} FROM {mirror} "
                        "WHERE projection_name = {shadow:String} AND source_table != {t:String}",
                        {"live": self.live.name, "shadow": self.shadow.name, "t": CHECKPOINT_TABLE})

    def swap_view(self, token: int) -> None:
        mark = self.marker(token)
        for suffix in self.suffixes:
            live_t, shadow_t = self.live.target + suffix, self.shadow.target + suffix
            if not self._exists(live_t) or not self._exists(shadow_t):
                continue
            # the marker moves to the live side with the exchange and stays there until the
            # journal is gone (drop_leftovers): a swap completed again after a crash anywhere
            # before that must not exchange back
            if self._comment(live_t) != mark:
                self.ch.command(f"EXCHANGE TABLES {self.ch.qualified(live_t)} AND {self.ch.qualified(shadow_t)}")
        self._replace_live_view()

    def _replace_live_view(self) -> None:
        """Define the live view as the shadow view is defined (its columns over the live data
        table). A no-op when the layout did not change; after an exchange of another layout it
        points the view at the new tables, also when the swap is completed by a later process
        after a crash (no :meth:`prepare` then). Runs before :meth:`drop_leftovers` drops the
        shadow view, so the shadow view exists whenever the exchange was done."""
        from ..sinks.clickhouse.ddl import view_statement
        columns = [str(r[0]) for r in self.ch.query(
            "SELECT name FROM system.columns WHERE database = {d:String} AND table = {t:String} ORDER BY position",
            {"d": self.ch.database, "t": self.shadow.target})]
        if columns:
            q = self.ch.qualified
            self.ch.command(view_statement(q(self.live.target), q(self.live.target + "_data"), columns))

    def shadow_checkpoint(self) -> StoredCheckpoint | None:
        found = self.sink.state.load_checkpoint(self.shadow.name)
        if found is None:
            return None
        from ..engine.definition import loads
        streams, position, ts, updated, _ver, definition = found
        return StoredCheckpoint(streams, position, ts, updated, loads(definition))

    def shadow_exists(self) -> bool:
        return any(self._exists(self.shadow.target + s) for s in ("",) + self._shadow_suffixes) \
            or self.shadow_checkpoint() is not None

    def drop_leftovers(self) -> None:
        q = self.ch.qualified
        self.sink.state.drop_projection(self.shadow.name)      # journal (checkpoint) first, then mirror rows
        for suffix in self.suffixes:                           # the swap's markers (see swap_view)
            live_t = self.live.target + suffix
            if self._exists(live_t) and self._comment(live_t).startswith(_MARKER):
                self.ch.command(f"ALTER TABLE {q(live_t)} MODIFY COMMENT ''")
        self.ch.command(f"DROP VIEW IF EXISTS {q(self.shadow.target)}")
        for suffix in self._shadow_suffixes:
            self.ch.command(f"DROP TABLE IF EXISTS {q(self.shadow.target + suffix)}")

    def live_view_label(self) -> str:
        return f"{self.ch.database}.{self.live.target}"

    def shadow_view_label(self) -> str:
        return f"{self.ch.database}.{self.shadow.target}"


def swapper_for(sink: Sink, live: ProjectionPlan, shadow: ProjectionPlan) -> Swapper:
    """The swapper for the sink type holding the projection."""
    kind = type(sink).__name__
    if kind == "MongoSink":
        return MongoSwapper(sink, live, shadow)
    if kind == "ClickHouseSink":
        return ClickHouseSwapper(sink, live, shadow)
    raise RebuildError(f"rebuild of {live.name}: sink {getattr(sink, 'name', '?')!r} ({kind}) cannot swap views",
                       hint="rebuild supports MongoDB/FerretDB and ClickHouse sinks")
