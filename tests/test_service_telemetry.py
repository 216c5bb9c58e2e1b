"""A real service's telemetry: lifecycle events, instance and build logs kept in the account's
event table after DROP SERVICE, and metrics sampled from its instances' /metrics."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import duckserve
from duckserve.engine.events import EVENT, LOG, METRIC, event_table
from duckserve.model import CustomModel, ModelContext, inference_api
from duckserve.registry import Registry

pytestmark = pytest.mark.xdist_group("telemetry")

KEY = "DUCKSERVE.PUBLIC.TELE_SVC"


class Doubler(CustomModel):
    @inference_api
    def predict(self, X: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"Y": X["X"] * 2})


@pytest.fixture(scope="module")
def account(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("telemetry")
    home = base / "home"
    conn = duckserve.connect(home=str(home))
    conn.execute("CREATE COMPUTE POOL tele_pool MIN_NODES = 1 MAX_NODES = 2 INSTANCE_FAMILY = 'CPU_X64_XS'; "
                 "CREATE IMAGE REPOSITORY tele_images")
    mv = Registry(conn).log_model(Doubler(ModelContext()), model_name="doubler",
                                  sample_input_data=pd.DataFrame({"X": [1.0]}))
    mv.create_service(service_name="tele_svc", service_compute_pool="tele_pool", image_repo="tele_images",
                      num_workers=1, max_instances=1)
    try:
        yield {"home": home, "conn": conn, "mv": mv}
    finally:
        conn.execute("DROP SERVICE IF EXISTS tele_svc")
        conn.close()


def names(home: Path, record_type: str = EVENT) -> list[str | None]:
    return [r.name for r in event_table(home).rows(service=KEY, record_type=record_type)]


def test_lifecycle_events_and_logs_outlive_the_service(account: dict[str, Any], tmp_path: Path) -> None:
    home, conn = account["home"], account["conn"]
    cur = conn.cursor()
    cur.execute("SELECT tele_svc!predict(x) FROM (VALUES (1.0), (2.0)) t(x)")
    assert [r[0] for r in cur.fetchall()] == [2.0, 4.0]
    assert names(home)[:1] == ["SERVICE.CREATED"]
    cur.execute("ALTER SERVICE tele_svc SUSPEND")
    cur.execute("ALTER SERVICE tele_svc RESUME")
    assert names(home)[-2:] == ["SERVICE.SUSPENDED", "SERVICE.RESUMED"]
    # the suspended instance's log was kept when it stopped: its model load and request lines
    logs = [str(r.value) for r in event_table(home).rows(service=KEY, record_type=LOG)]
    assert any("loaded in" in line for line in logs), logs[-20:]
    assert any("POST /predict rows=2 status=200" in line for line in logs), logs[-20:]
    # the build job's log is there too, under its job's name
    jobs = [r for r in event_table(home).rows(record_type=LOG)
            if r.resource_attributes.get("snow.service.container.name") == "model-build"]
    assert jobs and jobs[0].resource_attributes["snow.service.type"] == "Job"


def test_metrics_sampled_from_the_instances(account: dict[str, Any]) -> None:
    from duckserve.engine.services.monitoring import MetricsSampler

    conn = account["conn"]
    cur = conn.cursor()
    cur.execute("SELECT count(tele_svc!predict(x)) FROM range(500) t(x)")
    assert cur.fetchone() == (500,)
    engine = conn.services
    service = engine.account.catalog.get("SERVICE", "TELE_SVC", "DUCKSERVE", "PUBLIC")
    assert service is not None
    sampler = MetricsSampler(engine)
    assert sampler.sample(service) > 0
    rows = event_table(account["home"]).rows(service=KEY, record_type=METRIC)
    by_name: dict[str, list[Any]] = {}
    for row in rows:
        by_name.setdefault(str(row.name), []).append(row)
    requests = [r for r in by_name["inference.requests"] if r.record_attributes["status"] == "200"]
    assert requests[-1].value >= 1
    served = sum(r.value for r in by_name["inference.rows"] if r.record_attributes["status"] == "200")
    assert served >= 500
    assert by_name["service.instances.ready"][-1].value == 1
    assert "snow.service.container.instance" not in by_name["service.instances.ready"][-1].resource_attributes
    assert by_name["inference.latency.p99"][-1].value > 0
    assert by_name["inference.requests.in_flight"][-1].value == 0
    time.sleep(0.01)
    cur.execute("SELECT count(tele_svc!predict(x)) FROM range(100) t(x)")
    assert sampler.sample(service) > 0
    later = [r for r in event_table(account["home"]).rows(service=KEY, record_type=METRIC)
             if r.name == "inference.rows" and r.record_attributes["status"] == "200"]
    assert later[-1].value >= served + 100
