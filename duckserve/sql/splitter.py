"""Split a script into statements and tokenize them with sqlglot's DuckDB tokenizer.

The tokenizer knows strings, comments, ``$$...$$`` and ``$tag$...$tag$``, so a ``;`` inside any
of them never splits. Two changes to the stock DuckDB tokenizer: ``CALL``/``EXPLAIN`` are not
swallowed as opaque commands, and ``$`` may appear inside identifiers (``SYSTEM$GET_SERVICE_LOGS``).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot.dialects.duckdb import DuckDB
from sqlglot.errors import TokenError
from sqlglot.tokens import Token, TokenType

from duckserve.errors import SQLSyntaxError


class Tokenizer(DuckDB.Tokenizer):
    COMMANDS = set[TokenType]()
    VAR_SINGLE_TOKENS = {"$"}


@dataclass
class Statement:
    """One statement of a script: its text, its tokens, and where it starts in the script."""

    text: str
    tokens: list[Token]
    offset: int
    script: str

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
    for token in tokenize(script):
        if token.token_type == TokenType.SEMICOLON:
            if current:
                statements.append(_statement(script, current))
            current = []
        else:
            current.append(token)
    if current:
        statements.append(_statement(script, current))
    return statements


def _statement(script: str, tokens: list[Token]) -> Statement:
    # token positions include quotes and $$ delimiters; comments around the statement are dropped
    begin, end = tokens[0].start, tokens[-1].end + 1
    return Statement(text=script[begin:end], tokens=tokens, offset=begin, script=script)
