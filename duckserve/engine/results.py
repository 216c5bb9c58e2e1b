"""What a control-plane operation returns: named columns and rows, turned into a relation by ``sql``."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Rows:
    columns: list[str]
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    #: optional DuckDB type per column (by name) where the values alone cannot say it
    types: dict[str, str] = field(default_factory=dict)

    @classmethod
    def status(cls, message: str) -> Rows:
        return cls(["status"], [(message,)])

    @classmethod
    def of(cls, columns: Sequence[str], records: Sequence[dict[str, Any]], types: dict[str, str] | None = None) -> Rows:
        return cls(list(columns), [tuple(r.get(c) for c in columns) for r in records], dict(types or {}))


def like_matcher(pattern: str | None) -> re.Pattern[str] | None:
    """SHOW ... LIKE 'pattern': SQL LIKE, case-insensitive as Snowflake's SHOW is."""
    if pattern is None:
        return None
    out = []
    escape = False
    for ch in pattern:
        if escape:
            out.append(re.escape(ch))
            escape = False
        elif ch == "\\":
            escape = True
        elif ch == "%":
            out.append(".*")
        elif ch == "_":
            out.append(".")
        else:
            out.append(re.escape(ch))
    return re.compile("^" + "".join(out) + "$", re.IGNORECASE | re.DOTALL)
