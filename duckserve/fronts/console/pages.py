"""What each console page shows, read with SQL through the signed-in session's connection.

Every read is a statement a user could type (SHOW, DESCRIBE, CALL SYSTEM$...), so a page lists
only what the session's role may see, and a refusal reads as it does in SQL. Each answer carries
the statements it ran, which the console shows beside the page.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from duckserve import errors
from duckserve.engine.names import ObjectName, display, parse_name, parse_simple_name
from duckserve.fronts.console.tables import records

#: lines a log view reads (the newest)
LOG_LINES = 2_000
SERVICE_FIELDS = ("name", "status", "database_name", "schema_name", "owner", "compute_pool", "current_instances",
                  "target_instances", "min_instances", "max_instances", "auto_resume", "auto_suspend_secs",
                  "created_on", "updated_on", "resumed_on", "suspended_on", "model_name", "model_version",
                  "ingress_enabled", "functions", "runtime", "is_upgrading", "comment", "num_workers", "image")
JOB_FIELDS = ("name", "status", "database_name", "schema_name", "owner", "compute_pool", "created_on", "updated_on",
              "model_name", "model_version", "comment", "runtime")


def sql_string(text: str) -> str:
    return "'" + str(text).replace("'", "''") + "'"


def qualified(database: str, schema: str, name: str) -> str:
    """How SQL names a schema object that SHOW listed."""
    return ".".join(display(part) for part in (database, schema, name) if part)


def object_name(text: str, what: str) -> str:
    """A name the browser sent, checked and written back as SQL writes it (never spliced raw)."""
    name: ObjectName = parse_name(text, what)
    return qualified(name.database, name.schema, name.name)


def simple_name(text: str, what: str) -> str:
    return display(parse_simple_name(text, what))


class Reader:
    """Runs a page's statements on one connection and remembers them."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.statements: list[str] = []

    def result(self, sql: str) -> Any:
        """The statement's result, as a cursor reads it."""
        self.statements.append(sql)
        results = self.connection.run(sql)
        return results[-1] if results else None

    def rows(self, sql: str) -> list[dict[str, Any]]:
        return records(self.result(sql))

    def scalar(self, sql: str) -> Any:
        found = self.result(sql)
        rows = found.fetchall() if found is not None and found.has_rows else []
        return rows[0][0] if rows else None

    def optional(self, sql: str) -> tuple[list[dict[str, Any]] | None, str | None]:
        """Rows, or the error SQL gave (a page section the role may not see says why)."""
        try:
            return self.rows(sql), None
        except errors.Error as exc:
            return None, str(exc)

    def answer(self, **data: Any) -> dict[str, Any]:
        return {"data": data, "sql": self.statements}


def _pick(row: dict[str, Any], fields: Iterable[str]) -> dict[str, Any]:
    return {f: row.get(f) for f in fields}


def _with_key(row: dict[str, Any]) -> dict[str, Any]:
    row["key"] = qualified(row.get("database_name") or "", row.get("schema_name") or "", row["name"])
    return row


# -- services ---------------------------------------------------------------------------------------
def services(reader: Reader) -> dict[str, Any]:
    services_, jobs = [], []
    for row in reader.rows("SHOW SERVICES"):
        if str(row.get("is_job")).lower() == "true":
            jobs.append(_with_key(_pick(row, JOB_FIELDS)))
        else:
            services_.append(_with_key(_pick(row, SERVICE_FIELDS)))
    return reader.answer(services=services_, jobs=jobs)


def service(reader: Reader, key: str) -> dict[str, Any]:
    name = object_name(key, "service name")
    described = reader.rows(f"DESCRIBE SERVICE {name}")
    if not described:
        raise errors.ObjectNotFound(f"service {name} does not exist")
    record = _with_key(described[0])
    instances = reader.rows(f"SHOW SERVICE CONTAINERS IN SERVICE {name}")
    endpoints = reader.rows(f"SHOW ENDPOINTS IN SERVICE {name}")
    model = object_name(str(record["model_name"]), "model name")   # SHOW gives it qualified
    versions, versions_error = reader.optional(f"SHOW VERSIONS IN MODEL {model}")
    functions, functions_error = reader.optional(
        f"SHOW FUNCTIONS IN MODEL {model} VERSION {display(str(record['model_version']))}")
    return reader.answer(service=record, instances=instances, endpoints=endpoints,
                         versions=[_pick(v, ("name", "is_default_version", "created_on", "comment"))
                                   for v in versions or []],
                         versions_error=versions_error, functions=functions or [], functions_error=functions_error)


def job(reader: Reader, name: str) -> dict[str, Any]:
    job_name = parse_simple_name(name, "job name")
    found = [_with_key(_pick(r, JOB_FIELDS)) for r in reader.rows(f"SHOW SERVICES LIKE {sql_string(job_name)}")
             if str(r.get("is_job")).lower() == "true"]
    if not found:
        raise errors.ObjectNotFound(f"job {display(job_name)} does not exist, or the role cannot see it")
    return reader.answer(job=found[0])


def logs(reader: Reader, key: str, instance: int, container: str, lines: int = LOG_LINES) -> dict[str, Any]:
    if container not in ("model-inference", "model-build", "proxy"):
        raise errors.ProgrammingError(f"unknown container {container!r}: model-inference, model-build or proxy")
    target = simple_name(key, "job name") if container == "model-build" else object_name(key, "service name")
    text = reader.scalar(f"CALL SYSTEM$GET_SERVICE_LOGS({sql_string(target)}, {int(instance)}, "
                         f"{sql_string(container)}, {max(1, min(int(lines), 100_000))})")
    return reader.answer(text=text or "")


# -- models -----------------------------------------------------------------------------------------
def models(reader: Reader) -> dict[str, Any]:
    rows = [_with_key(r) for r in reader.rows("SHOW MODELS")]
    return reader.answer(models=rows)


def model(reader: Reader, key: str) -> dict[str, Any]:
    name = object_name(key, "model name")
    versions = reader.rows(f"SHOW VERSIONS IN MODEL {name}")
    for version in versions:
        version["function_list"] = reader.rows(
            f"SHOW FUNCTIONS IN MODEL {name} VERSION {display(str(version['name']))}")
    found = [_with_key(r) for r in reader.rows(f"SHOW MODELS LIKE {sql_string(parse_name(key).name)}")
             if qualified(r["database_name"], r["schema_name"], r["name"]) == name]
    return reader.answer(model=found[0] if found else {"key": name, "name": parse_name(key).name},
                         versions=versions)


# -- compute pools and image repositories -----------------------------------------------------------
def pools(reader: Reader) -> dict[str, Any]:
    rows = reader.rows("SHOW COMPUTE POOLS")
    by_pool: dict[str, list[dict[str, Any]]] = {r["name"]: [] for r in rows}
    for row in reader.rows("SHOW SERVICES EXCLUDE JOBS"):
        by_pool.setdefault(row.get("compute_pool") or "", []).append(
            _with_key(_pick(row, ("name", "status", "database_name", "schema_name", "current_instances",
                                  "target_instances", "model_name", "model_version"))))
    for row in rows:
        row["services"] = by_pool.get(row["name"], [])
    return reader.answer(pools=rows)


def repositories(reader: Reader) -> dict[str, Any]:
    repos = [_with_key(r) for r in reader.rows("SHOW IMAGE REPOSITORIES")]
    for repo in repos:
        images, error = reader.optional(f"SHOW IMAGES IN IMAGE REPOSITORY {repo['key']}")
        repo["images"], repo["images_error"] = images or [], error
    return reader.answer(repositories=repos)


def roles_of(reader: Reader, user: str) -> list[str]:
    """The roles the signed-in user may switch to (what SHOW GRANTS TO USER lists)."""
    grants, _ = reader.optional(f"SHOW GRANTS TO USER {simple_name(user, 'user')}")
    roles = {str(g.get("role")) for g in grants or [] if g.get("role")}
    return sorted(roles)
