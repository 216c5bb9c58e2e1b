"""Drive a program in a real pseudo-terminal: keystrokes in, screen text out.

The child gets the pty as its controlling terminal (so Ctrl-C raises SIGINT in it, as in a real
terminal); what it writes is collected by a reader thread, and ``expect`` waits for a pattern in the
text with the terminal's escape sequences taken out.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import signal
import struct
import termios
import threading
import time
from collections.abc import Sequence

_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][A-Za-z0-9]|\x1b[=>78DEHMNOZc]")

KEYS = {"enter": "\r", "tab": "\t", "ctrl-c": "\x03", "ctrl-d": "\x04", "up": "\x1b[A", "down": "\x1b[B",
        "esc-enter": "\x1b\r", "ctrl-r": "\x12"}


def plain(raw: str) -> str:
    """Terminal output as text: escape sequences removed, carriage returns dropped."""
    return _ESCAPES.sub("", raw).replace("\r", "")


class Terminal:
    def __init__(self, argv: Sequence[str], env: dict[str, str], cwd: str | None = None,
                 rows: int = 40, cols: int = 200) -> None:
        pid, fd = pty.fork()
        if pid == 0:  # the child: become the program
            try:
                if cwd:
                    os.chdir(cwd)
                os.execvpe(argv[0], list(argv), env)
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self._raw: list[str] = []
        self._lock = threading.Lock()
        self.mark = 0
        self.exit_status: int | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        import codecs

        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            with self._lock:
                self._raw.append(decoder.decode(chunk))

    def text(self) -> str:
        with self._lock:
            return plain("".join(self._raw))

    def send(self, *parts: str, delay: float = 0.0) -> None:
        """Type text; names from KEYS (``"enter"``, ``"tab"``, ``"ctrl-c"``) are keys."""
        for part in parts:
            os.write(self.fd, KEYS.get(part, part).encode())
            if delay:
                time.sleep(delay)

    def type(self, text: str, per_key: float = 0.005) -> None:
        for char in text:
            os.write(self.fd, char.encode())
            time.sleep(per_key)

    def expect(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        """Wait for ``pattern`` (a regex) in the output after the last match; move past it."""
        regex = re.compile(pattern, re.S)
        deadline = time.monotonic() + timeout
        while True:
            text = self.text()
            match = regex.search(text, self.mark)
            if match:
                self.mark = match.end()
                return match
            if time.monotonic() > deadline or not self.alive():
                tail = text[self.mark:][-3000:]
                raise AssertionError(f"{pattern!r} did not appear within {timeout} s; the screen since the "
                                     f"last match:\n{tail}")
            time.sleep(0.05)

    def alive(self) -> bool:
        if self.exit_status is not None:
            return False
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        if pid == 0:
            return True
        self.exit_status = os.waitstatus_to_exitcode(status)
        return False

    def wait(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() > deadline:
                raise AssertionError(f"the program did not exit within {timeout} s:\n{self.text()[-3000:]}")
            time.sleep(0.05)
        assert self.exit_status is not None
        return self.exit_status

    def close(self) -> None:
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
            self.wait(10)
        try:
            os.close(self.fd)
        except OSError:
            pass
