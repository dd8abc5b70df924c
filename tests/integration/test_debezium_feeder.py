"""`source.connect_url`: Kafka Connect names the slot of the Debezium connector writing a topic
prefix (a real Connect and a real connector), and the Kafka-mode horizon's probe reads that slot's
confirmed position - refusing a `source.debezium_slot` that names another slot, saying so when
no connector writes the prefix, and never showing a password of the URL.
The whole path through `run`: test_clickhouse_compaction.py (Kafka mode)."""
from __future__ import annotations

from typing import Callable

import psycopg2
import pytest

from cdc_projector.errors import ConnectError, SourceError
from cdc_projector.sources.debezium.connector import Feeder, feeder, flushed_lsn_probe
from cdc_projector.events import parse_lsn
from tests.integration.test_rebuild_helpers import free_port
from tests.support.debezium import Capture, debezium  # noqa: F401  (fixture)
from tests.support.pgdb import PgDb, pgdb  # noqa: F401  (fixture)
from tests.support.services import CONNECT_URL

pytestmark = pytest.mark.integration


def _confirmed(db: PgDb, slot: str) -> int:
    with psycopg2.connect(db.admin_dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s", (slot,))
        value = parse_lsn(cur.fetchone()[0])
    conn.close()
    return value


def test_connect_names_the_slot_the_probe_reads(pgdb: PgDb, debezium: Callable[..., Capture]) -> None:  # noqa: F811
    cap = debezium(pgdb.name, pgdb.publication)
    assert feeder(CONNECT_URL, cap.topic_prefix) == Feeder(cap.name, cap.slot)
    assert feeder(CONNECT_URL, cap.topic_prefix + "x") is None

    probe = flushed_lsn_probe(pgdb.capture_dsn, slot=None, connect_url=CONNECT_URL, topic_prefix=cap.topic_prefix)
    assert probe is not None
    before = _confirmed(pgdb, cap.slot)
    got = probe()
    assert got is not None and before <= got <= _confirmed(pgdb, cap.slot) and got > 0

    named = flushed_lsn_probe(pgdb.capture_dsn, slot=cap.slot, connect_url=CONNECT_URL,
                              topic_prefix=cap.topic_prefix)
    assert named is not None and (named() or 0) >= got

    wrong = flushed_lsn_probe(pgdb.capture_dsn, slot="cdcp_someone_else", connect_url=CONNECT_URL,
                              topic_prefix=cap.topic_prefix)
    assert wrong is not None
    with pytest.raises(SourceError, match=f"not the slot of connector '{cap.name}'") as refused:
        wrong()
    assert f"set source.debezium_slot to '{cap.slot}'" in str(refused.value)

    nobody = flushed_lsn_probe(pgdb.capture_dsn, slot=None, connect_url=CONNECT_URL,
                               topic_prefix=cap.topic_prefix + "x")
    assert nobody is not None
    with pytest.raises(SourceError, match="runs no Debezium PostgreSQL connector with topic.prefix"):
        nobody()


def test_connect_down_is_a_clear_error_without_the_password(pgdb: PgDb) -> None:  # noqa: F811
    url = f"http://admin:s3cret@127.0.0.1:{free_port()}"
    probe = flushed_lsn_probe(pgdb.capture_dsn, slot=None, connect_url=url, topic_prefix="shop")
    assert probe is not None
    with pytest.raises(ConnectError, match="Kafka Connect is not reachable") as down:
        probe()
    assert "s3cret" not in str(down.value) and "admin:***@" in str(down.value)


def test_without_connect_url_the_named_slot_alone(pgdb: PgDb) -> None:  # noqa: F811
    assert flushed_lsn_probe(pgdb.capture_dsn, slot=None, connect_url=None, topic_prefix="shop") is None
    probe = flushed_lsn_probe(pgdb.capture_dsn, slot="cdcp_no_such_slot", connect_url=None, topic_prefix="shop")
    assert probe is not None and probe() is None
