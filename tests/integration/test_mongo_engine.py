"""The engine contract and the MongoDB sink against the real FerretDB of the local stack."""
from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any, Iterator

import pytest

from cdc_projector.config.models import SinkConfig
from cdc_projector.engine.deadletter import DeadLetter, letter_id
from cdc_projector.engine.mirror import MirrorRow
from cdc_projector.engine.plan import ProjectionPlan
from cdc_projector.errors import SinkError, SinkUnavailable
from cdc_projector.events import UNCHANGED_TOAST, ChangeEvent, Op, Position, TableId
from cdc_projector.sinks.base import StoredCheckpoint, ViewChange, open_sink
from cdc_projector.sinks.mongodb import MongoSink
from tests.support.services import MONGODB_URL, require
from tests.unit.test_engine_cases import CUSTOMERS, EngineCases

pytestmark = pytest.mark.integration


def _sink(db: str) -> MongoSink:
    sink = open_sink("docs", SinkConfig(type="mongodb", url=MONGODB_URL, database=db))
    assert isinstance(sink, MongoSink)
    sink.connect()
    return sink


@pytest.fixture
def sink() -> Iterator[MongoSink]:
    require("ferretdb")
    s = _sink(f"t_engine_{uuid.uuid4().hex[:10]}")
    yield s
    s._client.drop_database(s.database)
    s.close()


class TestMongoEngine(EngineCases):
    """Every engine case, on FerretDB."""

    @pytest.fixture(autouse=True)
    def _mongo(self, sink: MongoSink) -> None:
        self.sink = sink
        self.target = self.make_target(self.plan)

    def make_target(self, plan: ProjectionPlan) -> Any:
        sink = getattr(self, "sink", None)
        if sink is None:                         # setup_method runs before the fixture
            return None
        target = sink.projection(plan)
        target.view.drop()
        target.state.coll.drop()
        target.ensure_indexes()
        return target

    def test_documents_carry_only_the_declared_fields(self) -> None:
        self.feed(self.base())
        raw = self.target.view.find_one({"_id": 1})
        assert set(raw) == {"_id", "name", "email", "country", "orders"}


class TestMongoEngineOneProjector(TestMongoEngine):
    """Every case with one projector for all batches: its memo meets the rows the mirror
    decodes again in every batch (new objects: the memo matches them by key and position)."""

    projector_per_feed = False


def test_codec_round_trips_every_type_through_the_mirror(sink: MongoSink) -> None:
    from cdc_projector.config.models import Projection
    from cdc_projector.engine.plan import build_plan
    plan = build_plan("types", Projection.model_validate(
        {"kind": "document", "sink": "docs", "from": "public.t", "fields": {"a": "a"}}))
    target = sink.projection(plan)
    values = {
        "i": 2 ** 62, "big": 2 ** 70, "f": 1.5, "nan": float("nan"), "dec": Decimal("12.3400"),
        "hugedec": Decimal("1" * 40 + ".5"), "b": True, "s": "x.y$z", "none": None,
        "tz": dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.timezone.utc),
        "naive": dt.datetime(2024, 5, 6, 7, 8, 9, 1), "d": dt.date(2024, 2, 29),
        "t": dt.time(23, 59, 59, 999999), "u": uuid.uuid4(), "by": b"\x00\xff",
        "j": {"a.b": [1, {"$x": Decimal("1.0")}], "n": None}, "arr": [[1, 2], [3]],
    }
    row = MirrorRow(TableId("public", "t"), {"id": 1}, dict(values), Position(5, 1))
    target.write([], [row], None)
    back = target.state.load(row.table, [row.key_id])[row.key_id]
    assert back.position == Position(5, 1) and back.key == {"id": 1}
    nan = back.row.pop("nan")
    assert nan != nan
    expected = dict(values)
    expected.pop("nan")
    assert back.row == expected
    assert all(type(back.row[k]) is type(v) for k, v in expected.items())


def test_document_value_encoding(sink: MongoSink) -> None:
    from cdc_projector.config.models import Projection
    from cdc_projector.engine.plan import build_plan
    from bson.decimal128 import Decimal128
    plan = build_plan("enc", Projection.model_validate(
        {"kind": "document", "sink": "docs", "from": "public.t", "fields": {"a": "a"}}))
    target = sink.projection(plan)
    u = uuid.uuid4()
    values = {"dec": Decimal("10.50"), "ts": dt.datetime(2024, 5, 6, 9, 8, 9, 5,
                                                           tzinfo=dt.timezone(dt.timedelta(hours=2))),
              "d": dt.date(2024, 1, 2), "u": u, "j": {"k": [1, "x"]}, "arr": [1, 2]}
    target.write([ViewChange({"a": 1, "b": "x"}, values)], [], None)
    raw = target.view.find_one({})
    assert raw["_id"] == {"a": 1, "b": "x"}
    assert raw["dec"] == (Decimal128("10.50") if sink.decimal128 else "10.50")
    assert raw["ts"] == "2024-05-06T07:08:09.000005Z"
    assert (raw["d"], raw["u"], raw["j"], raw["arr"]) == ("2024-01-02", str(u), {"k": [1, "x"]}, [1, 2])


def test_checkpoint_round_trip_and_merge(sink: MongoSink) -> None:
    from cdc_projector.config.models import Projection
    from cdc_projector.engine.plan import build_plan
    plan = build_plan("ck", Projection.model_validate(
        {"kind": "document", "sink": "docs", "from": "public.t", "fields": {"a": "a"}}))
    target = sink.projection(plan)
    assert target.load_checkpoint() is None
    ck = StoredCheckpoint().merged({"shop.public.t:0": 12, "pg:slot": 99}, Position(7, 2), 123)
    target.write([], [], ck)
    got = target.load_checkpoint()
    assert got.streams == {"shop.public.t:0": 12, "pg:slot": 99}
    assert (got.position, got.commit_ts_us) == (Position(7, 2), 123)
    again = got.merged({"shop.public.t:1": 3}, Position(1, 0), 5)
    assert again.streams["shop.public.t:0"] == 12 and again.position == Position(7, 2)


def test_mirror_write_is_position_guarded(sink: MongoSink) -> None:
    from cdc_projector.config.models import Projection
    from cdc_projector.engine.plan import build_plan
    plan = build_plan("guard", Projection.model_validate(
        {"kind": "document", "sink": "docs", "from": "public.t", "fields": {"a": "a"}}))
    target = sink.projection(plan)
    t = TableId("public", "t")
    target.write([], [MirrorRow(t, {"id": 1}, {"a": "new"}, Position(10, 0))], None)
    stale = MirrorRow(t, {"id": 1}, {"a": "old"}, Position(9, 0), stored=Position(8, 0))
    target.write([], [stale], None)        # another writer got there first: ours is older
    assert target.state.load(t, [stale.key_id])[stale.key_id].row == {"a": "new"}


def test_dead_letters_store_events_exactly(sink: MongoSink) -> None:
    store = sink.dead_letters()
    ev = ChangeEvent(Op.UPDATE, CUSTOMERS, {"id": 1}, None,
                     {"id": 1, "total": Decimal("1.10"), "email": UNCHANGED_TOAST,
                      "at": dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)},
                     Position(3, 4), tx_id=9, commit_ts_us=77, origin={"topic": "shop.public.c"})
    letter = DeadLetter(letter_id("p", [ev], "boom"), "p", "boom", [ev], origin=dict(ev.origin))
    store.put(letter)
    store.put(letter)                      # redelivery: stored once
    listed = store.list("p")
    assert [x.id for x in listed] == [letter.id]
    assert listed[0].events == [ev]
    store.resolve("p", letter.id, "discarded", {"by": "me"})
    assert store.list("p") == [] and store.get("p", letter.id).resolution == {"by": "me"}


def test_unreachable_mongodb_is_a_clear_one_line_error() -> None:
    sink = MongoSink("docs", SinkConfig(type="mongodb", url="mongodb://127.0.0.1:1", database="x"),
                     timeout_ms=300)
    with pytest.raises(SinkUnavailable) as info:
        sink.connect()
    text = str(info.value)
    assert "\n" not in text and "sink 'docs'" in text and "unreachable" in text


def test_invalid_mongodb_url_is_a_clear_error() -> None:
    sink = MongoSink("docs", SinkConfig(type="mongodb", url="mongodb://u:secret@", database="x"))
    with pytest.raises(SinkError) as info:
        sink.connect()
    assert "invalid MongoDB URL" in str(info.value) and "secret" not in str(info.value)


def test_tombstones_below_the_settled_position_are_deleted(sink: MongoSink) -> None:
    """Direct mode (runtime.compact_every_s): the mirror's tombstones below the settled
    position go; one at or above it, live rows and a key deleted then inserted again stay."""
    from cdc_projector.config.models import Projection
    from cdc_projector.engine.plan import build_plan
    plan = build_plan("gc", Projection.model_validate(
        {"kind": "document", "sink": "docs", "from": "public.t", "fields": {"a": "a"}}))
    target = sink.projection(plan)
    t = TableId("public", "t")

    def row(key: int, a: str | None, lsn: int, seq: int = 0) -> MirrorRow:
        return MirrorRow(t, {"id": key}, None if a is None else {"id": key, "a": a}, Position(lsn, seq))

    target.write([], [row(1, None, 50), row(2, None, 99, 7), row(3, None, 100, 0), row(4, None, 100, 2),
                      row(5, "x", 10), row(6, "y", 120)], None)
    assert target.compact(None) == {}                        # Kafka mode: nothing is settled
    done = target.compact(Position(100, 1))
    assert done == {target.state.name: {"rows": 6, "tombstones": 3, "after": 3}}
    left = target.state.load(t, [row(k, None, 0).key_id for k in range(1, 7)])
    assert {r.key["id"]: (r.row, r.position) for r in left.values()} == {
        4: (None, Position(100, 2)), 5: ({"id": 5, "a": "x"}, Position(10, 0)),
        6: ({"id": 6, "a": "y"}, Position(120, 0))}
    assert target.compact(Position(100, 1)) == {}             # nothing more to drop
