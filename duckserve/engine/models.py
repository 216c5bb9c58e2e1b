"""The model registry's storage: model packages on disk, models and versions in the catalog.

A model is a schema object (kind MODEL) whose ``props["versions"]`` maps each version name to
its record; the package of a version lives in ``home/models/<DB>/<SCHEMA>/<MODEL>/<VERSION>``.
A version is written to a temporary directory and renamed into place only when it is complete,
and the catalog records it in the same step, so a failed log_model leaves nothing behind.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from duckserve.engine import access as A
from duckserve.engine.account import Account, Session, display_key
from duckserve.engine.catalog import CatalogObject, now, parse_timestamp
from duckserve.engine.names import ObjectName, display
from duckserve.engine.results import Rows, like_matcher
from duckserve.errors import IntegrityError, ObjectNotFound, ProgrammingError
from duckserve.inference_server.manifest import CODE_DIR, MODEL_DIR, Manifest, MethodSpec


def python_version() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


class ModelStore:
    def __init__(self, account: Account) -> None:
        self.account = account
        self.root = account.home / "models"

    # -- lookups ----------------------------------------------------------------------------------
    def get(self, session: Session, name: str | ObjectName, missing_ok: bool = False) -> CatalogObject | None:
        if isinstance(name, str):
            from duckserve.engine.names import parse_name

            name = parse_name(name, "model name")
        return self.account.find(A.MODEL, name, session, missing_ok=missing_ok)

    def require_model(self, session: Session, name: str | ObjectName) -> CatalogObject:
        model = self.get(session, name)
        assert model is not None
        if not self.account.visible(session, model):
            self.account.require(session, model, ("USAGE",), f"use model {display_key(model)}")
        return model

    def version_record(self, model: CatalogObject, version: str | None) -> tuple[str, dict[str, Any]]:
        versions: dict[str, dict[str, Any]] = model.props.get("versions", {})
        if version is None:
            version = model.props.get("default_version")
        else:
            version = _version_name(version)
        if version is None or version not in versions:
            known = ", ".join(versions) or "none"
            raise ObjectNotFound(
                f"model {display_key(model)} has no version {version}: its versions are {known} "
                f"(SHOW VERSIONS IN MODEL {display_key(model)})"
            )
        return version, versions[version]

    def package_path(self, model: CatalogObject, version: str) -> Path:
        return self.root / model.database / model.schema / model.name / version

    def manifest(self, model: CatalogObject, version: str) -> Manifest:
        return Manifest.read(self.package_path(model, version))

    # -- logging ----------------------------------------------------------------------------------
    def log(self, session: Session, model: Any, name: ObjectName, version: str | None, *,
            sample_input: Any = None, signatures: dict[str, Any] | None = None,
            pip_requirements: list[str] | None = None, conda_dependencies: list[str] | None = None,
            code_paths: list[str] | None = None, comment: str | None = None,
            target_methods: list[str] | None = None, options: dict[str, Any] | None = None,
            extra_pip_requirements: list[str] | None = None, conda_env: dict[str, Any] | str | Path | None = None,
            signature: Any = None, input_example: Any = None) -> tuple[CatalogObject, str]:
        """Save ``model`` as a new version of model ``name``; returns the model and the version name.

        Dependencies: the model kind's own (its framework pinned to the installed version; for an
        MLflow model, what it recorded), less the packages the user names, plus ``conda_dependencies``,
        ``pip_requirements``, ``extra_pip_requirements`` and a ``conda_env`` (a dict or a conda.yaml
        path). For an MLflow model, ``pip_requirements`` and ``conda_env`` replace what it recorded,
        as they would in MLflow. ``signature`` is the signature of the only method, ``input_example``
        another name for ``sample_input``. Where the version can run (the warehouse, SPCS) is decided
        here, by `duckserve.engine.warehouse.eligibility`.
        """
        import warnings

        from duckserve.engine.warehouse import eligibility
        from duckserve.inference_server.handlers import handler_for
        from duckserve.model_signature import to_method_spec

        if sample_input is None and input_example is not None:
            sample_input = input_example

        full = self.account.qualify(name, session)
        existing = self.account.catalog.get(A.MODEL, full.name, full.database, full.schema)
        if existing is None:
            self.account.require_account(session, "CREATE MODEL", f"create model {full.qualified}")
        else:
            self.account.require(session, existing, (A.OWNERSHIP,), f"add a version to model {full.qualified}")
        try:
            handler = handler_for(model)
        except TypeError as exc:
            raise ProgrammingError(f"model {full.qualified}: {exc}") from None
        methods = list(target_methods or handler.default_methods(model))
        if not methods:
            raise ProgrammingError(f"model {full.qualified}: the {handler.name} model has no method to serve")
        given = dict(signatures or {})
        if signature is not None:
            if len(methods) != 1:
                raise ProgrammingError(
                    f"model {full.qualified}: signature= describes one method, and the model has "
                    f"{', '.join(methods)}: pass signatures={{method: signature, ...}}"
                )
            given[methods[0]] = signature
        specs: list[MethodSpec] = []
        for method in methods:
            try:
                if method in given:
                    spec = to_method_spec(method, given[method])
                elif sample_input is None and handler.name != "mlflow":
                    raise ProgrammingError(
                        f"model {full.qualified}: cannot infer the signature of {method} without sample_input_data; "
                        "pass sample_input_data=... or signatures={...}"
                    )
                else:
                    spec = handler.infer_signature(model, method, sample_input)
            except (ValueError, TypeError, KeyError) as exc:
                raise ProgrammingError(f"model {full.qualified}, method {method}: {exc}") from exc
            specs.append(spec)
        default_conda, default_pip = handler.default_dependencies(model)
        env_conda, env_pip = _conda_env(conda_env) if conda_env is not None else ([], [])
        user_conda = [*(conda_dependencies or []), *env_conda]
        user_pip = [*(pip_requirements or []), *(extra_pip_requirements or []), *env_pip]
        if handler.name == "mlflow" and (pip_requirements or conda_env is not None):
            # MLflow's meaning: these replace the requirements the model recorded (mlflow itself stays)
            default_conda = []
            default_pip = [r for r in default_pip if _package_key(r) == "mlflow-skinny"]
        named = {_package_key(r) for r in [*user_conda, *user_pip]}
        conda = [r for r in default_conda if _package_key(r) not in named] + user_conda
        pip = [r for r in default_pip if _package_key(r) not in named] + user_pip
        log_warnings: list[str] = []
        if conda_dependencies and (pip_requirements or extra_pip_requirements):
            log_warnings.append(
                f"model {full.qualified}: both conda_dependencies and pip_requirements are set. The environment is "
                "built even when the two sets are incompatible (they are not resolved together, and conda's "
                "versions win), which can make the service behave unexpectedly: use only conda_dependencies or "
                "only pip_requirements"
            )
        for message in log_warnings:
            warnings.warn(message, UserWarning, stacklevel=3)

        version_name = _version_name(version) if version else self._next_version(existing)
        if existing is not None and version_name in existing.props.get("versions", {}):
            raise ProgrammingError(
                f"model {full.qualified} already has version {version_name}: choose another version_name "
                f"or delete it first"
            )
        target = self.root / full.database / full.schema / full.name / version_name
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{version_name}-", dir=target.parent))
        try:
            (staging / MODEL_DIR).mkdir()
            try:
                info = handler.save(model, staging / MODEL_DIR, sample_input) or {}
            except (ValueError, TypeError) as exc:
                raise ProgrammingError(f"model {full.qualified}: {exc}") from exc
            copied = _copy_code_paths(code_paths or [], staging / CODE_DIR)
            model_python = str(info.get("python_version") or python_version())
            where = eligibility(conda, user_pip, [r for r in pip if r not in user_pip], model_python)
            manifest = Manifest(
                name=full.name, version=version_name, handler=handler.name, methods=specs,
                python_version=model_python, conda_dependencies=conda, pip_requirements=pip,
                artifacts=dict(info.get("artifacts", {})), code_paths=copied,
                options={**dict(info.get("options", {})), **(options or {})}, comment=comment,
            )
            manifest.write(staging)
            with self.account.catalog.transaction():
                current = self.account.catalog.get(A.MODEL, full.name, full.database, full.schema)
                if current is not None and version_name in current.props.get("versions", {}):
                    raise ProgrammingError(f"model {full.qualified} already has version {version_name}")
                if target.exists():
                    shutil.rmtree(target)
                staging.rename(target)
                record = {"created_on": now().isoformat(), "comment": comment, "handler": handler.name,
                          "functions": [m.name for m in specs], "python_version": manifest.python_version,
                          "conda_dependencies": conda, "pip_requirements": pip,
                          "runnable_in": where.runnable_in, "warehouse_reason": where.reason or None,
                          "warnings": log_warnings}
                if current is None:
                    current = CatalogObject(A.MODEL, full.name, owner=session.role, database=full.database,
                                            schema=full.schema, comment=comment,
                                            props={"versions": {version_name: record},
                                                   "default_version": version_name, "model_type": handler.name})
                    self.account.catalog.insert(current)
                else:
                    current.props.setdefault("versions", {})[version_name] = record
                    self.account.catalog.update(current)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return current, version_name

    def _next_version(self, model: CatalogObject | None) -> str:
        taken = set(model.props.get("versions", {})) if model is not None else set()
        n = 1
        while f"V{n}" in taken:
            n += 1
        return f"V{n}"

    # -- deleting ---------------------------------------------------------------------------------
    def _services_using(self, model: CatalogObject, version: str | None = None) -> list[CatalogObject]:
        return [s for s in self.account.catalog.objects(A.SERVICE)
                if s.props.get("model") == model.key and (version is None or s.props.get("version") == version)]

    def delete_model(self, session: Session, name: str | ObjectName, if_exists: bool = False) -> Rows:
        model = self.get(session, name, missing_ok=if_exists)
        if model is None:
            return Rows.status("Drop statement executed successfully (model already dropped).")
        self.account.require(session, model, (A.OWNERSHIP,), f"drop model {display_key(model)}")
        users = self._services_using(model)
        if users:
            names = ", ".join(display_key(s) for s in users)
            raise IntegrityError(
                f"model {display_key(model)} is used by service {names}: drop the service first "
                f"(DROP SERVICE {display_key(users[0])})"
            )
        self.account.catalog.delete(model)
        shutil.rmtree(self.root / model.database / model.schema / model.name, ignore_errors=True)
        return Rows.status(f"{display_key(model)} successfully dropped.")

    def delete_version(self, session: Session, name: str | ObjectName, version: str) -> Rows:
        model = self.get(session, name)
        assert model is not None
        self.account.require(session, model, (A.OWNERSHIP,), f"drop a version of model {display_key(model)}")
        version, _ = self.version_record(model, version)
        users = self._services_using(model, version)
        if users:
            raise IntegrityError(
                f"version {version} of model {display_key(model)} is used by service {display_key(users[0])}: "
                f"drop the service first"
            )
        if len(model.props["versions"]) == 1:
            return self.delete_model(session, name)
        del model.props["versions"][version]
        if model.props.get("default_version") == version:
            model.props["default_version"] = sorted(model.props["versions"])[-1]
        self.account.catalog.update(model)
        shutil.rmtree(self.package_path(model, version), ignore_errors=True)
        return Rows.status("Statement executed successfully.")

    def set_default_version(self, session: Session, name: str | ObjectName, version: str) -> Rows:
        model = self.get(session, name)
        assert model is not None
        self.account.require(session, model, (A.OWNERSHIP,), f"alter model {display_key(model)}")
        version, _ = self.version_record(model, version)
        model.props["default_version"] = version
        self.account.catalog.update(model)
        return Rows.status("Statement executed successfully.")

    # -- SHOW -------------------------------------------------------------------------------------
    def show_models(self, session: Session, like: str | None = None) -> Rows:
        matcher = like_matcher(like)
        records = []
        for model in self.account.catalog.objects(A.MODEL):
            if (matcher and not matcher.match(model.name)) or not self.account.visible(session, model):
                continue
            records.append({
                "created_on": model.created_on, "name": model.name, "model_type": model.props.get("model_type"),
                "database_name": model.database, "schema_name": model.schema, "comment": model.comment,
                "owner": model.owner, "default_version_name": model.props.get("default_version"),
                "versions": ",".join(model.props.get("versions", {})), "aliases": None,
            })
        columns = ("created_on", "name", "model_type", "database_name", "schema_name", "comment", "owner",
                   "default_version_name", "versions", "aliases")
        return Rows.of(columns, records, {"comment": "VARCHAR", "aliases": "VARCHAR", "model_type": "VARCHAR",
                                          "default_version_name": "VARCHAR", "versions": "VARCHAR"})

    def show_versions(self, session: Session, name: str | ObjectName, like: str | None = None) -> Rows:
        model = self.require_model(session, name)
        matcher = like_matcher(like)
        records = []
        for version, record in model.props.get("versions", {}).items():
            if matcher and not matcher.match(version):
                continue
            deps = {"conda": record.get("conda_dependencies", []), "pip": record.get("pip_requirements", [])}
            records.append({
                "created_on": parse_timestamp(record["created_on"]), "name": version, "aliases": None,
                "comment": record.get("comment"), "database_name": model.database, "schema_name": model.schema,
                "model_name": model.name,
                "is_default_version": "true" if model.props.get("default_version") == version else "false",
                "functions": ",".join(record.get("functions", [])), "model_type": record.get("handler"),
                "python_version": record.get("python_version"), "dependencies": _json(deps),
                "runnable_in": ",".join(record.get("runnable_in", ["SPCS"])),
                "warehouse_reason": record.get("warehouse_reason"),
                "services": ",".join(display_key(s) for s in self._services_using(model, version)),
            })
        columns = ("created_on", "name", "aliases", "comment", "database_name", "schema_name", "model_name",
                   "is_default_version", "functions", "model_type", "python_version", "dependencies",
                   "runnable_in", "warehouse_reason", "services")
        return Rows.of(columns, records, {c: "VARCHAR" for c in ("aliases", "comment", "services",
                                                                 "warehouse_reason")})

    def show_functions(self, session: Session, name: str | ObjectName, version: str | None) -> Rows:
        model = self.require_model(session, name)
        version, _ = self.version_record(model, version)
        manifest = self.manifest(model, version)
        return function_rows(manifest.methods)


def function_rows(methods: list[MethodSpec]) -> Rows:
    records = []
    for method in methods:
        args = ", ".join(f"{display(f.name.upper()) if f.name.isidentifier() else display(f.name)} {f.duckdb_type}"
                         for f in method.inputs)
        records.append({
            "name": method.name.upper(), "arguments": f"{method.name.upper()}({args}) RETURN {method.sql_return_type}",
            "return_type": method.sql_return_type, "target_method": method.target_method,
            "inputs": _json([{"name": f.name, "type": f.dtype, "shape": f.shape} for f in method.inputs]),
            "outputs": _json([{"name": f.name, "type": f.dtype, "shape": f.shape} for f in method.outputs]),
        })
    return Rows.of(("name", "arguments", "return_type", "target_method", "inputs", "outputs"), records)


def _version_name(version: str) -> str:
    from duckserve.engine.names import parse_simple_name

    return parse_simple_name(str(version), "version_name")


def _package_key(requirement: str) -> str:
    """The PyPI-side name a conda or pip requirement installs, for matching users' entries with
    defaults: ``conda-forge::pytorch=2.1`` and ``torch`` are both ``torch``."""
    from duckserve.engine.environments import CONDA_TO_PYPI, CONDA_VARIANTS, canonical_name

    name = requirement.split("::")[-1].strip()
    for separator in "<>=!~[ ;@":
        name = name.split(separator)[0]
    name = canonical_name(name.strip())
    if name in CONDA_VARIANTS:
        return "xgboost"
    if name == "xgboost-cpu":
        return "xgboost"
    if name == "mlflow":
        return "mlflow-skinny"
    return CONDA_TO_PYPI.get(name, name)


def _conda_env(conda_env: dict[str, Any] | str | Path) -> tuple[list[str], list[str]]:
    """(conda dependencies, pip requirements) of a conda environment, given as a dict or a conda.yaml
    path. Its conda packages take the environment's first channel (an explicit channel)."""
    data: Any = conda_env
    if not isinstance(conda_env, dict):
        path = Path(conda_env)
        if not path.is_file():
            raise ProgrammingError(f"conda_env {str(conda_env)!r} is not a file: pass a dict or a conda.yaml path")
        import yaml

        data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ProgrammingError("conda_env must be a mapping with channels and dependencies (as in conda.yaml)")
    channels = [str(c) for c in data.get("channels") or [] if c != "nodefaults"]
    conda: list[str] = []
    pip: list[str] = []
    for entry in data.get("dependencies") or []:
        if isinstance(entry, dict):
            pip.extend(str(p) for p in entry.get("pip") or [])
            continue
        text = str(entry).strip()
        bare = text.split("::")[-1].split("=")[0].split("<")[0].split(">")[0].strip().lower()
        if bare in ("python", "pip"):
            continue
        conda.append(text if "::" in text or not channels else f"{channels[0]}::{text}")
    return conda, pip


def _copy_code_paths(paths: list[str], target: Path) -> list[str]:
    copied = []
    for path in paths:
        source = Path(path)
        if not source.exists():
            raise ProgrammingError(f"code_paths entry {path!r} does not exist: pass files or directories that exist")
        target.mkdir(exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target / source.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, target / source.name)
        copied.append(source.name)
    return copied




def _json(value: Any) -> str:
    import json

    return json.dumps(value)
