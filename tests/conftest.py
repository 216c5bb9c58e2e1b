from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import duckserve


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def conn(home: Path) -> Iterator[Any]:
    connection = duckserve.connect(home=str(home))
    yield connection
    connection.close()


def rows(connection: Any, sql: str) -> list[dict[str, Any]]:
    """Run SQL and return the last result as a list of dicts."""
    cursor = connection.cursor()
    cursor.execute(sql)
    if cursor.description is None:
        return []
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, r)) for r in cursor.fetchall()]
