"""``MODEL(m, v)!method(args)`` in SQL: the warehouse path, a model version run in this process.

Rewritten at token level, like ``svc!method(...)``, into a vectorized DuckDB UDF that calls the
model loaded in the SQL session's own Python (`duckserve.engine.warehouse`). ``MODEL(m)!method``
uses the default version. A version that cannot run in the warehouse fails before the query runs,
saying why and pointing to ``create_service``.

Also here: `explain_udf_error`, which turns DuckDB's binder error for a service-function or model
call with arguments of the wrong types into one naming the function, the argument and the type.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlglot.tokens import Token, TokenType

from duckserve.engine.account import display_key
from duckserve.engine.names import ObjectName, normalize
from duckserve.errors import Error, ObjectNotFound, ProgrammingError
from duckserve.inference_server.manifest import MethodSpec
from duckserve.sql.rewrite import Edit, matching_paren
from duckserve.sql.splitter import Statement
from duckserve.sql.udfs import UdfRegistry

if TYPE_CHECKING:
    from duckserve.engine.warehouse import WarehouseFunction
    from duckserve.sql.connection import Connection

UDF_PREFIX = "__duckserve_model_"
_NAME_TYPES = (TokenType.VAR, TokenType.IDENTIFIER)


@dataclass
class ModelCall:
    start: int  # offset of MODEL
    paren: int  # index of the method's '(' token
    model: ObjectName
    version: str | None  # as written: a name, a quoted name ("v1" keeps its case) or None (the default)
    method: str
    arguments: int


def _name_token(token: Token) -> bool:
    return token.token_type in _NAME_TYPES or (
        token.text.replace("_", "").isalnum() and token.token_type not in (
            TokenType.STRING, TokenType.NUMBER, TokenType.L_PAREN, TokenType.R_PAREN))


def find_model_calls(statement: Statement) -> list[ModelCall]:
    """Every ``MODEL(name [, version])!method(`` in the statement."""
    from duckserve.sql.service_functions import _count_arguments

    tokens, calls = statement.tokens, []
    for i, token in enumerate(tokens):
        if token.text.upper() != "MODEL" or token.token_type == TokenType.STRING or i + 1 >= len(tokens):
            continue
        if tokens[i + 1].token_type != TokenType.L_PAREN:
            continue
        close = matching_paren(tokens, i + 1)
        if close + 3 >= len(tokens):
            continue
        bang, method_token = tokens[close + 1], tokens[close + 2]
        if bang.token_type != TokenType.NOT or bang.text != "!" or not _name_token(method_token):
            continue
        if tokens[close + 3].token_type != TokenType.L_PAREN:
            continue
        inner = tokens[i + 2:close]
        commas = [k for k, t in enumerate(inner) if t.token_type == TokenType.COMMA]
        name_tokens = inner[:commas[0]] if commas else inner
        version_tokens = inner[commas[0] + 1:] if commas else []
        parts = [t for t in name_tokens if t.token_type != TokenType.DOT]
        if not parts or len(parts) > 3 or len(commas) > 1 or not all(_name_token(t) for t in parts):
            line, column = statement.position(token)
            raise ProgrammingError(
                f"line {line}, column {column}: MODEL(...) takes a model name and an optional version: "
                "MODEL(my_model, v1)!predict(...)"
            )
        names = [normalize(t.text, t.token_type == TokenType.IDENTIFIER) for t in parts]
        while len(names) < 3:
            names.insert(0, "")
        version: str | None = None
        if version_tokens:
            if len(version_tokens) != 1:
                raise ProgrammingError("MODEL(m, v): the version is one name, e.g. MODEL(my_model, v1)")
            v = version_tokens[0]
            version = f'"{v.text}"' if v.token_type == TokenType.IDENTIFIER else v.text
        method_close = matching_paren(tokens, close + 3)
        calls.append(ModelCall(token.start, close + 3, ObjectName(names[2], names[1], names[0]), version,
                               method_token.text, _count_arguments(tokens, close + 3, method_close)))
    return calls


class ModelFunctions:
    """The warehouse-path UDFs of one connection."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.udfs = UdfRegistry(connection, UDF_PREFIX)
        self._functions: dict[str, WarehouseFunction] = {}

    def rewrite(self, statement: Statement, _context: Any) -> list[Edit]:
        edits = []
        for call in find_model_calls(statement):
            udf = self.bind(call)
            edits.append(Edit(call.start, statement.tokens[call.paren].start, udf))
        return edits

    def bind(self, call: ModelCall) -> str:
        from duckserve.engine import warehouse

        connection = self.connection
        store = connection.services.models
        model = store.require_model(connection.session, call.model)
        label = display_key(model)
        version, record = store.version_record(model, call.version)
        manifest = store.manifest(model, version)
        try:
            method = manifest.method(call.method)
        except KeyError:
            names = ", ".join(m.name.upper() for m in manifest.methods)
            raise ObjectNotFound(
                f"model {label} version {version} has no function {call.method.upper()}: it has {names}"
            ) from None
        if warehouse.WAREHOUSE not in record.get("runnable_in", []):
            raise warehouse.not_in_warehouse(label, version, record.get("warehouse_reason")
                                             or "it was logged for SPCS only")
        if call.arguments != len(method.inputs):
            raise ProgrammingError(
                f"MODEL({label}, {version})!{method.name.upper()} takes {len(method.inputs)} argument(s) "
                f"({method.sql_arguments}), got {call.arguments}"
            )
        package = store.package_path(model, version)
        function = warehouse.WarehouseFunction(f"MODEL({label}, {version})", method, package)
        with self.udfs.lock:
            udf = self.udfs.name(f"{model.key}/{version}!{method.name}")
            self._functions[udf] = function
            self.udfs.ensure(udf, method, lambda arguments: self._call(udf, arguments))
        return udf

    def _call(self, udf: str, arguments: tuple[Any, ...]) -> Any:
        try:
            return self._functions[udf].call(list(arguments))
        except Error as exc:
            self.connection.functions.error = exc  # re-raised by the connection instead of DuckDB's wrapper
            raise

    def describe(self, udf: str) -> tuple[str, MethodSpec] | None:
        function = self._functions.get(udf)
        return (function.label, function.method) if function is not None else None


# ---------------------------------------------------------------------------------------------
# DuckDB's binder errors, told in the user's terms

_NO_MATCH = re.compile(r"No function matches the given name and argument types '(?P<udf>__duckserve_\w+)\((?P<types>.*)\)'")
_NUMERIC = re.compile(r"^(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT|UTINYINT|USMALLINT|UINTEGER|UBIGINT|UHUGEINT|"
                      r"FLOAT|DOUBLE|DECIMAL.*|INTEGER_LITERAL)$")


def _split_types(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        if char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    if current.strip():
        parts.append(current.strip())
    return parts


def _category(sql_type: str) -> str:
    text = sql_type.upper().strip()
    if text.endswith("]"):
        return "list of " + _category(re.sub(r"\[\d*\]$", "", text))
    if _NUMERIC.match(text):
        return "number"
    if text in ("VARCHAR", "STRING_LITERAL"):
        return "text"
    if text.startswith("TIMESTAMP") or text == "DATE":
        return "timestamp"
    return text


def _fits(given: str, expected: str) -> bool:
    """Would DuckDB cast ``given`` to ``expected`` implicitly (roughly: same category; lists by element)?"""
    given, expected = given.upper().strip(), expected.upper().strip()
    if given == expected or given == "NULL":
        return True
    if given.endswith("]") and expected.endswith("]"):
        inner_given, inner_expected = re.sub(r"\[\d*\]$", "", given), re.sub(r"\[\d*\]$", "", expected)
        return inner_given == inner_expected or inner_given.endswith("_LITERAL")
    category = _category(given)
    return category == _category(expected) and category != "timestamp" or (
        category == "timestamp" and expected.startswith("TIMESTAMP") and "TIME ZONE" not in given)


def _udf(connection: Connection, udf: str) -> tuple[str, MethodSpec] | None:
    model_functions: ModelFunctions | None = getattr(connection, "model_functions", None)
    found = model_functions.describe(udf) if model_functions is not None else None
    if found is not None:
        return found
    client = getattr(connection.functions, "_clients", {}).get(udf)
    if client is not None:
        return client.service, client.method
    return None


def explain_udf_error(exc: Exception, connection: Connection) -> Error | None:
    """A binder error of one of our UDFs as a ProgrammingError naming the function (``SVC!PREDICT`` or
    ``MODEL(M, V1)!PREDICT``), the argument, its expected type and the type it got; None otherwise."""
    match = _NO_MATCH.search(str(exc))
    if match is None:
        return None
    found = _udf(connection, match["udf"])
    if found is None:
        return None
    label, method = found
    function = f"{label}!{method.name.upper()}"
    given = _split_types(match["types"])
    problems: list[str] = []
    cast_to = method.inputs[0].duckdb_type if method.inputs else "..."
    for position, (feature, got) in enumerate(zip(method.inputs, given), start=1):
        if not _fits(got, feature.duckdb_type):
            shown = got.replace("INTEGER_LITERAL", "INTEGER").replace("STRING_LITERAL", "VARCHAR")
            if not problems:
                cast_to = feature.duckdb_type
            problems.append(f"argument {position} ({feature.name}) expects {feature.duckdb_type}, got {shown}")
    if not problems:
        problems = [f"arguments ({', '.join(given)}) do not match ({method.sql_arguments})"]
    return ProgrammingError(
        f"{function}: {'; '.join(problems)}. Cast the argument, e.g. CAST(x AS {cast_to}) "
        f"(the function takes {method.sql_arguments})"
    )
