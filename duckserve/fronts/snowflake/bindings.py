"""Bind values as Snowflake's drivers send them (``{"1": {"type": "FIXED", "value": "10"}}``, a list
of values per placeholder for an array binding) turned into Python values for DuckDB, and the
``:1`` placeholders of the numeric paramstyle turned into DuckDB's ``$1``."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from duckserve.errors import ProgrammingError

_EPOCH = dt.datetime(1970, 1, 1)


def _integer_or_decimal(text: str) -> int | Decimal:
    try:
        return int(text)
    except ValueError:
        return Decimal(text)


def _timestamp(nanoseconds: str) -> dt.datetime:
    ns = int(Decimal(nanoseconds))
    return _EPOCH + dt.timedelta(microseconds=ns // 1000)


def _time(nanoseconds: str) -> dt.time:
    ns = int(Decimal(nanoseconds))
    return (dt.datetime.min + dt.timedelta(microseconds=ns // 1000)).time()


def _timestamp_tz(text: str) -> dt.datetime:
    parts = text.split()
    moment = _timestamp(parts[0]).replace(tzinfo=dt.timezone.utc)
    if len(parts) > 1:
        offset = dt.timedelta(minutes=int(parts[1]) - 1440)
        moment = moment.astimezone(dt.timezone(offset))
    return moment


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "t", "yes", "y", "on"):
        return True
    if lowered in ("false", "0", "f", "no", "n", "off"):
        return False
    raise ValueError(text)


_CONVERTERS: dict[str, Any] = {
    "FIXED": _integer_or_decimal,
    "REAL": float,
    "DECFLOAT": Decimal,
    "TEXT": str,
    "ANY": str,
    "VARIANT": str,
    "OBJECT": str,
    "ARRAY": str,
    "BOOLEAN": _boolean,
    "DATE": lambda text: (_EPOCH + dt.timedelta(milliseconds=int(Decimal(text)))).date(),
    "TIME": _time,
    "TIMESTAMP_NTZ": _timestamp,
    "TIMESTAMP_LTZ": lambda text: _timestamp(text).replace(tzinfo=dt.timezone.utc),
    "TIMESTAMP_TZ": _timestamp_tz,
    "TIMESTAMP": _timestamp,
    "BINARY": bytes.fromhex,
}


def value_of(binding_type: str, value: Any, position: str) -> Any:
    if value is None:
        return None
    if not isinstance(value, str):
        return value
    kind = str(binding_type or "TEXT").upper()
    converter = _CONVERTERS.get(kind)
    if converter is None:
        raise ProgrammingError(f"bind variable {position}: type {kind} is not supported; bind it as TEXT and cast")
    try:
        return converter(value)
    except (ValueError, ArithmeticError) as exc:
        raise ProgrammingError(f"bind variable {position}: {value!r} is not a valid {kind}") from exc


def from_bindings(bindings: dict[str, Any] | None) -> tuple[list[Any] | dict[str, Any] | None,
                                                            list[list[Any]] | None]:
    """(parameters of one execution, or rows of an array binding); either may be None."""
    if not bindings:
        return None, None
    if not all(str(k).isdigit() for k in bindings):
        return {str(k): value_of(b.get("type"), b.get("value"), str(k)) for k, b in bindings.items()}, None
    positions = sorted(bindings, key=lambda k: int(k))
    if any(isinstance(bindings[k].get("value"), list) for k in positions):
        columns = []
        for k in positions:
            b = bindings[k]
            values = b.get("value")
            if not isinstance(values, list):
                raise ProgrammingError(f"bind variable {k}: an array binding needs a list of values for every "
                                       "placeholder")
            columns.append([value_of(b.get("type"), v, k) for v in values])
        if len({len(c) for c in columns}) > 1:
            raise ProgrammingError("array binding: every placeholder needs as many values as there are rows")
        return None, [list(row) for row in zip(*columns)]
    return [value_of(bindings[k].get("type"), bindings[k].get("value"), k) for k in positions], None


def to_duckdb(sql: str, numeric: bool = False) -> str:
    """Snowflake's lexical forms that DuckDB reads otherwise, outside comments and ``$$`` strings:

    - a string literal with backslash escapes (``'it\\'s'``, what client-side binding writes) becomes
      DuckDB's escape string ``E'it\\'s'``;
    - with ``numeric``, the placeholders ``:1`` of the numeric paramstyle become ``$1`` (``::`` casts
      stay casts).
    """
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c == "'":
            end, escaped = i + 1, False
            while end < n:
                if sql[end] == "\\":
                    escaped = True
                    end += 2
                    continue
                if sql[end] == "'":
                    if end + 1 < n and sql[end + 1] == "'":
                        end += 2
                        continue
                    break
                end += 1
            prefixed = i > 0 and (sql[i - 1].isalnum() or sql[i - 1] == "_")
            out.append(("E" if escaped and not prefixed else "") + sql[i:end + 1])
            i = end + 1
        elif c == '"':
            end = sql.find('"', i + 1)
            while end >= 0 and end + 1 < n and sql[end + 1] == '"':
                end = sql.find('"', end + 2)
            end = n if end < 0 else end + 1
            out.append(sql[i:end])
            i = end
        elif sql.startswith("$$", i):
            end = sql.find("$$", i + 2)
            end = n if end < 0 else end + 2
            out.append(sql[i:end])
            i = end
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            end = n if end < 0 else end
            out.append(sql[i:end])
            i = end
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            end = n if end < 0 else end + 2
            out.append(sql[i:end])
            i = end
        elif numeric and c == ":" and i + 1 < n and sql[i + 1].isdigit() and (i == 0 or sql[i - 1] != ":"):
            j = i + 1
            while j < n and sql[j].isdigit():
                j += 1
            out.append("$" + sql[i + 1:j])
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)
