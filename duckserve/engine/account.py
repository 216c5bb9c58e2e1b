"""The account: compute pools, image repositories, warehouses, roles, users and grants, with
privileges enforced.

Every object has an owner role (the creator's current role). A role holds the privileges
granted to it and to every role granted to it, and PUBLIC's. ACCOUNTADMIN may do everything, and
owns what exists at the start, so a new user is never stuck. Connections are trusted locally: the
home directory is the security boundary on the machine; network endpoints authenticate.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from duckserve.engine import access as A
from duckserve.engine.catalog import Catalog, CatalogObject, now, parse_timestamp
from duckserve.engine.families import FAMILIES
from duckserve.engine.families import instance_family as lookup_family
from duckserve.engine.names import (
    DEFAULT_DATABASE,
    DEFAULT_SCHEMA,
    ObjectName,
    closest,
    display,
    parse_simple_name,
)
from duckserve.engine.results import Rows, like_matcher
from duckserve.errors import (
    InsufficientPrivileges,
    ObjectExists,
    ObjectNotFound,
    OperationalError,
    ProgrammingError,
)

#: Warehouse sizes and how many service-function batches each keeps in flight. Sizes above
#: MEDIUM do not speed inference up (the seed's advice), so they stay at MEDIUM's parallelism.
WAREHOUSE_SIZES: dict[str, int] = {
    "XSMALL": 2,
    "SMALL": 4,
    "MEDIUM": 8,
    "LARGE": 8,
    "XLARGE": 8,
    "XXLARGE": 8,
    "XXXLARGE": 8,
    "X4LARGE": 8,
    "X5LARGE": 8,
    "X6LARGE": 8,
}
_SIZE_ALIASES = {
    "X-SMALL": "XSMALL", "X-LARGE": "XLARGE", "2X-LARGE": "XXLARGE", "2XLARGE": "XXLARGE",
    "3X-LARGE": "XXXLARGE", "3XLARGE": "XXXLARGE", "4X-LARGE": "X4LARGE", "4XLARGE": "X4LARGE",
    "5X-LARGE": "X5LARGE", "5XLARGE": "X5LARGE", "6X-LARGE": "X6LARGE", "6XLARGE": "X6LARGE",
}
DEFAULT_WAREHOUSE = "COMPUTE_WH"
#: where a compute pool runs its services unless it names a RUNTIME (or $DUCKSERVE_RUNTIME does)
DEFAULT_RUNTIME = "process"

POOL_STATES = ("STARTING", "ACTIVE", "IDLE", "SUSPENDED", "STOPPING", "RESIZING")
BUILTIN_ROLES = (A.ACCOUNTADMIN, A.SYSADMIN, A.PUBLIC)


def warehouse_size(text: str) -> str:
    size = text.upper().replace("_", "-")
    size = _SIZE_ALIASES.get(size, size.replace("-", ""))
    if size not in WAREHOUSE_SIZES:
        raise ProgrammingError(f"unknown WAREHOUSE_SIZE {text!r}: use one of {', '.join(WAREHOUSE_SIZES)}")
    return size


@dataclass
class Session:
    """Who is asking: the user, the current role, warehouse and namespace."""

    user: str
    role: str
    warehouse: str | None
    database: str = DEFAULT_DATABASE
    schema: str = DEFAULT_SCHEMA
    extras: dict[str, Any] = field(default_factory=dict)
    #: the only role this session may use (a programmatic access token's ROLE_RESTRICTION)
    role_restriction: str | None = None


class Account:
    """Operations on the account's objects, each checked against the session's role."""

    def __init__(self, home: Path | str | None = None) -> None:
        self.catalog = Catalog(home)
        self.home = self.catalog.home
        #: hooks other parts of the engine register (services react to pool changes)
        self.pool_hooks: dict[str, list[Callable[[Session, CatalogObject], None]]] = {
            "suspend": [], "stop_all": [], "drop": [],
        }
        self._bootstrap()

    # -- bootstrap --------------------------------------------------------------------------------
    def _bootstrap(self) -> None:
        cat = self.catalog
        if cat.get_meta("bootstrapped"):
            return
        with cat.transaction():
            if cat.get_meta("bootstrapped"):
                return
            for role in BUILTIN_ROLES:
                if not cat.get(A.ROLE, role):
                    cat.insert(CatalogObject(A.ROLE, role, owner=A.ACCOUNTADMIN,
                                             comment=f"built-in role {role}"))
            cat.add_grant("USAGE", A.ROLE, A.SYSADMIN, A.ROLE, A.ACCOUNTADMIN, A.ACCOUNTADMIN)
            if not cat.get(A.USER, A.ADMIN_USER):
                cat.insert(CatalogObject(A.USER, A.ADMIN_USER, owner=A.ACCOUNTADMIN,
                                         props={"login_name": getpass.getuser(), "default_role": A.ACCOUNTADMIN},
                                         comment="the account's administrator"))
            cat.add_grant("USAGE", A.ROLE, A.ACCOUNTADMIN, A.USER, A.ADMIN_USER, A.ACCOUNTADMIN)
            if not cat.get(A.WAREHOUSE, DEFAULT_WAREHOUSE):
                cat.insert(CatalogObject(A.WAREHOUSE, DEFAULT_WAREHOUSE, owner=A.ACCOUNTADMIN,
                                         props={"size": "XSMALL", "state": "STARTED"},
                                         comment="default warehouse"))
            cat.add_grant("USAGE", A.WAREHOUSE, DEFAULT_WAREHOUSE, A.ROLE, A.PUBLIC, A.ACCOUNTADMIN)
            cat.set_meta("bootstrapped", now().isoformat())

    # -- sessions ---------------------------------------------------------------------------------
    def open_session(self, user: str | None = None, role: str | None = None,
                     warehouse: str | None = None) -> Session:
        user_name = parse_simple_name(user, "user") if user else A.ADMIN_USER
        user_obj = self._find_account_object(A.USER, user_name)
        if user_obj.props.get("disabled"):
            raise ProgrammingError(f"user {user_obj.name} is disabled: run ALTER USER {display(user_obj.name)} SET DISABLED = FALSE")
        session = Session(user=user_obj.name, role=A.PUBLIC, warehouse=None)
        wanted_role = parse_simple_name(role, "role") if role else user_obj.props.get("default_role")
        if wanted_role:
            try:
                self.use_role(session, wanted_role)
            except ProgrammingError:
                if role:
                    raise
        wanted_wh = (parse_simple_name(warehouse, "warehouse") if warehouse
                     else user_obj.props.get("default_warehouse") or DEFAULT_WAREHOUSE)
        try:
            self.use_warehouse(session, wanted_wh)
        except ProgrammingError:
            if warehouse:
                raise
        return session

    def use_role(self, session: Session, role: str) -> Rows:
        role_obj = self._find_account_object(A.ROLE, role)
        if session.role_restriction and role_obj.name != session.role_restriction:
            raise InsufficientPrivileges(
                f"this session's credential is restricted to role {display(session.role_restriction)} "
                f"(the token's ROLE_RESTRICTION): it cannot use role {display(role_obj.name)}; "
                "log in with a token restricted to that role, or without a restriction"
            )
        if role_obj.name not in self.user_roles(session.user):
            raise InsufficientPrivileges(
                f"role {role_obj.name} is not granted to user {session.user}: run GRANT ROLE "
                f"{display(role_obj.name)} TO USER {display(session.user)} (as ACCOUNTADMIN)"
            )
        session.role = role_obj.name
        return Rows.status("Statement executed successfully.")

    def use_warehouse(self, session: Session, warehouse: str) -> Rows:
        wh = self._find_account_object(A.WAREHOUSE, warehouse)
        self.require(session, wh, ("USAGE", "OPERATE", "MODIFY"), "use it")
        session.warehouse = wh.name
        return Rows.status("Statement executed successfully.")

    def parallelism(self, session: Session) -> int:
        """Batches in flight for service functions, from the session's warehouse size."""
        if session.warehouse:
            wh = self.catalog.get(A.WAREHOUSE, session.warehouse)
            if wh is not None:
                return WAREHOUSE_SIZES[wh.props.get("size", "XSMALL")]
        return WAREHOUSE_SIZES["XSMALL"]

    # -- roles and privileges ---------------------------------------------------------------------
    def _granted_roles(self, grantee_kind: str, grantee: str) -> list[str]:
        return [g.object_name for g in self.catalog.grants(privilege="USAGE", object_kind=A.ROLE,
                                                            grantee_kind=grantee_kind, grantee=grantee)]

    def effective_roles(self, role: str) -> set[str]:
        """The role, every role granted to it (transitively), and PUBLIC."""
        seen = {role, A.PUBLIC}
        todo = [role]
        while todo:
            for parent in self._granted_roles(A.ROLE, todo.pop()):
                if parent not in seen:
                    seen.add(parent)
                    todo.append(parent)
        return seen

    def user_roles(self, user: str) -> set[str]:
        roles = {A.PUBLIC}
        for role in self._granted_roles(A.USER, user):
            roles |= self.effective_roles(role)
        return roles

    def is_admin(self, session: Session) -> bool:
        return A.ACCOUNTADMIN in self.effective_roles(session.role)

    def privileges_on(self, session: Session, obj: CatalogObject) -> set[str]:
        roles = self.effective_roles(session.role)
        if A.ACCOUNTADMIN in roles or obj.owner in roles:
            return set(A.PRIVILEGES.get(obj.kind, ())) | {A.OWNERSHIP}
        found = set()
        for grant in self.catalog.grants(object_kind=obj.kind, object_name=obj.key):
            if grant.grantee_kind == A.ROLE and grant.grantee in roles:
                found.add(grant.privilege)
        return found

    def has_account_privilege(self, session: Session, privilege: str) -> bool:
        roles = self.effective_roles(session.role)
        if A.ACCOUNTADMIN in roles:
            return True
        return any(g.grantee in roles for g in self.catalog.grants(privilege=privilege, object_kind=A.ACCOUNT,
                                                                     grantee_kind=A.ROLE))

    def require(self, session: Session, obj: CatalogObject, privileges: Iterable[str], action: str) -> None:
        """Raise InsufficientPrivileges unless the role has one of ``privileges`` (or owns ``obj``)."""
        wanted = tuple(privileges)
        held = self.privileges_on(session, obj)
        if A.OWNERSHIP in held or held & set(wanted):
            return
        if A.OWNERSHIP not in wanted:
            wanted = (*wanted, A.OWNERSHIP)
        denied = A.Denied(session.role, wanted, obj.kind, display_key(obj), obj.owner)
        raise InsufficientPrivileges(denied.message(action))

    def require_account(self, session: Session, privilege: str, action: str) -> None:
        if not self.has_account_privilege(session, privilege):
            raise InsufficientPrivileges(A.Denied(session.role, (privilege,), A.ACCOUNT, "").message(action))

    def visible(self, session: Session, obj: CatalogObject) -> bool:
        return bool(self.privileges_on(session, obj))

    # -- lookup -----------------------------------------------------------------------------------
    def _find_account_object(self, kind: str, name: str) -> CatalogObject:
        obj = self.catalog.get(kind, name)
        if obj is None:
            raise self._not_found(kind, display(name), [display(o.name) for o in self.catalog.objects(kind)])
        return obj

    def _not_found(self, kind: str, label: str, candidates: list[str]) -> ObjectNotFound:
        """``label`` and ``candidates`` are names as they are written in SQL."""
        hint = closest(label, candidates)
        message = f"{A.kind_label(kind)} {label} does not exist"
        if hint:
            message += f"; did you mean {hint}?"
        elif kind == A.COMPUTE_POOL:
            message += "; create it with CREATE COMPUTE POOL"
        elif kind == A.IMAGE_REPOSITORY:
            message += "; create it with CREATE IMAGE REPOSITORY"
        return ObjectNotFound(message)

    def find(self, kind: str, name: str | ObjectName, session: Session | None = None,
             missing_ok: bool = False) -> CatalogObject | None:
        """Look an object up. Schema objects resolve an unqualified name in the session's
        database.schema first, then anywhere in the account when the name is unique there."""
        if kind not in A.SCHEMA_KINDS:
            plain = name.name if isinstance(name, ObjectName) else name
            obj = self.catalog.get(kind, plain)
            if obj is None and not missing_ok:
                raise self._not_found(kind, display(plain), [display(o.name) for o in self.catalog.objects(kind)])
            return obj
        ref = name if isinstance(name, ObjectName) else ObjectName(name)
        database = session.database if session else DEFAULT_DATABASE
        schema = session.schema if session else DEFAULT_SCHEMA
        full = ref.in_schema(database, schema)
        obj = self.catalog.get(kind, full.name, full.database, full.schema)
        if obj is None and not (ref.database and ref.schema):
            same_name = [o for o in self.catalog.objects(kind, name=ref.name)
                         if not ref.schema or o.schema == ref.schema]
            if len(same_name) == 1:
                obj = same_name[0]
        if obj is None and not missing_ok:
            raise self._not_found(kind, full.qualified, [display_key(o) for o in self.catalog.objects(kind)])
        return obj

    def qualify(self, name: ObjectName, session: Session) -> ObjectName:
        return name.in_schema(session.database, session.schema)

    # -- shared create/drop -----------------------------------------------------------------------
    def _prepare_create(self, session: Session, kind: str, name: str, or_replace: bool, if_not_exists: bool,
                        database: str = "", schema: str = "") -> tuple[bool, CatalogObject | None]:
        """(proceed, existing): whether to go on creating, and the object OR REPLACE replaces."""
        if or_replace and if_not_exists:
            raise ProgrammingError("OR REPLACE and IF NOT EXISTS cannot be used together: choose one")
        existing = self.catalog.get(kind, name, database, schema)
        if existing is None:
            return True, None
        if if_not_exists:
            return False, existing
        if not or_replace:
            label = display_key(existing)
            raise ObjectExists(
                f"{A.kind_label(kind)} {label} already exists: use CREATE OR REPLACE {kind} or "
                f"CREATE {kind} IF NOT EXISTS, or DROP {kind} {label} first"
            )
        self.require(session, existing, (A.OWNERSHIP,), f"replace {A.kind_label(kind)} {display_key(existing)}")
        return True, existing

    def _drop(self, session: Session, kind: str, name: str | ObjectName, if_exists: bool,
              before: Callable[[CatalogObject], None] | None = None) -> Rows:
        obj = self.find(kind, name, session, missing_ok=if_exists)
        if obj is None:
            label = name.qualified if isinstance(name, ObjectName) else display(name)
            return Rows.status(f"Drop statement executed successfully ({label} already dropped).")
        self.require(session, obj, (A.OWNERSHIP,), f"drop {A.kind_label(kind)} {display_key(obj)}")
        if before is not None:
            before(obj)
        self.catalog.delete(obj)
        return Rows.status(f"{display_key(obj)} successfully dropped.")

    # -- compute pools ----------------------------------------------------------------------------
    def create_compute_pool(self, session: Session, name: str, *, min_nodes: int, max_nodes: int,
                            instance_family: str, auto_resume: bool = True, auto_suspend_secs: int = 3600,
                            initially_suspended: bool = False, comment: str | None = None,
                            or_replace: bool = False, if_not_exists: bool = False, runtime: str | None = None) -> Rows:
        self.require_account(session, "CREATE COMPUTE POOL", f"create compute pool {display(name)}")
        family = lookup_family(instance_family)
        runtime = pool_runtime(name, runtime)
        _check_nodes(name, min_nodes, max_nodes)
        if auto_suspend_secs < 0:
            raise ProgrammingError(f"compute pool {display(name)}: AUTO_SUSPEND_SECS must be 0 or more")
        with self.catalog.transaction():
            proceed, existing = self._prepare_create(session, A.COMPUTE_POOL, name, or_replace, if_not_exists)
            if not proceed:
                return Rows.status(f"{display(name)} already exists, statement succeeded.")
            if existing is not None:
                self._drop_pool(session, existing)
            stamp = now().isoformat()
            self.catalog.insert(CatalogObject(
                A.COMPUTE_POOL, name, owner=session.role, comment=comment,
                props={
                    "min_nodes": min_nodes, "max_nodes": max_nodes, "instance_family": family.name,
                    "runtime": runtime, "auto_resume": auto_resume, "auto_suspend_secs": auto_suspend_secs,
                    "state": "SUSPENDED" if initially_suspended else "IDLE",
                    "resumed_on": None if initially_suspended else stamp,
                },
            ))
        return Rows.status(f"Compute pool {display(name)} successfully created.")

    def alter_compute_pool(self, session: Session, name: str, action: str, settings: dict[str, Any] | None = None,
                           if_exists: bool = False) -> Rows:
        pool = self.find(A.COMPUTE_POOL, name, missing_ok=if_exists)
        if pool is None:
            return Rows.status("Statement executed successfully.")
        label = display(pool.name)
        if action in ("SUSPEND", "RESUME", "STOP ALL"):
            self.require(session, pool, ("OPERATE",), f"{action.lower()} compute pool {label}")
        else:
            self.require(session, pool, ("MODIFY",), f"alter compute pool {label}")
        if action == "SUSPEND":
            for hook in self.pool_hooks["suspend"]:
                hook(session, pool)
            pool.props["state"] = "SUSPENDED"
        elif action == "RESUME":
            if pool.props["state"] != "SUSPENDED":
                raise ProgrammingError(f"compute pool {label} is {pool.props['state']}, not SUSPENDED: nothing to resume")
            pool.props["state"] = "IDLE"
            pool.props["resumed_on"] = now().isoformat()
        elif action == "STOP ALL":
            for hook in self.pool_hooks["stop_all"]:
                hook(session, pool)
        elif action in ("SET", "UNSET"):
            self._apply_pool_settings(pool, settings or {}, unset=(action == "UNSET"))
        else:
            raise ProgrammingError(f"ALTER COMPUTE POOL {label}: unknown action {action}")
        self.catalog.update(pool)
        return Rows.status("Statement executed successfully.")

    def _apply_pool_settings(self, pool: CatalogObject, settings: dict[str, Any], unset: bool) -> None:
        defaults = {"AUTO_RESUME": True, "AUTO_SUSPEND_SECS": 3600, "COMMENT": None, "RUNTIME": None}
        for key, value in settings.items():
            if unset:
                if key not in defaults:
                    raise ProgrammingError(f"compute pool {display(pool.name)}: {key} cannot be unset; use SET {key} = ...")
                value = defaults[key]
            if key == "COMMENT":
                pool.comment = value
            elif key == "INSTANCE_FAMILY":
                raise ProgrammingError(
                    f"compute pool {display(pool.name)}: INSTANCE_FAMILY cannot be changed; create a new pool"
                )
            elif key in ("MIN_NODES", "MAX_NODES", "AUTO_SUSPEND_SECS", "AUTO_RESUME"):
                pool.props[key.lower()] = value
            elif key == "RUNTIME":
                self._change_pool_runtime(pool, value)
            else:
                raise ProgrammingError(
                    f"compute pool {display(pool.name)}: unknown property {key}; "
                    "use MIN_NODES, MAX_NODES, AUTO_RESUME, AUTO_SUSPEND_SECS, RUNTIME or COMMENT"
                )
        _check_nodes(pool.name, pool.props["min_nodes"], pool.props["max_nodes"])

    def _change_pool_runtime(self, pool: CatalogObject, runtime: str | None) -> None:
        """RUNTIME = '...' (UNSET: the account's default), only while no service is on the pool: its
        instances, images and handles belong to the runtime they were made for."""
        wanted = pool_runtime(pool.name, runtime)
        if wanted == pool.props.get("runtime", DEFAULT_RUNTIME):
            return
        services = [s for s in self.catalog.objects(A.SERVICE) if s.props.get("compute_pool") == pool.name]
        if services:
            raise ProgrammingError(
                f"compute pool {display(pool.name)} runs service {display_key(services[0])} on its runtime "
                f"{pool.props.get('runtime', DEFAULT_RUNTIME).upper()}: drop its services (ALTER COMPUTE POOL "
                f"{display(pool.name)} STOP ALL) before SET RUNTIME = '{wanted.upper()}'"
            )
        pool.props["runtime"] = wanted

    def _run_drop_hooks(self, session: Session, pool: CatalogObject) -> None:
        for hook in self.pool_hooks["drop"]:
            hook(session, pool)

    def _drop_pool(self, session: Session, pool: CatalogObject) -> None:
        self._run_drop_hooks(session, pool)
        self.catalog.delete(pool)

    def drop_compute_pool(self, session: Session, name: str, if_exists: bool = False) -> Rows:
        return self._drop(session, A.COMPUTE_POOL, name, if_exists, lambda pool: self._run_drop_hooks(session, pool))

    def _pool_record(self, pool: CatalogObject) -> dict[str, Any]:
        p = pool.props
        services = [s for s in self.catalog.objects(A.SERVICE) if s.props.get("compute_pool") == pool.name]
        running = [s for s in services if s.props.get("status") not in ("SUSPENDED",)]
        nodes = 0 if p["state"] == "SUSPENDED" else p["min_nodes"]
        active = min(nodes, len(running))
        status_message = _pool_status(p["state"], len(services))
        target = nodes
        seen = _runtime_nodes(p.get("runtime", DEFAULT_RUNTIME), pool.name, p["min_nodes"])
        if seen is not None:  # a runtime with nodes of its own (Swarm): what they are
            nodes, active = seen.ready, seen.active
            status_message = seen.message or status_message
        return {
            "name": pool.name, "state": ("ACTIVE" if running and p["state"] != "SUSPENDED" else p["state"]),
            "min_nodes": p["min_nodes"], "max_nodes": p["max_nodes"], "instance_family": p["instance_family"],
            "num_services": len(services), "num_jobs": 0, "auto_suspend_secs": p["auto_suspend_secs"],
            "auto_resume": _bool_text(p["auto_resume"]), "active_nodes": active, "idle_nodes": nodes - active,
            "target_nodes": target, "created_on": pool.created_on, "resumed_on": parse_timestamp(p.get("resumed_on")),
            "updated_on": pool.updated_on, "owner": pool.owner, "comment": pool.comment,
            "is_exclusive": "false", "application": None, "budget": None, "error_code": "",
            "status_message": status_message,
            "runtime": p.get("runtime", DEFAULT_RUNTIME).upper(),
        }

    POOL_COLUMNS = (
        "name", "state", "min_nodes", "max_nodes", "instance_family", "num_services", "num_jobs",
        "auto_suspend_secs", "auto_resume", "active_nodes", "idle_nodes", "target_nodes", "created_on",
        "resumed_on", "updated_on", "owner", "comment", "is_exclusive", "application", "budget", "error_code",
        "status_message", "runtime",
    )

    def show_compute_pools(self, session: Session, like: str | None = None) -> Rows:
        pools = self._visible(session, A.COMPUTE_POOL, like)
        return Rows.of(self.POOL_COLUMNS, [self._pool_record(p) for p in pools], {"resumed_on": "TIMESTAMPTZ",
                                                                                 "comment": "VARCHAR"})

    def describe_compute_pool(self, session: Session, name: str) -> Rows:
        pool = self.find(A.COMPUTE_POOL, name)
        assert pool is not None
        self.require(session, pool, ("MONITOR", "USAGE", "OPERATE", "MODIFY"), f"describe compute pool {display(pool.name)}")
        family = FAMILIES[pool.props["instance_family"]]
        record = self._pool_record(pool)
        record.update({"vcpu": family.vcpu, "memory_gib": family.memory_gib, "gpu": family.gpu})
        columns = (*self.POOL_COLUMNS, "vcpu", "memory_gib", "gpu")
        return Rows.of(columns, [record], {"resumed_on": "TIMESTAMPTZ", "comment": "VARCHAR"})

    def _visible(self, session: Session, kind: str, like: str | None, **where: str) -> list[CatalogObject]:
        matcher = like_matcher(like)
        return [o for o in self.catalog.objects(kind, **where)
                if (matcher is None or matcher.match(o.name)) and self.visible(session, o)]

    # -- image repositories -----------------------------------------------------------------------
    def create_image_repository(self, session: Session, name: ObjectName, *, or_replace: bool = False,
                                if_not_exists: bool = False, comment: str | None = None) -> Rows:
        full = self.qualify(name, session)
        self.require_account(session, "CREATE IMAGE REPOSITORY", f"create image repository {full.qualified}")
        with self.catalog.transaction():
            proceed, existing = self._prepare_create(session, A.IMAGE_REPOSITORY, full.name, or_replace,
                                                     if_not_exists, full.database, full.schema)
            if not proceed:
                return Rows.status(f"{display(full.name)} already exists, statement succeeded.")
            if existing is not None:
                self.catalog.delete(existing)
            self.catalog.insert(CatalogObject(A.IMAGE_REPOSITORY, full.name, owner=session.role,
                                              database=full.database, schema=full.schema, comment=comment))
        return Rows.status(f"Image Repository {display(full.name)} successfully created.")

    def drop_image_repository(self, session: Session, name: ObjectName, if_exists: bool = False) -> Rows:
        def before(repo: CatalogObject) -> None:
            from duckserve.engine.images.repositories import remove_images

            remove_images(self.home, repo)
            for image in self.catalog.objects(A.IMAGE, database=repo.database, schema=repo.schema):
                if image.props.get("repository") == repo.name:
                    self.catalog.delete(image)

        return self._drop(session, A.IMAGE_REPOSITORY, name, if_exists, before)

    REPO_COLUMNS = ("created_on", "name", "database_name", "schema_name", "repository_url", "owner",
                    "owner_role_type", "comment", "encryption")

    def show_image_repositories(self, session: Session, like: str | None = None) -> Rows:
        from duckserve.engine.images.repositories import repository_url

        records = [
            {"created_on": r.created_on, "name": r.name, "database_name": r.database, "schema_name": r.schema,
             "repository_url": repository_url(self.home, r), "owner": r.owner, "owner_role_type": "ROLE",
             "comment": r.comment, "encryption": "SNOWFLAKE_SSE"}
            for r in self._visible(session, A.IMAGE_REPOSITORY, like)
        ]
        return Rows.of(self.REPO_COLUMNS, records, {"comment": "VARCHAR"})

    def show_images(self, session: Session, repository: ObjectName) -> Rows:
        repo = self.find(A.IMAGE_REPOSITORY, repository, session)
        assert repo is not None
        self.require(session, repo, ("READ", "SERVICE READ"), f"list images in image repository {display_key(repo)}")
        from duckserve.engine.images.repositories import registry_images

        recorded = {i.props.get("image_path"): i for i in self.catalog.objects(A.IMAGE, database=repo.database,
                                                                             schema=repo.schema)
                    if i.props.get("repository") == repo.name}
        records = []
        for image in registry_images(self.home, repo):  # what the registry holds
            record = recorded.pop(image["image_path"], None)
            records.append({"created_on": record.created_on if record else None, **image})
        for i in recorded.values():  # environments of process pools, which no registry holds
            if i.props.get("runtime", "process") == "process":
                records.append({"created_on": i.created_on, "image_name": i.props["image_name"],
                                "tags": i.props.get("tag", "latest"), "digest": i.props.get("digest"), "size": None,
                                "image_path": i.props.get("image_path")})
        return Rows.of(("created_on", "image_name", "tags", "digest", "size", "image_path"), records,
                       {"created_on": "TIMESTAMPTZ", "image_name": "VARCHAR", "tags": "VARCHAR", "digest": "VARCHAR",
                        "size": "BIGINT", "image_path": "VARCHAR"})

    # -- warehouses -------------------------------------------------------------------------------
    def create_warehouse(self, session: Session, name: str, *, size: str = "XSMALL", comment: str | None = None,
                         or_replace: bool = False, if_not_exists: bool = False,
                         settings: dict[str, Any] | None = None) -> Rows:
        self.require_account(session, "CREATE WAREHOUSE", f"create warehouse {display(name)}")
        size = warehouse_size(size)
        with self.catalog.transaction():
            proceed, existing = self._prepare_create(session, A.WAREHOUSE, name, or_replace, if_not_exists)
            if not proceed:
                return Rows.status(f"{display(name)} already exists, statement succeeded.")
            if existing is not None:
                self.catalog.delete(existing)
            props = {"size": size, "state": "SUSPENDED" if (settings or {}).get("INITIALLY_SUSPENDED") else "STARTED"}
            for key in ("AUTO_SUSPEND", "AUTO_RESUME"):
                if settings and key in settings:
                    props[key.lower()] = settings[key]
            self.catalog.insert(CatalogObject(A.WAREHOUSE, name, owner=session.role, comment=comment, props=props))
        session.warehouse = name  # Snowflake makes a new warehouse the session's current one
        return Rows.status(f"Warehouse {display(name)} successfully created.")

    def alter_warehouse(self, session: Session, name: str, action: str, settings: dict[str, Any] | None = None,
                        if_exists: bool = False) -> Rows:
        wh = self.find(A.WAREHOUSE, name, missing_ok=if_exists)
        if wh is None:
            return Rows.status("Statement executed successfully.")
        label = display(wh.name)
        if action in ("SUSPEND", "RESUME"):
            self.require(session, wh, ("OPERATE",), f"{action.lower()} warehouse {label}")
            wh.props["state"] = "SUSPENDED" if action == "SUSPEND" else "STARTED"
        elif action == "SET":
            self.require(session, wh, ("MODIFY",), f"alter warehouse {label}")
            for key, value in (settings or {}).items():
                if key == "WAREHOUSE_SIZE":
                    wh.props["size"] = warehouse_size(str(value))
                elif key == "COMMENT":
                    wh.comment = value
                elif key in ("AUTO_SUSPEND", "AUTO_RESUME", "MAX_CLUSTER_COUNT", "MIN_CLUSTER_COUNT"):
                    wh.props[key.lower()] = value
                else:
                    raise ProgrammingError(f"warehouse {label}: unknown property {key}; use WAREHOUSE_SIZE, "
                                           "AUTO_SUSPEND, AUTO_RESUME or COMMENT")
        else:
            raise ProgrammingError(f"ALTER WAREHOUSE {label}: unknown action {action}")
        self.catalog.update(wh)
        return Rows.status("Statement executed successfully.")

    def drop_warehouse(self, session: Session, name: str, if_exists: bool = False) -> Rows:
        result = self._drop(session, A.WAREHOUSE, name, if_exists)
        if session.warehouse == name:
            session.warehouse = None
        return result

    WAREHOUSE_COLUMNS = ("name", "state", "type", "size", "min_cluster_count", "max_cluster_count",
                         "started_clusters", "running", "queued", "is_default", "is_current", "auto_suspend",
                         "auto_resume", "available", "provisioning", "quiescing", "other", "created_on",
                         "resumed_on", "updated_on", "owner", "comment", "inference_parallelism")

    def show_warehouses(self, session: Session, like: str | None = None) -> Rows:
        records = []
        for wh in self._visible(session, A.WAREHOUSE, like):
            size = wh.props.get("size", "XSMALL")
            records.append({
                "name": wh.name, "state": wh.props.get("state", "STARTED"), "type": "STANDARD",
                "size": _size_label(size), "min_cluster_count": 1, "max_cluster_count": 1,
                "started_clusters": 0 if wh.props.get("state") == "SUSPENDED" else 1, "running": 0, "queued": 0,
                "is_default": "Y" if wh.name == DEFAULT_WAREHOUSE else "N",
                "is_current": "Y" if wh.name == session.warehouse else "N",
                "auto_suspend": wh.props.get("auto_suspend", 600),
                "auto_resume": _bool_text(wh.props.get("auto_resume", True)), "available": "100", "provisioning": "0",
                "quiescing": "0", "other": "0", "created_on": wh.created_on, "resumed_on": wh.created_on,
                "updated_on": wh.updated_on, "owner": wh.owner, "comment": wh.comment,
                "inference_parallelism": WAREHOUSE_SIZES[size],
            })
        return Rows.of(self.WAREHOUSE_COLUMNS, records, {"comment": "VARCHAR"})

    # -- roles ------------------------------------------------------------------------------------
    def create_role(self, session: Session, name: str, *, or_replace: bool = False, if_not_exists: bool = False,
                    comment: str | None = None) -> Rows:
        self.require_account(session, "CREATE ROLE", f"create role {display(name)}")
        if name in BUILTIN_ROLES and or_replace:
            raise ProgrammingError(f"role {name} is built in and cannot be replaced")
        with self.catalog.transaction():
            proceed, existing = self._prepare_create(session, A.ROLE, name, or_replace, if_not_exists)
            if not proceed:
                return Rows.status(f"{display(name)} already exists, statement succeeded.")
            if existing is not None:
                self._drop_role_data(existing)
            self.catalog.insert(CatalogObject(A.ROLE, name, owner=session.role, comment=comment))
        return Rows.status(f"Role {display(name)} successfully created.")

    def _drop_role_data(self, role: CatalogObject) -> None:
        self.catalog.rename_owner(role.name, role.owner)
        self.catalog.remove_grants_to(A.ROLE, role.name)
        for grant in self.catalog.grants(object_kind=A.ROLE, object_name=role.name):
            self.catalog.remove_grant(grant.privilege, grant.object_kind, grant.object_name, grant.grantee_kind,
                                      grant.grantee)
        self.catalog.delete(role)

    def drop_role(self, session: Session, name: str, if_exists: bool = False) -> Rows:
        role = self.find(A.ROLE, name, missing_ok=if_exists)
        if role is None:
            return Rows.status(f"Drop statement executed successfully ({display(name)} already dropped).")
        if role.name in BUILTIN_ROLES:
            raise ProgrammingError(f"role {role.name} is built in and cannot be dropped")
        self.require(session, role, (A.OWNERSHIP,), f"drop role {display(role.name)}")
        if session.role == role.name:
            raise ProgrammingError(f"role {role.name} is the current role: run USE ROLE with another role first")
        with self.catalog.transaction():
            self._drop_role_data(role)
        return Rows.status(f"{display(role.name)} successfully dropped.")

    def grant_role(self, session: Session, role: str, grantee_kind: str, grantee: str, revoke: bool = False) -> Rows:
        role_obj = self.find(A.ROLE, role)
        assert role_obj is not None
        target = self.find(grantee_kind, grantee)
        assert target is not None
        verb = "revoke" if revoke else "grant"
        if not self.has_account_privilege(session, "MANAGE GRANTS"):
            self.require(session, role_obj, (A.OWNERSHIP,), f"{verb} role {display(role_obj.name)}")
        if revoke:
            if not self.catalog.remove_grant("USAGE", A.ROLE, role_obj.name, grantee_kind, target.name):
                raise ProgrammingError(
                    f"role {role_obj.name} is not granted to {grantee_kind.lower()} {target.name}: nothing to revoke"
                )
            return Rows.status("Statement executed successfully.")
        if grantee_kind == A.ROLE and role_obj.name in self.effective_roles(target.name) - {A.PUBLIC}:
            return Rows.status("Statement executed successfully.")
        if grantee_kind == A.ROLE and target.name in self.effective_roles(role_obj.name):
            raise ProgrammingError(
                f"granting role {role_obj.name} to role {target.name} would make a cycle: "
                f"{target.name} is already granted to {role_obj.name}"
            )
        self.catalog.add_grant("USAGE", A.ROLE, role_obj.name, grantee_kind, target.name, session.role)
        return Rows.status("Statement executed successfully.")

    def show_roles(self, session: Session, like: str | None = None) -> Rows:
        matcher = like_matcher(like)
        default_role = (self.catalog.get(A.USER, session.user) or CatalogObject(A.USER, "", "")).props.get("default_role")
        records = []
        for role in self.catalog.objects(A.ROLE):
            if matcher and not matcher.match(role.name):
                continue
            grants_of = self.catalog.grants(privilege="USAGE", object_kind=A.ROLE, object_name=role.name)
            records.append({
                "created_on": role.created_on, "name": role.name,
                "is_default": "Y" if role.name == default_role else "N",
                "is_current": "Y" if role.name == session.role else "N",
                "is_inherited": "Y" if role.name in self.effective_roles(session.role) and role.name != session.role
                else "N",
                "assigned_to_users": sum(1 for g in grants_of if g.grantee_kind == A.USER),
                "granted_to_roles": sum(1 for g in grants_of if g.grantee_kind == A.ROLE),
                "granted_roles": len(self._granted_roles(A.ROLE, role.name)),
                "owner": role.owner if role.name != A.ACCOUNTADMIN else "", "comment": role.comment,
            })
        columns = ("created_on", "name", "is_default", "is_current", "is_inherited", "assigned_to_users",
                   "granted_to_roles", "granted_roles", "owner", "comment")
        return Rows.of(columns, records, {"comment": "VARCHAR"})

    # -- users ------------------------------------------------------------------------------------
    USER_PROPERTIES = ("PASSWORD", "LOGIN_NAME", "DISPLAY_NAME", "FIRST_NAME", "LAST_NAME", "EMAIL",
                       "DEFAULT_ROLE", "DEFAULT_WAREHOUSE", "DEFAULT_NAMESPACE", "RSA_PUBLIC_KEY",
                       "RSA_PUBLIC_KEY_2", "DISABLED", "MUST_CHANGE_PASSWORD", "TYPE", "COMMENT")

    def _apply_user_settings(self, user: CatalogObject, settings: dict[str, Any], unset: bool = False) -> None:
        for key, value in settings.items():
            if key not in self.USER_PROPERTIES:
                raise ProgrammingError(
                    f"user {display(user.name)}: unknown property {key}; use one of {', '.join(self.USER_PROPERTIES)}"
                )
            if key == "COMMENT":
                user.comment = None if unset else value
            elif key == "PASSWORD":
                # local connections are trusted: a password is accepted for compatibility, never stored
                user.props["has_password"] = not unset
            elif unset:
                user.props.pop(key.lower(), None)
            else:
                if key in ("DEFAULT_ROLE", "DEFAULT_WAREHOUSE") and isinstance(value, str):
                    value = value.upper() if value.replace("_", "").isalnum() else value
                user.props[key.lower()] = value

    def create_user(self, session: Session, name: str, *, settings: dict[str, Any] | None = None,
                    or_replace: bool = False, if_not_exists: bool = False) -> Rows:
        self.require_account(session, "CREATE USER", f"create user {display(name)}")
        with self.catalog.transaction():
            proceed, existing = self._prepare_create(session, A.USER, name, or_replace, if_not_exists)
            if not proceed:
                return Rows.status(f"{display(name)} already exists, statement succeeded.")
            if existing is not None:
                self.catalog.remove_grants_to(A.USER, existing.name)
                self.catalog.delete(existing)
            user = CatalogObject(A.USER, name, owner=session.role, props={"login_name": name})
            self._apply_user_settings(user, settings or {})
            self.catalog.insert(user)
        return Rows.status(f"User {display(name)} successfully created.")

    def alter_user(self, session: Session, name: str, settings: dict[str, Any], unset: bool = False,
                   if_exists: bool = False) -> Rows:
        user = self.find(A.USER, name, missing_ok=if_exists)
        if user is None:
            return Rows.status("Statement executed successfully.")
        if user.name != session.user:
            self.require(session, user, (A.OWNERSHIP,), f"alter user {display(user.name)}")
        self._apply_user_settings(user, settings, unset)
        self.catalog.update(user)
        return Rows.status("Statement executed successfully.")

    def drop_user(self, session: Session, name: str, if_exists: bool = False) -> Rows:
        user = self.find(A.USER, name, missing_ok=if_exists)
        if user is not None and user.name == session.user:
            raise ProgrammingError(f"user {user.name} is the current user and cannot drop itself")

        def before(obj: CatalogObject) -> None:
            self.catalog.remove_grants_to(A.USER, obj.name)
            for token in self.catalog.objects("PROGRAMMATIC ACCESS TOKEN"):
                if token.props.get("user") == obj.name:
                    self.catalog.delete(token)

        return self._drop(session, A.USER, name, if_exists, before)

    def show_users(self, session: Session, like: str | None = None) -> Rows:
        matcher = like_matcher(like)
        records = []
        for user in self.catalog.objects(A.USER):
            if matcher and not matcher.match(user.name):
                continue
            p = user.props
            records.append({
                "name": user.name, "created_on": user.created_on, "login_name": p.get("login_name", user.name).upper(),
                "display_name": p.get("display_name", user.name), "first_name": p.get("first_name"),
                "last_name": p.get("last_name"), "email": p.get("email"), "comment": user.comment,
                "disabled": _bool_text(bool(p.get("disabled"))), "default_warehouse": p.get("default_warehouse"),
                "default_namespace": p.get("default_namespace"), "default_role": p.get("default_role"),
                "owner": user.owner, "has_password": _bool_text(bool(p.get("has_password"))),
                "has_rsa_public_key": _bool_text(bool(p.get("rsa_public_key"))), "type": p.get("type", "PERSON"),
            })
        columns = ("name", "created_on", "login_name", "display_name", "first_name", "last_name", "email",
                   "comment", "disabled", "default_warehouse", "default_namespace", "default_role", "owner",
                   "has_password", "has_rsa_public_key", "type")
        return Rows.of(columns, records, {c: "VARCHAR" for c in ("first_name", "last_name", "email", "comment",
                                                                  "default_warehouse", "default_namespace",
                                                                  "default_role")})

    # -- grants -----------------------------------------------------------------------------------
    def grant(self, session: Session, privileges: list[str], kind: str, name: str | ObjectName | None,
              role: str, revoke: bool = False) -> Rows:
        """GRANT/REVOKE privileges ON kind name TO ROLE role (kind ACCOUNT takes no name)."""
        role_obj = self.find(A.ROLE, role)
        assert role_obj is not None
        verb = "revoke" if revoke else "grant"
        if kind == A.ACCOUNT:
            target_key = "ACCOUNT"
            self.require_account(session, "MANAGE GRANTS", f"{verb} account privileges")
        else:
            assert name is not None
            obj = self.find(kind, name, session)
            assert obj is not None
            target_key = obj.key
            if not self.has_account_privilege(session, "MANAGE GRANTS"):
                self.require(session, obj, (A.OWNERSHIP,), f"{verb} privileges on {A.kind_label(kind)} {display_key(obj)}")
        valid = A.grantable(kind)
        expanded: list[str] = []
        for privilege in privileges:
            if privilege in ("ALL", "ALL PRIVILEGES"):
                expanded.extend(A.all_privileges(kind))
            elif privilege not in valid:
                raise ProgrammingError(
                    f"privilege {privilege} cannot be granted on {A.kind_label(kind)}: use one of {', '.join(valid)}"
                )
            else:
                expanded.append(privilege)
        with self.catalog.transaction():
            for privilege in expanded:
                if privilege == A.OWNERSHIP:
                    if revoke:
                        raise ProgrammingError("OWNERSHIP cannot be revoked: GRANT OWNERSHIP to another role instead")
                    obj = self.find(kind, name or "", session)
                    assert obj is not None
                    obj.owner = role_obj.name
                    self.catalog.update(obj)
                elif revoke:
                    self.catalog.remove_grant(privilege, kind, target_key, A.ROLE, role_obj.name)
                else:
                    self.catalog.add_grant(privilege, kind, target_key, A.ROLE, role_obj.name, session.role)
        return Rows.status("Statement executed successfully.")

    def grant_service_role(self, session: Session, service: ObjectName, service_role: str, role: str,
                           revoke: bool = False) -> Rows:
        """GRANT SERVICE ROLE svc!ALL_ENDPOINTS_USAGE TO ROLE r (recorded; checked by ingress and
        service functions)."""
        if service_role not in A.SERVICE_ROLES:
            raise ProgrammingError(
                f"unknown service role {service_role} of service {service.qualified}: use one of {', '.join(A.SERVICE_ROLES)}"
            )
        role_obj = self.find(A.ROLE, role)
        assert role_obj is not None
        svc = self.find(A.SERVICE, service, session, missing_ok=True)
        if svc is not None:
            if not self.has_account_privilege(session, "MANAGE GRANTS"):
                self.require(session, svc, (A.OWNERSHIP,), f"grant service roles of service {display_key(svc)}")
            key = svc.key
        else:
            key = self.qualify(service, session).qualified
        full = f"{key}!{service_role}"
        if revoke:
            self.catalog.remove_grant("USAGE", A.SERVICE_ROLE, full, A.ROLE, role_obj.name)
        else:
            self.catalog.add_grant("USAGE", A.SERVICE_ROLE, full, A.ROLE, role_obj.name, session.role)
        return Rows.status("Statement executed successfully.")

    def has_service_role(self, session: Session, service: CatalogObject, service_role: str) -> bool:
        roles = self.effective_roles(session.role)
        if A.ACCOUNTADMIN in roles or service.owner in roles:
            return True
        return self.role_has_service_role(roles, service, service_role)

    def role_has_service_role(self, roles: set[str], service: CatalogObject, service_role: str) -> bool:
        grants = self.catalog.grants(object_kind=A.SERVICE_ROLE, object_name=f"{service.key}!{service_role}")
        return any(g.grantee in roles for g in grants)

    GRANT_COLUMNS = ("created_on", "privilege", "granted_on", "name", "granted_to", "grantee_name",
                     "grant_option", "granted_by")

    def show_grants(self, session: Session, *, to_role: str | None = None, to_user: str | None = None,
                    of_role: str | None = None, on_kind: str | None = None,
                    on_name: str | ObjectName | None = None) -> Rows:
        cat = self.catalog
        if to_user is not None or (to_role is None and of_role is None and on_kind is None):
            user = self.find(A.USER, to_user or session.user)
            assert user is not None
            records = [{"created_on": g.created_on, "role": g.object_name, "granted_to": "USER",
                        "grantee_name": g.grantee, "granted_by": g.granted_by}
                       for g in cat.grants(object_kind=A.ROLE, grantee_kind=A.USER, grantee=user.name)]
            return Rows.of(("created_on", "role", "granted_to", "grantee_name", "granted_by"), records)
        if of_role is not None:
            role = self.find(A.ROLE, of_role)
            assert role is not None
            records = [{"created_on": g.created_on, "role": g.object_name, "granted_to": g.grantee_kind,
                        "grantee_name": g.grantee, "granted_by": g.granted_by}
                       for g in cat.grants(object_kind=A.ROLE, object_name=role.name)]
            return Rows.of(("created_on", "role", "granted_to", "grantee_name", "granted_by"), records)
        records = []
        if to_role is not None:
            role = self.find(A.ROLE, to_role)
            assert role is not None
            for g in cat.grants(grantee_kind=A.ROLE, grantee=role.name):
                records.append(self._grant_record(g))
            for kind in A.PRIVILEGES:
                for obj in cat.objects(kind, owner=role.name):
                    records.append(self._ownership_record(obj))
        else:
            assert on_kind is not None
            if on_kind == A.ACCOUNT:
                records = [self._grant_record(g) for g in cat.grants(object_kind=A.ACCOUNT)]
            else:
                found = self.find(on_kind, on_name or "", session)
                assert found is not None
                obj = found
                self.require(session, obj, A.PRIVILEGES.get(on_kind, ()), f"show grants on {A.kind_label(on_kind)} {display_key(obj)}")
                records = [self._ownership_record(obj)]
                records += [self._grant_record(g) for g in cat.grants(object_kind=on_kind, object_name=obj.key)]
                if on_kind == A.SERVICE:
                    for service_role in A.SERVICE_ROLES:
                        records += [self._grant_record(g) for g in
                                    cat.grants(object_kind=A.SERVICE_ROLE, object_name=f"{obj.key}!{service_role}")]
        return Rows.of(self.GRANT_COLUMNS, records)

    @staticmethod
    def _grant_record(g: Any) -> dict[str, Any]:
        granted_on = g.object_kind.replace(" ", "_")
        privilege = g.privilege
        if g.object_kind == A.ROLE:
            privilege = "USAGE"
        return {"created_on": g.created_on, "privilege": privilege, "granted_on": granted_on,
                "name": g.object_name, "granted_to": g.grantee_kind, "grantee_name": g.grantee,
                "grant_option": "false", "granted_by": g.granted_by}

    @staticmethod
    def _ownership_record(obj: CatalogObject) -> dict[str, Any]:
        return {"created_on": obj.created_on, "privilege": A.OWNERSHIP, "granted_on": obj.kind.replace(" ", "_"),
                "name": obj.key, "granted_to": "ROLE", "grantee_name": obj.owner, "grant_option": "true",
                "granted_by": obj.owner}


def default_runtime() -> str:
    """The account-wide default runtime of new compute pools: ``$DUCKSERVE_RUNTIME``, else process."""
    return (os.environ.get("DUCKSERVE_RUNTIME") or DEFAULT_RUNTIME).strip().lower()


def pool_runtime(pool: str, runtime: str | None) -> str:
    """The runtime a pool asks for (None: the account's default), checked: an unknown name, or a
    runtime that cannot run here (no Docker engine), fails with what is missing and how to get it."""
    from duckserve.engine.runtimes import RUNTIMES, get_runtime

    name = (runtime or default_runtime()).strip().lower()
    if name not in RUNTIMES:
        raise ProgrammingError(
            f"compute pool {display(pool)}: RUNTIME = '{name.upper()}' is not a runtime: use "
            + " or ".join(f"'{n.upper()}'" for n in RUNTIMES)
            + ("" if runtime else " (the default comes from $DUCKSERVE_RUNTIME)")
        )
    try:
        get_runtime(name).check()
    except OperationalError as exc:
        raise OperationalError(f"compute pool {display(pool)} cannot use RUNTIME = '{name.upper()}': {exc}") from exc
    return name


def _runtime_nodes(runtime: str, pool: str, min_nodes: int) -> Any:
    """The pool's nodes as its runtime sees them (a ``PoolNodes``), None for runtimes without nodes."""
    from duckserve.engine.runtimes import get_runtime

    try:
        return get_runtime(runtime).pool_nodes(pool, min_nodes)
    except ProgrammingError:
        return None


def display_key(obj: CatalogObject) -> str:
    return ".".join(display(p) for p in (obj.database, obj.schema, obj.name) if p)


def _check_nodes(name: str, min_nodes: int, max_nodes: int) -> None:
    if min_nodes < 1:
        raise ProgrammingError(f"compute pool {display(name)}: MIN_NODES must be at least 1, got {min_nodes}")
    if max_nodes < min_nodes:
        raise ProgrammingError(
            f"compute pool {display(name)}: MAX_NODES ({max_nodes}) must be at least MIN_NODES ({min_nodes})"
        )


def _pool_status(state: str, services: int) -> str:
    if state == "SUSPENDED":
        return "Compute pool is suspended; run ALTER COMPUTE POOL ... RESUME or call a service with AUTO_RESUME"
    if services:
        return f"Compute pool is running {services} service(s)."
    return "Compute pool is idle."


def _bool_text(value: Any) -> str:
    return "true" if value else "false"


def _size_label(size: str) -> str:
    return {"XSMALL": "X-Small", "SMALL": "Small", "MEDIUM": "Medium", "LARGE": "Large", "XLARGE": "X-Large",
            "XXLARGE": "2X-Large", "XXXLARGE": "3X-Large", "X4LARGE": "4X-Large", "X5LARGE": "5X-Large",
            "X6LARGE": "6X-Large"}[size]
