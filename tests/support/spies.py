"""Spies on engine calls for tests (they record, then call the real code)."""
from __future__ import annotations

from typing import Any

import pytest

from cdc_projector.engine.projector import BatchResult, Projector


def record_fresh_flags(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Every ``Projector.process`` call's ``fresh`` flag (snapshot fast path taken or not), in order."""
    seen: list[bool] = []
    original = Projector.process

    def spy(self: Projector, events: Any, store: Any, *, fresh: bool = False) -> BatchResult:
        seen.append(fresh)
        return original(self, events, store, fresh=fresh)

    monkeypatch.setattr(Projector, "process", spy)
    return seen
