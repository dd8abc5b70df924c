"""The definition fingerprint: stable, blind to layout, precise about what changed."""
from __future__ import annotations

import copy
import os
import subprocess
import sys
from typing import Any

import pytest
import yaml

from cdc_projector.config.models import Projection
from cdc_projector.engine import definition
from cdc_projector.engine.memory import MemoryTarget
from cdc_projector.engine.plan import build_plan
from cdc_projector.engine.runner import Backoff, Pipeline
from cdc_projector.errors import DefinitionChanged
from cdc_projector.sinks.base import StoredCheckpoint
from tests.unit.test_engine_cases import PROFILE as _PROFILE
from tests.unit.test_engine_runner import ListLetters, ListSource

# explicit views (table/collection): the fingerprint does not depend on the projection's name
TABLE: dict[str, Any] = {"kind": "table", "sink": "ch", "table": "orders_view", "from": "public.orders",
         "where": "status <> 'cancelled'",
         "fields": {"customer_id": "customer_id", "net_total": "total - discount"},
         "lookups": {"customer": {"from": "public.customers", "key": "customer_id",
                                  "fields": {"customer_name": "name"}}}}
PROFILE: dict[str, Any] = {**_PROFILE, "collection": "profiles"}
AGGREGATE: dict[str, Any] = {"kind": "aggregate", "sink": "ch", "table": "revenue", "from": "public.orders",
             "group_by": {"status": "status"}, "measures": {"n": "count(*)", "revenue": "sum(total)"}}


def fp(spec: dict[str, Any], name: str = "p") -> dict[str, str]:
    return definition.fingerprint(build_plan(name, Projection.model_validate(spec)))


def changed(spec: dict[str, Any], **edits: Any) -> dict[str, Any]:
    out = copy.deepcopy(spec)
    for path, value in edits.items():
        node = out
        *parents, leaf = path.split("__")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return out


def test_parts_cover_what_decides_stored_content() -> None:
    assert set(fp(PROFILE)) == {"format", "kind", "target", "from", "where", "field name", "field email",
                                "lookup country", "lookup country.name", "embed orders"}
    assert set(fp(AGGREGATE)) == {"format", "kind", "target", "from", "where", "group_by", "measure n",
                                  "measure revenue"}
    assert all(len(v) == 16 for k, v in fp(TABLE).items() if k != "format")


def test_stable_across_processes() -> None:
    # a literal: the stored fingerprint must read the same in every process and Python version
    code = ("from tests.unit.test_definition import fp, TABLE; import json; "
            "print(json.dumps(fp(TABLE), sort_keys=True))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "123"}).stdout
    assert definition.loads(out.strip()) == fp(TABLE)
    assert fp(TABLE)["field net_total"] == GOLDEN_NET_TOTAL


GOLDEN_NET_TOTAL = "524c43d0f21ab12d"   # sha256 of ["field net_total","total - discount"]


def test_layout_comments_key_order_and_settings_do_not_count() -> None:
    base = fp(TABLE)
    text = yaml.safe_dump(TABLE, sort_keys=False)
    reordered = yaml.safe_load(yaml.safe_dump(TABLE, sort_keys=True))   # every mapping reordered
    reordered["fields"] = dict(reversed(list(reordered["fields"].items())))
    assert list(reordered["fields"]) != list(TABLE["fields"])
    assert fp(reordered) == base
    assert fp(yaml.safe_load("# a comment\n" + text)) == base
    relaid = changed(TABLE, fields__net_total="total\n   -  discount   -- what the customer pays",
                     where="status<>'cancelled'")
    assert fp(relaid) == base
    # keyword and function-name case is layout; a quoted string is not
    assert fp(changed(TABLE, where="status <> 'cancelled' and true")) == \
        fp(changed(TABLE, where="status <> 'cancelled' AND TRUE"))
    assert fp(changed(TABLE, fields__net_total="coalesce(total, 0)")) == \
        fp(changed(TABLE, fields__net_total="COALESCE( total,0 )"))
    assert fp(changed(TABLE, where="status <> 'Cancelled'")) != base
    # not part of the definition: the projection's name (with the same view), sink, SLOs
    other = changed(TABLE, sink="ch2", slo={"lag_p95_ms": 100})
    assert fp(other, name="renamed") == base


def test_a_rebuild_shadow_has_its_live_views_fingerprint() -> None:
    from cdc_projector.rebuild.shadow import shadow_plan
    plan = build_plan("p", Projection.model_validate(TABLE))
    assert shadow_plan(plan).target != plan.target
    assert definition.fingerprint(shadow_plan(plan)) == definition.fingerprint(plan)


@pytest.mark.parametrize("spec,edit,parts", [
    (TABLE, {"fields__net_total": "total"}, ["field net_total"]),
    (TABLE, {"where": "true"}, ["where"]),
    (TABLE, {"from": "public.orders2"}, ["from"]),
    (TABLE, {"table": "orders_v2"}, ["target"]),              # a new, empty view: not a continuation
    (TABLE, {"lookups__customer__key": "id"}, ["lookup customer"]),
    (TABLE, {"lookups__customer__fields": {"customer_name": "upper(name)"}}, ["lookup customer.customer_name"]),
    (PROFILE, {"embeds__orders__limit": 3}, ["embed orders"]),
    (PROFILE, {"embeds__orders__order_by": "placed_at"}, ["embed orders"]),
    (AGGREGATE, {"group_by": {"status": "upper(status)"}}, ["group_by"]),
    (AGGREGATE, {"measures": {"n": "count(*)", "revenue": "sum(total - discount)"}}, ["measure revenue"]),
])
def test_each_part_is_told_apart(spec: dict[str, Any], edit: dict[str, Any], parts: list[str]) -> None:
    diff = definition.difference(fp(spec), fp(changed(spec, **edit)))
    assert diff.changed == parts and not diff.added and not diff.removed


def test_verdicts() -> None:
    plan = build_plan("orders_flat", Projection.model_validate(TABLE))
    current = definition.fingerprint(plan)
    assert definition.verdict(plan, None)[0] == "record"
    assert definition.verdict(plan, {"format": "0", "x": "y"})[0] == "record"
    assert definition.verdict(plan, current)[0] == "same"
    # fields added to a table projection: new columns (the documented ClickHouse path)
    older = fp(changed(TABLE, fields={"customer_id": "customer_id"},
                       lookups={"customer": {"from": "public.customers", "key": "customer_id", "fields": {}}}))
    verdict, diff = definition.verdict(plan, older)
    assert verdict == "extend" and diff.added == ["field net_total", "lookup customer.customer_name"]
    assert "net_total, customer_name" in definition.new_columns_note(plan, diff)
    # anything else is refused, naming the projection and the parts
    with pytest.raises(DefinitionChanged) as err:
        definition.verdict(plan, fp(changed(TABLE, fields__net_total="total", where="true")))
    assert err.value.message == ("projection 'orders_flat' changed since its view was built "
                                 "(where, field net_total): its stored rows follow the old definition")
    assert "cdc-projector rebuild orders_flat" in (err.value.hint or "") and err.value.exit_code == 3
    with pytest.raises(DefinitionChanged, match=r"field gone \(removed\)"):
        definition.verdict(plan, fp(changed(TABLE, fields={**TABLE["fields"], "gone": "1"})))
    doc = build_plan("profile", Projection.model_validate(PROFILE))
    assert definition.verdict(doc, fp(PROFILE))[0] == "same"
    with pytest.raises(DefinitionChanged, match=r"field extra \(new\)"):   # documents: no new-column path
        definition.verdict(build_plan("profile", Projection.model_validate(
            changed(PROFILE, fields={**PROFILE["fields"], "extra": "1"}))), fp(PROFILE))


def _pipeline(spec: dict[str, Any], target: MemoryTarget) -> Pipeline:
    plan = build_plan("profile", Projection.model_validate(spec))
    return Pipeline(plan, ListSource([]), target, ListLetters(), backoff=Backoff(first_s=0.0, max_s=0.0))


def test_pipeline_records_refuses_and_touches_nothing() -> None:
    target = MemoryTarget()
    p = _pipeline(PROFILE, target)
    p.open()
    assert target.checkpoint is None                      # a fresh view: recorded with the first batch
    assert p._checkpoint is not None and p._checkpoint.definition == fp(PROFILE)
    target.checkpoint = StoredCheckpoint({"s": 5})        # a state written before fingerprints
    _pipeline(PROFILE, target).open()
    assert target.checkpoint.definition == fp(PROFILE) and target.checkpoint.streams == {"s": 5}
    stored = target.checkpoint
    source = ListSource([])
    p = Pipeline(build_plan("profile", Projection.model_validate(changed(PROFILE, fields__name="upper(name)"))),
                 source, target, ListLetters())
    with pytest.raises(DefinitionChanged, match=r"'profile' changed since its view was built \(field name\)"):
        p.open()
    assert target.checkpoint is stored and source.resumed is None   # nothing written, source not opened


def test_accepting_a_changed_definition_records_it() -> None:
    target = MemoryTarget()
    _pipeline(PROFILE, target).open()
    target.checkpoint = StoredCheckpoint({"s": 5}, definition=fp(PROFILE))
    edited = changed(PROFILE, fields__name="upper(name)")
    p = _pipeline(edited, target)
    p.accept_definition = True
    p.open()
    assert target.checkpoint.definition == fp(edited) and target.checkpoint.streams == {"s": 5}
    _pipeline(edited, target).open()                       # recorded: no refusal any more


def test_run_names_every_changed_projection_at_once() -> None:
    from cdc_projector.config.models import ProjectFile
    from cdc_projector.engine.app import Project
    from cdc_projector.errors import ConfigError
    specs = {"a": PROFILE, "b": PROFILE, "c": PROFILE}
    edited = changed(PROFILE, where="true")
    plans = [build_plan(n, Projection.model_validate(edited if n != "c" else PROFILE)) for n in specs]
    targets: dict[str, Any] = {}
    for n in specs:
        targets[n] = MemoryTarget()
        targets[n].checkpoint = StoredCheckpoint({"s": 1}, definition=fp(PROFILE))
    project = Project(ProjectFile(), plans, targets=targets)
    with pytest.raises(DefinitionChanged) as err:
        project.check_definitions()
    assert err.value.message == ("2 projections changed since their views were built: 'a' (where); "
                                 "'b' (where): their stored rows follow the old definitions")
    assert "a, b" in (err.value.hint or "")
    with pytest.raises(DefinitionChanged, match="^projection 'b' changed"):
        project.check_definitions(accept=["a"])
    project.check_definitions(accept=["a", "b"])
    with pytest.raises(ConfigError, match="--accept-definition: x not run by this command"):
        project.check_definitions(accept=["x"])
    assert all(t.checkpoint.definition == fp(PROFILE) for t in targets.values())   # nothing written


class _Swapper:
    def swap_mirror(self) -> None: ...
    def swap_view(self, token: int) -> None: ...
    def drop_leftovers(self) -> None: ...


class _Sink:
    def __init__(self, live: MemoryTarget) -> None:
        self.live = live

    def projection(self, plan: Any) -> MemoryTarget:
        return self.live


@pytest.mark.parametrize("live_source", ["postgres", "kafka"])
def test_the_swap_gives_the_live_checkpoint_the_rebuilt_definition(live_source: str) -> None:
    from cdc_projector.rebuild.build import JOURNAL, TRANSLATE
    from tests.unit.test_rebuild_catchup import _Bare
    r = _Bare("snapshot", live_source)
    new = definition.fingerprint(r.plan)
    live = MemoryTarget()
    live.checkpoint = StoredCheckpoint({"shop.public.orders:0": 7}, definition={"format": "1", "where": "old"})
    r.sink, r.swapper, r._source_factory = _Sink(live), _Swapper(), object()  # type: ignore[assignment]
    journal = StoredCheckpoint({"pg:cdc_orders__rebuild": 900, JOURNAL: 1, TRANSLATE: int(r.translates)},
                               definition=new)
    r._finish_swap(journal)
    assert live.checkpoint.definition == new
    # the live source goes on from its own streams when they cannot be translated
    expected = {"pg:cdc_orders": 900} if r.translates else {"shop.public.orders:0": 7}
    assert live.checkpoint.streams == expected


def test_an_interrupted_shadow_begun_with_another_definition_is_not_resumed() -> None:
    from tests.unit.test_rebuild_catchup import _Bare
    r = _Bare("log", "kafka")
    r._source_factory = None
    current = definition.fingerprint(r.shadow_plan)
    assert r._resumable(StoredCheckpoint({"shop.public.orders:0": 5}, definition=current))
    assert r._resumable(StoredCheckpoint({"shop.public.orders:0": 5}))          # before fingerprints
    assert not r._resumable(StoredCheckpoint({"shop.public.orders:0": 5}, definition={**current, "where": "x"}))
