"""DDL generated for ClickHouse projections (no ClickHouse needed)."""
from __future__ import annotations

import pytest

from cdc_projector.errors import SinkError
from cdc_projector.expr import DATE, INT, TEXT, SqlType
from cdc_projector.sinks.clickhouse.ddl import aggregate_spec, describe, table_spec


def test_table_layout_is_replacing_merge_tree_plus_final_view() -> None:
    spec = table_spec("orders_flat", "orders_flat", {"id": "bigint"},
                      {"id": INT, "total": SqlType.numeric(12, 2)})
    text = describe(spec, "analytics")
    assert "CREATE TABLE IF NOT EXISTS `analytics`.`orders_flat_data`" in text
    assert "`id` Int64,\n  `total` Nullable(Decimal(12, 2))" in text          # field named like the key = the key
    assert ("ENGINE = ReplacingMergeTree(_version, _is_deleted)\nORDER BY (`id`) "
            "SETTINGS allow_experimental_replacing_merge_with_cleanup = 1") in text   # tombstones can be dropped
    assert ("CREATE OR REPLACE VIEW `analytics`.`orders_flat` AS SELECT `id`, `total` "
            "FROM `analytics`.`orders_flat_data` FINAL WHERE _is_deleted = 0") in text


def test_aggregate_layout_and_measure_types() -> None:
    spec = aggregate_spec("r", "rev", {"id": INT}, {"day": DATE, "status": TEXT}, [
        ("n", "count", None, False), ("s", "sum", SqlType.numeric(12, 2), False),
        ("a", "avg", SqlType.numeric(12, 2), False), ("q", "sum", INT, False), ("ai", "avg", INT, False),
        ("f", "avg", SqlType("float"), False), ("mx", "max", TEXT, False), ("d", "count", INT, True)])
    types = dict(spec.view_columns())
    assert types == {"day": "Nullable(Date32)", "status": "Nullable(String)", "n": "UInt64",
                     "s": "Nullable(Decimal(76, 2))", "a": "Nullable(Decimal(76, 8))", "q": "Nullable(Int128)",
                     "ai": "Nullable(Decimal(76, 6))", "f": "Nullable(Float64)", "mx": "Nullable(String)",
                     "d": "UInt64"}
    # the group's partial state, hidden from the view: rows, non-NULL counts, exact running sums
    assert dict(spec.state_columns()) == {
        "_rows": "UInt64", "_n_s": "UInt64", "_n_a": "UInt64", "_s_a": "Nullable(Decimal(76, 2))",
        "_n_q": "UInt64", "_n_ai": "UInt64", "_s_ai": "Nullable(Int128)", "_n_f": "UInt64",
        "_s_f": "Nullable(Float64)", "_c_mx": "UInt64"}
    assert dict(spec.data_columns()) == {**types, **dict(spec.state_columns()),
                                         "_version": "UInt128", "_is_deleted": "UInt8"}
    text = describe(spec, "db")
    assert "`rev_contrib`" in text and "ORDER BY (`k_id`) SETTINGS index_granularity = 256, min_compress_block_size" in text
    assert "ORDER BY (`day`, `status`) SETTINGS allow_nullable_key = 1" in text
    assert "`rev_members`" in text and "ORDER BY (`g_day`, `g_status`, `k_id`)" in text
    assert "`rev_d_d`" in text and "ORDER BY (`g_day`, `g_status`, `v`)" in text
    assert "`_sign` Int8\n) ENGINE = Memory" in text
    assert ("VIEW `db`.`rev` AS SELECT `day`, `status`, `n`, `s`, `a`, `q`, `ai`, `f`, `mx`, `d` "
            "FROM `db`.`rev_data` FINAL") in text


def test_bad_names_and_measures_are_refused() -> None:
    with pytest.raises(SinkError, match="invalid ClickHouse"):
        table_spec("p", "bad name", {"id": INT}, {})
    with pytest.raises(SinkError, match="reserved"):
        table_spec("p", "t", {"id": INT}, {"_version": INT})
    with pytest.raises(SinkError, match="no primary key"):
        table_spec("p", "t", {}, {"x": INT})
    with pytest.raises(SinkError, match="needs an argument"):
        aggregate_spec("p", "t", {"id": INT}, {}, [("s", "sum", None, False)])
