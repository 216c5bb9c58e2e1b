"""Identifiers as Snowflake treats them: unquoted ones are case-insensitive (stored upper-case),
quoted ones keep their case. Schema objects may be written ``name``, ``schema.name`` or
``database.schema.name``."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from duckserve.errors import ProgrammingError

DEFAULT_DATABASE = "DUCKSERVE"
DEFAULT_SCHEMA = "PUBLIC"

_PLAIN = re.compile(r"^[A-Z_][A-Z0-9_$]*$")


def normalize(identifier: str, quoted: bool = False) -> str:
    """The stored form of one identifier part."""
    return identifier if quoted else identifier.upper()


def display(identifier: str) -> str:
    """How to write a stored identifier back in SQL (quoted when its case or characters need it)."""
    if _PLAIN.match(identifier):
        return identifier
    return '"' + identifier.replace('"', '""') + '"'


@dataclass(frozen=True)
class ObjectName:
    """A possibly qualified name; empty database/schema mean 'not given'."""

    name: str
    schema: str = ""
    database: str = ""

    @property
    def qualified(self) -> str:
        return ".".join(display(p) for p in (self.database, self.schema, self.name) if p)

    def in_schema(self, database: str, schema: str) -> ObjectName:
        """Fill the missing qualifiers from the current database and schema."""
        return ObjectName(self.name, self.schema or schema, self.database or database)

    def __str__(self) -> str:
        return self.qualified


def split_identifier_text(text: str) -> list[tuple[str, bool]]:
    """Split ``a."B c".d`` into parts, each with whether it was quoted."""
    text = text.strip()
    parts: list[tuple[str, bool]] = []
    i, n = 0, len(text)
    while True:
        if i < n and text[i] == '"':
            j, buf = i + 1, []
            while True:
                if j >= n:
                    raise ProgrammingError(f"unterminated quoted identifier in {text!r}: close it with a double quote")
                if text[j] == '"':
                    if j + 1 < n and text[j + 1] == '"':
                        buf.append('"')
                        j += 2
                        continue
                    break
                buf.append(text[j])
                j += 1
            parts.append(("".join(buf), True))
            i = j + 1
        else:
            j = text.find(".", i)
            j = n if j < 0 else j
            part = text[i:j].strip()
            if not part:
                raise ProgrammingError(f"empty name part in {text!r}: write name, schema.name or database.schema.name")
            parts.append((part, False))
            i = j
        if i >= n:
            return parts
        if text[i] != ".":
            raise ProgrammingError(f"invalid name {text!r}: parts are separated by dots")
        i += 1
        if i >= n:
            raise ProgrammingError(f"invalid name {text!r}: it ends with a dot")


def parse_name(text: str, what: str = "name") -> ObjectName:
    """Parse a name given as a Python string (``"mydb.myschema.my_repo"``)."""
    if not isinstance(text, str) or not text.strip():
        raise ProgrammingError(f"{what} must be a non-empty string, got {text!r}")
    parts = [normalize(p, q) for p, q in split_identifier_text(text)]
    if len(parts) > 3:
        raise ProgrammingError(f"invalid {what} {text!r}: at most database.schema.name")
    while len(parts) < 3:
        parts.insert(0, "")
    return ObjectName(parts[2], parts[1], parts[0])


def parse_simple_name(text: str, what: str = "name") -> str:
    """Parse an unqualified account-level name (role, user, pool, warehouse)."""
    parts = split_identifier_text(text) if isinstance(text, str) and text.strip() else []
    if len(parts) != 1:
        raise ProgrammingError(f"invalid {what} {text!r}: expected a single identifier")
    return normalize(*parts[0])


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """The closest existing name, for 'did you mean' hints."""
    pool = list(candidates)
    matches = difflib.get_close_matches(name.upper(), [c.upper() for c in pool], n=1, cutoff=0.6)
    if not matches:
        return None
    return next(c for c in pool if c.upper() == matches[0])
