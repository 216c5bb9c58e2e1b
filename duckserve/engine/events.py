"""The account's event table: service and build logs, lifecycle, scaling, restart and update events,
and metrics, in the rows and columns of Snowflake's event tables, kept after a service is dropped.

It lives in the account home as its own SQLite database, ``events.sqlite``, beside (not inside)
the catalog, so that frequent writes (metrics samples, log lines) never hold the catalog's lock.
WAL mode lets many processes share it as they share the catalog: readers never wait, and each
write is one short ``BEGIN IMMEDIATE`` transaction that waits up to 30 s for another writer.

A row is a ``record_type`` (LOG, EVENT or METRIC) about a resource (``snow.database.name``,
``snow.schema.name``, ``snow.service.name``, ``snow.service.container.instance``,
``snow.service.container.name``, ...: the resource attributes Snowflake gives), with a
``record`` (an event's name and severity, a metric's name, unit and type), ``record_attributes``
(a metric's labels, an event's details) and a ``value`` (the log line, the event's message, the
metric's number). SQL reads them as ``SNOWFLAKE.TELEMETRY.EVENTS`` (`duckserve.sql.telemetry`).

Rows older than the retention (``events_retention_days``, stored in the table's own meta; else
``$DUCKSERVE_EVENT_RETENTION_DAYS``; else 7 days) are never read and are deleted by `purge`,
which writers run at most every PURGE_EVERY_SECONDS. The same purge thins metrics: samples older
than ``$DUCKSERVE_METRICS_DETAIL_HOURS`` (default 6) keep one sample per instance (and one of the
service's own rows) per THIN_BUCKET_SECONDS, its first; a sample is all the rows written with one
timestamp, and counters are cumulative, so rates between the samples kept stay right. A running
instance sampled every 15 s thus holds about 37,000 rows (~20 MB) at the default retention,
instead of 440,000.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from duckserve.errors import OperationalError, ProgrammingError

if TYPE_CHECKING:
    import pyarrow as pa

    from duckserve.engine.catalog import CatalogObject

EVENTS_FILE = "events.sqlite"
ENV_RETENTION = "DUCKSERVE_EVENT_RETENTION_DAYS"
DEFAULT_RETENTION_DAYS = 7.0
RETENTION_KEY = "events_retention_days"
PURGE_EVERY_SECONDS = 300.0
ENV_METRICS_DETAIL = "DUCKSERVE_METRICS_DETAIL_HOURS"
DEFAULT_METRICS_DETAIL_HOURS = 6.0
THIN_BUCKET_SECONDS = 300
THINNED_KEY = "metrics_thinned_until"

LOG, EVENT, METRIC = "LOG", "EVENT", "METRIC"
#: the container of a model service's instances, and of a MODEL_BUILD job (the seed's names)
INFERENCE_CONTAINER = "model-inference"
BUILD_CONTAINER = "model-build"
SCOPE = "snow.spcs.platform"

#: event kinds the engine records (RECORD:"name"); other parts may add their own
SERVICE_CREATED = "SERVICE.CREATED"
SERVICE_SUSPENDED = "SERVICE.SUSPENDED"
SERVICE_RESUMED = "SERVICE.RESUMED"
SERVICE_ALTERED = "SERVICE.ALTERED"
SERVICE_DROPPED = "SERVICE.DROPPED"
SERVICE_SCALED = "SERVICE.SCALED"
INSTANCE_RESTARTED = "INSTANCE.RESTARTED"
SERVICE_UPDATED = "SERVICE.UPDATED"

_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    observed_ts REAL NOT NULL,
    record_type TEXT NOT NULL,
    service TEXT NOT NULL DEFAULT '',
    instance TEXT,
    container TEXT,
    name TEXT,
    resource_attributes TEXT NOT NULL,
    record TEXT,
    record_attributes TEXT,
    value TEXT
);
CREATE INDEX IF NOT EXISTS events_by_time ON events (ts);
CREATE INDEX IF NOT EXISTS events_by_service ON events (service, record_type, ts);
"""


@dataclass(frozen=True)
class Resource:
    """What a row is about: a service (or job) of a schema, optionally one instance's container."""

    database: str
    schema: str
    service: str
    compute_pool: str | None = None
    instance: str | None = None
    container: str | None = None
    kind: str = "Service"  # or "Job" (a MODEL_BUILD)

    @classmethod
    def of(cls, service: CatalogObject, instance: int | str | None = None, container: str | None = None,
           kind: str = "Service") -> Resource:
        pool = service.props.get("compute_pool") if isinstance(service.props, dict) else None
        return cls(service.database, service.schema, service.name, pool,
                   None if instance is None else str(instance), container, kind)

    @property
    def key(self) -> str:
        """``DB.SCHEMA.NAME``, as the catalog keys the service."""
        return ".".join(p for p in (self.database, self.schema, self.service) if p)

    def at(self, instance: int | str | None, container: str | None = INFERENCE_CONTAINER) -> Resource:
        return Resource(self.database, self.schema, self.service, self.compute_pool,
                        None if instance is None else str(instance), container, self.kind)

    def attributes(self) -> dict[str, str]:
        out = {"snow.database.name": self.database, "snow.schema.name": self.schema,
               "snow.service.name": self.service, "snow.service.type": self.kind}
        if self.compute_pool:
            out["snow.compute_pool.name"] = self.compute_pool
        if self.instance is not None:
            out["snow.service.container.instance"] = self.instance
        if self.container is not None:
            out["snow.service.container.name"] = self.container
        return out


@dataclass(frozen=True)
class MetricSample:
    """One reading of a metric: a counter (``sum``, cumulative) or a ``gauge``."""

    name: str
    value: float
    unit: str = "1"
    metric_type: str = "gauge"
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EventRow:
    """A row of the event table as it is read back."""

    timestamp: float
    record_type: str
    resource_attributes: dict[str, Any]
    record: dict[str, Any] | None
    record_attributes: dict[str, Any] | None
    value: Any
    observed_timestamp: float = 0.0

    @property
    def name(self) -> str | None:
        if self.record is None:
            return None
        metric = self.record.get("metric")
        return str(metric.get("name")) if isinstance(metric, dict) else self.record.get("name")


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, default=str, separators=(",", ":"))


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _env_number(name: str, default: float, unit: str) -> float:
    text = os.environ.get(name)
    try:
        return float(text) if text else default
    except ValueError:
        raise ProgrammingError(f"${name} must be a number of {unit}, got {text!r}") from None


def metrics_detail_hours() -> float:
    return _env_number(ENV_METRICS_DETAIL, DEFAULT_METRICS_DETAIL_HOURS, "hours")


def default_retention_days() -> float:
    return _env_number(ENV_RETENTION, DEFAULT_RETENTION_DAYS, "days")


class EventTable:
    """The event table of one account home (one SQLite connection per process; thread-safe)."""

    def __init__(self, home: Path | str) -> None:
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        self.path = self.home / EVENTS_FILE
        self._lock = threading.RLock()
        self._purged = 0.0
        try:
            self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            with self._write() as db:
                for statement in _DDL.split(";"):
                    if statement.strip():
                        db.execute(statement)
        except sqlite3.Error as exc:
            raise OperationalError(f"cannot open the account's event table {self.path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise OperationalError(
                    f"the event table {self.path} stayed locked by another process for 30 s: {exc}") from exc
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("COMMIT")

    # -- retention --------------------------------------------------------------------------------
    def retention_days(self) -> float:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (RETENTION_KEY,)).fetchone()
        return float(row[0]) if row else default_retention_days()

    def set_retention_days(self, days: float | None) -> None:
        """Keep rows this many days (None: back to the default); older rows go at once."""
        with self._write() as db:
            if days is None:
                db.execute("DELETE FROM meta WHERE key = ?", (RETENTION_KEY,))
            else:
                if not days > 0:
                    raise ProgrammingError(f"the event table's retention must be a positive number of days, got {days}")
                db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (RETENTION_KEY, repr(float(days))))
        self.purge()

    def cutoff(self, now: float | None = None) -> float:
        return (time.time() if now is None else now) - self.retention_days() * 86400.0

    def purge(self, now: float | None = None) -> int:
        """Delete the rows older than the retention and thin the metric samples older than the
        detail hours (see the module's text); how many rows went."""
        moment = time.time() if now is None else now
        cutoff = self.cutoff(moment)
        # whole buckets only, so that a later purge never keeps a second sample of one bucket
        thin_to = (moment - metrics_detail_hours() * 3600.0) // THIN_BUCKET_SECONDS * THIN_BUCKET_SECONDS
        with self._write() as db:
            deleted = db.execute("DELETE FROM events WHERE ts < ?", (cutoff,)).rowcount
            row = db.execute("SELECT value FROM meta WHERE key = ?", (THINNED_KEY,)).fetchone()
            thin_from = max(cutoff, float(row[0])) if row else cutoff
            if thin_to > thin_from:
                deleted += db.execute(
                    "DELETE FROM events WHERE id IN (SELECT id FROM (SELECT id, ts, min(ts) OVER (PARTITION BY "
                    f"service, coalesce(instance, ''), CAST(ts / {THIN_BUCKET_SECONDS} AS INTEGER)) AS first "
                    "FROM events WHERE record_type = ? AND ts >= ? AND ts < ?) WHERE ts > first)",
                    (METRIC, thin_from, thin_to)).rowcount
                db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (THINNED_KEY, repr(thin_to)))
        self._purged = time.monotonic()
        return int(deleted)

    def _maybe_purge(self) -> None:
        if time.monotonic() - self._purged >= PURGE_EVERY_SECONDS:
            self.purge()

    # -- writing ----------------------------------------------------------------------------------
    def _insert(self, rows: list[tuple[Any, ...]]) -> int:
        if not rows:
            return 0
        try:
            with self._write() as db:
                db.executemany(
                    "INSERT INTO events(ts, observed_ts, record_type, service, instance, container, name,"
                    " resource_attributes, record, record_attributes, value) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    rows)
        except sqlite3.Error as exc:
            raise OperationalError(f"event table {self.path}: {exc}") from exc
        self._maybe_purge()
        return len(rows)

    @staticmethod
    def _row(resource: Resource, record_type: str, name: str | None, record: Any, attributes: Any, value: Any,
             at: float | None) -> tuple[Any, ...]:
        observed = time.time()
        return (observed if at is None else at, observed, record_type, resource.key, resource.instance,
                resource.container, name, _dumps(resource.attributes()), _dumps(record), _dumps(attributes),
                _dumps(value))

    def record_event(self, resource: Resource, kind: str, message: str, attributes: dict[str, Any] | None = None,
                     severity: str = "INFO", at: float | None = None) -> None:
        """A lifecycle, scaling, restart or update event: RECORD ``{"name": kind, "severity_text": ...}``,
        VALUE ``{"message": ...}``, RECORD_ATTRIBUTES the details."""
        self._insert([self._row(resource, EVENT, kind, {"name": kind, "severity_text": severity},
                                attributes or {}, {"message": message}, at)])

    def record_logs(self, resource: Resource, lines: Iterable[tuple[float | None, str]],
                    severity: str = "INFO") -> int:
        """Log lines of one container (``(epoch seconds or None for now, text)``); how many were kept."""
        rows = [self._row(resource, LOG, None, {"severity_text": severity}, None, text, at) for at, text in lines]
        return self._insert(rows)

    def ingest_log(self, resource: Resource, source: str, text: str | Callable[[], str],
                   severity: str = "INFO", final: bool = False) -> int:
        """Record the lines of a log (all of it or its tail) that follow the last line recorded from
        it; how many. ``source`` names the log (an instance's handle, a job). A log without that
        line is a new one (a restarted instance) or moved on further than the tail reaches: all of
        it is recorded. ``text`` may be a function that reads the log: it is called while this
        process holds the table's write lock, so processes that ingest one log at once see it
        only grow and record each line once. A last line without its newline is being written: it
        waits for the next call, unless the log is ``final`` (its writer stopped)."""
        key = f"log:{source}"
        try:
            with self._write() as db:
                content = text() if callable(text) else text
                if not final and content and not content.endswith("\n"):
                    content = content[: content.rfind("\n") + 1]
                lines = [line for line in content.splitlines() if line.strip()]
                row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
                last = json.loads(row[0]).get("last") if row else None
                start = 0
                if last is not None:
                    for index in range(len(lines) - 1, -1, -1):
                        if lines[index] == last:
                            start = index + 1
                            break
                fresh = [self._row(resource, LOG, None, {"severity_text": _severity(line, severity)}, None, line,
                                   _line_time(line)) for line in lines[start:]]
                db.executemany(
                    "INSERT INTO events(ts, observed_ts, record_type, service, instance, container, name,"
                    " resource_attributes, record, record_attributes, value) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    fresh)
                if fresh:
                    db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                               (key, json.dumps({"last": lines[-1]})))
        except sqlite3.Error as exc:
            raise OperationalError(f"event table {self.path}: {exc}") from exc
        self._maybe_purge()
        return len(fresh)

    def record_metrics(self, resource: Resource, samples: Iterable[MetricSample], at: float | None = None) -> int:
        stamp = time.time() if at is None else at
        rows = [self._row(resource, METRIC, s.name, {"metric": {"name": s.name, "unit": s.unit},
                                                     "metric_type": s.metric_type},
                          s.attributes, s.value, stamp) for s in samples]
        return self._insert(rows)

    # -- reading ----------------------------------------------------------------------------------
    def rows(self, *, service: str | None = None, record_type: str | None = None, start: float | None = None,
             end: float | None = None, limit: int | None = None) -> list[EventRow]:
        """Rows within the retention, oldest first; ``service`` is a ``DB.SCHEMA.NAME`` key."""
        sql = ("SELECT ts, record_type, resource_attributes, record, record_attributes, value, observed_ts "
               "FROM events WHERE ts >= ?")
        params: list[Any] = [max(start, self.cutoff()) if start is not None else self.cutoff()]
        if end is not None:
            sql += " AND ts <= ?"
            params.append(end)
        if service is not None:
            sql += " AND service = ?"
            params.append(service)
        if record_type is not None:
            sql += " AND record_type = ?"
            params.append(record_type)
        sql += " ORDER BY ts, id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._lock:
            try:
                found = self._db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise OperationalError(f"event table {self.path}: {exc}") from exc
        return [EventRow(r[0], r[1], json.loads(r[2]), _loads(r[3]), _loads(r[4]), _loads(r[5]), r[6])
                for r in found]

    def newest(self, service: str, record_type: str | None = None) -> float | None:
        """The time of the service's newest row (of ``record_type``), None without one."""
        sql, params = "SELECT max(ts) FROM events WHERE service = ?", [service]
        if record_type is not None:
            sql += " AND record_type = ?"
            params.append(record_type)
        with self._lock:
            row = self._db.execute(sql, params).fetchone()
        return float(row[0]) if row and row[0] is not None else None

    def table(self, **where: Any) -> pa.Table:
        """The rows as Arrow, in Snowflake's event-table columns: TIMESTAMP in UTC without a time zone
        (TIMESTAMP_NTZ), JSON for the OBJECT and VARIANT ones. ``where``: start, end (epoch
        seconds), service (a key), services (keys), name (a service's name, in any schema)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        sql = ("SELECT ts, observed_ts, resource_attributes, record_type, record, record_attributes, value "
               "FROM events WHERE ts >= ?")
        params: list[Any] = [max(where.get("start") or 0.0, self.cutoff())]
        if where.get("end") is not None:
            sql += " AND ts <= ?"
            params.append(where["end"])
        if where.get("service") is not None:
            sql += " AND service = ?"
            params.append(where["service"])
        if where.get("name") is not None:  # every service of that name, in any schema
            sql += " AND (service = ? OR substr(service, -length(?) - 1) = '.' || ?)"
            params.extend([where["name"]] * 3)
        if where.get("services") is not None:
            keys = list(where["services"])
            sql += f" AND service IN ({', '.join('?' for _ in keys)})" if keys else " AND 0"
            params.extend(keys)
        sql += " ORDER BY ts, id"
        with self._lock:
            try:
                found = self._db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise OperationalError(f"event table {self.path}: {exc}") from exc
        columns: list[tuple[Any, ...]] = list(zip(*found)) if found else [() for _ in range(7)]
        stamp = pa.timestamp("us")
        micros = [pc.cast(pc.multiply(pa.array(columns[i], pa.float64()), 1_000_000.0), pa.int64(), safe=False)
                  .cast(stamp) for i in (0, 1)]
        count = len(found)

        def json_column(values: tuple[Any, ...]) -> pa.Array:
            # JSON as stored: wrapped as Arrow's JSON type without re-reading each value
            return pa.ExtensionArray.from_storage(pa.json_(), pa.array(values, pa.string()))

        scope = _dumps({"name": SCOPE})
        return pa.table({
            "TIMESTAMP": micros[0],
            "START_TIMESTAMP": pa.nulls(count, stamp),
            "OBSERVED_TIMESTAMP": micros[1],
            "TRACE": pa.nulls(count, pa.json_()),
            "RESOURCE": pa.nulls(count, pa.json_()),
            "RESOURCE_ATTRIBUTES": json_column(columns[2]),
            "SCOPE": json_column((scope,) * count),
            "SCOPE_ATTRIBUTES": pa.nulls(count, pa.json_()),
            "RECORD_TYPE": pa.array(columns[3], pa.string()),
            "RECORD": json_column(columns[4]),
            "RECORD_ATTRIBUTES": json_column(columns[5]),
            "VALUE": json_column(columns[6]),
            "EXEMPLARS": pa.nulls(count, pa.json_()),
        })


_LINE_TIME = re.compile(r"^(\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d)(?:[.,](\d+))?")
_SEVERITIES = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _line_time(line: str) -> float | None:
    """When a log line says it was written (its leading local time, as Python's logging writes it)."""
    match = _LINE_TIME.match(line)
    if match is None:
        return None
    try:
        moment = time.mktime(time.strptime(match.group(1).replace("T", " "), "%Y-%m-%d %H:%M:%S"))
    except (ValueError, OverflowError):
        return None
    fraction = match.group(2)
    return moment + (int(fraction) / 10 ** len(fraction) if fraction else 0.0)


def _severity(line: str, default: str) -> str:
    head = line[:60].split()
    return next((word for word in head if word in _SEVERITIES), default)


_tables: dict[tuple[int, Path], EventTable] = {}
_tables_lock = threading.Lock()


def event_table(home: Path | str) -> EventTable:
    """This process's connection to the event table of ``home`` (opened once)."""
    key = (os.getpid(), Path(home).resolve())
    with _tables_lock:
        table = _tables.get(key)
        if table is None:
            table = _tables[key] = EventTable(key[1])
        return table


def record_event(home: Path | str, service: CatalogObject | Resource, kind: str, message: str,
                 attributes: dict[str, Any] | None = None, *, instance: int | str | None = None,
                 severity: str = "INFO", at: float | None = None) -> None:
    """Record one event about ``service`` (a catalog object or a `Resource`) in the home's event table.

    For the engine's parts that change services: lifecycle (``SERVICE.CREATED``, ``...SUSPENDED``,
    ``...RESUMED``, ``...DROPPED``), scaling (``SERVICE.SCALED``, attributes ``from``/``to``/``reason``),
    restarts (``INSTANCE.RESTARTED`` with ``instance``, ``exit_code``) and updates (``SERVICE.UPDATED``).
    """
    resource = service if isinstance(service, Resource) else Resource.of(service)
    if instance is not None:
        resource = resource.at(instance, resource.container or INFERENCE_CONTAINER)
    event_table(home).record_event(resource, kind, message, attributes, severity=severity, at=at)


def utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)
