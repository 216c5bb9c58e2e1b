"""The duckserve demo: an account, a compute pool, an image repository, grants, and SHOW as a table."""

from __future__ import annotations

import tempfile

import duckserve
from duckserve.sql.cli import format_table


def show(conn: duckserve.Connection, sql: str) -> None:
    print(f"\n> {sql}")
    print(format_table(conn.cursor().execute(sql).fetch_arrow_table()))


def main() -> None:
    with tempfile.TemporaryDirectory() as home, duckserve.connect(home=home) as conn:
        conn.cursor().execute("""
            CREATE COMPUTE POOL IF NOT EXISTS mypool MIN_NODES = 1 MAX_NODES = 2
              INSTANCE_FAMILY = 'CPU_X64_M' AUTO_RESUME = TRUE;
            CREATE IMAGE REPOSITORY IF NOT EXISTS my_inference_images;
            CREATE ROLE IF NOT EXISTS myrole;
            GRANT USAGE ON COMPUTE POOL mypool TO ROLE myrole;
            GRANT READ, WRITE, SERVICE READ, SERVICE WRITE ON IMAGE REPOSITORY my_inference_images TO ROLE myrole;
        """)
        show(conn, "SELECT name, state, instance_family, min_nodes, max_nodes FROM (SHOW COMPUTE POOLS)")
        show(conn, "SELECT privilege, granted_on, name FROM (SHOW GRANTS TO ROLE myrole)")


if __name__ == "__main__":
    main()
