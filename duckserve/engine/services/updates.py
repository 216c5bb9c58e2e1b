"""Zero-downtime model updates: move a running service to another version of its model.

``ALTER SERVICE s SET MODEL_VERSION = 'V2'`` (or ``ModelVersion.update_service("s")`` on version V2)
runs under the service's lock: a MODEL_BUILD job builds (or reuses) what V2 runs; as many new
instances as run now start beside the old ones (in their own directory, so the two generations never
share a port file or log); once every new one answers its readiness probe the service's record names
them, so calls go to them, and the old ones stop (a call still sending to an old instance finds it
gone and re-sends its batch to a new one: no row is lost and no call fails). A version whose build
fails, whose model does not load, or whose instances are not ready in time is stopped: the old
instances keep serving, the update is marked FAILED with the reason, and the statement's error says
how to retry or roll back. DESCRIBE SERVICE shows ``model_version`` (what serves),
``target_model_version``, ``update_status`` (UPDATING, DONE, FAILED) and ``update_message``.
A suspended service switches its record only; its next resume starts the new version.
"""

from __future__ import annotations

import logging
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx

from duckserve.engine import access as A
from duckserve.engine import events as E
from duckserve.engine.account import Account, Session, display_key
from duckserve.engine.catalog import CatalogObject, now
from duckserve.engine.models import ModelStore
from duckserve.engine.names import ObjectName
from duckserve.engine.results import Rows
from duckserve.engine.runtimes import InstanceHandle, Runtime, runtime_for, tail
from duckserve.engine.services.build_job import BuildJobs
from duckserve.engine.services.gpus import gpu_count
from duckserve.engine.services.instances import server_spec
from duckserve.errors import BuildError, Error, OperationalError

#: what a build changes in a service's record (the rest is the service's own settings)
BUILD_PROPS = ("env_key", "env_python", "image_digest", "image_reference", "image_size", "pushed_layers")


def ready_timeout() -> float:
    import os

    return float(os.environ.get("DUCKSERVE_READY_TIMEOUT", "180"))


def wait_serving(handle: InstanceHandle, timeout: float) -> InstanceHandle:
    """Wait until the instance answers its readiness probe; OperationalError as soon as it ended or
    its model failed to load (the server says so in its 503 body), with the end of its log."""
    runtime = runtime_for(handle)
    deadline = time.monotonic() + timeout
    from duckserve.engine.client import http_client

    while True:
        state = runtime.state(handle)
        endpoint = runtime.endpoint(handle)
        if state.status == "READY":
            return runtime.wait_ready(handle, timeout=5.0)
        if state.status in ("FAILED", "STOPPED"):
            raise OperationalError(f"instance {handle.name} ended before it was ready ({state.text}); its log ends:\n"
                                   f"{tail(handle.log_path, 20).rstrip()}")
        if endpoint:
            try:
                body = http_client().get(endpoint + handle.ready_path, timeout=2.0).json()
            except (httpx.HTTPError, ValueError):
                body = {}
            if isinstance(body, dict) and body.get("error"):
                raise OperationalError(f"instance {handle.name}: {body['error']}")
        if time.monotonic() >= deadline:
            raise OperationalError(f"instance {handle.name} was not ready within {timeout:g}s; its log ends:\n"
                                   f"{tail(handle.log_path, 20).rstrip()}")
        time.sleep(0.05)


class ModelUpdates:
    """The update side of ``Services`` (which provides the lookups, the lock and the instance records)."""

    account: Account
    models: ModelStore
    builds: BuildJobs

    def _service(self, session: Session, name: str | ObjectName, privileges: tuple[str, ...], action: str
                 ) -> CatalogObject:
        raise NotImplementedError

    def lock(self, service: CatalogObject) -> AbstractContextManager[None]:
        raise NotImplementedError

    def _reload(self, service: CatalogObject) -> CatalogObject:
        raise NotImplementedError

    def handles(self, service: CatalogObject) -> dict[int, InstanceHandle]:
        raise NotImplementedError

    def runtime_of(self, service: CatalogObject) -> Runtime:
        raise NotImplementedError

    def service_dir(self, service: CatalogObject) -> Path:
        raise NotImplementedError

    def observed_status(self, service: CatalogObject) -> str:
        raise NotImplementedError

    def model_of(self, service: CatalogObject) -> CatalogObject:
        raise NotImplementedError

    def _store_handles(self, service: CatalogObject, handles: dict[int, InstanceHandle], ready: bool = False,
                       restarted: dict[int, int | None] | None = None) -> None:
        raise NotImplementedError

    def update_version(self, session: Session, name: str | ObjectName, version: str) -> Rows:
        """Move the service to ``version`` of its model without a moment without a ready instance."""
        service = self._service(session, name, ("OPERATE",), "update")
        label = display_key(service)
        with self.lock(service):
            service = self._reload(service)
            p = service.props
            model = self.model_of(service)
            target, _ = self.models.version_record(model, version)
            current = p["version"]
            if target == current:
                # nothing to move; after a FAILED update this is the roll back: the old version never stopped
                p.update(update_status=None, target_model_version=None,
                         update_message=f"serving version {current}" if p.get("update_status") else None)
                self.account.catalog.update(service)
                return Rows.status(f"Service {label} runs version {current}.")
            p.update(update_status="UPDATING", target_model_version=target,
                     update_message=f"building version {target} (still serving {current})", update_started=now().isoformat())
            self.account.catalog.update(service)
            try:
                self._roll(session, service, model, target)
            except Error as exc:
                service = self._reload(service)
                service.props.update(
                    update_status="FAILED", target_model_version=target,
                    update_message=(f"version {target} could not take over: {exc}. Version {current} still serves. "
                                    f"Fix the model and retry with ALTER SERVICE {label} SET MODEL_VERSION = "
                                    f"'{target}', or roll back with ALTER SERVICE {label} SET MODEL_VERSION = "
                                    f"'{current}'"))
                self.account.catalog.update(service)
                self._event(service, f"update to version {target} FAILED: {exc}", status="FAILED", version=current,
                            target_version=target)
                raise OperationalError(f"service {label}: update to version {target} FAILED: "
                                       f"{service.props['update_message']}") from exc
        self._event(service, f"version {target} serves (was {current})", status="DONE", version=target,
                    previous_version=current)
        return Rows.status(f"Service {label} now runs version {target}.")

    def _event(self, service: CatalogObject, message: str, **attributes: Any) -> None:
        """A SERVICE.UPDATED event; a failure to record it is logged, never the update's failure."""
        try:
            E.record_event(self.account.home, service, E.SERVICE_UPDATED, message, attributes)
        except Error as exc:
            logging.getLogger("duckserve.engine").warning("could not record the update of %s: %s", service.key, exc)

    def _roll(self, session: Session, service: CatalogObject, model: CatalogObject, target: str) -> None:
        p = service.props
        repo = self.account.catalog.get(A.IMAGE_REPOSITORY, *_parts(p["image_repository"]))
        pool = self.account.find(A.COMPUTE_POOL, p["compute_pool"])
        assert pool is not None
        if repo is None:
            raise OperationalError(f"its image repository {p['image_repository']} was dropped")
        manifest = self.models.manifest(model, target)
        package = self.models.package_path(model, target)
        try:
            build = self.builds.run(session, model, target, manifest, package, repo, pool, None, False,
                                    gpu_count(p.get("gpu_requests"), display_key(service)))
        except BuildError as exc:
            raise OperationalError(f"its build failed: {exc}") from exc
        new = CatalogObject(service.kind, service.name, service.owner, service.database, service.schema,
                            props={**{k: v for k, v in p.items() if k not in BUILD_PROPS}, **build.props,
                                   "version": target, "image": build.image, "build_job": build.job,
                                   "functions": [m.name for m in manifest.methods]})
        generation = int(p.get("generation") or 0) + 1
        directory = self.service_dir(service) / f"generation-{generation}"
        new.props.update(generation=generation, instance_dir=str(directory))
        old = self.handles(service)
        serving = p.get("status") != "SUSPENDED" and self.observed_status(service) != "SUSPENDED"
        started: dict[int, InstanceHandle] = {}
        rolled = serving and bool(old) and self.runtime_of(service).rolls_updates
        if rolled:  # the engine's own rolling update (Swarm: start-first, rollback on failure)
            fresh = self._reload(service)
            fresh.props["update_message"] = f"rolling {len(old)} instance(s) to version {target} (still serving {p['version']})"
            self.account.catalog.update(fresh)
            started = self.runtime_of(service).roll(
                len(old), lambda i: server_spec(self.account.home, new, directory, package, i), old, ready_timeout())
        elif serving and old:
            fresh = self._reload(service)
            fresh.props["update_message"] = f"starting {len(old)} instance(s) of version {target} beside version {p['version']}"
            self.account.catalog.update(fresh)
            runtime = self.runtime_of(service)
            try:
                for instance_id in sorted(old):
                    started[instance_id] = runtime.start(server_spec(self.account.home, new, directory, package,
                                                                     instance_id))
                for instance_id, handle in started.items():
                    started[instance_id] = wait_serving(handle, ready_timeout())
            except BaseException:
                for handle in started.values():
                    runtime_for(handle).stop(handle)
                raise
        # the switch: one write names the new instances; calls move to them as they read it
        fresh = self._reload(service)
        fresh.props = {**new.props, "instances": [], "status": fresh.props.get("status"),
                       "update_status": "DONE", "target_model_version": target,
                       "update_message": f"version {target} serves since {now().isoformat(timespec='seconds')} "
                                         f"(was {p['version']})"}
        if started:
            self._store_handles(fresh, started, ready=True)
        self.account.catalog.update(fresh)
        if rolled:
            return  # the engine stopped the old instances itself
        time.sleep(0.2)  # calls that read the old record just before the switch: let their batches land
        for handle in old.values():
            runtime_for(handle).stop(handle)


def _parts(key: str) -> tuple[str, str, str]:
    """``DB.SCHEMA.NAME`` as (name, database, schema), the catalog's lookup order."""
    database, schema, name = key.split(".", 2)
    return name, database, schema
