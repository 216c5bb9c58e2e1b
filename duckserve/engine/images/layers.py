"""Image layers: reproducible tar files of directories, kept in a per-user cache by content.

A layer is an uncompressed tar (an OCI ``application/vnd.oci.image.layer.v1.tar``: on one machine,
compressing costs more time than copying saves) whose entries are sorted, owned by root and dated
at a fixed time, so the same files give the same bytes and the same digest on every build. Blobs
live in ``<cache>/images/blobs/sha256/<hex>``; ``<cache>/images/layers/<key>.json`` remembers which
blob a layer's inputs (its key) produced, so a layer is built once per machine.

The cache is ``$DUCKSERVE_CACHE_DIR/images``, else ``$XDG_CACHE_HOME/duckserve/images`` (by default
``~/.cache/duckserve/images``); like uv's cache it may be deleted at any time.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import stat
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar"
#: the date of every file in a layer and of the image (reproducible builds' SOURCE_DATE_EPOCH)
EPOCH = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))


def cache_dir() -> Path:
    configured = os.environ.get("DUCKSERVE_CACHE_DIR")
    if configured:
        return Path(configured) / "images"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "duckserve" / "images"


@dataclass(frozen=True)
class Layer:
    """A layer blob: its digest (of the uncompressed tar, so also its diff id), size, and what it holds."""

    digest: str
    size: int
    description: str

    @property
    def path(self) -> Path:
        return blob_path(self.digest)


def blob_path(digest: str) -> Path:
    return cache_dir() / "blobs" / "sha256" / digest.split(":", 1)[1]


@contextmanager
def locked(name: str) -> Iterator[None]:
    """An exclusive lock across processes (two builds of one layer wait for each other)."""
    directory = cache_dir() / "locks"
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / f"{name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cached_layer(key: str) -> Layer | None:
    try:
        layer = Layer(**json.loads((cache_dir() / "layers" / f"{key}.json").read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return layer if layer.path.is_file() and layer.path.stat().st_size == layer.size else None


def remember_layer(key: str, layer: Layer) -> None:
    directory = cache_dir() / "layers"
    directory.mkdir(parents=True, exist_ok=True)
    temporary = directory / f".{key}.{os.getpid()}.tmp"
    temporary.write_text(json.dumps(asdict(layer)))
    os.replace(temporary, directory / f"{key}.json")


class _HashingWriter:
    def __init__(self, target: IO[bytes]) -> None:
        self.target, self.digest, self.size = target, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.target.write(data)

    def tell(self) -> int:
        return self.size


def _info(name: str, st: os.stat_result, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode = stat.S_IMODE(st.st_mode)
    info.mtime = EPOCH
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = kind
    return info


def write_layer(sources: list[tuple[Path, str]], description: str, skip: tuple[str, ...] = ()) -> Layer:
    """A layer holding each source directory's tree under its path in the image (``("/host/dir",
    "opt/venv/lib")``), with the parent directories, entries sorted; names in ``skip`` (directory or
    file names, e.g. ``__pycache__``) are left out. Stored in the cache; returns its blob."""
    blobs = cache_dir() / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    entries: dict[str, tuple[Path | None, str]] = {}  # name in the image -> (host path, parent)
    for root, target in sources:
        target = target.strip("/")
        parts = target.split("/") if target else []
        for depth in range(1, len(parts) + 1):
            entries.setdefault("/".join(parts[:depth]), (None, ""))
        for directory, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d not in skip)
            relative = os.path.relpath(directory, root)
            for name in dirnames + sorted(f for f in filenames if f not in skip):
                inside = os.path.normpath(os.path.join(target or ".", relative, name))
                entries[inside] = (Path(directory) / name, "")
    fd, temporary = tempfile.mkstemp(dir=blobs, prefix=".layer-")
    with os.fdopen(fd, "wb") as raw:
        writer = _HashingWriter(raw)
        with tarfile.open(fileobj=writer, mode="w", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
            for name in sorted(entries):
                host, _ = entries[name]
                if host is None:
                    tar.addfile(_info(name, os.stat("/"), tarfile.DIRTYPE))
                    continue
                st = os.lstat(host)
                if stat.S_ISLNK(st.st_mode):
                    info = _info(name, st, tarfile.SYMTYPE)
                    info.linkname = os.readlink(host)
                    tar.addfile(info)
                elif stat.S_ISDIR(st.st_mode):
                    tar.addfile(_info(name, st, tarfile.DIRTYPE))
                elif stat.S_ISREG(st.st_mode):
                    info = _info(name, st, tarfile.REGTYPE)
                    info.size = st.st_size
                    with open(host, "rb") as fh:
                        tar.addfile(info, fh)
    digest = "sha256:" + writer.digest.hexdigest()
    os.replace(temporary, blob_path(digest))
    return Layer(digest, writer.size, description)


def store_blob(data: bytes | Iterator[bytes], description: str) -> Layer:
    """A blob (e.g. a layer read from ``docker save``) into the cache."""
    blobs = cache_dir() / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=blobs, prefix=".blob-")
    digest, size = hashlib.sha256(), 0
    with os.fdopen(fd, "wb") as out:
        for chunk in ([data] if isinstance(data, bytes) else data):
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)
    name = "sha256:" + digest.hexdigest()
    os.replace(temporary, blob_path(name))
    return Layer(name, size, description)


def key_of(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]
