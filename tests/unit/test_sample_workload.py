"""The workload's operation mix is seeded, deterministic and covers every kind of change."""
from __future__ import annotations

from collections import Counter

import pytest

from cdc_projector.sample import OP_KINDS, OP_WEIGHTS, WorkloadStats, plan, run_workload


def test_plan_is_deterministic_per_seed() -> None:
    assert plan(7, 500) == plan(7, 500)
    assert plan(7, 500) != plan(8, 500)
    # a longer plan extends a shorter one (the stream does not depend on its length)
    assert plan(7, 1000)[:500] == plan(7, 500)


def test_plan_covers_every_operation_kind() -> None:
    counts = Counter(plan(1, 5000))
    assert set(counts) == set(OP_KINDS)


def test_plan_follows_the_weights() -> None:
    n = 20000
    counts = Counter(plan(3, n))
    total_weight = sum(OP_WEIGHTS.values())
    for kind, weight in OP_WEIGHTS.items():
        share = counts[kind] / n
        assert abs(share - weight / total_weight) < 0.01, (kind, share, weight / total_weight)


def test_op_mix_has_the_changes_projectors_must_handle() -> None:
    # inserts, updates, deletes, key changes, lookup renames, TOAST cases, transactions
    for kind in ("insert_order", "order_status", "move_order", "delete_order", "renumber_item",
                 "customer_id_change", "rename_sku", "rename_customer", "rename_country",
                 "customer_touch", "customer_notes", "soft_delete_customer", "restore_customer", "batch"):
        assert kind in OP_WEIGHTS


def test_run_workload_needs_a_stop_condition() -> None:
    with pytest.raises(ValueError, match="never end"):
        run_workload("postgresql://nobody@127.0.0.1:1/none")


def test_stats_as_dict() -> None:
    stats = WorkloadStats(ops=10, transactions=10, by_op={"insert_order": 10}, elapsed_s=2.0)
    out = stats.as_dict()
    assert out["ops_per_s"] == 5.0
    assert out["by_op"] == {"insert_order": 10}
    assert WorkloadStats().ops_per_s == 0.0


def test_unreachable_database_is_a_source_error_without_the_password() -> None:
    from cdc_projector.errors import SourceError

    with pytest.raises(SourceError) as info:
        run_workload("postgresql://shop:s3cret@127.0.0.1:1/shop", ops=1)
    assert "127.0.0.1:1/shop" in str(info.value) and "s3cret" not in str(info.value)
    with pytest.raises(SourceError):
        run_workload("not a dsn at all", ops=1)
