"""The shell with a deployed service, in a real pseudo-terminal: completion of a service's methods,
the progress line of a service-function query, and Ctrl-C cancelling it while the service stays fine."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.deployments import sleepy_service
from tests.terminal import Terminal
from tests.test_shell import terminal_env

pytestmark = pytest.mark.xdist_group("services")


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    service = sleepy_service(tmp_path_factory)
    return {"home": service["home"], "database": tmp_path_factory.mktemp("shell") / "db.duckdb",
            "base": service["base"]}


@pytest.fixture
def term(deployed: dict[str, Any]) -> Iterator[Terminal]:
    terminal = Terminal([sys.executable, "-m", "duckserve", "shell", str(deployed["database"]), "--home",
                         str(deployed["home"])], terminal_env(deployed["base"]))
    terminal.expect(r"PUBLIC>", timeout=60)
    yield terminal
    terminal.close()


def test_service_methods_complete_after_the_bang(term: Terminal) -> None:
    term.type("SELECT sleepy_svc!")
    term.send("tab")  # two methods: the menu lists both
    term.expect(r"predict\s+SLEEPY_SVC method.*?slow_predict\s+SLEEPY_SVC method|"
                r"predict\s+sleepy_svc method.*?slow_predict\s+sleepy_svc method")
    term.send("ctrl-c")
    term.type("SELECT sleepy_svc!sl")
    term.send("tab")  # one method starts so: it is completed in place
    term.type("(20.0) AS y;")
    term.send("enter")
    term.expect(r"\| y    \|.*?\| 21\.0 \|.*?1 row")
    term.send("ctrl-d")
    assert term.wait() == 0


def test_progress_and_ctrl_c_cancel_a_service_query(term: Terminal) -> None:
    # 20,000 rows in batches of 20 at 0.2 s each, two in flight: it would take over a minute and a half
    term.type("SELECT sum(sleepy_svc!slow_predict(range::DOUBLE)) AS s FROM range(20000);")
    term.send("enter")
    progress = term.expect(r"SLEEPY_SVC!SLOW_PREDICT: rows sent ([1-9][\d,]*) · answered ([\d,]+) · in flight (\d) · "
                           r"batches ([1-9][\d,]*) · retries (\d+)", timeout=60)
    assert int(progress.group(3)) <= 2  # XSMALL warehouse: two batches in flight at most
    cancelled_at = time.monotonic()
    term.send("ctrl-c")
    term.expect(r"statement cancelled after [\d.]+ s \(Ctrl-C\)", timeout=30)
    assert time.monotonic() - cancelled_at < 10
    term.expect(r"PUBLIC>")
    # the shell and the service carry on
    term.type("SELECT sleepy_svc!predict(21.0) AS doubled, sleepy_svc!slow_predict(1.0) AS plus_one;")
    term.send("enter")
    term.expect(r"\| doubled \| plus_one \|.*?\|    42\.0 \|      2\.0 \|.*?1 row", timeout=60)
    term.type("!queries")
    term.send("enter")
    term.expect(r"CANCELLED.*?SUCCESS")
    term.send("ctrl-d")
    assert term.wait() == 0
