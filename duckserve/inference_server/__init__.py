"""What runs inside a service instance: load a model package, answer the service-function protocol.

Installed into every model environment, so it imports nothing from ``duckserve.sql`` or
``duckserve.engine`` and needs only starlette, uvicorn, pandas, numpy, pyarrow, cloudpickle and the
model's own libraries. Importing this package is cheap: submodules load their dependencies lazily.

- `duckserve.inference_server.manifest`: the package manifest (`Manifest`, `MethodSpec`, `FeatureSpec`)
- `duckserve.inference_server.custom`: `CustomModel`, `ModelContext`, `inference_api`
- `duckserve.inference_server.handlers`: `handler_for`, `get_handler`, `save_package`, `load_package`
- `duckserve.inference_server.protocol`: encode/decode of the JSON and Arrow forms, both sides
- `duckserve.inference_server.app`: the Starlette app; ``python -m duckserve.inference_server`` serves it
"""
