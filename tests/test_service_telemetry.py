"""A real service's telemetry: lifecycle events, instance and build logs kept in the account's
event table after DROP SERVICE, and metrics sampled from its instances' /metrics."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import duckserve
from duckserve.engine.events import EVENT, LOG, METRIC, event_table
from duckserve.model import CustomModel, ModelContext, inference_api
from duckserve.registry import Registry
from tests.test_service_control import wait_for

pytestmark = pytest.mark.xdist_group("telemetry")

KEY = "DUCKSERVE.PUBLIC.TELE_SVC"
#: the controller (started with the service, inheriting this environment) samples twice a second
METRICS_EVERY = {"DUCKSERVE_METRICS_INTERVAL": "0.5"}


class Doubler(CustomModel):
    @inference_api
    def predict(self, X: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"Y": X["X"] * 2})


def deploy_doubler(conn: Any, service: str, pool: str, repo: str, max_nodes: int) -> Any:
    """A pool, a repository and the Doubler as a one-instance, one-worker service; its model version."""
    conn.execute(f"CREATE COMPUTE POOL {pool} MIN_NODES = 1 MAX_NODES = {max_nodes} INSTANCE_FAMILY = 'CPU_X64_XS'; "
                 f"CREATE IMAGE REPOSITORY {repo}")
    mv = Registry(conn).log_model(Doubler(ModelContext()), model_name="doubler",
                                  sample_input_data=pd.DataFrame({"X": [1.0]}))
    mv.create_service(service_name=service, service_compute_pool=pool, image_repo=repo,
                      num_workers=1, max_instances=1)
    return mv


@pytest.fixture(scope="module")
def account(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    saved = {k: os.environ.get(k) for k in METRICS_EVERY}
    os.environ.update(METRICS_EVERY)
    base = tmp_path_factory.mktemp("telemetry")
    home = base / "home"
    conn = duckserve.connect(home=str(home))
    mv = deploy_doubler(conn, "tele_svc", "tele_pool", "tele_images", max_nodes=2)
    try:
        yield {"home": home, "conn": conn, "mv": mv}
    finally:
        conn.execute("DROP SERVICE IF EXISTS tele_svc")
        conn.close()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


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


def own_sample(home: Path, sampler: Any, service: Any) -> dict[str, list[Any]]:
    """Take one sample with a timestamp of its own and read back only its rows (the controller
    samples the same instances meanwhile: which sample is the newest is not ours to know)."""
    at = time.time()
    assert sampler.sample(service, at=at) > 0
    by_name: dict[str, list[Any]] = {}
    for row in event_table(home).rows(service=KEY, record_type=METRIC, start=at, end=at):
        by_name.setdefault(str(row.name), []).append(row)
    return by_name


def served_rows(sample: dict[str, list[Any]]) -> float:
    """Rows answered with status 200, summed over the instances and methods of one sample."""
    return sum(r.value for r in sample.get("inference.rows", []) if r.record_attributes["status"] == "200")


def test_metrics_sampled_from_the_instances(account: dict[str, Any]) -> None:
    from duckserve.engine.services.monitoring import MetricsSampler

    conn, home = account["conn"], account["home"]
    cur = conn.cursor()
    engine = conn.services
    service = engine.account.catalog.get("SERVICE", "TELE_SVC", "DUCKSERVE", "PUBLIC")
    assert service is not None
    sampler = MetricsSampler(engine)
    before = served_rows(own_sample(home, sampler, service))
    cur.execute("SELECT count(tele_svc!predict(x)) FROM range(500) t(x)")
    assert cur.fetchone() == (500,)
    by_name = own_sample(home, sampler, service)
    assert served_rows(by_name) >= before + 500  # cumulative counters
    assert sum(r.value for r in by_name["inference.requests"] if r.record_attributes["status"] == "200") >= 1
    ready = by_name["service.instances.ready"]
    assert [r.value for r in ready] == [1] and "snow.service.container.instance" not in ready[0].resource_attributes
    assert by_name["inference.latency.p99"][0].value > 0  # over the 500 rows' requests, since the sample before
    assert by_name["inference.requests.in_flight"][0].value == 0
    served = served_rows(by_name)
    cur.execute("SELECT count(tele_svc!predict(x)) FROM range(100) t(x)")
    assert served_rows(own_sample(home, sampler, service)) >= served + 100


def test_the_controller_records_metrics_over_time_unread(account: dict[str, Any]) -> None:
    """Nobody reads the metrics (no SPCS_GET_METRICS, no sampler of this process): the controller's
    samples, every DUCKSERVE_METRICS_INTERVAL s, make the history, and follow what the service did."""
    from duckserve.engine.controller import controller_running

    home, cur = account["home"], account["conn"].cursor()
    wait_for("the controller", lambda: controller_running(home))  # started with the service's instances
    started = time.time()

    def samples() -> dict[float, float]:
        """The controller's samples since the test started: timestamp -> rows served so far."""
        out: dict[float, float] = {}
        for row in event_table(home).rows(service=KEY, record_type=METRIC, start=started):
            out.setdefault(row.timestamp, 0.0)  # a sample of an instance not called yet has no rows counted
            if row.name == "inference.rows" and row.record_attributes["status"] == "200":
                out[row.timestamp] += row.value
        return out

    first = wait_for("a controller sample", lambda: samples())
    cur.execute("SELECT count(tele_svc!predict(x)) FROM range(250) t(x)")
    assert cur.fetchone() == (250,)
    done = time.time()
    baseline = first[min(first)]
    later = wait_for("a sample after the query", lambda: {t: v for t, v in samples().items() if t > done + 0.1})
    assert later[min(later)] >= baseline + 250
    # and on: at the interval the test set (0.5 s; the controller looks once a second)
    wait_for("more samples", lambda: len(samples()) >= 4)


def test_old_metric_samples_are_thinned_and_other_rows_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past DUCKSERVE_METRICS_DETAIL_HOURS, one sample per instance per 5 minutes stays (its first);
    logs and events of that time stay whole, and so do recent samples."""
    from duckserve.engine.events import THIN_BUCKET_SECONDS, MetricSample, Resource

    monkeypatch.setenv("DUCKSERVE_METRICS_DETAIL_HOURS", "1000")  # the writes' own purges thin nothing
    table = event_table(tmp_path / "home")
    service = Resource("DUCKSERVE", "PUBLIC", "THIN")
    now = time.time()
    stamps = [now - 3 * 3600 + 15 * i for i in range(3 * 240)]  # three hours every 15 s
    for at in stamps:
        table.record_metrics(service.at(0), [MetricSample("inference.requests", at, "1", "sum"),
                                             MetricSample("inference.requests.in_flight", 0)], at=at)
        table.record_metrics(service, [MetricSample("service.instances.ready", 1)], at=at)
    table.record_event(service, "SERVICE.ALTERED", "old", at=stamps[1])
    table.record_logs(service.at(0), [(stamps[2], "an old line"), (stamps[3], "another")])
    monkeypatch.setenv("DUCKSERVE_METRICS_DETAIL_HOURS", "1")
    table.purge(now=now)
    kept = table.rows(service=service.key, record_type=METRIC)
    old = now - 3600 - THIN_BUCKET_SECONDS  # entirely thinned buckets end before this
    old_instance = sorted({r.timestamp for r in kept if r.timestamp < old and r.resource_attributes.get(
        "snow.service.container.instance") == "0"})
    buckets = [int(at // THIN_BUCKET_SECONDS) for at in old_instance]
    assert old_instance and len(set(buckets)) == len(buckets)  # one sample per bucket
    assert buckets == list(range(buckets[0], buckets[-1] + 1))  # and one in each
    assert all(at == min(s for s in stamps if s // THIN_BUCKET_SECONDS == b) for at, b in zip(old_instance, buckets))
    # every sample kept is whole (both rows of the instance, and the service's row)
    assert all(len([r for r in kept if r.timestamp == at]) == 3 for at in old_instance)
    recent = {r.timestamp for r in kept if r.timestamp >= now - 3600}
    assert recent == {at for at in stamps if at >= now - 3600}
    assert [r.name for r in table.rows(service=service.key, record_type=EVENT)] == ["SERVICE.ALTERED"]
    assert len(table.rows(service=service.key, record_type=LOG)) == 2
    counts = [r.value for r in kept if r.name == "inference.requests"]
    assert counts == sorted(counts)  # a counter read from the samples kept still only grows


METRICS_COLUMNS = ["TIMESTAMP", "METRIC_NAME", "VALUE", "UNIT", "INSTANCE_ID", "CONTAINER_NAME", "RESOURCE", "RECORD",
                   "RECORD_ATTRIBUTES"]


def test_spcs_get_metrics_in_sql(account: dict[str, Any]) -> None:
    cur = account["conn"].cursor()
    cur.execute("SELECT sum(tele_svc!predict(x)) FROM range(300) t(x)")
    assert cur.fetchone() == (2 * sum(range(300)),)
    cur.execute("SELECT * FROM TABLE(tele_svc!SPCS_GET_METRICS(START_TIME => DATEADD(hour, -1, CURRENT_TIMESTAMP()), "
                "END_TIME => CURRENT_TIMESTAMP()))")
    assert [d[0] for d in cur.description] == METRICS_COLUMNS
    assert cur.fetchall()  # reading a running service's metrics up to now samples it
    # the console's query, as it sends it
    cur.execute('SELECT "TIMESTAMP", METRIC_NAME, "VALUE", INSTANCE_ID, RECORD_ATTRIBUTES FROM '
                "TABLE(tele_svc!SPCS_GET_METRICS(START_TIME => DATEADD(second, -600, CURRENT_TIMESTAMP()))) "
                'ORDER BY "TIMESTAMP"')
    rows = cur.fetchall()
    names = {r[1] for r in rows}
    assert {"inference.requests", "inference.rows", "inference.requests.in_flight", "inference.requests.queued",
            "service.instances.ready", "inference.latency.p50", "inference.latency.p95",
            "inference.latency.p99"} <= names, names
    ok = [r for r in rows if r[1] == "inference.rows" and json.loads(r[4]).get("status") == "200"]
    assert ok and float(ok[-1][2]) >= 300 and ok[-1][3] == 0
    assert isinstance(ok[-1][0], datetime) and abs(ok[-1][0].timestamp() - time.time()) < 120  # UTC, no zone
    # rows can be filtered and joined like a table; a window in the past is empty
    cur.execute("SELECT count(*) FROM TABLE(tele_svc!SPCS_GET_METRICS(START_TIME => '2020-01-01', "
                "END_TIME => '2020-01-02')) WHERE UNIT = 's'")
    assert cur.fetchone() == (0,)
    with pytest.raises(duckserve.ProgrammingError, match="START_TIME => <timestamp>"):
        cur.execute("SELECT * FROM TABLE(tele_svc!SPCS_GET_METRICS(BEGIN => CURRENT_TIMESTAMP()))")
    cur.execute("SELECT EVENT_NAME, SEVERITY FROM TABLE(tele_svc!SPCS_GET_EVENTS()) ORDER BY \"TIMESTAMP\"")
    assert ("SERVICE.CREATED", "INFO") in cur.fetchall()
    cur.execute("SELECT LOG FROM TABLE(tele_svc!SPCS_GET_LOGS()) WHERE LOG LIKE '%POST /predict%'")
    assert cur.fetchall()


def test_troubleshooting_query_reads_logs_after_drop_service(account: dict[str, Any]) -> None:
    """The seed's query, verbatim but for the names, against the event table once the service is gone."""
    conn = account["conn"]
    account["mv"].create_service(service_name="tele_gone", service_compute_pool="tele_pool",
                                 image_repo="tele_images", num_workers=1, max_instances=1)
    cur = conn.cursor()
    cur.execute("SELECT tele_gone!predict(x) FROM (VALUES (21.0)) t(x)")
    assert cur.fetchall() == [(42.0,)]
    cur.execute("ALTER SERVICE tele_gone SUSPEND")
    cur.execute("ALTER SERVICE tele_gone RESUME")
    cur.execute("DROP SERVICE tele_gone")
    with pytest.raises(duckserve.Error):
        cur.execute("CALL SYSTEM$GET_SERVICE_LOGS('tele_gone', 0, 'model-inference')")
    cur.execute("""
        SELECT RESOURCE_ATTRIBUTES, VALUE FROM SNOWFLAKE.TELEMETRY.EVENTS WHERE true
        AND timestamp > dateadd(day, -1, current_timestamp()) -- choose appropriate timestamp range
        AND RESOURCE_ATTRIBUTES:"snow.database.name" = 'DUCKSERVE'
        AND RESOURCE_ATTRIBUTES:"snow.schema.name" = 'PUBLIC'
        AND RESOURCE_ATTRIBUTES:"snow.service.name" = 'TELE_GONE'
        AND RESOURCE_ATTRIBUTES:"snow.service.container.instance" = '0' -- choose all instances or one particular
        AND RESOURCE_ATTRIBUTES:"snow.service.container.name" != 'snowflake-ingress' --skip logs from internal sidecar
        ORDER BY timestamp ASC;""")
    rows = cur.fetchall()
    values = [json.loads(v) for _, v in rows]
    assert any(isinstance(v, str) and "POST /predict rows=1 status=200" in v for v in values), values[-10:]
    assert all(json.loads(r)["snow.service.container.instance"] == "0" for r, _ in rows)
    cur.execute("""SELECT RECORD:name, VALUE:message FROM snowflake.telemetry.events
                   WHERE RECORD_TYPE = 'EVENT' AND RESOURCE_ATTRIBUTES:"snow.service.name" = 'TELE_GONE'
                   ORDER BY "TIMESTAMP" """)
    kinds = [r[0] for r in cur.fetchall()]
    assert kinds[0] == "SERVICE.CREATED" and kinds[-1] == "SERVICE.DROPPED"
    assert {"SERVICE.SUSPENDED", "SERVICE.RESUMED"} <= set(kinds)
    cur.execute("""SELECT count(*) FROM snowflake.telemetry.events e WHERE e.RECORD_TYPE = 'LOG'
                   AND e.RESOURCE_ATTRIBUTES:"snow.service.name" = 'TELE_GONE'
                   AND e.VALUE::VARCHAR LIKE '%loaded in%'""")
    assert cur.fetchone()[0] == 2  # the model loaded twice: before the suspension and after the resume


def test_retention_in_sql(tmp_path: Path) -> None:
    from duckserve.engine.events import Resource

    home = tmp_path / "home"
    conn = duckserve.connect(home=str(home))
    try:
        table = event_table(home)
        svc = Resource("DUCKSERVE", "PUBLIC", "GONE")
        table.record_event(svc, "SERVICE.CREATED", "two days ago", at=time.time() - 2 * 86400)
        table.record_event(svc, "SERVICE.DROPPED", "two hours ago", at=time.time() - 7200)
        cur = conn.cursor()
        cur.execute("SELECT RECORD:name FROM SNOWFLAKE.TELEMETRY.EVENTS ORDER BY timestamp")
        assert cur.fetchall() == [("SERVICE.CREATED",), ("SERVICE.DROPPED",)]
        cur.execute("CALL SYSTEM$SET_EVENT_RETENTION_DAYS(1)")
        assert cur.fetchone() == ("event table retention: 1 days",)
        cur.execute("SELECT RECORD:name FROM SNOWFLAKE.TELEMETRY.EVENTS")
        assert cur.fetchall() == [("SERVICE.DROPPED",)]
        cur.execute("CALL SYSTEM$SET_EVENT_RETENTION_DAYS(0.05)")  # 72 minutes
        cur.execute("SELECT count(*) FROM SNOWFLAKE.TELEMETRY.EVENTS")
        assert cur.fetchone() == (0,)
        conn.execute("CREATE ROLE watcher; GRANT ROLE watcher TO USER admin")
        conn.execute("USE ROLE watcher")
        with pytest.raises(duckserve.ProgrammingError, match="only ACCOUNTADMIN"):
            cur.execute("CALL SYSTEM$SET_EVENT_RETENTION_DAYS(3)")
    finally:
        conn.close()


def test_a_role_without_monitor_is_refused_with_the_grant_that_fixes_it(account: dict[str, Any]) -> None:
    conn = account["conn"]
    conn.execute("CREATE ROLE IF NOT EXISTS outsider; GRANT ROLE outsider TO USER admin")
    try:
        conn.execute("USE ROLE outsider")
        with pytest.raises(duckserve.ProgrammingError, match=r"MONITOR.*TELE_SVC|TELE_SVC.*MONITOR") as refused:
            conn.execute("SELECT * FROM TABLE(tele_svc!SPCS_GET_METRICS())")
        assert "GRANT" in str(refused.value)
        cur = conn.cursor()
        cur.execute("SELECT count(*) FROM SNOWFLAKE.TELEMETRY.EVENTS")  # no service of its own: no rows
        assert cur.fetchone() == (0,)
    finally:
        conn.execute("USE ROLE ACCOUNTADMIN")


def test_a_scaled_away_instance_keeps_its_log(account: dict[str, Any]) -> None:
    conn = account["conn"]
    cur = conn.cursor()
    cur.execute("ALTER SERVICE tele_svc SET MIN_INSTANCES = 2 MAX_INSTANCES = 2")
    try:
        cur.execute("SELECT count(tele_svc!predict(x)) FROM range(50) t(x)")
        assert cur.fetchone() == (50,)
    finally:
        cur.execute("ALTER SERVICE tele_svc SET MIN_INSTANCES = 1 MAX_INSTANCES = 1")
    cur.execute("""SELECT VALUE FROM SNOWFLAKE.TELEMETRY.EVENTS WHERE RECORD_TYPE = 'LOG'
                   AND RESOURCE_ATTRIBUTES:"snow.service.name" = 'TELE_SVC'
                   AND RESOURCE_ATTRIBUTES:"snow.service.container.instance" = '1'""")
    lines = [json.loads(r[0]) for r in cur.fetchall()]
    assert any("loaded in" in line for line in lines) and any(line.endswith("stopped") for line in lines), lines
    cur.execute("""SELECT VALUE:message FROM SNOWFLAKE.TELEMETRY.EVENTS WHERE RECORD:name = 'SERVICE.SCALED'
                   AND RESOURCE_ATTRIBUTES:"snow.service.name" = 'TELE_SVC'""")
    assert len(cur.fetchall()) >= 2


def test_a_running_service_needs_no_controller(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the controller (DUCKSERVE_CONTROLLER=off) a service answers its calls and its metrics
    are there when read: reading samples it."""
    from duckserve.engine.controller import controller_running

    monkeypatch.setenv("DUCKSERVE_CONTROLLER", "off")
    home = tmp_path / "home"
    conn = duckserve.connect(home=str(home))
    try:
        deploy_doubler(conn, "alone", "lone_pool", "lone_images", max_nodes=1)
        cur = conn.cursor()
        cur.execute("SELECT sum(alone!predict(x)) FROM range(40) t(x)")
        assert cur.fetchone() == (2.0 * sum(range(40)),)
        cur.execute("SELECT VALUE FROM TABLE(alone!SPCS_GET_METRICS()) WHERE METRIC_NAME = 'inference.rows' "
                    "AND RECORD_ATTRIBUTES:status = '200'")
        assert [float(v) for (v,) in cur.fetchall()] == [40.0]  # one sample: the reader's own
        assert not controller_running(home)
    finally:
        conn.execute("DROP SERVICE IF EXISTS alone")
        conn.close()
