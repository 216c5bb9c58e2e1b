"""Execute duckserve's typed statements against the engine; every result is a ``Rows``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from duckserve.engine import access as A
from duckserve.engine.account import Account, Session, display_key
from duckserve.engine.names import ObjectName
from duckserve.engine.results import Rows
from duckserve.engine.services import Services
from duckserve.errors import NotSupportedError, ProgrammingError
from duckserve.sql import statements as S


class Context(Protocol):
    """What statements run against: the connection's account, session and services."""

    account: Account
    session: Session
    services: Services


Handler = Callable[[Context, Any], Rows]


def _create(ctx: Context, st: S.Create) -> Rows:
    account, session = ctx.account, ctx.session
    p = dict(st.properties)
    flags = {"or_replace": st.or_replace, "if_not_exists": st.if_not_exists}
    name = st.name.name
    if st.kind == A.COMPUTE_POOL:
        return account.create_compute_pool(
            session, name, min_nodes=p["MIN_NODES"], max_nodes=p["MAX_NODES"],
            instance_family=str(p["INSTANCE_FAMILY"]), auto_resume=p.get("AUTO_RESUME", True),
            auto_suspend_secs=p.get("AUTO_SUSPEND_SECS", 3600),
            initially_suspended=p.get("INITIALLY_SUSPENDED", False), comment=p.get("COMMENT"),
            runtime=p.get("RUNTIME"), **flags)
    if st.kind == A.IMAGE_REPOSITORY:
        return account.create_image_repository(session, st.name, comment=p.get("COMMENT"), **flags)
    if st.kind == A.WAREHOUSE:
        return account.create_warehouse(session, name, size=str(p.pop("WAREHOUSE_SIZE", "XSMALL")),
                                        comment=p.pop("COMMENT", None), settings=p, **flags)
    if st.kind == A.ROLE:
        return account.create_role(session, name, comment=p.get("COMMENT"), **flags)
    if st.kind == A.USER:
        return account.create_user(session, name, settings=p, **flags)
    raise NotSupportedError(f"CREATE {st.kind} is not supported")


def _create_model(ctx: Context, st: S.CreateModel) -> Rows:
    """Register a model directory (an MLflow model) as a new model, or a new version of one."""
    from pathlib import Path

    models = ctx.services.models
    source = Path(st.source).expanduser()
    if not source.is_dir():
        raise ProgrammingError(f"model source {st.source!r} is not a directory: give the path of a saved model "
                               "(a directory with an MLmodel file, as mlflow.<flavor>.save_model writes)")
    existing = models.get(ctx.session, st.name, missing_ok=True)
    if existing is not None and not st.add_version:
        if st.if_not_exists:
            return Rows.status(f"{st.name.name} already exists, statement succeeded.")
        if not st.or_replace:
            label = display_key(existing)
            raise ProgrammingError(
                f"model {label} already exists: use CREATE OR REPLACE MODEL, or add a version with "
                f"ALTER MODEL {label} ADD VERSION v2 FROM '...'"
            )
        models.delete_model(ctx.session, st.name)
    if existing is None and st.add_version:
        models.get(ctx.session, st.name)  # raises ObjectNotFound with a suggestion
    _, version = models.log(ctx.session, str(source), st.name, st.version, comment=st.comment)
    return Rows.status(f"Model {st.name.name} version {version} successfully created.")


def _alter(ctx: Context, st: S.Alter) -> Rows:
    account, session = ctx.account, ctx.session
    name = st.name.name
    if st.kind == A.COMPUTE_POOL:
        return account.alter_compute_pool(session, name, st.action, st.properties, st.if_exists)
    if st.kind == A.WAREHOUSE:
        return account.alter_warehouse(session, name, st.action, st.properties, st.if_exists)
    if st.kind == A.USER:
        if st.action in ("ADD TOKEN", "REMOVE TOKEN"):
            from duckserve.engine import tokens

            props = dict(st.properties)
            token = props.pop("TOKEN_NAME")
            if st.action == "REMOVE TOKEN":
                return tokens.remove_token(account, session, name, token)
            return tokens.add_token(account, session, name, token, role_restriction=props.get("ROLE_RESTRICTION"),
                                    days_to_expiry=props.get("DAYS_TO_EXPIRY"), comment=props.get("COMMENT"))
        return account.alter_user(session, name, st.properties, unset=st.action == "UNSET", if_exists=st.if_exists)
    if st.kind == A.SERVICE:
        if st.action == "SUSPEND":
            return ctx.services.suspend(session, st.name, st.if_exists)
        if st.action == "RESUME":
            return ctx.services.resume(session, st.name, st.if_exists)
        if st.action == "SET":
            return ctx.services.alter(session, st.name, st.properties, st.if_exists)
    if st.kind == A.MODEL:
        models = ctx.services.models
        if st.action == "DROP VERSION":
            return models.delete_version(session, st.name, st.properties["VERSION"])
        if st.action == "SET" and "DEFAULT_VERSION" in st.properties:
            return models.set_default_version(session, st.name, str(st.properties["DEFAULT_VERSION"]))
    raise NotSupportedError(f"ALTER {st.kind} ... {st.action} is not supported")


def _drop(ctx: Context, st: S.Drop) -> Rows:
    account, session = ctx.account, ctx.session
    drops: dict[str, Callable[..., Rows]] = {
        A.COMPUTE_POOL: account.drop_compute_pool,
        A.WAREHOUSE: account.drop_warehouse,
        A.ROLE: account.drop_role,
        A.USER: account.drop_user,
    }
    if st.kind == A.IMAGE_REPOSITORY:
        return account.drop_image_repository(session, st.name, st.if_exists)
    if st.kind == A.SERVICE:
        return ctx.services.drop_service(session, st.name, st.if_exists)
    if st.kind == A.MODEL:
        return ctx.services.models.delete_model(session, st.name, st.if_exists)
    if st.kind in drops:
        return drops[st.kind](session, st.name.name, st.if_exists)
    raise NotSupportedError(f"DROP {st.kind} is not supported")


def _show(ctx: Context, st: S.Show) -> Rows:
    account, session = ctx.account, ctx.session
    if st.what == "COMPUTE POOLS":
        return account.show_compute_pools(session, st.like)
    if st.what == "IMAGE REPOSITORIES":
        rows = account.show_image_repositories(session, st.like)
        return _filter_namespace(rows, st, session)
    if st.what == "IMAGES":
        assert st.in_name is not None
        return account.show_images(session, st.in_name)
    if st.what == "WAREHOUSES":
        return account.show_warehouses(session, st.like)
    if st.what == "ROLES":
        return account.show_roles(session, st.like)
    if st.what == "USERS":
        return account.show_users(session, st.like)
    services = ctx.services
    if st.what == "SERVICES":
        pool = st.in_name.name if st.in_name is not None else None
        return services.show_services(session, st.like, pool, jobs=not st.options.get("exclude_jobs"))
    if st.what == "SERVICE CONTAINERS":
        assert st.in_name is not None
        return services.containers(session, st.in_name)
    if st.what == "SERVICE INSTANCES":
        assert st.in_name is not None
        return services.instances(session, st.in_name)
    if st.what == "ENDPOINTS":
        assert st.in_name is not None
        return services.endpoints(session, st.in_name)
    if st.what == "MODELS":
        return _filter_namespace(services.models.show_models(session, st.like), st, session)
    if st.what == "VERSIONS":
        assert st.in_name is not None
        return services.models.show_versions(session, st.in_name, st.like)
    if st.what == "FUNCTIONS":
        assert st.in_name is not None
        return services.models.show_functions(session, st.in_name, st.options.get("version"))
    if st.what == "USER PROGRAMMATIC ACCESS TOKENS":
        from duckserve.engine import tokens

        return tokens.show_tokens(account, session, st.in_name.name if st.in_name else None)
    if st.what == "GRANTS":
        name = st.in_name.name if st.in_name is not None else None
        if st.in_kind == "TO ROLE":
            return account.show_grants(session, to_role=name)
        if st.in_kind == "TO USER":
            return account.show_grants(session, to_user=name)
        if st.in_kind == "OF ROLE":
            return account.show_grants(session, of_role=name)
        if st.in_kind and st.in_kind.startswith("ON "):
            kind = st.in_kind[3:]
            target: str | ObjectName | None = st.in_name if kind in A.SCHEMA_KINDS else name
            return account.show_grants(session, on_kind=kind, on_name=target)
        return account.show_grants(session)
    raise NotSupportedError(f"SHOW {st.what} is not supported")


def _filter_namespace(rows: Rows, st: S.Show, session: Session) -> Rows:
    """SHOW ... IN DATABASE d / IN SCHEMA [d.]s for schema objects."""
    if st.in_kind not in ("DATABASE", "SCHEMA") or st.in_name is None:
        return rows
    db_i, schema_i = rows.columns.index("database_name"), rows.columns.index("schema_name")
    if st.in_kind == "DATABASE":
        keep = [r for r in rows.rows if r[db_i] == st.in_name.name]
    else:
        database = st.in_name.schema or session.database
        keep = [r for r in rows.rows if r[db_i] == database and r[schema_i] == st.in_name.name]
    return Rows(rows.columns, keep, rows.types)


def _describe(ctx: Context, st: S.Describe) -> Rows:
    account, session = ctx.account, ctx.session
    if st.kind == A.COMPUTE_POOL:
        return account.describe_compute_pool(session, st.name.name)
    if st.kind == A.WAREHOUSE:
        rows = account.show_warehouses(session, None)
        match = [r for r in rows.rows if r[0] == st.name.name]
        if not match:
            account.find(A.WAREHOUSE, st.name.name)
        return Rows(rows.columns, match, rows.types)
    if st.kind == A.USER:
        rows = account.show_users(session, None)
        match = [r for r in rows.rows if r[0] == st.name.name]
        if not match:
            account.find(A.USER, st.name.name)
        return Rows(["property", "value"], [(c, None if v is None else str(v)) for c, v in zip(rows.columns, match[0])])
    if st.kind == A.IMAGE_REPOSITORY:
        repo = account.find(A.IMAGE_REPOSITORY, st.name, session)
        assert repo is not None
        rows = account.show_image_repositories(session, None)
        return Rows(rows.columns, [r for r in rows.rows if r[1] == repo.name and r[2] == repo.database
                                   and r[3] == repo.schema], rows.types)
    if st.kind == A.SERVICE:
        return ctx.services.describe(session, st.name)
    if st.kind == A.MODEL:
        model = ctx.services.models.require_model(session, st.name)
        rows = ctx.services.models.show_models(session, None)
        return Rows(rows.columns, [r for r in rows.rows if r[1] == model.name and r[3] == model.database
                                   and r[4] == model.schema], rows.types)
    raise NotSupportedError(f"DESCRIBE {st.kind} is not supported")


def _use(ctx: Context, st: S.Use) -> Rows:
    account, session = ctx.account, ctx.session
    if st.kind == "ROLE":
        return account.use_role(session, st.name.name)
    if st.kind == "WAREHOUSE":
        return account.use_warehouse(session, st.name.name)
    if st.kind == "DATABASE":
        session.database = st.name.name
    elif st.kind == "SCHEMA":
        session.schema = st.name.name
        if st.name.schema:
            session.database = st.name.schema
    return Rows.status("Statement executed successfully.")


def _grant_privileges(ctx: Context, st: S.GrantPrivileges) -> Rows:
    account, session = ctx.account, ctx.session
    name: str | ObjectName | None = st.on_name
    if st.on_name is not None and st.on_kind not in A.SCHEMA_KINDS:
        name = st.on_name.name
    return account.grant(session, st.privileges, st.on_kind, name, st.role, revoke=st.revoke)


def _grant_role(ctx: Context, st: S.GrantRole) -> Rows:
    account, session = ctx.account, ctx.session
    return account.grant_role(session, st.role, st.to_kind, st.to_name, revoke=st.revoke)


def _grant_service_role(ctx: Context, st: S.GrantServiceRole) -> Rows:
    account, session = ctx.account, ctx.session
    return account.grant_service_role(session, st.service, st.service_role, st.role, revoke=st.revoke)


def _call(ctx: Context, st: S.Call) -> Rows:
    handler = SYSTEM_FUNCTIONS.get(st.function)
    if handler is None:
        known = ", ".join(sorted(SYSTEM_FUNCTIONS)) or "none yet"
        raise ProgrammingError(f"unknown system function {st.function}: duckserve provides {known}")
    return handler(ctx, st.arguments)


def _arguments(name: str, arguments: list[Any], minimum: int, maximum: int, usage: str) -> None:
    if not minimum <= len(arguments) <= maximum:
        raise ProgrammingError(f"{name} takes {usage}; got {len(arguments)} argument(s)")


def _service_status(ctx: Context, arguments: list[Any]) -> Rows:
    _arguments("SYSTEM$GET_SERVICE_STATUS", arguments, 1, 2, "('<service name>' [, timeout_secs])")
    return Rows(["SYSTEM$GET_SERVICE_STATUS"], [(ctx.services.status_json(ctx.session, str(arguments[0])),)])


def _service_logs(ctx: Context, arguments: list[Any]) -> Rows:
    _arguments("SYSTEM$GET_SERVICE_LOGS", arguments, 3, 4,
               "('<service or job name>', <instance id>, '<container name>' [, <number of last lines>])")
    lines = int(arguments[3]) if len(arguments) > 3 else None
    text = ctx.services.logs(ctx.session, str(arguments[0]), int(arguments[1]), str(arguments[2]), lines)
    return Rows(["SYSTEM$GET_SERVICE_LOGS"], [(text,)])


def _service_manifests(ctx: Context, arguments: list[Any]) -> Rows:
    _arguments("SYSTEM$GET_SERVICE_MANIFESTS", arguments, 1, 1, "('<service name>')")
    return Rows(["SYSTEM$GET_SERVICE_MANIFESTS"], [(ctx.services.manifests(ctx.session, str(arguments[0])),)])


def _event_retention(ctx: Context, arguments: list[Any]) -> Rows:
    """``CALL SYSTEM$SET_EVENT_RETENTION_DAYS(days)``: how long the account's event table keeps rows
    (NULL: back to the default); ACCOUNTADMIN only. Answers the retention now in force."""
    from duckserve.engine import access
    from duckserve.engine.events import event_table
    from duckserve.errors import InsufficientPrivileges

    _arguments("SYSTEM$SET_EVENT_RETENTION_DAYS", arguments, 1, 1, "(<days> | NULL)")
    if access.ACCOUNTADMIN not in ctx.account.effective_roles(ctx.session.role):
        raise InsufficientPrivileges(f"role {ctx.session.role} cannot set the event table's retention: "
                                     "only ACCOUNTADMIN can (USE ROLE ACCOUNTADMIN)")
    table = event_table(ctx.account.home)
    try:
        days = None if arguments[0] is None or str(arguments[0]).upper() == "NULL" else float(arguments[0])
    except (TypeError, ValueError):
        raise ProgrammingError(f"SYSTEM$SET_EVENT_RETENTION_DAYS takes a number of days, got {arguments[0]!r}") from None
    table.set_retention_days(days)
    return Rows(["SYSTEM$SET_EVENT_RETENTION_DAYS"], [(f"event table retention: {table.retention_days():g} days",)])


#: CALL SYSTEM$NAME(args) -> handler(ctx, args)
SYSTEM_FUNCTIONS: dict[str, Callable[[Context, list[Any]], Rows]] = {
    "SYSTEM$GET_SERVICE_STATUS": _service_status,
    "SYSTEM$GET_SERVICE_LOGS": _service_logs,
    "SYSTEM$GET_SERVICE_MANIFESTS": _service_manifests,
    "SYSTEM$SET_EVENT_RETENTION_DAYS": _event_retention,
}

EXECUTORS: dict[type, Handler] = {
    S.Create: _create,
    S.CreateModel: _create_model,
    S.Alter: _alter,
    S.Drop: _drop,
    S.Show: _show,
    S.Describe: _describe,
    S.Use: _use,
    S.GrantPrivileges: _grant_privileges,
    S.GrantRole: _grant_role,
    S.GrantServiceRole: _grant_service_role,
    S.Call: _call,
}


def execute(ctx: Context, statement: S.Statement) -> Rows:
    return EXECUTORS[type(statement)](ctx, statement)
