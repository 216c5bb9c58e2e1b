"""``duckserve shell``: an interactive SQL shell in the manner of snowsql, pgcli and the DuckDB CLI.

On a terminal: prompt_toolkit with multi-line input that runs at ``;``, persistent history,
SQL highlighting, completion of keywords, our statements and the names in the database and the
account (``svc!`` completes the service's methods), results as aligned tables (or csv, json,
markdown, ...), a progress line while service functions run, and Ctrl-C cancelling the running
statement. Without a terminal it reads statements and ``!`` commands from standard input and
prints plain results, so scripts and tests can drive it.

A statement runs on a worker thread while the main thread waits, draws the progress line and
takes Ctrl-C: cancelling sets the service clients' cancel flag and interrupts DuckDB, and the
shell carries on with the connection and the services as they were.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from duckserve.errors import Error
from duckserve.sql import formatting, splitter

if TYPE_CHECKING:
    from prompt_toolkit import PromptSession

    from duckserve.sql.completion import Metadata
    from duckserve.sql.connection import Connection, Result

HISTORY_ENV = "DUCKSERVE_HISTORY"
HISTORY_FILE = "shell_history"
#: completion names are re-read after statements that may change them, and at least this often
METADATA_MAX_AGE = 30.0
_CHANGES_NAMES = {"CREATE", "DROP", "ALTER", "ATTACH", "DETACH", "USE", "GRANT", "REVOKE", "CALL", "IMPORT",
                  "LOAD", "RENAME", "COMMENT", "ROLLBACK"}
_QUIT_WORDS = {"quit", "exit", "\\q", ".quit", ".exit", "quit;", "exit;"}


# -- settings --------------------------------------------------------------------------------------
@dataclass
class Setting:
    name: str
    kind: str  # bool, int, str, format
    help: str
    choices: tuple[str, ...] = ()


SETTINGS = [
    Setting("output_format", "format", "how results print", formatting.FORMATS),
    Setting("header", "bool", "print column names"),
    Setting("timing", "bool", "print the time each statement took"),
    Setting("progress_bar", "bool", "show rows sent/answered while service functions run"),
    Setting("echo", "bool", "print each statement before running it"),
    Setting("exit_on_error", "bool", "leave the shell (exit code 1) when a statement fails"),
    Setting("max_rows", "int", "rows a result shows in table formats (0: all)"),
    Setting("max_cell_width", "int", "widest cell before it is cut with … (0: no limit)"),
    Setting("null_display", "str", "how NULL prints"),
    Setting("variable_substitution", "bool", "replace &name and &{name} with !define'd variables"),
    Setting("auto_completion", "bool", "show completions while typing (Tab always completes)"),
    Setting("syntax_style", "str", "pygments style for highlighting (default, monokai, native, ...)"),
]
_SETTING_ALIASES = {"format": "output_format", "progress": "progress_bar", "headers": "header",
                    "rowset_limit": "max_rows", "max_width": "max_cell_width", "null": "null_display",
                    "style": "syntax_style"}


@dataclass
class Settings:
    output_format: str = "table"
    header: bool = True
    timing: bool = True
    progress_bar: bool = True
    echo: bool = False
    exit_on_error: bool = False
    max_rows: int = 1000
    max_cell_width: int = 60
    null_display: str = "NULL"
    variable_substitution: bool = False
    auto_completion: bool = True
    syntax_style: str = "default"

    def set(self, name: str, value: str) -> str:
        """Set one option from text; the canonical name, or ValueError naming the choices."""
        key = _SETTING_ALIASES.get(name.strip().lower(), name.strip().lower())
        setting = next((s for s in SETTINGS if s.name == key), None)
        if setting is None:
            raise ValueError(f"unknown option {name!r}: the options are {', '.join(s.name for s in SETTINGS)}")
        text = value.strip().strip("'\"")
        parsed: Any
        if setting.kind == "bool":
            if text.lower() not in ("true", "false", "on", "off", "1", "0", "yes", "no"):
                raise ValueError(f"{key} is true or false, not {value!r}")
            parsed = text.lower() in ("true", "on", "1", "yes")
        elif setting.kind == "int":
            try:
                parsed = int(text)
            except ValueError:
                raise ValueError(f"{key} is a whole number, not {value!r}") from None
            if parsed < 0:
                raise ValueError(f"{key} cannot be negative")
        elif setting.kind == "format":
            parsed = formatting.check_format(text)
        else:
            parsed = text
        if key == "syntax_style":
            from pygments.styles import get_all_styles

            if parsed not in set(get_all_styles()):
                raise ValueError(f"unknown syntax_style {parsed!r}: try default, monokai, native, friendly")
        setattr(self, key, parsed)
        return key

    def format_options(self) -> formatting.FormatOptions:
        return formatting.FormatOptions(header=self.header, null=self.null_display,
                                        max_cell_width=self.max_cell_width,
                                        max_rows=self.max_rows or None)


# -- input: statements and commands from lines -------------------------------------------------------
def is_complete(text: str) -> bool:
    """True when the text ends a statement: its last token is ``;`` (or it holds no SQL at all)."""
    from sqlglot.tokens import TokenType

    try:
        tokens = splitter.tokenize(text)
    except Error:
        return False  # an unterminated string, quoted name or comment
    return not tokens or tokens[-1].token_type == TokenType.SEMICOLON


def _has_sql(text: str) -> bool:
    try:
        return bool(splitter.tokenize(text))
    except Error:
        return True  # unreadable: let running it report the problem


@dataclass
class Unit:
    """One thing to run: a ``!`` command or SQL text (one or more statements), with its first line."""

    kind: str  # "command" or "sql"
    text: str
    line: int


@dataclass
class LineReader:
    """Turns lines into units: a ``!command`` alone on a line, or SQL up to a ``;`` that ends a line."""

    lines: list[str] = field(default_factory=list)
    start: int = 0
    line_number: int = 0

    def feed(self, line: str) -> list[Unit]:
        self.line_number += 1
        stripped = line.strip()
        if not self.lines:
            if not stripped:
                return []
            if stripped.startswith("!") or stripped.lower() in _QUIT_WORDS:
                command = stripped if stripped.startswith("!") else "!quit"
                return [Unit("command", command.rstrip(";").strip() if command.startswith("!q") else command,
                             self.line_number)]
            self.start = self.line_number
        self.lines.append(line.rstrip("\n"))
        text = "\n".join(self.lines)
        if is_complete(text):
            self.lines = []
            return [Unit("sql", text, self.start)] if _has_sql(text) else []
        return []

    def flush(self) -> list[Unit]:
        text = "\n".join(self.lines)
        self.lines = []
        return [Unit("sql", text, self.start)] if text.strip() and (_has_sql(text) or not is_complete(text)) else []


def units(text: str) -> list[Unit]:
    reader = LineReader()
    out: list[Unit] = []
    for line in text.splitlines():
        out.extend(reader.feed(line))
    return out + reader.flush()


# -- progress --------------------------------------------------------------------------------------
class Progress:
    """A status line on the terminal, redrawn in place while a statement runs."""

    SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
    DELAY = 0.3  # quick statements never flash a line

    def __init__(self, stream: TextIO, enabled: bool) -> None:
        self.stream = stream
        self.enabled = enabled
        self.shown = False
        self.ticks = 0
        encoding = (getattr(stream, "encoding", None) or "").lower()
        self.spinner = self.SPINNER if "utf" in encoding else "|/-\\"

    @staticmethod
    def describe(clients: Iterable[Any]) -> str:
        parts = []
        for client in clients:
            s = client.stats
            service = str(client.service).split(".")[-1]  # DUCKSERVE.PUBLIC.SVC -> SVC: the line is short
            parts.append(f"{service}!{client.method.name.upper()}: rows sent {s.rows_sent:,} · answered "
                         f"{s.rows_answered:,} · in flight {s.in_flight} · batches {s.batches:,} · retries {s.retries}")
        return " | ".join(parts)

    def update(self, clients: list[Any], elapsed: float, cancelling: bool = False) -> None:
        if not self.enabled or elapsed < self.DELAY:
            return
        self.ticks += 1
        detail = self.describe(clients)
        state = "cancelling…" if cancelling else "Ctrl-C cancels"
        line = f"{self.spinner[self.ticks % len(self.spinner)]} {elapsed:6.1f} s  {detail}  ({state})"
        try:
            width = os.get_terminal_size(self.stream.fileno()).columns  # the real width, not $COLUMNS
        except (OSError, ValueError, AttributeError):
            import shutil

            width = shutil.get_terminal_size((100, 24)).columns
        self.stream.write("\r" + formatting.truncate(line, max(20, width - 1)) + "\x1b[K")
        self.stream.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = False


# -- the shell -------------------------------------------------------------------------------------
@dataclass
class QueryRecord:
    query_id: str
    sql: str
    status: str  # SUCCESS, FAILED, CANCELLED
    rows: int
    seconds: float
    error: str = ""


@dataclass
class Command:
    names: tuple[str, ...]
    usage: str
    help: str
    run: Callable[[str], bool]  # False stops the current input
    complete: Callable[[str], Iterable[str]] | None = None


class StopShell(Exception):
    """Raised by !quit (and by a failing statement when exit_on_error is on)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class Shell:
    """A SQL shell over one connection. ``interactive`` selects the prompt_toolkit front end."""

    def __init__(self, connection: Connection, *, interactive: bool, out: TextIO | None = None,
                 err: TextIO | None = None, settings: Settings | None = None,
                 history_file: str | os.PathLike[str] | None = None) -> None:
        self.connection = connection
        self.interactive = interactive
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.settings = settings or Settings(exit_on_error=not interactive, max_rows=1000 if interactive else 0)
        self.history_file = Path(history_file) if history_file else default_history_file(connection)
        self.variables: dict[str, str] = {}
        self.queries: list[QueryRecord] = []
        self.failed = False
        self.spool: TextIO | None = None
        self.color = interactive and "NO_COLOR" not in os.environ
        self._metadata: Metadata | None = None
        self._metadata_stale = True
        self._next_default = ""
        self._sources: list[Path] = []
        self._session: PromptSession[str] | None = None
        self.commands = self._commands()

    # -- output -----------------------------------------------------------------------------------
    def write(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()
        if self.spool is not None:
            self.spool.write(text + "\n")
            self.spool.flush()

    def error(self, message: str) -> None:
        label = "\x1b[31merror:\x1b[0m" if self.color else "error:"
        self.err.write(f"{label} {message}\n")
        self.err.flush()
        if self.spool is not None:
            self.spool.write(f"error: {message}\n")

    def note(self, message: str) -> None:
        """Status text for a person at a terminal (row counts, timings); quiet in scripts."""
        if self.interactive:
            self.write(f"\x1b[2m{message}\x1b[0m" if self.color else message)

    # -- running input ----------------------------------------------------------------------------
    def run_units(self, pending: Iterable[Unit], origin: str | None = None) -> bool:
        """Run units in order; False (and the rest skipped) after a failure or a cancel."""
        for unit in pending:
            if unit.kind == "command":
                ok = self.run_command(unit.text)
            else:
                ok = self.run_sql(unit.text, origin, unit.line)
            if not ok:
                return False
        return True

    def run_text(self, text: str, origin: str | None = None) -> bool:
        return self.run_units(units(text), origin)

    def run_stream(self, stream: TextIO) -> int:
        """Read lines as they come (piped input) and run each statement once its ``;`` arrives."""
        reader = LineReader()
        try:
            for line in stream:
                if not self.run_units(reader.feed(line)) and self.settings.exit_on_error:
                    return 1
            if not self.run_units(reader.flush()) and self.settings.exit_on_error:
                return 1
        except StopShell as stop:
            return stop.code
        return 1 if self.failed else 0

    def substitute(self, text: str) -> str:
        if not self.settings.variable_substitution:
            return text

        def value(match: re.Match[str]) -> str:
            name = match.group(1) or match.group(2)
            if name not in self.variables:
                raise ValueError(f"variable {name} is not defined: run !define {name}=value "
                                 "(or !set variable_substitution=false)")
            return self.variables[name]

        return re.sub(r"&\{(\w+)\}|&(\w+)", value, text)

    def run_sql(self, text: str, origin: str | None = None, line: int = 1) -> bool:
        try:
            text = self.substitute(text)
            statements = splitter.split(text)
        except (Error, ValueError) as exc:
            return self._failed(str(exc), origin, line)
        for statement in statements:
            if self.settings.echo:
                self.write(statement.text + ";")
            ok = self.run_statement(statement, origin, line + text.count("\n", 0, statement.offset))
            if not ok:
                return False
        return True

    def _failed(self, message: str, origin: str | None, line: int) -> bool:
        where = f"{origin}, statement at line {line}: " if origin else ""
        self.error(where + message)
        self.failed = True
        if self.settings.exit_on_error:
            raise StopShell(1)
        return False

    def run_statement(self, statement: splitter.Statement, origin: str | None = None, line: int = 1) -> bool:
        """Run one statement on a worker thread, drawing progress and taking Ctrl-C meanwhile."""
        box: dict[str, Any] = {}
        done = threading.Event()

        def work() -> None:
            try:
                box["result"] = self.connection.run_statement(statement)
            except BaseException as exc:  # handed to the main thread, which reports it
                box["error"] = exc
            finally:
                done.set()

        progress = Progress(self.err, self.interactive and self.settings.progress_bar and self.err.isatty())
        started = time.perf_counter()
        cancelled: float | None = None
        interrupted = threading.Event()
        worker = threading.Thread(target=work, name="duckserve-statement", daemon=True)
        # Ctrl-C only sets a flag: a KeyboardInterrupt raised inside Event.wait can leave its lock
        # broken ("release unlocked lock"), so the main thread polls the flag instead.
        with _sigint_sets(interrupted):
            worker.start()
            while not done.wait(0.1):
                if interrupted.is_set():
                    if cancelled is None:
                        cancelled = time.perf_counter()
                    self._interrupt()  # again each tick, in case the first came before DuckDB started
                progress.update(self.connection.functions.active, time.perf_counter() - started,
                                cancelled is not None)
        progress.clear()
        worker.join()
        seconds = time.perf_counter() - started
        first = statement.tokens[0].text.upper() if statement.tokens else ""
        if first in _CHANGES_NAMES:
            self._metadata_stale = True
        if cancelled is not None and "result" not in box:
            self.queries.append(QueryRecord("", statement.text, "CANCELLED", 0, seconds))
            self.error(f"statement cancelled after {seconds:.2f} s (Ctrl-C)")
            self.failed = True
            return False
        if "error" in box:
            exc = box["error"]
            if not isinstance(exc, Error):
                raise exc
            self.queries.append(QueryRecord("", statement.text, "FAILED", 0, seconds, str(exc)))
            return self._failed(str(exc), origin, line)
        result: Result = box["result"]
        self.show(result)
        self.queries.append(QueryRecord(result.query_id, statement.text, "SUCCESS", result.rowcount, seconds))
        return True

    def _interrupt(self) -> None:
        self.connection.interrupt()

    def show(self, result: Result) -> None:
        settings = self.settings
        seconds = result.seconds if settings.timing else None
        if not result.has_rows:
            changed = f", {formatting.row_count(result.rowcount)} changed" if result.rowcount >= 0 else ""
            self.note("Statement executed" + changed + (f" ({seconds:.3f} s)" if seconds is not None else ""))
            return
        fmt = settings.output_format
        assert result.description is not None
        table = formatting.Grid.of(result.description, result.fetchall())  # the values a cursor returns
        text = formatting.render(table, fmt, settings.format_options(), seconds)
        if text:
            self.write(text)
        if fmt != "table":
            self.note(formatting.row_count(table.num_rows, seconds))

    # -- commands ---------------------------------------------------------------------------------
    def run_command(self, line: str) -> bool:
        name, _, argument = line.strip().partition(" ")
        name = name.lower()
        command = self.commands.get(name)
        if command is None:
            return self._failed(f"unknown command {name}: !help lists the commands", None, 0)
        try:
            return command.run(argument.strip())
        except (ValueError, OSError) as exc:
            return self._failed(f"{name}: {exc}", None, 0)

    def _commands(self) -> dict[str, Command]:
        listed = [
            Command(("!help", "!h", "!?"), "!help", "this list", self._help),
            Command(("!quit", "!exit", "!q", "!disconnect"), "!quit", "leave the shell (also Ctrl-D, quit, exit)",
                    self._quit),
            Command(("!set",), "!set [option=value]", "change an option; alone, list them", self._set,
                    self._complete_set),
            Command(("!options", "!opts"), "!options", "list the options and their values", self._options),
            Command(("!source", "!load"), "!source FILE", "run the statements and commands of a file", self._source),
            Command(("!print",), "!print TEXT", "print the text", self._print),
            Command(("!define",), "!define name=value", "define a variable for &name (turns substitution on)",
                    self._define),
            Command(("!variables", "!vars"), "!variables", "list the defined variables", self._variables),
            Command(("!spool",), "!spool FILE | off", "also write results to FILE", self._spool),
            Command(("!queries",), "!queries", "the statements of this session: id, status, rows, time",
                    self._queries),
            Command(("!result",), "!result QUERY_ID", "print an earlier result again (from !queries)", self._result),
            Command(("!system",), "!system COMMAND", "run a command of the operating system", self._system),
            Command(("!edit",), "!edit", "edit the last statement in $EDITOR, then run it from the prompt", self._edit),
            Command(("!rehash",), "!rehash", "re-read the names that completion offers", self._rehash),
        ]
        table: dict[str, Command] = {}
        for command in listed:
            for name in command.names:
                table[name] = command
        return table

    def _help(self, _argument: str) -> bool:
        lines = ["Statements end with ';' (Esc then Enter runs the text as it is). Commands:"]
        seen: set[int] = set()
        for command in self.commands.values():
            if id(command) in seen:
                continue
            seen.add(id(command))
            lines.append(f"  {command.usage:<24} {command.help}")
        lines.append("Options (!set name=value):")
        for setting in SETTINGS:
            choices = f" ({'|'.join(setting.choices)})" if setting.choices else ""
            lines.append(f"  {setting.name:<24} {setting.help}{choices}")
        lines.append("Keys: Tab completes (svc! lists a service's methods), Ctrl-R searches history, "
                     "Ctrl-C cancels a running statement, Ctrl-D quits.")
        self.write("\n".join(lines))
        return True

    def _quit(self, _argument: str) -> bool:
        raise StopShell(1 if self.failed and not self.interactive else 0)

    def _set(self, argument: str) -> bool:
        if not argument:
            return self._options("")
        match = re.fullmatch(r"\s*([\w.]+)\s*(?:=\s*|\s+)(.*)", argument)
        if not match:
            raise ValueError("usage: !set option=value (!set alone lists the options)")
        name = self.settings.set(match.group(1), match.group(2))
        self.note(f"{name} = {getattr(self.settings, name)}")
        if name in ("syntax_style", "auto_completion"):
            self._session = None  # rebuilt with the new style on the next prompt
        return True

    def _complete_set(self, argument: str) -> Iterator[str]:
        name, eq, _ = argument.partition("=")
        if not eq:
            yield from (s.name + "=" for s in SETTINGS)
            return
        setting = next((s for s in SETTINGS if s.name == name.strip()), None)
        if setting is not None and setting.kind == "bool":
            yield from ("true", "false")
        elif setting is not None:
            yield from setting.choices

    def _options(self, _argument: str) -> bool:
        import pyarrow as pa

        names = [s.name for s in SETTINGS]
        values = [str(getattr(self.settings, n)).lower() if isinstance(getattr(self.settings, n), bool)
                  else str(getattr(self.settings, n)) for n in names]
        table = pa.table({"name": names, "value": values, "description": [s.help for s in SETTINGS]})
        self.write(formatting.format_table(table, footer=False))
        return True

    def _source(self, argument: str) -> bool:
        if not argument:
            raise ValueError("usage: !source FILE")
        path = Path(os.path.expanduser(argument.strip().strip("'\"")))
        if not path.is_absolute() and self._sources and not path.exists():
            path = self._sources[-1].parent / path
        if len(self._sources) >= 16:
            raise ValueError(f"{path}: !source nested more than 16 deep (does a file source itself?)")
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"cannot read {path}: {exc.strerror}") from None
        self._sources.append(path)
        try:
            return self.run_text(text, origin=str(path))
        finally:
            self._sources.pop()

    def _print(self, argument: str) -> bool:
        self.write(self.substitute(argument))
        return True

    def _define(self, argument: str) -> bool:
        if not argument:
            return self._variables("")
        name, eq, value = argument.partition("=")
        if not eq or not re.fullmatch(r"\w+", name.strip()):
            raise ValueError("usage: !define name=value")
        self.variables[name.strip()] = value.strip()
        self.settings.variable_substitution = True
        return True

    def _variables(self, _argument: str) -> bool:
        import pyarrow as pa

        table = pa.table({"name": list(self.variables), "value": list(self.variables.values())},
                         schema=pa.schema([("name", pa.string()), ("value", pa.string())]))
        self.write(formatting.format_table(table))
        return True

    def _spool(self, argument: str) -> bool:
        if self.spool is not None:
            self.spool.close()
            self.spool = None
        if argument and argument.lower() != "off":
            self.spool = open(os.path.expanduser(argument.strip("'\"")), "a", encoding="utf-8")  # noqa: SIM115
        return True

    def _queries(self, _argument: str) -> bool:
        import pyarrow as pa

        records = self.queries[-50:]
        table = pa.table({
            "query_id": [q.query_id for q in records], "status": [q.status for q in records],
            "rows": pa.array([q.rows for q in records], pa.int64()),
            "seconds": pa.array([round(q.seconds, 3) for q in records], pa.float64()),
            "sql": [" ".join(q.sql.split()) for q in records]},
            schema=pa.schema([("query_id", pa.string()), ("status", pa.string()), ("rows", pa.int64()),
                              ("seconds", pa.float64()), ("sql", pa.string())]))
        self.write(formatting.format_table(table))
        return True

    def _result(self, argument: str) -> bool:
        query_id = argument.strip().strip("'\"")
        if not re.fullmatch(r"[0-9a-fA-F-]{8,}", query_id):
            raise ValueError("usage: !result QUERY_ID (the ids are in !queries)")
        return self.run_sql(f"SELECT * FROM TABLE(RESULT_SCAN('{query_id}'));")

    def _system(self, argument: str) -> bool:
        if not argument:
            raise ValueError("usage: !system COMMAND")
        self.out.flush()
        done = subprocess.run(argument, shell=True, check=False)
        if done.returncode:
            self.note(f"exit code {done.returncode}")
        return True

    def _edit(self, argument: str) -> bool:
        import tempfile

        if not self.interactive:
            raise ValueError("!edit needs a terminal")
        last = next((q.sql for q in reversed(self.queries)), "")
        editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
        with tempfile.NamedTemporaryFile("w+", suffix=".sql", delete=False, encoding="utf-8") as handle:
            handle.write(argument or (last + ";\n" if last else ""))
            path = handle.name
        try:
            subprocess.run([*shlex.split(editor), path], check=False)
            self._next_default = Path(path).read_text(encoding="utf-8").rstrip()
        finally:
            os.unlink(path)
        return True

    def _rehash(self, _argument: str) -> bool:
        self._metadata_stale = True
        self.metadata(refresh=True)
        return True

    # -- completion metadata ----------------------------------------------------------------------
    def metadata(self, refresh: bool = False) -> Metadata:
        from duckserve.sql.completion import load_metadata

        old = self._metadata
        if (refresh or old is None or self._metadata_stale
                or time.monotonic() - old.loaded_at > METADATA_MAX_AGE):
            self._metadata = load_metadata(self.connection)
            self._metadata_stale = False
        assert self._metadata is not None
        return self._metadata

    # -- the interactive loop ---------------------------------------------------------------------
    def prompt_text(self) -> str:
        s = self.connection.session
        return f"{s.user}#{s.warehouse or '(no warehouse)'}@{s.database}.{s.schema}>"

    def _prompt_session(self, **overrides: Any) -> PromptSession[str]:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.auto_suggest import AutoSuggestFromHistory
        from prompt_toolkit.completion import CompleteEvent, get_common_complete_suffix
        from prompt_toolkit.history import FileHistory
        from prompt_toolkit.key_binding import KeyBindings
        from prompt_toolkit.key_binding.key_processor import KeyPressEvent
        from prompt_toolkit.lexers import PygmentsLexer
        from prompt_toolkit.styles import merge_styles, style_from_pygments_cls
        from pygments.lexers.sql import SqlLexer
        from pygments.styles import get_style_by_name

        from duckserve.sql.completion import SQLCompleter

        bindings = KeyBindings()

        def ready(text: str) -> bool:
            stripped = text.strip()
            return (not stripped or stripped.startswith("!") or stripped.lower() in _QUIT_WORDS
                    or is_complete(text))

        @bindings.add("enter")
        def _enter(event: KeyPressEvent) -> None:
            buffer = event.current_buffer
            state = buffer.complete_state
            if state is not None and state.current_completion is not None:
                buffer.complete_state = None  # Enter takes the highlighted completion
            elif ready(buffer.text) and buffer.document.is_cursor_at_the_end:
                buffer.complete_state = None
                buffer.validate_and_handle()
            else:
                buffer.newline(copy_margin=False)

        commands: dict[str, Callable[[str], Iterable[str]] | None] = {
            name: command.complete or (lambda _a: []) for name, command in self.commands.items()}
        completer = SQLCompleter(lambda: self._metadata or self.metadata(), commands)

        @bindings.add("tab")
        def _tab(event: KeyPressEvent) -> None:
            # Completes here and now: prompt_toolkit drops a Tab that arrives while the completion it
            # started for the last keystroke is still running.
            buffer = event.current_buffer
            if buffer.complete_state is not None:
                buffer.complete_next()
                return
            if not buffer.document.current_line_before_cursor.strip():
                buffer.insert_text("    ")
                return
            found = list(completer.get_completions(buffer.document, CompleteEvent(completion_requested=True)))
            if len(found) == 1:
                buffer.apply_completion(found[0])
                return
            common = get_common_complete_suffix(buffer.document, found)
            if common:
                buffer.insert_text(common)
            elif found:
                buffer.start_completion(select_first=False)

        self.history_file.parent.mkdir(parents=True, exist_ok=True)
        style = merge_styles([style_from_pygments_cls(get_style_by_name(self.settings.syntax_style))])
        width = len(self.prompt_text())

        def continuation(_width: int, _line: int, _soft: int) -> str:
            return " " * max(0, width - 3) + "..> "

        return PromptSession(
            history=FileHistory(str(self.history_file)), lexer=PygmentsLexer(SqlLexer),
            completer=completer, complete_while_typing=self.settings.auto_completion,
            auto_suggest=AutoSuggestFromHistory(), multiline=True, key_bindings=bindings, style=style,
            include_default_pygments_style=False, prompt_continuation=continuation, enable_open_in_editor=True,
            search_ignore_case=True, **overrides,
        )

    def banner(self) -> str:
        import duckserve

        s = self.connection.session
        return (f"duckserve {duckserve.__version__} shell · database {self.connection.database} · account "
                f"{self.connection.account.home}\nuser {s.user} · role {s.role} · warehouse {s.warehouse}. "
                "Statements end with ';'. !help lists commands; Ctrl-D quits.")

    def repl(self) -> int:
        self.write(self.banner())
        self.metadata()
        while True:
            if self._session is None:
                self._session = self._prompt_session()
            if self._metadata_stale or self._metadata is None or (
                    time.monotonic() - self._metadata.loaded_at > METADATA_MAX_AGE):
                self.metadata(refresh=True)
            default, self._next_default = self._next_default, ""
            try:
                text = self._session.prompt(self.prompt_text() + " ", default=default)
            except KeyboardInterrupt:
                continue
            except EOFError:
                break
            try:
                self.run_text(text)
            except StopShell as stop:
                return stop.code
            except KeyboardInterrupt:
                self.error("interrupted")
        if self.spool is not None:
            self.spool.close()
        return 0


@contextlib.contextmanager
def _sigint_sets(flag: threading.Event) -> Iterator[None]:
    """While inside, SIGINT (Ctrl-C) sets ``flag`` instead of raising KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, lambda _signum, _frame: flag.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def default_history_file(connection: Connection) -> Path:
    """``$DUCKSERVE_HISTORY``, else ``shell_history`` in the account's home directory."""
    configured = os.environ.get(HISTORY_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path(connection.account.home) / HISTORY_FILE


def run_shell(connection: Connection, *, output_format: str = "table", options: list[str] | None = None,
              history_file: str | None = None, interactive: bool | None = None, stdin: TextIO | None = None,
              out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run the shell until quit or end of input; the exit code (1 when a statement failed and
    exit_on_error is on)."""
    stdin = stdin or sys.stdin
    out = out or sys.stdout
    if interactive is None:
        interactive = stdin.isatty() and out.isatty()
    shell = Shell(connection, interactive=interactive, out=out, err=err, history_file=history_file)
    shell.settings.output_format = formatting.check_format(output_format)
    for option in options or []:
        name, eq, value = option.partition("=")
        if not eq:
            raise ValueError(f"option {option!r} is not name=value (e.g. -o output_format=csv)")
        shell.settings.set(name, value)
    if interactive:
        return shell.repl()
    return shell.run_stream(stdin)
