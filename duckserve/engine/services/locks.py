"""One lock per service, shared by every process of a home: lifecycle changes run one at a time.

Resuming, altering, scaling, suspending, dropping, updating and the auto-resume of a call read a
service's record, start or stop instances, and write the record back. Two processes doing that at
once would both start instances; under ``service_lock`` the second one waits, then reads what the
first one wrote. The lock is an ``fcntl.flock`` on a file in the home (``locks/<service>.lock``): the
kernel drops it when its holder dies, so a killed process never leaves a service locked. It is
re-entrant within one thread (a resume inside an alter does not wait for itself); other threads of
the same process wait like other processes do.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from duckserve.errors import OperationalError

#: how long a lifecycle change waits for another one of the same service before it gives up
LOCK_TIMEOUT = 600.0

_held: dict[tuple[str, int], int] = {}  # (lock path, thread id) -> depth
_held_lock = threading.Lock()


def lock_path(home: Path, service_key: str) -> Path:
    return Path(home) / "locks" / f"service-{service_key.replace('/', '_')}.lock"


@contextmanager
def service_lock(home: Path, service_key: str, timeout: float | None = None) -> Iterator[None]:
    """Hold the lock of service ``service_key`` (``DB.SCHEMA.NAME``) of the home ``home``."""
    path = lock_path(home, service_key)
    me = (str(path), threading.get_ident())
    with _held_lock:
        depth = _held.get(me, 0)
        if depth:
            _held[me] = depth + 1
    if depth:
        try:
            yield
        finally:
            with _held_lock:
                _held[me] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        _acquire(fd, service_key, LOCK_TIMEOUT if timeout is None else timeout)
        with _held_lock:
            _held[me] = 1
        try:
            yield
        finally:
            with _held_lock:
                _held.pop(me, None)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _acquire(fd: int, service_key: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise OperationalError(
                    f"service {service_key}: another session has been changing it for more than {timeout:g}s "
                    "(resume, alter, update or drop): wait for it to finish, or check SHOW SERVICES"
                ) from None
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
