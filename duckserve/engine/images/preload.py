"""A built image loaded straight into the local Docker engine, while the build pushes it.

An instance's container needs its image in the engine. Pulling it from the registry after the push
copies every new layer twice more (the engine downloads it to a temporary file, then unpacks it) and
sends the base layer again (the engine cannot tell that the layer it imported is the registry's
blob). Instead the build streams a ``docker save`` archive of the image to the engine (``docker
load``; ``publish`` sends it while it pushes): the layers the engine does not have (a load skips a
layer whose chain it has, without opening its file), then the config and ``manifest.json``. The
instance's pull then only reads the manifest: the engine finds the image (its id is the config's
digest) and records the registry's digest for it.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

from duckserve.engine.images.layers import EPOCH, Layer

CHUNK = 1 << 20


def _member(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, EPOCH, 0o644
    return info.tobuf(tarfile.USTAR_FORMAT)


def _padding(size: int) -> bytes:
    return b"\0" * (-size % tarfile.BLOCKSIZE)


def _layer_name(layer: Layer) -> str:
    return layer.digest.split(":", 1)[1] + "/layer.tar"


def layer_entry(layer: Layer) -> Iterator[bytes]:
    """A layer's file in the archive."""
    yield _member(_layer_name(layer), layer.size)
    yield from _chunks(layer.path, layer.size)
    yield _padding(layer.size)


def config_entries(config: bytes, config_digest: str, layers: list[Layer], tag: str) -> Iterator[bytes]:
    """The end of the archive: the image's config, ``manifest.json`` (naming every layer, sent or
    not) and the end-of-archive blocks."""
    config_name = config_digest.split(":", 1)[1] + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [tag],
                            "Layers": [_layer_name(layer) for layer in layers]}]).encode()
    for name, data in ((config_name, config), ("manifest.json", manifest)):
        yield _member(name, len(data)) + data + _padding(len(data))
    yield b"\0" * (2 * tarfile.BLOCKSIZE)


def _chunks(path: Path, size: int) -> Iterator[bytes]:
    sent = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            sent += len(chunk)
            yield chunk
    if sent != size:
        raise OSError(f"layer {path} has {sent} bytes, not {size}")
