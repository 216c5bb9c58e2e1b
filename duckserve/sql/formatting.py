"""Results as text: aligned tables, csv, tsv, json, json lines, markdown and vertical records.

One function, ``render``, turns a result into text in any of ``FORMATS``; the command line
and the shell print through it. A result is a ``Grid`` (column names, which
are numeric, Python rows): a statement's rows as the cursor returns them (``Grid.of``), or an
Arrow table the shell builds itself.
"""

from __future__ import annotations

import csv
import datetime
import decimal
import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import pyarrow as pa

FORMATS = ("table", "csv", "tsv", "json", "jsonl", "markdown", "vertical")



def display_width(text: str) -> int:
    """Columns the text takes on a terminal (East Asian wide characters and emoji count twice)."""
    if text.isascii():
        return len(text)
    try:
        from wcwidth import wcswidth
    except ImportError:  # pragma: no cover - wcwidth comes with prompt_toolkit
        return len(text)
    width = int(wcswidth(text))
    return width if width >= 0 else len(text)


def _pad(text: str, width: int, right: bool) -> str:
    fill = " " * max(0, width - display_width(text))
    return fill + text if right else text + fill


def truncate(text: str, width: int) -> str:
    """Cut to ``width`` display columns, marking the cut with an ellipsis."""
    if width <= 0 or display_width(text) <= width:
        return text
    out, used = [], 0
    for char in text:
        w = display_width(char)
        if used + w > width - 1:
            break
        out.append(char)
        used += w
    return "".join(out) + "…"


@dataclass
class FormatOptions:
    """How cells look: the header, the text for NULL, the widest cell, how many rows to show."""

    header: bool = True
    null: str = "NULL"
    max_cell_width: int = 60
    max_rows: int | None = None  # rows shown by the table-like formats; the rest are counted


def is_numeric(data_type: pa.DataType) -> bool:
    return bool(pa.types.is_integer(data_type) or pa.types.is_floating(data_type)
                or pa.types.is_decimal(data_type))


def cell_text(value: Any, null: str = "NULL") -> str:
    """A value as one line of text (NULL for None; nested values in Python's notation)."""
    if value is None:
        return null
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    return str(value).replace("\r\n", " ").replace("\n", " ").replace("\t", " ")


def _json_value(value: Any) -> Any:
    if isinstance(value, (datetime.date, datetime.time, datetime.datetime, datetime.timedelta)):
        return str(value)
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    return value


_NUMERIC_TYPES = re.compile(r"^(U?(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT)|BIGNUM|DECIMAL.*|FLOAT|DOUBLE)$")


@dataclass
class Grid:
    """What a formatter prints: column names, whether each is numeric, and the rows."""

    names: list[str]
    numeric: list[bool]
    rows: list[tuple[Any, ...]]

    @property
    def num_rows(self) -> int:
        return len(self.rows)

    @classmethod
    def of(cls, description: Sequence[tuple[Any, ...]], rows: list[tuple[Any, ...]]) -> Grid:
        """A statement's rows, as its cursor fetched them, with its DB-API description."""
        return cls([d[0] for d in description], [bool(_NUMERIC_TYPES.match(str(d[1]))) for d in description], rows)


Printable: TypeAlias = "Grid | pa.Table"


def grid(data: Printable) -> Grid:
    if isinstance(data, Grid):
        return data
    rows = list(zip(*(c.to_pylist() for c in data.columns))) if data.num_columns else []
    return Grid(data.column_names, [is_numeric(f.type) for f in data.schema], rows)


def _rows(table: Grid, limit: int | None = None) -> list[tuple[Any, ...]]:
    return table.rows if limit is None else table.rows[:limit]


def row_count(n: int, seconds: float | None = None) -> str:
    """``3 rows`` / ``1 row (0.012 s)``."""
    text = f"{n:,} row{'s' if n != 1 else ''}"
    return text + (f" ({seconds:.3f} s)" if seconds is not None else "")


def format_table(data: Printable, options: FormatOptions | None = None, seconds: float | None = None,
                 footer: bool = True) -> str:
    """An aligned text table (numbers right-aligned) with a row count and, when given, the time."""
    table = grid(data)
    options = options or FormatOptions()
    names = table.names
    numeric = table.numeric
    shown = _rows(table, options.max_rows)
    cells = [[truncate(cell_text(v, options.null), options.max_cell_width) for v in row] for row in shown]
    heads = [truncate(n, options.max_cell_width) for n in names]
    widths = [max([display_width(heads[i]) if options.header else 0] + [display_width(r[i]) for r in cells])
              for i in range(len(names))]
    out: list[str] = []
    if names:
        line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
        out.append(line)
        if options.header:
            out.append("| " + " | ".join(_pad(h, w, False) for h, w in zip(heads, widths)) + " |")
            out.append(line)
        for row in cells:
            out.append("| " + " | ".join(_pad(c, w, r) for c, w, r in zip(row, widths, numeric)) + " |")
        out.append(line)
    if footer:
        count = row_count(table.num_rows, seconds)
        if len(shown) < table.num_rows:
            count += f", {len(shown):,} shown (!set max_rows=N to see more)"
        out.append(count)
    return "\n".join(out)


def format_vertical(data: Printable, options: FormatOptions | None = None) -> str:
    """One block per record, a column per line (psql's expanded display)."""
    table = grid(data)
    options = options or FormatOptions()
    names = table.names
    width = max((display_width(n) for n in names), default=0)
    out = []
    for i, row in enumerate(_rows(table, options.max_rows), start=1):
        out.append(f"-[ RECORD {i} ]" + "-" * max(0, width - 8))
        for name, value in zip(names, row):
            text = cell_text(value, options.null)
            out.append(f"{_pad(name, width, False)} | {truncate(text, max(options.max_cell_width, 80))}")
    return "\n".join(out)


def format_markdown(data: Printable, options: FormatOptions | None = None) -> str:
    """A GitHub-flavoured markdown table; ``|`` inside cells is escaped."""
    table = grid(data)
    options = options or FormatOptions()

    def esc(text: str) -> str:
        return text.replace("|", "\\|")

    names = table.names
    if not names:
        return ""
    numeric = table.numeric
    out = ["| " + " | ".join(esc(n) for n in names) + " |",
           "|" + "|".join("---:" if r else "---" for r in numeric) + "|"]
    for row in _rows(table, options.max_rows):
        out.append("| " + " | ".join(esc(cell_text(v, options.null)) for v in row) + " |")
    return "\n".join(out)


def format_delimited(data: Printable, delimiter: str = ",", header: bool = True) -> str:
    table = grid(data)
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\n")
    if header:
        writer.writerow(table.names)
    for row in _rows(table):
        writer.writerow(["" if v is None else cell_text(v) if isinstance(v, (bool, bytes)) else v for v in row])
    return buffer.getvalue().rstrip("\n")


def format_json(data: Printable, lines: bool = False) -> str:
    """A JSON array with one record per line, or JSON lines (one object per line, no brackets)."""
    table = grid(data)
    records = [json.dumps(_json_value(r), default=str, ensure_ascii=False) for r in (dict(zip(table.names, row)) for row in table.rows)]
    if lines:
        return "\n".join(records)
    if not records:
        return "[]"
    return "[\n" + ",\n".join(records) + "\n]"


def render(table: Printable, fmt: str, options: FormatOptions | None = None,
           seconds: float | None = None, footer: bool = True) -> str:
    """The table as text in ``fmt`` (one of ``FORMATS``); only "table" carries the row-count footer."""
    options = options or FormatOptions()
    if fmt == "table":
        return format_table(table, options, seconds, footer)
    if fmt == "csv":
        return format_delimited(table, ",", options.header)
    if fmt == "tsv":
        return format_delimited(table, "\t", options.header)
    if fmt == "json":
        return format_json(table)
    if fmt == "jsonl":
        return format_json(table, lines=True)
    if fmt == "markdown":
        return format_markdown(table, options)
    if fmt == "vertical":
        return format_vertical(table, options)
    raise ValueError(f"unknown output format {fmt!r}: use one of {', '.join(FORMATS)}")


def check_format(fmt: str, choices: Sequence[str] = FORMATS) -> str:
    """The format name normalized, or ValueError naming the choices."""
    name = fmt.strip().lower()
    aliases = {"md": "markdown", "ndjson": "jsonl", "expanded": "vertical", "line": "vertical", "psql": "table",
               "grid": "table", "box": "table"}
    name = aliases.get(name, name)
    if name not in choices:
        raise ValueError(f"unknown output format {fmt!r}: use one of {', '.join(choices)}")
    return name
