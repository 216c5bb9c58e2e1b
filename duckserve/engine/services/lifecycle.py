"""Services: a model version deployed on a compute pool as instances of the inference server.

``create_service`` checks privileges, runs a MODEL_BUILD job (``build_job``) that builds (or reuses)
what the instances run, then has the pool's runtime start ``min_instances`` instances. Instances
outlive the process that started them; their handles live in the catalog, so any process sharing
the home can call, suspend, resume or drop them, through the runtime each handle names.

Every change of one service (create, resume, alter, suspend, drop, and the auto-resume of a call)
runs under the service's lock (``locks``), shared by every process of the home, and starts from the
service's record as the catalog has it then: N processes resuming one service end with exactly its
instances.

A service without ingress suspends itself when idle (its servers exit after
``auto_suspend_secs`` without a request) and resumes on its next call when the service and its
pool auto-resume.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from duckserve.engine import access as A
from duckserve.engine import events as E
from duckserve.engine.account import DEFAULT_RUNTIME, Account, Session, display_key
from duckserve.engine.catalog import CatalogObject, now
from duckserve.engine.client import ServiceClient
from duckserve.engine.families import FAMILIES
from duckserve.engine.models import ModelStore
from duckserve.engine.names import ObjectName, display, parse_name, parse_simple_name
from duckserve.engine.results import Rows
from duckserve.engine.runtimes import InstanceHandle, Resources, Runtime, get_runtime, runtime_for
from duckserve.engine.services import monitoring
from duckserve.engine.services.build_job import BuildJobs
from duckserve.engine.services.gpus import check_gpu_request, default_workers, gpu_count, gpu_note
from duckserve.engine.services.instances import (
    DEFAULT_MAX_QUEUE,
    ingress_spec,
    labels_of,
    same_instance,
    server_spec,
)
from duckserve.engine.services.locks import service_lock
from duckserve.engine.services.updates import ModelUpdates
from duckserve.engine.services.views import ServiceViews
from duckserve.errors import InsufficientPrivileges, ObjectNotFound, OperationalError, ProgrammingError

READY_TIMEOUT = float(os.environ.get("DUCKSERVE_READY_TIMEOUT", "180"))


def default_auto_suspend_secs() -> int:
    return int(os.environ.get("DUCKSERVE_SERVICE_AUTO_SUSPEND_SECS", "1800"))


def as_name(name: str | ObjectName) -> ObjectName:
    return name if isinstance(name, ObjectName) else parse_name(name)


class Services(ModelUpdates, ServiceViews):
    def __init__(self, account: Account) -> None:
        self.account = account
        self.models = ModelStore(account)
        self.root = account.home / "services"
        self.builds = BuildJobs(account, self.root / "_jobs")
        account.pool_hooks["suspend"].append(self._on_pool_suspend)
        account.pool_hooks["stop_all"].append(self._on_pool_stop_all)
        account.pool_hooks["drop"].append(self._on_pool_drop)

    # -- lookups ----------------------------------------------------------------------------------
    def get(self, session: Session, name: str | ObjectName, missing_ok: bool = False) -> CatalogObject | None:
        """A service by name; a string is read as SQL writes it (``my_svc``, ``db.schema."Svc"``)."""
        return self.account.find(A.SERVICE, as_name(name), session, missing_ok=missing_ok)

    def _service(self, session: Session, name: str | ObjectName, privileges: tuple[str, ...], action: str
                 ) -> CatalogObject:
        service = self.get(session, name)
        assert service is not None
        self.account.require(session, service, privileges, f"{action} service {display_key(service)}")
        return service

    def service_dir(self, service: CatalogObject) -> Path:
        return self.root / service.database / service.schema / service.name

    def instance_dir(self, service: CatalogObject) -> Path:
        """Where the instances of the service's current version keep their logs and port files (a
        model update starts the new version's instances in a directory of their own)."""
        given = service.props.get("instance_dir")
        return Path(given) if given else self.service_dir(service)

    def lock(self, service: CatalogObject) -> AbstractContextManager[None]:
        """The service's lifecycle lock (a context manager), held across every process of the home."""
        return service_lock(self.account.home, service.key)

    def runtime_of(self, service: CatalogObject) -> Runtime:
        """The runtime the service's compute pool chose when the service was created."""
        return get_runtime(service.props.get("runtime", DEFAULT_RUNTIME))

    def handles(self, service: CatalogObject) -> dict[int, InstanceHandle]:
        """The service's instances by instance id."""
        return {int(i["instance_id"]): InstanceHandle.from_dict(i["handle"])
                for i in service.props.get("instances", [])}

    def instance_urls(self, service: CatalogObject) -> list[str]:
        """Where calls go: the instances that answered their readiness probe (all of them while none has)."""
        records = service.props.get("instances", [])
        chosen = [r for r in records if r.get("ready")] or records
        urls = (runtime_for(h).endpoint(h) for h in (InstanceHandle.from_dict(r["handle"]) for r in chosen))
        return [url for url in urls if url]

    def model_of(self, service: CatalogObject) -> CatalogObject:
        model = self.account.find(A.MODEL, as_name(service.props["model"]))
        assert model is not None
        return model

    def client(self, session: Session, service: CatalogObject, method: Any) -> ServiceClient:
        """A client for one method of a service the session may call (resuming it when needed):
        what both ``svc!method(...)`` in SQL and ``mv.run(..., service_name=...)`` send rows through."""
        label = display_key(service)
        if not self.account.has_service_role(session, service, "INFERENCE_SERVICE_FUNCTION_USAGE"):
            raise InsufficientPrivileges(
                f"role {session.role} cannot call the functions of service {label}: run GRANT SERVICE ROLE "
                f"{label}!INFERENCE_SERVICE_FUNCTION_USAGE TO ROLE {session.role} (as {service.owner})"
            )
        service = self.ensure_running(session, service)
        catalog = self.account.catalog

        def instances() -> list[str]:
            fresh = catalog.get(A.SERVICE, service.name, service.database, service.schema)
            return self.instance_urls(fresh) if fresh is not None else []

        return ServiceClient(label, method, instances, parallelism=self.account.parallelism(session),
                             batch_rows=service.props.get("max_batch_rows"))

    # -- create -----------------------------------------------------------------------------------
    def create_service(self, session: Session, *, model_name: str | ObjectName, version: str | None,
                       service_name: str | ObjectName, service_compute_pool: str, image_repo: str | ObjectName,
                       ingress_enabled: bool = False, max_instances: int = 1, min_instances: int | None = None,
                       cpu_requests: str | None = None, memory_requests: str | None = None,
                       gpu_requests: str | int | None = None, num_workers: int | None = None,
                       max_batch_rows: int | None = None, image_build_compute_pool: str | None = None,
                       force_rebuild: bool = False, block: bool = True,
                       auto_suspend_secs: int | None = None, max_queue: int | None = None,
                       target_concurrency: int | None = None) -> dict[str, Any]:
        account = self.account
        model = self.models.get(session, model_name)
        assert model is not None
        version, _ = self.models.version_record(model, version)
        if model.owner not in account.effective_roles(session.role) and not account.is_admin(session):
            raise ProgrammingError(
                f"only the owner of model {display_key(model)} ({model.owner}) can deploy it: run USE ROLE "
                f"{model.owner}, or GRANT OWNERSHIP ON MODEL {display_key(model)} TO ROLE {session.role}"
            )
        pool = account.find(A.COMPUTE_POOL, parse_simple_name(service_compute_pool))
        assert pool is not None
        account.require(session, pool, ("USAGE", "OPERATE"), f"run services on compute pool {pool.name}")
        if image_build_compute_pool:
            build_pool = account.find(A.COMPUTE_POOL, parse_simple_name(image_build_compute_pool))
            assert build_pool is not None
            account.require(session, build_pool, ("USAGE", "OPERATE"), f"build images on compute pool {build_pool.name}")
        repo = account.find(A.IMAGE_REPOSITORY, as_name(image_repo), session)
        assert repo is not None
        for privilege in ("READ", "WRITE", "SERVICE READ", "SERVICE WRITE"):
            account.require(session, repo, (privilege,), f"push model images to image repository {display_key(repo)}")
        if ingress_enabled:
            account.require_account(session, "BIND SERVICE ENDPOINT", "create a service with a public endpoint")
        label = as_name(service_name).qualified
        max_instances = int(max_instances)
        min_instances = max_instances if min_instances is None else int(min_instances)
        if not 0 <= min_instances <= max_instances or max_instances < 1:
            raise ProgrammingError(
                f"service {label}: need 0 <= min_instances ({min_instances}) <= max_instances ({max_instances}) "
                "and max_instances >= 1"
            )
        if max_instances > pool.props["max_nodes"]:
            raise ProgrammingError(
                f"service {label}: max_instances {max_instances} exceeds MAX_NODES {pool.props['max_nodes']} of "
                f"compute pool {pool.name}: ALTER COMPUTE POOL {pool.name} SET MAX_NODES = {max_instances}"
            )
        manifest = self.models.manifest(model, version)
        family = FAMILIES[pool.props["instance_family"]]
        gpus = gpu_count(gpu_requests, label)
        if gpus:
            check_gpu_request(gpus, family.name, family.gpu, pool.name, label)
        runtime_name = pool.props.get("runtime", DEFAULT_RUNTIME)
        runtime = get_runtime(runtime_name)
        runtime.check()
        runtime.check_resources(Resources(gpus=gpus), f"service {label}")

        full = account.qualify(as_name(service_name), session)
        existing = account.catalog.get(A.SERVICE, full.name, full.database, full.schema)
        if existing is not None:
            if existing.props.get("model") != model.key or existing.props.get("version") != version:
                raise ProgrammingError(
                    f"service {display_key(existing)} already exists for model {existing.props.get('model')} "
                    f"version {existing.props.get('version')}: DROP SERVICE {display_key(existing)} first or choose "
                    "another service_name"
                )
            if not force_rebuild:
                account.require(session, existing, ("OPERATE",), f"resume service {display_key(existing)}")
                self.ensure_running(session, existing, wait=block)
                return self._summary(self._reload(existing), built=False, job=existing.props.get("build_job"))
            self.drop_service(session, existing.key)

        self._ensure_pool_running(pool)
        build = self.builds.run(session, model, version, manifest, self.models.package_path(model, version), repo,
                                pool, image_build_compute_pool, force_rebuild, gpus)
        workers = num_workers or default_workers(family.name, cpu_requests, gpus > 0)
        service = CatalogObject(
            A.SERVICE, full.name, owner=session.role, database=full.database, schema=full.schema,
            props={
                "model": model.key, "model_name": model.name, "version": version, "compute_pool": pool.name,
                "runtime": runtime_name, "instance_family": family.name, "image_repository": repo.key, "image": build.image, **build.props,
                "ingress_enabled": bool(ingress_enabled),
                "min_instances": min_instances, "max_instances": max_instances, "cpu_requests": cpu_requests,
                "memory_requests": memory_requests, "gpu_requests": None if gpu_requests is None else str(gpu_requests),
                "num_workers": workers, "max_batch_rows": max_batch_rows, "build_job": build.job,
                "max_queue": int(max_queue) if max_queue else DEFAULT_MAX_QUEUE,
                "target_concurrency": int(target_concurrency) if target_concurrency else None,
                "auto_resume": True,
                "auto_suspend_secs": (0 if ingress_enabled else default_auto_suspend_secs()
                                      if auto_suspend_secs is None else int(auto_suspend_secs)),
                "status": "PENDING", "instances": [], "functions": [m.name for m in manifest.methods],
                "gpu_note": gpu_note(gpus, max_instances) if runtime_name == "process" else None,
            },
        )
        with account.catalog.transaction():
            if account.catalog.get(A.SERVICE, full.name, full.database, full.schema) is not None:
                raise ProgrammingError(f"service {full.qualified} was created by another session meanwhile")
            account.catalog.insert(service)
        with self.lock(service):
            try:
                self._start_instances(self._reload(service), max(1, min_instances), wait=block)
            except BaseException:
                service = self._reload(service)
                self._stop_everything(service)
                account.catalog.delete(service)
                raise
        monitoring.record(self, service, E.SERVICE_CREATED, f"service created with {min_instances} instance(s) of "
                          f"model {model.key} version {version}", instances=min_instances, version=version)
        return self._summary(self._reload(service), built=build.built, job=build.job)

    def _summary(self, service: CatalogObject, built: bool, job: str | None) -> dict[str, Any]:
        """What create_service reports: the service, its state, the build job, and any GPU note."""
        record = self._record(service)
        summary = {
            "service_name": display_key(service), "status": record["status"], "model": service.props["model"],
            "version": service.props["version"], "compute_pool": service.props["compute_pool"],
            "build_job": job, "image": service.props.get("image"), "image_built": built,
            "instances": record["current_instances"], "num_workers": service.props.get("num_workers"),
            "functions": service.props.get("functions", []),
        }
        url = self.ingress_url(service)
        if url:
            summary["ingress_url"] = url
        if service.props.get("gpu_note"):
            summary["note"] = service.props["gpu_note"]
        return summary

    # -- instances --------------------------------------------------------------------------------
    def _start_instances(self, service: CatalogObject, count: int, wait: bool, replace: Collection[int] = ()
                         ) -> dict[int, InstanceHandle]:
        """Have ``count`` instances run (replacing ended ones, and those in ``replace``: running but not
        answering), the ingress too when enabled. Call it under the service's lock. An instance that
        failed or was replaced counts as a restart of its instance id. Returns the handles now wanted."""
        package_dir = self.models.package_path(self.model_of(service), service.props["version"])
        directory = self.instance_dir(service)
        directory.mkdir(parents=True, exist_ok=True)
        home = self.account.home
        current = self.handles(service)
        failed: dict[int, int | None] = {}
        for instance_id, handle in current.items():
            if instance_id in replace:
                runtime_for(handle).stop(handle)
                failed[instance_id] = None
            else:
                state = runtime_for(handle).state(handle)
                if state.status == "FAILED":
                    failed[instance_id] = state.exit_code
        if failed:  # the logs of instances about to be replaced, before a new one reuses their file
            monitoring.ingest_instance_logs(self, service, lines=None, handles={i: current[i] for i in failed})
        wanted = self.runtime_of(service).apply(
            count, lambda i: server_spec(home, service, directory, package_dir, i), current)
        removed = {i: h for i, h in current.items() if i not in wanted}
        if removed:  # scaled down: what the stopped instances wrote outlives them
            monitoring.ingest_instance_logs(self, service, lines=None, handles=removed)
        self._store_handles(service, wanted, restarted=failed)
        service.props["status"] = "RUNNING"
        service.props["resumed_on"] = now().isoformat()
        if service.props.get("ingress_enabled") and not service.props.get("ingress"):
            service.props["ingress"] = self._start_ingress(service).to_dict()
        self.account.catalog.update(service)
        if wanted:
            self._watch()
        if wait:
            for instance_id, handle in wanted.items():
                wanted[instance_id] = runtime_for(handle).wait_ready(handle, timeout=READY_TIMEOUT)
            self._store_handles(service, wanted, ready=True)
            self.account.catalog.update(service)
        return wanted

    def _watch(self) -> None:
        """Have the home's controller watch the running services (started when none runs)."""
        from duckserve.engine.controller import ensure_controller

        ensure_controller(self.account.home)

    @staticmethod
    def _store_handles(service: CatalogObject, handles: dict[int, InstanceHandle], ready: bool = False,
                       restarted: dict[int, int | None] | None = None) -> None:
        """Record the instances ``handles`` (by id), keeping what is known of each instance id: its
        creation, restarts (``restarted``: ids whose previous instance failed, with its exit code, or
        None when unknown) and whether it answered its readiness probe (``ready``)."""
        records = {int(r["instance_id"]): r for r in service.props.get("instances", [])}
        stamp = now().isoformat()
        out = []
        for instance_id, handle in sorted(handles.items()):
            record = dict(records.get(instance_id) or {"instance_id": instance_id, "creation_time": stamp,
                                                        "restart_count": 0})
            previous = record.get("handle")
            same = previous is not None and same_instance(previous, handle)
            if not same:
                if previous is not None and instance_id in (restarted or {}):
                    record["restart_count"] = int(record.get("restart_count") or 0) + 1
                    record["last_exit_code"] = (restarted or {})[instance_id]
                    record["last_restart_time"] = stamp
                record["ready"] = False
                record["version"] = service.props["version"]
            record["handle"] = handle.to_dict()
            if ready:
                record["ready"] = True
            out.append(record)
        service.props["instances"] = out

    def mark_ready(self, service: CatalogObject, handles: dict[int, InstanceHandle]) -> None:
        """Record that these instances answer their readiness probe (they receive calls from now on)."""
        with self.lock(service):
            fresh = self.account.catalog.get(A.SERVICE, service.name, service.database, service.schema)
            if fresh is None:
                return
            records = {int(r["instance_id"]): r for r in fresh.props.get("instances", [])}
            for instance_id, handle in handles.items():
                record = records.get(instance_id)
                if record is not None and same_instance(record["handle"], handle):
                    record.update(handle=handle.to_dict(), ready=True)
            self.account.catalog.update(fresh)

    def heal(self, service: CatalogObject, unready: Collection[int] = ()) -> dict[int, InstanceHandle]:
        """Replace the service's instances that failed, and those in ``unready`` (running but no longer
        answering their readiness probe); what the controller calls. Returns the new instances (not
        yet ready)."""
        with self.lock(service):
            fresh = self.account.catalog.get(A.SERVICE, service.name, service.database, service.schema)
            if fresh is None or fresh.props.get("status") == "SUSPENDED" or not fresh.props.get("instances"):
                return {}
            before = self.handles(fresh)
            wanted = self._start_instances(fresh, len(before), wait=False, replace=unready)
        started = {i: h for i, h in wanted.items() if i not in before or not same_instance(before[i].to_dict(), h)}
        records = {int(r["instance_id"]): r for r in fresh.props.get("instances", [])}
        for instance_id in started:
            record = records.get(instance_id, {})
            why = "stopped answering its readiness probe" if instance_id in unready else "failed"
            monitoring.record(self, fresh, E.INSTANCE_RESTARTED,
                              f"instance {instance_id} {why}: replaced (restart {record.get('restart_count', 0)})",
                              instance=instance_id, exit_code=record.get("last_exit_code"),
                              restart_count=record.get("restart_count", 0), reason=why)
        return started

    def scale(self, service: CatalogObject, count: int, reason: str) -> dict[int, InstanceHandle]:
        """Run ``count`` instances (the autoscaler's decision), as many as the pool's MAX_NODES leaves
        room for: the rest wait as PENDING with a message. Returns the new instances (not yet ready)."""
        with self.lock(service):
            fresh = self.account.catalog.get(A.SERVICE, service.name, service.database, service.schema)
            if fresh is None or fresh.props.get("status") == "SUSPENDED" or fresh.props.get("update_status") == "UPDATING":
                return {}
            before = self.handles(fresh)
            if not before:
                return {}  # idle-stopped or scaled to zero: the next call starts what it needs
            p = fresh.props
            pool = self.account.find(A.COMPUTE_POOL, p["compute_pool"], missing_ok=True)
            limit = int(pool.props["max_nodes"]) if pool is not None else count
            others = sum(len(s.props.get("instances") or []) for s in (self._pool_services(pool) if pool else [])
                         if s.key != fresh.key and s.props.get("status") != "SUSPENDED")
            placed = min(count, max(0, limit - others))
            pending = count - placed
            p["pending_instances"] = pending
            if pending:
                p["scale_message"] = (
                    f"{pending} instance(s) PENDING: compute pool {p['compute_pool']} has MAX_NODES = {limit} and "
                    f"its other services run {others} instance(s); raise it with ALTER COMPUTE POOL "
                    f"{p['compute_pool']} SET MAX_NODES = {others + count}")
            elif placed == 0:
                p["scale_message"] = "scaled to zero: the next call starts an instance and waits for it"
            else:
                p["scale_message"] = None
            if placed == len(before):
                self.account.catalog.update(fresh)
                return {}
            wanted = self._start_instances(fresh, placed, wait=False)
            monitoring.record(self, fresh, E.SERVICE_SCALED, f"scaled from {len(before)} to {placed} instance(s): "
                              f"{reason}", reason=reason, pending=pending, **{"from": len(before), "to": placed})
        return {i: h for i, h in wanted.items() if i not in before}

    def _start_ingress(self, service: CatalogObject) -> InstanceHandle:
        spec = ingress_spec(self.account.home, service, self.service_dir(service), display_key(service))
        runtime = get_runtime("process")  # beside the catalog it reads, whatever runs the instances
        return runtime.wait_ready(runtime.start(spec), timeout=60)

    def ingress_url(self, service: CatalogObject) -> str | None:
        """``host:port`` of the service's ingress once it listens, as SHOW ENDPOINTS gives it."""
        ingress = service.props.get("ingress")
        if not ingress:
            return None
        handle = InstanceHandle.from_dict(ingress)
        endpoint = runtime_for(handle).endpoint(handle)
        return endpoint.split("://", 1)[-1] if endpoint else None

    def _stop_instances(self, service: CatalogObject) -> None:
        """Stop every instance; their logs outlive them (read once they stopped: their last lines too)."""
        handles = self.handles(service)
        for handle in handles.values():
            runtime_for(handle).stop(handle)
        monitoring.ingest_instance_logs(self, service, lines=None, handles=handles)
        service.props["instances"] = []

    def _stop_everything(self, service: CatalogObject) -> None:
        self._stop_instances(service)
        self.runtime_of(service).release(labels_of(self.account.home, service, ""))  # e.g. the Swarm service
        ingress = service.props.get("ingress")
        if ingress:
            handle = InstanceHandle.from_dict(ingress)
            runtime_for(handle).stop(handle)
            service.props["ingress"] = None

    def _reload(self, service: CatalogObject) -> CatalogObject:
        fresh = self.account.catalog.get(A.SERVICE, service.name, service.database, service.schema)
        if fresh is None:
            raise ObjectNotFound(f"service {display_key(service)} was dropped")
        return fresh

    def observed_status(self, service: CatalogObject) -> str:
        """RUNNING, PENDING, SUSPENDED (asked or idle), FAILED: from the catalog and the runtime."""
        if service.props.get("status") == "SUSPENDED":
            return "SUSPENDED"
        states = [runtime_for(h).status(h) for h in self.handles(service).values()]
        if not states:
            return "SUSPENDED"
        if all(s == "READY" for s in states):
            return "RUNNING"
        if any(s == "PENDING" for s in states):
            return "PENDING"
        if all(s == "STOPPED" for s in states):
            return "SUSPENDED"  # the servers exited after auto_suspend_secs idle
        return "FAILED"

    def _ensure_pool_running(self, pool: CatalogObject) -> None:
        if pool.props.get("state") != "SUSPENDED":
            return
        if not pool.props.get("auto_resume", True):
            raise OperationalError(
                f"compute pool {pool.name} is SUSPENDED and AUTO_RESUME is off: run ALTER COMPUTE POOL "
                f"{display(pool.name)} RESUME"
            )
        pool.props["state"] = "IDLE"
        pool.props["resumed_on"] = now().isoformat()
        self.account.catalog.update(pool)

    def ensure_running(self, session: Session | None, service: CatalogObject, wait: bool = True) -> CatalogObject:
        """Make every instance ready, resuming a suspended service when it and its pool auto-resume."""
        if self.observed_status(service) == "RUNNING":
            return service
        with self.lock(service):
            service = self._reload(service)  # as the last change left it (another process may have resumed it)
            if self.observed_status(service) == "RUNNING":
                return service
            return self._resume_locked(service, wait)

    def _resume_count(self, service: CatalogObject) -> int:
        """How many instances a resume has run: MIN_INSTANCES (one at least: a call needs one), or as
        many as were scaled up to when only some of them ended (a crash, not the idle stop)."""
        floor = max(1, int(service.props["min_instances"]))
        handles = self.handles(service)
        if service.props.get("status") == "SUSPENDED" or not handles:
            return floor
        if all(runtime_for(h).status(h) == "STOPPED" for h in handles.values()):
            return floor
        return max(floor, len(handles))

    def _resume_locked(self, service: CatalogObject, wait: bool, explicit: bool = False) -> CatalogObject:
        """Start what is missing (under the service's lock); ``explicit``: ALTER SERVICE ... RESUME."""
        label = display_key(service)
        if not explicit and service.props.get("status") == "SUSPENDED" and not service.props.get("auto_resume", True):
            raise OperationalError(
                f"service {label} is SUSPENDED and AUTO_RESUME is off: run ALTER SERVICE {label} RESUME"
            )
        pool = self.account.find(A.COMPUTE_POOL, service.props["compute_pool"], missing_ok=True)
        if pool is None:
            raise OperationalError(f"service {label}: its compute pool {service.props['compute_pool']} was dropped")
        self._ensure_pool_running(pool)
        # restart what is not ready (idle-exited or crashed instances); wait for those starting
        status = self.observed_status(service)
        monitoring.ingest_instance_logs(self, service, lines=None)
        self._start_instances(service, self._resume_count(service), wait=wait)
        monitoring.record(self, service, E.SERVICE_RESUMED, f"service resumed (it was {status}) with "
                          f"{service.props['min_instances']} instance(s)", previous_status=status)
        return self._reload(service)

    # -- ALTER / DROP -----------------------------------------------------------------------------
    def suspend(self, session: Session, name: str | ObjectName, if_exists: bool = False) -> Rows:
        service = self.get(session, name, missing_ok=if_exists)
        if service is None:
            return Rows.status("Statement executed successfully.")
        self.account.require(session, service, ("OPERATE",), f"suspend service {display_key(service)}")
        with self.lock(service):
            self._suspend(self._reload(service))
        return Rows.status("Statement executed successfully.")

    def _suspend(self, service: CatalogObject) -> None:
        self._stop_instances(service)
        service.props["status"] = "SUSPENDED"
        service.props["suspended_on"] = now().isoformat()
        self.account.catalog.update(service)
        monitoring.record(self, service, E.SERVICE_SUSPENDED, "service suspended")

    def resume(self, session: Session, name: str | ObjectName, if_exists: bool = False) -> Rows:
        service = self.get(session, name, missing_ok=if_exists)
        if service is None:
            return Rows.status("Statement executed successfully.")
        self.account.require(session, service, ("OPERATE",), f"resume service {display_key(service)}")
        with self.lock(service):
            service = self._reload(service)
            if service.props.get("status") == "SUSPENDED" or self.observed_status(service) != "RUNNING":
                self._resume_locked(service, wait=True, explicit=True)
        return Rows.status("Statement executed successfully.")

    def alter(self, session: Session, name: str | ObjectName, settings: dict[str, Any], if_exists: bool = False) -> Rows:
        service = self.get(session, name, missing_ok=if_exists)
        if service is None:
            return Rows.status("Statement executed successfully.")
        label = display_key(service)
        self.account.require(session, service, ("OPERATE",), f"alter service {label}")
        settings = dict(settings)
        version = settings.pop("MODEL_VERSION", None)
        with self.lock(service):
            result = self._alter_locked(self._reload(service), settings) if settings else None
            if version is not None:
                return self.update_version(session, service.key, str(version))
        assert result is not None
        return result

    def _alter_locked(self, service: CatalogObject, settings: dict[str, Any]) -> Rows:
        label = display_key(service)
        props = service.props
        min_i = int(settings.get("MIN_INSTANCES", props["min_instances"]))
        max_i = int(settings.get("MAX_INSTANCES", max(props["max_instances"], min_i)))
        if not 0 <= min_i <= max_i or max_i < 1:
            raise ProgrammingError(f"service {label}: need 0 <= MIN_INSTANCES ({min_i}) <= MAX_INSTANCES ({max_i}) "
                                   "and MAX_INSTANCES >= 1")
        pool = self.account.find(A.COMPUTE_POOL, props["compute_pool"])
        assert pool is not None
        if max_i > pool.props["max_nodes"]:
            raise ProgrammingError(f"service {label}: MAX_INSTANCES {max_i} exceeds MAX_NODES {pool.props['max_nodes']} "
                                   f"of compute pool {pool.name}")
        for key in ("AUTO_RESUME", "AUTO_SUSPEND_SECS", "COMMENT", "TARGET_CONCURRENCY"):
            if key in settings:
                if key == "COMMENT":
                    service.comment = settings[key]
                else:
                    props[key.lower()] = settings[key]
        before = (props["min_instances"], props["max_instances"])
        props["min_instances"], props["max_instances"] = min_i, max_i
        if props.get("status") != "SUSPENDED":
            # into the new bounds: stop those above MAX_INSTANCES, start up to MIN_INSTANCES (one at least)
            count = min(max_i, max(min_i, 1, len(self.handles(service))))
            self._start_instances(service, count, wait=True)
        else:
            self.account.catalog.update(service)
        monitoring.record(self, service, E.SERVICE_ALTERED, f"service altered: {', '.join(sorted(settings))}",
                          **{k.lower(): v for k, v in settings.items()})
        if before != (min_i, max_i):
            monitoring.record(self, service, E.SERVICE_SCALED, f"instances {before[0]}..{before[1]} -> {min_i}..{max_i}",
                              reason="ALTER SERVICE", min_instances=min_i, max_instances=max_i)
        return Rows.status("Statement executed successfully.")

    def drop_service(self, session: Session, name: str | ObjectName, if_exists: bool = False) -> Rows:
        service = self.get(session, name, missing_ok=if_exists)
        if service is None:
            return Rows.status("Drop statement executed successfully (service already dropped).")
        self.account.require(session, service, (A.OWNERSHIP,), f"drop service {display_key(service)}")
        with self.lock(service):
            fresh = self.account.catalog.get(A.SERVICE, service.name, service.database, service.schema)
            if fresh is None:
                return Rows.status("Drop statement executed successfully (service already dropped).")
            self._stop_everything(fresh)
            self.account.catalog.delete(fresh)
            monitoring.record(self, fresh, E.SERVICE_DROPPED, "service dropped")
        for service_role in A.SERVICE_ROLES:
            for grant in self.account.catalog.grants(object_kind=A.SERVICE_ROLE,
                                                     object_name=f"{service.key}!{service_role}"):
                self.account.catalog.remove_grant(grant.privilege, grant.object_kind, grant.object_name,
                                                  grant.grantee_kind, grant.grantee)
        return Rows.status(f"{display_key(service)} successfully dropped.")

    # -- pool hooks -------------------------------------------------------------------------------
    def _pool_services(self, pool: CatalogObject) -> list[CatalogObject]:
        return [s for s in self.account.catalog.objects(A.SERVICE) if s.props.get("compute_pool") == pool.name]

    def _on_pool_suspend(self, session: Session, pool: CatalogObject) -> None:
        for service in self._pool_services(pool):
            with self.lock(service):
                self._suspend(self._reload(service))

    def _on_pool_stop_all(self, session: Session, pool: CatalogObject) -> None:
        for service in self._pool_services(pool):
            with self.lock(service):
                service = self._reload(service)
                self._stop_everything(service)
                self.account.catalog.delete(service)
                monitoring.record(self, service, E.SERVICE_DROPPED,
                                  f"service dropped by ALTER COMPUTE POOL {pool.name} STOP ALL")

    def _on_pool_drop(self, session: Session, pool: CatalogObject) -> None:
        services = self._pool_services(pool)
        if services:
            raise ProgrammingError(
                f"compute pool {pool.name} still runs service {display_key(services[0])}: run ALTER COMPUTE POOL "
                f"{display(pool.name)} STOP ALL (drops its services) or DROP SERVICE first"
            )
