"""The base image (OS + Python) that model images build on, once per machine.

By default it is built here from Debian's packages: ``debootstrap`` of bookworm with python3.11,
trimmed (no apt lists or caches, documentation, man pages or translations), written as a
reproducible layer and imported into Docker as ``duckserve/base:bookworm-python3.11``. A user may
name another image with ``$DUCKSERVE_BASE_IMAGE`` (pulled if Docker lacks it; it needs a Python).
Either way its layers are read once into the layer cache and its Python is probed (path, version,
C library) so that packages can be installed for it on the host. Progress goes to the build log.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from duckserve.engine.images.layers import Layer, blob_path, cache_dir, locked, store_blob, write_layer
from duckserve.engine.runtimes.docker_engine import Engine
from duckserve.errors import BuildError

DEFAULT_BASE = "duckserve/base:bookworm-python3.11"
SUITE, PYTHON_PACKAGE = "bookworm", "python3.11"
TRIMMED = ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/locale",
           "usr/share/info", "var/log", "var/cache/debconf")
_PROBE = ("import json, os, platform, sys; print('DUCKSERVE-PROBE ' + json.dumps({'python': os.path.realpath("
          "sys.executable), 'version': '%d.%d' % sys.version_info[:2], 'libc': platform.libc_ver()[1], "
          "'machine': platform.machine()}))")


@dataclass
class BaseImage:
    """A base image as model images use it: its layers, its Python and the platform to install for."""

    reference: str
    image_id: str
    python: str
    python_version: str
    platform: str
    layers: list[Layer] = field(default_factory=list)
    env: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return self.image_id


def _say(log: IO[str], text: str) -> None:
    log.write(f"base image: {text}\n")
    log.flush()


def base_image(engine: Engine, log: IO[str]) -> BaseImage:
    """The base image, built or pulled the first time and cached (the cache is keyed by image id)."""
    reference = os.environ.get("DUCKSERVE_BASE_IMAGE", "").strip() or DEFAULT_BASE
    with locked("base"):
        info = engine.image(reference)
        if info is None:
            if reference != DEFAULT_BASE:
                _say(log, f"pulling {reference} ($DUCKSERVE_BASE_IMAGE)")
                engine.pull(reference)
            else:
                _build(engine, log)
            info = engine.image(reference)
            if info is None:
                raise BuildError(f"the base image {reference} is not in Docker after it was made: see the build log")
        image_id = str(info["Id"])
        record = cache_dir() / "base" / f"{image_id.split(':')[-1]}.json"
        try:
            cached = json.loads(record.read_text())
            base = BaseImage(**{**cached, "layers": [Layer(**layer) for layer in cached["layers"]]})
            if all(layer.path.is_file() for layer in base.layers):
                _say(log, f"{reference} ({image_id[:19]}) cached")
                return base
        except (OSError, ValueError, TypeError, KeyError):
            pass
        _say(log, f"reading the layers of {reference} into the layer cache {cache_dir()}")
        layers = _layers_of(engine, reference, info)
        probe = _probe(engine, reference)
        machine = {"x86_64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}.get(probe["machine"], probe["machine"])
        libc = probe["libc"] or "2.17"
        base = BaseImage(reference=reference, image_id=image_id, python=probe["python"], python_version=probe["version"],
                         platform=f"{machine}-manylinux_{libc.replace('.', '_')}", layers=layers,
                         env=list((info.get("Config") or {}).get("Env") or []))
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(asdict(base)))
        _say(log, f"{reference}: Python {base.python_version} at {base.python}, packages for {base.platform}")
        return base


def _build(engine: Engine, log: IO[str]) -> None:
    """debootstrap bookworm with python3.11 and import it as the default base image."""
    program = shutil.which("debootstrap")
    if program is None or os.geteuid() != 0:
        problem = "debootstrap is not installed" if program is None else "debootstrap needs root"
        raise BuildError(
            f"the base image {DEFAULT_BASE} is built from Debian's packages once per machine, but {problem}: run "
            "the first Docker build as root with debootstrap installed (apt-get install debootstrap), or name a "
            "base image with Python in $DUCKSERVE_BASE_IMAGE (e.g. one you built or pulled into Docker)"
        )
    mirror = os.environ.get("DUCKSERVE_DEBIAN_MIRROR", "http://deb.debian.org/debian")
    work = Path(tempfile.mkdtemp(prefix="base-", dir=_scratch()))
    root = work / "root"
    try:
        _say(log, f"building {DEFAULT_BASE}: debootstrap --variant=minbase --include={PYTHON_PACKAGE} {SUITE} "
                  f"(from {mirror}; once per machine)")
        argv = [program, "--variant=minbase", f"--include={PYTHON_PACKAGE}", SUITE, str(root), mirror]
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
        assert process.stdout is not None
        captured = []
        for line in process.stdout:
            captured.append(line)
            _say(log, line.rstrip())
        if process.wait() != 0:
            raise BuildError(f"debootstrap of {SUITE} failed (exit code {process.returncode}): "
                             f"{' '.join(captured[-3:]).strip()}; check that {mirror} is reachable "
                             "($DUCKSERVE_DEBIAN_MIRROR names another mirror)")
        for trimmed in TRIMMED:
            for child in (root / trimmed).glob("*"):
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        (root / "etc" / "machine-id").write_text("")
        (root / "var" / "cache" / "ldconfig" / "aux-cache").unlink(missing_ok=True)
        layer = write_layer([(root, "")], f"Debian {SUITE} (minbase) with {PYTHON_PACKAGE}")
        _say(log, f"root file system: {layer.size / 2**20:.0f} MiB, layer {layer.digest[:19]}; importing into Docker")
        name, _, tag = DEFAULT_BASE.partition(":")
        changes = [f'ENTRYPOINT ["/usr/bin/{PYTHON_PACKAGE}"]',
                   "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                   "ENV LANG=C.UTF-8", f"LABEL io.duckserve.base={SUITE}-{PYTHON_PACKAGE}"]
        engine.import_image(_chunks(layer.path), name, tag, changes)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _scratch() -> str:
    directory = cache_dir() / "scratch"
    directory.mkdir(parents=True, exist_ok=True)
    return str(directory)


def _chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        yield from _read_chunks(fh)


def _read_chunks(fh: IO[bytes]) -> Iterator[bytes]:
    while chunk := fh.read(1 << 22):
        yield chunk


def _layers_of(engine: Engine, reference: str, info: dict[str, Any]) -> list[Layer]:
    """The image's layers as blobs in the cache (read from ``docker save`` unless already there)."""
    wanted = list((info.get("RootFS") or {}).get("Layers") or [])
    if wanted and all(blob_path(d).is_file() for d in wanted):
        return [Layer(d, blob_path(d).stat().st_size, f"layer of {reference}") for d in wanted]
    stored: dict[str, Layer] = {}
    manifest: list[dict[str, Any]] = []
    with tempfile.TemporaryFile(dir=_scratch()) as saved:
        for chunk in engine.save(reference):
            saved.write(chunk)
        saved.seek(0)
        with tarfile.open(fileobj=saved, mode="r:") as tar:
            for member in tar:
                if member.name == "manifest.json":
                    extracted = tar.extractfile(member)
                    assert extracted is not None
                    manifest = json.loads(extracted.read())
                elif member.isfile() and (member.name.endswith("layer.tar") or member.name.startswith("blobs/")):
                    extracted = tar.extractfile(member)
                    assert extracted is not None
                    stored[member.name] = store_blob(_read_chunks(extracted), f"layer of {reference}")
    if not manifest:
        raise BuildError(f"docker save of {reference} gave no manifest: is it an image?")
    layers = [stored[name] for name in manifest[0]["Layers"]]
    if wanted and [layer.digest for layer in layers] != wanted:
        raise BuildError(f"the layers docker save gave for {reference} are not its layers (compressed?): name "
                         "another base image")
    return layers


def _probe(engine: Engine, reference: str) -> dict[str, str]:
    code, output = engine.run_once(f"duckserve-probe-{uuid.uuid4().hex[:8]}", {
        "Image": reference, "Entrypoint": ["/bin/sh", "-c"],
        "Cmd": [f"exec \"$(command -v python3 || command -v python3.11 || command -v python)\" -c \"{_PROBE}\""],
    }, timeout=120)
    for line in output.splitlines():
        if line.startswith("DUCKSERVE-PROBE "):
            result: dict[str, str] = json.loads(line.split(" ", 1)[1])
            return result
    raise BuildError(f"the base image {reference} has no working Python 3 (exit code {code}): {output[-500:]}; "
                     "name a base image with Python in $DUCKSERVE_BASE_IMAGE")
