"""Services: a model version deployed on a compute pool as instances of the inference server.

``create_service`` checks privileges, runs a MODEL_BUILD job that builds (or reuses) the model's
environment, records the image in the repository, then starts ``min_instances`` instances through
a runtime. Instances are process groups that outlive the process that started them; their handles
live in the catalog, so any process sharing the home can call, suspend, resume or drop them.

A service without ingress suspends itself when idle (its servers exit after
``auto_suspend_secs`` without a request) and resumes on its next call when the service and its
pool auto-resume.
"""

from __future__ import annotations

import json
import os
import secrets
import string
import sys
from pathlib import Path
from typing import Any

from duckserve.engine import access as A
from duckserve.engine.account import Account, Session, display_key
from duckserve.engine.catalog import CatalogObject, now, parse_timestamp
from duckserve.engine.client import ServiceClient
from duckserve.engine.environments import EnvironmentBuilder, EnvironmentSpec
from duckserve.engine.families import FAMILIES
from duckserve.engine.models import ModelStore
from duckserve.engine.names import ObjectName, display
from duckserve.engine.results import Rows, like_matcher
from duckserve.engine.runtimes import InstanceHandle, InstanceSpec, ProcessRuntime, tail
from duckserve.errors import (
    BuildError,
    InsufficientPrivileges,
    ObjectNotFound,
    OperationalError,
    ProgrammingError,
)

JOB = "JOB"
INFERENCE_PORT = 5000  # what users see, as in Snowflake; instances listen on ephemeral loopback ports
DEFAULT_AUTO_SUSPEND_SECS = int(os.environ.get("DUCKSERVE_SERVICE_AUTO_SUSPEND_SECS", "1800"))
DEFAULT_MAX_QUEUE = 16
DEFAULT_REQUEST_TIMEOUT = 297.0
READY_TIMEOUT = float(os.environ.get("DUCKSERVE_READY_TIMEOUT", "180"))
CPU_ONLY_HANDLERS = ("sklearn",)


def default_workers(family_name: str, cpu_requests: str | float | None, gpu: bool) -> int:
    """The seed's default: 2 x vCPU + 1 for CPU models (vCPU bounded by this host), 1 for GPU."""
    if gpu:
        return 1
    vcpu = FAMILIES[family_name].vcpu
    if cpu_requests is not None:
        vcpu = max(1, int(float(cpu_requests)))
    host = os.cpu_count() or 1
    return 2 * min(vcpu, host) + 1


def _job_name() -> str:
    alphabet = string.ascii_uppercase + string.digits
    return "MODEL_BUILD_" + "".join(secrets.choice(alphabet) for _ in range(5))


class Services:
    def __init__(self, account: Account) -> None:
        self.account = account
        self.models = ModelStore(account)
        self.builder = EnvironmentBuilder(account.home)
        self.runtime = ProcessRuntime()
        self.root = account.home / "services"
        account.pool_hooks["suspend"].append(self._on_pool_suspend)
        account.pool_hooks["stop_all"].append(self._on_pool_stop_all)
        account.pool_hooks["drop"].append(self._on_pool_drop)

    # -- lookups ----------------------------------------------------------------------------------
    def get(self, session: Session, name: str | ObjectName, missing_ok: bool = False) -> CatalogObject | None:
        """A service by name; a string is read as SQL writes it (``my_svc``, ``db.schema."Svc"``)."""
        return self.account.find(A.SERVICE, _name(name), session, missing_ok=missing_ok)

    def _service(self, session: Session, name: str | ObjectName, privileges: tuple[str, ...], action: str
                 ) -> CatalogObject:
        service = self.get(session, name)
        assert service is not None
        self.account.require(session, service, privileges, f"{action} service {display_key(service)}")
        return service

    def service_dir(self, service: CatalogObject) -> Path:
        return self.root / service.database / service.schema / service.name

    def handles(self, service: CatalogObject) -> list[InstanceHandle]:
        return [InstanceHandle.from_dict(i["handle"]) for i in service.props.get("instances", [])]

    def instance_urls(self, service: CatalogObject) -> list[str]:
        return [h.url for h in self.handles(service) if h.port]

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
                       auto_suspend_secs: int | None = None, max_queue: int | None = None) -> dict[str, Any]:
        account = self.account
        model = self.models.get(session, model_name)
        assert model is not None
        version, _ = self.models.version_record(model, version)
        if model.owner not in account.effective_roles(session.role) and not account.is_admin(session):
            raise ProgrammingError(
                f"only the owner of model {display_key(model)} ({model.owner}) can deploy it: run USE ROLE "
                f"{model.owner}, or GRANT OWNERSHIP ON MODEL {display_key(model)} TO ROLE {session.role}"
            )
        pool = account.find(A.COMPUTE_POOL, _plain(service_compute_pool))
        assert pool is not None
        account.require(session, pool, ("USAGE", "OPERATE"), f"run services on compute pool {pool.name}")
        if image_build_compute_pool:
            build_pool = account.find(A.COMPUTE_POOL, _plain(image_build_compute_pool))
            assert build_pool is not None
            account.require(session, build_pool, ("USAGE", "OPERATE"), f"build images on compute pool {build_pool.name}")
        repo = account.find(A.IMAGE_REPOSITORY, _name(image_repo), session)
        assert repo is not None
        for privilege in ("READ", "WRITE", "SERVICE READ", "SERVICE WRITE"):
            account.require(session, repo, (privilege,), f"push model images to image repository {display_key(repo)}")
        if ingress_enabled:
            account.require_account(session, "BIND SERVICE ENDPOINT", "create a service with a public endpoint")
        max_instances = int(max_instances)
        min_instances = max_instances if min_instances is None else int(min_instances)
        if not 1 <= min_instances <= max_instances:
            raise ProgrammingError(
                f"service {_name(service_name).qualified}: need 1 <= min_instances ({min_instances}) <= "
                f"max_instances ({max_instances})"
            )
        if max_instances > pool.props["max_nodes"]:
            raise ProgrammingError(
                f"service {_name(service_name).qualified}: max_instances {max_instances} exceeds MAX_NODES "
                f"{pool.props['max_nodes']} of compute pool {pool.name}: ALTER COMPUTE POOL {pool.name} SET MAX_NODES = "
                f"{max_instances}"
            )
        manifest = self.models.manifest(model, version)
        family = FAMILIES[pool.props["instance_family"]]
        gpus = _gpu_count(gpu_requests, _name(service_name).qualified)
        wants_gpu = gpus > 0
        if wants_gpu:
            _check_gpu_request(gpus, family.name, family.gpu, pool.name, _name(service_name).qualified)

        full = account.qualify(_name(service_name), session)
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
        job, environment = self._build(session, model, version, manifest, repo, pool, image_build_compute_pool,
                                       force_rebuild, gpus)
        workers = num_workers or default_workers(family.name, cpu_requests, wants_gpu)
        service = CatalogObject(
            A.SERVICE, full.name, owner=session.role, database=full.database, schema=full.schema,
            props={
                "model": model.key, "model_name": model.name, "version": version, "compute_pool": pool.name,
                "image_repository": repo.key, "image": job["image"], "env_key": environment.key,
                "env_python": str(environment.python), "ingress_enabled": bool(ingress_enabled),
                "min_instances": min_instances, "max_instances": max_instances, "cpu_requests": cpu_requests,
                "memory_requests": memory_requests, "gpu_requests": None if gpu_requests is None else str(gpu_requests),
                "num_workers": workers, "max_batch_rows": max_batch_rows, "build_job": job["name"],
                "max_queue": int(max_queue) if max_queue else DEFAULT_MAX_QUEUE,
                "auto_resume": True,
                "auto_suspend_secs": (0 if ingress_enabled else
                                      DEFAULT_AUTO_SUSPEND_SECS if auto_suspend_secs is None else int(auto_suspend_secs)),
                "status": "PENDING", "instances": [], "functions": [m.name for m in manifest.methods],
                "gpu_note": _gpu_note(gpus, max_instances),
            },
        )
        with account.catalog.transaction():
            if account.catalog.get(A.SERVICE, full.name, full.database, full.schema) is not None:
                raise ProgrammingError(f"service {full.qualified} was created by another session meanwhile")
            account.catalog.insert(service)
        try:
            self._start_instances(service, min_instances, wait=block)
        except BaseException:
            self._stop_everything(service)
            account.catalog.delete(service)
            raise
        return self._summary(self._reload(service), built=not environment.reused, job=job["name"])

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
        ingress = service.props.get("ingress")
        if ingress and ingress.get("port"):
            summary["ingress_url"] = f"127.0.0.1:{ingress['port']}"
        if service.props.get("gpu_note"):
            summary["note"] = service.props["gpu_note"]
        return summary

    def _build(self, session: Session, model: CatalogObject, version: str, manifest: Any, repo: CatalogObject,
               pool: CatalogObject, build_pool: str | None, force: bool, gpus: int = 0) -> tuple[dict[str, Any], Any]:
        name = _job_name()
        log_path = self.root / "_jobs" / name / "model-build.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        job = CatalogObject(JOB, name, owner=session.role, database=repo.database, schema=repo.schema,
                            props={"status": "RUNNING", "log_path": str(log_path), "model": model.key,
                                   "version": version, "compute_pool": (build_pool or pool.name).upper(),
                                   "started_on": now().isoformat()})
        self.account.catalog.insert(job)
        if gpus and _runs_on_cpu_only(manifest):
            # the seed: a model of a type known to run on CPU only fails its image build when GPUs are requested
            problem = (f"model {display_key(model)} version {version} is a {manifest.handler} model, which runs on "
                       f"CPU only: the image build fails when GPUs are requested (gpu_requests={gpus}); call "
                       "create_service without gpu_requests")
            with open(log_path, "a", encoding="utf-8") as log:
                log.write(f"{now().isoformat()} === duckserve model-build FAILED: {problem}\n")
            job.props.update(status="FAILED", finished_on=now().isoformat(), error=problem)
            self.account.catalog.update(job)
            raise BuildError(f"{problem} (job {name}: CALL SYSTEM$GET_SERVICE_LOGS('{name}', 0, 'model-build'))")
        # a GPU service on a host with NVIDIA GPUs gets the index's CUDA builds; every other one CPU builds
        spec = EnvironmentSpec.from_manifest(manifest, accelerator="gpu" if gpus and _host_gpus() else "cpu")
        try:
            environment = self.builder.build(spec, log_path, force=force)
        except BuildError as exc:
            job.props.update(status="FAILED", finished_on=now().isoformat(), error=str(exc))
            self.account.catalog.update(job)
            raise BuildError(f"{exc} (job {name}: CALL SYSTEM$GET_SERVICE_LOGS('{name}', 0, 'model-build'))") from exc
        image_name = f"{model.name}_{version}".lower()
        tag = environment.key[:12]
        image_path = f"{repo.props['repository_url']}/{image_name}:{tag}"
        image_key = f"{repo.name}/{image_name}:{tag}"
        if self.account.catalog.get(A.IMAGE, image_key, repo.database, repo.schema) is None:
            self.account.catalog.insert(CatalogObject(
                A.IMAGE, image_key, owner=session.role, database=repo.database, schema=repo.schema,
                props={"repository": repo.name, "image_name": image_name, "tag": tag,
                       "digest": f"sha256:{environment.key}", "image_path": image_path,
                       "env_key": environment.key, "env_path": str(environment.path)}))
        job.props.update(status="DONE", finished_on=now().isoformat(), image=image_path,
                         reused=environment.reused, seconds=round(environment.seconds, 3),
                         warnings=environment.warnings)
        self.account.catalog.update(job)
        return {"name": name, "image": image_path}, environment

    # -- instances --------------------------------------------------------------------------------
    def _start_instances(self, service: CatalogObject, count: int, wait: bool) -> None:
        manifest_dir = self.models.package_path(self._model_of(service), service.props["version"])
        directory = self.service_dir(service)
        directory.mkdir(parents=True, exist_ok=True)
        handles = []
        existing = {i["instance_id"] for i in service.props.get("instances", [])}
        for instance_id in range(count):
            if instance_id in existing:
                continue
            log_path = directory / f"instance-{instance_id}.log"
            port_file = directory / f"instance-{instance_id}.port"
            port_file.unlink(missing_ok=True)
            argv = [service.props["env_python"], "-m", "duckserve.inference_server", "--package", str(manifest_dir),
                    "--host", "127.0.0.1", "--port", "0", "--port-file", str(port_file),
                    "--workers", str(service.props["num_workers"]), "--max-queue", str(service.props.get("max_queue", DEFAULT_MAX_QUEUE)),
                    "--request-timeout", str(DEFAULT_REQUEST_TIMEOUT), "--instance-id", str(instance_id)]
            if service.props.get("auto_suspend_secs"):
                argv += ["--idle-timeout", str(service.props["auto_suspend_secs"])]
            env = {"PYTHONUNBUFFERED": "1", "DUCKSERVE_SERVICE": service.key,
                   # write bytecode (an empty value unsets it for Python): later starts import faster
                   "PYTHONDONTWRITEBYTECODE": "",
                   # a model package holds its files: nothing is fetched from a hub at load time
                   "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                   **_gpu_environment(service.props, instance_id)}
            handle = self.runtime.start(InstanceSpec(name=f"{service.key}/{instance_id}", argv=argv, env=env,
                                                     cwd=directory, log_path=log_path, port_file=port_file))
            handles.append((instance_id, handle))
            service.props.setdefault("instances", []).append({"instance_id": instance_id, "handle": handle.to_dict()})
        service.props["status"] = "RUNNING"
        service.props["resumed_on"] = now().isoformat()
        if service.props.get("ingress_enabled") and not service.props.get("ingress"):
            service.props["ingress"] = self._start_ingress(service).to_dict()
        self.account.catalog.update(service)
        if wait:
            for instance_id, handle in handles:
                ready = self.runtime.wait_ready(handle, timeout=READY_TIMEOUT)
                self._store_handle(service, instance_id, ready)
            self.account.catalog.update(service)

    def _start_ingress(self, service: CatalogObject) -> InstanceHandle:
        directory = self.service_dir(service)
        port_file = directory / "ingress.port"
        port_file.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "duckserve.engine.ingress", "--home", str(self.account.home),
                "--service", display_key(service), "--host", "127.0.0.1", "--port", "0", "--port-file", str(port_file)]
        handle = self.runtime.start(InstanceSpec(name=f"{service.key}/ingress", argv=argv, env={"PYTHONUNBUFFERED": "1"},
                                                 cwd=directory, log_path=directory / "ingress.log",
                                                 port_file=port_file, ready_path="/healthz"))
        return self.runtime.wait_ready(handle, timeout=60)

    def _store_handle(self, service: CatalogObject, instance_id: int, handle: InstanceHandle) -> None:
        for instance in service.props.get("instances", []):
            if instance["instance_id"] == instance_id:
                instance["handle"] = handle.to_dict()

    def _stop_everything(self, service: CatalogObject) -> None:
        for handle in self.handles(service):
            self.runtime.stop(handle)
        service.props["instances"] = []
        ingress = service.props.get("ingress")
        if ingress:
            self.runtime.stop(InstanceHandle.from_dict(ingress))
            service.props["ingress"] = None

    def _reload(self, service: CatalogObject) -> CatalogObject:
        fresh = self.account.catalog.get(A.SERVICE, service.name, service.database, service.schema)
        if fresh is None:
            raise ObjectNotFound(f"service {display_key(service)} was dropped")
        return fresh

    def _model_of(self, service: CatalogObject) -> CatalogObject:
        model = self.account.find(A.MODEL, _name(service.props["model"]))
        assert model is not None
        return model

    def observed_status(self, service: CatalogObject) -> str:
        """RUNNING, PENDING, SUSPENDED (asked or idle), FAILED: from the catalog and the processes."""
        if service.props.get("status") == "SUSPENDED":
            return "SUSPENDED"
        states = [self.runtime.status(h) for h in self.handles(service)]
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
        status = self.observed_status(service)
        if status == "RUNNING":
            return service
        label = display_key(service)
        if service.props.get("status") == "SUSPENDED" and not service.props.get("auto_resume", True):
            raise OperationalError(
                f"service {label} is SUSPENDED and AUTO_RESUME is off: run ALTER SERVICE {label} RESUME"
            )
        pool = self.account.find(A.COMPUTE_POOL, service.props["compute_pool"], missing_ok=True)
        if pool is None:
            raise OperationalError(f"service {label}: its compute pool {service.props['compute_pool']} was dropped")
        self._ensure_pool_running(pool)
        if status == "PENDING" and wait:
            for instance in service.props.get("instances", []):
                handle = InstanceHandle.from_dict(instance["handle"])
                if self.runtime.status(handle) == "PENDING":
                    instance["handle"] = self.runtime.wait_ready(handle, timeout=READY_TIMEOUT).to_dict()
            self.account.catalog.update(service)
            if self.observed_status(service) == "RUNNING":
                return service
        # restart what is not ready (idle-exited or crashed instances)
        keep = []
        for instance in service.props.get("instances", []):
            handle = InstanceHandle.from_dict(instance["handle"])
            if self.runtime.status(handle) in ("READY", "PENDING"):
                keep.append(instance)
            else:
                self.runtime.stop(handle)
        service.props["instances"] = keep
        self._start_instances(service, service.props["min_instances"], wait=wait)
        return self._reload(service)

    # -- ALTER / DROP -----------------------------------------------------------------------------
    def suspend(self, session: Session, name: str | ObjectName, if_exists: bool = False) -> Rows:
        service = self.get(session, name, missing_ok=if_exists)
        if service is None:
            return Rows.status("Statement executed successfully.")
        self.account.require(session, service, ("OPERATE",), f"suspend service {display_key(service)}")
        self._suspend(service)
        return Rows.status("Statement executed successfully.")

    def _suspend(self, service: CatalogObject) -> None:
        for handle in self.handles(service):
            self.runtime.stop(handle)
        service.props["instances"] = []
        service.props["status"] = "SUSPENDED"
        service.props["suspended_on"] = now().isoformat()
        self.account.catalog.update(service)

    def resume(self, session: Session, name: str | ObjectName, if_exists: bool = False) -> Rows:
        service = self.get(session, name, missing_ok=if_exists)
        if service is None:
            return Rows.status("Statement executed successfully.")
        self.account.require(session, service, ("OPERATE",), f"resume service {display_key(service)}")
        service.props["status"] = "RUNNING"
        self.ensure_running(session, service)
        return Rows.status("Statement executed successfully.")

    def alter(self, session: Session, name: str | ObjectName, settings: dict[str, Any], if_exists: bool = False) -> Rows:
        service = self.get(session, name, missing_ok=if_exists)
        if service is None:
            return Rows.status("Statement executed successfully.")
        label = display_key(service)
        self.account.require(session, service, ("OPERATE",), f"alter service {label}")
        props = service.props
        min_i = int(settings.get("MIN_INSTANCES", props["min_instances"]))
        max_i = int(settings.get("MAX_INSTANCES", max(props["max_instances"], min_i)))
        if not 1 <= min_i <= max_i:
            raise ProgrammingError(f"service {label}: need 1 <= MIN_INSTANCES ({min_i}) <= MAX_INSTANCES ({max_i})")
        pool = self.account.find(A.COMPUTE_POOL, props["compute_pool"])
        assert pool is not None
        if max_i > pool.props["max_nodes"]:
            raise ProgrammingError(f"service {label}: MAX_INSTANCES {max_i} exceeds MAX_NODES {pool.props['max_nodes']} "
                                   f"of compute pool {pool.name}")
        for key in ("AUTO_RESUME", "AUTO_SUSPEND_SECS", "COMMENT"):
            if key in settings:
                if key == "COMMENT":
                    service.comment = settings[key]
                else:
                    props[key.lower()] = settings[key]
        props["min_instances"], props["max_instances"] = min_i, max_i
        running = [i for i in props.get("instances", [])]
        if props.get("status") != "SUSPENDED":
            # scale: stop instances above the new count, start the missing ones
            for instance in running:
                if instance["instance_id"] >= min_i:
                    self.runtime.stop(InstanceHandle.from_dict(instance["handle"]))
            props["instances"] = [i for i in running if i["instance_id"] < min_i]
            self.account.catalog.update(service)
            self._start_instances(service, min_i, wait=True)
        else:
            self.account.catalog.update(service)
        return Rows.status("Statement executed successfully.")

    def drop_service(self, session: Session, name: str | ObjectName, if_exists: bool = False) -> Rows:
        service = self.get(session, name, missing_ok=if_exists)
        if service is None:
            return Rows.status("Drop statement executed successfully (service already dropped).")
        self.account.require(session, service, (A.OWNERSHIP,), f"drop service {display_key(service)}")
        self._stop_everything(service)
        self.account.catalog.delete(service)
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
            self._suspend(service)

    def _on_pool_stop_all(self, session: Session, pool: CatalogObject) -> None:
        for service in self._pool_services(pool):
            self._stop_everything(service)
            self.account.catalog.delete(service)

    def _on_pool_drop(self, session: Session, pool: CatalogObject) -> None:
        services = self._pool_services(pool)
        if services:
            raise ProgrammingError(
                f"compute pool {pool.name} still runs service {display_key(services[0])}: run ALTER COMPUTE POOL "
                f"{display(pool.name)} STOP ALL (drops its services) or DROP SERVICE first"
            )

    # -- SHOW / DESCRIBE / status / logs ----------------------------------------------------------
    SERVICE_COLUMNS = ("name", "status", "database_name", "schema_name", "owner", "compute_pool", "dns_name",
                       "current_instances", "target_instances", "min_ready_instances", "min_instances",
                       "max_instances", "auto_resume", "external_access_integrations", "created_on", "updated_on",
                       "resumed_on", "suspended_on", "auto_suspend_secs", "comment", "owner_role_type", "query_warehouse",
                       "is_job", "is_async_job", "spec_digest", "is_upgrading", "managing_object_domain",
                       "managing_object_name", "model_name", "model_version", "image", "ingress_enabled",
                       "num_workers", "functions")

    def _record(self, service: CatalogObject) -> dict[str, Any]:
        p = service.props
        status = self.observed_status(service)
        handles = self.handles(service)
        return {
            "name": service.name, "status": status, "database_name": service.database,
            "schema_name": service.schema, "owner": service.owner, "compute_pool": p["compute_pool"],
            "dns_name": f"{service.name.lower().replace('_', '-')}.{service.schema.lower()}."
                        f"{service.database.lower()}.duckserve.local",
            "current_instances": sum(1 for h in handles if self.runtime.status(h) == "READY"),
            "target_instances": 0 if status == "SUSPENDED" else p["min_instances"],
            "min_ready_instances": p["min_instances"], "min_instances": p["min_instances"],
            "max_instances": p["max_instances"], "auto_resume": "true" if p.get("auto_resume", True) else "false",
            "external_access_integrations": None, "created_on": service.created_on, "updated_on": service.updated_on,
            "resumed_on": parse_timestamp(p.get("resumed_on")), "suspended_on": parse_timestamp(p.get("suspended_on")),
            "auto_suspend_secs": p.get("auto_suspend_secs", 0), "comment": service.comment,
            "owner_role_type": "ROLE", "query_warehouse": None, "is_job": "false", "is_async_job": "false",
            "spec_digest": p.get("env_key"), "is_upgrading": "false", "managing_object_domain": "Model",
            "managing_object_name": p["model"], "model_name": p["model"], "model_version": p["version"],
            "image": p.get("image"), "ingress_enabled": "true" if p.get("ingress_enabled") else "false",
            "num_workers": p.get("num_workers"), "functions": ",".join(p.get("functions", [])),
        }

    def _job_record(self, job: CatalogObject) -> dict[str, Any]:
        p = job.props
        return {
            "name": job.name, "status": p["status"], "database_name": job.database, "schema_name": job.schema,
            "owner": job.owner, "compute_pool": p.get("compute_pool"), "dns_name": None, "current_instances": 0,
            "target_instances": 0, "min_ready_instances": 0, "min_instances": 1, "max_instances": 1,
            "auto_resume": "false", "external_access_integrations": None, "created_on": job.created_on,
            "updated_on": job.updated_on, "resumed_on": None, "suspended_on": None, "auto_suspend_secs": 0,
            "comment": "image build" + (" (image existed, build skipped)" if p.get("reused") else ""),
            "owner_role_type": "ROLE", "query_warehouse": None, "is_job": "true", "is_async_job": "false",
            "spec_digest": None, "is_upgrading": "false", "managing_object_domain": "Model",
            "managing_object_name": p.get("model"), "model_name": p.get("model"), "model_version": p.get("version"),
            "image": p.get("image"), "ingress_enabled": "false", "num_workers": None, "functions": None,
        }

    def show_services(self, session: Session, like: str | None = None, in_pool: str | None = None,
                      jobs: bool = True) -> Rows:
        matcher = like_matcher(like)
        pool_name = None
        if in_pool is not None:
            pool = self.account.find(A.COMPUTE_POOL, in_pool)
            assert pool is not None
            pool_name = pool.name
        records = []
        for service in self.account.catalog.objects(A.SERVICE):
            if (matcher and not matcher.match(service.name)) or (pool_name and service.props["compute_pool"] != pool_name):
                continue
            if self.account.visible(session, service):
                records.append(self._record(service))
        if jobs:
            for job in self.account.catalog.objects(JOB):
                if (matcher and not matcher.match(job.name)) or (pool_name and job.props.get("compute_pool") != pool_name):
                    continue
                if self.account.visible(session, job) or job.owner in self.account.effective_roles(session.role):
                    records.append(self._job_record(job))
        types = {c: "VARCHAR" for c in ("dns_name", "external_access_integrations", "comment", "query_warehouse",
                                         "spec_digest", "image", "functions", "compute_pool")}
        types.update(resumed_on="TIMESTAMPTZ", suspended_on="TIMESTAMPTZ", num_workers="BIGINT")
        return Rows.of(self.SERVICE_COLUMNS, records, types)

    def describe(self, session: Session, name: str | ObjectName) -> Rows:
        service = self._service(session, name, ("MONITOR", "USAGE", "OPERATE"), "describe")
        record = self._record(service)
        p = service.props
        pool = self.account.find(A.COMPUTE_POOL, p["compute_pool"], missing_ok=True)
        record.update({
            "spec": json.dumps({"model": p["model"], "version": p["version"], "image": p.get("image"),
                                "endpoint": {"name": "inference", "port": INFERENCE_PORT},
                                "resources": {"cpu": p.get("cpu_requests"), "memory": p.get("memory_requests"),
                                              "gpu": p.get("gpu_requests")},
                                "num_workers": p.get("num_workers"), "max_batch_rows": p.get("max_batch_rows")}),
            "instance_family": pool.props["instance_family"] if pool else None,
            "gpu_requests": p.get("gpu_requests"), "gpu_note": p.get("gpu_note"),
            "build_job": p.get("build_job"), "max_batch_rows": p.get("max_batch_rows"),
        })
        columns = (*self.SERVICE_COLUMNS, "spec", "instance_family", "gpu_requests", "gpu_note", "build_job",
                   "max_batch_rows")
        types = {c: "VARCHAR" for c in columns if record.get(c) is None}
        types.update(max_batch_rows="BIGINT", num_workers="BIGINT", resumed_on="TIMESTAMPTZ", suspended_on="TIMESTAMPTZ")
        return Rows.of(columns, [record], types)

    def containers(self, session: Session, name: str | ObjectName) -> Rows:
        service = self._service(session, name, ("MONITOR", "USAGE", "OPERATE"), "monitor")
        records = []
        for instance in service.props.get("instances", []):
            handle = InstanceHandle.from_dict(instance["handle"])
            status = self.runtime.status(handle)
            records.append({
                "database_name": service.database, "schema_name": service.schema, "service_name": service.name,
                "instance_id": str(instance["instance_id"]), "container_name": "model-inference",
                "status": status, "message": {"READY": "Running", "PENDING": "Starting",
                                              "STOPPED": "Stopped", "FAILED": "Failed"}.get(status, status),
                "image_name": service.props.get("image"), "image_digest": f"sha256:{service.props.get('env_key')}",
                "restart_count": 0, "start_time": parse_timestamp(handle.started_at), "pid": handle.pid, "port": handle.port,
            })
        columns = ("database_name", "schema_name", "service_name", "instance_id", "container_name", "status",
                   "message", "image_name", "image_digest", "restart_count", "start_time", "pid", "port")
        return Rows.of(columns, records, {"start_time": "TIMESTAMPTZ", "port": "BIGINT", "pid": "BIGINT"})

    def endpoints(self, session: Session, name: str | ObjectName) -> Rows:
        service = self._service(session, name, ("MONITOR", "USAGE", "OPERATE"), "show endpoints of")
        ingress = service.props.get("ingress")
        if service.props.get("ingress_enabled"):
            url = f"127.0.0.1:{ingress['port']}" if ingress and ingress.get("port") else "Endpoint provisioning in progress"
        else:
            url = None
        record = {"name": "inference", "port": INFERENCE_PORT, "port_range": None, "protocol": "HTTP",
                  "is_public": "true" if service.props.get("ingress_enabled") else "false", "ingress_url": url}
        return Rows.of(("name", "port", "port_range", "protocol", "is_public", "ingress_url"), [record],
                       {"port_range": "VARCHAR", "ingress_url": "VARCHAR"})

    def status_json(self, session: Session, name: str) -> str:
        service = self._service(session, name, ("MONITOR", "USAGE", "OPERATE"), "monitor")
        out = []
        for instance in service.props.get("instances", []):
            handle = InstanceHandle.from_dict(instance["handle"])
            status = self.runtime.status(handle)
            out.append({"status": status, "message": status.title(), "containerName": "model-inference",
                        "instanceId": str(instance["instance_id"]), "serviceName": service.name,
                        "image": service.props.get("image"), "restartCount": 0, "startTime": handle.started_at})
        if not out:
            out.append({"status": self.observed_status(service), "message": "no instance running",
                        "containerName": "model-inference", "serviceName": service.name})
        return json.dumps(out)

    def logs(self, session: Session, name: str, instance_id: int, container: str, lines: int | None = None) -> str:
        job = self.account.catalog.objects(JOB, name=_plain(name))
        if job:
            if container not in ("model-build", ""):
                raise ProgrammingError(f"job {job[0].name} has one container, model-build, not {container!r}")
            return tail(job[0].props["log_path"], lines)
        service = self._service(session, name, ("MONITOR", "OPERATE"), "read the logs of")
        if container not in ("model-inference", "proxy", ""):
            raise ProgrammingError(
                f"service {display_key(service)} has the container model-inference (and proxy with ingress), "
                f"not {container!r}"
            )
        directory = self.service_dir(service)
        log = directory / ("ingress.log" if container == "proxy" else f"instance-{int(instance_id)}.log")
        if not log.exists():
            known = sorted(p.stem.split("-")[-1] for p in directory.glob("instance-*.log"))
            raise ObjectNotFound(f"service {display_key(service)} has no instance {instance_id}: instances with logs "
                                 f"are {', '.join(known) or 'none'}")
        return tail(log, lines)


def _gpu_count(gpu_requests: str | int | None, service: str) -> int:
    """The GPUs each instance asks for: ``gpu_requests`` is a count ("1", 2), None or "" for none."""
    if gpu_requests in (None, ""):
        return 0
    try:
        count = int(str(gpu_requests).strip())
    except ValueError:
        raise ProgrammingError(f"service {service}: gpu_requests={gpu_requests!r} is not a number of GPUs: "
                               "pass a whole number such as gpu_requests=\"1\"") from None
    if count < 0:
        raise ProgrammingError(f"service {service}: gpu_requests={gpu_requests!r} cannot be negative")
    return count


def _check_gpu_request(gpus: int, family: str, family_gpus: int, pool: str, service: str) -> None:
    if family_gpus == 0:
        raise ProgrammingError(
            f"service {service}: gpu_requests={gpus}, but compute pool {pool} has instance family {family}, which "
            "has no GPU: run it on a pool of a GPU family (CREATE COMPUTE POOL ... INSTANCE_FAMILY = 'GPU_NV_S') "
            "or call create_service without gpu_requests"
        )
    if gpus > family_gpus:
        raise ProgrammingError(
            f"service {service}: gpu_requests={gpus} exceeds the {family_gpus} GPU(s) of instance family {family} "
            f"(compute pool {pool}): request at most {family_gpus}, or use a pool of a larger GPU family"
        )
    host = _host_gpus()
    if host and gpus > host:
        raise ProgrammingError(
            f"service {service}: gpu_requests={gpus} exceeds the {host} NVIDIA GPU(s) of this host: request at "
            f"most {host}"
        )


def _runs_on_cpu_only(manifest: Any) -> bool:
    from duckserve.inference_server.handlers import get_handler

    if manifest.handler in CPU_ONLY_HANDLERS:
        return True
    try:
        return get_handler(manifest.handler).runs_on_cpu_only(manifest)
    except KeyError:
        return False


def _gpu_note(gpus: int, instances: int) -> str | None:
    """What create_service, DESCRIBE SERVICE and the instance logs say about a GPU request."""
    if not gpus:
        return None
    host = _host_gpus()
    if host == 0:
        return (f"gpu_requests={gpus}, but this host has no NVIDIA GPU: the service runs on the CPU "
                "(for local development; its results are the same, only slower)")
    if gpus * instances > host:
        return (f"{instances} instance(s) x {gpus} GPU(s) exceed the {host} NVIDIA GPU(s) of this host: "
                "instances share GPUs")
    return None


def _gpu_environment(props: dict[str, Any], instance_id: int) -> dict[str, str]:
    """CUDA_VISIBLE_DEVICES and DUCKSERVE_DEVICE of one instance: its share of the host's GPUs
    (instance i gets GPUs i*g .. i*g+g-1, wrapping around), or none."""
    gpus = int(props.get("gpu_requests") or 0)
    host = _host_gpus()
    if not gpus or not host:
        env = {"CUDA_VISIBLE_DEVICES": "", "DUCKSERVE_DEVICE": "cpu"}
        if gpus and props.get("gpu_note"):
            env["DUCKSERVE_GPU_NOTE"] = props["gpu_note"]
        return env
    devices = [str((instance_id * gpus + k) % host) for k in range(gpus)]
    env = {"CUDA_VISIBLE_DEVICES": ",".join(devices), "DUCKSERVE_DEVICE": "cuda"}
    if props.get("gpu_note"):
        env["DUCKSERVE_GPU_NOTE"] = props["gpu_note"]
    return env


def _host_gpus() -> int:
    """NVIDIA GPUs on this host (/dev/nvidia0, ...); $DUCKSERVE_HOST_GPUS overrides the count (for hosts
    whose devices are not visible under /dev, and for tests)."""
    override = os.environ.get("DUCKSERVE_HOST_GPUS", "").strip()
    if override:
        return int(override)
    try:
        return len([d for d in os.listdir("/dev") if d.startswith("nvidia") and d[6:].isdigit()])
    except OSError:
        return 0


def _name(name: str | ObjectName) -> ObjectName:
    from duckserve.engine.names import parse_name

    return name if isinstance(name, ObjectName) else parse_name(name)


def _plain(name: str) -> str:
    from duckserve.engine.names import parse_simple_name

    return parse_simple_name(name)



