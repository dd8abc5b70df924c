"""Dead letters: events a projection could not apply, kept with the reason.

A poison event (undecodable message, an expression failing on one row) must
not stop the projection: it is stored here, the rest of the stream keeps
flowing, and an operator inspects it (``cdc-projector dlq list|show``), fixes
the cause and re-applies it (``dlq replay``) or drops it with a record of who
dropped what and why (``dlq discard``).

Events are stored as JSON text with tagged values (:func:`event_to_json`), so
a replay sees exactly the values the projector saw.
"""
from __future__ import annotations

import base64
import datetime as dt
import decimal
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import orjson

from ..events import UNCHANGED_TOAST, ChangeEvent, Op, Position, TableId

OPEN, REPLAYED, DISCARDED = "open", "replayed", "discarded"


@dataclass(slots=True)
class DeadLetter:
    """One dead-lettered entry: the events, why they failed, and what became of them."""

    id: str
    projection: str
    reason: str
    events: list[ChangeEvent] = field(default_factory=list)
    #: an undecodable raw message (text) when ``events`` is empty
    raw: str | None = None
    origin: dict[str, Any] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)
    status: str = OPEN
    #: who/when/why for replays and discards
    resolution: dict[str, Any] = field(default_factory=dict)

    @property
    def refused_key(self) -> dict[str, Any] | None:
        """The root key of a view row the sink refused (``origin['row_key']``; no events: the
        row is recomputed from the mirror on replay), else None."""
        key = self.origin.get("row_key")
        return dict(key) if isinstance(key, dict) and key else None

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly one-line view (for ``dlq list``)."""
        first = self.events[0] if self.events else None
        return {
            "id": self.id, "projection": self.projection, "status": self.status,
            "created_at": dt.datetime.fromtimestamp(self.created_at, dt.timezone.utc).isoformat(),
            "events": len(self.events),
            "table": str(first.table) if first and first.table else None,
            "position": str(first.position) if first else None,
            "reason": self.reason,
        }


class DeadLetterStore(Protocol):
    """Where dead letters live (implemented by each sink)."""

    def put(self, letter: DeadLetter) -> None:
        """Store a new entry (idempotent on ``letter.id``)."""

    def list(self, projection: str, status: str | None = OPEN) -> list[DeadLetter]:
        """Entries of a projection, oldest first (all statuses when ``status`` is None)."""

    def get(self, projection: str, letter_id: str) -> DeadLetter | None:
        """One entry."""

    def resolve(self, projection: str, letter_id: str, status: str, resolution: dict[str, Any]) -> None:
        """Mark an entry replayed or discarded, recording who, when and why."""


def letter_id(projection: str, events: list[ChangeEvent], reason: str) -> str:
    """Deterministic id: the same failure redelivered is stored once."""
    import hashlib
    h = hashlib.sha1(projection.encode())
    for ev in events:
        h.update(f"{ev.table}|{ev.position}|{ev.op.value}|".encode())
        h.update(orjson.dumps(_enc(dict(ev.key or {})), option=orjson.OPT_SORT_KEYS))
    h.update(reason.encode())
    return h.hexdigest()[:20]


# -- event (de)serialisation ------------------------------------------------
def _enc(value: Any) -> Any:
    if value is UNCHANGED_TOAST:
        return {"$toast": True}
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return {"$f": repr(value)}
    if isinstance(value, decimal.Decimal):
        return {"$n": str(value)}
    if isinstance(value, dt.datetime):
        return {"$dt": value.isoformat()}
    if isinstance(value, dt.date):
        return {"$d": value.isoformat()}
    if isinstance(value, dt.time):
        return {"$tm": value.isoformat()}
    if isinstance(value, uuid.UUID):
        return {"$u": str(value)}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$b": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, dict):
        return {"$o": [[str(k), _enc(v)] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        return [_enc(v) for v in value]
    return {"$s": str(value)}


def _dec(value: Any) -> Any:
    if isinstance(value, list):
        return [_dec(v) for v in value]
    if not isinstance(value, dict):
        return value
    (tag, v), = value.items()
    return _DECODERS[tag](v)


_DECODERS: dict[str, Callable[[Any], Any]] = {
    "$toast": lambda _: UNCHANGED_TOAST, "$f": float, "$n": decimal.Decimal,
    "$dt": dt.datetime.fromisoformat, "$d": dt.date.fromisoformat,
    "$tm": dt.time.fromisoformat, "$u": uuid.UUID, "$b": base64.b64decode,
    "$o": lambda items: {k: _dec(x) for k, x in items}, "$s": str,
}


def _row(m: Any) -> Any:
    return None if m is None else {"$o": [[str(k), _enc(v)] for k, v in m.items()]}


def event_to_json(ev: ChangeEvent) -> str:
    """Serialise an event exactly (types included) as JSON text."""
    return orjson.dumps({
        "op": ev.op.value, "table": str(ev.table) if ev.table else None,
        "key": _row(ev.key), "before": _row(ev.before), "after": _row(ev.after),
        "position": [ev.position.commit_lsn, ev.position.seq], "tx_id": ev.tx_id,
        "commit_ts_us": ev.commit_ts_us, "origin": _enc(dict(ev.origin)),
        "message": _row(ev.message),
    }).decode()


def event_from_json(text: str) -> ChangeEvent:
    """Inverse of :func:`event_to_json`."""
    d = orjson.loads(text)
    return ChangeEvent(
        op=Op(d["op"]), table=TableId.parse(d["table"]) if d["table"] else None,
        key=_dec(d["key"]), before=_dec(d["before"]), after=_dec(d["after"]),
        position=Position(*d["position"]), tx_id=d["tx_id"], commit_ts_us=d["commit_ts_us"],
        origin=_dec(d["origin"]) or {}, message=_dec(d["message"]),
    )
