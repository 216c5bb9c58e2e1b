"""What a test needs from the machine: skip with the reason elsewhere, fail on CI (``CI=true``),
where a test that cannot run must not pass as green."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest


def unavailable(reason: str) -> None:
    """The test cannot run here: fail on CI, skip elsewhere; ``reason`` says how to enable it."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true: this test must run, but {reason}")
    pytest.skip(reason)


def module(name: str, how: str) -> ModuleType:
    """``import name``, or unavailable with ``how`` to install it."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        unavailable(f"{name} is not installed ({exc}): {how}")
        raise
