"""The ingress's OpenAPI 3.1 document, derived from its route table (`app.ROUTES`)."""

from __future__ import annotations

from typing import Any

_ERROR = {"type": "object", "required": ["error"],
          "properties": {"error": {"type": "string"}, "code": {"type": "integer"}}}
#: the instance's errors on MLflow's routes are MLflow's (the ingress's own refusals stay `_ERROR`)
_MLFLOW_ERROR = {"anyOf": [_ERROR, {"type": "object", "required": ["error_code", "message"], "properties": {
    "error_code": {"type": "string"}, "message": {"type": "string"}, "sqlstate": {"type": "string"},
    "error_class": {"type": "string"}, "stack_trace": {"type": "string"}}}]}
_REASONS = {200: "the answer", 202: "accepted: poll with GET and the same headers", 400: "a malformed request",
            401: "no valid token", 403: "the token's role may not call this service", 404: "no such route, model or batch",
            405: "method not allowed", 408: "the request arrived too slowly", 413: "the request body is too large",
            415: "unsupported content type or encoding", 429: "too many requests in flight; retry after Retry-After",
            431: "the request head is too large", 502: "an instance broke the connection",
            503: "no instance is available", 504: "the instance did not answer in time"}
_ROWS = {"type": "array", "items": {"type": "array", "minItems": 1,
                                    "items": {"type": ["number", "string", "boolean", "null", "array", "object"]}}}
_BODIES: dict[str, dict[str, Any]] = {
    "snowflake": {"application/json": {"schema": {
        "type": "object", "required": ["data"],
        "properties": {"data": _ROWS},
        "description": "rows [row_index, arg1, ...]; answered {\"data\": [[row_index, result], ...]}"}}},
    "mlflow": {
        "application/json": {"schema": {
            "type": "object", "minProperties": 1, "maxProperties": 2,
            "properties": {
                "dataframe_split": {"type": "object", "required": ["data"], "properties": {
                    "columns": {"type": "array", "items": {"type": "string"}}, "data": _ROWS,
                    "index": {"type": "array"}}},
                "dataframe_records": {"type": "array", "items": {"type": "object"}},
                "instances": {"type": "array"},
                "inputs": {"type": ["array", "object"]},
                "params": {"description": "passed to the model, which checks them against its parameters"},
            },
            "description": "exactly one of dataframe_split, dataframe_records, instances, inputs; answered "
                           "{\"predictions\": [...]}"}},
        "text/csv": {"schema": {"type": "string"}},
        "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
    },
    "v2": {"application/json": {"schema": {
        "type": "object", "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": {"type": "object", "properties": {"method": {"type": "string"},
                                                            "binary_data_output": {"type": "boolean"}}},
            "inputs": {"type": "array", "items": {
                "type": "object", "required": ["name", "shape", "datatype"],
                "properties": {"name": {"type": "string"},
                               "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                               "datatype": {"type": "string", "enum": [
                                   "BOOL", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32",
                                   "UINT64", "FP16", "FP32", "FP64", "BYTES"]},
                               "parameters": {"type": "object"}, "data": {"type": "array"}}}},
            "outputs": {"type": "array", "items": {"type": "object", "required": ["name"], "properties": {
                "name": {"type": "string"}, "parameters": {"type": "object"}}}},
        }}}},
}
_SNOWFLAKE_HEADERS = ("sf-external-function-query-batch-id", "sf-external-function-format",
                      "sf-external-function-format-version", "sf-external-function-current-query-id")


def document(routes: Any, service: str, name: str, functions: list[str]) -> dict[str, Any]:
    """The document; ``name`` (the service's own name) and ``functions`` (its methods, when known)
    become the values of the path parameters that take them."""
    methods = sorted({f.lower().replace("_", "-") for f in functions} | {f.lower() for f in functions})
    choices: dict[str, dict[str, Any]] = {"model": {"type": "string", "enum": [name]},
                                          "endpoint": {"type": "string", "enum": [name.lower()]}}
    if methods:
        choices["method"] = {"type": "string", "enum": methods}
    paths: dict[str, Any] = {}
    for route in routes:
        for method in route.methods:
            operation: dict[str, Any] = {
                "summary": route.summary,
                "operationId": f"{method.lower()}_{route.handler}_{len(paths)}",
                "responses": {str(code): {"description": _REASONS.get(code, "answer"),
                                          "content": {route.answers if code < 400 else "application/json": {
                                              "schema": _error_schema(route, code)}}}
                              for code in route.statuses},
            }
            parameters = [{"name": param, "in": "path", "required": True,
                           "schema": choices.get(param, {"type": "string", "minLength": 1})}
                          for param in _names(route.template)]
            if route.handler in ("service_function", "poll"):
                parameters += [{"name": h, "in": "header", "required": False, "schema": {"type": "string"}}
                               for h in _SNOWFLAKE_HEADERS]
            if route.handler == "invocations":
                parameters.append({"name": "method", "in": "query", "required": False, "schema": {"type": "string"}})
            if parameters:
                operation["parameters"] = parameters
            if route.body is not None and method == "POST":
                operation["requestBody"] = {"required": True, "content": _BODIES[route.body]}
            if route.public:
                operation["security"] = []
            paths.setdefault(route.template, {})[method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": f"duckserve ingress of service {service}", "version": "1"},
        "components": {"securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer",
                       "description": "a programmatic access token; 'Snowflake Token=\"<secret>\"' works too"}}},
        "security": [{"bearer": []}],
        "paths": paths,
    }


def _error_schema(route: Any, code: int) -> dict[str, Any]:
    if code < 400:
        return {}
    return _MLFLOW_ERROR if route.handler == "invocations" else _ERROR


def _names(template: str) -> list[str]:
    import re

    return re.findall(r"\{(\w+)\}", template)
