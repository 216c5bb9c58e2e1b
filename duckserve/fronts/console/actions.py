"""What the console's buttons do: each action is one SQL statement, written from a checked name and
checked numbers, shown to the user before it runs and run through the session's connection, so
the grants that decide it and the error a refusal gives are those of SQL.

Actions that take a while (resume, scale, update, drop) run as operations on a thread: the
browser polls them and shows the time so far and the service's instances coming up.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from duckserve import errors
from duckserve.engine.names import display, parse_simple_name
from duckserve.fronts.console.pages import object_name
from duckserve.fronts.console.tables import records

#: finished operations a console keeps for their pollers
KEPT_OPERATIONS = 64


def _count(value: Any, what: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise errors.ProgrammingError(f"{what} must be a whole number, got {value!r}") from None
    if number < 0:
        raise errors.ProgrammingError(f"{what} must be 0 or more, got {number}")
    return number


def _suspend(service: str, _: dict[str, Any]) -> str:
    return f"ALTER SERVICE {service} SUSPEND"


def _resume(service: str, _: dict[str, Any]) -> str:
    return f"ALTER SERVICE {service} RESUME"


def _scale(service: str, options: dict[str, Any]) -> str:
    low = _count(options.get("min_instances"), "MIN_INSTANCES")
    high = _count(options.get("max_instances"), "MAX_INSTANCES")
    return f"ALTER SERVICE {service} SET MIN_INSTANCES = {low} MAX_INSTANCES = {high}"


def _update_version(service: str, options: dict[str, Any]) -> str:
    version = parse_simple_name(str(options.get("version") or ""), "model version")
    return f"ALTER SERVICE {service} SET MODEL_VERSION = {display(version)}"


def _drop(service: str, _: dict[str, Any]) -> str:
    return f"DROP SERVICE {service}"


#: action name -> how its statement is written
ACTIONS: dict[str, Callable[[str, dict[str, Any]], str]] = {
    "suspend": _suspend,
    "resume": _resume,
    "scale": _scale,
    "update_version": _update_version,
    "drop": _drop,
}


def statement(action: str, service: str, options: dict[str, Any]) -> str:
    """The SQL an action runs on a service."""
    writer = ACTIONS.get(action)
    if writer is None:
        raise errors.ProgrammingError(f"unknown action {action!r}: one of {', '.join(ACTIONS)}")
    return writer(object_name(service, "service name"), options)


@dataclass
class Operation:
    """One statement running for a browser, then its result or its error."""

    sql: str
    operation_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    started: float = field(default_factory=time.time)
    finished: float | None = None
    result: list[dict[str, Any]] | None = None
    error: str | None = None
    error_kind: str | None = None

    def as_json(self) -> dict[str, Any]:
        end = self.finished or time.time()
        state = "RUNNING" if self.finished is None else ("FAILED" if self.error is not None else "SUCCEEDED")
        return {"id": self.operation_id, "sql": self.sql, "state": state, "seconds": round(end - self.started, 3),
                "result": self.result, "error": self.error, "error_kind": self.error_kind}


class Operations:
    """The operations of one console, by id."""

    def __init__(self) -> None:
        self._operations: dict[str, Operation] = {}
        self._lock = threading.Lock()

    def start(self, connection: Any, sql: str, wait: float = 0.0) -> Operation:
        """Run ``sql`` on a thread; wait up to ``wait`` seconds, so a quick statement answers at once."""
        operation = Operation(sql)
        done = threading.Event()

        def run() -> None:
            try:
                results = connection.run(sql)
                operation.result = records(results[-1]) if results else []
            except errors.Error as exc:
                operation.error, operation.error_kind = str(exc), type(exc).__name__
            except Exception as exc:  # noqa: BLE001 - shown to the user, as the shell shows it
                operation.error, operation.error_kind = f"{type(exc).__name__}: {exc}", "InternalError"
            finally:
                operation.finished = time.time()
                done.set()

        with self._lock:
            self._operations[operation.operation_id] = operation
            finished = [o for o in self._operations.values() if o.finished is not None]
            for old in finished[:-KEPT_OPERATIONS]:
                self._operations.pop(old.operation_id, None)
        threading.Thread(target=run, name="duckserve-console-action", daemon=True).start()
        done.wait(wait)
        return operation

    def get(self, operation_id: str) -> Operation | None:
        with self._lock:
            return self._operations.get(operation_id)
