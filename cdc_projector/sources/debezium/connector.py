"""Which replication slot feeds a topic prefix: asked of Kafka Connect.

The Kafka-mode horizon (:mod:`.horizon`) reads the confirmed position of the slot of the
Debezium connector that writes the projection's topics. Named by hand
(``source.debezium_slot``), a slot of another connector on the same database would pass the
database check of :func:`~cdc_projector.sources.postgres.slot.confirmed_flush` and could
settle positions that this connector may still send again. With ``source.connect_url`` every
round asks Connect which connector writes ``<topic_prefix>.*`` and takes its ``slot.name``
(refusing a ``debezium_slot`` that names another)::

    probe = flushed_lsn_probe(dsn, slot=None, connect_url="http://127.0.0.1:8083", topic_prefix="shop")
    probe()      # confirmed_flush_lsn of the slot of the connector with topic.prefix "shop"
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from ...connect.client import ConnectClient
from ...errors import SourceError, redact
from ..postgres.slot import confirmed_flush
from .horizon import FlushedLsn

#: Debezium's default ``slot.name``
DEFAULT_SLOT = "debezium"


@dataclass(frozen=True)
class Feeder:
    """The Debezium PostgreSQL connector writing a topic prefix, and its slot."""

    connector: str
    slot: str


def feeder(url: str, topic_prefix: str) -> Feeder | None:
    """The Debezium PostgreSQL connector registered at ``url`` that writes ``topic_prefix``'s
    topics (:func:`feeder_of`). Raises :class:`~cdc_projector.errors.ConnectError` when Connect
    cannot be asked."""
    with ConnectClient(url) as client:
        return feeder_of(client.configs(), topic_prefix)


def feeder_of(configs: Mapping[str, Mapping[str, str]], topic_prefix: str) -> Feeder | None:
    """Of connectors' configs (``name -> config``), the Debezium PostgreSQL connector whose
    ``topic.prefix`` (Debezium 1.x: ``database.server.name``) is ``topic_prefix``; None when there
    is none, :class:`SourceError` when several write that prefix."""
    found = [Feeder(name, config.get("slot.name", DEFAULT_SLOT)) for name, config in sorted(configs.items())
             if config.get("connector.class", "").endswith(".PostgresConnector")
             and config.get("topic.prefix", config.get("database.server.name")) == topic_prefix]
    if len(found) > 1:
        raise SourceError(f"connectors {', '.join(f.connector for f in found)} all write topic prefix "
                          f"{topic_prefix!r}", hint="give each connector its own topic.prefix")
    return found[0] if found else None


def flushed_lsn_probe(dsn: str, *, slot: str | None, connect_url: str | None,
                      topic_prefix: str) -> FlushedLsn | None:
    """The horizon's probe of the feeding slot's confirmed position: ``slot``'s alone without
    ``connect_url``; with it, the slot of the connector Connect names for ``topic_prefix`` on
    every call (a :class:`SourceError` when there is none, or when ``slot`` names another).
    None when there is neither."""
    if connect_url is None:
        return confirmed_flush(dsn, slot) if slot else None
    url = connect_url

    def probe() -> int | None:
        found = feeder(url, topic_prefix)
        if found is None:
            raise SourceError(f"Kafka Connect at {redact(url)} runs no Debezium PostgreSQL connector with "
                              f"topic.prefix {topic_prefix!r}",
                              hint="register the connector, or check source.topic_prefix and source.connect_url")
        if slot is not None and found.slot != slot:
            raise SourceError(f"source.debezium_slot {slot!r} is not the slot of connector {found.connector!r} "
                              f"(slot.name {found.slot!r}), which writes topic prefix {topic_prefix!r}",
                              hint=f"set source.debezium_slot to {found.slot!r}, or remove it (taken from Connect)")
        lsn = confirmed_flush(dsn, found.slot)()
        if lsn is None:
            raise SourceError(f"replication slot {found.slot!r} of connector {found.connector!r} does not exist",
                              hint="is the connector's task running (GET /connectors/NAME/status)?")
        return lsn
    return probe
