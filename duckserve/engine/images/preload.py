"""A built image loaded straight into the local Docker engine, while the build pushes it.

An instance's container needs its image in the engine. Pulling it from the registry after the push
copies every new layer twice more (the engine downloads it to a temporary file, then unpacks it) and
sends the base layer again (the engine cannot tell that the layer it imported is the registry's
blob). Instead the build streams a ``docker save`` archive of the image to the engine (``docker
load``) at the same time as it pushes: ``manifest.json``, the config, and only the layers the engine
does not have (a load skips a layer whose chain it has, without opening its file). The instance's
pull then only reads the manifest: the engine finds the image (its id is the config's digest) and
records the registry's digest for it.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from duckserve.engine.images.layers import EPOCH, Layer
from duckserve.engine.runtimes.docker_engine import Engine

CHUNK = 1 << 20


def layers_in_engine(engine: Engine, diff_ids: list[str], images: Iterable[str]) -> int:
    """How many of the first layers of ``diff_ids`` the engine has (as the first layers of one of
    ``images``, references or ids)."""
    have = 0
    for reference in images:
        details = engine.image(reference)
        found = ((details or {}).get("RootFS") or {}).get("Layers") or []
        common = 0
        while common < min(len(found), len(diff_ids)) and found[common] == diff_ids[common]:
            common += 1
        have = max(have, common)
    return have


def _member(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, EPOCH, 0o644
    return info.tobuf(tarfile.USTAR_FORMAT)


def _padding(size: int) -> bytes:
    return b"\0" * (-size % tarfile.BLOCKSIZE)


def archive(config: bytes, config_digest: str, layers: list[Layer], skip: int, tag: str) -> Iterator[bytes]:
    """The ``docker save`` archive of an image, without the files of its first ``skip`` layers."""
    config_name = config_digest.split(":", 1)[1] + ".json"
    names = [layer.digest.split(":", 1)[1] + "/layer.tar" for layer in layers]
    manifest = json.dumps([{"Config": config_name, "RepoTags": [tag], "Layers": names}]).encode()
    for name, data in (("manifest.json", manifest), (config_name, config)):
        yield _member(name, len(data)) + data + _padding(len(data))
    for name, layer in list(zip(names, layers))[skip:]:
        yield _member(name, layer.size)
        yield from _chunks(layer.path, layer.size)
        yield _padding(layer.size)
    yield b"\0" * (2 * tarfile.BLOCKSIZE)


def _chunks(path: Path, size: int) -> Iterator[bytes]:
    sent = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            sent += len(chunk)
            yield chunk
    if sent != size:
        raise OSError(f"layer {path} has {sent} bytes, not {size}")
