"""The model registry's Python API, mirroring ``snowflake.ml.registry``.

    from duckserve.registry import Registry
    reg = Registry(conn)                       # or Registry(session=conn, database_name=..., schema_name=...)
    mv = reg.log_model(model, model_name="forecast", version_name="v1", sample_input_data=df)
    mv.create_service(service_name="forecast_svc", service_compute_pool="mypool", image_repo="my_repo")
    mv.run(df, function_name="predict", service_name="forecast_svc")
"""

from __future__ import annotations

from copy import copy
from typing import TYPE_CHECKING, Any

from duckserve.engine.account import display_key
from duckserve.engine.names import ObjectName, parse_name, parse_simple_name
from duckserve.errors import ProgrammingError

if TYPE_CHECKING:
    import pandas as pd

    from duckserve.engine.catalog import CatalogObject
    from duckserve.sql.connection import Connection


class Registry:
    """The models of one database.schema (the connection's current one by default)."""

    def __init__(self, session: Connection | None = None, *, database_name: str | None = None,
                 schema_name: str | None = None, conn: Connection | None = None) -> None:
        connection = session if session is not None else conn
        if connection is None:
            raise ProgrammingError("Registry needs a connection: Registry(duckserve.connect(...))")
        self.connection = connection
        # a copy of the session, so the registry's namespace does not change the connection's
        self.session = copy(connection.session)
        if database_name:
            self.session.database = parse_simple_name(database_name, "database_name")
        if schema_name:
            self.session.schema = parse_simple_name(schema_name, "schema_name")
        self.session.role = connection.session.role

    @property
    def _services(self) -> Any:
        return self.connection.services

    def _sync_role(self) -> None:
        # the registry acts with the connection's current role (USE ROLE applies to it too)
        self.session.role = self.connection.session.role
        self.session.warehouse = self.connection.session.warehouse

    def log_model(self, model: Any, *, model_name: str, version_name: str | None = None,
                  comment: str | None = None, conda_dependencies: list[str] | None = None,
                  pip_requirements: list[str] | None = None, python_version: str | None = None,
                  signatures: dict[str, Any] | None = None, sample_input_data: Any = None,
                  code_paths: list[str] | None = None, options: dict[str, Any] | None = None,
                  target_platforms: list[str] | None = None, metrics: dict[str, Any] | None = None,
                  **kwargs: Any) -> ModelVersion:
        """Save ``model`` as a new version; dependencies default to the framework pinned to the
        installed version, plus ``pip_requirements`` and ``conda_dependencies``."""
        self._sync_role()
        if python_version and python_version != _current_python():
            raise ProgrammingError(
                f"python_version {python_version} differs from this session's Python {_current_python()}: a model "
                "is pickled by the Python that logs it; log it from that Python instead"
            )
        options = dict(options or {})
        model_obj, version = self._services.models.log(
            self.session, model, parse_name(model_name, "model_name"), version_name, sample_input=sample_input_data,
            signatures=signatures, pip_requirements=pip_requirements, conda_dependencies=conda_dependencies,
            code_paths=code_paths, comment=comment, target_methods=options.pop("target_methods", None),
            options=options, extra_pip_requirements=kwargs.get("extra_pip_requirements"),
            conda_env=kwargs.get("conda_env"), signature=kwargs.get("signature"),
            input_example=kwargs.get("input_example"),
        )
        return ModelVersion(self, model_obj, version)

    def get_model(self, model_name: str) -> Model:
        self._sync_role()
        model = self._services.models.require_model(self.session, parse_name(model_name, "model_name"))
        return Model(self, model)

    def models(self) -> list[Model]:
        self._sync_role()
        rows = self._services.models.show_models(self.session)
        return [self.get_model(f"{r[3]}.{r[4]}.{r[1]}") for r in rows.rows]

    def show_models(self) -> pd.DataFrame:
        self._sync_role()
        return _frame(self._services.models.show_models(self.session))

    def delete_model(self, model_name: str) -> None:
        self._sync_role()
        self._services.models.delete_model(self.session, parse_name(model_name, "model_name"))


class Model:
    def __init__(self, registry: Registry, model: CatalogObject) -> None:
        self.registry = registry
        self._model = model

    @property
    def name(self) -> str:
        return self._model.name

    @property
    def fully_qualified_name(self) -> str:
        return display_key(self._model)

    def _refresh(self) -> CatalogObject:
        registry = self.registry
        registry._sync_role()
        found = registry._services.models.require_model(registry.session, ObjectName(
            self._model.name, self._model.schema, self._model.database))
        self._model = found
        return found

    def version(self, version_name: str) -> ModelVersion:
        model = self._refresh()
        version, _ = self.registry._services.models.version_record(model, version_name)
        return ModelVersion(self.registry, model, version)

    @property
    def default(self) -> ModelVersion:
        model = self._refresh()
        version, _ = self.registry._services.models.version_record(model, None)
        return ModelVersion(self.registry, model, version)

    def versions(self) -> list[ModelVersion]:
        model = self._refresh()
        return [ModelVersion(self.registry, model, v) for v in model.props.get("versions", {})]

    def show_versions(self) -> pd.DataFrame:
        model = self._refresh()
        return _frame(self.registry._services.models.show_versions(self.registry.session, display_key(model)))

    def delete_version(self, version_name: str) -> None:
        model = self._refresh()
        self.registry._services.models.delete_version(self.registry.session, display_key(model), version_name)


class ModelVersion:
    def __init__(self, registry: Registry, model: CatalogObject, version: str) -> None:
        self.registry = registry
        self._model = model
        self.version_name = version

    def __repr__(self) -> str:
        return f"ModelVersion({self.fully_qualified_model_name!r}, {self.version_name!r})"

    @property
    def model_name(self) -> str:
        return self._model.name

    @property
    def fully_qualified_model_name(self) -> str:
        return display_key(self._model)

    @property
    def _store(self) -> Any:
        self.registry._sync_role()
        return self.registry._services.models

    def _manifest(self) -> Any:
        return self._store.manifest(self._model, self.version_name)

    def show_functions(self) -> list[dict[str, Any]]:
        """Each method with its signature, as snowflake.ml's show_functions gives them."""
        out = []
        for method in self._manifest().methods:
            out.append({
                "name": method.name.upper(), "target_method": method.target_method,
                "signature": {"inputs": [f.__dict__.copy() for f in method.inputs],
                              "outputs": [f.__dict__.copy() for f in method.outputs]},
                "arguments": method.sql_arguments, "return_type": method.sql_return_type,
            })
        return out

    def create_service(self, *, service_name: str, service_compute_pool: str, image_repo: str,
                       ingress_enabled: bool = False, max_instances: int = 1, min_instances: int | None = None,
                       cpu_requests: str | None = None, memory_requests: str | None = None,
                       gpu_requests: str | int | None = None, num_workers: int | None = None,
                       max_batch_rows: int | None = None, image_build_compute_pool: str | None = None,
                       force_rebuild: bool = False, block: bool = True, **kwargs: Any) -> dict[str, Any]:
        """Deploy this version as a service (idempotent: a second call reuses what exists).

        Beyond the seed's arguments: ``auto_suspend_secs`` (idle time before the service suspends
        itself; default 1800, 0 never) and ``max_queue`` (requests each inference worker queues
        before answering 429) and ``target_concurrency`` (requests one instance should hold before the
        autoscaler adds one; default ``num_workers``)."""
        services = self.registry._services
        self.registry._sync_role()
        service = parse_name(service_name, "service_name")
        return services.create_service(
            self.registry.session, model_name=ObjectName(self._model.name, self._model.schema, self._model.database),
            version=self.version_name, service_name=service, service_compute_pool=service_compute_pool,
            image_repo=image_repo, ingress_enabled=ingress_enabled, max_instances=max_instances,
            min_instances=min_instances, cpu_requests=cpu_requests, memory_requests=memory_requests,
            gpu_requests=gpu_requests, num_workers=num_workers, max_batch_rows=max_batch_rows,
            image_build_compute_pool=image_build_compute_pool, force_rebuild=force_rebuild, block=block,
            auto_suspend_secs=kwargs.get("auto_suspend_secs"), max_queue=kwargs.get("max_queue"),
            target_concurrency=kwargs.get("target_concurrency"),
        )

    def update_service(self, service_name: str) -> None:
        """Move a running service of this model to this version without downtime (as ALTER SERVICE s SET
        MODEL_VERSION = '<this version>'): new instances start beside the old ones, calls move once
        they are ready, then the old ones stop. A version that fails to build or load leaves the old
        one serving and raises, saying how to retry or roll back."""
        services = self.registry._services
        self.registry._sync_role()
        service = services.get(self.registry.session, parse_name(service_name, "service_name"))
        if service.props.get("model") != self._model.key:
            raise ProgrammingError(
                f"service {display_key(service)} runs model {service.props.get('model')}, not "
                f"{self.fully_qualified_model_name}: update it with a version of its own model"
            )
        services.update_version(self.registry.session, service.key, self.version_name)

    def list_services(self) -> pd.DataFrame:
        services = self.registry._services
        self.registry._sync_role()
        rows = services.show_services(self.registry.session, jobs=False)
        model_i, version_i = rows.columns.index("model_name"), rows.columns.index("model_version")
        rows.rows = [r for r in rows.rows if r[model_i] == self._model.key and r[version_i] == self.version_name]
        return _frame(rows)

    def delete_service(self, service_name: str) -> None:
        services = self.registry._services
        self.registry._sync_role()
        service = services.get(self.registry.session, parse_name(service_name, "service_name"))
        if service.props.get("model") != self._model.key or service.props.get("version") != self.version_name:
            raise ProgrammingError(
                f"service {display_key(service)} does not run {self.fully_qualified_model_name} version "
                f"{self.version_name}: it runs {service.props.get('model')} version {service.props.get('version')}"
            )
        services.drop_service(self.registry.session, service.key)

    def run(self, X: Any, *, function_name: str | None = None, service_name: str | None = None) -> pd.DataFrame:
        """Call a method on ``X`` (a DataFrame, array or list) and return ``X`` with the outputs added.
        With ``service_name`` the rows go to that service through the service-function path; without
        it the model runs in the warehouse (in this process), when its dependencies allow that."""
        import pandas as pd
        import pyarrow as pa

        manifest = self._manifest()
        if function_name is None:
            if len(manifest.methods) != 1:
                raise ProgrammingError(
                    f"model {self.fully_qualified_model_name} has several functions "
                    f"({', '.join(m.name for m in manifest.methods)}): pass function_name=..."
                )
            method = manifest.methods[0]
        else:
            try:
                method = manifest.method(function_name)
            except KeyError:
                raise ProgrammingError(
                    f"model {self.fully_qualified_model_name} has no function {function_name}: it has "
                    f"{', '.join(m.name for m in manifest.methods)}"
                ) from None
        frame = _input_frame(X, method)
        checked = _checked_inputs(frame, method, self.fully_qualified_model_name)
        if service_name is None:
            return _with_outputs(X, checked, self._run_in_warehouse(method, checked))
        services = self.registry._services
        session = self.registry.session
        self.registry._sync_role()
        service = services.get(session, parse_name(service_name, "service_name"))
        client = services.client(session, service, method)
        inputs = pa.Table.from_pandas(checked, preserve_index=False)
        outputs = client.call_table(inputs).to_pandas()
        result = X.copy() if isinstance(X, pd.DataFrame) else frame.copy()
        for column in outputs.columns:
            result[column] = outputs[column].to_numpy() if outputs[column].dtype != object else list(outputs[column])
        return result

    def _run_in_warehouse(self, method: Any, frame: pd.DataFrame) -> pd.DataFrame:
        from duckserve.engine import warehouse

        store = self._store
        _, record = store.version_record(self._model, self.version_name)
        if warehouse.WAREHOUSE not in record.get("runnable_in", []):
            raise warehouse.not_in_warehouse(self.fully_qualified_model_name, self.version_name,
                                             record.get("warehouse_reason") or "it was logged for SPCS only")
        model, lock = warehouse.load(store.package_path(self._model, self.version_name))
        return warehouse.call_frame(model, lock, self.fully_qualified_model_name, method, frame)


def _with_outputs(X: Any, frame: pd.DataFrame, outputs: pd.DataFrame) -> pd.DataFrame:
    """``X`` (or the input frame, when ``X`` is no DataFrame) with the output columns added."""
    import pandas as pd

    result = X.copy() if isinstance(X, pd.DataFrame) else frame.copy()
    for column in outputs.columns:
        result[column] = outputs[column].to_numpy() if outputs[column].dtype != object else list(outputs[column])
    return result


def _checked_inputs(frame: pd.DataFrame, method: Any, label: str) -> pd.DataFrame:
    """The signature's input columns converted to its types (pandas' nullable dtypes included), before
    any row is sent: a value that does not fit names the function, the argument and the type."""
    from duckserve.inference_server.errors import ProtocolError
    from duckserve.inference_server.handlers.base import conform_inputs

    try:
        return conform_inputs(frame, method)
    except ProtocolError as exc:
        raise ProgrammingError(f"{label}!{method.name.upper()}: {exc}") from None


def _input_frame(X: Any, method: Any) -> pd.DataFrame:
    """The input as a DataFrame whose columns carry the signature's input names."""
    import numpy as np
    import pandas as pd

    names = [f.name for f in method.inputs]
    if isinstance(X, pd.DataFrame):
        if all(n in X.columns for n in names):
            return X
        if len(X.columns) == len(names):
            return X.set_axis(names, axis=1)
        raise ProgrammingError(f"the input has columns {list(X.columns)}; function {method.name} takes {names}")
    if isinstance(X, np.ndarray):
        X = X.reshape(-1, 1) if X.ndim == 1 else X
        return pd.DataFrame(X, columns=names) if X.shape[1] == len(names) else pd.DataFrame({names[0]: list(X)})
    if isinstance(X, (list, tuple)):
        if len(names) == 1:
            return pd.DataFrame({names[0]: list(X)})
        return pd.DataFrame(list(X), columns=names)
    raise ProgrammingError(f"cannot run on a {type(X).__name__}: pass a pandas DataFrame, a numpy array or a list")


def _frame(rows: Any) -> pd.DataFrame:
    from duckserve.sql.connection import rows_to_arrow

    return rows_to_arrow(rows).to_pandas()


def _current_python() -> str:
    import sys

    return f"{sys.version_info.major}.{sys.version_info.minor}"
