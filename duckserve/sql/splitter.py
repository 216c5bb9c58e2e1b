"""Split a script into statements and tokenize them with sqlglot's DuckDB tokenizer.

The tokenizer knows strings, comments, ``$$...$$`` and ``$tag$...$tag$``, so a ``;`` inside any
of them never splits. Two changes to the stock DuckDB tokenizer: ``CALL``/``EXPLAIN`` are not
swallowed as opaque commands, and ``$`` may appear inside identifiers (``SYSTEM$GET_SERVICE_LOGS``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlglot.dialects.duckdb import DuckDB
from sqlglot.errors import TokenError
from sqlglot.tokenizer_core import TokenizerCore
from sqlglot.tokens import Token, TokenType

from duckserve.errors import SQLSyntaxError

_DOLLAR_TAG = re.compile(r"[A-Za-z_\u0080-\uffff][A-Za-z0-9_\u0080-\uffff]*")


class _Core(TokenizerCore):
    """DuckDB's rule for ``$tag$``: the tag is empty or an identifier, so ``$1+$2`` is two parameters."""

    __slots__ = ()

    def _scan_string(self, start: str) -> bool:
        if start == "$":
            close = self.sql.find("$", self._current)
            tag = self.sql[self._current:close] if close >= 0 else ""
            if close < 0 or (tag and not _DOLLAR_TAG.fullmatch(tag)):
                self._add(self.heredoc_string_alternative)
                return True
        return super()._scan_string(start)


class Tokenizer(DuckDB.Tokenizer):
    COMMANDS = set[TokenType]()
    VAR_SINGLE_TOKENS = {"$"}

    def _init_core(self) -> TokenizerCore:
        core = super()._init_core()
        core.__class__ = _Core
        return core


@dataclass
class Statement:
    """One statement of a script: its text, its tokens, and where it starts in the script."""

    text: str
    tokens: list[Token]
    offset: int
    script: str
    #: the statement as DuckDB itself cuts a script: from the end of the previous ';' through its
    #: own ';' (the last statement: to the end of the script), comments and spaces included
    span_start: int = 0
    span_end: int = -1

    @property
    def duckdb_text(self) -> str:
        """What DuckDB would run for this statement (and ``current_query()`` would return)."""
        return self.script[self.span_start:self.span_end if self.span_end >= 0 else len(self.script)]

    def position(self, token: Token | None) -> tuple[int, int]:
        """(line, column), 1-based, of a token within the whole script (end of script when None)."""
        index = token.start if token is not None else len(self.script)
        return line_col(self.script, index)


def line_col(text: str, index: int) -> tuple[int, int]:
    line = text.count("\n", 0, index) + 1
    col = index - (text.rfind("\n", 0, index) + 1) + 1
    return line, col


def tokenize(sql: str) -> list[Token]:
    try:
        return Tokenizer().tokenize(sql)
    except TokenError as exc:
        message = str(exc)
        raise SQLSyntaxError(f"cannot read the SQL: {message}; check for an unterminated string, "
                             "quoted identifier or comment") from exc


def split(script: str) -> list[Statement]:
    """The script's statements in order; empty ones (only comments or ``;``) are skipped."""
    statements: list[Statement] = []
    current: list[Token] = []
    span_start = 0
    for token in tokenize(script):
        if token.token_type == TokenType.SEMICOLON:
            if current:
                statements.append(_statement(script, current, span_start, token.end + 1))
            current = []
            span_start = token.end + 1
        else:
            current.append(token)
    if current:
        statements.append(_statement(script, current, span_start, len(script)))
    elif statements:
        statements[-1].span_end = len(script)  # DuckDB's last statement runs to the end of the script
    return statements


def _statement(script: str, tokens: list[Token], span_start: int, span_end: int) -> Statement:
    # token positions include quotes and $$ delimiters; comments around the statement are dropped
    begin, end = tokens[0].start, tokens[-1].end + 1
    return Statement(text=script[begin:end], tokens=tokens, offset=begin, script=script, span_start=span_start,
                     span_end=span_end)
