"""A per-user store of compiled bytecode, shared by the model environments of every home.

uv installs a package by hard-linking the files of its cache, so the same ``sklearn/base.py`` is
one file (one inode, one mtime) in every environment that has that version. Its ``.pyc`` is then
valid in all of them (Python checks a ``.pyc`` against its source's mtime and size, and rewrites
the code's file name on load), but each new environment compiled it again: about 5 s of a 6 s
first ``import sklearn`` on two cores. After a build, the environment's ``.pyc`` files are linked
into the store under their source's identity (inode, size, mtime in ns, interpreter tag); before
the next build's first import, each source whose identity is in the store gets its ``.pyc`` back.

The store is ``$DUCKSERVE_BYTECODE_CACHE``, else ``$XDG_CACHE_HOME/duckserve/bytecode`` (by default
``~/.cache/duckserve/bytecode``), private to the user (mode 0700) like uv's own cache. It is a cache:
any file may be removed at any time, and a missing or unusable entry only means compiling again.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

CACHE_ENV = "DUCKSERVE_BYTECODE_CACHE"
PYCACHE = "__pycache__"


def store_dir() -> Path:
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "duckserve" / "bytecode"


def _key(source: os.stat_result, tag: str) -> str:
    return f"{source.st_ino}-{source.st_size}-{source.st_mtime_ns}.{tag}.pyc"


def _compiled(directory: Path, name: str, tag: str) -> Path:
    """Where Python looks for the bytecode of ``directory/name``."""
    return directory / PYCACHE / f"{name[:-3]}.{tag}.pyc"


def _sources(root: Path, skip: tuple[str, ...] = ()) -> dict[Path, list[str]]:
    """Directory -> names of its ``.py`` files, for every directory under ``root`` but the
    top-level ones named in ``skip``."""
    found: dict[Path, list[str]] = {}
    for directory, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != PYCACHE and not (directory == str(root) and d in skip)]
        names = [f for f in filenames if f.endswith(".py")]
        if names:
            found[Path(directory)] = names
    return found


def _place(source: Path, target: Path) -> bool:
    """Link (or, across file systems, copy) ``source`` to ``target`` atomically; False on failure."""
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        try:
            os.link(source, temporary)
        except OSError:
            shutil.copy2(source, temporary)
        os.replace(temporary, target)
        return True
    except OSError:
        temporary.unlink(missing_ok=True)
        return False


def restore(site_packages: Path, tag: str, store: Path | None = None) -> int:
    """Put the stored ``.pyc`` of every source under ``site_packages`` that has one; how many."""
    store = store or store_dir()
    if not store.is_dir():
        return 0
    stored = set(os.listdir(store))
    restored = 0
    for directory, names in _sources(site_packages).items():
        for name in names:
            try:
                key = _key((directory / name).stat(), tag)
            except OSError:
                continue
            if key not in stored:
                continue
            target = _compiled(directory, name, tag)
            target.parent.mkdir(exist_ok=True)
            if not target.exists() and _place(store / key, target):
                restored += 1
    return restored


def save(site_packages: Path, tag: str, store: Path | None = None, skip: tuple[str, ...] = ()) -> int:
    """Add the ``.pyc`` files of ``site_packages`` that the store lacks, but those of the top-level
    packages in ``skip`` (copies made for this environment alone); how many."""
    store = store or store_dir()
    try:
        store.mkdir(parents=True, exist_ok=True, mode=0o700)
        stored = set(os.listdir(store))
    except OSError:
        return 0
    saved = 0
    for directory, names in _sources(site_packages, skip).items():
        if not (directory / PYCACHE).is_dir():
            continue
        for name in names:
            compiled = _compiled(directory, name, tag)
            try:
                key = _key((directory / name).stat(), tag)
            except OSError:
                continue
            if key in stored or not compiled.is_file():
                continue
            if _place(compiled, store / key):
                saved += 1
    return saved
