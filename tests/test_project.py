"""``duckserve run``: dbt-style projects. Small projects written here for each behaviour, and the
jaffle_shop example end to end with its churn-scoring service."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import duckserve
from duckserve.sql.project import Project, ProjectError, run_project

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "jaffle_shop"


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
    return root


BASE = {
    "dbt_project.yml": """
        name: shop
        vars:
          min_amount: 10
        seeds:
          shop:
            +schema: raw
        models:
          shop:
            +materialized: view
            marts:
              +materialized: table
              +tags: [daily]
        on-run-start: ["CREATE TABLE IF NOT EXISTS audit (note VARCHAR)"]
        on-run-end: ["INSERT INTO audit VALUES ('{{ target.name }} done')"]
    """,
    "seeds/raw_orders.csv": "id,customer,amount\n1,ann,5\n2,ann,20\n3,bob,30\n",
    "models/sources.yml": """
        version: 2
        sources:
          - name: shop_raw
            schema: raw
            tables:
              - name: raw_orders
        models:
          - name: customer_totals
            config:
              tags: [finance]
    """,
    "macros/money.sql": "{% macro money(col) %}round({{ col }}::DECIMAL(10, 2), 2){% endmacro %}\n",
    "models/staging/stg_orders.sql": """
        select id as order_id, customer, {{ money('amount') }} as amount
        from {{ source('shop_raw', 'raw_orders') }}
    """,
    "models/marts/big_orders.sql": """
        select * from {{ ref('stg_orders') }} where amount >= {{ var('min_amount') }}
    """,
    "models/marts/customer_totals.sql": """
        {{ config(schema='reports') }}
        select customer, sum(amount) as total, count(*) as orders
        from {{ ref('stg_orders') }}
        group by customer
    """,
}


def run(root: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "duckserve", "run", str(root), "--home", str(home), *args],
                          capture_output=True, text=True, timeout=300)


def query(database: Path, home: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = duckserve.connect(str(database), home=str(home))
    try:
        return [tuple(r) for r in conn.execute(sql).fetchall()]
    finally:
        conn.close()


def test_project_runs_seeds_and_models_in_order(tmp_path: Path) -> None:
    root = write(tmp_path / "shop", BASE)
    home, out = tmp_path / "home", io.StringIO()
    assert run_project(root, home=str(home), out=out, err=out), out.getvalue()
    log = out.getvalue()
    assert "Running project shop: 1 seed(s), 3 model(s), 1 setup step(s)" in log
    order = re.findall(r" OK    .*? (\w+\.\w+) \.\.\.", log)
    assert order == ["raw.raw_orders", "main.stg_orders", "main.big_orders", "reports.customer_totals"]
    assert "[INSERT 3 in " in log and "[CREATE VIEW in " in log and "[SELECT 2 in " in log
    assert "PASS=4 ERROR=0 SKIP=0 TOTAL=4" in log
    database = root / "shop.duckdb"
    assert query(database, home, "SELECT customer, total, orders FROM reports.customer_totals ORDER BY 1") == [
        ("ann", 25, 2), ("bob", 30, 1)]
    assert query(database, home, "SELECT table_type FROM information_schema.tables WHERE table_name = "
                                 "'stg_orders'") == [("VIEW",)]
    assert query(database, home, "SELECT note FROM audit") == [("dev done",)]
    compiled = (root / "target/compiled/shop/models/marts/big_orders.sql").read_text()
    assert '"main"."stg_orders" where amount >= 10' in compiled
    results = json.loads((root / "target/run_results.json").read_text())
    assert [r["status"] for r in results["results"]] == ["success"] * 4
    assert results["results"][0]["unique_id"] == "seed.shop.raw_orders" and results["results"][0]["rows_affected"] == 3

    # --vars overrides the project's vars; a second run replaces what the first built
    out = io.StringIO()
    assert run_project(root, home=str(home), cli_vars={"min_amount": 25}, select=["big_orders"], out=out, err=out)
    assert query(database, home, "SELECT order_id FROM big_orders") == [(3,)]


def test_selectors(tmp_path: Path) -> None:
    project = Project(write(tmp_path / "shop", BASE))
    assert project.select(["big_orders"]) == ["big_orders"]
    assert project.select(["+big_orders"]) == ["raw_orders", "stg_orders", "big_orders"]
    assert project.select(["stg_orders+"]) == ["stg_orders", "big_orders", "customer_totals"]
    assert project.select(["1+big_orders"]) == ["stg_orders", "big_orders"]
    assert project.select(["tag:daily"]) == ["big_orders", "customer_totals"]
    assert project.select(["tag:finance"]) == ["customer_totals"]
    assert project.select(["path:models/marts"]) == ["big_orders", "customer_totals"]
    assert project.select(["marts"]) == ["big_orders", "customer_totals"]
    assert project.select(["stg_*", "customer_totals"]) == ["stg_orders", "customer_totals"]
    assert project.select(["+customer_totals"], exclude=["resource_type:seed"]) == ["stg_orders", "customer_totals"]
    assert project.select(["tag:daily,+big_orders"]) == ["big_orders"]
    assert project.select(["config.materialized:view"]) == ["stg_orders"]
    with pytest.raises(ProjectError, match="--select 'nope' matches no model or seed; the project has: raw_orders"):
        project.select(["nope"])


def test_unknown_ref_source_and_cycle_name_the_files(tmp_path: Path) -> None:
    root = write(tmp_path / "a", {**BASE, "models/marts/bad.sql": "select * from {{ ref('stg_order') }}\n"})
    with pytest.raises(ProjectError, match=r"models/marts/bad.sql refers to ref\('stg_order'\), which is no model "
                                           r"or seed of the project; did you mean 'stg_orders' "
                                           r"\(models/staging/stg_orders.sql\)\?"):
        Project(root)
    root = write(tmp_path / "b", {**BASE, "models/marts/bad.sql": "select * from {{ source('shop_raw', 'x') }}\n"})
    with pytest.raises(ProjectError, match=r"models/marts/bad.sql refers to source\('shop_raw', 'x'\).*"
                                           r"declared: shop_raw.raw_orders"):
        Project(root)
    root = write(tmp_path / "c", {"dbt_project.yml": "name: loop\n",
                                  "models/one.sql": "select * from {{ ref('three') }}\n",
                                  "models/two.sql": "select * from {{ ref('one') }}\n",
                                  "models/three.sql": "select * from {{ ref('two') }}\n",
                                  "models/fine.sql": "select 1 as x\n"})
    with pytest.raises(ProjectError, match=r"dependency cycle: models/one.sql -> models/two.sql -> "
                                           r"models/three.sql -> models/one.sql"):
        Project(root)
    root = write(tmp_path / "d", {"dbt_project.yml": "name: dup\n", "models/x/m.sql": "select 1\n",
                                  "models/y/m.sql": "select 2\n"})
    with pytest.raises(ProjectError, match="two nodes are named m: models/x/m.sql and models/y/m.sql"):
        Project(root)
    with pytest.raises(ProjectError, match="has no dbt_project.yml"):
        Project(tmp_path / "d" / "models")
    # the command line says the same and exits 2
    done = run(tmp_path / "c", tmp_path / "home")
    assert done.returncode == 2 and "dependency cycle: models/one.sql" in done.stderr


def test_failures_report_file_line_and_database_error(tmp_path: Path) -> None:
    broken = """
        -- totals with a typo
        select
            customer,
            sum(amont) as total
        from {{ ref('stg_orders') }}
        group by customer
    """
    root = write(tmp_path / "shop", {**BASE, "models/marts/customer_totals.sql": broken})
    done = run(root, tmp_path / "home")
    assert done.returncode == 1
    assert "ERROR table model" in done.stdout and "PASS=3 ERROR=1 SKIP=0" in done.stdout
    assert "Failure in model customer_totals (models/marts/customer_totals.sql, line 4):" in done.stderr
    assert 'Referenced column "amont" not found' in done.stderr
    assert "compiled SQL: target/compiled/shop/models/marts/customer_totals.sql" in done.stderr
    # a failure stops the run: what comes after is skipped
    root = write(tmp_path / "shop", {"models/marts/aaa.sql": "select nope from {{ ref('stg_orders') }}\n"})
    done = run(root, tmp_path / "home")
    assert done.returncode == 1 and "SKIP=2" in done.stdout and "(models/marts/aaa.sql, line 1)" in done.stderr
    # Jinja problems point at the file and line too
    root = write(tmp_path / "j", {**BASE, "models/marts/customer_totals.sql":
                                  "{{ config(\n  materialized='table'\n) }}\nselect {{ var('missing') }} as x\n"})
    with pytest.raises(ProjectError, match=r"^models/marts/customer_totals.sql, line 4: var\('missing'\) is not "
                                           r"defined: add it under vars: in dbt_project.yml or pass --vars"):
        run_project(root, home=str(tmp_path / "home"))
    root = write(tmp_path / "k", {**BASE, "models/marts/customer_totals.sql": "select 1;\nselect 2\n"})
    out = io.StringIO()
    assert not run_project(root, home=str(tmp_path / "home"), out=out, err=out)
    assert "line 2):\n  a model is one SELECT statement and this one has 2" in out.getvalue()


def test_views_cannot_hold_service_calls(tmp_path: Path) -> None:
    root = write(tmp_path / "shop", {**BASE, "models/staging/scored.sql":
                                     "select\n  churn_svc!predict(amount) as p\nfrom {{ ref('stg_orders') }}\n"})
    out = io.StringIO()
    assert not run_project(root, home=str(tmp_path / "home"), select=["+scored"], out=out, err=out)
    assert ("Failure in model scored (models/staging/scored.sql, line 2):\n  scored is a view but calls "
            "churn_svc!predict") in out.getvalue()
    assert "{{ config(materialized='table') }}" in out.getvalue()


def test_incremental_models(tmp_path: Path) -> None:
    files = {
        "dbt_project.yml": "name: events\n",
        "seeds/raw_events.csv": "id,kind,value\n1,a,10\n2,b,20\n",
        "models/events.sql": """
            {{ config(materialized='incremental', unique_key='id', on_schema_change='append_new_columns') }}
            select id, kind, value, '{{ var("batch", "first") }}' as batch
            from {{ ref('raw_events') }}
            {% if is_incremental() %}
            where id > (select max(id) from {{ this }}) or kind = 'fix'
            {% endif %}
        """,
    }
    root = write(tmp_path / "ev", files)
    home, database = tmp_path / "home", tmp_path / "ev" / "events.duckdb"
    out = io.StringIO()
    assert run_project(root, home=str(home), out=out, err=out)
    assert "incremental model main.events" in out.getvalue() and "[SELECT 2 in" in out.getvalue()
    (root / "seeds/raw_events.csv").write_text("id,kind,value\n1,fix,11\n2,b,20\n3,c,30\n")
    out = io.StringIO()
    assert run_project(root, home=str(home), cli_vars={"batch": "second"}, out=out, err=out)
    assert "[INSERT 2, DELETE 1 in" in out.getvalue()
    assert query(database, home, "SELECT id, kind, value, batch FROM events ORDER BY id") == [
        (1, "fix", 11, "second"), (2, "b", 20, "first"), (3, "c", 30, "second")]
    # a new column is added (on_schema_change='append_new_columns'); --full-refresh rebuilds
    (root / "models/events.sql").write_text(files["models/events.sql"].replace("as batch", "as batch, 1 as extra")
                                            .replace("or kind = 'fix'", ""))
    out = io.StringIO()
    assert run_project(root, home=str(home), out=out, err=out), out.getvalue()
    assert query(database, home, "SELECT count(*), count(extra) FROM events") == [(3, 0)]
    out = io.StringIO()
    assert run_project(root, home=str(home), full_refresh=True, out=out, err=out)
    assert "[SELECT 3 in" in out.getvalue()
    assert query(database, home, "SELECT count(extra) FROM events") == [(3,)]


def test_profiles_and_python_setup(tmp_path: Path) -> None:
    files = {
        "dbt_project.yml": "name: prof\nprofile: prof\nvars:\n  n: 3\n",
        "profiles.yml": "prof:\n  target: dev\n  outputs:\n    dev:\n      type: duckserve\n      path: data/prof.duckdb\n",
        "setup/01_tables.sql": "CREATE TABLE IF NOT EXISTS numbers AS SELECT range AS n FROM range({{ var('n') }});\n",
        "setup/02_more.py": "def setup(conn, vars):\n    conn.execute('CREATE OR REPLACE TABLE extra AS SELECT 42 AS x')\n"
                            "    return 'made extra'\n",
        "models/total.sql": "select (select sum(n) from numbers) + (select x from extra) as total\n",
    }
    (tmp_path / "p" / "data").mkdir(parents=True)
    root = write(tmp_path / "p", files)
    out = io.StringIO()
    assert run_project(root, home=str(tmp_path / "home"), out=out, err=out), out.getvalue()
    assert "OK    setup setup/02_more.py [made extra in" in out.getvalue()
    assert query(root / "data" / "prof.duckdb", tmp_path / "home", "SELECT total FROM total") == [(45,)]
    (root / "setup/02_more.py").write_text("def setup(conn):\n    raise RuntimeError('no model today')\n")
    out = io.StringIO()
    assert not run_project(root, home=str(tmp_path / "home"), out=out, err=out)
    assert "Failure in setup setup/02_more.py (setup/02_more.py, line 2):\n  RuntimeError: no model today" in \
        out.getvalue()
    assert "SKIP=1" in out.getvalue()


# -- the example, end to end --------------------------------------------------------------------------------
