"""Read-your-writes for application code.

After writing to the legacy database, read the WAL position and wait until the
projections have applied it, then read the view::

    import cdc_projector

    with conn:                                   # psycopg2 connection to the legacy database
        cur = conn.cursor()
        cur.execute("UPDATE customers SET email = %s WHERE id = %s", (email, cid))
    lsn = cdc_projector.current_lsn(conn)        # after the commit
    cdc_projector.wait_for(lsn, url="http://127.0.0.1:8765", projections=["customer_profile"], timeout=5)
    # the customer_profile view now reflects the update

The running process answers ``GET /api/wait?lsn=...&projection=...&timeout=...``
as soon as every selected projection's applied position is at or past ``lsn``
(an idle projection advances through heartbeats). A timeout raises
:class:`~cdc_projector.errors.WaitTimeout`.
"""
from __future__ import annotations

from typing import Any, Iterable

from ..errors import OpsError, WaitTimeout
from ..events import format_lsn, parse_lsn
from .client import DEFAULT_URL, OpsClient


def current_lsn(conn: Any) -> str:
    """``pg_current_wal_lsn()`` of the database behind ``conn`` (a psycopg2 connection or a DSN)."""
    if isinstance(conn, str):
        import psycopg2

        c = psycopg2.connect(conn)
        try:
            return current_lsn(c)
        finally:
            c.close()
    with conn.cursor() as cur:
        cur.execute("SELECT pg_current_wal_lsn()::text")
        return str(cur.fetchone()[0])


def wait_for(lsn: str | int, *, url: str = DEFAULT_URL, projections: Iterable[str] = (),
             timeout: float = 30.0, token: str | None = None) -> dict[str, Any]:
    """Block until the projections (all when empty) applied ``lsn``; returns their applied positions.

    Raises :class:`WaitTimeout` after ``timeout`` seconds and
    :class:`~cdc_projector.errors.ProcessNotRunning` when nothing answers at ``url``.
    """
    text = format_lsn(lsn) if isinstance(lsn, int) else format_lsn(parse_lsn(lsn))
    client = OpsClient(url, token=token)
    status, body = client.request("GET", "/api/wait",
                                  {"lsn": text, "projection": list(projections) or None, "timeout": timeout},
                                  timeout_s=timeout + 10.0)
    if status == 200:
        return body
    message = body.get("error") if isinstance(body, dict) else None
    if status == 408:
        raise WaitTimeout(message or f"projections did not apply {text} within {timeout:g} s",
                          hint=body.get("hint") if isinstance(body, dict) else None)
    raise OpsError(message or f"wait for {text}: HTTP {status}",
                   hint=body.get("hint") if isinstance(body, dict) else None)
