"""Model environments built with uv: the "image" a model's service instances run in.

An environment is a virtualenv in ``<home>/envs/<key>/`` holding the model's dependencies, the
inference server's runtime packages and a copy of duckserve's own sources (installed without its
dependencies). ``<key>`` hashes everything that goes in (Python version, requirements, the source of
the inference server), so a spec is built once and reused, like Snowflake's MODEL_BUILD job that is
skipped when the image already exists, and rebuilt when the inference server changes.

Model dependencies come as Snowflake describes them: ``conda_dependencies`` and ``pip_requirements``.
There is no conda here: conda names are translated to their PyPI names (``CONDA_TO_PYPI``); packages
that only exist on conda (``CONDA_ONLY``) are rejected with a message pointing to ``pip_requirements``.
"""

from __future__ import annotations

import builtins
import compileall
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import duckserve
from duckserve.engine import bytecode
from duckserve.errors import BuildError, ObjectNotFound

DEFAULT_INDEX = "https://pypi.org/simple"
MIN_PYTHON = (3, 9)
COMPLETE_MARKER = ".complete"

#: what the inference server needs in every environment besides the model's own packages
SERVER_PACKAGES: tuple[str, ...] = ("starlette", "uvicorn", "gunicorn", "pandas", "pyarrow", "cloudpickle")

#: conda package names whose PyPI distribution has another name (keys are PEP 503-normalized)
CONDA_TO_PYPI: dict[str, str] = {
    "pytorch": "torch",
    "pytorch-cpu": "torch",
    "py-opencv": "opencv-python",
    "opencv": "opencv-python",
    "matplotlib-base": "matplotlib",
    "numpy-base": "numpy",
    "msgpack-python": "msgpack",
    "pytables": "tables",
    "python-graphviz": "graphviz",
    "python-duckdb": "duckdb",
    "python-kaleido": "kaleido",
    "python-tzdata": "tzdata",
    "pyqt": "pyqt5",
    "tensorflow-base": "tensorflow",
    "faiss": "faiss-cpu",
    "pyg": "torch-geometric",
    "psycopg2": "psycopg2-binary",
}

#: conda names whose PyPI package depends on the hardware: (package on a CPU host, package for GPUs).
#: conda picks a build by the host's CUDA driver; duckserve does the same with the service's accelerator.
#: PyPI's ``xgboost`` brings the CUDA NCCL library (hundreds of MB); ``xgboost-cpu`` (2.1 and later) does not.
CONDA_VARIANTS: dict[str, tuple[str, str]] = {
    "xgboost": ("xgboost-cpu", "xgboost"),
    "py-xgboost": ("xgboost-cpu", "xgboost"),
    "py-xgboost-cpu": ("xgboost-cpu", "xgboost-cpu"),
    "py-xgboost-gpu": ("xgboost", "xgboost"),
}
#: the first version of each CPU-only variant (older versions exist only as the full package)
_VARIANT_SINCE = {"xgboost-cpu": "2.1.0"}
#: packages whose PyPI wheels for Linux are CUDA builds; CPU builds come from local wheels (find-links)
CPU_BUILD_PACKAGES = ("torch", "torchvision", "torchaudio")
ACCELERATORS = ("cpu", "gpu")

_BLAS = "a BLAS build: numpy and scipy wheels from PyPI bundle their own OpenBLAS"
_CUDA = "the CUDA toolkit: PyPI wheels (torch, tensorflow, jax) bring the CUDA libraries they need"
_CRUNTIME = "a C/C++ runtime library that PyPI wheels bundle themselves"
_CPYTHON = "part of conda's own Python build"
_NATIVE = "a native library; install its Python package from PyPI instead"
_PROGRAM = "a program, not a Python package"

#: conda packages with no PyPI equivalent, and why (keys are PEP 503-normalized)
CONDA_ONLY: dict[str, str] = {
    **dict.fromkeys(("cudatoolkit", "cudnn", "nccl", "cuda-nvcc", "cuda-version", "cudatoolkit-dev"), _CUDA),
    **dict.fromkeys(
        ("pytorch-cuda", "pytorch-mutex", "cpuonly"),
        "a conda selector of torch builds; torch comes from PyPI",
    ),
    **dict.fromkeys(
        ("mkl", "mkl-include", "blas", "libblas", "libcblas", "liblapack", "openblas", "libopenblas"), _BLAS
    ),
    **dict.fromkeys(
        ("libgcc-ng", "libstdcxx-ng", "libgomp", "-libgcc-mutex", "-openmp-mutex", "llvm-openmp"), _CRUNTIME
    ),
    **dict.fromkeys(
        (
            "openssl",
            "ca-certificates",
            "libffi",
            "zlib",
            "xz",
            "bzip2",
            "sqlite",
            "ncurses",
            "readline",
            "tk",
            "libuuid",
            "ld-impl-linux-64",
            "libzlib",
            "libsqlite",
            "libexpat",
        ),
        _CPYTHON,
    ),
    **dict.fromkeys(
        (
            "libarrow",
            "arrow-cpp",
            "libprotobuf",
            "libopencv",
            "libxgboost",
            "liblightgbm",
            "libtorch",
            "libfaiss",
        ),
        _NATIVE,
    ),
    **dict.fromkeys(
        (
            "gcc",
            "gxx",
            "gfortran",
            "c-compiler",
            "cxx-compiler",
            "fortran-compiler",
            "make",
            "git",
            "nodejs",
            "openjdk",
            "r-base",
            "graphviz",
        ),
        _PROGRAM,
    ),
}

_KEY = re.compile(r"^[0-9a-f]{8,64}$")
_NAME = re.compile(
    r"^\s*(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*(?P<extras>\[[^\]]*\])?(?P<rest>.*)$"
)
_OPERATOR = re.compile(r"^(===|==|!=|~=|>=|<=|>|<)")
_SERVER_SUBPACKAGE = "inference_server"


def canonical_name(name: str) -> str:
    """PEP 503 normalization: ``Scikit_Learn`` and ``scikit.learn`` are both ``scikit-learn``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def python_minor(python_version: str) -> str:
    """``"3.11"`` for ``"3.11"``, ``"3.11.7"`` or ``" 3.11 "``; BuildError for anything else."""
    match = re.fullmatch(r"\s*(\d+)\.(\d+)(?:\.\d+)?\s*", str(python_version))
    if not match:
        raise BuildError(f"python_version {python_version!r} is not a Python version: use the form '3.11'")
    major, minor = int(match[1]), int(match[2])
    if (major, minor) < MIN_PYTHON:
        raise BuildError(
            f"python_version {python_version!r} is too old: duckserve's inference server needs Python "
            f"{MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer; log the model with a newer python_version"
        )
    return f"{major}.{minor}"


@dataclass(frozen=True)
class _Requirement:
    name: str | None  # canonical name; None for a bare URL
    text: str  # the normalized requirement string uv receives
    origin: str  # the user's entry, for messages

    @property
    def version(self) -> str:
        return self.text[len(self.name) :] if self.name else self.text


def _pip_requirement(entry: str) -> _Requirement | None:
    text = entry.strip()
    if not text or text.startswith("#"):
        return None
    if text.startswith("-"):
        raise BuildError(
            f"pip requirement {entry!r} is an installer option, not a requirement: "
            "set the index with UV_INDEX_URL / PIP_INDEX_URL and list only packages in pip_requirements"
        )
    if "://" in text and " @ " not in text and "@" not in text.split("://", 1)[0]:
        return _Requirement(None, text, entry)
    match = _NAME.match(text)
    if not match:
        raise BuildError(f"pip requirement {entry!r} is not a valid requirement: use the form 'name>=1.2'")
    name = canonical_name(match["name"])
    extras = ""
    if match["extras"]:
        extras = (
            "["
            + ",".join(
                sorted(canonical_name(e.strip()) for e in match["extras"][1:-1].split(",") if e.strip())
            )
            + "]"
        )
    rest = match["rest"].strip()
    version, sep, tail = rest.partition(";")
    if version.lstrip().startswith("@"):
        return _Requirement(name, f"{name}{extras} {rest}", entry)
    version = re.sub(r"\s+", "", version)
    marker = f"; {tail.strip()}" if sep else ""
    return _Requirement(name, f"{name}{extras}{version}{marker}", entry)


def _conda_version(version: str, fuzzy: bool) -> str:
    """Conda version syntax to PEP 440: ``=1.2`` (fuzzy) is ``==1.2.*``, ``1.2`` is ``==1.2``."""
    parts = []
    for part in version.split(","):
        part = part.strip()
        if not part or part == "*":
            continue
        operator = _OPERATOR.match(part)
        op = operator[1] if operator else "=="
        number = part[len(op) :].strip() if operator else part
        if number.endswith("*"):
            number = number.rstrip("*").rstrip(".") + ".*"
        elif fuzzy and not operator:
            number += ".*"
        parts.append(op + number)
    return ",".join(parts)


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version.split("*")[0])[:3])


def _python_satisfies(python_version: str, specifier: str) -> bool:
    """Does Python ``3.11`` satisfy a PEP 440 specifier like ``>=3.9,<3.12`` or ``==3.11.*``?"""
    have = _version_tuple(python_version)
    for clause in filter(None, specifier.split(",")):
        operator = _OPERATOR.match(clause)
        op = operator[1] if operator else "=="
        want = _version_tuple(clause[len(op) :])
        width = max(len(have), len(want))
        a, b = have + (0,) * (width - len(have)), want + (0,) * (width - len(want))
        if op in ("==", "==="):
            # the model's python_version is major.minor: "==3.11.4" and "==3.11.*" both accept "3.11"
            ok = have[: len(want)] == want[: len(have)]
        elif op == "!=":
            ok = have[: len(want)] != want[: len(have)]
        elif op == "~=":
            ok = a >= b and have[: len(want) - 1] == want[:-1]
        else:
            ok = {">=": a >= b, "<=": a <= b, ">": a > b, "<": a < b}[op]
        if not ok:
            return False
    return True


def _variant(conda_name: str, version: str, accelerator: str) -> str:
    cpu, gpu = CONDA_VARIANTS[conda_name]
    chosen = gpu if accelerator == "gpu" else cpu
    since = _VARIANT_SINCE.get(chosen)
    if since and version:
        from duckserve.engine.versions import satisfies

        # keep the full package when the pin only allows versions older than the variant
        try:
            if not any(satisfies(candidate, version) for candidate in (since, "3.0.0", "99.0.0")):
                return gpu
        except ValueError:
            return gpu
    return chosen


def _conda_requirement(entry: str, python_version: str, accelerator: str = "cpu") -> _Requirement | None:
    """Translate one conda dependency (``conda-forge::pytorch=2.1``) to a PyPI requirement."""
    text = entry.strip().rpartition("::")[2].strip()
    if not text or text.startswith("#"):
        return None
    match = re.fullmatch(r"(?P<name>[A-Za-z0-9_][A-Za-z0-9._-]*)\s*(?P<rest>.*)", text)
    if not match or match["rest"].startswith("["):
        raise BuildError(
            f"conda dependency {entry!r} is not a package spec duckserve understands: use 'name', 'name=1.2' "
            "or 'name>=1.2', or move it to pip_requirements"
        )
    conda_name, rest = canonical_name(match["name"]), match["rest"].strip()
    if "|" in rest:
        raise BuildError(
            f"conda dependency {entry!r} uses an OR of versions, which PyPI requirements cannot express: "
            "pin one range, or move it to pip_requirements"
        )
    if rest.startswith("=") and not rest.startswith("=="):
        version = _conda_version(rest[1:].split("=")[0], fuzzy=True)
    elif _OPERATOR.match(rest):
        version = _conda_version(rest.split()[0] if " " in rest else rest, fuzzy=False)
    else:
        version = _conda_version(rest.split()[0], fuzzy=False) if rest else ""
    if conda_name == "pip":
        return None
    if conda_name == "python":
        if version and not _python_satisfies(python_version, version):
            raise BuildError(
                f"conda dependency {entry!r} does not allow the model's python_version {python_version}: "
                "remove the python entry or log the model with a matching python_version"
            )
        return None
    reason = CONDA_ONLY.get(conda_name) or ("an R package" if conda_name.startswith("r-") else None)
    if reason:
        raise BuildError(
            f"conda dependency {entry!r} has no PyPI equivalent ({reason}). duckserve installs environments "
            "from PyPI with uv: remove it, or list the PyPI package you need in pip_requirements"
        )
    if conda_name in CONDA_VARIANTS:
        name = _variant(conda_name, version, accelerator)
    else:
        name = CONDA_TO_PYPI.get(conda_name, conda_name)
    return _Requirement(name, name + version, entry)


def conda_to_pypi(entry: str, python_version: str, accelerator: str = "cpu") -> tuple[str, str] | None:
    """(PyPI name, PEP 440 specifier) of a conda dependency, None for entries that install nothing
    (``pip``, ``python``); BuildError for conda-only packages."""
    requirement = _conda_requirement(entry, python_version, accelerator)
    if requirement is None or requirement.name is None:
        return None
    return requirement.name, requirement.version


def find_links_dirs() -> list[Path]:
    """Local directories of wheels uv is told to search (UV_FIND_LINKS, else PIP_FIND_LINKS)."""
    raw = os.environ.get("UV_FIND_LINKS") or os.environ.get("PIP_FIND_LINKS") or ""
    found: list[Path] = []
    for item in re.split(r"[\s,]+", raw.strip()):
        if not item:
            continue
        if item.startswith("file://"):
            item = item[len("file://"):]
        elif "://" in item:
            continue
        path = Path(item)
        if path.is_dir() and path not in found:
            found.append(path)
    return found


_WHEEL = re.compile(r"^(?P<name>[A-Za-z0-9_.]+)-(?P<version>[^-]+)-(?P<python>[^-]+)-(?P<abi>[^-]+)-(?P<platform>.+)\.whl$")


def local_cpu_builds(python_version: str) -> dict[str, dict[str, Path]]:
    """CPU builds (``+cpu`` local versions) of `CPU_BUILD_PACKAGES` among the local wheels, for one
    Python: package -> {version: wheel}."""
    minor = python_minor(python_version)
    tags = {f"cp{minor.replace('.', '')}", "py3", f"py{minor.replace('.', '')}"}
    builds: dict[str, dict[str, Path]] = {}
    for directory in find_links_dirs():
        for wheel in sorted(directory.glob("*.whl")):
            match = _WHEEL.match(wheel.name)
            if not match or not match["version"].endswith("+cpu"):
                continue
            name = canonical_name(match["name"])
            if name not in CPU_BUILD_PACKAGES or not tags & set(match["python"].split(".")):
                continue
            if not sys.platform.startswith("linux") or "linux" not in match["platform"]:
                continue
            builds.setdefault(name, {}).setdefault(match["version"], wheel)
    return builds


@dataclass
class EnvironmentSpec:
    """What a model needs: a Python version, conda dependencies and pip requirements (as in its manifest).

    ``server_packages`` are the inference server's runtime packages, added unless the model already
    names them; tests may pass fewer to keep builds cheap.
    """

    python_version: str
    conda_dependencies: list[str] = field(default_factory=list)
    pip_requirements: list[str] = field(default_factory=list)
    server_packages: list[str] = field(default_factory=lambda: list(SERVER_PACKAGES))
    #: "cpu" (CPU builds of torch and xgboost, the default) or "gpu" (the index's CUDA builds): a
    #: service gets "gpu" only when it requests GPUs and the host has NVIDIA GPUs
    accelerator: str = "cpu"
    #: modules imported once the environment is built, so a broken environment fails its build
    #: (e.g. transformers checking its huggingface-hub version in code) instead of the service
    import_checks: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.accelerator not in ACCELERATORS:
            raise BuildError(f"accelerator {self.accelerator!r}: use one of {', '.join(ACCELERATORS)}")

    @classmethod
    def from_manifest(cls, manifest: Any, accelerator: str = "cpu") -> EnvironmentSpec:
        """The spec of a model package's ``Manifest`` (duckserve.inference_server.manifest)."""
        from duckserve.inference_server.handlers import get_handler

        try:
            checks = get_handler(manifest.handler).runtime_modules(manifest)
        except KeyError:
            checks = []
        return cls(
            manifest.python_version, list(manifest.conda_dependencies), list(manifest.pip_requirements),
            accelerator=accelerator, import_checks=checks,
        )

    @property
    def python_minor(self) -> str:
        return python_minor(self.python_version)

    def _resolve(self) -> tuple[list[_Requirement], list[str]]:
        python = self.python_minor
        conda = [r for r in (_conda_requirement(e, python, self.accelerator) for e in self.conda_dependencies) if r]
        pip = [r for r in (_pip_requirement(e) for e in self.pip_requirements) if r]
        warnings: list[str] = []
        from_conda = {r.name: r for r in conda if r.name}
        kept = list(conda)
        for req in pip:
            chosen = from_conda.get(req.name) if req.name else None
            if chosen is None:
                kept.append(req)
            elif chosen.version != req.version:
                warnings.append(
                    f"{req.name} is in both conda_dependencies ({chosen.origin!r}) and pip_requirements "
                    f"({req.origin!r}); using {chosen.text!r} from conda_dependencies. conda and pip "
                    "dependencies are not resolved together: list each package in only one of them, "
                    "preferably all in pip_requirements or all in conda_dependencies"
                )
        named = {r.name for r in kept}
        for package in self.server_packages:
            server = _pip_requirement(package)
            if server and server.name not in named:
                kept.append(_Requirement(server.name, server.text, f"{package} (inference server)"))
        unique: dict[str, _Requirement] = {}
        for req in kept:
            unique.setdefault(req.text, req)
        return list(unique.values()), warnings

    def requirements(self) -> list[str]:
        """The pip requirements installed: translated conda dependencies, pip requirements, server packages."""
        return [r.text for r in self._resolve()[0]]

    def warnings(self) -> list[str]:
        """Warnings about the dependencies (a package in both lists with different versions)."""
        return self._resolve()[1]

    def origins(self) -> dict[str, str]:
        """Canonical package name -> the user's entry it came from (for error messages)."""
        return {r.name: r.origin for r in self._resolve()[0] if r.name}

    def constraints(self) -> tuple[list[str], list[str]]:
        """(uv constraints, warnings): on a CPU environment, torch and its siblings are held to the CPU
        builds among the local wheels (PyPI's Linux torch is a CUDA build of several GB), the highest
        one that satisfies the model's own requirement. Constraints install nothing by themselves."""
        if self.accelerator != "cpu":
            return [], []
        from duckserve.engine.versions import best_match

        builds = local_cpu_builds(self.python_version)
        requirements = {r.name: r for r in self._resolve()[0] if r.name}
        constraints: list[str] = []
        warnings: list[str] = []
        for package in CPU_BUILD_PACKAGES:
            available = sorted(builds.get(package, {}))
            wanted = requirements.get(package)
            specifier = ""
            if wanted is not None:
                specifier = wanted.version.split(";")[0].strip()
                if "+" in specifier or "@" in specifier or specifier[:1] not in ("", "=", "<", ">", "!", "~"):
                    continue  # an explicit local build (+cu121) or a URL: the model chose
            if not available:
                if wanted is not None:
                    warnings.append(
                        f"{package}: no CPU build of {package} among the local wheels "
                        f"({', '.join(map(str, find_links_dirs())) or 'no find-links directory is set'}); the index's "
                        f"{package}, a CUDA build of several GB, will be installed. Put a {package}-*+cpu wheel "
                        "in a directory named by PIP_FIND_LINKS or UV_FIND_LINKS to stay on CPU builds"
                    )
                continue
            try:
                chosen = best_match(available, specifier)
            except ValueError:
                chosen = None
            if chosen is None:
                warnings.append(
                    f"{wanted.origin if wanted else package!r}: no local CPU build satisfies it (local CPU builds: "
                    f"{', '.join(available)}); the index's {package}, a CUDA build of several GB, will be "
                    f"installed. Require {package}=={max(available)} to stay on the CPU build"
                )
                continue
            constraints.append(f"{package}=={chosen}")
        return constraints, warnings

    def key(self) -> str:
        """A stable hash of the Python version, the sorted requirements and constraints, the
        accelerator and the inference server's source."""
        payload: dict[str, Any] = {
            "python": self.python_minor,
            "requirements": sorted(self.requirements()),
            "server": server_source_digest(),
        }
        constraints = self.constraints()[0]
        if constraints or self.accelerator != "cpu":
            payload.update(constraints=sorted(constraints), accelerator=self.accelerator)
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def package_dir() -> Path:
    """The directory of the running duckserve package: what gets copied into every environment."""
    return Path(duckserve.__file__).resolve().parent


def server_sources(package: Path) -> list[Path]:
    # what code inside an environment can import: top-level modules (errors, model) and the server
    top = [p for p in package.glob("*.py")]
    server = [p for p in (package / _SERVER_SUBPACKAGE).rglob("*.py") if "__pycache__" not in p.parts]
    return sorted(top + server)


def server_source_digest(package: Path | None = None) -> str:
    """Hash of the sources an environment runs: duckserve's top-level modules and ``inference_server``."""
    package = package or package_dir()
    digest = hashlib.sha256()
    for path in server_sources(package):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


_interpreters: dict[str, Path] = {}
_interpreters_lock = threading.Lock()


def _probe(python: str) -> str | None:
    """The ``major.minor.micro`` of an interpreter, None when it does not run (a pyenv shim without a version)."""
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
            capture_output=True,
            text=True,
            timeout=20,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def find_interpreter(python_version: str) -> Path:
    """An interpreter for ``python_version``: this one, ``python3.X`` on PATH, or a pyenv version."""
    minor = python_minor(python_version)
    with _interpreters_lock:
        if minor in _interpreters and _interpreters[minor].exists():
            return _interpreters[minor]
        looked: list[str] = []
        current = f"{sys.version_info[0]}.{sys.version_info[1]}"
        if current == minor:
            _interpreters[minor] = Path(sys.executable)
            return _interpreters[minor]
        looked.append(f"{sys.executable} (is {current})")
        candidates: list[str] = []
        on_path = shutil.which(f"python{minor}")
        if on_path:
            candidates.append(on_path)
        else:
            looked.append(f"python{minor} on PATH (not found)")
        pyenv_versions = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
        installed = (
            sorted(
                (d for d in pyenv_versions.glob("*") if re.fullmatch(r"\d+\.\d+\.\d+", d.name)),
                key=lambda d: _version_tuple(d.name),
                reverse=True,
            )
            if pyenv_versions.is_dir()
            else []
        )
        candidates += [str(d / "bin" / f"python{minor}") for d in installed if d.name.startswith(minor + ".")]
        candidates += [f"/usr/local/bin/python{minor}", f"/usr/bin/python{minor}"]
        for candidate in dict.fromkeys(candidates):
            if not os.path.exists(candidate):
                continue
            version = _probe(candidate)
            if version and python_minor(version) == minor:
                _interpreters[minor] = Path(candidate)
                return _interpreters[minor]
            looked.append(f"{candidate} ({'is ' + version if version else 'does not run'})")
        if installed:
            looked.append(f"{pyenv_versions} ({', '.join(d.name for d in installed)})")
        else:
            looked.append(f"{pyenv_versions} (none)")
    raise BuildError(
        f"no Python {minor} interpreter found for the model environment; looked at: {'; '.join(looked)}. "
        f"Install Python {minor} (e.g. `pyenv install {minor}`) or log the model with an available python_version"
    )


def package_index() -> str:
    """The index uv searches: UV_DEFAULT_INDEX, UV_INDEX_URL or PIP_INDEX_URL if set, else PyPI."""
    for variable in ("UV_DEFAULT_INDEX", "UV_INDEX_URL", "PIP_INDEX_URL"):
        if os.environ.get(variable, "").strip():
            return os.environ[variable].split()[0]
    return DEFAULT_INDEX


def _extra_indexes() -> list[str]:
    found: list[str] = []
    for variable in ("UV_INDEX", "UV_EXTRA_INDEX_URL", "PIP_EXTRA_INDEX_URL"):
        found += os.environ.get(variable, "").split()
    return list(dict.fromkeys(found))


def uv_environment() -> dict[str, str]:
    env = dict(os.environ)
    env.update(UV_PYTHON_DOWNLOADS="never", UV_NO_PROGRESS="1", NO_COLOR="1", COLUMNS="1000")
    env.pop("VIRTUAL_ENV", None)
    # uv reads only its own variables; honor pip's so the index in our messages is the one searched
    if not env.get("UV_DEFAULT_INDEX") and not env.get("UV_INDEX_URL") and env.get("PIP_INDEX_URL"):
        env["UV_INDEX_URL"] = env["PIP_INDEX_URL"]
    if not env.get("UV_EXTRA_INDEX_URL") and env.get("PIP_EXTRA_INDEX_URL"):
        env["UV_EXTRA_INDEX_URL"] = env["PIP_EXTRA_INDEX_URL"]
    if not env.get("UV_FIND_LINKS") and env.get("PIP_FIND_LINKS"):
        env["UV_FIND_LINKS"] = ",".join(env["PIP_FIND_LINKS"].split())
    return env


def uv_binary() -> str:
    try:
        from uv import find_uv_bin

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError) as exc:
        found = shutil.which("uv")
        if found:
            return found
        raise BuildError("uv is not installed: install duckserve's dependencies (`pip install uv`)") from exc


def _timestamp() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


_HUB_FIX = (
    "transformers checks its huggingface-hub version in code, not (only) in its package metadata. "
    "Fix: log the model again with the huggingface-hub version it needs in pip_requirements or "
    "conda_dependencies (e.g. '{wanted}'), or remove your own huggingface-hub pin"
)

_UV_FAILURES: list[tuple[re.Pattern[str], str]] = [
    (
        re.compile(r"Because (?P<owner>transformers\S*) depends on (?P<wanted>huggingface-hub\S*)"
                   r".*you require (?P<pkg>huggingface-hub[^\s,]*)"),
        "does not match what {owner} needs ({wanted}): a Hugging Face hub version mismatch, caught before "
        "the service starts. " + _HUB_FIX,
    ),
    (
        re.compile(r"Because (?P<pkg>\S+) was not (?:found|named) in the package registry"),
        "was not found in the package index {index}. Check the package's spelling",
    ),
    (
        re.compile(r"there is no version of (?P<pkg>[^\s,]+)"),
        "has no such version in the package index {index}. Check the version, or remove the pin to get the latest",
    ),
    (
        re.compile(r"only (?P<avail>\S+) (?:is|are) available and you require (?P<pkg>[^\s,]+)"),
        "cannot be satisfied: only {avail} is available in the package index {index}. Relax the version pin",
    ),
    (
        re.compile(r"(?P<pkg>\S+) has no (?:usable )?wheels? (?:with a matching|for)"),
        "has no build for Python {python} in the package index {index}. Pick a version with wheels for "
        "Python {python}, or log the model with another python_version",
    ),
    (
        re.compile(r"Failed to parse: `(?P<pkg>[^`]+)`"),
        "is not a valid requirement. Use the form 'name>=1.2'",
    ),
    (
        re.compile(r"Failed to (?:build|download) `?(?P<pkg>[^`\s]+)"),
        "could not be built or downloaded from the package index {index}. Pin a version that has a wheel",
    ),
    (
        re.compile(r"Failed to fetch: `?(?P<pkg>[^`\s]+)"),
        "could not be fetched: the package index {index} is unreachable. Check the network or the index URL",
    ),
]


def explain_uv_failure(output: str, index: str, python: str) -> tuple[str | None, str]:
    """(the package uv could not find or resolve, what went wrong and the fix) from uv's output."""
    output = " ".join(output.split())  # uv wraps long messages at the terminal width
    for pattern, template in _UV_FAILURES:
        match = pattern.search(output)
        if match:
            package = match["pkg"].strip("`'\",.")
            groups = {k: v for k, v in match.groupdict().items() if v}
            return package, template.format(index=index, python=python, **groups)
    return None, f"could not be resolved from the package index {index}. Check the dependencies for conflicts"


_IMPORT_VERSION_CHECK = re.compile(
    r"(?P<wanted>[A-Za-z0-9_.-]+[<>=!~][^\s]*) is required for a normal functioning of this module, "
    r"but found (?P<found>[A-Za-z0-9_.-]+==\S+)"
)


def explain_import_failure(output: str) -> str:
    """What went wrong when importing a model's frameworks, and the fix: a package's own version
    check (transformers' ``huggingface-hub>=0.30.0,<1.0 is required ...``) or any other ImportError."""
    text = " ".join(output.split())
    match = _IMPORT_VERSION_CHECK.search(text)
    if match:
        wanted, found = match["wanted"].rstrip(".,"), match["found"].rstrip(".,")
        package = re.split(r"[<>=!~]", wanted)[0]
        fix = _HUB_FIX.format(wanted=wanted) if canonical_name(package) == "huggingface-hub" else (
            f"Fix: log the model again with '{wanted}' in pip_requirements or conda_dependencies"
        )
        return f"{wanted} is required, but the environment has {found}. {fix}."
    lines = [line for line in output.strip().splitlines() if line.strip()]
    last = lines[-1].strip() if lines else "no output"
    return (
        f"{last}. Add the missing or mismatched package to the model's pip_requirements or "
        "conda_dependencies and log it again."
    )


def uv_summary(output: str, limit: int = 800) -> str:
    lines = output.strip().splitlines()
    first_error = next(
        (i for i, line in enumerate(lines) if line.lstrip().startswith("error")), max(0, len(lines) - 5)
    )
    text = " ".join(" ".join(lines[first_error:]).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class Environment:
    """A built environment: its directory, its interpreter, and how this call got it."""

    path: Path
    python: Path
    key: str
    reused: bool
    warnings: list[str]
    seconds: float
    python_version: str = ""
    requirements: list[str] = field(default_factory=list)
    created_at: str = ""


class EnvironmentBuilder:
    """Builds and caches environments in ``<home>/envs/<key>/``; safe across threads and processes."""

    def __init__(self, home: Path | str, timeout: float = 1800.0) -> None:
        self.home = Path(home)
        self.root = self.home / "envs"
        self.timeout = timeout

    def path(self, key: str) -> Path:
        if not _KEY.match(key):
            raise ObjectNotFound(
                f"environment {key!r} does not exist: keys are hex digests from EnvironmentSpec.key()"
            )
        return self.root / key

    def get(self, key: str) -> Environment | None:
        """The finished environment ``key``, or None."""
        path = self.path(key)
        try:
            meta = json.loads((path / COMPLETE_MARKER).read_text())
        except (OSError, ValueError):
            return None
        python = path / "bin" / "python"
        if not python.exists():  # its base interpreter went away (e.g. a removed pyenv version)
            return None
        return Environment(
            path=path,
            python=python,
            key=key,
            reused=True,
            warnings=list(meta.get("warnings", [])),
            seconds=0.0,
            python_version=meta.get("python_version", ""),
            requirements=list(meta.get("requirements", [])),
            created_at=meta.get("created_at", ""),
        )

    def list(self) -> builtins.list[Environment]:
        """Every finished environment, oldest first."""
        if not self.root.is_dir():
            return []
        found = [self.get(p.name) for p in self.root.iterdir() if p.is_dir() and _KEY.match(p.name)]
        return sorted((e for e in found if e), key=lambda e: e.created_at)

    def remove(self, key: str, missing_ok: bool = False) -> None:
        """Delete environment ``key`` (services still running in it keep only what they have loaded)."""
        path = self.path(key)
        with self._lock(key, None):
            if not path.exists():
                if missing_ok:
                    return
                raise ObjectNotFound(
                    f"environment {key} does not exist in {self.root}: EnvironmentBuilder.list() shows them"
                )
            self._discard(path)

    def build(self, spec: EnvironmentSpec, log_path: Path | str, force: bool = False) -> Environment:
        """The environment for ``spec``: reused when already built (unless ``force``), else built with uv.

        Everything uv prints goes to ``log_path`` (appended), the MODEL_BUILD job's ``model-build`` log.
        """
        started = time.monotonic()
        log_path = Path(log_path)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        requirements, warnings = spec._resolve()
        constraints, constraint_warnings = spec.constraints()
        warnings = warnings + constraint_warnings
        key = spec.key()
        self.root.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a", encoding="utf-8") as log, self._lock(key, log):
            existing = self.get(key)
            if existing and not force:
                log.write(
                    f"{_timestamp()} environment {key} already built ({existing.created_at}): build skipped\n"
                )
                existing.warnings = warnings
                existing.seconds = time.monotonic() - started
                return existing
            for stale in self.root.glob(f".build-{key}-*"):
                shutil.rmtree(stale, ignore_errors=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".build-{key}-", dir=self.root))
            try:
                self._build_into(tmp, spec, key, requirements, warnings, log, log_path, started, constraints)
                final = self.path(key)
                if final.exists():
                    self._discard(final)
                os.rename(tmp, final)
            except BaseException as exc:
                shutil.rmtree(tmp, ignore_errors=True)
                log.write(f"{_timestamp()} === build of environment {key} FAILED: {exc}\n")
                raise
            seconds = time.monotonic() - started
            log.write(f"{_timestamp()} === environment {key} built in {seconds:.1f}s at {final}\n")
        built = self.get(key)
        if built is None:
            raise BuildError(f"environment {key} vanished right after its build: see {log_path}")
        built.reused = False
        built.seconds = seconds
        return built

    def _build_into(
        self,
        tmp: Path,
        spec: EnvironmentSpec,
        key: str,
        requirements: builtins.list[_Requirement],
        warnings: builtins.list[str],
        log: IO[str],
        log_path: Path,
        started: float,
        constraints: builtins.list[str] | None = None,
    ) -> None:
        interpreter = find_interpreter(spec.python_version)
        uv = uv_binary()
        index = package_index()
        texts = [r.text for r in requirements]
        log.write(
            f"{_timestamp()} === duckserve model-build: environment {key}\n"
            f"python:       {spec.python_minor} ({interpreter})\n"
            f"requirements: {' '.join(texts)}\n"
            f"index:        {index}{''.join(' + ' + i for i in _extra_indexes())}\n"
            f"accelerator:  {spec.accelerator}\n"
        )
        if constraints:
            log.write(
                f"constraints:  {' '.join(constraints)} (CPU builds from the local wheels in "
                f"{', '.join(map(str, find_links_dirs()))}: this environment serves on the CPU)\n"
            )
        for warning in warnings:
            log.write(f"warning: {warning}\n")
        log.flush()
        env = uv_environment()
        self._run(
            [uv, "venv", "--relocatable", "--no-project", "--python", str(interpreter), str(tmp)],
            env,
            log,
            log_path,
        )
        python = tmp / "bin" / "python"
        output = None
        if texts:
            install = [uv, "pip", "install", "--python", str(python), *texts]
            if constraints:
                constraint_file = tmp / "constraints.txt"
                constraint_file.write_text("".join(c + "\n" for c in constraints))
                install += ["--constraint", str(constraint_file)]
            # uv's cache usually holds everything already: resolving from it alone spares the ~2 s
            # of index round trips; whatever it lacks is resolved online
            output = self._run([*install, "--offline"], env, log, log_path, check=False)
            if output is not None:
                log.write(f"{_timestamp()} not everything is in uv's cache: resolving against the index\n")
                output = self._run(install, env, log, log_path, check=False)
        if output is not None:
            origins = {r.name: r.origin for r in requirements if r.name}
            package, problem = explain_uv_failure(output, index, spec.python_minor)
            if package:
                origin = origins.get(canonical_name(re.split(r"[<>=!~;\[ ]", package)[0]))
                subject = f"package {package!r}" + (
                    f" (from {origin!r})" if origin and origin != package else ""
                )
            else:
                subject = "the requirements " + ", ".join(texts)
            raise BuildError(
                f"cannot build the environment for python {spec.python_minor}: {subject} {problem}. "
                f"uv said: {uv_summary(output)} Build log: {log_path}"
            )
        site_packages = tmp / "lib" / f"python{spec.python_minor}" / "site-packages"
        if not site_packages.is_dir():
            raise BuildError(
                f"uv created no {site_packages.relative_to(tmp)} in environment {key}: see {log_path}"
            )
        self._copy_duckserve(site_packages, log)
        tag = f"cpython-{spec.python_minor.replace('.', '')}"
        restored = bytecode.restore(site_packages, tag)
        log.write(f"{_timestamp()} {restored} compiled modules taken from the bytecode store {bytecode.store_dir()}\n")
        self._run(
            [str(python), "-c", "import duckserve, sys; print('python', sys.version)"], env, log, log_path
        )
        if spec.import_checks:
            self._check_imports(python, spec, env, log, log_path)
        self._warm_bytecode(python, env, log, log_path)
        saved = bytecode.save(site_packages, tag, skip=("duckserve",))  # its copy is this environment's own
        log.write(f"{_timestamp()} {saved} compiled modules added to the bytecode store\n")
        meta = {
            "key": key,
            "python_version": spec.python_minor,
            "interpreter": str(interpreter),
            "requirements": texts,
            "warnings": warnings,
            "index": index,
            "server_source": server_source_digest(),
            "created_at": _timestamp(),
            "build_seconds": round(time.monotonic() - started, 3),
        }
        (tmp / COMPLETE_MARKER).write_text(json.dumps(meta, indent=2))

    def _warm_bytecode(self, python: Path, env: dict[str, str], log: IO[str], log_path: Path) -> None:
        """Import what every instance imports, writing its bytecode once: instances may run with
        PYTHONDONTWRITEBYTECODE, and each worker of each instance would otherwise compile pandas,
        scikit-learn, torch... in memory at every start (seconds per worker)."""
        modules = ["duckserve.inference_server.serve", "duckserve.inference_server.handlers", "pandas", "pyarrow"]
        warm_env = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
        # best effort: an environment built without the server's packages (tests do that) still builds
        script = "; ".join(f"import {m}" for m in modules)
        self._run([str(python), "-c", f"try:\n    {script}\nexcept ImportError:\n    pass"], warm_env, log, log_path,
                  check=False)

    def _check_imports(
        self, python: Path, spec: EnvironmentSpec, env: dict[str, str], log: IO[str], log_path: Path
    ) -> None:
        """Import the model's frameworks in the new environment: some packages check their own
        dependencies in code, at import, and would otherwise fail only when the service starts."""
        script = "; ".join(f"import {module}" for module in spec.import_checks)
        # written bytecode makes every later start of every worker faster (see _warm_bytecode)
        warm_env = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
        output = self._run([str(python), "-c", script], warm_env, log, log_path, check=False)
        if output is None:
            return
        raise BuildError(
            f"the environment for python {spec.python_minor} installed, but importing "
            f"{', '.join(spec.import_checks)} in it failed: {explain_import_failure(output)} Build log: {log_path}"
        )

    def _copy_duckserve(self, site_packages: Path, log: IO[str]) -> None:
        source = package_dir()
        target = site_packages / "duckserve"
        files = [p for p in source.rglob("*.py") if "__pycache__" not in p.relative_to(source).parts]
        for path in files:
            dest = target / path.relative_to(source)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)
        compileall.compile_dir(str(target), quiet=1)
        log.write(
            f"{_timestamp()} copied {len(files)} duckserve source files from {source} (no dependencies)\n"
        )
        log.flush()

    def _run(
        self, argv: builtins.list[str], env: dict[str, str], log: IO[str], log_path: Path, check: bool = True
    ) -> str | None:
        """Run one build step, streaming its output to the log; its output when it fails, else None."""
        log.write(f"{_timestamp()} $ {shlex.join(argv)}\n")
        log.flush()
        try:
            proc = subprocess.Popen(
                argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=self.root,
                text=True,
                errors="replace",
            )
        except OSError as exc:
            raise BuildError(f"cannot run {argv[0]}: {exc}. Build log: {log_path}") from exc
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            proc.kill()

        timer = threading.Timer(self.timeout, kill)
        timer.start()
        captured: list[str] = []
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                captured.append(line)
                log.write(line)
                log.flush()
            code = proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        output = "".join(captured)
        if code == 0:
            return None
        if timed_out.is_set():
            raise BuildError(
                f"build step `{shlex.join(argv[:3])} ...` did not finish within {self.timeout:.0f}s and was killed: "
                f"check the network and the package index, or build with a longer timeout. Build log: {log_path}"
            )
        if check:
            raise BuildError(
                f"build step `{shlex.join(argv[:3])} ...` failed with exit code {code}: {uv_summary(output)} "
                f"Build log: {log_path}"
            )
        return output

    @contextmanager
    def _lock(self, key: str, log: IO[str] | None) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f"{key}.lock", "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if log is not None:
                    log.write(f"{_timestamp()} waiting for another build of environment {key} to finish\n")
                    log.flush()
                fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _discard(self, path: Path) -> None:
        # rename first so a half-deleted directory never looks like an environment
        doomed = Path(tempfile.mkdtemp(prefix=f".old-{path.name}-", dir=self.root))
        os.rename(path, doomed / path.name)
        shutil.rmtree(doomed, ignore_errors=True)
