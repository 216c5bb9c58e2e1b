"""The shell with a deployed service, in a real pseudo-terminal: completion of a service's methods,
the progress line of a service-function query, and Ctrl-C cancelling it while the service stays fine."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest

import duckserve
from duckserve.model import CustomModel, ModelContext, inference_api
from duckserve.registry import Registry
from tests.terminal import Terminal
from tests.test_shell import terminal_env

pytestmark = pytest.mark.xdist_group("services")


class Sleepy(CustomModel):
    """``predict`` answers at once; ``slow_predict`` takes a fifth of a second per batch."""

    @inference_api
    def predict(self, X: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"Y": X["X"] * 2})

    @inference_api
    def slow_predict(self, X: pd.DataFrame) -> pd.DataFrame:
        time.sleep(0.2)
        return pd.DataFrame({"Y": X["X"] + 1})


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("shellsvc")
    home, database = base / "home", base / "db.duckdb"
    conn = duckserve.connect(str(database), home=str(home))
    conn.execute("CREATE COMPUTE POOL shell_pool MIN_NODES = 1 MAX_NODES = 1 INSTANCE_FAMILY = 'CPU_X64_XS'; "
                 "CREATE IMAGE REPOSITORY shell_images")
    mv = Registry(conn).log_model(Sleepy(ModelContext()), model_name="sleepy",
                                  sample_input_data=pd.DataFrame({"X": [1.0]}))
    mv.create_service(service_name="sleepy_svc", service_compute_pool="shell_pool", image_repo="shell_images",
                      max_batch_rows=20, num_workers=2)
    conn.close()  # the shell opens the database file itself
    yield {"home": home, "database": database, "base": base}
    conn = duckserve.connect(home=str(home))
    conn.execute("DROP SERVICE IF EXISTS sleepy_svc")
    conn.close()


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
