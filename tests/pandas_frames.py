"""One pandas round trip, run through each SQLAlchemy path (``duckserve://`` locally and
``snowflake://`` through the server): ``to_sql`` in chunks, appended, and ``read_sql`` with bound
parameters and in chunks, with the column types a DataFrame usually holds and missing values."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd

ROWS = 2_500


def frame(rows: int = ROWS) -> pd.DataFrame:
    index = np.arange(rows)
    return pd.DataFrame({
        "id": index.astype("int64"),
        "amount": np.where(index % 7 == 0, np.nan, index * 0.25),
        "label": [None if i % 11 == 0 else f"item {i}" for i in index],
        "flag": index % 2 == 0,
        "day": [dt.date(2024, 1, 1) + dt.timedelta(days=int(i % 366)) for i in index],
    })


def round_trip(engine: Any, table: str) -> None:
    """Write ``frame()`` in two halves (replace, then append, 1,000 rows per INSERT batch) and read it
    back whole, filtered with a bound parameter and in chunks; every value must come back."""
    written = frame()
    half = len(written) // 2
    written.iloc[:half].to_sql(table, engine, index=False, if_exists="replace", chunksize=1_000)
    written.iloc[half:].to_sql(table, engine, index=False, if_exists="append", chunksize=1_000)

    columns = {c.lower(): c for c in pd.read_sql(f"SELECT * FROM {table} LIMIT 1", engine).columns}
    back = pd.read_sql(f"SELECT * FROM {table} ORDER BY id", engine).rename(columns=str.lower)
    assert len(back) == len(written) and set(back.columns) == set(written.columns), back.dtypes
    assert back["id"].tolist() == written["id"].tolist()
    assert back["amount"].isna().tolist() == written["amount"].isna().tolist()
    assert np.allclose(back["amount"].dropna().to_numpy(float), written["amount"].dropna().to_numpy(float))
    assert [None if pd.isna(v) else v for v in back["label"]] == [None if pd.isna(v) else v for v in written["label"]]
    assert [bool(v) for v in back["flag"]] == written["flag"].tolist()
    assert [pd.Timestamp(v).date() for v in back["day"]] == written["day"].tolist()

    import sqlalchemy as sa

    some = pd.read_sql(sa.text(f"SELECT id, label FROM {table} WHERE id >= :low AND label IS NOT NULL ORDER BY id"),
                       engine, params={"low": ROWS - 10})
    assert some.rename(columns=str.lower)["id"].tolist() == [i for i in range(ROWS - 10, ROWS) if i % 11]
    chunks = list(pd.read_sql(f"SELECT {columns['id']} FROM {table} ORDER BY 1", engine, chunksize=1_000))
    assert [len(c) for c in chunks] == [1_000, 1_000, 500]
