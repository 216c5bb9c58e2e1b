"""Model environments: real uv builds in a temporary home (uv's global cache keeps them quick)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from duckserve.engine.environments import (
    SERVER_PACKAGES,
    Environment,
    EnvironmentBuilder,
    EnvironmentSpec,
    find_interpreter,
    package_dir,
    server_source_digest,
)
from duckserve.errors import BuildError, ObjectNotFound
from tests import needs

pytestmark = pytest.mark.xdist_group("builds")

PY = f"{sys.version_info[0]}.{sys.version_info[1]}"
INDEX_VARIABLES = ("UV_DEFAULT_INDEX", "UV_INDEX_URL", "PIP_INDEX_URL", "UV_INDEX", "UV_EXTRA_INDEX_URL")


def small(*pip: str, python: str = PY) -> EnvironmentSpec:
    """A spec without the server packages, so test builds stay cheap."""
    return EnvironmentSpec(python, pip_requirements=list(pip), server_packages=[])


def run_in(python: Path, code: str) -> str:
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, cwd="/")
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.fixture
def builder(tmp_path: Path) -> EnvironmentBuilder:
    return EnvironmentBuilder(tmp_path / "home")


@pytest.fixture
def pypi(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in INDEX_VARIABLES:
        monkeypatch.delenv(variable, raising=False)


def env_dirs(builder: EnvironmentBuilder) -> list[str]:
    return sorted(p.name for p in builder.root.iterdir() if p.is_dir())


# --- translating dependencies ---------------------------------------------------------------------


def test_conda_names_channels_and_versions_become_pip_requirements() -> None:
    spec = EnvironmentSpec(
        "3.11",
        conda_dependencies=[
            "conda-forge::pytorch=2.1",
            "py-xgboost>=1.7",
            "defaults::scikit-learn",
            "pytorch::torchvision",
            "numpy 1.26.*",
            "pandas==2.1",
            "python=3.11",
            "pip",
            "Msgpack-Python",
        ],
        pip_requirements=["Requests[Socks] >= 2 ; python_version < '3.12'"],
    )
    assert spec.requirements() == [
        "torch==2.1.*",
        "xgboost-cpu>=1.7",  # conda's xgboost on a CPU environment: the build without CUDA's NCCL
        "scikit-learn",
        "torchvision",
        "numpy==1.26.*",
        "pandas==2.1",
        "msgpack",
        "requests[socks]>=2; python_version < '3.12'",
        "starlette",
        "uvicorn",
        "gunicorn",
        "pyarrow",
        "cloudpickle",
    ]
    assert spec.warnings() == []


def test_server_packages_are_added_unless_the_model_pins_them() -> None:
    spec = EnvironmentSpec("3.11", pip_requirements=["pandas<2.2", "starlette"])
    requirements = spec.requirements()
    assert requirements[:2] == ["pandas<2.2", "starlette"]
    assert sorted(requirements) == sorted(["pandas<2.2", *[p for p in SERVER_PACKAGES if p != "pandas"]])


def test_package_in_both_lists_keeps_conda_version_and_warns() -> None:
    spec = EnvironmentSpec("3.11", ["conda-forge::numpy=1.26"], ["numpy==2.0", "six"], server_packages=[])
    assert spec.requirements() == ["numpy==1.26.*", "six"]
    (warning,) = spec.warnings()
    assert "numpy" in warning and "conda_dependencies" in warning and "pip_requirements" in warning
    assert "not resolved together" in warning


@pytest.mark.parametrize("name", ["cudatoolkit", "conda-forge::mkl", "libgcc-ng", "r-base", "r-ggplot2"])
def test_conda_only_package_is_a_build_error(name: str) -> None:
    with pytest.raises(BuildError) as info:
        EnvironmentSpec("3.11", [name]).requirements()
    assert repr(name) in str(info.value) and "pip_requirements" in str(info.value)


def test_python_pin_is_checked_not_installed() -> None:
    ok = EnvironmentSpec("3.11", ["python>=3.9,<3.13", "python=3.11", "python"], server_packages=[])
    assert ok.requirements() == []
    with pytest.raises(BuildError, match="python_version 3.11"):
        EnvironmentSpec("3.11", ["python=3.10"]).requirements()


def test_installer_options_and_bad_versions_are_rejected() -> None:
    with pytest.raises(BuildError, match="installer option"):
        EnvironmentSpec("3.11", pip_requirements=["--index-url=http://evil/simple"]).requirements()
    with pytest.raises(BuildError, match="form '3.11'"):
        EnvironmentSpec("three", []).key()
    with pytest.raises(BuildError, match="3.9 or newer"):
        EnvironmentSpec("3.8", []).key()


def test_key_is_stable_and_ignores_requirement_order() -> None:
    a = EnvironmentSpec("3.11", pip_requirements=["six", "Attrs>=23"])
    b = EnvironmentSpec("3.11.7", pip_requirements=["attrs >= 23", "six"])
    assert a.key() == b.key()
    assert a.key() != EnvironmentSpec("3.12", pip_requirements=["six", "attrs>=23"]).key()
    assert a.key() != EnvironmentSpec("3.11", pip_requirements=["six"]).key()


def test_inference_server_source_is_part_of_the_key(tmp_path: Path) -> None:
    copy = tmp_path / "duckserve"
    shutil.copytree(package_dir(), copy, ignore=shutil.ignore_patterns("__pycache__"))
    before = server_source_digest(copy)
    assert before == server_source_digest(package_dir())
    (copy / "engine" / "catalog.py").write_text("# the control plane is not in environments\n")
    assert server_source_digest(copy) == before
    with open(copy / "inference_server" / "manifest.py", "a") as fh:
        fh.write("\n# a new inference server\n")
    assert server_source_digest(copy) != before


def test_missing_python_version_lists_what_was_found() -> None:
    with pytest.raises(BuildError) as info:
        find_interpreter("3.99")
    message = str(info.value)
    assert "no Python 3.99 interpreter" in message and sys.executable in message


# --- real builds ----------------------------------------------------------------------------------


def test_build_reuse_and_force(builder: EnvironmentBuilder, tmp_path: Path, pypi: None) -> None:
    log = tmp_path / "model-build.log"
    spec = small("six")
    env = builder.build(spec, log)
    assert not env.reused and len(env.key) == 24
    assert env.path == builder.root / env.key and env.python == env.path / "bin" / "python"
    probe = "import sys, six, duckserve.inference_server.manifest as m; print(sys.prefix, m.__file__)"
    prefix, manifest = run_in(env.python, probe).split()
    assert Path(prefix) == env.path
    assert Path(manifest).is_relative_to(env.path)  # the copy, not the checkout
    text = log.read_text()
    assert f"environment {env.key}" in text and "six" in text and "built in" in text

    again = builder.build(spec, log)
    assert again.reused and again.path == env.path
    assert "build skipped" in log.read_text()

    (env.path / "leftover").write_text("from the first build")
    forced = builder.build(spec, log, force=True)
    assert not forced.reused and forced.path == env.path
    assert not (env.path / "leftover").exists()
    run_in(forced.python, "import six")
    assert env_dirs(builder) == [env.key]


def test_copied_duckserve_has_only_sources(builder: EnvironmentBuilder, tmp_path: Path, pypi: None) -> None:
    env = builder.build(small(), tmp_path / "log")
    (copy,) = (env.path / "lib").glob("python*/site-packages/duckserve")
    assert (copy / "inference_server" / "manifest.py").is_file()
    # sources, and the bytecode compiled from them in the environment (never copied from the tree)
    files = [p for p in copy.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} == {".py", ".pyc"}
    sources = {p.relative_to(copy).with_suffix("") for p in files if p.suffix == ".py"}
    assert all(p.parent.name == "__pycache__" for p in files if p.suffix == ".pyc")
    assert {(p.parent.parent / p.name.split(".")[0]).relative_to(copy) for p in files if p.suffix == ".pyc"} <= sources
    # duckserve's own dependencies are not installed: the control plane cannot import there
    run_in(env.python, "import importlib.util as u; assert u.find_spec('duckdb') is None")


def test_missing_package_names_it_the_index_and_the_log(
    builder: EnvironmentBuilder, tmp_path: Path, pypi: None
) -> None:
    log = tmp_path / "model-build.log"
    with pytest.raises(BuildError) as info:
        builder.build(small("six", "duckserve-no-such-package-zzz"), log)
    message = str(info.value)
    assert "'duckserve-no-such-package-zzz'" in message
    assert "https://pypi.org/simple" in message and str(log) in message
    assert "not found in the package registry" in log.read_text()
    assert env_dirs(builder) == []


@pytest.mark.parametrize("variable", ["UV_INDEX_URL", "PIP_INDEX_URL"])
def test_missing_package_names_the_configured_index(
    builder: EnvironmentBuilder, tmp_path: Path, pypi: None, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    index = tmp_path / "index" / "simple"
    index.mkdir(parents=True)
    monkeypatch.setenv(variable, index.as_uri())
    with pytest.raises(BuildError) as info:
        builder.build(small("duckserve-no-such-package-zzz"), tmp_path / "log")
    assert "'duckserve-no-such-package-zzz'" in str(info.value) and index.as_uri() in str(info.value)


def test_conda_origin_is_named_when_its_package_is_missing(
    builder: EnvironmentBuilder, tmp_path: Path, pypi: None
) -> None:
    spec = EnvironmentSpec(PY, ["conda-forge::duckserve-no-such-conda-zzz"], server_packages=[])
    with pytest.raises(BuildError, match="from 'conda-forge::duckserve-no-such-conda-zzz'"):
        builder.build(spec, tmp_path / "log")


def test_concurrent_builds_of_one_spec_make_one_environment(
    builder: EnvironmentBuilder, tmp_path: Path, pypi: None
) -> None:
    spec = small("six")
    results: list[Environment | Exception] = []

    def build(i: int) -> None:
        try:
            results.append(builder.build(spec, tmp_path / f"log{i}"))
        except Exception as exc:  # surfaced by the assertion below
            results.append(exc)

    threads = [threading.Thread(target=build, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    envs = [r for r in results if isinstance(r, Environment)]
    assert len(envs) == 2, results
    assert sorted(e.reused for e in envs) == [False, True]
    assert envs[0].path == envs[1].path
    assert env_dirs(builder) == [envs[0].key]


def test_concurrent_builds_in_two_processes_make_one_environment(
    builder: EnvironmentBuilder, tmp_path: Path, pypi: None
) -> None:
    code = (
        "import sys; from duckserve.engine.environments import EnvironmentBuilder, EnvironmentSpec; "
        f"spec = EnvironmentSpec({PY!r}, pip_requirements=['six'], server_packages=[]); "
        f"env = EnvironmentBuilder({str(builder.home)!r}).build(spec, sys.argv[1]); print(env.reused, env.path)"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path / f"log{i}")], stdout=subprocess.PIPE, text=True
        )
        for i in range(2)
    ]
    outputs = sorted(p.communicate(timeout=120)[0].split() for p in procs)
    assert [o[0] for o in outputs] == ["False", "True"] and outputs[0][1] == outputs[1][1]
    assert env_dirs(builder) == [Path(outputs[0][1]).name]


def test_other_python_version(builder: EnvironmentBuilder, tmp_path: Path, pypi: None) -> None:
    other = "3.12" if PY != "3.12" else "3.11"
    try:
        find_interpreter(other)
    except BuildError:
        needs.unavailable(f"no Python {other} on this machine: install it (pyenv install {other})")
    env = builder.build(small("six", python=other), tmp_path / "log")
    assert run_in(env.python, "import sys, six, duckserve; print('%d.%d' % sys.version_info[:2])") == other


def test_list_and_remove(builder: EnvironmentBuilder, tmp_path: Path, pypi: None) -> None:
    assert builder.list() == []
    env = builder.build(small(), tmp_path / "log")
    (listed,) = builder.list()
    assert listed.key == env.key and listed.path == env.path and listed.python_version == PY
    builder.remove(env.key)
    assert builder.list() == [] and env_dirs(builder) == []
    builder.remove(env.key, missing_ok=True)
    with pytest.raises(ObjectNotFound):
        builder.remove(env.key)
    with pytest.raises(ObjectNotFound):
        builder.remove("../etc")


# --- the bytecode store -----------------------------------------------------------------------------


def _loads_from_pyc(site: Path, module: str) -> bool:
    """Whether Python loads ``module`` from ``site`` from an existing .pyc (it says so with -v)."""
    out = subprocess.run([sys.executable, "-v", "-c", f"import {module}"], capture_output=True, text=True,
                         cwd="/", env={"PYTHONPATH": str(site), "PYTHONDONTWRITEBYTECODE": "1"})
    assert out.returncode == 0, out.stderr
    return f"{site}/__pycache__/{module}.{TAG}.pyc matches {site}/{module}.py" in out.stderr


TAG = f"cpython-{sys.version_info[0]}{sys.version_info[1]}"


def test_bytecode_store_serves_hard_linked_sources_only(tmp_path: Path) -> None:
    import py_compile

    from duckserve.engine import bytecode

    store, first, linked, copied = (tmp_path / d for d in ("store", "first", "linked", "copied"))
    for site in (first, linked, copied):
        site.mkdir()
    (first / "shared_mod.py").write_text("VALUE = 42\n")
    py_compile.compile(str(first / "shared_mod.py"), cfile=str(first / "__pycache__" / f"shared_mod.{TAG}.pyc"))
    (first / "own").mkdir()
    (first / "own" / "__init__.py").write_text("")
    py_compile.compile(str(first / "own" / "__init__.py"))
    assert bytecode.save(first, TAG, store, skip=("own",)) == 1  # "own" is this site's alone
    assert bytecode.save(first, TAG, store) == 1 and bytecode.save(first, TAG, store) == 0

    # the same file (a hard link, as uv installs from its cache) gets the stored bytecode, and Python uses it
    (linked / "shared_mod.py").hardlink_to(first / "shared_mod.py")
    assert not _loads_from_pyc(linked, "shared_mod")
    assert bytecode.restore(linked, TAG, store) == 1
    assert _loads_from_pyc(linked, "shared_mod")
    # a copy is another file: it compiles its own
    shutil.copy2(first / "shared_mod.py", copied / "shared_mod.py")
    assert bytecode.restore(copied, TAG, store) == 0
    assert bytecode.restore(tmp_path / "nowhere", TAG, tmp_path / "no-store") == 0


def test_second_build_takes_bytecode_from_the_store(tmp_path: Path, pypi: None,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from duckserve.engine import bytecode

    monkeypatch.setenv(bytecode.CACHE_ENV, str(tmp_path / "store"))
    spec = EnvironmentSpec(PY, pip_requirements=["six"], server_packages=[], import_checks=["six"])
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    EnvironmentBuilder(tmp_path / "home1").build(spec, first_log)
    assert "0 compiled modules taken from the bytecode store" in first_log.read_text()
    assert "1 compiled modules added to the bytecode store" in first_log.read_text()  # six.py, not duckserve
    env = EnvironmentBuilder(tmp_path / "home2").build(spec, second_log)
    sources = [next(home.glob("envs/*/lib/python*/site-packages/six.py")) for home in (tmp_path / "home1", tmp_path / "home2")]
    # uv hard-links from its cache where it can (one file system); a copied six.py compiles its own
    shared = sources[0].stat().st_ino == sources[1].stat().st_ino
    assert f"{int(shared)} compiled modules taken from the bytecode store" in second_log.read_text()
    assert run_in(env.python, "import six; print(six.__cached__)").endswith(f"six.{TAG}.pyc")
