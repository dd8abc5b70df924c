"""One exception tree for the whole project.

Every error a user can see derives from :class:`CdcProjectorError`. Driver
exceptions (psycopg2, pymongo, kafka-python, clickhouse-connect) are translated
into the most specific class here at the boundary where they are caught, so the
CLI can print one line that says what failed, where, and what to do next.
"""
from __future__ import annotations

import re

_PASSWORD_RE = re.compile(r"(://[^:/@]+:)[^@]*@|(password\s*=\s*)\S+", re.IGNORECASE)


def redact(dsn: str) -> str:
    """A DSN or URL with its password replaced by ``***`` (``user:***@``, ``password=***``):
    safe in a message or a log line."""
    return _PASSWORD_RE.sub(lambda m: (m.group(1) + "***@") if m.group(1) else m.group(2) + "***", dsn)


class CdcProjectorError(Exception):
    """Something went wrong in cdc-projector."""

    #: process exit code used by the CLI for this kind of error
    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(CdcProjectorError):
    """The projection files are invalid; the message names file:line:col."""

    exit_code = 2

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 col: int | None = None, hint: str | None = None) -> None:
        self.file, self.line, self.col = file, line, col
        where = ""
        if file:
            where = f"{file}:{line or 1}:{col or 1}: "
        super().__init__(where + message, hint=hint)


class ConfigErrors(ConfigError):
    """Several configuration problems at once (validate reports all of them)."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


class ExpressionError(ConfigError):
    """An expression in a projection file does not parse or type-check.

    ``expr_col`` is the 1-based column inside the expression text where the
    problem is; the config loader adds it to the YAML node's position.
    """

    def __init__(self, message: str, *, expr_col: int | None = None, file: str | None = None,
                 line: int | None = None, col: int | None = None, hint: str | None = None) -> None:
        self.expr_col = expr_col
        super().__init__(message, file=file, line=line, col=col, hint=hint)


class StackError(CdcProjectorError):
    """The local service stack could not be installed, started or stopped."""


class SourceError(CdcProjectorError):
    """The change source (Kafka or PostgreSQL) is unreachable or misconfigured."""


class PreflightError(SourceError):
    """The source database is not set up for change capture; the hint says what to change."""


class DecodeError(CdcProjectorError):
    """A change event could not be decoded (a poison event: it goes to the dead-letter store)."""


class ProjectionError(CdcProjectorError):
    """Applying one event to a projection failed for that event (a poison event)."""


class DefinitionChanged(CdcProjectorError):
    """A projection's definition differs from the one its stored view was built with
    (``run`` refuses it; ``rebuild`` applies the change). ``parts`` names what changed."""

    exit_code = 3

    def __init__(self, message: str, *, hint: str | None = None, projection: str | None = None,
                 parts: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.projection, self.parts = projection, parts


class SinkError(CdcProjectorError):
    """A sink (MongoDB, ClickHouse) refused or could not be reached."""


class SinkUnavailable(SinkError):
    """The sink is down or unreachable: retried with backoff, nothing is lost."""


class SinkLocked(SinkError):
    """An embedded ClickHouse data directory is used by another process."""


class ConnectError(CdcProjectorError):
    """Kafka Connect refused a request or a connector is failing."""


class OpsError(CdcProjectorError):
    """The ops HTTP server (dashboard, /metrics, status API) could not start or answer."""


class ProcessNotRunning(OpsError):
    """No `cdc-projector run` process answers on the configured status address."""


class WaitTimeout(OpsError):
    """A read-your-writes wait ended before the projections applied the requested LSN."""


class RebuildError(CdcProjectorError):
    """A rebuild or verify could not build, catch up, swap or compare a view."""
