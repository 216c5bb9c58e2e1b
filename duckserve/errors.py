"""duckserve's exceptions: one tree rooted in `Error`, with the PEP 249 names.

Every message names the object and says how to fix the problem. Foreign exceptions
(duckdb, httpx, subprocess, uv, docker) are translated at the boundary with ``raise ... from``.
"""

from __future__ import annotations


class Warning(Exception):  # noqa: A001 - the PEP 249 name
    """PEP 249: important warnings (never raised by duckserve itself today)."""


class Error(Exception):
    """Root of every duckserve error (PEP 249 ``Error``)."""


class InterfaceError(Error):
    """The DB-API object was misused: a closed connection or cursor, fetch before execute."""


class DatabaseError(Error):
    """PEP 249 root for errors reported by the database or the control plane."""


class DataError(DatabaseError):
    """A value does not fit: a service answered with a wrong type, a row came back twice or not at all."""


class OperationalError(DatabaseError):
    """Something outside the statement failed: an inference server, a build, a process, the catalog lock."""


class IntegrityError(DatabaseError):
    """A statement would leave the catalog inconsistent: dropping a model a service still uses."""


class InternalError(DatabaseError):
    """A duckserve bug: the catalog is in a state it should never reach."""


class ProgrammingError(DatabaseError):
    """The statement is wrong: a syntax error, an unknown object, a bad argument."""


class NotSupportedError(DatabaseError):
    """The statement is valid Snowflake but duckserve does not implement it (the message says what instead)."""


class SQLSyntaxError(ProgrammingError):
    """One of duckserve's statements does not parse; the message points at line and column."""

    def __init__(self, message: str, line: int = 0, col: int = 0) -> None:
        super().__init__(message)
        self.line = line
        self.col = col


class ObjectNotFound(ProgrammingError):
    """A named object (pool, repository, warehouse, role, user, model, service) does not exist."""


class ObjectExists(ProgrammingError):
    """CREATE without IF NOT EXISTS or OR REPLACE found an object of that name."""


class InsufficientPrivileges(ProgrammingError):
    """The current role lacks a privilege; the message names it and the GRANT that would give it."""


class ServiceError(OperationalError):
    """A service function call failed: the message names the service, the method and the cause."""


class BuildError(OperationalError):
    """A model environment could not be built; the message names the package and the log to read."""


class DBAPIExceptions:
    """PEP 249's exception classes as attributes, as a connection (and a DB-API module) carries them."""

    Warning = Warning
    Error = Error
    InterfaceError = InterfaceError
    DatabaseError = DatabaseError
    DataError = DataError
    OperationalError = OperationalError
    IntegrityError = IntegrityError
    InternalError = InternalError
    ProgrammingError = ProgrammingError
    NotSupportedError = NotSupportedError
