"""Telemetry in SQL: ``TABLE(svc!SPCS_GET_METRICS(START_TIME => ..., END_TIME => ...))`` (and
SPCS_GET_LOGS, SPCS_GET_EVENTS), and the account's event table ``SNOWFLAKE.TELEMETRY.EVENTS``
(also ``SNOWFLAKE.TELEMETRY.EVENTS_VIEW``), as small token rewrites (`duckserve.sql.rewrite`).

A statement that reads either also gets the Snowflake forms its queries are written in, rewritten
for DuckDB: ``col:"snow.service.name"`` and ``col:a.b`` (colon paths into OBJECT columns, read
as text with ``json_extract_string``), ``DATEADD(unit, n, t)`` / ``TIMESTAMPADD`` (``t + to_<unit>s(n)``)
and ``CURRENT_TIMESTAMP()``. Other statements are left to DuckDB as they are: there ``a:b`` is
DuckDB's own syntax (a prefix alias, a slice).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlglot.tokens import Token, TokenType

from duckserve.engine.names import ObjectName, normalize
from duckserve.errors import ProgrammingError
from duckserve.sql.rewrite import Edit, is_name_token, matching_paren, name_before
from duckserve.sql.splitter import Statement

FUNCTIONS = ("SPCS_GET_METRICS", "SPCS_GET_LOGS", "SPCS_GET_EVENTS")
ARGUMENTS = ("START_TIME", "END_TIME")
EVENT_TABLES = (("SNOWFLAKE", "TELEMETRY", "EVENTS"), ("SNOWFLAKE", "TELEMETRY", "EVENTS_VIEW"))
#: DATEADD's units (Snowflake's names and abbreviations) and the DuckDB function making the interval
UNITS = {
    **dict.fromkeys(("YEAR", "YEARS", "Y", "YY", "YYY", "YYYY", "YR", "YRS"), "to_years"),
    **dict.fromkeys(("QUARTER", "QUARTERS", "Q", "QTR", "QTRS"), "to_quarters"),
    **dict.fromkeys(("MONTH", "MONTHS", "MM", "MON", "MONS"), "to_months"),
    **dict.fromkeys(("WEEK", "WEEKS", "W", "WK", "WEEKOFYEAR", "WOY", "WY"), "to_weeks"),
    **dict.fromkeys(("DAY", "DAYS", "D", "DD", "DAYOFMONTH"), "to_days"),
    **dict.fromkeys(("HOUR", "HOURS", "H", "HH", "HR", "HRS"), "to_hours"),
    **dict.fromkeys(("MINUTE", "MINUTES", "M", "MI", "MIN", "MINS"), "to_minutes"),
    **dict.fromkeys(("SECOND", "SECONDS", "S", "SEC", "SECS"), "to_seconds"),
    **dict.fromkeys(("MILLISECOND", "MILLISECONDS", "MS", "MSEC"), "to_milliseconds"),
    **dict.fromkeys(("MICROSECOND", "MICROSECONDS", "US", "USEC"), "to_microseconds"),
}
_NAMES = (TokenType.VAR, TokenType.IDENTIFIER)


class TelemetryContext(Protocol):
    """What these rewrites ask of the connection."""

    def service_telemetry(self, name: ObjectName, function: str, start: datetime | None,
                          end: datetime | None) -> str:
        """The name the service's table function result reads under in this statement."""

    def event_table(self, service_name: str | None = None, start: datetime | None = None) -> str:
        """The name the account's event table reads under in this statement (only the rows of the
        services named ``service_name`` from ``start`` on, when the statement's WHERE keeps no others)."""

    def timestamp(self, expression: str) -> datetime:
        """The value of a constant SQL expression (already in DuckDB's SQL) as a timestamp."""


@dataclass
class TableFunction:
    start: int  # index of the first token replaced (TABLE, or the service name)
    end: int  # index of the last token replaced
    name: ObjectName
    function: str
    open_index: int  # the function's '('
    close_index: int


def _word(token: Token) -> str:
    return token.text.upper() if token.token_type != TokenType.STRING else ""


def find_table_functions(tokens: list[Token]) -> list[TableFunction]:
    """Every ``[TABLE(] [db.][schema.]svc!SPCS_GET_...( ... ) [)]``."""
    found = []
    for i, token in enumerate(tokens):
        if token.token_type != TokenType.NOT or token.text != "!" or i == 0 or i + 2 >= len(tokens):
            continue
        if _word(tokens[i + 1]) not in FUNCTIONS or tokens[i + 2].token_type != TokenType.L_PAREN:
            continue
        named = name_before(tokens, i)
        if named is None:
            continue
        j, name = named
        close = matching_paren(tokens, i + 2)
        start, end = j, close
        if j >= 2 and _word(tokens[j - 2]) == "TABLE" and tokens[j - 1].token_type == TokenType.L_PAREN \
                and close + 1 < len(tokens) and tokens[close + 1].token_type == TokenType.R_PAREN:
            start, end = j - 2, close + 1
        found.append(TableFunction(start, end, name, _word(tokens[i + 1]),
                                   i + 2, close))
    return found


def is_telemetry_method(name: str) -> bool:
    """Whether ``svc!name(`` is one of these table functions rather than a model method."""
    return name.upper() in FUNCTIONS


def _event_table_at(tokens: list[Token], i: int) -> int | None:
    """The index of the last token of ``SNOWFLAKE.TELEMETRY.EVENTS[_VIEW]`` starting at ``i``."""
    if i + 4 >= len(tokens) or tokens[i + 1].token_type != TokenType.DOT or tokens[i + 3].token_type != TokenType.DOT:
        return None
    if i > 0 and tokens[i - 1].token_type == TokenType.DOT:
        return None
    words = tuple(normalize(tokens[k].text, tokens[k].token_type == TokenType.IDENTIFIER)
                  if is_name_token(tokens[k]) else "" for k in (i, i + 2, i + 4))
    return i + 4 if words in EVENT_TABLES else None


def applies(statement: Statement) -> bool:
    """Whether the statement reads a telemetry table function or the event table."""
    tokens = statement.tokens
    return bool(find_table_functions(tokens)) or any(_event_table_at(tokens, i) is not None
                                                     for i in range(len(tokens)))


# -------------------------------------------------------------------------------------------------
# the Snowflake forms, rewritten for DuckDB


def _arguments(tokens: list[Token], open_index: int, close_index: int) -> list[tuple[int, int]]:
    """(first, last) token indexes of each top-level argument between the parentheses."""
    out, depth, first = [], 0, open_index + 1
    for k in range(open_index + 1, close_index):
        kind = tokens[k].token_type
        if kind in (TokenType.L_PAREN, TokenType.L_BRACKET, TokenType.L_BRACE):
            depth += 1
        elif kind in (TokenType.R_PAREN, TokenType.R_BRACKET, TokenType.R_BRACE):
            depth -= 1
        elif kind == TokenType.COMMA and depth == 0:
            out.append((first, k - 1))
            first = k + 1
    if first <= close_index - 1:
        out.append((first, close_index - 1))
    return out


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def snowflake_forms(tokens: list[Token], script: str, skip: list[tuple[int, int]] | None = None) -> list[Edit]:
    """Edits turning colon paths, DATEADD and CURRENT_TIMESTAMP() into DuckDB's forms (tokens
    inside a ``skip`` range, by index, stay)."""
    edits: list[Edit] = []
    skipped = skip or []
    i = 0
    while i < len(tokens):
        if any(a <= i <= b for a, b in skipped):
            i += 1
            continue
        token, word = tokens[i], _word(tokens[i])
        following = tokens[i + 1] if i + 1 < len(tokens) else None
        if word in ("DATEADD", "TIMESTAMPADD") and following is not None and following.token_type == TokenType.L_PAREN:
            close = matching_paren(tokens, i + 1)
            arguments = _arguments(tokens, i + 1, close)
            if len(arguments) != 3:
                raise ProgrammingError(f"{word} takes (unit, amount, timestamp), got {len(arguments)} argument(s)")
            unit_first, unit_last = arguments[0]
            unit = tokens[unit_first].text.upper() if unit_first == unit_last else ""
            function = UNITS.get(unit)
            if function is None:
                raise ProgrammingError(f"{word}: unknown date or time part {tokens[unit_first].text!r}: "
                                       "use YEAR, MONTH, WEEK, DAY, HOUR, MINUTE, SECOND, MILLISECOND, ...")
            amount_first = arguments[1][0]
            when_first = arguments[2][0]
            # DATEADD(day, -1, t) -> (to_days(-1) + (t)): the amount and timestamp tokens stay, so rewrites inside them apply
            edits.append(Edit(token.start, tokens[amount_first].start, f"({function}("))
            edits.append(Edit(tokens[when_first - 1].start, tokens[when_first].start, ") + ("))
            edits.append(Edit(tokens[close].start, tokens[close].end + 1, "))"))
            i = amount_first
            continue
        if token.token_type == TokenType.CURRENT_TIMESTAMP and following is not None \
                and following.token_type == TokenType.L_PAREN and i + 2 < len(tokens) \
                and tokens[i + 2].token_type == TokenType.R_PAREN:
            edits.append(Edit(following.start, tokens[i + 2].end + 1, ""))
            i += 3
            continue
        if token.token_type in _NAMES and following is not None and following.token_type == TokenType.COLON \
                and i + 2 < len(tokens) and is_name_token(tokens[i + 2]):
            keys, j = [tokens[i + 2].text], i + 2
            while j + 2 < len(tokens) and tokens[j + 1].token_type == TokenType.DOT and is_name_token(tokens[j + 2]):
                keys.append(tokens[j + 2].text)
                j += 2
            path = "$" + "".join('."' + key.replace('"', '\\"') + '"' for key in keys)
            q = i  # a qualified column: events.RESOURCE_ATTRIBUTES:"..."
            while q >= 2 and tokens[q - 1].token_type == TokenType.DOT and tokens[q - 2].token_type in _NAMES:
                q -= 2
            column = script[tokens[q].start:token.end + 1]
            edits.append(Edit(tokens[q].start, tokens[j].end + 1, f"json_extract_string({column}, {_sql_string(path)})"))
            i = j + 1
            continue
        i += 1
    return edits


# -------------------------------------------------------------------------------------------------
# the rewrites


def _argument_values(statement: Statement, call: TableFunction, context: TelemetryContext
                     ) -> dict[str, datetime]:
    tokens, values = statement.tokens, {}
    for first, last in _arguments(tokens, call.open_index, call.close_index):
        name = _word(tokens[first])
        if name not in ARGUMENTS or first + 1 > last or tokens[first + 1].token_type != TokenType.FARROW:
            raise ProgrammingError(f"{call.function} takes START_TIME => <timestamp> and END_TIME => <timestamp>, "
                                   f"got {statement.script[tokens[first].start:tokens[last].end + 1]!r}")
        if name in values:
            raise ProgrammingError(f"{call.function}: {name} is given twice")
        inner = tokens[first + 2:last + 1]
        if not inner:
            raise ProgrammingError(f"{call.function}: {name} => needs a timestamp")
        begin, end = inner[0].start, inner[-1].end + 1
        text = statement.script[begin:end]
        for edit in sorted(snowflake_forms(inner, statement.script), key=lambda e: e.start, reverse=True):
            text = text[: edit.start - begin] + edit.text + text[edit.end - begin:]
        values[name] = context.timestamp(text)
    return values


def table_functions(statement: Statement, context: TelemetryContext) -> list[Edit]:
    """``TABLE(svc!SPCS_GET_METRICS(...))`` -> the result, read like a table."""
    edits = []
    for call in find_table_functions(statement.tokens):
        values = _argument_values(statement, call, context)
        name = context.service_telemetry(call.name, call.function, values.get("START_TIME"), values.get("END_TIME"))
        tokens = statement.tokens
        edits.append(Edit(tokens[call.start].start, tokens[call.end].end + 1, name))
    return edits


_ALIAS_TYPES = (TokenType.VAR, TokenType.IDENTIFIER, TokenType.ALIAS)


_CLAUSE_ENDS = (TokenType.GROUP_BY, TokenType.ORDER_BY, TokenType.LIMIT, TokenType.HAVING, TokenType.QUALIFY,
                TokenType.WINDOW, TokenType.UNION, TokenType.EXCEPT, TokenType.INTERSECT, TokenType.R_PAREN)
_STAMP_WORDS = ("TIMESTAMP",)


def _filters(statement: Statement, first: int, last: int, context: TelemetryContext
             ) -> tuple[str | None, datetime | None]:
    """What the seed's query shape says of the rows it can keep: ``FROM <event table> [alias]
    WHERE a AND b AND ...`` (no OR at the top) with ``RESOURCE_ATTRIBUTES:"snow.service.name" =
    'X'`` and ``TIMESTAMP > <constant>`` among the terms. Any other shape: nothing (every row)."""
    tokens = statement.tokens
    if first == 0 or tokens[first - 1].token_type != TokenType.FROM:
        return None, None
    k = last + 1
    if k < len(tokens) and tokens[k].token_type == TokenType.ALIAS:
        k += 1
    if k < len(tokens) and tokens[k].token_type in _NAMES:
        k += 1
    if k >= len(tokens) or tokens[k].token_type != TokenType.WHERE:
        return None, None
    end, depth = k + 1, 0
    while end < len(tokens):
        kind = tokens[end].token_type
        if kind == TokenType.L_PAREN:
            depth += 1
        elif kind == TokenType.R_PAREN and depth:
            depth -= 1
        elif depth == 0 and (kind in _CLAUSE_ENDS or kind == TokenType.SEMICOLON):
            break
        elif depth == 0 and kind == TokenType.OR:
            return None, None
        end += 1
    terms, depth, begin = [], 0, k + 1
    for j in range(k + 1, end + 1):
        kind = tokens[j].token_type if j < end else TokenType.AND
        if kind == TokenType.L_PAREN:
            depth += 1
        elif kind == TokenType.R_PAREN:
            depth -= 1
        elif kind == TokenType.AND and depth == 0:
            terms.append(tokens[begin:j])
            begin = j + 1
    service: str | None = None
    start: datetime | None = None
    for term in terms:
        words = [t.text if t.token_type in (TokenType.IDENTIFIER, TokenType.STRING) else t.text.upper() for t in term]
        if len(term) == 5 and words[0] == "RESOURCE_ATTRIBUTES" and term[1].token_type == TokenType.COLON \
                and words[2] == "snow.service.name" and term[3].token_type == TokenType.EQ \
                and term[4].token_type == TokenType.STRING:
            service = term[4].text
        elif len(term) >= 3 and words[0] in _STAMP_WORDS and term[1].token_type in (TokenType.GT, TokenType.GTE):
            text = statement.script[term[2].start:term[-1].end + 1]
            for edit in sorted(snowflake_forms(term[2:], statement.script), key=lambda e: e.start, reverse=True):
                text = text[: edit.start - term[2].start] + edit.text + text[edit.end - term[2].start:]
            try:
                start = context.timestamp(text)
            except ProgrammingError:
                pass  # not a constant: DuckDB filters
    return service, start


def event_tables(statement: Statement, context: TelemetryContext) -> list[Edit]:
    """``SNOWFLAKE.TELEMETRY.EVENTS`` -> the account's event table (aliased EVENTS unless the
    statement gives it an alias); in the seed's query shape, only the rows its WHERE can keep are
    read (`_filters`)."""
    tokens, edits = statement.tokens, []
    references = [(i, last) for i in range(len(tokens)) if (last := _event_table_at(tokens, i)) is not None]
    for i, last in references:
        service, start = _filters(statement, i, last, context) if len(references) == 1 else (None, None)
        name = context.event_table(service, start)
        aliased = last + 1 < len(tokens) and tokens[last + 1].token_type in _ALIAS_TYPES
        table = tokens[i + 4].text.upper() if tokens[i + 4].token_type != TokenType.IDENTIFIER else tokens[i + 4].text
        edits.append(Edit(tokens[i].start, tokens[last].end + 1, name if aliased else f'{name} AS "{table}"'))
    return edits


def snowflake_syntax(statement: Statement, context: TelemetryContext) -> list[Edit]:
    """In a statement that reads telemetry: colon paths, DATEADD, CURRENT_TIMESTAMP() for DuckDB."""
    if not applies(statement):
        return []
    skip = [(c.start, c.end) for c in find_table_functions(statement.tokens)]
    return snowflake_forms(statement.tokens, statement.script, skip)


REWRITES = [table_functions, event_tables, snowflake_syntax]
