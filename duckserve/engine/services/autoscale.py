"""Autoscaling between MIN_INSTANCES and MAX_INSTANCES, on concurrency.

Each instance's ``GET /metrics`` says how many requests it holds now (``duckserve_requests_in_flight``:
running or queued) and how many it refused with 429 (``duckserve_requests_rejected_total``). A
service's target concurrency is what one instance should hold: TARGET_CONCURRENCY, by default its
``num_workers`` (one request per worker; more wait in its queue). The peer seed sizes endpoints the
same way: provisioned concurrency = QPS x model execution time (100 requests/s of 0.2 s each keep 20
requests in flight, so 20 / target instances). The decision:

- wanted = ceil(requests held by all instances / target), between MIN_INSTANCES and MAX_INSTANCES;
- at once one more than now (and at least ``wanted``) as soon as an instance saturates: it refused a
  request with 429 since the previous look, or its queue is full;
- fewer only after every look for the cool-down (``DUCKSERVE_SCALE_DOWN_COOLDOWN``, default 300 s,
  the seed's five minutes) wanted fewer, and then the most any of those looks wanted;
- MIN_INSTANCES = 0: zero once no request came for ``DUCKSERVE_SCALE_TO_ZERO_SECS`` (default 1800);
  the next call, or the next request to the service's ingress, starts an instance and waits for it
  (up to ``DUCKSERVE_READY_TIMEOUT``, 180 s).

The pool's MAX_NODES bounds the instances of all its services together: what does not fit waits as
PENDING (SHOW SERVICE INSTANCES) with a message naming the pool and its limit.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field


def scale_down_cooldown() -> float:
    return float(os.environ.get("DUCKSERVE_SCALE_DOWN_COOLDOWN", "300"))


def scale_to_zero_secs() -> float:
    return float(os.environ.get("DUCKSERVE_SCALE_TO_ZERO_SECS", "1800"))


@dataclass
class Reading:
    """One instance's load at one look."""

    in_flight: float
    rejected_total: float
    requests_total: float
    queue_full: bool = False


@dataclass
class ServiceLoad:
    """What the autoscaler remembers of one service between looks."""

    rejected: dict[str, float] = field(default_factory=dict)  # instance -> 429s counted so far
    requests: dict[str, float] = field(default_factory=dict)  # instance -> requests counted so far
    last_request: float = 0.0  # when a request was last seen (monotonic)
    low_since: float | None = None  # since when every look wanted fewer instances than run
    low_most: int = 0  # the most any of those looks wanted


def decide(load: ServiceLoad, readings: dict[str, Reading], current: int, target: float, min_instances: int,
           max_instances: int, now: float) -> tuple[int, str]:
    """How many instances the service should have, and why (the reason goes into the SCALED event)."""
    held = sum(r.in_flight for r in readings.values())
    saturated = []
    active = False
    for name, reading in readings.items():
        if reading.rejected_total > load.rejected.get(name, reading.rejected_total) or reading.queue_full:
            saturated.append(name)
        if reading.requests_total != load.requests.get(name) or reading.in_flight > 0:
            active = True
        load.rejected[name] = reading.rejected_total
        load.requests[name] = reading.requests_total
    for gone in set(load.rejected) - set(readings):
        load.rejected.pop(gone, None)
        load.requests.pop(gone, None)
    if active or not load.last_request:
        load.last_request = now
    wanted = math.ceil(held / max(target, 1e-9)) if held else 0
    reason = f"{held:g} request(s) in flight for a target of {target:g} per instance"
    if saturated:
        wanted = max(wanted, current + 1)
        reason = f"instance(s) {', '.join(sorted(saturated))} saturated (429 or a full queue); {reason}"
    floor = min_instances
    if min_instances == 0 and now - load.last_request < scale_to_zero_secs():
        floor = 1  # scale to zero only after the idle time
    wanted = max(floor, min(max_instances, wanted))
    if floor == 0 and wanted == 0:
        load.low_since = None
        return 0, f"no request for {scale_to_zero_secs():g}s (MIN_INSTANCES = 0)"
    if wanted >= current:
        load.low_since = None
        return wanted, reason
    # fewer: only once every look of a whole cool-down wanted fewer, and then the most they wanted
    if load.low_since is None:
        load.low_since, load.low_most = now, wanted
    load.low_most = max(load.low_most, wanted)
    if now - load.low_since < scale_down_cooldown():
        return current, reason
    load.low_since = None
    return load.low_most, f"at most {load.low_most} instance(s) wanted for the last {scale_down_cooldown():g}s"
