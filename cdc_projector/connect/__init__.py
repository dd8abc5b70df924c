"""Kafka Connect: a REST client and the connector declarations of ``connectors/``.

Public API: :class:`ConnectClient`, :class:`ConnectorState`, :class:`ConnectorSpec`,
:func:`load_specs`, :func:`apply_specs`.
"""
from __future__ import annotations

from .client import DEFAULT_URL, ConnectClient, ConnectorState, TaskState
from .specs import ConnectorSpec, load_spec, load_specs


def apply_specs(client: ConnectClient, specs: list[ConnectorSpec]) -> list[tuple[ConnectorSpec, str]]:
    """Create or update each connector; returns (spec, "created" | "updated" | "unchanged")."""
    results: list[tuple[ConnectorSpec, str]] = []
    for spec in specs:
        current = client.get_config(spec.name)
        wanted = dict(spec.config, name=spec.name)
        if current is not None and current == wanted:
            results.append((spec, "unchanged"))
            continue
        created = client.put_config(spec.name, spec.config)
        results.append((spec, "created" if created else "updated"))
    return results


__all__ = ["DEFAULT_URL", "ConnectClient", "ConnectorSpec", "ConnectorState", "TaskState",
           "apply_specs", "load_spec", "load_specs"]
