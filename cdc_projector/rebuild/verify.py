"""``verify``: compare the live view with the view computed from the source tables now.

1. A consistent snapshot of the projection's tables is taken
   (:class:`~cdc_projector.sources.postgres.snapshot.TableSnapshot`: a temporary
   replication slot exports a REPEATABLE READ snapshot *and* its consistent point
   ``C``; every transaction committed before ``C`` is visible in it, none after);
2. the engine's own :class:`~cdc_projector.engine.projector.Projector` runs over
   the snapshot rows into an in-memory mirror and target
   (:class:`~cdc_projector.engine.memory.MemoryTarget`) - the *expected* view;
3. the live projection's stored checkpoint must reach ``C`` (its applied position;
   heartbeats move it when the source is idle);
4. both views are compared in the canonical form of :mod:`.canonical`, through the
   sink's own encoding: documents pass through the MongoDB codec; ClickHouse rows
   are written into a scratch target ``<target>__verify`` of the same sink (the
   sink's folding of aggregate contributions included), read back and dropped.

The live view keeps moving while we read it: a row changed after ``C`` differs
from the expected one without being drift. So differences are confirmed over up
to ``rounds`` fresh snapshots; only keys that differ in every round are reported.

Independence: the expected view comes from the same engine code (plan, expression
compiler, document computation) applied to a snapshot instead of a change stream.
It proves that the incremental path (events, mirror, crash safety, sink writes)
agrees with a from-scratch computation; it cannot find a bug in the expression
semantics themselves - the tests' hand-written SQL oracle is there for that.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import orjson

from ..config.models import ProjectFile
from ..engine.memory import MemoryTarget
from ..engine.plan import ProjectionPlan
from ..engine.projector import Projector
from ..errors import RebuildError
from ..events import format_lsn
from ..sinks.base import ProjectionTarget, Sink, ViewChange
from .build import applied_lsn
from .canonical import Comparison, checksum, compare

VERIFY_SUFFIX = "__verify"


@dataclass
class VerifyResult:
    """The outcome of ``verify`` (``comparison`` holds the confirmed differences)."""

    name: str
    lsn: int
    comparison: Comparison
    rounds: int
    expected_rows: int
    actual_rows: int
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def drift(self) -> bool:
        return self.comparison.drift

    def as_dict(self, first: int = 10) -> dict[str, Any]:
        out = {"projection": self.name, "snapshot_lsn": format_lsn(self.lsn), "rounds": self.rounds,
               "expected_rows": self.expected_rows, "actual_rows": self.actual_rows,
               "seconds": round(self.seconds, 3)}
        out.update(self.comparison.as_dict(first))
        out["first_details"] = {k: {"expected": e, "actual": a}
                                for k, (e, a) in list(self.comparison.details.items())[:first]}
        return out


def expected_changes(dsn: str, plan: ProjectionPlan, *, chunk_size: int = 10_000) -> tuple[list[ViewChange], int]:
    """The view computed by the engine from a consistent snapshot, and the snapshot's LSN."""
    from ..sources.postgres.snapshot import TableSnapshot
    projector = Projector(plan)
    target = MemoryTarget()
    with TableSnapshot.begin(dsn, list(plan.tables), chunk_size=chunk_size, slot_prefix="cdcp_verify") as snap:
        lsn = snap.position_lsn
        for _table, events, _done in snap.chunks():
            if events:
                result = projector.process(events, target.state)
                if result.failures:
                    first = result.failures[0]
                    raise RebuildError(f"verify {plan.name}: the projection fails on source rows: {first.reason}",
                                       hint="see the dead letters of the live projection (`cdc-projector dlq list`)")
                target.write(result.changes, result.rows, None)
    changes = [ViewChange(dict(key), values) for key, values in target.documents.values()]
    return changes, lsn


def key_fields(sink: Sink, plan: ProjectionPlan, target: ProjectionTarget) -> list[str]:
    """The fields naming one entry of the view: ``_id``, the table key, or the group columns."""
    spec = getattr(target, "spec", None)
    if spec is None:
        return ["_id"]
    if plan.kind == "aggregate":
        return [c.name for c in spec.groups]
    return [c.name for c in spec.key]


def _mongo_rows(sink: Any, changes: Sequence[ViewChange]) -> list[dict[str, Any]]:
    from ..sinks.mongodb.codec import from_document, to_document
    from ..sinks.mongodb.sink import document_id
    dec = sink.decimal128
    return [{"_id": from_document(document_id(c.key, dec)), **from_document(to_document(c.values, dec))}
            for c in changes if c.values is not None]


def ch_live_target(sink: Any, plan: ProjectionPlan, spec: Any) -> ProjectionTarget:
    """The live ClickHouse target opened with ``spec`` (from a scratch or shadow target) renamed to the plan."""
    return sink.projection(plan, dataclasses.replace(spec, table=plan.target, projection=plan.name))


def read_views(sink: Sink, plan: ProjectionPlan, changes: Sequence[ViewChange]
               ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """(expected rows, live rows, key fields), both decoded by the sink's own encoding."""
    if type(sink).__name__ == "MongoSink":
        live = sink.projection(plan)
        return _mongo_rows(sink, changes), live.read_view(), ["_id"]
    scratch_plan = dataclasses.replace(plan, name=plan.name + VERIFY_SUFFIX, target=plan.target + VERIFY_SUFFIX)
    scratch = sink.projection(scratch_plan)
    scratch.drop()
    try:
        scratch = sink.projection(scratch_plan)
        if changes:
            scratch.write(list(changes), [], None)
        expected = scratch.read_view()
        spec = getattr(scratch, "spec", None)
    finally:
        scratch.drop()
    if spec is None:          # nothing expected: the live view must be empty too
        live_rows = _ch_rows_without_spec(sink, plan)
        return expected, live_rows, ["_key"]
    live = ch_live_target(sink, plan, spec)
    return expected, live.read_view(), key_fields(sink, plan, live)


def _ch_rows_without_spec(sink: Any, plan: ProjectionPlan) -> list[dict[str, Any]]:
    ch = sink.ch
    if not ch.table_exists(plan.target):
        return []
    rows = ch.query_dicts(f"SELECT * FROM {ch.qualified(plan.target)}")
    return [{"_key": orjson.dumps(r, default=str).decode(), **r} for r in rows]


def wait_applied(target: ProjectionTarget, lsn: int, timeout_s: float, name: str) -> None:
    """Block until the projection's stored checkpoint has applied ``lsn``."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = applied_lsn(target.load_checkpoint())
        if got is not None and got >= lsn:
            return
        if time.monotonic() > deadline:
            raise RebuildError(f"verify {name}: the live projection did not reach the snapshot LSN "
                               f"{format_lsn(lsn)} within {timeout_s:g} s (applied: "
                               f"{format_lsn(got) if got is not None else 'nothing'})",
                               hint="is `cdc-projector run` running (and not paused)? try again with --timeout")
        time.sleep(0.25)


def verify(project: ProjectFile, sink: Sink, plan: ProjectionPlan, *, rounds: int = 3,
           timeout_s: float = 120.0, settle_s: float = 1.0) -> VerifyResult:
    """Compare the live view of ``plan`` with the view computed from the source (see module docs)."""
    dsn = project.source.dsn
    if not dsn:
        raise RebuildError("source.dsn is not set", hint="verify reads the source tables")
    started = time.monotonic()
    live_target = sink.projection(plan)
    confirmed: set[str] | None = None
    comparison = Comparison()
    lsn = 0
    expected: list[dict[str, Any]] = []
    actual: list[dict[str, Any]] = []
    done = 0
    for done in range(1, max(1, rounds) + 1):
        changes, lsn = expected_changes(dsn, plan)
        wait_applied(live_target, lsn, timeout_s, plan.name)
        expected, actual, key = read_views(sink, plan, changes)
        comparison = compare(expected, actual, key)
        keys = comparison.keys()
        confirmed = keys if confirmed is None else confirmed & keys
        if not confirmed:
            break
        time.sleep(settle_s)
    final = comparison.restrict(confirmed or set())
    final.expected_checksum, final.actual_checksum = checksum(expected), checksum(actual)
    return VerifyResult(plan.name, lsn, final, done, len(expected), len(actual), time.monotonic() - started)
