"""Compute pools, image repositories, warehouses, roles, users and grants through SQL."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import duckserve
from duckserve import errors
from tests.conftest import rows

SEED_SQL = """
CREATE COMPUTE POOL IF NOT EXISTS mypool
MIN_NODES = 2
MAX_NODES = 4
INSTANCE_FAMILY = 'CPU_X64_M'
AUTO_RESUME = TRUE;
CREATE IMAGE REPOSITORY IF NOT EXISTS my_inference_images;
CREATE ROLE IF NOT EXISTS myrole;
GRANT READ ON IMAGE REPOSITORY my_inference_images TO ROLE myrole;
GRANT WRITE ON IMAGE REPOSITORY my_inference_images TO ROLE myrole;
GRANT SERVICE READ ON IMAGE REPOSITORY my_inference_images TO ROLE myrole;
GRANT SERVICE WRITE ON IMAGE REPOSITORY my_inference_images TO ROLE myrole;
"""


def test_seed_statements_run_verbatim(conn: Any) -> None:
    conn.cursor().execute(SEED_SQL)
    pool = rows(conn, "SHOW COMPUTE POOLS")[0]
    assert (pool["name"], pool["min_nodes"], pool["max_nodes"], pool["instance_family"], pool["auto_resume"]) == (
        "MYPOOL", 2, 4, "CPU_X64_M", "true")
    grants = rows(conn, "SHOW GRANTS TO ROLE myrole")
    assert sorted(g["privilege"] for g in grants) == ["READ", "SERVICE READ", "SERVICE WRITE", "WRITE"]
    assert {g["name"] for g in grants} == {"DUCKSERVE.PUBLIC.MY_INFERENCE_IMAGES"}
    # running the seed again is harmless (IF NOT EXISTS, grants are idempotent)
    conn.cursor().execute(SEED_SQL)
    assert len(rows(conn, "SHOW GRANTS TO ROLE myrole")) == 4


def test_compute_pool_lifecycle(conn: Any) -> None:
    conn.execute("CREATE COMPUTE POOL p MIN_NODES = 1 MAX_NODES = 3 INSTANCE_FAMILY = 'gpu_nv_s' "
                 "AUTO_SUSPEND_SECS = 120 COMMENT = 'for tests'")
    desc = rows(conn, "DESCRIBE COMPUTE POOL p")[0]
    assert (desc["vcpu"], desc["memory_gib"], desc["gpu"]) == (6, 27, 1)
    assert desc["auto_suspend_secs"] == 120 and desc["comment"] == "for tests"
    conn.execute("ALTER COMPUTE POOL p SUSPEND")
    assert rows(conn, "SHOW COMPUTE POOLS LIKE 'P'")[0]["state"] == "SUSPENDED"
    conn.execute("ALTER COMPUTE POOL p RESUME")
    assert rows(conn, "SHOW COMPUTE POOLS")[0]["state"] == "IDLE"
    with pytest.raises(errors.ProgrammingError, match="not SUSPENDED"):
        conn.execute("ALTER COMPUTE POOL p RESUME")
    conn.execute("ALTER COMPUTE POOL p SET MAX_NODES = 5 AUTO_RESUME = FALSE")
    pool = rows(conn, "SHOW COMPUTE POOLS")[0]
    assert pool["max_nodes"] == 5 and pool["auto_resume"] == "false"
    conn.execute("ALTER COMPUTE POOL p UNSET AUTO_RESUME")
    assert rows(conn, "SHOW COMPUTE POOLS")[0]["auto_resume"] == "true"
    with pytest.raises(errors.ProgrammingError, match="MAX_NODES .* at least MIN_NODES"):
        conn.execute("ALTER COMPUTE POOL p SET MIN_NODES = 9")
    conn.execute("ALTER COMPUTE POOL p STOP ALL")
    with pytest.raises(errors.ObjectExists, match="already exists"):
        conn.execute("CREATE COMPUTE POOL p MIN_NODES = 1 MAX_NODES = 1 INSTANCE_FAMILY = CPU_X64_XS")
    conn.execute("CREATE OR REPLACE COMPUTE POOL p MIN_NODES = 1 MAX_NODES = 1 INSTANCE_FAMILY = CPU_X64_XS")
    assert rows(conn, "SHOW COMPUTE POOLS")[0]["instance_family"] == "CPU_X64_XS"
    conn.execute("DROP COMPUTE POOL p")
    assert rows(conn, "SHOW COMPUTE POOLS") == []
    conn.execute("DROP COMPUTE POOL IF EXISTS p")
    with pytest.raises(errors.ObjectNotFound):
        conn.execute("DROP COMPUTE POOL p")


def test_unknown_instance_family_lists_valid_ones(conn: Any) -> None:
    with pytest.raises(errors.ProgrammingError) as info:
        conn.execute("CREATE COMPUTE POOL p MIN_NODES = 1 MAX_NODES = 1 INSTANCE_FAMILY = CPU_X64_HUGE")
    message = str(info.value)
    for family in ("CPU_X64_XS", "CPU_X64_M", "HIGHMEM_X64_L", "GPU_NV_S", "GPU_NV_XS", "GPU_NV_SM", "GPU_NV_2M",
                   "GPU_NV_3M", "GPU_NV_SL"):
        assert family in message
    assert rows(conn, "SHOW COMPUTE POOLS") == []  # nothing half-created


def test_pool_node_validation(conn: Any) -> None:
    with pytest.raises(errors.ProgrammingError, match="MIN_NODES must be at least 1"):
        conn.execute("CREATE COMPUTE POOL p MIN_NODES = 0 MAX_NODES = 1 INSTANCE_FAMILY = CPU_X64_XS")
    with pytest.raises(errors.ProgrammingError, match="MAX_NODES"):
        conn.execute("CREATE COMPUTE POOL p MIN_NODES = 3 MAX_NODES = 1 INSTANCE_FAMILY = CPU_X64_XS")


def test_unknown_object_suggests_closest_name(conn: Any) -> None:
    conn.execute("CREATE COMPUTE POOL forecast_pool MIN_NODES = 1 MAX_NODES = 1 INSTANCE_FAMILY = CPU_X64_XS")
    with pytest.raises(errors.ObjectNotFound, match="FORCAST_POOL does not exist; did you mean FORECAST_POOL"):
        conn.execute("DESCRIBE COMPUTE POOL forcast_pool")
    conn.execute("CREATE IMAGE REPOSITORY images")
    with pytest.raises(errors.ObjectNotFound, match="did you mean DUCKSERVE.PUBLIC.IMAGES"):
        conn.execute("SHOW IMAGES IN IMAGE REPOSITORY imagez")


def test_image_repositories_with_and_without_qualifiers(conn: Any) -> None:
    conn.execute("CREATE IMAGE REPOSITORY my_inference_images")
    conn.execute("CREATE IMAGE REPOSITORY mydb.myschema.my_image_repo")
    repos = {r["name"]: r for r in rows(conn, "SHOW IMAGE REPOSITORIES")}
    assert repos["MY_IMAGE_REPO"]["database_name"] == "MYDB"
    # the home's registry (a local one on loopback, not started until an image needs it), then the path
    assert re.fullmatch(r"127\.0\.0\.1:\d+/mydb/myschema/my_image_repo", repos["MY_IMAGE_REPO"]["repository_url"])
    assert repos["MY_INFERENCE_IMAGES"]["schema_name"] == "PUBLIC"
    # the same object by its short and its full name
    assert rows(conn, "SHOW IMAGES IN IMAGE REPOSITORY my_image_repo") == []
    assert rows(conn, "SHOW IMAGES IN IMAGE REPOSITORY mydb.myschema.my_image_repo") == []
    assert rows(conn, "SHOW IMAGES IN IMAGE REPOSITORY duckserve.public.my_inference_images") == []
    conn.execute("GRANT READ ON IMAGE REPOSITORY mydb.myschema.my_image_repo TO ROLE public")
    conn.execute("GRANT WRITE ON IMAGE REPOSITORY my_image_repo TO ROLE public")
    grants = rows(conn, "SHOW GRANTS ON IMAGE REPOSITORY my_image_repo")
    assert {(g["privilege"], g["name"]) for g in grants} == {
        ("OWNERSHIP", "MYDB.MYSCHEMA.MY_IMAGE_REPO"), ("READ", "MYDB.MYSCHEMA.MY_IMAGE_REPO"),
        ("WRITE", "MYDB.MYSCHEMA.MY_IMAGE_REPO")}
    assert [r["name"] for r in rows(conn, "SHOW IMAGE REPOSITORIES IN SCHEMA mydb.myschema")] == ["MY_IMAGE_REPO"]
    conn.execute("DROP IMAGE REPOSITORY mydb.myschema.my_image_repo")
    assert [r["name"] for r in rows(conn, "SHOW IMAGE REPOSITORIES")] == ["MY_INFERENCE_IMAGES"]
    assert rows(conn, "SHOW GRANTS TO ROLE public") == [r for r in rows(conn, "SHOW GRANTS TO ROLE public")
                                                         if r["granted_on"] != "IMAGE_REPOSITORY"]


def test_identifier_rules(conn: Any) -> None:
    conn.execute("CREATE ROLE analyst")
    conn.execute('CREATE ROLE "Analyst"')
    names = {r["name"] for r in rows(conn, "SHOW ROLES")}
    assert {"ANALYST", "Analyst"} <= names
    conn.execute("DROP ROLE AnAlYsT")
    names = {r["name"] for r in rows(conn, "SHOW ROLES")}
    assert "ANALYST" not in names and "Analyst" in names
    conn.execute('DROP ROLE "Analyst"')


def test_warehouses_and_parallelism(conn: Any) -> None:
    conn.execute("CREATE WAREHOUSE wh WITH WAREHOUSE_SIZE = 'MEDIUM'")
    wh = {r["name"]: r for r in rows(conn, "SHOW WAREHOUSES")}
    assert wh["WH"]["size"] == "Medium" and wh["WH"]["is_current"] == "Y"
    assert wh["WH"]["inference_parallelism"] == 8
    conn.execute("USE WAREHOUSE compute_wh")
    assert conn.account.parallelism(conn.session) == 2
    conn.execute("ALTER WAREHOUSE wh SET WAREHOUSE_SIZE = 'X-LARGE'")
    conn.execute("USE WAREHOUSE wh")
    assert conn.account.parallelism(conn.session) == 8  # above MEDIUM adds nothing
    conn.execute("ALTER WAREHOUSE wh SET WAREHOUSE_SIZE = SMALL")
    assert conn.account.parallelism(conn.session) == 4
    with pytest.raises(errors.ProgrammingError, match="XSMALL, SMALL, MEDIUM"):
        conn.execute("ALTER WAREHOUSE wh SET WAREHOUSE_SIZE = 'GIGANTIC'")
    conn.execute("ALTER WAREHOUSE wh SUSPEND")
    assert {r["name"]: r for r in rows(conn, "SHOW WAREHOUSES")}["WH"]["state"] == "SUSPENDED"
    conn.execute("DROP WAREHOUSE wh")
    assert conn.session.warehouse is None


def make_user(conn: Any, user: str, role: str) -> None:
    conn.cursor().execute(f"""
        CREATE ROLE {role};
        CREATE USER {user} DEFAULT_ROLE = {role} RSA_PUBLIC_KEY = 'MIIBIjANBg';
        GRANT ROLE {role} TO USER {user};
    """)


def test_privileges_are_enforced_with_a_fix(home: Path) -> None:
    with duckserve.connect(home=str(home)) as admin:
        make_user(admin, "alice", "analyst")
        admin.execute("CREATE COMPUTE POOL p MIN_NODES = 1 MAX_NODES = 1 INSTANCE_FAMILY = CPU_X64_XS")
        admin.execute("CREATE IMAGE REPOSITORY repo")
        users = {u["name"]: u for u in rows(admin, "SHOW USERS")}
        assert users["ALICE"]["has_rsa_public_key"] == "true" and users["ALICE"]["default_role"] == "ANALYST"
    with duckserve.connect(home=str(home), user="alice") as alice:
        assert alice.session.role == "ANALYST"
        # creating a pool needs the account privilege
        with pytest.raises(errors.InsufficientPrivileges) as info:
            alice.execute("CREATE COMPUTE POOL mine MIN_NODES = 1 MAX_NODES = 1 INSTANCE_FAMILY = CPU_X64_XS")
        assert "CREATE COMPUTE POOL on the account" in str(info.value)
        assert "GRANT CREATE COMPUTE POOL ON ACCOUNT TO ROLE ANALYST" in str(info.value)
        # operating a pool needs OPERATE
        with pytest.raises(errors.InsufficientPrivileges) as info:
            alice.execute("ALTER COMPUTE POOL p SUSPEND")
        assert "lacks OPERATE or OWNERSHIP on compute pool P" in str(info.value)
        assert "GRANT OPERATE ON COMPUTE POOL P TO ROLE ANALYST" in str(info.value)
        # invisible objects are not listed
        assert rows(alice, "SHOW COMPUTE POOLS") == []
        with pytest.raises(errors.InsufficientPrivileges, match="READ"):
            alice.execute("SHOW IMAGES IN IMAGE REPOSITORY repo")
        with pytest.raises(errors.InsufficientPrivileges, match="OWNERSHIP"):
            alice.execute("GRANT USAGE ON COMPUTE POOL p TO ROLE analyst")
        with pytest.raises(errors.InsufficientPrivileges):
            alice.execute("USE ROLE accountadmin")
    with duckserve.connect(home=str(home)) as admin:
        admin.cursor().execute("""
            GRANT OPERATE, MONITOR ON COMPUTE POOL p TO ROLE analyst;
            GRANT CREATE COMPUTE POOL ON ACCOUNT TO ROLE analyst;
            GRANT READ ON IMAGE REPOSITORY repo TO ROLE analyst;
        """)
    with duckserve.connect(home=str(home), user="alice") as alice:
        alice.execute("ALTER COMPUTE POOL p SUSPEND")
        assert [r["name"] for r in rows(alice, "SHOW COMPUTE POOLS")] == ["P"]
        with pytest.raises(errors.InsufficientPrivileges, match="MODIFY"):
            alice.execute("ALTER COMPUTE POOL p SET MAX_NODES = 2")
        assert rows(alice, "SHOW IMAGES IN IMAGE REPOSITORY repo") == []
        alice.execute("CREATE COMPUTE POOL mine MIN_NODES = 1 MAX_NODES = 1 INSTANCE_FAMILY = CPU_X64_XS")
        pools = {r["name"]: r["owner"] for r in rows(alice, "SHOW COMPUTE POOLS")}
        assert pools == {"P": "ACCOUNTADMIN", "MINE": "ANALYST"}
        alice.execute("DROP COMPUTE POOL mine")  # the owner may drop it
    with duckserve.connect(home=str(home)) as admin:
        admin.execute("REVOKE OPERATE ON COMPUTE POOL p FROM ROLE analyst")
    with duckserve.connect(home=str(home), user="alice") as alice:
        with pytest.raises(errors.InsufficientPrivileges, match="OPERATE"):
            alice.execute("ALTER COMPUTE POOL p RESUME")


def test_role_hierarchy_and_ownership_transfer(home: Path) -> None:
    with duckserve.connect(home=str(home)) as admin:
        make_user(admin, "bob", "engineer")
        admin.execute("CREATE ROLE ml_admin")
        admin.execute("GRANT ROLE ml_admin TO ROLE engineer")
        admin.execute("CREATE COMPUTE POOL p MIN_NODES = 1 MAX_NODES = 1 INSTANCE_FAMILY = CPU_X64_XS")
        admin.execute("GRANT USAGE ON COMPUTE POOL p TO ROLE ml_admin")
        with pytest.raises(errors.ProgrammingError, match="cycle"):
            admin.execute("GRANT ROLE engineer TO ROLE ml_admin")
        of = rows(admin, "SHOW GRANTS OF ROLE ml_admin")
        assert [(g["granted_to"], g["grantee_name"]) for g in of] == [("ROLE", "ENGINEER")]
        admin.execute("GRANT OWNERSHIP ON COMPUTE POOL p TO ROLE engineer")
    with duckserve.connect(home=str(home), user="bob") as bob:
        # inherited through ml_admin, then owned outright
        assert rows(bob, "SHOW COMPUTE POOLS")[0]["owner"] == "ENGINEER"
        bob.execute("ALTER COMPUTE POOL p SET COMMENT = 'mine now'")
        bob.execute("USE ROLE ml_admin")  # a role granted through the hierarchy
        with pytest.raises(errors.InsufficientPrivileges):
            bob.execute("ALTER COMPUTE POOL p SET COMMENT = 'not as ml_admin'")


def test_account_grants_and_service_roles(conn: Any) -> None:
    conn.execute("CREATE ROLE r")
    conn.execute("GRANT BIND SERVICE ENDPOINT ON ACCOUNT TO ROLE r")
    conn.execute("GRANT CREATE COMPUTE POOL ON ACCOUNT TO ROLE r")
    account = rows(conn, "SHOW GRANTS ON ACCOUNT")
    assert {(g["privilege"], g["grantee_name"]) for g in account} == {("BIND SERVICE ENDPOINT", "R"),
                                                                         ("CREATE COMPUTE POOL", "R")}
    conn.execute("GRANT SERVICE ROLE my_service!ALL_ENDPOINTS_USAGE TO ROLE r")
    conn.execute("GRANT SERVICE ROLE my_service!INFERENCE_SERVICE_FUNCTION_USAGE TO ROLE r")
    to_r = rows(conn, "SHOW GRANTS TO ROLE r")
    assert {g["name"] for g in to_r if g["granted_on"] == "SERVICE_ROLE"} == {
        "DUCKSERVE.PUBLIC.MY_SERVICE!ALL_ENDPOINTS_USAGE",
        "DUCKSERVE.PUBLIC.MY_SERVICE!INFERENCE_SERVICE_FUNCTION_USAGE"}
    with pytest.raises(errors.ProgrammingError, match="unknown service role"):
        conn.execute("GRANT SERVICE ROLE my_service!EVERYTHING TO ROLE r")
    with pytest.raises(errors.ProgrammingError, match="cannot be granted on compute pool"):
        conn.execute("CREATE COMPUTE POOL p MIN_NODES = 1 MAX_NODES = 1 INSTANCE_FAMILY = CPU_X64_XS; "
                     "GRANT READ ON COMPUTE POOL p TO ROLE r")


def test_users_and_roles(conn: Any) -> None:
    make_user(conn, "carol", "viewer")
    conn.execute("ALTER USER carol SET DISPLAY_NAME = 'Carol C' COMMENT = 'hi'")
    user = {u["name"]: u for u in rows(conn, "SHOW USERS")}["CAROL"]
    assert user["display_name"] == "Carol C" and user["comment"] == "hi"
    assert rows(conn, "SHOW GRANTS TO USER carol")[0]["role"] == "VIEWER"
    conn.execute("REVOKE ROLE viewer FROM USER carol")
    assert rows(conn, "SHOW GRANTS TO USER carol") == []
    with pytest.raises(errors.ProgrammingError, match="built in"):
        conn.execute("DROP ROLE accountadmin")
    with pytest.raises(errors.ProgrammingError, match="current user"):
        conn.execute("DROP USER admin")
    conn.execute("DROP USER carol")
    with pytest.raises(errors.ObjectNotFound):
        duckserve.connect(home=str(conn.account.home), user="carol")


def test_two_processes_share_one_home(home: Path, tmp_path: Path) -> None:
    with duckserve.connect(home=str(home)) as c:
        c.execute("CREATE COMPUTE POOL shared MIN_NODES = 1 MAX_NODES = 1 INSTANCE_FAMILY = CPU_X64_XS")
    script = textwrap.dedent(f"""
        import duckserve, sys
        c = duckserve.connect(home={str(home)!r})
        worker = sys.argv[1]
        for i in range(25):
            c.execute(f"CREATE ROLE r_{{worker}}_{{i}}")
            c.execute(f"GRANT USAGE ON COMPUTE POOL shared TO ROLE r_{{worker}}_{{i}}")
        names = [r[1] for r in c.execute("SHOW ROLES").fetchall()]
        print(sum(1 for n in names if n.startswith("R_")))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, w], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for w in ("a", "b")]
    outputs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err
    with duckserve.connect(home=str(home)) as c:
        roles = [r["name"] for r in rows(c, "SHOW ROLES") if r["name"].startswith("R_")]
        assert len(roles) == 50
        grants = rows(c, "SHOW GRANTS ON COMPUTE POOL shared")
        assert len([g for g in grants if g["privilege"] == "USAGE"]) == 50


def test_describe_use_and_unset(conn: Any) -> None:
    conn.execute("CREATE WAREHOUSE reporting WAREHOUSE_SIZE = SMALL COMMENT = 'dashboards'")
    described = rows(conn, "DESCRIBE WAREHOUSE reporting")
    assert [(d["name"], d["size"], d["comment"]) for d in described] == [("REPORTING", "Small", "dashboards")]
    conn.execute("CREATE USER dora EMAIL = 'dora@example.com' DEFAULT_WAREHOUSE = reporting")
    user = {r["property"]: r["value"] for r in rows(conn, "DESCRIBE USER dora")}
    assert user["email"] == "dora@example.com" and user["default_warehouse"] == "REPORTING"
    conn.execute("ALTER USER dora UNSET EMAIL, DEFAULT_WAREHOUSE")
    user = {r["property"]: r["value"] for r in rows(conn, "DESCRIBE USER dora")}
    assert user["email"] is None and user["default_warehouse"] is None
    conn.execute("CREATE IMAGE REPOSITORY analytics.ml.repo")
    assert rows(conn, "SELECT name, database_name FROM (DESCRIBE IMAGE REPOSITORY analytics.ml.repo)") == [
        {"name": "REPO", "database_name": "ANALYTICS"}]
    # USE DATABASE / USE SCHEMA set the namespace for unqualified schema objects
    conn.execute("USE SCHEMA analytics.ml")
    conn.execute("CREATE IMAGE REPOSITORY second")
    assert {(r["database_name"], r["schema_name"]) for r in rows(conn, "SHOW IMAGE REPOSITORIES LIKE 'SECOND'")} == {
        ("ANALYTICS", "ML")}
    conn.execute("USE DATABASE duckserve")
    conn.execute("USE SCHEMA public")
    assert (conn.session.database, conn.session.schema) == ("DUCKSERVE", "PUBLIC")
    # SHOW GRANTS alone lists the roles of the current user
    assert [(g["role"], g["grantee_name"]) for g in rows(conn, "SHOW GRANTS")] == [("ACCOUNTADMIN", "ADMIN")]
    assert rows(conn, "SHOW TERSE COMPUTE POOLS") == []
