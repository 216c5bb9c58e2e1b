"""The Python variables a statement's replacement scans see: the caller's, never duckserve's.

DuckDB reads an unknown table name as a Python variable of the frame that called it (a pandas
DataFrame, an Arrow table...): with plain duckdb that is the user's own code. Called from inside
duckserve it would be duckserve's frame, so ``SELECT * FROM threads`` would find a local variable of
ours. Every statement therefore runs from a frame whose variables are exactly those of the first
frame outside duckserve (the user's), plus the tables duckserve itself hands the statement
(``(SHOW ...)`` and ``RESULT_SCAN`` results) under names of their own: no view, no catalog entry.

The call is made from an ``eval`` frame with those dictionaries; the callable travels as the code
object's constant (a ``functools.partial``, implemented in C, so no Python frame of ours comes between).
"""

from __future__ import annotations

import builtins
import functools
import sys
import warnings
from collections.abc import Callable, Mapping
from types import FrameType
from typing import Any

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # "'NoneType' object is not callable": the constant is replaced per call
    _CALL = compile("None()", "<duckdb statement>", "eval")

#: the caller's globals and locals, and where the call is in its source (DuckDB's messages name it)
Scope = tuple[dict[str, Any], Mapping[str, Any], str, int]

#: a scope with no variables at all (fronts that serve other processes pass it)
EMPTY: Scope = ({}, {}, "<duckserve>", 1)


def _ours(frame: FrameType) -> bool:
    name = frame.f_globals.get("__name__", "")
    return name == "duckserve" or name.startswith("duckserve.")


def caller_scope() -> Scope:
    """The globals and locals of the first frame outside duckserve (empty when there is none)."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and _ours(frame):
        frame = frame.f_back
    if frame is None:
        return EMPTY
    return frame.f_globals, frame.f_locals, frame.f_code.co_filename, frame.f_lineno or 1


def call(function: Callable[..., Any], *arguments: Any, scope: Scope, sources: Mapping[str, Any] | None = None) -> Any:
    """``function(*arguments)`` with DuckDB's replacement scans seeing ``scope`` and ``sources``."""
    user_globals, user_locals, filename, line = scope
    variables = {**user_locals, **sources} if sources else user_locals
    if "__builtins__" not in user_globals:
        user_globals = {**user_globals, "__builtins__": builtins}  # DuckDB imports modules from this frame
    code = _CALL.replace(co_consts=(functools.partial(function, *arguments),), co_filename=filename,
                         co_firstlineno=line)
    return eval(code, user_globals, variables)  # noqa: S307 - the code is ours: one call of a constant
