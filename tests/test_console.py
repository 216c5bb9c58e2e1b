"""The web console in a real browser: headless Chromium (Debian's ``chromium``) driven by
Playwright, against ``duckserve ui`` serving an account with a deployed service.

Screenshots of every step are kept in ``artifacts/console/`` (with
``DUCKSERVE_UPDATE_SCREENSHOTS=1`` the README's are refreshed in ``docs/console/`` too). Without a
browser the tests skip and say how to enable them; on CI (``CI=true``) that is a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import duckserve
from duckserve.registry import Registry
from tests import needs
from tests.console_account import SERVICE, ConsoleAccount, deploy, drop

pytestmark = pytest.mark.xdist_group("console")

CHROMIUM = os.environ.get("DUCKSERVE_CHROMIUM", "/usr/bin/chromium")
# the machine's network is closed: nothing in the browser may try to reach out
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts" / "console"
DOCS = ROOT / "docs" / "console"
VIEWPORT = {"width": 1360, "height": 860}


def _browser_or_skip() -> Any:
    sync_api = needs.module("playwright.sync_api", "make install brings it")
    if not (Path(CHROMIUM).exists() or shutil.which("chromium")):
        needs.unavailable(f"browser tests need headless Chromium, and it is not installed at {CHROMIUM}: "
                          "run apt-get install -y chromium (make test does, as root)")
    return sync_api.sync_playwright


@pytest.fixture(scope="module")
def account(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleAccount]:
    _browser_or_skip()
    deployed = deploy(tmp_path_factory.mktemp("console"))
    yield deployed
    drop(deployed)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One Chromium for the module; Playwright starts it with a fresh temporary profile
    (--user-data-dir) and removes it afterwards."""
    sync_playwright = _browser_or_skip()
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
                                     args=CHROMIUM_ARGS, headless=True)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(30_000)
    opened = context.new_page()
    problems: list[str] = []
    opened.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    yield opened
    context.close()
    assert not problems, problems


def shot(page: Any, name: str, docs: bool = False) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    if docs and os.environ.get("DUCKSERVE_UPDATE_SCREENSHOTS") == "1":
        DOCS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(DOCS / f"{name}.png"))


def sign_in_with_token(page: Any, account: ConsoleAccount, token: str) -> None:
    page.goto(account.url)
    page.get_by_role("tab", name="Access token").click()
    page.fill("input[name=token]", token)
    shot(page, "01-sign-in", docs=True)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_selector("[data-testid=signed-in-as]")


def open_service(page: Any, account: ConsoleAccount, tab: str = "") -> None:
    page.goto(f"{account.url}#/services/{SERVICE}" + (f"/{tab}" if tab else ""))
    page.wait_for_selector("h1:has-text('CONSOLE_SVC')")


def load(account: ConsoleAccount, seconds: float) -> threading.Thread:
    """Calls of the service from SQL for ``seconds`` (batches of 50 rows), on a thread."""

    def run() -> None:
        with account.connect() as conn:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                conn.execute("SELECT sum(console_svc!predict(range::DOUBLE)) FROM range(2000)").fetchall()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_sign_in_with_a_token_and_see_the_deployed_service(page: Any, account: ConsoleAccount) -> None:
    sign_in_with_token(page, account, account.ops_token)
    assert "OPAL" in page.inner_text("[data-testid=signed-in-as]")
    row = page.locator("[data-testid=services-table] tr", has_text="CONSOLE_SVC")
    row.get_by_text("RUNNING").wait_for()
    assert "CONSOLE_MODEL" in row.inner_text() and "1/1" in row.inner_text()
    shot(page, "02-services", docs=True)
    row.get_by_role("link", name="CONSOLE_SVC").click()
    page.get_by_text("PREDICT(X DOUBLE) RETURN DOUBLE", exact=True).wait_for()
    shot(page, "03-service", docs=True)
    page.get_by_role("link", name="Instances").click()
    page.locator("[data-testid=instances-table]").get_by_text("READY").wait_for()


def test_follow_a_log_live_and_search_it(page: Any, account: ConsoleAccount) -> None:
    sign_in_with_token(page, account, account.ops_token)
    open_service(page, account, "logs")
    body = page.locator("[data-testid=log-body]")
    body.get_by_text(re.compile(r"model CONSOLE_MODEL version V1 loaded in")).first.wait_for()
    marker = "rows=7 status=200"
    assert marker not in body.inner_text()
    with account.connect() as conn:      # a request the log has never seen: it must appear without a reload
        conn.execute("SELECT console_svc!predict(range::DOUBLE) FROM range(7)").fetchall()
    body.get_by_text(re.compile(r"predict rows=7 status=200")).first.wait_for(timeout=20_000)
    page.fill("input[name=log-search]", "rows=7")
    page.locator("[data-testid=log-hits]").wait_for()
    assert page.inner_text("[data-testid=log-hits]").startswith("1 matching line")
    assert all("rows=7" in line for line in body.locator(".log-line").all_inner_texts())
    page.fill("input[name=log-search]", "")
    shot(page, "04-logs", docs=True)


def test_the_chart_moves_under_load(page: Any, account: ConsoleAccount) -> None:
    sign_in_with_token(page, account, account.ops_token)
    open_service(page, account, "metrics")
    page.locator("[data-testid=chart-requests] canvas").wait_for()
    rows_now = page.locator("[data-testid=chart-rows-now]")
    quiet = time.monotonic() + 30     # the earlier tests' requests leave the latest 5-second steps
    while rows_now.inner_text() != "0":
        assert time.monotonic() < quiet, f"rows/s stays at {rows_now.inner_text()} without any load"
        time.sleep(0.5)
    worker = load(account, 25)
    deadline = time.monotonic() + 25
    seen = 0.0
    while time.monotonic() < deadline:
        text = rows_now.inner_text().replace(",", "")
        seen = float(text) if text not in ("—", "") else 0.0
        if seen > 0:
            break
        time.sleep(0.5)
    assert seen > 0, "the rows chart did not move while the service was under load"
    page.locator("[data-testid=chart-latency-now]").wait_for()
    time.sleep(4)
    shot(page, "05-metrics", docs=True)
    worker.join(40)


def test_suspend_and_resume_with_confirmation_and_the_sql_they_ran(page: Any, account: ConsoleAccount) -> None:
    sign_in_with_token(page, account, account.ops_token)
    open_service(page, account)
    page.click("[data-action=suspend]")
    dialog = page.get_by_role("dialog")
    dialog.get_by_text(f"ALTER SERVICE {SERVICE} SUSPEND;").wait_for()
    shot(page, "06-confirm-suspend", docs=True)
    assert account.status() == "RUNNING", "nothing may run before the confirmation"
    dialog.locator("[data-testid=confirm-action]").click()
    dialog.get_by_text("Statement executed successfully").wait_for()
    assert dialog.get_by_text("Ran").is_visible()
    account.wait_status("SUSPENDED", 10)
    dialog.get_by_role("button", name="Close").click()
    page.locator("h1 [data-status=SUSPENDED]").wait_for()
    page.click("[data-action=resume]")
    dialog = page.get_by_role("dialog")
    dialog.get_by_text(f"ALTER SERVICE {SERVICE} RESUME;").wait_for()
    dialog.locator("[data-testid=confirm-action]").click()
    dialog.get_by_text("Statement executed successfully").wait_for(timeout=60_000)
    dialog.get_by_role("button", name="Close").click()
    page.locator("h1 [data-status=RUNNING]").wait_for(timeout=60_000)
    assert account.status() == "RUNNING"
    with account.connect() as conn:
        assert conn.execute("SELECT console_svc!predict(21.0)").fetchall() == [(42.0,)]


def test_an_action_without_the_grant_is_refused_with_the_missing_grant(page: Any, account: ConsoleAccount) -> None:
    sign_in_with_token(page, account, account.viewer_token)
    assert "VIEWER" in page.input_value("select[name=role]")
    open_service(page, account)
    page.click("[data-action=suspend]")
    dialog = page.get_by_role("dialog")
    dialog.locator("[data-testid=confirm-action]").click()
    refusal = dialog.get_by_role("alert")
    refusal.wait_for()
    text = refusal.inner_text()
    assert f"role VIEWER cannot suspend service {SERVICE}: it lacks OPERATE or OWNERSHIP" in text
    assert f"GRANT OPERATE ON SERVICE {SERVICE} TO ROLE VIEWER" in text
    shot(page, "07-refused", docs=True)
    assert account.status() == "RUNNING"


def test_a_worksheet_query_with_a_service_function(page: Any, account: ConsoleAccount) -> None:
    sign_in_with_token(page, account, account.ops_token)
    page.goto(account.url + "#/worksheet")
    page.fill("textarea[name=sql]", "SELECT x, console_svc!predict(x) AS doubled\nFROM features\nORDER BY x;")
    page.click("[data-testid=run-sql]")
    page.locator("[data-testid=run-status][data-state=SUCCEEDED]").wait_for(timeout=60_000)
    table = page.locator("[data-testid=result-table]")
    assert table.locator("thead th").all_inner_texts()[1:] == ["x\nDOUBLE", "doubled\nDOUBLE"]
    cells = table.locator("tbody tr").nth(3).locator("td").all_inner_texts()
    assert cells == ["4", "3", "6"]
    assert "10 rows" in page.inner_text("[data-testid=result-meta]")
    shot(page, "08-worksheet", docs=True)
    wrong = "SELECT console_svc!predict('text')"
    with account.connect() as conn, pytest.raises(duckserve.Error) as in_sql:
        conn.execute(wrong)
    page.fill("textarea[name=sql]", wrong)
    page.click("[data-testid=run-sql]")
    page.locator("[data-testid=run-status][data-state=FAILED]").wait_for(timeout=60_000)
    refusal = page.get_by_role("alert")
    assert refusal.locator(".error-message").inner_text() == str(in_sql.value)   # the same words as in SQL
    assert refusal.locator(".error-kind").inner_text() == type(in_sql.value).__name__


def test_local_sign_in_shows_models_pools_and_images(page: Any, account: ConsoleAccount) -> None:
    page.goto(account.local_link)
    assert "key=" not in page.url, "the key must not stay in the address bar"
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_selector("[data-testid=signed-in-as]")
    assert "ADMIN" in page.inner_text("[data-testid=signed-in-as]")
    page.goto(account.url + "#/models")
    page.get_by_role("link", name="CONSOLE_MODEL").click()
    page.get_by_text("Services using it").first.wait_for()
    assert page.get_by_role("link", name="CONSOLE_SVC").count() == 1
    shot(page, "09-model", docs=True)
    page.goto(account.url + "#/pools")
    page.get_by_role("heading", name="CONSOLE_POOL").wait_for()
    shot(page, "10-pools", docs=True)
    page.goto(account.url + "#/repositories")
    page.get_by_role("heading", name="CONSOLE_IMAGES").wait_for()
    page.get_by_text("sha256:").first.wait_for()
    shot(page, "11-images", docs=True)


def _confirm(page: Any, sql: str, timeout_ms: int = 90_000) -> None:
    """The open dialog shows ``sql``; confirm it and wait for SQL's answer."""
    dialog = page.get_by_role("dialog")
    dialog.get_by_text(sql).wait_for()
    dialog.locator("[data-testid=confirm-action]").click()
    dialog.locator(".success-box").wait_for(timeout=timeout_ms)
    assert dialog.get_by_text("Ran").is_visible()


def test_scale_and_update_the_version_with_the_sql_they_ran(page: Any, account: ConsoleAccount) -> None:
    sign_in_with_token(page, account, account.ops_token)
    open_service(page, account)
    try:
        page.click("[data-action=scale]")
        dialog = page.get_by_role("dialog")
        dialog.locator("input[name=min_instances]").fill("2")
        dialog.locator("input[name=max_instances]").fill("2")
        _confirm(page, f"ALTER SERVICE {SERVICE} SET MIN_INSTANCES = 2 MAX_INSTANCES = 2;")
        dialog.get_by_role("button", name="Close").click()
        with account.connect() as conn:
            shown = conn.execute("SELECT min_instances, max_instances FROM (SHOW SERVICES LIKE 'CONSOLE_SVC')").fetchall()
            assert shown == [(2, 2)]
        page.get_by_text("2 / 2").first.wait_for()

        page.click("[data-action=update_version]")
        dialog = page.get_by_role("dialog")
        assert dialog.locator("select[name=version]").input_value() == "V2", "the other version is offered first"
        _confirm(page, f"ALTER SERVICE {SERVICE} SET MODEL_VERSION = V2;")
        shot(page, "12-updated-version")
        dialog.get_by_role("button", name="Close").click()
        page.locator(".version", has_text="V2").first.wait_for()
        with account.connect() as conn:
            assert conn.execute("SELECT model_version FROM (SHOW SERVICES LIKE 'CONSOLE_SVC')").fetchall() == [("V2",)]
            assert conn.execute("SELECT console_svc!predict(21.0)").fetchall() == [(42.0,)]
            versions = {r[0] for r in conn.execute("SELECT model_version FROM (SHOW SERVICE CONTAINERS IN SERVICE "
                                                   "console_svc)").fetchall()}
            assert versions == {"V2"}, versions
    finally:
        with account.connect() as conn:   # the module's other tests see the service as deployed
            conn.execute("ALTER SERVICE console_svc SET MIN_INSTANCES = 1 MAX_INSTANCES = 1")
            conn.execute("ALTER SERVICE console_svc SET MODEL_VERSION = v1")


def test_drop_a_service_after_confirmation(page: Any, account: ConsoleAccount) -> None:
    with account.connect() as conn:
        conn.execute("ALTER SERVICE console_svc SET MIN_INSTANCES = 1 MAX_INSTANCES = 1")
        Registry(conn).get_model("console_model").version("v1").create_service(
            service_name="console_tmp", service_compute_pool="console_pool", image_repo="console_images")
    page.goto(account.local_link)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_selector("[data-testid=signed-in-as]")
    page.goto(f"{account.url}#/services/DUCKSERVE.PUBLIC.CONSOLE_TMP")
    page.wait_for_selector("h1:has-text('CONSOLE_TMP')")
    page.click("[data-action=drop]")
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("This cannot be undone.").wait_for()
    with account.connect() as conn:
        assert conn.execute("SHOW SERVICES LIKE 'CONSOLE_TMP'").fetchall(), "nothing may run before the confirmation"
    _confirm(page, "DROP SERVICE DUCKSERVE.PUBLIC.CONSOLE_TMP;", 60_000)
    page.wait_for_url(re.compile(r"#/services$"))
    page.get_by_role("link", name="CONSOLE_SVC").first.wait_for()
    assert page.get_by_role("link", name="CONSOLE_TMP").count() == 0
    with account.connect() as conn:
        assert conn.execute("SHOW SERVICES LIKE 'CONSOLE_TMP'").fetchall() == []
        assert conn.execute("SELECT console_svc!predict(1.0)").fetchall() == [(2.0,)]
