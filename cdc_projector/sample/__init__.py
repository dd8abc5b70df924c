"""The sample legacy shop database: schema, deterministic seeder and write workload.

Used by ``cdc-projector sample ...``, ``cdc-projector demo``, the integration
tests and the benchmarks::

    from cdc_projector.sample import init_schema, seed, run_workload
    init_schema(dsn)
    seed(dsn, customers=200, products=50, orders=1000, seed=42)
    stats = run_workload(dsn, ops=1000, rate=100, seed=7)
"""
from __future__ import annotations

from .schema import DEFAULT_DSN, TABLES, init_schema, schema_path, schema_sql
from .seed import SeedStats, seed
from .workload import OP_KINDS, OP_WEIGHTS, WorkloadStats, plan, run_workload

__all__ = ["DEFAULT_DSN", "TABLES", "init_schema", "schema_path", "schema_sql", "SeedStats", "seed",
           "OP_KINDS", "OP_WEIGHTS", "WorkloadStats", "plan", "run_workload"]
