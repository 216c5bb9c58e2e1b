"""MODEL_BUILD for Docker pools: a layered, reproducible OCI image of a model, pushed to a registry.

The image stacks five layers, each a reproducible tar (``layers``) cached by its inputs:

1. the base image's layers (OS + Python, ``base``);
2. the inference server's third-party packages (starlette, uvicorn, gunicorn, pandas, pyarrow,
   cloudpickle and what they need), at the versions the whole environment resolved to;
3. duckserve's own server code (its top-level modules and ``inference_server``);
4. the model's other dependencies;
5. the model package, at ``/opt/duckserve/model``.

Nothing inside the build reaches the network: uv resolves and installs on the host, for the image's
Python version and platform (``--python-version``, ``--python-platform``), into directories that
become layers. The only container a build runs has no network: it imports the server's and the
model's frameworks with the image's own Python, so their bytecode is written once into the layers
(sources are dated at the layers' fixed time, which the bytecode records) and instances start
without compiling. That includes the base image's own modules (its standard library): the base
layer dates its files too, so the bytecode Debian wrote no longer matches them; theirs goes into
the layer of the packages that import them. A second version of a model with the same
dependencies reuses layers 1 to 4 and pushes only the last; the same inputs give the same image
digest. Each layer is pushed as soon as it is written, and loaded into the local Docker engine
(``publish``, ``preload``), so an instance's pull only reads the manifest.

The work trees live in memory when /dev/shm has room (``_scratch``).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from duckserve.engine import environments as envs
from duckserve.engine.images.base import BaseImage, base_image
from duckserve.engine.images.layers import (
    EPOCH,
    LAYER_MEDIA_TYPE,
    Layer,
    cache_dir,
    cached_layer,
    key_of,
    locked,
    remember_layer,
    write_layer,
)
from duckserve.engine.images.publish import Publisher
from duckserve.engine.images.registry import RegistryClient, json_bytes
from duckserve.engine.runtimes.docker_engine import Engine
from duckserve.errors import BuildError

MODEL_PATH = "/opt/duckserve/model"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
#: left out of the package layers: scripts with the host's interpreter, and packages' own test suites
SKIPPED = ("bin", "tests", "__pycache__")
#: what every instance imports: its bytecode is written into the server layer
SERVER_MODULES = ("duckserve.inference_server.serve", "duckserve.inference_server.app",
                  "duckserve.inference_server.handlers", "duckserve.inference_server.protocol",
                  "pandas", "pyarrow", "numpy", "uvicorn.protocols.http.h11_impl",
                  "uvicorn.protocols.http.httptools_impl", "uvicorn.lifespan.on", "uvicorn.loops.auto")
#: what the package layers hold changed (2: the bytecode of the base image's modules): their cache keys change
LAYOUT = 2
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


@dataclass
class BuiltImage:
    """An image in the registry: where, which digest, what it holds and what this build did."""

    repository: str  # its path in the registry (db/schema/repo/model)
    tag: str
    digest: str
    size: int  # bytes of its layers, uncompressed (what Docker reports as the image's size)
    layers: list[Layer]
    pushed: list[str]  # descriptions of the layers this build uploaded
    reused: bool  # the image existed: nothing built, nothing pushed
    seconds: float
    dependencies: list[str]


def _now() -> str:
    return envs._timestamp()


@contextmanager
def _timed(log: IO[str], what: str) -> Iterator[None]:
    """Log how long a step of the build took."""
    started = time.monotonic()
    yield
    log.write(f"{_now()} {what}: {time.monotonic() - started:.1f}s\n")
    log.flush()


class ImageBuilder:
    def __init__(self, engine: Engine | None = None, timeout: float = 1800.0) -> None:
        self.engine = engine or Engine()
        self.timeout = timeout

    # -- the build --------------------------------------------------------------------------------
    def build(self, spec: envs.EnvironmentSpec, package: Path, registry: RegistryClient, repository: str, tag: str,
              labels: dict[str, str], log: IO[str], force: bool = False) -> BuiltImage:
        started = time.monotonic()
        log.write(f"{_now()} === duckserve model-build: image {registry.host}/{repository}:{tag}\n")
        base = base_image(self.engine, log)
        if envs.python_minor(spec.python_version) != base.python_version:
            raise BuildError(
                f"the model was logged for Python {spec.python_minor}, but the base image {base.reference} has "
                f"Python {base.python_version}: log the model with python_version='{base.python_version}', or name a "
                f"base image with Python {spec.python_minor} in $DUCKSERVE_BASE_IMAGE"
            )
        requirements, warnings = spec._resolve()
        for warning in warnings:
            log.write(f"warning: {warning}\n")
        pins = self._resolve(spec, base, [r.text for r in requirements], {r.name: r.origin for r in requirements if r.name},
                             log)
        server_pins = self._resolve(spec, base, [s for s in spec.server_packages], {}, log, within=pins)
        deps_pins = [p for p in pins if p not in server_pins]
        log.write(f"server packages: {' '.join(server_pins)}\nmodel dependencies: {' '.join(deps_pins) or '(none)'}\n")
        site = _site_dir(base)
        package_key = envs.server_source_digest()
        keys = {"server": key_of("server", LAYOUT, base.key, server_pins),
                "duckserve": key_of("duckserve", package_key, site),
                "deps": key_of("deps", LAYOUT, base.key, server_pins, deps_pins),
                "model": key_of("model", _tree_digest(package))}
        config_labels = {**labels, "io.duckserve.dependencies": ",".join(deps_pins)[:4000],
                         "io.duckserve.python": base.python_version, "io.duckserve.base": base.reference}
        existing = registry.manifest(repository, tag)
        built_key = key_of(base.key, keys, config_labels)
        if existing is not None and not force:
            config = registry.blob_json(repository, existing[1]["config"]["digest"])
            if (config.get("config") or {}).get("Labels", {}).get("io.duckserve.build") == built_key:
                log.write(f"{_now()} image {repository}:{tag} ({existing[0][:19]}) already in {registry.host}: "
                          "build skipped\n")
                layers = [Layer(d["digest"], int(d["size"]), "") for d in existing[1]["layers"]]
                return BuiltImage(repository, tag, existing[0], sum(layer.size for layer in layers), layers, [], True,
                                  time.monotonic() - started, pins)
        config_labels["io.duckserve.build"] = built_key
        candidates = [base.reference, *(image["Id"] for image in self.engine.images("io.duckserve.build"))]
        publisher = Publisher(registry, repository, self.engine, candidates, log, mount_from=_last_repository(registry))
        try:
            layers = list(base.layers)
            for layer in layers:
                publisher.add(layer)  # pushed while the packages are installed and compiled
            layers += self._package_layers(spec, base, site, keys, server_pins, deps_pins, force, log, publisher.add)
            layers.append(self._model_layer(package, keys["model"], force))
            publisher.add(layers[-1])
        except BaseException:
            publisher.abort()
            raise
        digest, pushed = self._push(registry, repository, tag, base, layers, config_labels, publisher, log)
        size = sum(layer.size for layer in layers)
        seconds = time.monotonic() - started
        log.write(f"{_now()} === image {registry.host}/{repository}:{tag}@{digest} ({size / 2**20:.0f} MiB in "
                  f"{len(layers)} layers; pushed {len(pushed)}: {', '.join(pushed) or 'none'}) built in {seconds:.1f}s\n")
        return BuiltImage(repository, tag, digest, size, layers, pushed, False, seconds, pins)

    # -- resolution and installs ------------------------------------------------------------------
    def _uv(self, argv: list[str], log: IO[str]) -> str | None:
        """Run uv offline first (its cache usually has everything), then against the index; its
        output when both fail, else None."""
        env = envs.uv_environment()
        for attempt in ([*argv, "--offline"], argv):
            log.write(f"{_now()} $ {' '.join(attempt)}\n")
            log.flush()
            done = subprocess.run(attempt, capture_output=True, text=True, env=env, timeout=self.timeout)
            if done.returncode == 0:
                return None
            output = done.stdout + done.stderr
            if attempt[-1] == "--offline":
                log.write(f"{_now()} not everything is in uv's cache: resolving against the index\n")
        log.write(output)
        return output

    def _resolve(self, spec: envs.EnvironmentSpec, base: BaseImage, requirements: list[str], origins: dict[str, str],
                 log: IO[str], within: list[str] | None = None) -> list[str]:
        """``name==version`` of every package ``requirements`` need, for the image's Python and
        platform (``within``: held to those pins)."""
        with tempfile.TemporaryDirectory(prefix="resolve-", dir=_scratch()) as work:
            wanted = Path(work, "requirements.in")
            wanted.write_text("".join(r + "\n" for r in requirements))
            out = Path(work, "requirements.txt")
            argv = [envs.uv_binary(), "pip", "compile", str(wanted), "-o", str(out), "--no-header", "--no-annotate",
                    "--quiet", "--python-version", base.python_version, "--python-platform", base.platform]
            constraints = list(within or spec.constraints()[0])
            if constraints:
                Path(work, "constraints.txt").write_text("".join(c + "\n" for c in constraints))
                argv += ["--constraint", str(Path(work, "constraints.txt"))]
            failure = self._uv(argv, log)
            if failure is not None:
                index = envs.package_index()
                package, problem = envs.explain_uv_failure(failure, index, base.python_version)
                origin = origins.get(envs.canonical_name(re.split(r"[<>=!~;\[ ]", package)[0])) if package else None
                subject = (f"package {package!r}" + (f" (from {origin!r})" if origin and origin != package else "")
                           if package else "the requirements " + ", ".join(requirements))
                raise BuildError(f"cannot build the image for python {base.python_version} ({base.platform}): "
                                 f"{subject} {problem}. uv said: {envs.uv_summary(failure)}")
            return sorted(line.strip() for line in out.read_text().splitlines() if _PIN.match(line.strip()))

    def _install(self, pins: list[str], base: BaseImage, target: Path, log: IO[str]) -> None:
        if not pins:
            target.mkdir(parents=True, exist_ok=True)
            return
        with tempfile.NamedTemporaryFile("w", suffix=".txt", dir=_scratch(), delete=False) as listed:
            listed.write("".join(p + "\n" for p in pins))
        try:
            failure = self._uv([envs.uv_binary(), "pip", "install", "--target", str(target), "--no-deps", "--quiet",
                                "--link-mode", "copy", "--python-version", base.python_version,
                                "--python-platform", base.platform, "-r", listed.name], log)
        finally:
            os.unlink(listed.name)
        if failure is not None:
            raise BuildError(f"cannot install {' '.join(pins)} for the image: {envs.uv_summary(failure)}")
        _prune(target)

    # -- layers -----------------------------------------------------------------------------------
    def _package_layers(self, spec: envs.EnvironmentSpec, base: BaseImage, site: str, keys: dict[str, str],
                        server_pins: list[str], deps_pins: list[str], force: bool, log: IO[str],
                        written: Callable[[Layer], None]) -> list[Layer]:
        """The server, duckserve and dependency layers, each passed to ``written`` once it is."""
        names = ("server", "duckserve", "deps")
        with locked(f"layers-{keys['deps']}"):
            found = {name: None if force else cached_layer(keys[name]) for name in names}
            if all(found.values()):
                log.write(f"{_now()} server, duckserve and dependency layers cached: "
                          f"{', '.join(str(found[n].digest[:19]) for n in names)}\n")  # type: ignore[union-attr]
                for name in names:
                    written(found[name])  # type: ignore[arg-type]
                return [found[n] for n in names]  # type: ignore[misc]
            with tempfile.TemporaryDirectory(prefix="layers-", dir=_scratch()) as work:
                trees = {name: Path(work, name) for name in names}
                log.write(f"{_now()} installing the server packages and the model's dependencies for Python "
                          f"{base.python_version} on {base.platform} (uv, on this host)\n")
                with _timed(log, "installed the server packages"):
                    self._install(server_pins, base, trees["server"], log)
                with _timed(log, "installed the model's dependencies"):
                    self._install(deps_pins, base, trees["deps"], log)
                with _timed(log, "copied the server code and dated the files"):
                    _copy_server_code(trees["duckserve"])
                    for tree in trees.values():
                        _date(tree)
                with _timed(log, "wrote the bytecode"):
                    self._warm(base, site, trees, spec.import_checks, log)
                result = []
                for name, description in (("server", "server packages"), ("duckserve", "duckserve server"),
                                          ("deps", "model dependencies")):
                    with _timed(log, f"wrote the layer of the {description}"):
                        layer = found[name] or write_layer([(trees[name], site), (_base_tree(trees[name]), "")],
                                                           description, skip=SKIPPED[:2])
                    remember_layer(keys[name], layer)
                    written(layer)
                    result.append(layer)
                return result

    def _warm(self, base: BaseImage, site: str, trees: dict[str, Path], modules: list[str], log: IO[str]) -> None:
        """Import what instances import, with the image's Python, in a container without network:
        the server's modules first (their bytecode belongs to the server layers, with that of the
        base image's modules they import), then the model's frameworks (theirs to the dependency
        layer). Two interpreters at once, one for each, were slower on two busy cores (both compile
        numpy and the standard library)."""
        work = trees["server"].parent
        union = work / "site"
        for name in ("server", "deps", "duckserve"):
            _link_tree(trees[name], union)
        out = work / "pycache"
        out.mkdir()
        script = (
            "import importlib, sys\n"
            "def load(names, prefix):\n"
            "    sys.pycache_prefix = prefix\n"
            "    for name in names:\n"
            "        try:\n"
            "            importlib.import_module(name)\n"
            "        except Exception as exc:\n"
            "            print(f'could not import {name}: {type(exc).__name__}: {exc}')\n"
            f"load({list(SERVER_MODULES)!r}, '/out/server')\n"
            f"load({list(modules)!r}, '/out/deps')\n"
        )
        log.write(f"{_now()} writing bytecode: importing {', '.join(SERVER_MODULES)}"
                  f"{', ' + ', '.join(modules) if modules else ''} in a container of {base.reference} (no network)\n")
        log.flush()
        code, output = self.engine.run_once(f"duckserve-build-{uuid.uuid4().hex[:8]}", {
            "Image": base.reference, "Entrypoint": [base.python], "Cmd": ["-c", script],
            "Env": ["PYTHONDONTWRITEBYTECODE=", "PYTHONPYCACHEPREFIX=/out/server", "HOME=/tmp"],
            "User": f"{os.getuid()}:{os.getgid()}",
            "HostConfig": {"Binds": [f"{union}:{site}:ro", f"{out}:/out"]},
        }, timeout=self.timeout)
        log.write(output)
        if code != 0:
            raise BuildError(f"importing the server and the model's frameworks in the image failed (exit code {code}): "
                             f"{output.strip()[-500:]}")
        for phase in ("server", "deps"):
            everything = out / phase
            root = everything / site.strip("/")
            for pyc in sorted(everything.rglob("*.pyc")) if everything.is_dir() else []:
                if not pyc.is_relative_to(root):  # the base image's own modules (its standard library)
                    target = _base_tree(trees[phase]) / pyc.parent.relative_to(everything) / "__pycache__" / pyc.name
                    _make_dirs(target.parent)
                    shutil.copyfile(pyc, target)
                    continue
                relative = pyc.parent.relative_to(root)
                source = pyc.name.split(".", 1)[0] + ".py"
                owner = next((n for n in ("server", "duckserve", "deps") if (trees[n] / relative / source).exists()),
                             None)
                if owner is None or (phase == "deps" and owner == "duckserve"):
                    continue
                if phase == "deps" and owner == "server":
                    owner = "deps"  # compiled because of the model's frameworks: it goes with them
                    (trees["deps"] / relative).mkdir(parents=True, exist_ok=True)
                target = trees[owner] / relative / "__pycache__" / pyc.name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(pyc, target)
        shutil.rmtree(union, ignore_errors=True)

    def _model_layer(self, package: Path, key: str, force: bool) -> Layer:
        layer = None if force else cached_layer(key)
        if layer is None:
            layer = write_layer([(package, MODEL_PATH)], "model package", skip=("__pycache__",))
            remember_layer(key, layer)
        return layer

    # -- config, manifest, push -------------------------------------------------------------------
    def _push(self, registry: RegistryClient, repository: str, tag: str, base: BaseImage, layers: list[Layer],
              labels: dict[str, str], publisher: Publisher, log: IO[str]) -> tuple[str, list[str]]:
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(EPOCH))
        env = [e for e in base.env if not e.startswith(("PYTHONDONTWRITEBYTECODE=", "DUCKSERVE_"))]
        env += ["PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1", f"DUCKSERVE_PACKAGE={MODEL_PATH}"]
        config = {
            "architecture": "arm64" if base.platform.startswith("aarch64") else "amd64", "os": "linux",
            "created": created,
            "config": {"Entrypoint": [base.python], "Cmd": ["-m", "duckserve.inference_server"], "Env": env,
                       "ExposedPorts": {"5000/tcp": {}}, "Labels": labels, "WorkingDir": "/tmp"},
            "rootfs": {"type": "layers", "diff_ids": [layer.digest for layer in layers]},
            "history": [{"created": created, "created_by": layer.description or "base image"} for layer in layers],
        }
        config_bytes = json_bytes(config)
        config_digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
        pushed = publisher.finish(config_bytes, config_digest, f"{registry.host}/{repository}:{tag}")
        registry.push_blob_bytes(repository, config_bytes)
        manifest = {"schemaVersion": 2, "mediaType": MANIFEST_MEDIA_TYPE,
                    "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest, "size": len(config_bytes)},
                    "layers": [{"mediaType": LAYER_MEDIA_TYPE, "digest": layer.digest, "size": layer.size}
                               for layer in layers]}
        digest = registry.put_manifest(repository, tag, json_bytes(manifest), MANIFEST_MEDIA_TYPE)
        _remember_repository(registry, repository)
        log.write(f"{_now()} pushed {registry.host}/{repository}:{tag}: {len(pushed)} new layer(s) of {len(layers)}\n")
        return digest, pushed


def _base_tree(tree: Path) -> Path:
    """Where a layer's files outside the site directory are (the bytecode of the base image's modules)."""
    return tree.with_name(tree.name + "-root")


def _make_dirs(directory: Path) -> None:
    """``directory`` and its missing parents, mode 755: in an upper layer a directory's mode is the
    image's (the base's ``/usr/lib`` must stay readable)."""
    missing = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for path in reversed(missing):
        path.mkdir()
        path.chmod(0o755)


def _site_dir(base: BaseImage) -> str:
    """Where the image's Python finds packages (a site directory: .pth files work there)."""
    return f"/usr/local/lib/python{base.python_version}/" + (
        "dist-packages" if base.python.startswith("/usr/bin/") else "site-packages")


#: room a build's work trees need in memory (the packages of a model's layers, with some margin)
SCRATCH_ROOM = 2 << 30


def _scratch() -> str:
    """Where a build's work trees go: memory (/dev/shm) when it has room, else the cache. Installing
    430 MB of packages onto a disk and deleting them afterwards took 30 s of a cold build (each
    unlink of a written file can wait for the disk, more so on file systems mounted with
    ``discard``); in memory it takes 3 s."""
    shm = Path("/dev/shm")
    try:
        if os.access(shm, os.W_OK | os.X_OK) and (lambda st: st.f_bavail * st.f_frsize)(os.statvfs(shm)) > SCRATCH_ROOM:
            directory = shm / f"duckserve-build-{os.getuid()}"
            directory.mkdir(mode=0o700, exist_ok=True)
            return str(directory)
    except OSError:
        pass
    directory = cache_dir() / "scratch"
    directory.mkdir(parents=True, exist_ok=True)
    return str(directory)


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _prune(target: Path) -> None:
    """Leave out what an image does not run: scripts made for the host's interpreter, packages'
    test suites (a third of pandas, scipy and scikit-learn), and uv's own markers."""
    shutil.rmtree(target / "bin", ignore_errors=True)
    for tests in [p for p in target.rglob("tests") if p.is_dir()]:
        if (tests.parent / "__init__.py").exists():
            shutil.rmtree(tests, ignore_errors=True)


def _date(tree: Path) -> None:
    """Date every file at the layers' fixed time, as the tar will: bytecode records its source's time."""
    for directory, _, files in os.walk(tree):
        for name in files:
            os.utime(os.path.join(directory, name), (EPOCH, EPOCH), follow_symlinks=False)


def _copy_server_code(target: Path) -> None:
    source = envs.package_dir()
    for path in envs.server_sources(source):
        destination = target / "duckserve" / path.relative_to(source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, destination)


def _link_tree(source: Path, union: Path) -> None:
    for directory, _, files in os.walk(source):
        relative = Path(directory).relative_to(source)
        (union / relative).mkdir(parents=True, exist_ok=True)
        for name in files:
            if not (union / relative / name).exists():
                os.link(Path(directory) / name, union / relative / name)


def _pushed_record(registry: RegistryClient) -> Path:
    return cache_dir() / "registries" / re.sub(r"[^A-Za-z0-9.-]", "_", registry.host)


def _last_repository(registry: RegistryClient) -> str | None:
    """A repository of this registry that holds earlier layers: new repositories mount them from it."""
    try:
        return _pushed_record(registry).read_text().strip() or None
    except OSError:
        return None


def _remember_repository(registry: RegistryClient, repository: str) -> None:
    path = _pushed_record(registry)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(repository + "\n")


def image_name(model: str) -> str:
    """A registry path segment for a model name (lower case; letters, digits, ``._-``)."""
    return re.sub(r"[^a-z0-9._-]+", "-", model.lower()).strip("-._") or "model"


def image_tag(version: str, dependencies_key: str) -> str:
    return f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', version.lower())}-{dependencies_key[:10]}"[:128]


def dependencies_key(spec: envs.EnvironmentSpec) -> str:
    return key_of(spec.python_minor, sorted(spec.requirements()), spec.constraints()[0])


def describe_layers(layers: list[Layer]) -> list[dict[str, Any]]:
    return [{"digest": layer.digest, "size": layer.size, "description": layer.description} for layer in layers]
