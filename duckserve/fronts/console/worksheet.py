"""The worksheet: a script run statement by statement on the session's worksheet connection, on a
thread, while the browser polls for its progress (the rows each service function has sent and had
answered, as the shell's progress line shows them) and may cancel it."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from duckserve import errors
from duckserve.fronts.console.tables import result_json
from duckserve.sql import splitter

#: how many finished runs a worksheet keeps for pollers
KEPT_RUNS = 8


@dataclass
class Run:
    """One script: its statements as they finish, the last result with rows, or the error."""

    sql: str
    total: int = 0
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    started: float = field(default_factory=time.perf_counter)
    finished: float | None = None
    statements: list[dict[str, Any]] = field(default_factory=list)
    result: dict[str, Any] | None = None
    error: str | None = None
    error_kind: str | None = None
    failed_statement: str | None = None
    canceled: bool = False
    progress: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        end = self.finished if self.finished is not None else time.perf_counter()
        if self.finished is None:
            state = "RUNNING"
        else:
            state = "CANCELED" if self.canceled and self.error else "FAILED" if self.error else "SUCCEEDED"
        return {"id": self.run_id, "state": state, "seconds": round(end - self.started, 3),
                "statements": self.statements, "total": self.total, "result": self.result, "error": self.error,
                "error_kind": self.error_kind, "failed_statement": self.failed_statement,
                "progress": self.progress}


def call_progress(clients: list[Any]) -> list[dict[str, Any]]:
    """What each running service function has done so far."""
    out = []
    for client in clients:
        stats = client.stats
        out.append({"function": f"{str(client.service).split('.')[-1]}!{client.method.name.upper()}",
                    "rows_sent": stats.rows_sent, "rows_answered": stats.rows_answered,
                    "in_flight": stats.in_flight, "batches": stats.batches, "retries": stats.retries})
    return out


class Worksheet:
    """The runs of one session's worksheet; one at a time, as on one connection."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self._runs: dict[str, Run] = {}
        self._current: Run | None = None
        self._lock = threading.Lock()

    def start(self, sql: str, wait: float = 0.0) -> Run:
        statements = splitter.split(sql)   # a script that does not split fails before it starts
        if not statements:
            raise errors.ProgrammingError("the worksheet is empty: write a statement, then run it")
        with self._lock:
            if self._current is not None and self._current.finished is None:
                raise errors.OperationalError("a statement is still running in this worksheet: wait for it or "
                                              "cancel it")
            run = self._current = Run(sql, len(statements))
            self._runs[run.run_id] = run
            for old in [r for r in self._runs.values() if r.finished is not None][:-KEPT_RUNS]:
                self._runs.pop(old.run_id, None)
        done = threading.Event()
        threading.Thread(target=self._execute, args=(run, statements, done), name="duckserve-worksheet",
                         daemon=True).start()
        done.wait(wait)
        return run

    def _execute(self, run: Run, statements: list[splitter.Statement], done: threading.Event) -> None:
        try:
            for statement in statements:
                if run.canceled:
                    raise errors.OperationalError("SQL execution canceled")
                started = time.perf_counter()
                try:
                    result = self.connection.run_statement(statement)
                except errors.Error:
                    run.failed_statement = statement.text
                    raise
                run.statements.append({"sql": statement.text, "seconds": round(time.perf_counter() - started, 4),
                                       "rows": result.rowcount, "query_id": result.query_id})
                if result.has_rows:
                    run.result = result_json(result)
                    run.result["sql"] = statement.text
        except errors.Error as exc:
            run.error, run.error_kind = ("SQL execution canceled" if run.canceled else str(exc)), type(exc).__name__
        except Exception as exc:  # noqa: BLE001 - shown to the user, as the shell shows it
            run.error, run.error_kind = f"{type(exc).__name__}: {exc}", "InternalError"
        finally:
            run.progress = []
            run.finished = time.perf_counter()
            done.set()

    def get(self, run_id: str) -> Run | None:
        with self._lock:
            run = self._runs.get(run_id)
        if run is not None and run.finished is None:
            run.progress = call_progress(list(self.connection.functions.active))
        return run

    def cancel(self, run_id: str) -> bool:
        run = self.get(run_id)
        if run is None or run.finished is not None:
            return False
        run.canceled = True
        self.connection.functions.cancel()
        self.connection.duckdb.interrupt()
        return True
