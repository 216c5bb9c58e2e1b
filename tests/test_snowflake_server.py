"""``duckserve server`` driven only by Snowflake's own PyPI clients: snowflake-connector-python and
snowflake-sqlalchemy, against a real server process on loopback."""

from __future__ import annotations

import base64
import datetime as dt
import os
import time
import warnings
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import duckserve
from duckserve.registry import Registry
from tests import needs
from tests.pandas_frames import round_trip
from tests.servers import Server, start_server

# Snowflake's connector probes cloud metadata addresses (AWS, Azure, GCP) at login to report its
# platform; nothing outside this machine may be reached from the tests
os.environ["SNOWFLAKE_DISABLE_PLATFORM_DETECTION"] = "true"
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

snowflake_connector = needs.module("snowflake.connector", "pip install -e '.[dev]' (make install does)")
sa = needs.module("sqlalchemy", "pip install -e '.[dev]' (make install does)")

pytestmark = [pytest.mark.xdist_group("snowflake"),
              pytest.mark.filterwarnings("ignore::FutureWarning"), pytest.mark.filterwarnings("ignore::UserWarning")]

ROWS = 200_000
FEATURES = "SELECT range AS id, (range % 101) / 101.0 AS f1, (range % 37) / 37.0 AS f2, (range % 13) / 13.0 AS f3 " \
           "FROM range({n})"


def _secret(conn: Any, user: str, name: str, role: str | None = None) -> str:
    restriction = f" ROLE_RESTRICTION = '{role}'" if role else ""
    return str(conn.execute(f"ALTER USER {user} ADD PROGRAMMATIC ACCESS TOKEN {name}{restriction}").fetchall()[0][1])


@pytest.fixture(scope="module")
def account(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A home with ADMIN's token, an ANALYST user holding role READER (no grants on anything), a
    JWT user with an RSA key, and the server over a DuckDB file."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    base = tmp_path_factory.mktemp("snowflake")
    home = base / "home"
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with duckserve.connect(home=str(home)) as conn:
        conn.execute("CREATE ROLE reader; CREATE USER analyst DEFAULT_ROLE = reader; GRANT ROLE reader TO USER analyst")
        conn.execute(f"CREATE USER keyed RSA_PUBLIC_KEY = '{base64.b64encode(public).decode()}' "
                     "DEFAULT_ROLE = reader; GRANT ROLE reader TO USER keyed")
        secrets = {"admin": _secret(conn, "admin", "tests"), "analyst": _secret(conn, "analyst", "tests"),
                   "restricted": _secret(conn, "admin", "only_public", "PUBLIC")}
    server = start_server("snowflake", ["duckserve.fronts.snowflake.server", "--home", str(home),
                                        "--database", str(base / "served.duckdb")], base, "/healthz")
    try:
        yield {"home": home, "base": base, "server": server, "secrets": secrets,
               "key": key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()),
               "other_key": other.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption())}
    finally:
        server.stop()


def connect(account: dict[str, Any], user: str = "ADMIN", secret: str | None = None, **options: Any) -> Any:
    server: Server = account["server"]
    if "authenticator" not in options:
        options.update(authenticator="PROGRAMMATIC_ACCESS_TOKEN",
                       token=secret if secret is not None else account["secrets"]["admin"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return snowflake_connector.connect(host="127.0.0.1", port=server.port, protocol="http", account="duckserve",
                                           user=user, login_timeout=30, **options)


@pytest.fixture(scope="module")
def admin(account: dict[str, Any]) -> Iterator[Any]:
    conn = connect(account, paramstyle="qmark")
    yield conn
    conn.close()


def test_login_types_description_and_query_id(admin: Any) -> None:
    cur = admin.cursor()
    cur.execute("SELECT 1 AS i, 'x' AS s, 2.5::DOUBLE AS f, 1.25::DECIMAL(10, 2) AS d, DATE '2024-01-02' AS day, "
                "TIMESTAMP '2024-01-02 03:04:05.123456' AS ts, TRUE AS b, [1, 2] AS l, {'a': 1} AS o, "
                "from_hex('0001') AS bin, TIME '01:02:03.5' AS t, NULL::VARCHAR AS n")
    assert cur.fetchall() == [(1, "x", 2.5, Decimal("1.25"), dt.date(2024, 1, 2),
                               dt.datetime(2024, 1, 2, 3, 4, 5, 123456), True, "[1,2]", '{"a":1}',
                               bytearray(b"\x00\x01"), dt.time(1, 2, 3, 500000), None)]
    names = [d.name for d in cur.description]
    types = [snowflake_connector.constants.FIELD_ID_TO_NAME[d.type_code] for d in cur.description]
    assert names == ["i", "s", "f", "d", "day", "ts", "b", "l", "o", "bin", "t", "n"]
    assert types == ["FIXED", "TEXT", "REAL", "FIXED", "DATE", "TIMESTAMP_NTZ", "BOOLEAN", "ARRAY", "OBJECT",
                     "BINARY", "TIME", "TEXT"]
    assert (cur.description[3].precision, cur.description[3].scale) == (10, 2)
    assert len(cur.sfqid) == 36
    cur.execute("SELECT current_setting('threads') > 0")
    assert cur.fetchone() == (True,)


def test_control_statements_and_a_denied_role(account: dict[str, Any], admin: Any) -> None:
    cur = admin.cursor()
    cur.execute("CREATE COMPUTE POOL IF NOT EXISTS sf_pool MIN_NODES = 1 MAX_NODES = 1 INSTANCE_FAMILY = 'CPU_X64_XS'")
    assert "SF_POOL" in cur.fetchone()[0] or "already exists" in cur.fetchone()[0]
    cur.execute("SELECT name, state FROM (SHOW COMPUTE POOLS) WHERE name = 'SF_POOL'")
    assert cur.fetchall() == [("SF_POOL", "IDLE")]
    analyst = connect(account, "analyst", account["secrets"]["analyst"])
    try:
        a = analyst.cursor()
        a.execute("SELECT current_setting('threads') IS NOT NULL")
        with pytest.raises(snowflake_connector.errors.ProgrammingError) as denied:
            a.execute("ALTER COMPUTE POOL sf_pool SUSPEND")
        assert denied.value.errno == 3001 and denied.value.sqlstate == "42501"
        assert "role READER cannot suspend compute pool SF_POOL" in denied.value.msg
        assert "GRANT OPERATE ON COMPUTE POOL SF_POOL TO ROLE READER" in denied.value.msg
        with pytest.raises(snowflake_connector.errors.ProgrammingError, match="not granted to user ANALYST"):
            a.execute("USE ROLE accountadmin")
        cur.execute("GRANT OPERATE ON COMPUTE POOL sf_pool TO ROLE reader")
        a.execute("ALTER COMPUTE POOL sf_pool SUSPEND")
        cur.execute("SELECT state FROM (SHOW COMPUTE POOLS) WHERE name = 'SF_POOL'")
        assert cur.fetchone() == ("SUSPENDED",)
    finally:
        analyst.close()
    # a role named at login is the session's role; one the user lacks refuses the login
    with pytest.raises(snowflake_connector.errors.DatabaseError) as refused:
        connect(account, "analyst", account["secrets"]["analyst"], role="ACCOUNTADMIN")
    assert refused.value.errno == 390189
    # a token restricted to a role cannot USE another one
    restricted = connect(account, "ADMIN", account["secrets"]["restricted"])
    try:
        with pytest.raises(snowflake_connector.errors.ProgrammingError, match="restricted to role PUBLIC"):
            restricted.cursor().execute("USE ROLE accountadmin")
        with pytest.raises(snowflake_connector.errors.ProgrammingError, match="role PUBLIC cannot"):
            restricted.cursor().execute("CREATE COMPUTE POOL nope MIN_NODES = 1 MAX_NODES = 1 "
                                        "INSTANCE_FAMILY = 'CPU_X64_XS'")
    finally:
        restricted.close()


def test_bad_and_revoked_tokens_are_refused(account: dict[str, Any]) -> None:
    with pytest.raises(snowflake_connector.errors.DatabaseError) as bad:
        connect(account, "ADMIN", "dspat_not-a-token")
    assert bad.value.errno == 390100 and "Incorrect username or password" in str(bad.value)
    with pytest.raises(snowflake_connector.errors.DatabaseError) as wrong_user:
        connect(account, "ANALYST", account["secrets"]["admin"])
    assert wrong_user.value.errno == 390100 and "belongs to user ADMIN" in str(wrong_user.value)
    with duckserve.connect(home=str(account["home"])) as local:
        secret = _secret(local, "analyst", "short_lived")
    conn = connect(account, "ANALYST", secret)
    conn.cursor().execute("SELECT 1")
    with duckserve.connect(home=str(account["home"])) as local:
        local.execute("ALTER USER analyst REMOVE PROGRAMMATIC ACCESS TOKEN short_lived")
    time.sleep(1.2)   # sessions check their credential again at most once a second
    with pytest.raises(snowflake_connector.errors.Error, match="no longer authenticates"):
        conn.cursor().execute("SELECT 1")
    with pytest.raises(snowflake_connector.errors.DatabaseError) as revoked:
        connect(account, "ANALYST", secret)
    assert revoked.value.errno == 390100 and "not valid (unknown or removed)" in str(revoked.value)


def test_key_pair_jwt(account: dict[str, Any]) -> None:
    conn = connect(account, "KEYED", authenticator="SNOWFLAKE_JWT", private_key=account["key"])
    try:
        cur = conn.cursor()
        cur.execute("SELECT name, default_role FROM (SHOW USERS) WHERE name = 'KEYED'")
        assert cur.fetchall() == [("KEYED", "READER")]
        assert conn.role.upper() == "READER"
    finally:
        conn.close()
    with pytest.raises(snowflake_connector.errors.DatabaseError) as refused:
        connect(account, "KEYED", authenticator="SNOWFLAKE_JWT", private_key=account["other_key"])
    assert refused.value.errno == 390144 and "not signed by the key of user KEYED" in str(refused.value)
    with pytest.raises(snowflake_connector.errors.DatabaseError) as no_key:
        connect(account, "ANALYST", authenticator="SNOWFLAKE_JWT", private_key=account["key"])
    assert no_key.value.errno == 390144 and "has no RSA_PUBLIC_KEY" in str(no_key.value)


def test_decimals_keep_their_values_whichever_way_they_travel(admin: Any) -> None:
    """A DECIMAL whose values fit in 64 bits travels as Snowflake sends a NUMBER (unscaled integers),
    one that does not as decimal128: both come back exactly, in a chunked result too."""
    cur = admin.cursor()
    cur.execute("SELECT (range * 1.5 - 7000)::DECIMAL(21, 1) AS small, "
                "CASE WHEN range = 3 THEN NULL ELSE '1000000000000000000000000000000'::DECIMAL(38, 0) + range END AS huge, "
                "(range / 4)::DECIMAL(18, 3) AS quarter FROM range(20000) ORDER BY range")
    rows = cur.fetchall()
    assert len(rows) == 20_000
    assert rows[0][0] == Decimal("-7000.0") and rows[19_999][0] == Decimal("22998.5")
    assert rows[2][1] == Decimal(10**30 + 2) and rows[3][1] is None
    assert rows[5][2] == Decimal("1.250") and rows[19_999][2] == Decimal("4999.750")
    assert [(d.precision, d.scale) for d in cur.description] == [(21, 1), (38, 0), (18, 3)]


def test_bindings_and_executemany(account: dict[str, Any], admin: Any) -> None:
    cur = admin.cursor()
    cur.execute("CREATE OR REPLACE TABLE bound (id INTEGER, name VARCHAR, day DATE, happened TIMESTAMP, x DOUBLE, "
                "amount DECIMAL(10, 2), ok BOOLEAN)")
    cur.execute("INSERT INTO bound VALUES (?, ?, ?, ?, ?, ?, ?)",
                (1, "one", dt.date(2024, 1, 2), dt.datetime(2024, 1, 2, 3, 4, 5, 6), 1.5, Decimal("1.25"), True))
    assert cur.rowcount == 1
    cur.executemany("INSERT INTO bound (id, name, x) VALUES (?, ?, ?)", [(2, "two", None), (3, "three", 3.0)])
    assert cur.rowcount == 2
    cur.execute("SELECT * FROM bound WHERE id = ?", (1,))
    assert cur.fetchall() == [(1, "one", dt.date(2024, 1, 2), dt.datetime(2024, 1, 2, 3, 4, 5, 6), 1.5,
                               Decimal("1.25"), True)]
    cur.execute("UPDATE bound SET name = upper(name) WHERE id > ?", (1,))
    assert cur.rowcount == 2
    numeric = connect(account, paramstyle="numeric")
    pyformat = connect(account)
    try:
        n = numeric.cursor()
        n.execute("SELECT name FROM bound WHERE id = :2 OR id = :1 ORDER BY id", (1, 3))
        assert n.fetchall() == [("one",), ("THREE",)]
        p = pyformat.cursor()
        p.execute("SELECT count(*) FROM bound WHERE name = %(name)s OR id = %(id)s", {"name": "TWO", "id": 1})
        assert p.fetchone() == (2,)
        p.executemany("INSERT INTO bound (id, name) VALUES (%s, %s)", [(10, "it's"), (11, "ten")])
        assert p.rowcount == 2
        p.execute("SELECT name FROM bound WHERE id = 10")
        assert p.fetchone() == ("it's",)
    finally:
        numeric.close()
        pyformat.close()


def test_errors_have_snowflakes_shape(admin: Any) -> None:
    cur = admin.cursor()
    with pytest.raises(snowflake_connector.errors.ProgrammingError) as missing:
        cur.execute("SELECT * FROM no_such_table")
    assert missing.value.errno == 2003 and missing.value.sqlstate == "42S02"
    assert "no_such_table does not exist" in missing.value.msg and missing.value.sfqid
    with pytest.raises(snowflake_connector.errors.ProgrammingError) as syntax:
        cur.execute("CREATE COMPUTE POOL p MIN_NODES = 1 MAX_NODES = 1 INSTANCE_FAMILY = 'CPU_X64_XS' COLOUR = 1")
    assert syntax.value.errno == 1003 and "COLOUR" in syntax.value.msg
    # the pool the hint names, whichever test ran first
    cur.execute("CREATE COMPUTE POOL IF NOT EXISTS sf_pool MIN_NODES = 1 MAX_NODES = 1 INSTANCE_FAMILY = 'CPU_X64_XS'")
    with pytest.raises(snowflake_connector.errors.ProgrammingError) as unknown_pool:
        cur.execute("ALTER COMPUTE POOL sf_poool SUSPEND")
    assert unknown_pool.value.errno == 2003 and "did you mean SF_POOL" in unknown_pool.value.msg
    cur.execute("COMMIT")   # Snowflake accepts COMMIT and ROLLBACK outside a transaction
    cur.execute("ROLLBACK")


def test_large_results_arrive_intact(admin: Any) -> None:
    cur = admin.cursor()
    cur.execute("SELECT range AS i, range * 2.0::DOUBLE AS f, 'row ' || range AS s FROM range(1000000) ORDER BY i")
    count, total, last = 0, 0, None
    for row in cur:
        count += 1
        total += row[0]
        last = row
    assert (count, total, last) == (1_000_000, 499_999_500_000, (999_999, 1_999_998.0, "row 999999"))
    cur.execute("SELECT range AS i, range::DOUBLE AS f FROM range(1000000)")
    batches = list(cur.fetch_arrow_batches())
    assert len(batches) > 1 and sum(b.num_rows for b in batches) == 1_000_000
    cur.execute("SELECT range AS i, range::DOUBLE / 2 AS f FROM range(1000000)")
    frame = cur.fetch_pandas_all()
    assert frame.shape == (1_000_000, 2) and int(frame["i"].sum()) == 499_999_500_000
    assert frame["f"].iloc[-1] == 499_999.5


def test_cancel_running_queries(account: dict[str, Any], admin: Any) -> None:
    slow = "SELECT sum(a.range * b.range) FROM range(300000) a, range(300000) b"
    cur = admin.cursor()
    cur.execute_async(slow)
    query_id = cur.sfqid
    assert admin.get_query_status(query_id).name == "RUNNING"
    assert cur.abort_query(query_id)
    deadline = time.monotonic() + 30
    while admin.get_query_status(query_id).name == "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert admin.get_query_status(query_id).name == "ABORTED"
    started = time.monotonic()
    with pytest.raises(snowflake_connector.errors.ProgrammingError) as timed_out:
        cur.execute(slow, _statement_params={"STATEMENT_TIMEOUT_IN_SECONDS": 1})
    assert timed_out.value.errno == 630 and time.monotonic() - started < 20
    # SYSTEM$CANCEL_QUERY from another session of the same user
    other = connect(account)
    try:
        theirs = other.cursor()
        theirs.execute_async(slow)
        cur.execute(f"SELECT SYSTEM$CANCEL_QUERY('{theirs.sfqid}')")
        assert "terminated" in cur.fetchone()[0]
        with pytest.raises(snowflake_connector.errors.Error) as canceled:
            theirs.get_results_from_sfqid(theirs.sfqid)
            theirs.fetchall()
        assert "canceled" in str(canceled.value)
    finally:
        other.close()


@pytest.fixture(scope="module")
def deployed(account: dict[str, Any]) -> Iterator[str]:
    """A scikit-learn model logged and deployed through the local API, in the server's account."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(3)
    X = pd.DataFrame(rng.uniform(size=(400, 3)), columns=["F1", "F2", "F3"])
    y = (X["F1"] + X["F2"] * 0.5 - X["F3"] > 0.3).astype(int)
    with duckserve.connect(home=str(account["home"])) as local:
        local.execute("CREATE COMPUTE POOL IF NOT EXISTS sf_serving MIN_NODES = 1 MAX_NODES = 1 "
                      "INSTANCE_FAMILY = 'CPU_X64_XS'; CREATE IMAGE REPOSITORY IF NOT EXISTS sf_images")
        mv = Registry(local).log_model(LogisticRegression().fit(X, y), model_name="sf_model", sample_input_data=X)
        mv.create_service(service_name="sf_svc", service_compute_pool="sf_serving", image_repo="sf_images",
                          max_instances=1, num_workers=1)
    yield "sf_svc"
    with duckserve.connect(home=str(account["home"])) as local:
        local.execute("DROP SERVICE IF EXISTS sf_svc")


def test_service_function_over_200k_rows_equals_local(account: dict[str, Any], admin: Any, deployed: str) -> None:
    cur = admin.cursor()
    cur.execute(f"CREATE OR REPLACE TABLE feats AS {FEATURES.format(n=ROWS)}")
    query = f"SELECT id, {deployed}!predict(f1, f2, f3) AS label FROM feats ORDER BY id"
    cur.execute(query)
    remote = cur.fetch_pandas_all()
    with duckserve.connect(home=str(account["home"])) as local:
        local.execute(f"CREATE TABLE feats AS {FEATURES.format(n=ROWS)}")
        expected = local.execute(query).fetch_pandas_all()
    assert len(remote) == ROWS
    assert remote["id"].tolist() == expected["id"].tolist()
    assert remote["label"].tolist() == expected["label"].tolist()
    assert 0 < expected["label"].sum() < ROWS


def test_snowflake_sqlalchemy_reflection_and_pandas(account: dict[str, Any], admin: Any) -> None:
    server: Server = account["server"]
    secret = account["secrets"]["admin"]
    engine = sa.create_engine(f"snowflake://ADMIN@duckserve/?authenticator=PROGRAMMATIC_ACCESS_TOKEN&token={secret}",
                              connect_args={"host": "127.0.0.1", "port": server.port, "protocol": "http"})
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE OR REPLACE TABLE people (id INTEGER PRIMARY KEY, name VARCHAR NOT NULL, "
                                 "score DOUBLE, joined DATE)"))
            conn.execute(sa.text("INSERT INTO people VALUES (1, 'ann', 1.5, '2024-01-02'), (2, 'bob', NULL, NULL)"))
            conn.execute(sa.text("CREATE OR REPLACE VIEW good_people AS SELECT * FROM people WHERE score > 1"))
        inspector = sa.inspect(engine)
        assert "people" in inspector.get_table_names()
        assert "good_people" in inspector.get_view_names()
        columns = {c["name"]: c for c in inspector.get_columns("people")}
        assert list(columns) == ["id", "name", "score", "joined"]
        assert isinstance(columns["id"]["type"], sa.types.Integer) and not columns["name"]["nullable"]
        assert isinstance(columns["joined"]["type"], sa.types.Date)
        assert inspector.get_pk_constraint("people")["constrained_columns"] == ["id"]
        people = sa.Table("people", sa.MetaData(), autoload_with=engine)
        with engine.connect() as conn:
            assert conn.execute(sa.select(people.c.name).where(people.c.id == 2)).scalar_one() == "bob"
        frame = pd.read_sql("SELECT id, name FROM people ORDER BY id", engine)
        assert frame.to_dict("list") == {"id": [1, 2], "name": ["ann", "bob"]}
        pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]}).to_sql("written", engine, index=False,
                                                                    if_exists="replace")
        assert pd.read_sql("SELECT sum(a) AS total FROM written", engine)["total"].tolist() == [6]
        with engine.connect() as conn:
            # xdist may run this test on another worker than the one that created the pool
            conn.execute(sa.text("CREATE COMPUTE POOL IF NOT EXISTS sf_pool MIN_NODES = 1 MAX_NODES = 1 "
                                 "INSTANCE_FAMILY = 'CPU_X64_XS'"))
            pools = conn.execute(sa.text("SELECT name FROM (SHOW COMPUTE POOLS) ORDER BY name")).scalars().all()
        assert "SF_POOL" in pools
    finally:
        engine.dispose()


def test_pandas_round_trip_through_snowflake_sqlalchemy(account: dict[str, Any]) -> None:
    server: Server = account["server"]
    secret = account["secrets"]["admin"]
    engine = sa.create_engine(f"snowflake://ADMIN@duckserve/?authenticator=PROGRAMMATIC_ACCESS_TOKEN&token={secret}",
                              connect_args={"host": "127.0.0.1", "port": server.port, "protocol": "http"})
    try:
        round_trip(engine, "frames")
    finally:
        engine.dispose()


def test_the_readmes_example_runs() -> None:
    """examples/snowflake_clients.py, as README tells users to run it: its own account and server."""
    import subprocess
    import sys

    example = Path(__file__).resolve().parent.parent / "examples" / "snowflake_clients.py"
    done = subprocess.run([sys.executable, str(example)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "connector, SHOW COMPUTE POOLS: [('DEMO_POOL', 'IDLE')]" in done.stdout
    assert "connector, fetch_pandas_all: (100000, 2) ['id', 'amount']" in done.stdout
    assert "snowflake-sqlalchemy, read_sql: [{'name': 'ann', 'score': 1.5}, {'name': 'bob', 'score': 2.5}]" \
        in done.stdout


def test_server_refuses_unknown_sessions(account: dict[str, Any]) -> None:
    import httpx

    server: Server = account["server"]
    answer = httpx.post(f"{server.url}/queries/v1/query-request", json={"sqlText": "SELECT 1"},
                        headers={"Authorization": 'Snowflake Token="nope"'}, trust_env=False)
    assert answer.status_code == 401 and answer.json()["code"] == "390104" and not answer.json()["success"]
    path: Path = account["base"]
    assert (path / "served.duckdb").exists()
