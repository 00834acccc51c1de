"""One exception tree for the whole platform.

Every error carries the HTTP status the API answers with, the exit code the CLI exits with and a
stable machine-readable ``code``. The API's edge handler and the CLI's top level are the only places
that turn them into responses; everything else raises.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ModelyardError(Exception):
    """Root of every error modelyard raises on purpose."""

    http_status: ClassVar[int] = 500
    exit_code: ClassVar[int] = 1
    code: ClassVar[str] = "internal"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body


class InvalidInput(ModelyardError):
    http_status = 422
    exit_code = 2
    code = "invalid_input"


class BadRequest(InvalidInput):
    """A request the server cannot even route (the data plane's 400: no namespace, say)."""

    http_status = 400
    code = "bad_request"


class MalformedJson(BadRequest):
    """A body that is not JSON at all (valid JSON that is wrong is :class:`InvalidInput`)."""

    code = "malformed_json"


class NotFound(ModelyardError):
    http_status = 404
    exit_code = 3
    code = "not_found"


class Conflict(ModelyardError):
    http_status = 409
    exit_code = 4
    code = "conflict"


class Unauthenticated(ModelyardError):
    http_status = 401
    exit_code = 5
    code = "unauthenticated"


class Forbidden(ModelyardError):
    http_status = 403
    exit_code = 5
    code = "forbidden"


class MethodNotAllowed(ModelyardError):
    http_status = 405
    exit_code = 2
    code = "method_not_allowed"


class PayloadTooLarge(ModelyardError):
    http_status = 413
    exit_code = 2
    code = "payload_too_large"


class IntegrityError(ModelyardError):
    """Bytes do not match the digest or size they were declared with."""

    http_status = 422
    exit_code = 6
    code = "integrity"


class DeploymentFailed(ModelyardError):
    """A deployment did not get to serve: its status says why."""

    http_status = 409
    exit_code = 8
    code = "deployment_failed"


class RunFailed(ModelyardError):
    """A pipeline run that was waited for ended failed or cancelled: its reason says why."""

    http_status = 409
    exit_code = 9
    code = "run_failed"


class Overloaded(ModelyardError):
    """Beyond a configured limit (a realtime deployment's lag): retry after ``retry_after_s``."""

    http_status = 429
    exit_code = 7
    code = "overloaded"


class ConfigError(ModelyardError):
    exit_code = 2
    code = "config"


class StoreError(ModelyardError):
    """A backend (database, blob store) failed; the message says which and why."""

    http_status = 503
    exit_code = 7
    code = "store_unavailable"


class ServerUnreachable(ModelyardError):
    http_status = 503
    exit_code = 7
    code = "unreachable"


class Unavailable(ModelyardError):
    """What was asked for cannot answer now (a deployment not ready, too many requests waiting
    for one): retry later."""

    http_status = 503
    exit_code = 7
    code = "unavailable"


class UpstreamFailed(ModelyardError):
    """The gateway's 502: no replica answered, or one failed mid-answer."""

    http_status = 502
    exit_code = 7
    code = "upstream_failed"


class ClientClosed(ModelyardError):
    """The client left before its request was whole (nginx's 499): nothing of it is used."""

    http_status = 499
    exit_code = 7
    code = "client_closed"


class TimedOut(ModelyardError):
    """Work stopped because it ran past its time limit (a warehouse query, say)."""

    http_status = 504
    exit_code = 10
    code = "timed_out"


_BY_CODE: dict[str, type[ModelyardError]] = {
    cls.code: cls
    for cls in (
        ModelyardError,
        InvalidInput,
        BadRequest,
        MalformedJson,
        NotFound,
        Conflict,
        Unauthenticated,
        Forbidden,
        MethodNotAllowed,
        PayloadTooLarge,
        IntegrityError,
        ConfigError,
        StoreError,
        ServerUnreachable,
        Unavailable,
        UpstreamFailed,
        ClientClosed,
        TimedOut,
        DeploymentFailed,
        RunFailed,
        Overloaded,
    )
}


def error_from_body(status: int, body: Any) -> ModelyardError:
    """Rebuild the error an API response carries, so SDK users catch the same classes."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return ModelyardError(f"server answered {status} without an error body")
    cls = _BY_CODE.get(str(error.get("code")), ModelyardError)
    details = error.get("details") or {}
    # Fields beside code and message (a standby's leader_url, say) are details too.
    extra = {k: v for k, v in error.items() if k not in ("code", "message", "details")}
    return cls(
        str(error.get("message", "")), **extra, **(details if isinstance(details, dict) else {})
    )
