"""Snowflake's own clients against duckserve: snowflake-connector-python and snowflake-sqlalchemy,
unmodified, through ``duckserve server``.

    python examples/snowflake_clients.py            # a throwaway account and database
    python examples/snowflake_clients.py --port 8765 --token SECRET   # a server you started yourself

Without ``--port`` it makes an account in a temporary folder, mints a programmatic access token
for ADMIN, starts ``duckserve server`` on a free loopback port, and stops it at the end. The only
settings that differ from a Snowflake account's are ``host``, ``port``, ``protocol="http"`` and
the token.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pandas as pd

import duckserve

# the connector probes cloud metadata addresses at login to report its platform: not needed here
os.environ.setdefault("SNOWFLAKE_DISABLE_PLATFORM_DETECTION", "true")


def start_server(home: Path, database: Path) -> tuple[subprocess.Popen[bytes], int]:
    port_file = home.parent / "server.port"
    process = subprocess.Popen([sys.executable, "-m", "duckserve", "server", "--home", str(home),
                                "--database", str(database), "--port", "0", "--port-file", str(port_file)])
    for _ in range(600):
        if port_file.exists() and port_file.read_text().strip():
            return process, int(port_file.read_text())
        if process.poll() is not None:
            raise SystemExit("duckserve server exited before it listened")
        time.sleep(0.05)
    process.terminate()
    raise SystemExit("duckserve server did not start within 30 s")


def connector_example(port: int, token: str) -> None:
    import snowflake.connector

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the connector warns that http is not https
        conn = snowflake.connector.connect(
            host="127.0.0.1", port=port, protocol="http",      # where duckserve server listens
            account="duckserve", user="ADMIN",                  # any account name; a user of the home
            authenticator="PROGRAMMATIC_ACCESS_TOKEN", token=token,
        )
    with conn:
        cur = conn.cursor()
        cur.execute("CREATE COMPUTE POOL IF NOT EXISTS demo_pool MIN_NODES = 1 MAX_NODES = 1 "
                    "INSTANCE_FAMILY = 'CPU_X64_XS'")
        cur.execute("SELECT name, state FROM (SHOW COMPUTE POOLS)")
        print("connector, SHOW COMPUTE POOLS:", cur.fetchall())
        cur.execute("CREATE OR REPLACE TABLE orders AS SELECT range AS id, range * 2.5 AS amount FROM range(100000)")
        cur.execute("SELECT count(*), sum(amount) FROM orders WHERE id >= %s", (50_000,))
        print("connector, a bound parameter:", cur.fetchone(), "query id", cur.sfqid)
        cur.execute("SELECT * FROM orders ORDER BY id")
        frame = cur.fetch_pandas_all()
        print("connector, fetch_pandas_all:", frame.shape, list(frame.columns))


def sqlalchemy_example(port: int, token: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(
        f"snowflake://ADMIN@duckserve/?authenticator=PROGRAMMATIC_ACCESS_TOKEN&token={token}",
        connect_args={"host": "127.0.0.1", "port": port, "protocol": "http"},
    )
    try:
        pd.DataFrame({"name": ["ann", "bob"], "score": [1.5, 2.5]}).to_sql("people", engine, index=False,
                                                                          if_exists="replace")
        print("snowflake-sqlalchemy, tables:", sorted(sa.inspect(engine).get_table_names()))
        print("snowflake-sqlalchemy, read_sql:", pd.read_sql("SELECT * FROM people ORDER BY name", engine)
              .to_dict("records"))
    finally:
        engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, help="a running duckserve server's port (default: start one)")
    parser.add_argument("--token", help="a programmatic access token of ADMIN (with --port)")
    args = parser.parse_args()
    if args.port:
        if not args.token:
            parser.error("--port needs --token: ALTER USER admin ADD PROGRAMMATIC ACCESS TOKEN demo")
        connector_example(args.port, args.token)
        sqlalchemy_example(args.port, args.token)
        return 0
    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder) / "home"
        with duckserve.connect(home=str(home)) as conn:
            token = str(conn.execute("ALTER USER admin ADD PROGRAMMATIC ACCESS TOKEN demo").fetchall()[0][1])
        process, port = start_server(home, Path(folder) / "served.duckdb")
        try:
            connector_example(port, token)
            sqlalchemy_example(port, token)
        finally:
            process.terminate()
            process.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
