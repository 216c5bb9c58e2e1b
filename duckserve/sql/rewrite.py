"""Token-level rewrites of DuckDB statements, as small functions applied in one visible list.

Rewriting tokens in place (instead of regenerating SQL from a parse tree) keeps every DuckDB
feature working: only the spans a rewrite names change; strings, comments, ``!=`` and the rest
of the text stay byte for byte.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sqlglot.tokens import Token, TokenType

from duckserve.engine.names import ObjectName, normalize
from duckserve.errors import ProgrammingError
from duckserve.sql.splitter import Statement


@dataclass(frozen=True)
class Edit:
    start: int  # offset in the script, inclusive
    end: int  # offset in the script, exclusive
    text: str


class Context(Protocol):
    """What rewrites may ask of the connection."""

    def materialize(self, statement: Statement) -> str | None:
        """Run one of our statements (e.g. SHOW ...) and return the name its result reads under in
        this statement (a Python variable of the statement's own, no catalog object), or None when
        the statement is not ours."""

    def result_relation(self, reference: str | int) -> str:
        """The name an earlier query's result reads under: a query id, or LAST_QUERY_ID(n)'s n."""


def _word(token: Token) -> str:
    return token.text.upper() if token.token_type not in (TokenType.STRING, TokenType.IDENTIFIER) else ""


def matching_paren(tokens: list[Token], open_index: int) -> int:
    """Index of the R_PAREN closing the L_PAREN at ``open_index``."""
    depth = 0
    for j in range(open_index, len(tokens)):
        kind = tokens[j].token_type
        if kind == TokenType.L_PAREN:
            depth += 1
        elif kind == TokenType.R_PAREN:
            depth -= 1
            if depth == 0:
                return j
    raise ProgrammingError(f"unbalanced parentheses: '(' at offset {tokens[open_index].start} is never closed")


_NAME_TYPES = (TokenType.VAR, TokenType.IDENTIFIER)


def is_name_token(token: Token) -> bool:
    """A token that can be (part of) an object's name: a word or a quoted identifier."""
    return token.token_type in _NAME_TYPES or (token.text.replace("_", "").isalnum() and token.token_type not in (
        TokenType.STRING, TokenType.NUMBER))


def name_before(tokens: list[Token], bang: int) -> tuple[int, ObjectName] | None:
    """The ``[db.][schema.]name`` that ends just before ``tokens[bang]`` (the ``!`` of ``svc!m(``):
    the index of its first token and the name; None where no name stands there."""
    parts, j = [tokens[bang - 1]], bang - 1
    while j >= 2 and tokens[j - 1].token_type == TokenType.DOT and is_name_token(tokens[j - 2]):
        parts.insert(0, tokens[j - 2])
        j -= 2
    if not is_name_token(parts[-1]) or len(parts) > 3:
        return None
    names = [normalize(t.text, t.token_type == TokenType.IDENTIFIER) for t in parts]
    while len(names) < 3:
        names.insert(0, "")
    return j, ObjectName(names[2], names[1], names[0])


def show_subqueries(statement: Statement, context: Context) -> list[Edit]:
    """``FROM (SHOW COMPUTE POOLS)``: run the inner statement, read its result like a table."""
    tokens, edits, i = statement.tokens, [], 0
    while i < len(tokens) - 1:
        if tokens[i].token_type == TokenType.L_PAREN and _word(tokens[i + 1]) in ("SHOW", "DESCRIBE", "DESC"):
            j = matching_paren(tokens, i)
            inner_tokens = tokens[i + 1:j]
            begin, end = inner_tokens[0].start, inner_tokens[-1].end + 1
            inner = Statement(statement.script[begin:end], inner_tokens, begin, statement.script)
            name = context.materialize(inner)
            if name is not None:
                edits.append(Edit(tokens[i].start, tokens[j].end + 1, f"(SELECT * FROM {name})"))
                i = j + 1
                continue
        i += 1
    return edits


def result_scan(statement: Statement, context: Context) -> list[Edit]:
    """``RESULT_SCAN(LAST_QUERY_ID())``, ``RESULT_SCAN('<query id>')``, optionally inside ``TABLE(...)``."""
    tokens, edits = statement.tokens, []
    for i, token in enumerate(tokens):
        if _word(token) != "RESULT_SCAN" or i + 1 >= len(tokens) or tokens[i + 1].token_type != TokenType.L_PAREN:
            continue
        close = matching_paren(tokens, i + 1)
        inner = tokens[i + 2:close]
        reference: str | int
        if len(inner) == 1 and inner[0].token_type == TokenType.STRING:
            reference = inner[0].text
        elif inner and _word(inner[0]) == "LAST_QUERY_ID":
            digits = "".join(t.text for t in inner[2:-1])
            try:
                reference = int(digits) if digits else -1
            except ValueError as exc:
                raise ProgrammingError(f"LAST_QUERY_ID takes a whole number, got {digits!r}") from exc
        else:
            raise ProgrammingError("RESULT_SCAN takes LAST_QUERY_ID([n]) or a query id string")
        start, end = token.start, tokens[close].end + 1
        # TABLE(RESULT_SCAN(...)) -> the relation itself
        if i >= 2 and _word(tokens[i - 2]) == "TABLE" and tokens[i - 1].token_type == TokenType.L_PAREN \
                and close + 1 < len(tokens) and tokens[close + 1].token_type == TokenType.R_PAREN:
            start, end = tokens[i - 2].start, tokens[close + 1].end + 1
        edits.append(Edit(start, end, context.result_relation(reference)))
    return edits


REWRITES: list[Callable[[Statement, Context], list[Edit]]] = [
    show_subqueries,
    result_scan,
]


def applies(statement: Statement) -> bool:
    """Whether one of REWRITES may change the statement (it mentions RESULT_SCAN or ``(SHOW`` of ours)."""
    from duckserve.sql import parser

    tokens = statement.tokens
    for i, token in enumerate(tokens):
        word = _word(token)
        if word == "RESULT_SCAN" and i + 1 < len(tokens) and tokens[i + 1].token_type == TokenType.L_PAREN:
            return True
        if token.token_type == TokenType.L_PAREN and i + 1 < len(tokens) and _word(tokens[i + 1]) in (
                "SHOW", "DESCRIBE", "DESC"):
            j = matching_paren(tokens, i)
            begin = tokens[i + 1].start
            inner = Statement(statement.script[begin:tokens[j - 1].end + 1], tokens[i + 1:j], begin, statement.script)
            if parser.is_ours(inner):
                return True
    return False


def apply(statement: Statement, edits: list[Edit], text: str | None = None, base: int | None = None) -> str:
    """The statement's text (or ``text``, which starts at script offset ``base``) with the edits made."""
    if text is None or base is None:
        text, base = statement.text, statement.offset
    for edit in sorted(edits, key=lambda e: e.start, reverse=True):
        text = text[: edit.start - base] + edit.text + text[edit.end - base:]
    return text


def rewrite(statement: Statement, context: Context, rewrites: list[Callable[[Statement, Context], list[Edit]]]
            | None = None) -> str:
    """The statement's text with every rewrite applied (unchanged when none applies)."""
    edits: list[Edit] = []
    for function in rewrites if rewrites is not None else REWRITES:
        edits.extend(function(statement, context))
    return apply(statement, edits) if edits else statement.text
