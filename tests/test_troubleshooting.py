"""The seed's troubleshooting section, as documented: a Hugging Face hub version mismatch caught at
build time with the fix; a package that is not found names the package and the index; CPU builds of
torch chosen from the local wheels; PEP 440 matching used for both."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import duckserve
from duckserve import errors
from duckserve.engine.environments import EnvironmentBuilder, EnvironmentSpec, explain_import_failure
from duckserve.engine.versions import best_match, satisfies
from duckserve.model import CustomModel, ModelContext, inference_api
from duckserve.registry import Registry

pytestmark = pytest.mark.xdist_group("gpu")

SEED_HUB_ERROR = ("ImportError: huggingface-hub>=0.30.0,<1.0 is required for a normal functioning of this module, "
                  "but found huggingface-hub==0.25.2.")


class Echo(CustomModel):
    @inference_api
    def predict(self, X: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"Y": X["X"]})


@pytest.fixture(scope="module")
def account(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    conn = duckserve.connect(home=str(tmp_path_factory.mktemp("trouble") / "home"))
    conn.cursor().execute("""
        CREATE COMPUTE POOL IF NOT EXISTS pool MIN_NODES = 1 MAX_NODES = 1 INSTANCE_FAMILY = 'CPU_X64_XS';
        CREATE IMAGE REPOSITORY IF NOT EXISTS images;
    """)
    yield conn
    conn.close()


def test_hugging_face_hub_mismatch_is_caught_at_build_time_with_the_fix(account: Any) -> None:
    mv = Registry(account).log_model(Echo(ModelContext()), model_name="hub", sample_input_data=pd.DataFrame({"X": [1.0]}),
                                     pip_requirements=["transformers==5.23.0", "huggingface-hub==0.25.2"])
    with pytest.raises(errors.BuildError) as info:
        mv.create_service(service_name="hub_svc", service_compute_pool="pool", image_repo="images")
    message = str(info.value)
    assert "'huggingface-hub==0.25.2'" in message and "Hugging Face hub version mismatch" in message
    assert "log the model again with the huggingface-hub version it needs in pip_requirements or " \
           "conda_dependencies (e.g. 'huggingface-hub>=" in message
    assert "MODEL_BUILD_" in message


def test_the_seeds_import_time_check_is_explained() -> None:
    explained = explain_import_failure("Traceback (most recent call last):\n  ...\n" + SEED_HUB_ERROR + "\n")
    assert explained.startswith("huggingface-hub>=0.30.0,<1.0 is required, but the environment has "
                                "huggingface-hub==0.25.2")
    assert "e.g. 'huggingface-hub>=0.30.0,<1.0'" in explained
    other = explain_import_failure("ModuleNotFoundError: No module named 'sentencepiece'\n")
    assert "No module named 'sentencepiece'" in other and "pip_requirements" in other


def test_a_broken_environment_fails_its_build_not_its_service(tmp_path: Path) -> None:
    builder = EnvironmentBuilder(tmp_path / "home")
    spec = EnvironmentSpec("3.11", pip_requirements=["six"], server_packages=[],
                           import_checks=["six", "duckserve_no_such_module"])
    with pytest.raises(errors.BuildError, match="importing six, duckserve_no_such_module in it failed: "
                                                ".*No module named 'duckserve_no_such_module'"):
        builder.build(spec, tmp_path / "build.log")
    assert builder.list() == []  # nothing half-built is kept


def test_package_not_found_names_the_package_and_the_index(account: Any) -> None:
    mv = Registry(account).log_model(Echo(ModelContext()), model_name="missing",
                                     sample_input_data=pd.DataFrame({"X": [1.0]}),
                                     conda_dependencies=["conda-forge::duckserve-no-such-conda-package=1.0"])
    with pytest.raises(errors.BuildError) as info:
        mv.create_service(service_name="missing_svc", service_compute_pool="pool", image_repo="images")
    message = str(info.value)
    assert "duckserve-no-such-conda-package" in message
    assert "(from 'conda-forge::duckserve-no-such-conda-package=1.0')" in message
    assert "package index https://pypi.org/simple" in message or "package index" in message


# --- CPU builds of torch -----------------------------------------------------------------------------


@pytest.fixture
def wheels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "wheels"
    directory.mkdir()
    for name in ("torch-2.12.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl",
                 "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl",
                 "torch-2.13.0+cpu-cp312-cp312-manylinux_2_28_x86_64.whl",
                 "torchvision-0.28.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl",
                 "torch-2.14.0-cp311-cp311-manylinux_2_28_x86_64.whl"):
        (directory / name).write_bytes(b"")
    monkeypatch.setenv("UV_FIND_LINKS", str(directory))
    return directory


def test_cpu_environments_hold_torch_to_the_local_cpu_builds(wheels: Path) -> None:
    unpinned = EnvironmentSpec("3.11", pip_requirements=["sentence-transformers", "torch"], server_packages=[])
    assert unpinned.constraints() == (["torch==2.13.0+cpu", "torchvision==0.28.0+cpu"], [])
    pinned = EnvironmentSpec("3.11", conda_dependencies=["pytorch=2.12"], server_packages=[])
    assert pinned.constraints()[0][0] == "torch==2.12.0+cpu"
    exact = EnvironmentSpec("3.11", conda_dependencies=["torch==2.13.0+cpu"], server_packages=[])
    assert exact.constraints()[0] == ["torchvision==0.28.0+cpu"]  # already a CPU build: nothing to hold
    too_new = EnvironmentSpec("3.11", pip_requirements=["torch>=2.14"], server_packages=[])
    constraints, warnings = too_new.constraints()
    assert constraints == ["torchvision==0.28.0+cpu"]
    assert "no local CPU build satisfies it" in warnings[0] and "Require torch==2.13.0+cpu" in warnings[0]
    chosen_build = EnvironmentSpec("3.11", pip_requirements=["torch==2.13.0+cu121"], server_packages=[])
    assert chosen_build.constraints()[0] == ["torchvision==0.28.0+cpu"]  # an explicit local build is the model's
    gpu = EnvironmentSpec("3.11", pip_requirements=["torch"], server_packages=[], accelerator="gpu")
    assert gpu.constraints() == ([], [])
    assert gpu.key() != EnvironmentSpec("3.11", pip_requirements=["torch"], server_packages=[]).key()
    assert EnvironmentSpec("3.12", pip_requirements=["torch"], server_packages=[]).constraints()[0] == [
        "torch==2.13.0+cpu"]


def test_without_local_cpu_builds_the_log_warns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UV_FIND_LINKS", str(tmp_path))
    constraints, warnings = EnvironmentSpec("3.11", pip_requirements=["torch"], server_packages=[]).constraints()
    assert constraints == [] and "a CUDA build of several GB, will be installed" in warnings[0]


def test_conda_xgboost_follows_the_accelerator() -> None:
    assert EnvironmentSpec("3.11", ["xgboost>=2.1"], server_packages=[]).requirements() == ["xgboost-cpu>=2.1"]
    assert EnvironmentSpec("3.11", ["xgboost"], server_packages=[], accelerator="gpu").requirements() == ["xgboost"]
    assert EnvironmentSpec("3.11", ["py-xgboost==1.7.6"], server_packages=[]).requirements() == ["xgboost==1.7.6"]
    with pytest.raises(errors.BuildError, match="accelerator 'tpu'"):
        EnvironmentSpec("3.11", accelerator="tpu")


@pytest.mark.parametrize(("version", "specifier", "expected"), [
    ("2.13.0+cpu", "==2.13.0", True), ("2.13.0+cpu", "==2.13.0+cpu", True), ("2.13.0+cpu", "==2.13.0+cu121", False),
    ("2.13.0+cpu", ">=2.0,<3", True), ("2.13.0+cpu", ">=2.14", False), ("2.13.0", "==2.13.*", True),
    ("2.13.1", "~=2.13.0", True), ("2.14.0", "~=2.13.0", False), ("1.0", "==1.0.0", True), ("2.0.0rc1", "<2.0.0", False),
    ("1.0.post1", ">1.0", False), ("3.2.0", "", True), ("1.9.1", "!=1.9.1", False),
])
def test_version_matching(version: str, specifier: str, expected: bool) -> None:
    assert satisfies(version, specifier) is expected


def test_best_match_picks_the_highest() -> None:
    assert best_match(["2.12.0+cpu", "2.13.0+cpu"], ">=2") == "2.13.0+cpu"
    assert best_match(["2.12.0+cpu"], ">=2.13") is None
