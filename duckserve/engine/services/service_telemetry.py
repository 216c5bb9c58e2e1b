"""A service's rows of the event table as Snowflake's table functions give them, and the event
table itself as SQL reads it (``SNOWFLAKE.TELEMETRY.EVENTS``).

- ``svc!SPCS_GET_METRICS(START_TIME => ..., END_TIME => ...)``: TIMESTAMP, METRIC_NAME, VALUE,
  UNIT, INSTANCE_ID, CONTAINER_NAME, RESOURCE, RECORD, RECORD_ATTRIBUTES;
- ``svc!SPCS_GET_LOGS(...)``: TIMESTAMP, INSTANCE_ID, CONTAINER_NAME, LOG, RECORD_ATTRIBUTES;
- ``svc!SPCS_GET_EVENTS(...)``: TIMESTAMP, INSTANCE_ID, CONTAINER_NAME, SEVERITY, EVENT_NAME,
  EVENT_VALUE, RECORD_ATTRIBUTES.

They need MONITOR (or OPERATE, or ownership) on the service; START_TIME defaults to a day ago,
END_TIME to now. TIMESTAMP is UTC without a time zone (Snowflake's TIMESTAMP_NTZ), VALUE text (its
VARCHAR), the OBJECT columns JSON. Reading a running service's metrics or logs first samples it
(`monitoring.MetricsSampler.sample_if_stale`), so the newest point is there without the controller.

The whole event table is the account's: ACCOUNTADMIN reads every row (dropped services' too);
another role reads the rows of the services it may MONITOR.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from duckserve.engine import access as A
from duckserve.engine.account import Session, display_key
from duckserve.engine.catalog import CatalogObject
from duckserve.engine.events import EVENT, LOG, METRIC, EventRow, event_table
from duckserve.engine.services.monitoring import MetricsSampler, ingest_instance_logs
from duckserve.errors import ProgrammingError

if TYPE_CHECKING:
    import pyarrow as pa

    from duckserve.engine.services.lifecycle import Services

DEFAULT_WINDOW_SECONDS = 86400.0
FUNCTIONS = ("SPCS_GET_METRICS", "SPCS_GET_LOGS", "SPCS_GET_EVENTS")
MONITOR_PRIVILEGES = ("MONITOR", "OPERATE")

_samplers: dict[int, MetricsSampler] = {}


def _sampler(services: Services) -> MetricsSampler:
    sampler = _samplers.get(id(services))
    if sampler is None or sampler.services is not services:
        sampler = _samplers[id(services)] = MetricsSampler(services)
    return sampler


def _epoch(moment: datetime | None, default: float) -> float:
    if moment is None:
        return default
    if moment.tzinfo is None:  # TIMESTAMP_NTZ: UTC
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _instance(row: EventRow) -> int | None:
    value = row.resource_attributes.get("snow.service.container.instance")
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _instance_ids(rows: list[EventRow]) -> pa.Array:
    import pyarrow as pa

    return pa.array([_instance(r) for r in rows], pa.int64())


def _container_names(rows: list[EventRow]) -> pa.Array:
    import pyarrow as pa

    return pa.array([r.resource_attributes.get("snow.service.container.name") for r in rows], pa.string())


def _stamps(rows: list[EventRow]) -> pa.Array:
    import pyarrow as pa

    return pa.array([int(r.timestamp * 1_000_000) for r in rows], pa.int64()).cast(pa.timestamp("us"))


def _json(values: list[Any]) -> pa.Array:
    import pyarrow as pa

    return pa.array([None if v is None else json.dumps(v, separators=(",", ":"), default=str) for v in values],
                    pa.json_())


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return value if isinstance(value, str) else json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def service_table(services: Services, session: Session, service: CatalogObject, function: str,
                  start: datetime | None = None, end: datetime | None = None) -> pa.Table:
    """One of FUNCTIONS over the service's rows in ``[start, end]``."""
    import pyarrow as pa

    function = function.upper()
    if function not in FUNCTIONS:
        raise ProgrammingError(f"service {display_key(service)} has no table function {function}: "
                               f"use {', '.join(FUNCTIONS)}")
    services.account.require(session, service, MONITOR_PRIVILEGES,
                             f"read the {function.split('_', 2)[-1].lower()} of service {display_key(service)}")
    now = time.time()
    low, high = _epoch(start, now - DEFAULT_WINDOW_SECONDS), _epoch(end, now + 1)
    if low > high:
        raise ProgrammingError(f"{display_key(service)}!{function}: START_TIME is after END_TIME")
    table = event_table(services.account.home)
    if function == "SPCS_GET_METRICS":
        if high >= now - 1:  # a window up to now includes the sample taken now
            _sampler(services).sample_if_stale(service)
            high = max(high, time.time() + 1)
        rows = table.rows(service=service.key, record_type=METRIC, start=low, end=high)
        return pa.table({
            "TIMESTAMP": _stamps(rows),
            "METRIC_NAME": pa.array([r.name for r in rows], pa.string()),
            "VALUE": pa.array([_text(r.value) for r in rows], pa.string()),
            "UNIT": pa.array([(r.record or {}).get("metric", {}).get("unit") for r in rows], pa.string()),
            "INSTANCE_ID": _instance_ids(rows),
            "CONTAINER_NAME": _container_names(rows),
            "RESOURCE": pa.nulls(len(rows), pa.string()),
            "RECORD": _json([r.record for r in rows]),
            "RECORD_ATTRIBUTES": _json([r.record_attributes or {} for r in rows]),
        })
    if function == "SPCS_GET_LOGS":
        if high >= now - 1 and service.props.get("instances"):
            ingest_instance_logs(services, service)
            high = max(high, time.time() + 1)
        rows = table.rows(service=service.key, record_type=LOG, start=low, end=high)
        return pa.table({
            "TIMESTAMP": _stamps(rows),
            "INSTANCE_ID": _instance_ids(rows),
            "CONTAINER_NAME": _container_names(rows),
            "LOG": pa.array([_text(r.value) for r in rows], pa.string()),
            "RECORD_ATTRIBUTES": _json([r.record_attributes for r in rows]),
        })
    rows = table.rows(service=service.key, record_type=EVENT, start=low, end=high)
    return pa.table({
        "TIMESTAMP": _stamps(rows),
        "INSTANCE_ID": _instance_ids(rows),
        "CONTAINER_NAME": _container_names(rows),
        "SEVERITY": pa.array([(r.record or {}).get("severity_text") for r in rows], pa.string()),
        "EVENT_NAME": pa.array([r.name for r in rows], pa.string()),
        "EVENT_VALUE": _json([r.value for r in rows]),
        "RECORD_ATTRIBUTES": _json([r.record_attributes for r in rows]),
    })


def account_events(services: Services, session: Session, service_name: str | None = None,
                   start: datetime | None = None) -> pa.Table:
    """The event table as the session's role may read it (the rows of services named
    ``service_name`` from ``start`` on, when given), running services' new log lines first."""
    account = services.account
    every = account.catalog.objects(A.SERVICE)
    for service in every:
        if service.props.get("instances") and (service_name is None or service.name == service_name):
            ingest_instance_logs(services, service)
    where: dict[str, Any] = {"start": _epoch(start, 0.0) if start is not None else None, "name": service_name}
    if A.ACCOUNTADMIN not in account.effective_roles(session.role):
        keys = []
        for service in every:
            held = account.privileges_on(session, service)
            if A.OWNERSHIP in held or held & set(MONITOR_PRIVILEGES):
                keys.append(service.key)
        where["services"] = keys
    return event_table(account.home).table(**where)
