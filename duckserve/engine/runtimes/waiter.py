"""The parent of a process-runtime instance: starts it, waits for it, writes how it ended to a file.

Only a process's parent learns its exit status, and the process that starts an instance (a user's
session) often ends first, or is not the one that later looks at it (the home's controller). So
the process runtime starts this small program instead, in a session of its own, and it starts the
instance in a process group of its own inside that session: signals to the instance's group
(``SIGKILL`` from outside, the runtime's stop) never reach this parent, which waits, writes
``{"pid": ..., "exit_code": ...}`` to the exit file (atomically) and exits with the same code.
A signal's death is reported as 128 + its number, as shells and Docker do (SIGKILL: 137).

Run as ``python -I -S waiter.py EXIT_FILE REPORT_FD`` with the instance's command, as JSON, in
``$DUCKSERVE_WAITER_ARGV`` (kept out of this process's command line, so process listings show the
instance's command once); the instance's pid, or ``error <why>``, is written to REPORT_FD. Only the
standard library's ``os``, ``sys`` and ``json``: it adds about 15 ms to a start and holds about 4 MB
of private memory.
"""

from __future__ import annotations

import json
import os
import sys

ARGV_ENV = "DUCKSERVE_WAITER_ARGV"


def exit_code(status: int) -> int:
    """An exit status as a shell reports it: the code, or 128 + the signal that ended the process."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def main() -> int:
    exit_file, report_fd = sys.argv[1], int(sys.argv[2])
    os.set_inheritable(report_fd, False)  # the instance must not hold the report open
    argv = json.loads(os.environ.pop(ARGV_ENV))
    try:
        pid = os.posix_spawnp(argv[0], argv, dict(os.environ), setpgroup=0)
    except OSError as exc:
        os.write(report_fd, f"error {exc}\n".encode())
        return 127
    os.write(report_fd, f"{pid}\n".encode())
    os.close(report_fd)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    code = exit_code(status)
    partial = f"{exit_file}.{os.getpid()}.tmp"
    try:
        with open(partial, "w") as out:
            json.dump({"pid": pid, "exit_code": code}, out)
        os.replace(partial, exit_file)
    except OSError:
        pass  # the instance's directory is gone (a dropped service): nobody will ask
    return code


if __name__ == "__main__":
    sys.exit(main())
