"""The console's HTTP API against a real ``duckserve ui`` process: sign-in, grants, errors, actions
and the worksheet answer as SQL does. (What a person sees is tested in a browser: test_console.py.)"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from duckserve.fronts.console import metrics
from tests.console_account import SERVICE, ConsoleAccount, deploy, drop

pytestmark = pytest.mark.xdist_group("console")

HEADERS = {"X-Duckserve-Console": "1"}


@pytest.fixture(scope="module")
def account(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleAccount]:
    deployed = deploy(tmp_path_factory.mktemp("console_api"))
    yield deployed
    drop(deployed)


def _client(account: ConsoleAccount, token: str | None = None) -> httpx.Client:
    client = httpx.Client(base_url=account.server.url, headers=HEADERS, trust_env=False, timeout=60)
    if token is not None:
        answer = client.post("/api/session/token", json={"token": token})
        assert answer.status_code == 200, answer.text
    return client


def _local(account: ConsoleAccount, user: str | None = None) -> httpx.Client:
    client = _client(account)
    key = account.local_link.split("?key=")[1]
    answer = client.post("/api/session/local", json={"key": key, "user": user})
    assert answer.status_code == 200, answer.text
    return client


def test_sign_in_refusals_say_how_to_get_in(account: ConsoleAccount) -> None:
    with closing(_client(account)) as client:
        assert client.get("/api/services").status_code == 401
        bad = client.post("/api/session/token", json={"token": "dspat_not-a-token"})
        assert bad.status_code == 401
        assert "not valid" in bad.json()["error"] and "ADD PROGRAMMATIC ACCESS TOKEN" in bad.json()["error"]
        no_key = client.post("/api/session/local", json={"key": "wrong"})
        assert no_key.status_code == 401 and "duckserve ui" in no_key.json()["error"]
        # a change without the console's header is refused (a page of another site cannot send it)
        plain = httpx.post(account.server.url + "/api/session/token", json={"token": account.ops_token}, trust_env=False)
        assert plain.status_code == 403 and "X-Duckserve-Console" in plain.json()["error"]
        # the Host must be this console's (no DNS rebinding)
        rebound = httpx.get(account.server.url + "/api/session", headers={"Host": "evil.example"}, trust_env=False)
        assert rebound.status_code == 400


def test_token_session_sees_what_its_role_sees(account: ConsoleAccount) -> None:
    with closing(_client(account, account.viewer_token)) as client:
        who = client.get("/api/session").json()
        assert (who["user"], who["role"], who["restricted_to"], who["roles"]) == ("VIC", "VIEWER", "VIEWER", ["VIEWER"])
        services = client.get("/api/services").json()
        assert [s["key"] for s in services["data"]["services"]] == [SERVICE]
        assert services["sql"] == ["SHOW SERVICES"]
        assert client.get("/api/models").json()["data"]["models"] == []     # no grant on the model
        refused = client.get("/api/model", params={"name": "console_model"})
        assert refused.status_code in (403, 404), refused.text
        # the token is restricted to VIEWER: USE ROLE says so, as in SQL
        other = client.post("/api/session/role", json={"role": "PUBLIC"})
        assert other.status_code == 403 and "VIEWER" in other.json()["error"], other.text


def test_a_removed_token_ends_its_session(account: ConsoleAccount) -> None:
    with account.connect() as conn:
        secret = conn.execute("ALTER USER vic ADD PROGRAMMATIC ACCESS TOKEN brief").fetchall()[0][1]
    with closing(_client(account, secret)) as client:
        assert client.get("/api/services").status_code == 200
        with account.connect() as conn:
            conn.execute("ALTER USER vic REMOVE PROGRAMMATIC ACCESS TOKEN brief")
        time.sleep(1.1)   # a session's token is checked again at most once a second
        ended = client.get("/api/services")
        assert ended.status_code == 401 and ended.json()["error"].startswith("signed out: the programmatic access token")
        assert client.get("/api/session").status_code == 401


def test_action_without_the_grant_is_refused_with_the_sql_message(account: ConsoleAccount) -> None:
    with closing(_client(account, account.viewer_token)) as client:
        preview = client.post("/api/actions", json={"action": "suspend", "service": SERVICE}).json()
        assert preview == {"sql": f"ALTER SERVICE {SERVICE} SUSPEND", "state": "PREVIEW"}
        done = client.post("/api/actions", json={"action": "suspend", "service": SERVICE, "confirm": True}).json()
        while done["state"] == "RUNNING":
            done = client.get(f"/api/operations/{done['id']}").json()
        assert done["state"] == "FAILED" and done["error_kind"] == "InsufficientPrivileges"
        assert done["error"] == (f"role VIEWER cannot suspend service {SERVICE}: it lacks OPERATE or OWNERSHIP on "
                                 f"service {SERVICE}; run GRANT OPERATE ON SERVICE {SERVICE} TO ROLE VIEWER "
                                 "(as ACCOUNTADMIN)")
    assert account.status() == "RUNNING"


def test_names_are_checked_not_spliced(account: ConsoleAccount) -> None:
    with closing(_local(account)) as client:
        # a name is parsed and written back quoted: text around it never becomes SQL
        evil = client.post("/api/actions", json={"action": "drop", "service": "x; DROP TABLE features"}).json()
        assert evil["sql"] == 'DROP SERVICE "X; DROP TABLE FEATURES"'
        assert client.post("/api/actions", json={"action": "drop", "service": "a.b.c.d"}).status_code == 400
        scale = client.post("/api/actions", json={"action": "scale", "service": SERVICE,
                                                  "options": {"min_instances": "1; --", "max_instances": 2}})
        assert scale.status_code == 400 and "whole number" in scale.json()["error"]
        quoted = client.post("/api/actions", json={"action": "update_version", "service": 'db."odd name".svc',
                                                   "options": {"version": "v2"}}).json()
        assert quoted["sql"] == 'ALTER SERVICE DB."odd name".SVC SET MODEL_VERSION = V2'


def test_pages_read_models_pools_repositories_and_logs(account: ConsoleAccount) -> None:
    with closing(_local(account)) as client:
        model = client.get("/api/model", params={"name": "DUCKSERVE.PUBLIC.CONSOLE_MODEL"}).json()
        versions = {v["name"]: v for v in model["data"]["versions"]}
        assert set(versions) == {"V1", "V2"}
        assert versions["V1"]["services"] == SERVICE and versions["V2"]["services"] == ""
        assert [f["name"] for f in versions["V1"]["function_list"]] == ["PREDICT", "SLOW_PREDICT"]
        assert versions["V1"]["function_list"][0]["arguments"] == "PREDICT(X DOUBLE) RETURN DOUBLE"
        pools = client.get("/api/pools").json()["data"]["pools"]
        assert [(p["name"], [s["key"] for s in p["services"]]) for p in pools] == [("CONSOLE_POOL", [SERVICE])]
        repos = client.get("/api/repositories").json()["data"]["repositories"]
        assert repos[0]["name"] == "CONSOLE_IMAGES" and repos[0]["images"][0]["digest"].startswith("sha256:")
        service = client.get("/api/service", params={"name": SERVICE}).json()["data"]
        assert service["service"]["status"] == "RUNNING" and len(service["instances"]) == 1
        build_job = service["service"]["build_job"]
        build_log = client.get("/api/logs", params={"name": build_job, "instance": 0, "container": "model-build"})
        assert build_log.status_code == 200 and build_log.json()["data"]["text"]
        log = client.get("/api/logs", params={"name": SERVICE, "instance": 0, "container": "model-inference"}).json()
        assert "loaded" in log["data"]["text"]
        assert log["sql"] == [f"CALL SYSTEM$GET_SERVICE_LOGS('{SERVICE}', 0, 'model-inference', 2000)"]
        missing = client.get("/api/service", params={"name": "no_such_svc"})
        assert missing.status_code == 404 and "does not exist" in missing.json()["error"]


def test_worksheet_runs_a_service_function_and_reports_errors(account: ConsoleAccount) -> None:
    with closing(_client(account, account.ops_token)) as client:
        run = client.post("/api/worksheet", json={"sql": "SELECT x, console_svc!predict(x) AS y FROM features "
                                                         "ORDER BY x"}).json()
        while run["state"] == "RUNNING":
            run = client.get(f"/api/worksheet/{run['id']}").json()
        assert run["state"] == "SUCCEEDED", run
        assert [c["name"] for c in run["result"]["columns"]] == ["x", "y"]
        assert run["result"]["rows"] == [[float(i), 2.0 * i] for i in range(10)]
        failed = client.post("/api/worksheet", json={"sql": "SELECT 1; SELECT nope FROM features"}).json()
        while failed["state"] == "RUNNING":
            failed = client.get(f"/api/worksheet/{failed['id']}").json()
        assert failed["state"] == "FAILED" and failed["failed_statement"] == "SELECT nope FROM features"
        assert 'Referenced column "nope" not found' in failed["error"]
        assert len(failed["statements"]) == 1


def test_request_log_becomes_series() -> None:
    text = ("2026-01-02 10:00:00,500 INFO [1] duckserve.inference_server.app: predict rows=50 status=200 100.0 ms\n"
            "2026-01-02 10:00:01,000 INFO [1] duckserve.inference_server.app: predict rows=50 status=429 1.0 ms\n"
            "2026-01-02 10:00:01,000 INFO [1] uvicorn.error: Application startup complete.\n"
            "2026-01-02 10:00:02,000 INFO [1] duckserve.inference_server.app: POST /predict-proba rows=3 status=200 "
            "2.0 ms\n"
            "2026-01-02 10:00:02,000 INFO [1] duckserve.inference_server.app: GET /metadata rows=0 status=200 1.0 ms\n")
    requests = metrics.parse_requests(text)
    assert [(r.method, r.rows, r.status) for r in requests] == [("predict", 50, 200), ("predict", 50, 429),
                                                                ("predict-proba", 3, 200)]
    assert requests[0].seconds == pytest.approx(0.1)
    assert metrics.percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0 and metrics.percentile([], 0.9) is None


def test_recorded_metrics_become_series() -> None:
    """SPCS_GET_METRICS' rows (cumulative counters per instance and labels, gauges, quantiles)."""
    window = metrics.Window(end=1000.0, seconds=60)
    assert window.step == 1.0 and len(window.starts) == 60

    def sample(at: float, name: str, value: float, instance: int = 0, **labels: str) -> metrics.Sample:
        return metrics.Sample(at, name, value, instance, labels)

    built = metrics.from_samples([
        sample(990.5, "inference.requests", 10, method="predict", status="200"),
        sample(995.5, "inference.requests", 40, method="predict", status="200"),
        sample(995.5, "inference.requests", 3, method="predict", status="429"),   # first sample: no rate yet
        sample(997.5, "inference.requests", 6, method="predict", status="429"),
        sample(995.5, "inference.requests", 5, instance=1, method="predict", status="200"),
        sample(996.5, "inference.requests", 2, instance=1, method="predict", status="200"),  # restarted
        sample(995.5, "inference.requests.in_flight", 2), sample(995.7, "inference.requests.in_flight", 4),
        sample(995.6, "inference.requests.in_flight", 1, instance=1),
        sample(995.5, "inference.latency.p95", 0.020), sample(995.5, "inference.latency.p95", 0.050, instance=1),
        sample(996.0, "service.instances.ready", 2, instance=None),
    ], window)
    series, totals = built["series"], built["totals"]
    assert series["requests"][window.index(995.5)] == 30 and series["requests"][window.index(997.5)] == 3
    assert series["requests"][window.index(996.5)] == 2 and series["errors"][window.index(997.5)] == 3
    assert totals == {"requests": 35, "rows": 0, "errors": 3, "p50": None, "p95": 50.0, "p99": None}
    assert series["in_flight"][window.index(995.5)] == 4.0          # instance 0 averages 3, instance 1 is 1
    assert series["p95"][window.index(995.5)] == 50.0 and series["instances"][window.index(996.0)] == 2


def test_committed_front_end_is_built_from_these_sources() -> None:
    """static/ is the build of web/ (rebuild with `make console`): the hash its index.html records
    is the hash of the sources and the lock file as they are now."""
    web = Path(metrics.__file__).parent / "web"
    index = (web.parent / "static" / "index.html").read_text()
    recorded = re.search(r'name="duckserve-console-sources" content="([0-9a-f]+)"', index)
    assert recorded, "static/index.html records no source hash: rebuild with `make console`"
    digest = hashlib.sha256()
    files = ["package.json", "package-lock.json", "build.mjs", *sorted(f"src/{p.name}" for p in (web / "src").iterdir())]
    for name in files:
        digest.update((name + "\0").encode())
        digest.update((web / name).read_text(encoding="utf-8").replace("\r\n", "\n").encode())
        digest.update(b"\0")
    assert recorded.group(1) == digest.hexdigest()[:16], "static/ is older than web/: run `make console` and commit it"
    for asset in ("console.js", "console.css", "fonts/inter-400.woff2"):
        assert (web.parent / "static" / asset).stat().st_size > 0
