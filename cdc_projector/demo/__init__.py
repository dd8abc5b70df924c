"""``cdc-projector demo``: the quick start in one command.

It composes existing pieces, nothing more:

* the local stack's PostgreSQL and FerretDB (:mod:`cdc_projector.devstack`),
* the sample shop database (:mod:`cdc_projector.sample`: schema, seed, workload),
* the sample projections of ``projections/shop.yaml`` run in direct mode exactly
  as ``cdc-projector run`` runs them (:class:`cdc_projector.engine.app.Project`,
  :class:`cdc_projector.engine.runner.Runner`, the ops HTTP server of
  :func:`cdc_projector.ops.runtime.attach`), with ClickHouse embedded (chDB) in
  the demo's data directory.

Use it from Python::

    from cdc_projector.demo import DemoOptions, run_demo
    run_demo(DemoOptions(rate=20, duration=60))

See docs/demo.md.
"""
from __future__ import annotations

from .options import DemoOptions
from .session import run_demo

__all__ = ["DemoOptions", "run_demo"]
