"""Crash recovery of aggregates when the replay has OTHER batch boundaries (found by the SIGKILL
acceptance test): a batch that crashed after writing its group rows but before its contributions
counted a row in a group that the replay never reports as a pre-image. The first batch after a
restart recomputes the groups written after the checkpoint (real chDB, a temp directory)."""
from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal as D
from pathlib import Path
from typing import Any, Iterator

import pytest

from cdc_projector.sinks.base import ViewChange
from cdc_projector.sinks.clickhouse import AggregateView, connect
from tests.integration.test_clickhouse_contract import _agg_view, _contribution, _expected

pytestmark = pytest.mark.integration


@pytest.fixture
def ch(tmp_path: Path) -> Iterator[Any]:
    conn = connect(f"chdb://{tmp_path / 'ch'}", "views")
    yield conn
    conn.close()


def _row(day: int, status: str, total: str, customer: int = 1) -> dict[str, Any]:
    return {"day": dt.date(2024, 1, day), "status": status, "total": D(total), "customer": customer, "qty": 1}


def _crash_after_groups(view: AggregateView, changes: list[ViewChange], ver: int) -> None:
    view.write(changes, ver, stop_after="groups")


def test_group_counted_by_a_crashed_batch_is_repaired_after_restart(ch: Any) -> None:
    view = _agg_view(ch)
    a, b, c = _row(1, "paid", "10.00"), _row(2, "paid", "10.00"), _row(3, "paid", "10.00")
    view.write([ViewChange({"id": 1}, _contribution(a)), ViewChange({"id": 2}, _contribution(a))], 10)
    # crashed batch (version 20): row 1 moves a -> b; the group rows are written, nothing else
    _crash_after_groups(view, [ViewChange({"id": 1}, _contribution(b))], 20)
    # restart: the replay delivers the row's LATER state (a -> c) in one batch of version 15
    restarted = _agg_view(ch)
    stored = restarted.max_version()
    assert stored == 20
    restarted.recover(10)                               # the checkpoint's version
    restarted.write([ViewChange({"id": 1}, _contribution(c))], max(15, stored))
    assert restarted.read() == _expected({1: c, 2: a})  # group b is gone again


def test_random_crashes_with_shifting_batch_boundaries(ch: Any) -> None:
    """Events are single-row changes; batches are cut at random; a crash after the group rows or
    after the contributions is followed by a restart that replays from the checkpoint with new
    boundaries. Once the replay has passed every crashed batch, the view equals the contributions
    of the live rows after every batch (before that, rows of a crashed batch that the replay has
    not reached yet may show their newer state: the stream is only consistent at its end)."""
    rng = random.Random(11)
    events: list[tuple[int, dict[str, Any] | None]] = []
    live: dict[int, dict[str, Any]] = {}
    for _ in range(400):
        key = rng.randint(1, 40)
        row = None if rng.random() < 0.15 else _row(rng.randint(1, 4), rng.choice(["paid", "shipped"]),
                                                    f"{rng.randint(0, 9999)}.{rng.randint(0, 99):02d}",
                                                    rng.randint(1, 6))
        events.append((key, row))
    view = _agg_view(ch)
    checkpoint = 0                      # index of the next event to apply (and the checkpoint version)
    last_ver = 0
    high = 0                            # the furthest event any (crashed) batch reached
    checks = 0
    while checkpoint < len(events):
        end = min(len(events), checkpoint + rng.randint(1, 30))
        state: dict[int, dict[str, Any] | None] = {}
        for key, row in events[checkpoint:end]:
            state[key] = row
        changes = [ViewChange({"id": k}, None if r is None else _contribution(r)) for k, r in state.items()]
        ver = max(end, last_ver)
        high = max(high, end)
        crash = rng.random()
        if crash < 0.25:                # crash after the group rows: restart, replay from the checkpoint
            _crash_after_groups(view, changes, ver)
        elif crash < 0.4:               # crash after the contributions, before the checkpoint
            view.write(changes, ver)
        else:
            view.write(changes, ver)
            last_ver = ver
            checkpoint = end
            for k, r in state.items():
                live.pop(k, None) if r is None else live.__setitem__(k, r)
            if checkpoint >= high:
                assert view.read() == _expected(live), f"after event {end}"
                checks += 1
            continue
        view = _agg_view(ch)            # the restarted process
        last_ver = max(last_ver, view.max_version())
        view.recover(checkpoint)
    assert view.read() == _expected(live)
    assert live and checks > 5, (len(live), checks)
