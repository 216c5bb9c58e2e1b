"""`duckserve sql` from -c, -f and piped input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run_cli(*args: str, home: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "duckserve", "sql", "--home", str(home), *args], input=stdin,
                          capture_output=True, text=True, timeout=120)


def test_command_file_and_pipe(tmp_path: Path) -> None:
    home, db = tmp_path / "home", tmp_path / "data.duckdb"
    done = run_cli(str(db), "-c", "CREATE COMPUTE POOL p MIN_NODES = 1 MAX_NODES = 1 INSTANCE_FAMILY = CPU_X64_XS; "
                   "SELECT name, state FROM (SHOW COMPUTE POOLS)", home=home)
    assert done.returncode == 0, done.stderr
    assert "| P    | IDLE  |" in done.stdout and "1 row" in done.stdout
    script = tmp_path / "setup.sql"
    script.write_text("-- several statements\nCREATE TABLE t AS SELECT range AS i FROM range(3);\n"
                      "SELECT sum(i) AS total FROM t;\n")
    done = run_cli(str(db), "-f", str(script), "--format", "csv", home=home)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-2:] == ["total", "3"]
    done = run_cli(str(db), home=home, stdin="SELECT count(*) AS n FROM t;\nSHOW COMPUTE POOLS LIKE 'nope';\n")
    assert done.returncode == 0, done.stderr
    assert "| 3 |" in done.stdout and "0 rows" in done.stdout


def test_errors_exit_nonzero_with_position(tmp_path: Path) -> None:
    done = run_cli("-c", "CREATE COMPUTE POOL p MIN_NODES = 1\n MAX_NODE = 2", home=tmp_path / "home")
    assert done.returncode == 1
    assert "line 2, column 2" in done.stderr and "MAX_NODE" in done.stderr
