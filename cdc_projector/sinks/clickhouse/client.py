"""One connection path to ClickHouse, embedded (chDB) or server, through clickhouse-connect.

``connect(url, database)`` accepts:

* ``http://host:8123`` / ``https://...`` (user, password in the URL) - a ClickHouse server;
* ``chdb:///abs/path`` - the embedded engine (chDB) with its data in that directory;
* ``None`` or ``""`` - embedded, in :func:`default_chdb_path`.

Both give the same :class:`ClickHouse` object; every driver exception is
translated at this boundary into :mod:`cdc_projector.errors` classes:
a server that cannot be reached -> :class:`~cdc_projector.errors.SinkUnavailable`
(the engine retries), a chDB data directory locked by another process ->
:class:`~cdc_projector.errors.SinkLocked`, anything else -> :class:`~cdc_projector.errors.SinkError`.
"""
from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Mapping, NamedTuple, Sequence
from urllib.parse import urlparse

from ...errors import SinkError, SinkLocked, SinkUnavailable

_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,126}$")

#: settings every query runs with: NULL is a value inside IN (groups may be NULL). They are
#: the client's (session) settings: passed per call, chDB applies them to a command with a
#: SET / query system.settings / SET back dance - four engine calls, ~4 ms, instead of one
QUERY_SETTINGS: dict[str, Any] = {"transform_null_in": 1}


#: connections an embedded engine opens besides its first one, for :meth:`ClickHouse.insert_many`
SIDE_CONNECTIONS = 4


class Insert(NamedTuple):
    """Rows for one insert (:meth:`ClickHouse.insert_many`)."""

    table: str
    rows: Sequence[Sequence[Any]]
    columns: Sequence[str]
    types: Sequence[str]


def default_chdb_path() -> str:
    """Data directory of embedded ClickHouse when the sink URL is empty.

    ``$CDC_PROJECTOR_CHDB_PATH`` if set, else ``$CDC_PROJECTOR_HOME/clickhouse``,
    else ``~/.cdc-projector/clickhouse``.
    """
    if os.environ.get("CDC_PROJECTOR_CHDB_PATH"):
        return os.path.abspath(os.environ["CDC_PROJECTOR_CHDB_PATH"])
    home = os.environ.get("CDC_PROJECTOR_HOME") or os.path.join(Path.home(), ".cdc-projector")
    return os.path.abspath(os.path.join(home, "clickhouse"))


def ident(name: str, what: str = "identifier") -> str:
    """Validate a ClickHouse identifier from config and return it quoted with backticks.

    Only ``[A-Za-z_][A-Za-z0-9_]*`` (at most 127 characters) is accepted, so a
    name can never change the meaning of a statement.
    """
    if not isinstance(name, str) or not _IDENT_RE.match(name):
        raise SinkError(f"invalid ClickHouse {what} {name!r}",
                        hint="use letters, digits and underscores, starting with a letter or underscore")
    return f"`{name}`"


def describe_url(url: str | None) -> str:
    """The URL without credentials, for messages and logs."""
    if not url:
        return f"chdb://{default_chdb_path()}"
    parsed = urlparse(url)
    if parsed.password or parsed.username:
        netloc = parsed.hostname or ""
        if parsed.port:
            netloc += f":{parsed.port}"
        return parsed._replace(netloc=netloc).geturl()
    return url


class _Trace:
    """``$CDCP_CH_TRACE=/path``: one line per statement appended there (for profiling a batch:
    ``elapsed ms, thread, op, rows, first words``). Off (no cost) when the variable is unset."""

    def __init__(self, path: str) -> None:
        self._file = open(path, "a", buffering=1)  # noqa: SIM115 - kept for the process
        self._lock = threading.Lock()

    def __call__(self, op: str, t0: float, what: str, rows: int = -1) -> None:
        ms = (time.perf_counter() - t0) * 1000
        line = f"{time.time():.3f}\t{ms:.3f}\t{threading.current_thread().name}\t{op}\t{rows}\t{_head(what)[:120]}\n"
        with self._lock:
            self._file.write(line)


_TRACE: _Trace | None = _Trace(os.environ["CDCP_CH_TRACE"]) if os.environ.get("CDCP_CH_TRACE") else None


def trace(op: str, t0: float, what: str, rows: int = -1) -> None:
    """A line in ``$CDCP_CH_TRACE`` (a whole batch, say) when tracing is on."""
    if _TRACE is not None:
        _TRACE(op, t0, what, rows)


class ClickHouse:
    """A connected ClickHouse database (embedded or server): the only object sinks talk to."""

    def __init__(self, client: Any, database: str, url: str, embedded: bool,
                 path: str | None = None) -> None:
        self._client = client
        self.database = database
        self.url = url
        self.embedded = embedded
        self.path = path
        self._side: list[Any] = []                 # more chDB connections for insert_many
        self._pool: ThreadPoolExecutor | None = None
        self._side_lock = threading.Lock()         # pipelines sharing this sink call insert_many at once

    @property
    def remembers(self) -> bool:
        """May aggregate views and the mirror store keep stored rows across batches? Only
        embedded (this process is the only writer: chDB locks its directory); a ClickHouse
        server may have other writers (``dlq replay``). ``CDCP_CH_REMEMBER=0`` turns it off."""
        return self.embedded and os.environ.get("CDCP_CH_REMEMBER", "1") != "0"

    # -- statements ------------------------------------------------------
    def command(self, sql: str, parameters: Mapping[str, Any] | None = None) -> Any:
        """Run a statement that returns no rows (DDL, INSERT ... SELECT)."""
        t0 = time.perf_counter()
        try:
            return self._client.command(sql, parameters=dict(parameters or {}))
        except Exception as exc:  # noqa: BLE001 - translated at the boundary
            raise translate(exc, f"ClickHouse statement failed: {_head(sql)}", self.url) from exc
        finally:
            if _TRACE is not None:
                _TRACE("command", t0, sql)

    def query(self, sql: str, parameters: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Run a query; rows as tuples of Python values (DateTime64('UTC') aware)."""
        t0 = time.perf_counter()
        rows: list[tuple[Any, ...]] = []
        try:
            rows = list(self._client.query(sql, parameters=dict(parameters or {})).result_rows)
            return rows
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, f"ClickHouse query failed: {_head(sql)}", self.url) from exc
        finally:
            if _TRACE is not None:
                _TRACE("query", t0, sql, len(rows))

    def query_bytes(self, sql: str, fmt: str = "Native") -> bytes:
        """Run a query; the result as ClickHouse returns it in format ``fmt`` (no decoding in
        Python: what a client reading the view in that format receives)."""
        t0 = time.perf_counter()
        try:
            return bytes(self._client.raw_query(sql, fmt=ident(fmt, "format name").strip("`")))
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, f"ClickHouse query failed: {_head(sql)}", self.url) from exc
        finally:
            if _TRACE is not None:
                _TRACE("query_bytes", t0, sql)

    def query_dicts(self, sql: str, parameters: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run a query; rows as dicts keyed by column name."""
        try:
            result = self._client.query(sql, parameters=dict(parameters or {}))
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, f"ClickHouse query failed: {_head(sql)}", self.url) from exc
        names = result.column_names
        return [dict(zip(names, row)) for row in result.result_rows]

    def insert(self, table: str, rows: Sequence[Sequence[Any]], columns: Sequence[str],
               types: Sequence[str]) -> None:
        """Insert rows (one block; callers batch >= 10k rows when they have them).

        The rows are pivoted to columns here (``zip(*rows)``, in C): clickhouse-connect's own
        per-value pivot of row-oriented data costs more than the rest of its encoding."""
        if rows:
            self._insert(self._client, Insert(table, rows, columns, types))

    def _insert(self, client: Any, job: Insert) -> None:
        t0 = time.perf_counter()
        data = list(zip(*job.rows))
        try:
            client.insert(job.table, data, column_names=list(job.columns), database=self.database,
                          column_type_names=list(job.types), column_oriented=True)
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, f"ClickHouse insert into {self.database}.{job.table} failed", self.url) from exc
        finally:
            if _TRACE is not None:
                _TRACE("insert", t0, job.table, len(job.rows))

    def insert_many(self, jobs: Sequence[Insert]) -> None:
        """Inserts into DIFFERENT tables that may land in any order: all of them have landed when
        this returns, or it raises (the first failure, after every other insert has ended; some
        may have landed). Embedded, they run at once, each on its own chDB connection to the same
        engine (a chDB insert mostly waits for its part's files, without the GIL: three inserts
        take about the time of one and a half); a server takes them one after the other."""
        jobs = [j for j in jobs if j.rows]
        if len(jobs) <= 1 or not self.embedded:
            for job in jobs:
                self._insert(self._client, job)
            return
        pool, side = self._side_pool(len(jobs) - 1)
        futures = [pool.submit(self._insert, side[i % len(side)], job) for i, job in enumerate(jobs[1:])]
        errors: list[BaseException] = []
        try:
            self._insert(self._client, jobs[0])
        except BaseException as exc:  # noqa: BLE001 - raised below, after the others ended
            errors.append(exc)
        for future in futures:
            failure = future.exception()
            if failure is not None:
                errors.append(failure)
        if errors:
            raise errors[0]

    def _side_pool(self, n: int) -> tuple[ThreadPoolExecutor, list[Any]]:
        """The thread pool and up to ``n`` more connections to this embedded engine (at most
        :data:`SIDE_CONNECTIONS`; opened when first needed, kept until :meth:`close`). A
        connection serializes its own calls, so jobs beyond them (or another pipeline's
        ``insert_many`` at the same time) wait for one."""
        with self._side_lock:
            while len(self._side) < min(n, SIDE_CONNECTIONS):
                try:
                    self._side.append(_chdb_client(self.path or ""))
                except Exception as exc:  # noqa: BLE001
                    raise translate(exc, f"cannot open another connection to embedded ClickHouse at {self.path}",
                                    self.url) from exc
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=SIDE_CONNECTIONS, thread_name_prefix="chdb-insert")
            return self._pool, list(self._side)

    def insert_files(self, table: str, columns: Sequence[str], paths: Sequence[str], fmt: str = "Native") -> None:
        """Insert files of rows in ClickHouse format ``fmt`` (e.g. Native blocks written by
        another process) as ONE insert (one part, not one per file). Embedded: read by the
        engine itself (``INSERT ... FROM INFILE`` with a ``{a,b}`` list, which runs without the
        GIL); a server: the files are sent as the body of one insert."""
        if not paths:
            return
        cols = ", ".join(ident(c, "column name") for c in columns)
        ident(fmt, "format name")
        try:
            if self.embedded:
                folders = {os.path.dirname(p) for p in paths}
                names = [os.path.basename(p) for p in paths]
                plain = (len(folders) == 1 and not any(ch in next(iter(folders)) for ch in "*?{}[],")
                         and all(re.fullmatch(r"[A-Za-z0-9_.-]+", n) for n in names))
                patterns = ([os.path.join(folders.pop(), "{" + ",".join(names) + "}")]
                            if plain and len(names) > 1 else list(paths))
                for pattern in patterns:
                    quoted = "'" + pattern.replace("\\", "\\\\").replace("'", "\\'") + "'"
                    self._client.command(f"INSERT INTO {self.qualified(table)} ({cols}) FROM INFILE {quoted} "
                                         f"FORMAT {fmt}", settings=QUERY_SETTINGS)
            else:
                def body() -> Any:
                    for path in paths:
                        with open(path, "rb") as f:
                            yield f.read()
                self._client.raw_insert(self.qualified(table), list(columns), body(), fmt=fmt)
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, f"ClickHouse insert into {self.database}.{table} failed", self.url) from exc

    def table_exists(self, table: str) -> bool:
        """Is there a table or view ``table`` in this database?"""
        return bool(self.query("SELECT 1 FROM system.tables WHERE database = {d:String} AND name = {n:String}",
                               {"d": self.database, "n": table}))

    def qualified(self, table: str) -> str:
        """``\\`database\\`.\\`table\\``` with both names validated."""
        return f"{ident(self.database, 'database name')}.{ident(table, 'table name')}"

    def close(self) -> None:
        """Release the connection (for chDB: lets another path be opened in this process)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        for client in [*self._side, self._client]:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - closing never fails loudly
                pass
        self._side = []


def _head(sql: str) -> str:
    text = " ".join(sql.split())
    return text if len(text) <= 160 else text[:157] + "..."


_UNAVAILABLE = ("connection refused", "failed to establish", "max retries exceeded",
                "timed out", "name or service not known", "connection reset",
                "remote end closed", "temporary failure in name resolution", "network is unreachable")


def translate(exc: BaseException, what: str, url: str) -> SinkError:
    """Map a clickhouse-connect / chDB exception to the project's error tree."""
    if isinstance(exc, SinkError):
        return exc
    text = str(exc)
    low = text.lower()
    first = " ".join(text.split())[:400]
    if any(marker in low for marker in _UNAVAILABLE):
        return SinkUnavailable(f"{what}: ClickHouse at {describe_url(url)} is not reachable ({first})",
                               hint="start the server or fix the sink URL; the projector retries")
    return SinkError(f"{what}: {first}")


def _lock_holder(path: str) -> int | None:
    """PID written by the engine holding ``path`` (its ``status`` file), if readable."""
    try:
        text = Path(path, "status").read_text()
    except OSError:
        return None
    match = re.search(r"PID:\s*(\d+)", text)
    return int(match.group(1)) if match else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _chdb_client(path: str) -> Any:
    """A clickhouse-connect client of the embedded engine with its data in ``path`` (one more
    connection when this process has the engine open there already)."""
    import clickhouse_connect  # local: keeps `import cdc_projector` light

    return clickhouse_connect.get_client(interface="chdb", path=path, tz_mode="schema", settings=QUERY_SETTINGS)


def _open_chdb(path: str, database: str, url: str) -> ClickHouse:
    path = os.path.realpath(path)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise SinkError(f"cannot create the ClickHouse data directory {path}: {exc.strerror}",
                        hint="choose a writable path in the sink URL (chdb:///abs/path)") from exc
    try:
        client = _chdb_client(path)
    except ImportError as exc:
        raise SinkError("embedded ClickHouse needs the chdb package",
                        hint="pip install 'cdc-projector[chdb]'") from exc
    except Exception as exc:  # noqa: BLE001
        text = str(exc)
        other = re.search(r"already initialized with path '([^']*)'", text)
        if other:
            raise SinkLocked(
                f"this process already has embedded ClickHouse open at {other.group(1)}; "
                f"cannot also open {path}",
                hint="one chDB data directory per process: close the other sink first") from exc
        if "EmbeddedServer" in text or "Cannot lock file" in text:
            pid = _lock_holder(path)
            who = f"pid {pid}" if pid and pid != os.getpid() and _alive(pid) else "pid unknown"
            raise SinkLocked(
                f"ClickHouse data directory {path} is used by another process ({who}); "
                "stop it or point the sink URL at another directory",
                hint="while `cdc-projector run` holds it, use its HTTP API (status, verify, wait) "
                     "instead of opening the directory") from exc
        raise translate(exc, f"cannot open embedded ClickHouse at {path}", url) from exc
    return ClickHouse(client, database, f"chdb://{path}", embedded=True, path=path)


def _open_server(url: str, database: str) -> ClickHouse:
    import clickhouse_connect

    try:
        # no server session: the pipelines of a sink share this client from their threads, and
        # a session takes one query at a time ("Session is locked by a concurrent client");
        # nothing here needs session state (settings go with every request, no temporary tables)
        client = clickhouse_connect.get_client(dsn=url, tz_mode="schema", connect_timeout=5,
                                               send_receive_timeout=300, settings=QUERY_SETTINGS,
                                               autogenerate_session_id=False)
    except Exception as exc:  # noqa: BLE001
        raise translate(exc, "cannot connect to ClickHouse", url) from exc
    return ClickHouse(client, database, url, embedded=False)


def connect(url: str | None, database: str, *, create_database: bool = True) -> ClickHouse:
    """Connect to the ClickHouse of a sink and (by default) create ``database`` if missing.

    ``url``: ``http(s)://user:password@host:port``, ``chdb:///abs/path``, or empty for the
    embedded default (:func:`default_chdb_path`).
    """
    ident(database, "database name")
    if not url:
        ch = _open_chdb(default_chdb_path(), database, "")
    elif url.startswith("chdb:"):
        parsed = urlparse(url)
        location = parsed.path if not parsed.netloc else parsed.netloc + parsed.path
        if not location or location in ("memory", ":memory:") or not location.startswith("/"):
            raise SinkError(f"unsupported embedded ClickHouse URL {url!r}",
                            hint="use chdb:///absolute/path/to/data (three slashes)")
        ch = _open_chdb(location, database, url)
    elif url.startswith(("http://", "https://")):
        ch = _open_server(url, database)
    else:
        raise SinkError(f"unsupported ClickHouse URL {describe_url(url)!r}",
                        hint="use http(s)://host:8123 for a server or chdb:///abs/path for embedded")
    if create_database:
        try:
            ch.command(f"CREATE DATABASE IF NOT EXISTS {ident(database, 'database name')}")
        except SinkError:
            ch.close()
            raise
    return ch
