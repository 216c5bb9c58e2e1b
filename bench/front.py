"""The SQL front's own cost: small statements and large results, duckserve against plain DuckDB.

Each measurement runs the same work on a plain ``duckdb.connect()`` and on ``duckserve.connect()``
in the same run, in rounds (one run of each per round) so that the machine's slow spells fall on
both alike; the figure is the median of the rounds and the ratio duckserve / DuckDB.

(1) N round trips of ``SELECT ?`` with a parameter, ``fetchone`` each (the front's per-statement cost);
(2) N round trips of ``SELECT 42`` through a cursor's ``execute`` + ``fetchall``;
(3) a 1,000,000-row x 3-column result read with ``fetchall`` (Python rows);
(4) the same result as Arrow (``fetch_arrow_table``, DuckDB's Arrow reader on both sides).
Usage: python bench/front.py [--statements N] [--rows N] [--runs K]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from typing import Any

import duckdb

import duckserve


def rounds(pairs: dict[str, tuple[Callable[[], Any], Callable[[], Any]]], runs: int) -> dict[str, tuple[float, float]]:
    timings: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in pairs}
    for plain, served in pairs.values():
        plain(), served()  # warm-up
    for _ in range(runs):
        for name, functions in pairs.items():
            for side, function in enumerate(functions):
                started = time.perf_counter()
                function()
                timings[name][side].append(time.perf_counter() - started)
    return {name: (statistics.median(a), statistics.median(b)) for name, (a, b) in timings.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--statements", type=int, default=10_000)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    n, rows = args.statements, args.rows
    plain = duckdb.connect()
    with tempfile.TemporaryDirectory() as home:
        served = duckserve.connect(home=home)
        table = f"CREATE TABLE big AS SELECT range AS i, range * 1.5 AS f, 'row ' || range AS s FROM range({rows})"
        plain.execute(table)
        served.execute(table)

        def plain_params() -> None:
            for i in range(n):
                plain.execute("SELECT ?", [i]).fetchone()

        def served_params() -> None:
            cursor = served.cursor()
            for i in range(n):
                cursor.execute("SELECT ?", [i]).fetchone()

        def plain_small() -> None:
            for _ in range(n):
                plain.execute("SELECT 42").fetchall()

        def served_small() -> None:
            cursor = served.cursor()
            for _ in range(n):
                cursor.execute("SELECT 42").fetchall()

        def plain_arrow() -> Any:
            plain.execute("SELECT * FROM big")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return plain.to_arrow_reader().read_all()

        pairs = {
            f"(1) {n:,} x SELECT ? + fetchone": (plain_params, served_params),
            f"(2) {n:,} x SELECT 42 + fetchall": (plain_small, served_small),
            f"(3) {rows:,} rows x 3 columns, fetchall": (lambda: plain.execute("SELECT * FROM big").fetchall(),
                                                        lambda: served.execute("SELECT * FROM big").fetchall()),
            f"(4) {rows:,} rows x 3 columns, Arrow": (plain_arrow,
                                                     lambda: served.execute("SELECT * FROM big").fetch_arrow_table()),
        }
        results = rounds(pairs, args.runs)
        served.close()
    print(f"duckserve front bench: median of {args.runs} rounds, Python {sys.version.split()[0]}, "
          f"DuckDB {duckdb.__version__}")
    print(f"{'measurement':44} {'duckdb s':>9} {'duckserve s':>11} {'ratio':>7} {'per statement':>14}")
    for name, (a, b) in results.items():
        per = f"+{(b - a) / n * 1e6:.1f} us" if name.startswith(("(1)", "(2)")) else ""
        print(f"{name:44} {a:9.3f} {b:11.3f} {b / a:6.2f}x {per:>14}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
