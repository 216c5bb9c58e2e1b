"""The account catalog: one SQLite database in the home directory.

SQLite in WAL mode lets several processes (a shell, a notebook, a dbt run) share one home:
readers never block, writers hold the lock only for one short transaction, and what one process
commits the others see on their next read. Every object is a row of ``objects`` (kind, database,
schema, name, owner role, properties as JSON); privileges are rows of ``grants``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from duckserve.errors import OperationalError

SCHEMA_VERSION = 1

_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS objects (
    kind TEXT NOT NULL,
    database TEXT NOT NULL DEFAULT '',
    schema TEXT NOT NULL DEFAULT '',
    name TEXT NOT NULL,
    owner TEXT NOT NULL,
    created_on TEXT NOT NULL,
    updated_on TEXT NOT NULL,
    comment TEXT,
    props TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (kind, database, schema, name)
);
CREATE TABLE IF NOT EXISTS grants (
    privilege TEXT NOT NULL,
    object_kind TEXT NOT NULL,
    object_name TEXT NOT NULL,
    grantee_kind TEXT NOT NULL,
    grantee TEXT NOT NULL,
    granted_by TEXT NOT NULL,
    created_on TEXT NOT NULL,
    PRIMARY KEY (privilege, object_kind, object_name, grantee_kind, grantee)
);
CREATE INDEX IF NOT EXISTS grants_by_grantee ON grants (grantee_kind, grantee);
CREATE INDEX IF NOT EXISTS grants_by_object ON grants (object_kind, object_name);
"""


def now() -> datetime:
    return datetime.now(timezone.utc)


def parse_timestamp(value: str | None) -> datetime | None:
    """A timestamp the catalog stored as ISO text (None stays None)."""
    return datetime.fromisoformat(value) if value else None


def default_home() -> Path:
    return Path(os.environ.get("DUCKSERVE_HOME") or Path.home() / ".duckserve")


@dataclass
class CatalogObject:
    kind: str
    name: str
    owner: str
    database: str = ""
    schema: str = ""
    created_on: datetime = field(default_factory=now)
    updated_on: datetime = field(default_factory=now)
    comment: str | None = None
    props: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """The name grants refer to: ``DB.SCHEMA.NAME`` for schema objects, ``NAME`` otherwise."""
        return ".".join(p for p in (self.database, self.schema, self.name) if p)


@dataclass(frozen=True)
class Grant:
    privilege: str
    object_kind: str
    object_name: str
    grantee_kind: str
    grantee: str
    granted_by: str
    created_on: datetime


def _row_to_object(row: sqlite3.Row) -> CatalogObject:
    return CatalogObject(
        kind=row["kind"],
        name=row["name"],
        owner=row["owner"],
        database=row["database"],
        schema=row["schema"],
        created_on=datetime.fromisoformat(row["created_on"]),
        updated_on=datetime.fromisoformat(row["updated_on"]),
        comment=row["comment"],
        props=json.loads(row["props"]),
    )


class Catalog:
    """Thread-safe access to the home's catalog; writes are short IMMEDIATE transactions."""

    def __init__(self, home: Path | str | None = None) -> None:
        self.home = Path(home) if home is not None else default_home()
        self.home.mkdir(parents=True, exist_ok=True)
        self.path = self.home / "catalog.sqlite"
        self._lock = threading.RLock()
        self._depth = 0
        self._commits = 0  # this connection's own commits, which PRAGMA data_version does not count
        try:
            self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            with self.transaction():
                for statement in _DDL.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(
                    "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
                )
        except sqlite3.Error as exc:
            raise OperationalError(f"cannot open the account catalog {self.path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction (nested calls join the outer one)."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise OperationalError(
                    f"the account catalog {self.path} stayed locked by another process for 30 s: {exc}"
                ) from exc
            self._depth = 1
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("COMMIT")
                self._commits += 1
            finally:
                self._depth = 0

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise OperationalError(f"account catalog {self.path}: {exc}") from exc

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        with self.transaction():
            try:
                return self._db.execute(sql, params).rowcount
            except sqlite3.Error as exc:
                raise OperationalError(f"account catalog {self.path}: {exc}") from exc

    def changes(self) -> tuple[int, int]:
        """A value that differs after any commit to the catalog, by any process or connection (SQLite's
        ``PRAGMA data_version``, plus this connection's own commits): a cheap test, not a time-based
        guess, for whether something read from it may be stale."""
        with self._lock:
            try:
                version = int(self._db.execute("PRAGMA data_version").fetchone()[0])
            except sqlite3.Error as exc:
                raise OperationalError(f"account catalog {self.path}: {exc}") from exc
            return version, self._commits

    # -- meta -------------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0]["value"] if rows else None

    def set_meta(self, key: str, value: str) -> None:
        self._execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    # -- objects ----------------------------------------------------------------------------------
    def get(self, kind: str, name: str, database: str = "", schema: str = "") -> CatalogObject | None:
        rows = self._query(
            "SELECT * FROM objects WHERE kind = ? AND database = ? AND schema = ? AND name = ?",
            (kind, database, schema, name),
        )
        return _row_to_object(rows[0]) if rows else None

    def objects(self, kind: str, **where: str) -> list[CatalogObject]:
        sql, params = "SELECT * FROM objects WHERE kind = ?", [kind]
        for column in ("database", "schema", "name", "owner"):
            if column in where:
                sql += f" AND {column} = ?"
                params.append(where[column])
        sql += " ORDER BY database, schema, name"
        return [_row_to_object(r) for r in self._query(sql, tuple(params))]

    def insert(self, obj: CatalogObject) -> None:
        self._execute(
            "INSERT INTO objects(kind, database, schema, name, owner, created_on, updated_on, comment, props)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                obj.kind, obj.database, obj.schema, obj.name, obj.owner, obj.created_on.isoformat(),
                obj.updated_on.isoformat(), obj.comment, json.dumps(obj.props, default=str),
            ),
        )

    def update(self, obj: CatalogObject) -> None:
        obj.updated_on = now()
        self._execute(
            "UPDATE objects SET owner = ?, updated_on = ?, comment = ?, props = ?"
            " WHERE kind = ? AND database = ? AND schema = ? AND name = ?",
            (
                obj.owner, obj.updated_on.isoformat(), obj.comment, json.dumps(obj.props, default=str),
                obj.kind, obj.database, obj.schema, obj.name,
            ),
        )

    def delete(self, obj: CatalogObject) -> None:
        """Delete an object and every grant on it."""
        with self.transaction():
            self._execute(
                "DELETE FROM objects WHERE kind = ? AND database = ? AND schema = ? AND name = ?",
                (obj.kind, obj.database, obj.schema, obj.name),
            )
            self._execute("DELETE FROM grants WHERE object_kind = ? AND object_name = ?", (obj.kind, obj.key))

    # -- grants -----------------------------------------------------------------------------------
    def add_grant(self, privilege: str, object_kind: str, object_name: str, grantee_kind: str, grantee: str,
                  granted_by: str) -> bool:
        """Record a grant; False when it already existed."""
        return bool(self._execute(
            "INSERT OR IGNORE INTO grants VALUES (?, ?, ?, ?, ?, ?, ?)",
            (privilege, object_kind, object_name, grantee_kind, grantee, granted_by, now().isoformat()),
        ))

    def remove_grant(self, privilege: str, object_kind: str, object_name: str, grantee_kind: str,
                     grantee: str) -> bool:
        return bool(self._execute(
            "DELETE FROM grants WHERE privilege = ? AND object_kind = ? AND object_name = ?"
            " AND grantee_kind = ? AND grantee = ?",
            (privilege, object_kind, object_name, grantee_kind, grantee),
        ))

    def grants(self, **where: str) -> list[Grant]:
        sql, params = "SELECT * FROM grants WHERE 1 = 1", []
        for column in ("privilege", "object_kind", "object_name", "grantee_kind", "grantee"):
            if column in where:
                sql += f" AND {column} = ?"
                params.append(where[column])
        sql += " ORDER BY object_kind, object_name, privilege, grantee"
        return [
            Grant(r["privilege"], r["object_kind"], r["object_name"], r["grantee_kind"], r["grantee"],
                  r["granted_by"], datetime.fromisoformat(r["created_on"]))
            for r in self._query(sql, tuple(params))
        ]

    def remove_grants_to(self, grantee_kind: str, grantee: str) -> None:
        self._execute("DELETE FROM grants WHERE grantee_kind = ? AND grantee = ?", (grantee_kind, grantee))

    def rename_owner(self, old: str, new: str) -> None:
        """Hand every object owned by role ``old`` to role ``new`` (used when a role is dropped)."""
        self._execute("UPDATE objects SET owner = ? WHERE owner = ?", (new, old))
