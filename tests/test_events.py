"""The account's event table (duckserve.engine.events): concurrent writers in several processes,
retention, log ingestion that records each line once, and the events a service's life leaves."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from duckserve.engine.events import (
    EVENT,
    LOG,
    METRIC,
    EventTable,
    MetricSample,
    Resource,
    event_table,
    record_event,
)

SVC = Resource("DB", "SCH", "SVC", compute_pool="POOL")


def test_rows_carry_snowflakes_resource_attributes_and_records(tmp_path: Path) -> None:
    table = EventTable(tmp_path)
    table.record_event(SVC, "SERVICE.CREATED", "created", {"instances": 2})
    table.record_metrics(SVC.at(0), [MetricSample("inference.requests", 5, "1", "sum", {"status": "200"})])
    table.record_logs(SVC.at(1, "model-inference"), [(None, "hello")])
    event, metric, log = table.rows(service="DB.SCH.SVC")
    assert event.record_type == EVENT and event.name == "SERVICE.CREATED"
    assert event.value == {"message": "created"} and event.record_attributes == {"instances": 2}
    assert event.resource_attributes == {"snow.database.name": "DB", "snow.schema.name": "SCH",
                                         "snow.service.name": "SVC", "snow.service.type": "Service",
                                         "snow.compute_pool.name": "POOL"}
    assert metric.record_type == METRIC and metric.name == "inference.requests" and metric.value == 5
    assert metric.record == {"metric": {"name": "inference.requests", "unit": "1"}, "metric_type": "sum"}
    assert metric.resource_attributes["snow.service.container.instance"] == "0"
    assert log.record_type == LOG and log.value == "hello"
    assert log.resource_attributes["snow.service.container.name"] == "model-inference"
    assert [r.record_type for r in table.rows(service="DB.SCH.OTHER")] == []
    arrow = table.table(service="DB.SCH.SVC")
    assert arrow.column_names[:3] == ["TIMESTAMP", "START_TIMESTAMP", "OBSERVED_TIMESTAMP"]
    assert arrow.num_rows == 3 and str(arrow.schema.field("VALUE").type) == "extension<arrow.json>"


def test_retention_hides_and_removes_old_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlite3

    def stored() -> int:
        with sqlite3.connect(tmp_path / "events.sqlite") as db:
            return int(db.execute("SELECT count(*) FROM events").fetchone()[0])

    table = EventTable(tmp_path)
    now = time.time()
    assert table.retention_days() == 7.0
    table.set_retention_days(20)
    table.record_event(SVC, "OLD", "ten days ago", at=now - 10 * 86400)
    table.record_event(SVC, "RECENT", "an hour ago", at=now - 3600)
    assert [r.name for r in table.rows()] == ["OLD", "RECENT"] and stored() == 2
    table.set_retention_days(7)  # a shorter retention removes the older rows at once
    assert [r.name for r in table.rows()] == ["RECENT"] and stored() == 1
    table.set_retention_days(20)
    table.record_event(SVC, "OLD", "ten days ago", at=now - 10 * 86400)
    monkeypatch.setattr("duckserve.engine.events.PURGE_EVERY_SECONDS", 3600.0)
    table.set_retention_days(None)  # back to 7 days: rows beyond it are never read, and purge removes them
    assert [r.name for r in table.rows()] == ["RECENT"]
    table.set_retention_days(1 / 48)  # half an hour: the hour-old row goes too
    assert table.rows() == [] and stored() == 0
    assert table.purge() == 0
    with pytest.raises(Exception, match="positive number of days"):
        table.set_retention_days(0)
    table.set_retention_days(None)
    monkeypatch.setenv("DUCKSERVE_EVENT_RETENTION_DAYS", "3")
    assert EventTable(tmp_path).retention_days() == 3.0


def test_log_ingestion_records_each_line_once(tmp_path: Path) -> None:
    table = EventTable(tmp_path)
    resource = SVC.at(0)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time() - 60))
    one, two = f"{stamp},678 INFO [1] x: one", f"{stamp},900 WARNING [1] x: two"
    log = f"{one}\n{two}\n"
    assert table.ingest_log(resource, "a", log) == 2
    assert table.ingest_log(resource, "a", log) == 0
    assert table.ingest_log(resource, "a", log + "three\n") == 1
    assert table.ingest_log(resource, "a", "three\nfour\n") == 1  # a tail of the log: what follows "three"
    assert table.ingest_log(resource, "a", "fresh start\n") == 1  # a new log
    assert table.ingest_log(resource, "b", lambda: log) == 2  # another log: its own lines
    values = [r.value for r in table.rows(service="DB.SCH.SVC")]
    assert sorted(values) == sorted([one, two, "three", "four", "fresh start", one, two])
    stamped = [r for r in table.rows(service="DB.SCH.SVC") if r.value == two]
    assert stamped[0].record == {"severity_text": "WARNING"}
    assert time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamped[0].timestamp)) == stamp
    assert abs(stamped[0].timestamp % 1 - 0.9) < 1e-6


def test_log_ingestion_and_events_from_concurrent_processes(tmp_path: Path) -> None:
    """Several processes write one home's event table at once: every row lands, each log line once."""
    script = textwrap.dedent(f"""
        import os, sys
        from pathlib import Path
        from duckserve.engine.events import Resource, event_table, record_event
        home, me = {str(tmp_path)!r}, sys.argv[1]
        svc, log = Resource("DB", "SCH", "SVC"), Path(home) / "shared.log"
        for i in range(150):
            record_event(home, svc, "TICK", f"{{me}} {{i}}", {{"writer": me}})
            with open(log, "a") as out:  # the log grows while the others read it
                out.write(f"line {{me}}-{{i}}\\n")
            if i % 10 == 0:
                event_table(home).ingest_log(svc.at(0), "shared-log", log.read_text)
        event_table(home).ingest_log(svc.at(0), "shared-log", log.read_text)
    """)
    writers = [subprocess.Popen([sys.executable, "-c", script, str(n)]) for n in range(4)]
    for writer in writers:
        assert writer.wait(120) == 0
    table = event_table(tmp_path)
    events = table.rows(record_type=EVENT, start=0)
    assert len(events) == 600
    assert sorted({r.value["message"] for r in events}) == sorted(f"{w} {i}" for w in range(4) for i in range(150))
    logs = [r.value for r in table.rows(record_type=LOG, start=0)]
    assert sorted(logs) == sorted(f"line {w}-{i}" for w in range(4) for i in range(150))


def test_record_event_takes_a_catalog_object(tmp_path: Path) -> None:
    from duckserve.engine.catalog import CatalogObject

    service = CatalogObject("SERVICE", "FORECAST", owner="ACCOUNTADMIN", database="DUCKSERVE", schema="PUBLIC",
                            props={"compute_pool": "MYPOOL"})
    record_event(tmp_path, service, "INSTANCE.RESTARTED", "instance 1 exited with -9: restarted",
                 {"exit_code": -9}, instance=1)
    [row] = event_table(tmp_path).rows(service="DUCKSERVE.PUBLIC.FORECAST")
    assert row.resource_attributes["snow.service.container.instance"] == "1"
    assert row.resource_attributes["snow.compute_pool.name"] == "MYPOOL"
    assert row.record_attributes == {"exit_code": -9}
