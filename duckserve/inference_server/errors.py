"""The inference server's exceptions, each with the HTTP status the server answers it with.

``duckserve.errors`` is not available inside a model environment, so the server keeps its own
small tree here; the SQL-side client translates these at its boundary.
"""

from __future__ import annotations


class ServerError(Exception):
    """Root of the inference server's errors; ``status_code`` is the HTTP answer."""

    status_code = 500
    headers: dict[str, str] = {}


class ProtocolError(ServerError, ValueError):
    """A request (or, on the client side, a response) does not follow the service-function protocol
    or the method's signature: not JSON, no ``data`` list, wrong row arity, a value of the wrong type,
    a missing or duplicate row index."""

    status_code = 400


class MissingInput(ProtocolError):
    """A request names its inputs and one of the method's is not among them."""


class InvalidParameters(ProtocolError):
    """A request's inference parameters (MLflow's ``params``) do not fit the method's: not an object,
    or a value of the wrong type."""


class UnknownMethod(ServerError, LookupError):
    """The URL names a method the model does not have."""

    status_code = 404


class Overloaded(ServerError):
    """The worker's queue is full; the client should retry after ``Retry-After`` seconds."""

    status_code = 429
    headers = {"Retry-After": "1"}


class ModelError(ServerError):
    """The model raised, or returned something that does not fit the method's signature."""

    status_code = 500


class ModelRefused(ServerError):
    """The model's own framework refused the call with an error of its protocol (an MLflow model's
    ``MlflowException``: its schema or parameter checks): answered with that error's status and
    ``fields`` (MLflow's ``error_code``, ``message``, ...) instead of a 500."""

    def __init__(self, status_code: int, fields: dict[str, object]) -> None:
        super().__init__(str(fields.get("message", "")))
        self.status_code = status_code
        self.fields = fields


class ModelNotReady(ServerError):
    """The model failed to load (the message says why)."""

    status_code = 503


class RequestTimeout(ServerError):
    """The request waited and ran longer than the server's request timeout."""

    status_code = 504
