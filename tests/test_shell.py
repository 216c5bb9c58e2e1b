"""The SQL shell: piped input, output formats, commands, completion, and the interactive shell
driven in a real pseudo-terminal (keystrokes in, screen out)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document

import duckserve
from duckserve.sql import formatting
from duckserve.sql.completion import Metadata, SQLCompleter, load_metadata
from duckserve.sql.shell import LineReader, Settings, units
from tests.terminal import Terminal


def shell(*args: str, home: Path, stdin: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "duckserve", *args, "--home", str(home)], input=stdin,
                          capture_output=True, text=True, timeout=120, cwd=cwd)


def terminal_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "DUCKSERVE_HISTORY", "COLUMNS", "LINES")}
    env.update(TERM="xterm-256color", PROMPT_TOOLKIT_NO_CPR="1", DUCKSERVE_HISTORY=str(tmp_path / "history"),
               PYTHONUNBUFFERED="1")
    return env


# -- piped input ---------------------------------------------------------------------------------------
def test_piped_statements_commands_and_formats(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "inner.sql").write_text("SELECT 'inner' AS source;\n")
    (tmp_path / "sub" / "outer.sql").write_text("!print from outer\n!source inner.sql\n")
    script = f"""
-- statements may span lines and hold ';' in strings
CREATE TABLE t AS
  SELECT range AS id, 'a;b' AS s, range * 1.5 AS x FROM range(3);
SELECT id, s, x FROM t ORDER BY id;
!set output_format=csv
SELECT id, s FROM t WHERE id = 1;
!set output_format json
SELECT id, x FROM t WHERE id < 2 ORDER BY id;
!set output_format=markdown
SELECT 'a|b' AS pipe, 7 AS n;
!define who=world
!print hello &who
SELECT '&{{who}}' AS greeting;
!set output_format=table
!source {tmp_path / 'sub' / 'outer.sql'}
"""
    done = shell("shell", str(tmp_path / "db.duckdb"), home=tmp_path / "home", stdin=script)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "| id | s   | x   |" in out and "|  2 | a;b | 3.0 |" in out and "3 rows" in out
    assert "id,s\n1,a;b\n" in out
    assert '[\n{"id": 0, "x": 0.0},\n{"id": 1, "x": 1.5}\n]' in out
    assert "| pipe | n |\n|---|---:|\n| a\\|b | 7 |" in out
    assert "hello world" in out and "| greeting |\n|---|\n| world |" in out
    assert "from outer" in out and "| inner  |" in out
    assert done.stderr == ""


def test_piped_error_stops_with_exit_code_1(tmp_path: Path) -> None:
    script = "SELECT 1 AS a;\nSELECT nope;\nSELECT 2 AS b;\n"
    done = shell("shell", home=tmp_path / "home", stdin=script)
    assert done.returncode == 1
    assert "| a |" in done.stdout and "| b |" not in done.stdout
    assert "error:" in done.stderr and "nope" in done.stderr
    # with exit_on_error off the script goes on, and the exit code still says something failed
    done = shell("shell", "-o", "exit_on_error=false", home=tmp_path / "home", stdin=script)
    assert done.returncode == 1 and "| b |" in done.stdout
    done = shell("shell", home=tmp_path / "home", stdin="!set colour=blue\n")
    assert done.returncode == 1 and "unknown option 'colour'" in done.stderr and "output_format" in done.stderr
    done = shell("shell", home=tmp_path / "home", stdin="!frobnicate\n")
    assert done.returncode == 1 and "unknown command !frobnicate: !help lists the commands" in done.stderr


def test_sql_command_pipes_and_files_take_commands(tmp_path: Path) -> None:
    home = tmp_path / "home"
    done = shell("sql", "--format", "csv", home=home, stdin="SELECT 1 AS a;\n!set output_format=jsonl\nSELECT 2 AS b;\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout == 'a\n1\n{"b": 2}\n'
    script = tmp_path / "s.sql"
    script.write_text("SELECT 1 AS a;\n\nSELECT * FROM missing_table;\n")
    done = shell("sql", "-f", str(script), home=home, stdin="")
    assert done.returncode == 1
    assert f"{script}, statement at line 3: " in done.stderr and "missing_table" in done.stderr


def test_help_options_and_queries(tmp_path: Path) -> None:
    done = shell("shell", home=tmp_path / "home", stdin="!help\n!options\nSELECT 42 AS x;\n!queries\n")
    assert done.returncode == 0, done.stderr
    assert "!source FILE" in done.stdout and "output_format" in done.stdout and "Ctrl-C cancels" in done.stdout
    assert "| SUCCESS |    1 |" in done.stdout and "SELECT 42 AS x" in done.stdout


def test_line_reader_splits_units() -> None:
    got = units("SELECT 1;\n!set a=b\nSELECT 'x;\ny'\n  AS s; SELECT\n 2;\n-- only a comment\nquit\nSELECT 3")
    assert [(u.kind, u.text, u.line) for u in got] == [
        ("sql", "SELECT 1;", 1), ("command", "!set a=b", 2), ("sql", "SELECT 'x;\ny'\n  AS s; SELECT\n 2;", 3),
        ("command", "!quit", 8), ("sql", "SELECT 3", 9)]
    reader = LineReader()
    assert reader.feed("SELECT /* ; */ 1") == [] and reader.feed(";")[0].text == "SELECT /* ; */ 1\n;"


def test_settings_validate() -> None:
    settings = Settings()
    assert settings.set("format", "MD") == "output_format" and settings.output_format == "markdown"
    assert settings.set("timing", "off") == "timing" and settings.timing is False
    with pytest.raises(ValueError, match="max_rows is a whole number"):
        settings.set("max_rows", "many")
    with pytest.raises(ValueError, match="unknown output format 'xml'"):
        settings.set("output_format", "xml")


# -- formatting ----------------------------------------------------------------------------------------
def test_formats() -> None:
    table = pa.table({"name": ["a", "très long name", None], "n": [1, 22, None], "f": [0.5, None, 2.0]})
    text = formatting.render(table, "table", formatting.FormatOptions(max_cell_width=8), seconds=0.25)
    assert text.splitlines()[1:6] == ["| name     | n    | f    |", "+----------+------+------+",
                                      "| a        |    1 |  0.5 |", "| très lo… |   22 | NULL |",
                                      "| NULL     | NULL |  2.0 |"]
    assert text.endswith("3 rows (0.250 s)")
    limited = formatting.render(table, "table", formatting.FormatOptions(max_rows=1))
    assert limited.endswith("3 rows, 1 shown (!set max_rows=N to see more)")
    assert formatting.render(table, "csv") == "name,n,f\na,1,0.5\ntrès long name,22,\n,,2.0"
    assert json.loads(formatting.render(table, "json"))[1] == {"name": "très long name", "n": 22, "f": None}
    assert formatting.render(table, "jsonl").splitlines()[0] == '{"name": "a", "n": 1, "f": 0.5}'
    assert formatting.render(table, "vertical").splitlines()[:4] == ["-[ RECORD 1 ]", "name | a", "n    | 1",
                                                                     "f    | 0.5"]
    wide = formatting.render(pa.table({"k": ["日本", "ab"]}), "table")
    assert "| 日本 |" in wide and "| ab   |" in wide  # wide characters take two columns


# -- completion ----------------------------------------------------------------------------------------
@pytest.fixture
def account(tmp_path: Path) -> Iterator[Any]:
    conn = duckserve.connect(home=str(tmp_path / "home"))
    conn.execute("""
        CREATE COMPUTE POOL gpu_pool MIN_NODES = 1 MAX_NODES = 1 INSTANCE_FAMILY = 'CPU_X64_XS';
        CREATE IMAGE REPOSITORY my_images;
        CREATE WAREHOUSE big_wh WAREHOUSE_SIZE = 'MEDIUM';
        CREATE TABLE orders AS SELECT 1 AS order_id, 2.0 AS amount, 3 AS customer_id;
        CREATE SCHEMA raw;
        CREATE TABLE raw.events (event_id INTEGER, kind VARCHAR);
    """)
    yield conn
    conn.close()


def complete(completer: SQLCompleter, text: str) -> list[str]:
    return [c.text for c in completer.get_completions(Document(text), CompleteEvent(completion_requested=True))]


def test_completion_contexts(account: Any) -> None:
    meta = load_metadata(account)
    assert meta.pools == ["GPU_POOL"] and "MY_IMAGES" in meta.repositories and "BIG_WH" in meta.warehouses
    meta.services["CHURN_SVC"] = ["predict", "predict_proba"]
    completer = SQLCompleter(lambda: meta, {"!set": lambda _a: ["output_format="], "!source": None})
    assert complete(completer, "SELECT churn_svc!") == ["predict", "predict_proba"]
    assert complete(completer, "SELECT id, CHURN_SVC!PREDICT_") == ["PREDICT_PROBA"]
    assert complete(completer, "select ch")[:1] == ["churn_svc"]
    assert complete(completer, "GRANT SERVICE ROLE churn_svc!INF") == ["INFERENCE_SERVICE_FUNCTION_USAGE"]
    assert complete(completer, "SHOW COMPUTE PO") == ["POOLS"]
    assert complete(completer, "show co") == ["compute pools"]
    assert "IMAGE REPOSITORY" in complete(completer, "CREATE ")
    assert complete(completer, "ALTER COMPUTE POOL ") == ["gpu_pool"]
    assert complete(completer, "SHOW SERVICES IN COMPUTE POOL G") == ["GPU_POOL"]
    assert complete(completer, "USE WAREHOUSE b") == ["big_wh"]
    assert complete(completer, "SHOW IMAGES IN IMAGE REPOSITORY ") == ["my_images"]
    assert complete(completer, "CREATE COMPUTE POOL p MIN_NO") == ["MIN_NODES"]
    assert complete(completer, "SELECT * FROM ord") == ["orders"]
    assert complete(completer, "SELECT * FROM raw.") == ["events"]
    doc = Document("SELECT o.am FROM orders AS o", cursor_position=len("SELECT o.am"))
    got = [c.text for c in completer.get_completions(doc, CompleteEvent(completion_requested=True))]
    assert got == ["amount"]
    doc = Document("SELECT cust FROM orders", cursor_position=len("SELECT cust"))
    assert [c.text for c in completer.get_completions(doc, CompleteEvent())][:1] == ["customer_id"]
    assert complete(completer, "SELECT 1; SELECT * FROM (SHOW COMP") == ["COMPUTE POOLS"]
    assert complete(completer, "!se") == ["!set"]
    assert complete(completer, "!set out") == ["output_format="]
    # typing a space alone pops up nothing; Tab (completion_requested) does
    assert list(completer.get_completions(Document("SELECT id, "), CompleteEvent())) == []


def test_metadata_is_read_without_touching_the_session_history(account: Any) -> None:
    cursor = account.cursor().execute("SELECT 41 + 1 AS answer")
    load_metadata(account)
    again = account.cursor().execute("SELECT * FROM TABLE(RESULT_SCAN(LAST_QUERY_ID()))")
    assert again.fetchall() == [(42,)] and cursor.sfqid is not None
    assert isinstance(Metadata().service_methods("x"), list)


# -- the interactive shell in a pseudo-terminal ----------------------------------------------------------
@pytest.fixture
def tty(tmp_path: Path) -> Iterator[Any]:
    started: list[Terminal] = []

    def start() -> Terminal:
        term = Terminal([sys.executable, "-m", "duckserve", "shell", str(tmp_path / "db.duckdb"), "--home",
                         str(tmp_path / "home")], terminal_env(tmp_path))
        started.append(term)
        term.expect(r"#COMPUTE_WH@DUCKSERVE\.PUBLIC>", timeout=60)
        return term

    yield start
    for term in started:
        term.close()


def test_terminal_multiline_completion_formats_and_history(tty: Any, tmp_path: Path) -> None:
    term = tty()
    term.type("CREATE TABLE orders AS SELECT range AS order_id, range * 2.5 AS amount FROM range(4);")
    term.send("enter")
    term.expect(r"Statement executed, 4 rows changed")
    # a statement over several lines runs when a line ends with ';'
    term.type("SELECT order_id,")
    term.send("enter")
    term.expect(r"\.\.>")
    term.type("  amount")
    term.send("enter")
    term.type("FROM ord")
    term.send("tab")  # completes the table name
    term.type(" WHERE order_id < 3 ORDER BY 1;")
    term.send("enter")
    term.expect(r"\| order_id \| amount \|.*?\|        2 \|    5\.0 \|.*?3 rows \(\d+\.\d+ s\)")
    term.type("!set output_format=csv")
    term.send("enter")
    term.type("SELECT amount FROM orders WHERE order_id = 3;")
    term.send("enter")
    term.expect(r"amount\n7\.5\n1 row")
    # Ctrl-C at the prompt drops the text typed so far and keeps the shell
    term.type("SELECT 'never run'")
    term.send("ctrl-c")
    term.type("SELECT 4242 AS answer;")
    term.send("enter")
    term.expect(r"answer\n4242\n")
    assert "never run\n" not in term.text()
    term.send("ctrl-d")
    assert term.wait() == 0
    assert "SELECT 4242 AS answer;" in (tmp_path / "history").read_text()

    # history across restarts: Up brings back the last statement of the previous session
    term = tty()
    term.send("up")
    term.expect(r"SELECT 4242 AS answer;")
    term.send("enter")
    term.expect(r"\|   4242 \|.*?1 row")
    term.type("!quit")
    term.send("enter")
    assert term.wait() == 0


def test_terminal_ctrl_c_interrupts_a_long_duckdb_query(tty: Any) -> None:
    term = tty()
    term.type("SELECT count(*) FROM range(1000000000000) a, range(1000) b WHERE a.range * b.range = -1;")
    term.send("enter")
    term.expect(r"Ctrl-C cancels", timeout=30)
    term.send("ctrl-c")
    term.expect(r"statement cancelled after [\d.]+ s \(Ctrl-C\)", timeout=20)
    term.expect(r"PUBLIC>")
    term.type("SELECT 'still here' AS status;")
    term.send("enter")
    term.expect(r"still here.*?1 row")
    term.send("ctrl-d")
    assert term.wait() == 0


def test_sql_on_a_terminal_starts_the_shell(tmp_path: Path) -> None:
    term = Terminal([sys.executable, "-m", "duckserve", "sql", "--home", str(tmp_path / "home")],
                    terminal_env(tmp_path))
    try:
        term.expect(r"duckserve .* shell .*?Statements end with ';'.*?PUBLIC>", timeout=60)
        term.type("SHOW WAREHOUSES;")
        term.send("enter")
        term.expect(r"COMPUTE_WH.*?1 row")
        term.type("exit")
        term.send("enter")
        assert term.wait() == 0
    finally:
        term.close()
