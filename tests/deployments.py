"""One small service for the tests that need one, deployed once per test process.

The modules that use it mark themselves ``xdist_group("services")``, so under ``pytest -n`` they
run in one worker and share the deployment; it is dropped when the process exits.
"""

from __future__ import annotations

import atexit
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import duckserve
from duckserve.model import CustomModel, ModelContext, inference_api
from duckserve.registry import Registry


class Sleepy(CustomModel):
    """``predict`` doubles at once; ``slow_predict`` adds one and takes a fifth of a second per batch."""

    @inference_api
    def predict(self, X: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"Y": X["X"] * 2})

    @inference_api
    def slow_predict(self, X: pd.DataFrame) -> pd.DataFrame:
        time.sleep(0.2)
        return pd.DataFrame({"Y": X["X"] + 1})


_deployed: dict[str, Any] = {}


def sleepy_service(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``{"home": Path, "base": Path}`` of an account whose service SLEEPY_SVC is running
    (batches of 20 rows, so a long query is easy to make). It lives under the session's temporary
    directory, so the session's end stops it even when this process exits without running atexit."""
    if _deployed:
        return _deployed
    base = tmp_path_factory.mktemp("sleepy")
    home = base / "home"
    conn = duckserve.connect(home=str(home))
    try:
        conn.execute("CREATE COMPUTE POOL sleepy_pool MIN_NODES = 1 MAX_NODES = 1 INSTANCE_FAMILY = 'CPU_X64_XS'; "
                     "CREATE IMAGE REPOSITORY sleepy_images")
        mv = Registry(conn).log_model(Sleepy(ModelContext()), model_name="sleepy",
                                      sample_input_data=pd.DataFrame({"X": [1.0]}))
        mv.create_service(service_name="sleepy_svc", service_compute_pool="sleepy_pool",
                          image_repo="sleepy_images", max_batch_rows=20, num_workers=2)
    finally:
        conn.close()
    _deployed.update(home=home, base=base)
    atexit.register(_drop, home)
    return _deployed


def _drop(home: Path) -> None:
    conn = duckserve.connect(home=str(home))
    try:
        conn.execute("DROP SERVICE IF EXISTS sleepy_svc")
    finally:
        conn.close()
