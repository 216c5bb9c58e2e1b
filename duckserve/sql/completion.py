"""Completion for the shell: SQL keywords, duckserve's statements, and the names in the database
and the account (tables, columns, pools, repositories, warehouses, models, services and their
methods after ``svc!``).

``Metadata`` is a snapshot read between statements (never while one runs); ``SQLCompleter``
only reads the snapshot it is handed, so it may run on prompt_toolkit's completion thread.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prompt_toolkit.completion import CompleteEvent, Completer, Completion, PathCompleter
from prompt_toolkit.document import Document

if TYPE_CHECKING:
    from duckserve.sql.connection import Connection

_IDENT = r'(?:[A-Za-z_][\w$]*|"[^"]+")'
_SERVICE_CALL = re.compile(rf"({_IDENT}(?:\.{_IDENT}){{0,2}})!([\w$]*)$")
_QUALIFIED = re.compile(rf"({_IDENT})\.([\w$]*)$")
_WORD = re.compile(r"[\w$]*$")
_TOKENS = re.compile(r"'(?:[^']|'')*'?|\"[^\"]*\"?|--[^\n]*|/\*.*?(?:\*/|$)|[A-Za-z_][\w$]*|\S", re.S)
_RELATION = re.compile(
    rf"\b(?:FROM|JOIN|UPDATE|INTO|TABLE)\s+({_IDENT}(?:\.{_IDENT}){{0,2}})(?:\s+(?:AS\s+)?([A-Za-z_]\w*))?",
    re.IGNORECASE)

#: SQL words that start a statement or commonly follow one (DuckDB's full keyword list is added at load)
SQL_KEYWORDS = [
    "SELECT", "FROM", "WHERE", "GROUP BY", "ORDER BY", "HAVING", "LIMIT", "OFFSET", "QUALIFY", "WINDOW", "WITH",
    "UNION", "UNION ALL", "EXCEPT", "INTERSECT", "DISTINCT", "AS", "ON", "USING", "JOIN", "LEFT JOIN",
    "RIGHT JOIN", "INNER JOIN", "FULL OUTER JOIN", "CROSS JOIN", "ASOF JOIN", "AND", "OR", "NOT", "IN", "IS",
    "NULL", "LIKE", "ILIKE", "BETWEEN", "CASE", "WHEN", "THEN", "ELSE", "END", "CAST", "TRY_CAST", "EXISTS",
    "INSERT INTO", "VALUES", "UPDATE", "SET", "DELETE FROM", "CREATE", "CREATE OR REPLACE", "TABLE", "VIEW",
    "SCHEMA", "MACRO", "SEQUENCE", "INDEX", "DROP", "ALTER", "DESCRIBE", "SUMMARIZE", "EXPLAIN", "ANALYZE",
    "COPY", "EXPORT DATABASE", "IMPORT DATABASE", "ATTACH", "DETACH", "USE", "PRAGMA", "BEGIN", "COMMIT",
    "ROLLBACK", "INSTALL", "LOAD", "PIVOT", "UNPIVOT", "ASC", "DESC", "NULLS FIRST", "NULLS LAST", "TRUE",
    "FALSE", "IF EXISTS", "IF NOT EXISTS", "OVER", "PARTITION BY", "FILTER", "RESULT_SCAN", "LAST_QUERY_ID",
]

#: our object kinds by the words that name them in statements
KIND_PHRASES: dict[tuple[str, ...], str] = {
    ("COMPUTE", "POOL"): "pools", ("IMAGE", "REPOSITORY"): "repositories", ("WAREHOUSE",): "warehouses",
    ("MODEL",): "models", ("SERVICE",): "services", ("ROLE",): "roles", ("USER",): "users",
}
_META_LABEL = {"pools": "compute pool", "repositories": "image repository", "warehouses": "warehouse",
               "models": "model", "services": "service", "roles": "role", "users": "user"}
SERVICE_ROLES = ["ALL_ENDPOINTS_USAGE", "INFERENCE_SERVICE_FUNCTION_USAGE"]


def _our_phrases() -> list[tuple[str, ...]]:
    """duckserve's statements as word sequences, from the parser's own tables."""
    from duckserve.sql import parser

    kinds = {kind: words for words, kind in parser.KIND_WORDS}
    phrases: list[tuple[str, ...]] = [("SHOW", *what) for what in parser.SHOW_WHATS]
    phrases += [("SHOW", "GRANTS", "TO", "ROLE"), ("SHOW", "GRANTS", "TO", "USER"), ("SHOW", "GRANTS", "OF", "ROLE"),
                ("SHOW", "GRANTS", "ON", "ACCOUNT"), ("SHOW", "FUNCTIONS", "IN", "MODEL"),
                ("SHOW", "VERSIONS", "IN", "MODEL"), ("SHOW", "SERVICES", "IN", "COMPUTE", "POOL"),
                ("SHOW", "SERVICE", "CONTAINERS", "IN", "SERVICE"), ("SHOW", "ENDPOINTS", "IN", "SERVICE"),
                ("SHOW", "IMAGES", "IN", "IMAGE", "REPOSITORY")]
    for kind in parser.CREATE_KINDS:
        phrases += [("CREATE", *kinds[kind]), ("CREATE", "OR", "REPLACE", *kinds[kind]),
                    ("CREATE", *kinds[kind], "IF", "NOT", "EXISTS")]
    phrases += [("ALTER", *kinds[k]) for k in parser.ALTER_KINDS]
    phrases += [("DROP", *kinds[k]) for k in parser.DROP_KINDS]
    phrases += [("DROP", *kinds[k], "IF", "EXISTS") for k in parser.DROP_KINDS]
    phrases += [("DESCRIBE", *kinds[k]) for k in parser.DESCRIBE_KINDS]
    phrases += [("USE", "ROLE"), ("USE", "WAREHOUSE"), ("USE", "DATABASE"), ("USE", "SCHEMA"),
                ("GRANT", "ROLE"), ("GRANT", "SERVICE", "ROLE"), ("REVOKE", "ROLE"), ("REVOKE", "SERVICE", "ROLE"),
                ("CALL", "SYSTEM$GET_SERVICE_STATUS("), ("CALL", "SYSTEM$GET_SERVICE_LOGS("),
                ("CALL", "SYSTEM$GET_SERVICE_MANIFESTS("),
                ("ALTER", "SERVICE"), ("ALTER", "COMPUTE", "POOL")]
    for verb in ("GRANT", "REVOKE"):
        phrases += [(verb, p, "ON", *words) for p in ("USAGE", "OPERATE", "MONITOR", "MODIFY", "OWNERSHIP")
                    for words in (("COMPUTE", "POOL"), ("WAREHOUSE",))]
        phrases += [(verb, *p.split(), "ON", "IMAGE", "REPOSITORY")
                    for p in ("READ", "WRITE", "SERVICE READ", "SERVICE WRITE")]
    seen: set[tuple[str, ...]] = set()
    return [p for p in phrases if not (p in seen or seen.add(p))]  # type: ignore[func-returns-value]


def _our_properties() -> list[str]:
    from duckserve.sql import parser

    names = {k for props in parser.CREATE_PROPERTIES.values() for k in props}
    names |= {k for props in parser.ALTER_SET_PROPERTIES.values() for k in props}
    return sorted(names)


@dataclass
class Metadata:
    """What completion knows: names in DuckDB and in the account, read at one moment."""

    tables: dict[str, list[str]] = field(default_factory=dict)  # table or view -> its columns
    schemas: dict[str, list[str]] = field(default_factory=dict)  # schema -> its tables
    functions: list[str] = field(default_factory=list)
    keywords: list[str] = field(default_factory=list)
    pools: list[str] = field(default_factory=list)
    repositories: list[str] = field(default_factory=list)
    warehouses: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)
    users: list[str] = field(default_factory=list)
    services: dict[str, list[str]] = field(default_factory=dict)  # service -> method names
    loaded_at: float = 0.0

    def table(self, name: str) -> list[str] | None:
        bare = name.strip('"')
        for table, columns in self.tables.items():
            if table.lower() == bare.lower():
                return columns
        return None

    def service_methods(self, name: str) -> list[str]:
        last = name.split(".")[-1]
        key = last[1:-1] if last.startswith('"') else last.upper()
        return self.services.get(key, [])


def _show(connection: Connection, sql: str) -> list[dict[str, Any]]:
    """A SHOW of ours, run without becoming the session's last query (RESULT_SCAN stays the user's)."""
    from duckserve.errors import Error
    from duckserve.sql import executor, parser, splitter

    try:
        parsed = parser.parse(splitter.split(sql)[0])
        assert parsed is not None
        rows = executor.execute(connection, parsed)
    except Error:
        return []
    return [dict(zip(rows.columns, r)) for r in rows.rows]


def load_metadata(connection: Connection) -> Metadata:
    """Read the names completion offers, from DuckDB's catalog and the account's SHOW output."""
    import duckdb

    meta = Metadata(loaded_at=time.monotonic())
    cursor = connection.duckdb.cursor()  # a second connection to the same database: no shared result state
    try:
        for schema, table, column in cursor.sql(
                "SELECT schema_name, table_name, column_name FROM duckdb_columns() WHERE NOT internal "
                "ORDER BY schema_name, table_name, column_index").fetchall():
            if table.startswith("__duckserve"):
                continue
            meta.tables.setdefault(table, []).append(column)
            tables = meta.schemas.setdefault(schema, [])
            if table not in tables:
                tables.append(table)
        meta.functions = sorted({name for (name,) in cursor.sql(
            "SELECT DISTINCT function_name FROM duckdb_functions() WHERE function_type IN "
            "('scalar', 'aggregate', 'macro', 'table', 'table_macro', 'window')").fetchall()
            if not name.startswith("__") and name.isidentifier()})
        meta.keywords = sorted({k.upper() for (k,) in cursor.sql(
            "SELECT keyword_name FROM duckdb_keywords()").fetchall()})
    except duckdb.Error:
        pass
    finally:
        cursor.close()
    meta.pools = [r["name"] for r in _show(connection, "SHOW COMPUTE POOLS")]
    meta.repositories = [r["name"] for r in _show(connection, "SHOW IMAGE REPOSITORIES")]
    meta.warehouses = [r["name"] for r in _show(connection, "SHOW WAREHOUSES")]
    meta.models = [r["name"] for r in _show(connection, "SHOW MODELS")]
    meta.roles = [r["name"] for r in _show(connection, "SHOW ROLES")]
    meta.users = [r["name"] for r in _show(connection, "SHOW USERS")]
    for row in _show(connection, "SHOW SERVICES"):
        if row.get("is_job") == "true":
            continue
        methods = [m.strip() for m in (row.get("functions") or "").split(",") if m.strip()]
        meta.services[row["name"]] = methods
    return meta


def _cased(word: str, typed: str) -> str:
    """Follow the case the user types in: ``sel`` completes to ``select``, ``SEL`` to ``SELECT``."""
    if typed and typed.islower():
        return word.lower()
    if typed and typed.isupper():
        return word.upper()
    return word


def _name_cased(name: str, typed: str) -> str:
    """Our object names are stored upper-case; offer them in lower case when the user types so."""
    if name.isupper() and (not typed or typed.islower()) and re.fullmatch(r"[A-Z_][A-Z0-9_$]*", name):
        return name.lower()
    if not re.fullmatch(r"[A-Za-z_][\w$]*", name):
        return '"' + name.replace('"', '""') + '"'
    return name


def _words(text: str) -> list[str]:
    """The statement's words and punctuation, upper-cased, without strings and comments."""
    out = []
    for token in _TOKENS.findall(text):
        if token.startswith(("'", "--", "/*")):
            continue
        out.append(token.upper() if token[0].isalpha() or token[0] == "_" else token)
    return out


def current_statement(text: str) -> str:
    """The text after the last ``;`` that is not inside a string, identifier or comment."""
    start = 0
    for match in _TOKENS.finditer(text):
        if match.group() == ";":
            start = match.end()
    return text[start:]


class SQLCompleter(Completer):
    """Context-aware completion over a ``Metadata`` snapshot.

    ``commands`` maps shell command names (``!set``) to a function completing their argument.
    """

    def __init__(self, metadata: Callable[[], Metadata],
                 commands: dict[str, Callable[[str], Iterable[str]] | None] | None = None) -> None:
        self.metadata = metadata
        self.commands = commands or {}
        self.phrases = _our_phrases()
        self.properties = _our_properties()
        self.paths = PathCompleter(expanduser=True)

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterator[Completion]:
        statement = current_statement(document.text_before_cursor)
        if statement.lstrip().startswith("!"):
            yield from self._command(statement.lstrip(), complete_event)
            return
        meta = self.metadata()
        call = _SERVICE_CALL.search(statement)
        if call:
            yield from self._service_member(statement, call, meta)
            return
        qualified = _QUALIFIED.search(statement)
        if qualified and not statement[:qualified.start()].rstrip().endswith("!"):
            yield from self._qualified(statement, document, qualified.group(1), qualified.group(2), meta)
            return
        word = _WORD.search(statement).group()  # type: ignore[union-attr]
        before = _words(statement[:len(statement) - len(word)])
        yield from self._in_context(word, before, statement, document, meta, complete_event.completion_requested)

    # -- the cases --------------------------------------------------------------------------------
    def _command(self, text: str, event: CompleteEvent) -> Iterator[Completion]:
        name, _, rest = text.partition(" ")
        if not _:
            for command in sorted(self.commands):
                if command.startswith(name.lower()):
                    yield Completion(command, -len(name), display_meta="command")
            return
        argument = self.commands.get(name.lower())
        if argument is None:
            return
        if name.lower() in ("!source", "!load", "!spool"):
            sub = Document(rest.lstrip(), len(rest.lstrip()))
            yield from self.paths.get_completions(sub, event)
            return
        word = re.search(r"[\w=.-]*$", rest).group()  # type: ignore[union-attr]
        for choice in argument(rest):
            if choice.startswith(word.lower()) and choice != word:
                yield Completion(choice, -len(word))

    def _service_member(self, statement: str, call: re.Match[str], meta: Metadata) -> Iterator[Completion]:
        service, typed = call.group(1), call.group(2)
        before = _words(statement[:call.start()])
        if before[-2:] == ["SERVICE", "ROLE"]:
            names = SERVICE_ROLES
            label = "service role"
        else:
            names = meta.service_methods(service)
            label = f"{service} method"
        upper = typed.isupper() if typed else service.isupper()
        for method in names:
            if method.lower().startswith(typed.lower()):
                yield Completion(method.upper() if upper else method.lower(), -len(typed), display_meta=label)

    def _qualified(self, statement: str, document: Document, qualifier: str, typed: str,
                   meta: Metadata) -> Iterator[Completion]:
        whole = current_statement(document.text)
        aliases = self._aliases(whole)
        table = aliases.get(qualifier.strip('"').lower(), qualifier)
        columns = meta.table(table) or []
        for column in columns:
            if column.lower().startswith(typed.lower()):
                yield Completion(_name_cased(column, typed), -len(typed), display_meta=f"{table} column")
        for schema, tables in meta.schemas.items():
            if schema.lower() == qualifier.strip('"').lower():
                for name in tables:
                    if name.lower().startswith(typed.lower()):
                        yield Completion(_name_cased(name, typed), -len(typed), display_meta=f"{schema} table")

    @staticmethod
    def _aliases(statement: str) -> dict[str, str]:
        """alias (lower case) -> table, from ``FROM t a``, ``JOIN t AS a`` and bare ``FROM t``."""
        stop = {"WHERE", "JOIN", "ON", "USING", "GROUP", "ORDER", "LIMIT", "LEFT", "RIGHT", "INNER", "FULL",
                "CROSS", "NATURAL", "ASOF", "POSITIONAL", "SET", "VALUES", "SELECT", "UNION", "EXCEPT", "HAVING",
                "QUALIFY", "WINDOW", "BY", "AS", "OUTER", "DEFAULT"}
        out: dict[str, str] = {}
        for match in _RELATION.finditer(statement):
            table = match.group(1).split(".")[-1].strip('"')
            out[table.lower()] = table
            alias = match.group(2)
            if alias and alias.upper() not in stop:
                out[alias.lower()] = table
        return out

    def _in_context(self, word: str, before: list[str], statement: str, document: Document,
                    meta: Metadata, requested: bool = True) -> Iterator[Completion]:
        typed = word.lower()
        seen: set[str] = set()

        def offer(candidates: Iterable[str], label: str, cased: Callable[[str], str]) -> Iterator[Completion]:
            for candidate in candidates:
                if candidate.lower().startswith(typed) and candidate.lower() not in seen:
                    seen.add(candidate.lower())
                    yield Completion(cased(candidate), -len(word), display_meta=label)

        # a phrase of ours in progress: SHOW CO -> COMPUTE POOLS
        for i in range(len(before) - 1, -1, -1):
            if before[i] == "(" and before[i + 1:i + 2] == ["SHOW"]:
                before = before[i + 1:]  # a SHOW in parentheses: SELECT ... FROM (SHOW SERVICES)
                break
        phrase_done = False
        continuations = []
        for phrase in self.phrases:
            n = len(before)
            if 0 < n < len(phrase) and tuple(before) == phrase[:n] and phrase[n].lower().startswith(typed):
                continuations.append(" ".join(phrase[n:]))
            if tuple(before[-len(phrase):]) == phrase:
                phrase_done = True
        if continuations and (len(before) > 1 or before[0] == "SHOW"):
            # inside one of our statements' words (SHOW COMPUTE P...): only its continuations
            yield from offer(continuations, "duckserve", lambda w: _cased(w, word))
            return
        if not before:
            starts = sorted({p[0] for p in self.phrases} | {" ".join(p[:2]) for p in self.phrases if len(p) > 1})
            yield from offer([s for s in starts if s.lower().startswith(typed) and typed], "duckserve",
                             lambda w: _cased(w, word))
        yield from offer(continuations, "duckserve", lambda w: _cased(w, word))
        # a name of ours after the words that name its kind (IN COMPUTE POOL p, DESCRIBE SERVICE s)
        tail = [w for w in before if w not in ("IF", "EXISTS", "NOT")]
        for kind_words, kind in KIND_PHRASES.items():
            if tuple(tail[-len(kind_words):]) == kind_words and not (before[:1] == ["CREATE"] and kind != "roles"):
                names: Iterable[str] = getattr(meta, kind)
                yield from offer(names, _META_LABEL[kind], lambda n: _name_cased(n, word))
                return
        if before[-2:] == ["MODEL", "("] or before[-3:-1] == ["IN", "MODEL"]:
            yield from offer(meta.models, "model", lambda n: _name_cased(n, word))
            return
        if phrase_done and before and before[0] in ("SHOW",):
            yield from offer(["LIKE", "IN", "TERSE"], "keyword", lambda w: _cased(w, word))
            return
        # CREATE COMPUTE POOL p MIN_NODES = 1 ...: the statement's properties
        if before and before[0] in ("CREATE", "ALTER") and any(
                all(w in before for w in kw) for kw in KIND_PHRASES if kw != ("ROLE",)):
            yield from offer(self.properties, "property", lambda w: _cased(w, word))
        last = before[-1] if before else ""
        if last in ("FROM", "JOIN", "INTO", "UPDATE", "TABLE", "DESCRIBE", "SUMMARIZE") or before[-2:] == ["DROP", "VIEW"]:
            yield from offer(meta.tables, "table", lambda n: _name_cased(n, word))
            yield from offer(meta.schemas, "schema", lambda n: _name_cased(n, word))
            yield from offer([f for f in meta.functions if f.startswith("read_")], "table function", str)
            yield from offer(["SHOW", "SELECT", "TABLE"], "keyword", lambda w: _cased(w, word))
            return
        if not typed and not requested:
            return  # while typing, a space alone does not pop up every keyword; Tab does
        # anywhere else: the columns of the statement's tables, services, functions and keywords
        whole = current_statement(document.text)
        tables = {t for t in self._aliases(whole).values()}
        columns = [c for t in tables for c in (meta.table(t) or [])] or [
            c for cols in meta.tables.values() for c in cols]
        if before:
            yield from offer(columns, "column", lambda n: _name_cased(n, word))
            yield from offer(meta.services, "service (svc!method)", lambda n: _name_cased(n, word))
        yield from offer(SQL_KEYWORDS, "keyword", lambda w: _cased(w, word))
        if not before:
            yield from offer(sorted({p[0] for p in self.phrases}), "keyword", lambda w: _cased(w, word))
            return
        yield from offer(meta.tables, "table", lambda n: _name_cased(n, word))
        if typed:
            yield from offer(meta.functions, "function", str)
            yield from offer(meta.keywords, "keyword", lambda w: _cased(w, word))
