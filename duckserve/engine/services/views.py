"""What SHOW SERVICES, DESCRIBE SERVICE, SHOW SERVICE CONTAINERS, SHOW ENDPOINTS,
SYSTEM$GET_SERVICE_STATUS, SYSTEM$GET_SERVICE_LOGS and SYSTEM$GET_SERVICE_MANIFESTS show of
services and their build jobs, read from the catalog and from the runtimes that run the instances."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from duckserve.engine import access as A
from duckserve.engine.account import Account, Session, display_key
from duckserve.engine.catalog import CatalogObject, parse_timestamp
from duckserve.engine.names import ObjectName, parse_name
from duckserve.engine.results import Rows, like_matcher
from duckserve.engine.runtimes import INSTANCE_PORT, InstanceHandle, runtime_for, tail
from duckserve.engine.services.build_job import JOB, LOG_CONTAINER, BuildJobs
from duckserve.engine.services.manifests import service_manifests, to_yaml
from duckserve.errors import ObjectNotFound, ProgrammingError

SERVICE_COLUMNS = ("name", "status", "database_name", "schema_name", "owner", "compute_pool", "dns_name",
                   "current_instances", "target_instances", "min_ready_instances", "min_instances",
                   "max_instances", "auto_resume", "external_access_integrations", "created_on", "updated_on",
                   "resumed_on", "suspended_on", "auto_suspend_secs", "comment", "owner_role_type", "query_warehouse",
                   "is_job", "is_async_job", "spec_digest", "is_upgrading", "managing_object_domain",
                   "managing_object_name", "model_name", "model_version", "image", "ingress_enabled",
                   "num_workers", "functions", "runtime")
CONTAINER_COLUMNS = ("database_name", "schema_name", "service_name", "instance_id", "container_name", "status",
                     "message", "image_name", "image_digest", "restart_count", "start_time", "pid", "port",
                     "runtime", "container_id", "exit_code", "endpoint", "last_exit_code", "last_restart_time",
                     "model_version", "service_status", "instance_status")
INSTANCE_COLUMNS = ("database_name", "schema_name", "service_name", "instance_id", "status", "spec_digest",
                    "creation_time", "start_time", "restart_count", "last_exit_code", "last_restart_time",
                    "model_version", "message", "endpoint")


class ServiceViews:
    """The read side of ``Services`` (which provides the lookups and the observed status)."""

    account: Account
    builds: BuildJobs

    def _service(self, session: Session, name: str | ObjectName, privileges: tuple[str, ...], action: str
                 ) -> CatalogObject:
        raise NotImplementedError

    def handles(self, service: CatalogObject) -> dict[int, InstanceHandle]:
        raise NotImplementedError

    def observed_status(self, service: CatalogObject) -> str:
        raise NotImplementedError

    def service_dir(self, service: CatalogObject) -> Path:
        raise NotImplementedError

    def ingress_url(self, service: CatalogObject) -> str | None:
        raise NotImplementedError

    def _record(self, service: CatalogObject) -> dict[str, Any]:
        p = service.props
        status = self.observed_status(service)
        handles = self.handles(service).values()
        return {
            "name": service.name, "status": status, "database_name": service.database,
            "schema_name": service.schema, "owner": service.owner, "compute_pool": p["compute_pool"],
            "dns_name": f"{service.name.lower().replace('_', '-')}.{service.schema.lower()}."
                        f"{service.database.lower()}.duckserve.local",
            "current_instances": sum(1 for h in handles if runtime_for(h).status(h) == "READY"),
            "target_instances": 0 if status == "SUSPENDED" else max(
                len(p.get("instances") or []) + int(p.get("pending_instances") or 0), p["min_instances"]),
            "min_ready_instances": p["min_instances"], "min_instances": p["min_instances"],
            "max_instances": p["max_instances"], "auto_resume": "true" if p.get("auto_resume", True) else "false",
            "external_access_integrations": None, "created_on": service.created_on, "updated_on": service.updated_on,
            "resumed_on": parse_timestamp(p.get("resumed_on")), "suspended_on": parse_timestamp(p.get("suspended_on")),
            "auto_suspend_secs": p.get("auto_suspend_secs", 0), "comment": service.comment,
            "owner_role_type": "ROLE", "query_warehouse": None, "is_job": "false", "is_async_job": "false",
            "spec_digest": p.get("env_key") or p.get("image_digest"),
            "is_upgrading": "true" if p.get("update_status") == "UPDATING" else "false",
            "managing_object_domain": "Model", "managing_object_name": p["model"], "model_name": p["model"],
            "model_version": p["version"], "image": p.get("image"),
            "ingress_enabled": "true" if p.get("ingress_enabled") else "false",
            "num_workers": p.get("num_workers"), "functions": ",".join(p.get("functions", [])),
            "runtime": str(p.get("runtime", "process")).upper(),
        }

    @staticmethod
    def _job_record(job: CatalogObject) -> dict[str, Any]:
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
            "runtime": str(p.get("runtime", "process")).upper(),
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
        return Rows.of(SERVICE_COLUMNS, records, types)

    def describe(self, session: Session, name: str | ObjectName) -> Rows:
        service = self._service(session, name, ("MONITOR", "USAGE", "OPERATE"), "describe")
        record = self._record(service)
        p = service.props
        pool = self.account.find(A.COMPUTE_POOL, p["compute_pool"], missing_ok=True)
        record.update({
            "spec": json.dumps({"model": p["model"], "version": p["version"], "image": p.get("image"),
                                "endpoint": {"name": "inference", "port": INSTANCE_PORT},
                                "resources": {"cpu": p.get("cpu_requests"), "memory": p.get("memory_requests"),
                                              "gpu": p.get("gpu_requests")},
                                "num_workers": p.get("num_workers"), "max_batch_rows": p.get("max_batch_rows")}),
            "instance_family": pool.props["instance_family"] if pool else None,
            "gpu_requests": p.get("gpu_requests"), "gpu_note": p.get("gpu_note"),
            "build_job": p.get("build_job"), "max_batch_rows": p.get("max_batch_rows"),
            "target_model_version": p.get("target_model_version"), "update_status": p.get("update_status"),
            "update_message": p.get("update_message"), "pending_instances": int(p.get("pending_instances") or 0),
            "scale_message": p.get("scale_message"), "target_concurrency": p.get("target_concurrency")
                                                                         or p.get("num_workers"),
        })
        columns = (*SERVICE_COLUMNS, "spec", "instance_family", "gpu_requests", "gpu_note", "build_job",
                   "max_batch_rows", "target_model_version", "update_status", "update_message", "pending_instances",
                   "scale_message", "target_concurrency")
        types = {c: "VARCHAR" for c in columns if record.get(c) is None}
        types.update(max_batch_rows="BIGINT", num_workers="BIGINT", pending_instances="BIGINT",
                     target_concurrency="BIGINT", resumed_on="TIMESTAMPTZ", suspended_on="TIMESTAMPTZ")
        return Rows.of(columns, [record], types)

    def _instance_rows(self, service: CatalogObject) -> list[dict[str, Any]]:
        """One record per instance: what its runtime observes and what the catalog knows of its id."""
        out = []
        status = self.observed_status(service)
        for record in service.props.get("instances", []):
            handle = InstanceHandle.from_dict(record["handle"])
            runtime = runtime_for(handle)
            state = runtime.state(handle)
            own = runtime.describe(handle)
            endpoint = runtime.endpoint(handle)
            out.append({
                "database_name": service.database, "schema_name": service.schema, "service_name": service.name,
                "instance_id": str(record["instance_id"]), "container_name": "model-inference",
                "status": state.status, "message": state.text, "image_name": service.props.get("image"),
                "image_digest": own.get("image_digest") or service.props.get("image_digest")
                                or f"sha256:{service.props.get('env_key')}",
                "restart_count": int(record.get("restart_count") or 0),
                "start_time": parse_timestamp(handle.started_at), "pid": own.get("pid"),
                "port": int(endpoint.rsplit(":", 1)[1]) if endpoint else None, "runtime": handle.runtime.upper(),
                "container_id": own.get("container_id"), "exit_code": state.exit_code, "endpoint": endpoint,
                "last_exit_code": record.get("last_exit_code"),
                "last_restart_time": parse_timestamp(record.get("last_restart_time")),
                "model_version": record.get("version") or service.props.get("version"),
                "service_status": status, "instance_status": state.status,
                "spec_digest": record.get("spec_digest") or service.props.get("env_key")
                               or service.props.get("image_digest"),
                "creation_time": parse_timestamp(record.get("creation_time")) or parse_timestamp(handle.started_at),
            })
        return out

    def containers(self, session: Session, name: str | ObjectName) -> Rows:
        service = self._service(session, name, ("MONITOR", "USAGE", "OPERATE"), "monitor")
        return Rows.of(CONTAINER_COLUMNS, self._instance_rows(service),
                       {"start_time": "TIMESTAMPTZ", "port": "BIGINT", "pid": "BIGINT", "container_id": "VARCHAR",
                        "exit_code": "BIGINT", "endpoint": "VARCHAR", "last_exit_code": "BIGINT",
                        "last_restart_time": "TIMESTAMPTZ", "restart_count": "BIGINT", "image_name": "VARCHAR",
                        "model_version": "VARCHAR", "message": "VARCHAR"})

    def instances(self, session: Session, name: str | ObjectName) -> Rows:
        """SHOW SERVICE INSTANCES: Snowflake's columns, then restarts and the version each instance runs."""
        service = self._service(session, name, ("MONITOR", "USAGE", "OPERATE"), "monitor")
        found = self._instance_rows(service)
        next_id = max((int(r["instance_id"]) for r in found), default=-1) + 1
        for k in range(int(service.props.get("pending_instances") or 0)):  # wanted, but the pool has no room
            found.append({"database_name": service.database, "schema_name": service.schema,
                          "service_name": service.name, "instance_id": str(next_id + k), "status": "PENDING",
                          "message": service.props.get("scale_message"), "restart_count": 0,
                          "model_version": service.props.get("version")})
        return Rows.of(INSTANCE_COLUMNS, found,
                       {"start_time": "TIMESTAMPTZ", "creation_time": "TIMESTAMPTZ", "spec_digest": "VARCHAR",
                        "last_exit_code": "BIGINT", "last_restart_time": "TIMESTAMPTZ", "restart_count": "BIGINT",
                        "model_version": "VARCHAR", "message": "VARCHAR", "endpoint": "VARCHAR"})

    def endpoints(self, session: Session, name: str | ObjectName) -> Rows:
        service = self._service(session, name, ("MONITOR", "USAGE", "OPERATE"), "show endpoints of")
        if service.props.get("ingress_enabled"):
            url = self.ingress_url(service) or "Endpoint provisioning in progress"
        else:
            url = None
        record = {"name": "inference", "port": INSTANCE_PORT, "port_range": None, "protocol": "HTTP",
                  "is_public": "true" if service.props.get("ingress_enabled") else "false", "ingress_url": url}
        return Rows.of(("name", "port", "port_range", "protocol", "is_public", "ingress_url"), [record],
                       {"port_range": "VARCHAR", "ingress_url": "VARCHAR"})

    def status_json(self, session: Session, name: str) -> str:
        service = self._service(session, name, ("MONITOR", "USAGE", "OPERATE"), "monitor")
        out = []
        restarts = {int(r["instance_id"]): int(r.get("restart_count") or 0) for r in service.props.get("instances", [])}
        for instance_id, handle in self.handles(service).items():
            state = runtime_for(handle).state(handle)
            out.append({"status": state.status, "message": state.text, "containerName": "model-inference",
                        "instanceId": str(instance_id), "serviceName": service.name,
                        "image": service.props.get("image"), "restartCount": restarts.get(instance_id, 0),
                        "startTime": handle.started_at,
                        **({"exitCode": state.exit_code} if state.exit_code is not None else {})})
        if not out:
            out.append({"status": self.observed_status(service), "message": "no instance running",
                        "containerName": "model-inference", "serviceName": service.name})
        return json.dumps(out)

    def logs(self, session: Session, name: str, instance_id: int, container: str, lines: int | None = None) -> str:
        given = parse_name(name, "service name")   # a service may be qualified (db.schema.svc); a job is not
        job = self.builds.find(given.name) if not given.schema and not given.database else None
        if job is not None:
            if container not in (LOG_CONTAINER, ""):
                raise ProgrammingError(f"job {job.name} has one container, {LOG_CONTAINER}, not {container!r}")
            return tail(job.props["log_path"], lines)
        service = self._service(session, name, ("MONITOR", "OPERATE"), "read the logs of")
        if container not in ("model-inference", "proxy", ""):
            raise ProgrammingError(
                f"service {display_key(service)} has the container model-inference (and proxy with ingress), "
                f"not {container!r}"
            )
        if container == "proxy":
            ingress = service.props.get("ingress")
            handle = InstanceHandle.from_dict(ingress) if ingress else None
            return runtime_for(handle).logs(handle, lines) if handle else tail(
                self.service_dir(service) / "ingress.log", lines)
        handle = self.handles(service).get(int(instance_id))
        if handle is not None:
            return runtime_for(handle).logs(handle, lines)
        directory = self.service_dir(service)
        log = directory / f"instance-{int(instance_id)}.log"  # an instance that is gone leaves its log
        if not log.exists():
            known = sorted(p.stem.split("-")[-1] for p in directory.glob("instance-*.log"))
            raise ObjectNotFound(f"service {display_key(service)} has no instance {instance_id}: instances with logs "
                                 f"are {', '.join(known) or 'none'}")
        return tail(log, lines)

    def manifests(self, session: Session, name: str) -> str:
        """The Kubernetes objects that would run the service on a cluster, as one YAML stream."""
        service = self._service(session, name, ("MONITOR", "USAGE", "OPERATE"), "export")
        pool = self.account.find(A.COMPUTE_POOL, service.props["compute_pool"], missing_ok=True)
        if pool is None:
            raise ObjectNotFound(f"service {display_key(service)}: its compute pool {service.props['compute_pool']} "
                                 "was dropped, so its instance family is unknown")
        return to_yaml(service_manifests(service, pool.props["instance_family"]))
