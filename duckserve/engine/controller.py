"""The home's controller: one small process per home that keeps running services as the catalog wants them.

Where it runs: a local process beside the catalog (``python -m duckserve.engine.controller --home H``,
its log in ``H/controller/controller.log``), started on demand by whichever process starts a
service's instances (``ensure_controller``), in its own session so it outlives that process. One per
home: it holds ``H/controller/controller.lock`` (an ``fcntl.flock``) while it runs; a second one
started meanwhile finds the lock taken and exits. It exits by itself once no service of the home has
had instances for ``DUCKSERVE_CONTROLLER_IDLE_EXIT`` seconds (default 300), and is started again by
the next service start. ``DUCKSERVE_CONTROLLER=off`` keeps it from being started.

A running service does not need it: instances answer calls whether it runs or not; it only reacts to
change. Every ``DUCKSERVE_CONTROLLER_INTERVAL`` seconds (default 1) it looks at every service that is
not suspended and, under the service's lock (``services.locks``), as any session would:

- replaces instances that exited with an error or were killed (FAILED), and those that stopped
  answering their readiness probe for ``DUCKSERVE_UNREADY_SECS`` (default 30) after having been ready;
  a replacement counts in SHOW SERVICE CONTAINERS' ``restart_count``, ``last_exit_code`` and
  ``last_restart_time``. An instance id that keeps failing is restarted after a growing delay
  (1, 2, 4, ... up to 60 s). Instances that ended cleanly (the idle auto-suspend) are left stopped.
- scales services whose MIN_INSTANCES < MAX_INSTANCES (or MIN_INSTANCES = 0) on the load their
  instances' ``GET /metrics`` report (``services.autoscale``);
- every ``DUCKSERVE_METRICS_INTERVAL`` seconds (default 15; 0 turns it off) records every running
  instance's metrics in the event table (``services.monitoring``), the history SPCS_GET_METRICS
  reads; the event table thins samples older than a few hours (`duckserve.engine.events`).
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import sys
import time
from pathlib import Path

import httpx

from duckserve.engine import access as A
from duckserve.engine.catalog import CatalogObject, parse_timestamp
from duckserve.engine.catalog import now as wall_now
from duckserve.engine.client import http_client
from duckserve.engine.runtimes import Artifact, InstanceHandle, InstanceSpec, get_runtime, runtime_for
from duckserve.engine.services.autoscale import Reading, ServiceLoad, decide
from duckserve.engine.services.instances import DEFAULT_MAX_QUEUE
from duckserve.engine.services.monitoring import MetricsSampler, parse_exposition

logger = logging.getLogger("duckserve.controller")

MAX_RESTART_DELAY = 60.0
DEFAULT_METRICS_INTERVAL = 15.0


def interval() -> float:
    return float(os.environ.get("DUCKSERVE_CONTROLLER_INTERVAL", "1"))


def idle_exit_secs() -> float:
    return float(os.environ.get("DUCKSERVE_CONTROLLER_IDLE_EXIT", "300"))


def unready_secs() -> float:
    return float(os.environ.get("DUCKSERVE_UNREADY_SECS", "30"))


def metrics_interval() -> float:
    """Seconds between the controller's metric samples (0: none; SPCS_GET_METRICS still samples a
    service when it is read)."""
    return float(os.environ.get("DUCKSERVE_METRICS_INTERVAL", str(DEFAULT_METRICS_INTERVAL)))


def controller_dir(home: Path) -> Path:
    return Path(home) / "controller"


def _try_lock(home: Path) -> int | None:
    """The controller lock's file descriptor when this process got the lock, else None."""
    directory = controller_dir(home)
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / "controller.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def controller_running(home: Path) -> bool:
    fd = _try_lock(home)
    if fd is None:
        return True
    os.close(fd)  # closing releases the lock
    return False


def ensure_controller(home: Path) -> None:
    """Start the home's controller unless it runs (or ``DUCKSERVE_CONTROLLER=off``)."""
    if os.environ.get("DUCKSERVE_CONTROLLER", "").lower() in ("off", "0", "false", "no"):
        return
    if controller_running(home):
        return
    directory = controller_dir(home)
    spec = InstanceSpec(name="controller", artifact=Artifact.environment(sys.executable),
                        args=["-m", "duckserve.engine.controller", "--home", str(home)],
                        env={"PYTHONUNBUFFERED": "1"}, log_path=directory / "controller.log",
                        state_dir=directory, ready_path="/")
    get_runtime("process").start(spec)


class Controller:
    """The reconcile loop of one home (see the module's text)."""

    def __init__(self, home: Path) -> None:
        from duckserve.engine.account import Account
        from duckserve.engine.services import Services

        self.home = Path(home)
        self.account = Account(home)
        self.services = Services(self.account)
        #: (service key, instance id, started_at) -> when it was first seen not answering after being ready
        self.unready_since: dict[tuple[str, int, str], float] = {}
        #: service key -> what the autoscaler remembers of it
        self.loads: dict[str, ServiceLoad] = {}
        self.sampler = MetricsSampler(self.services)
        self.sampled_at = 0.0

    def run(self) -> int:
        fd = _try_lock(self.home)
        if fd is None:
            logger.info("another controller runs for %s: exiting", self.home)
            return 0
        logger.info("controller of %s started (pid %d)", self.home, os.getpid())
        last_busy = time.monotonic()
        try:
            while (self.home / "catalog.sqlite").exists():
                if self.step():
                    last_busy = time.monotonic()
                elif time.monotonic() - last_busy > idle_exit_secs():
                    logger.info("no service has instances: exiting")
                    break
                time.sleep(interval())
        finally:
            os.close(fd)
        return 0

    def step(self) -> int:
        """One pass over the services; returns how many have instances."""
        busy = 0
        for service in self.account.catalog.objects(A.SERVICE):
            if service.props.get("status") == "SUSPENDED" or not service.props.get("instances"):
                continue
            try:
                alive = self.heal(service)
                busy += alive
                if alive:
                    self.autoscale(service)
            except Exception:  # one service's trouble must not stop the others being looked after
                logger.exception("service %s: reconcile failed", service.key)
                busy += 1
        every = metrics_interval()
        if busy and every > 0 and time.monotonic() - self.sampled_at >= every:
            self.sampled_at = time.monotonic()
            try:  # SPCS_GET_METRICS' history: every instance's /metrics, recorded in the event table
                self.sampler.sample_all()
            except Exception:
                logger.exception("sampling metrics failed")
        return busy

    def autoscale(self, service: CatalogObject) -> None:
        """Scale the service between its MIN_INSTANCES and MAX_INSTANCES on the load its instances report."""
        p = service.props
        low, high = int(p["min_instances"]), int(p["max_instances"])
        if (low == high and low > 0) or p.get("update_status") == "UPDATING":
            return
        readings: dict[str, Reading] = {}
        workers = int(p.get("num_workers") or 1)
        capacity = workers * (1 + int(p.get("max_queue") or DEFAULT_MAX_QUEUE))
        for record in p.get("instances", []):
            if not record.get("ready"):
                continue
            handle = InstanceHandle.from_dict(record["handle"])
            url = runtime_for(handle).endpoint(handle)
            if not url:
                continue
            try:
                response = http_client().get(url + "/metrics", timeout=2.0)
            except httpx.HTTPError:
                continue
            if response.status_code != 200:
                continue
            parsed = parse_exposition(response.text)
            in_flight = _first(parsed, "duckserve_requests_in_flight")
            requests = sum(v for _, v in parsed.get("duckserve_requests_total", []))
            readings[f"{record['instance_id']}@{handle.started_at}"] = Reading(
                in_flight, _first(parsed, "duckserve_requests_rejected_total"), requests, in_flight >= capacity)
        current = len(p.get("instances", []))
        if not readings:
            return
        target = float(p.get("target_concurrency") or workers)
        load = self.loads.setdefault(service.key, ServiceLoad())
        wanted, reason = decide(load, readings, current, target, low, high, time.monotonic())
        if wanted == current and not p.get("pending_instances"):
            return
        logger.info("service %s: %d -> %d instance(s): %s", service.key, current, wanted, reason)
        started = self.services.scale(service, wanted, reason)
        self._wait_ready(service, started)

    def heal(self, service: CatalogObject) -> bool:
        """Replace what failed or stopped answering; True when some instance is not stopped."""
        now = time.monotonic()
        alive = False
        to_restart: list[int] = []
        unready: list[int] = []
        for record in service.props.get("instances", []):
            instance_id = int(record["instance_id"])
            handle = InstanceHandle.from_dict(record["handle"])
            key = (service.key, instance_id, handle.started_at)
            runtime = runtime_for(handle)
            state = runtime.state(handle)
            alive = alive or state.status != "STOPPED"
            if state.status == "READY":
                self.unready_since.pop(key, None)
                if not record.get("ready"):
                    self.services.mark_ready(service, {instance_id: handle})
                continue
            if runtime.heals_itself:
                continue  # Swarm restarts and reschedules its tasks itself
            if state.status == "FAILED":
                if self._may_restart(record):
                    to_restart.append(instance_id)
            elif state.status == "PENDING" and record.get("ready"):
                since = self.unready_since.setdefault(key, now)
                if now - since >= unready_secs() and self._may_restart(record):
                    unready.append(instance_id)
        if not to_restart and not unready:
            return alive
        logger.info("service %s: replacing instances %s (failed) %s (not ready for %gs)", service.key,
                    to_restart, unready, unready_secs())
        started = self.services.heal(service, unready=unready)
        self._wait_ready(service, started)
        return True

    def _wait_ready(self, service: CatalogObject, started: dict[int, InstanceHandle]) -> None:
        """Wait for the instances just started and mark each ready one so calls go to it."""
        for instance_id, handle in started.items():
            try:
                ready = runtime_for(handle).wait_ready(handle, timeout=float(os.environ.get(
                    "DUCKSERVE_READY_TIMEOUT", "180")))
            except Exception as exc:
                logger.warning("service %s: instance %s did not become ready: %s", service.key, instance_id, exc)
                continue
            self.services.mark_ready(service, {instance_id: ready})

    @staticmethod
    def _may_restart(record: dict[str, object]) -> bool:
        """A growing delay between restarts of one instance id that keeps failing (1, 2, 4, ... 60 s)."""
        last = parse_timestamp(str(record.get("last_restart_time") or "") or None)
        if last is None:
            return True
        count = int(str(record.get("restart_count") or 0))
        delay = min(MAX_RESTART_DELAY, 2.0 ** max(0, count - 1))
        return (wall_now() - last).total_seconds() >= delay


def _first(parsed: dict[str, list[tuple[dict[str, str], float]]], name: str) -> float:
    found = parsed.get(name)
    return found[0][1] if found else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m duckserve.engine.controller",
                                     description="Keep the running services of a home as the catalog wants them.")
    parser.add_argument("--home", required=True, help="the home directory (its catalog.sqlite)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stdout)
    return Controller(Path(args.home)).run()


if __name__ == "__main__":
    sys.exit(main())
