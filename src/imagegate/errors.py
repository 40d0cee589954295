"""Our exception tree. Each error carries its HTTP status and OpenAI error fields;
exactly one handler (app.py) renders them as {"error": {message, type, param, code}}."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from starlette.responses import JSONResponse


class ImagegateError(Exception):
    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = headers or {}
        self.extra = extra or {}

    def __reduce__(self) -> tuple[Any, ...]:
        # Raised in one process and rendered in another (a Ray model replica -> the ingress,
        # ray_serve.py): pickled by class and fields, whatever the subclass's __init__ takes.
        return (_rebuild, (type(self), self.args, self.__dict__))

    def body(self) -> dict[str, Any]:
        err: dict[str, Any] = {"message": _printable(self.message), "type": self.type,
                               "param": None if self.param is None else _printable(self.param), "code": self.code}
        err.update(self.extra)
        return {"error": err}


def _rebuild(cls: type[ImagegateError], args: tuple[Any, ...], state: dict[str, Any]) -> ImagegateError:
    exc = cls.__new__(cls)
    Exception.__init__(exc, *args)
    exc.__dict__.update(state)
    return exc


def _printable(text: str) -> str:
    """Messages and params can quote what the client sent: keep them encodable (a lone
    surrogate made the error response itself fail with a 500)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class InvalidRequest(ImagegateError):
    status = 400
    type = "invalid_request_error"


class AuthenticationFailed(ImagegateError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class Forbidden(ImagegateError):
    status = 403
    type = "invalid_request_error"
    code = "forbidden"


class ModelNotAllowed(Forbidden):
    code = "model_not_allowed"


class RateLimited(ImagegateError):
    """A key's requests or images per minute are spent; the SDK retries after Retry-After."""

    status = 429
    type = "requests"
    code = "rate_limit_exceeded"


class QuotaExceeded(ImagegateError):
    """A key's monthly budget would be exceeded: retrying soon cannot help, so the SDK is
    told not to (x-should-retry: false)."""

    status = 429
    type = "insufficient_quota"
    code = "insufficient_quota"

    def __init__(self, message: str, **kw: Any) -> None:
        super().__init__(message, headers={"x-should-retry": "false"}, **kw)


class Conflict(ImagegateError):
    status = 409
    type = "invalid_request_error"
    code = "conflict"


class NotFound(ImagegateError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class Gone(ImagegateError):
    status = 410
    type = "invalid_request_error"
    code = "expired"


class PayloadTooLarge(ImagegateError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class RequestTimeout(ImagegateError):
    """The client stopped sending its request body (server.BodyTimeoutMiddleware)."""

    status = 408
    type = "invalid_request_error"
    code = "request_timeout"


class Overloaded(ImagegateError):
    """The queue is full or the model is still loading; the SDK retries 503 honouring Retry-After."""

    status = 503
    type = "server_error"
    code = "overloaded"

    def __init__(self, message: str, *, retry_after: float = 1.0, **kw: Any) -> None:
        headers = {"Retry-After": str(max(1, round(retry_after))), "retry-after-ms": str(int(retry_after * 1000))}
        super().__init__(message, headers=headers, **kw)


class MethodNotAllowed(ImagegateError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class InternalError(ImagegateError):
    """Anything that is not one of ours: a bug. The client gets the request id to quote;
    the detail goes to the log."""

    status = 500
    type = "server_error"


class Cancelled(ImagegateError):
    """The client went away; nothing is sent, the ledger records it."""

    status = 499
    type = "invalid_request_error"
    code = "client_closed_request"


class GenerationFailed(ImagegateError):
    """The model failed. The client gets a plain message; the internal detail goes to the
    log and the ledger only (exception texts can reveal paths, shapes and versions)."""

    status = 500
    type = "server_error"
    code = "generation_failed"

    def __init__(self, message: str, *, detail: str | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.detail = detail


# -- validation errors (pydantic's and FastAPI's) in OpenAI's terms --------------------------
def _param_from_loc(loc: tuple[Any, ...]) -> str | None:
    # Parameter names come from the client: cut long ones (a 100 KB unknown key was echoed whole).
    parts = [quote_name(str(p)) for p in loc if p not in ("body", "query", "path", "form")]
    if not parts:
        return None
    out = parts[0]
    for p in parts[1:]:
        out += f"[{p}]" if p.isdigit() else f".{p}"
    return out


def quote_name(name: str, limit: int = 64) -> str:
    """A client-sent name as it may appear in a message or `param`: encodable and short."""
    name = name.encode("utf-8", "backslashreplace").decode("utf-8")
    return name if len(name) <= limit else name[:limit] + "…"


def validation_error(errors: Sequence[Mapping[str, Any]]) -> InvalidRequest:
    first = errors[0]
    param = _param_from_loc(tuple(first.get("loc", ())))
    if first.get("type") == "extra_forbidden":
        return InvalidRequest(f"Unknown parameter: '{param}'.", param=param, code="unknown_parameter")
    if first.get("type") == "missing":
        return InvalidRequest(f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")
    if first.get("type") == "json_invalid":
        return InvalidRequest("We could not parse the JSON body of your request.", param=None, code="invalid_json")
    msg = first.get("msg", "Invalid value")
    return InvalidRequest(f"Invalid value for '{param}': {msg}.", param=param, code="invalid_value")


# -- the one renderer ---------------------------------------------------------------------
def render(exc: ImagegateError, headers: dict[str, str] | None = None) -> JSONResponse:
    """Every error response of the server: OpenAI's envelope, the error's status and headers."""
    return JSONResponse(exc.body(), status_code=exc.status, headers={**exc.headers, **(headers or {})})


def from_http_status(status: int, method: str, path: str, detail: str,
                     headers: Mapping[str, str] | None = None) -> ImagegateError:
    """The framework's own HTTP errors (unknown path, wrong method, ...) as ours."""
    err: ImagegateError
    if status == 404:
        err = NotFound(f"Unknown path: {method} {path}")
    elif status == 405:
        err = MethodNotAllowed(f"Method {method} is not allowed on {path}")
    else:
        err = InvalidRequest(detail) if 400 <= status < 500 else InternalError(detail)
        err.status = status
    err.headers.update(headers or {})
    return err


class ModerationBlocked(ImagegateError):
    """A moderation stage blocked the request: OpenAI's shape, with the stage and the
    categories in `moderation_details` inside the error object."""

    status = 400
    type = "image_generation_user_error"
    code = "moderation_blocked"

    def __init__(self, stage: str, categories: list[str]) -> None:
        super().__init__(
            "Your request was rejected by the safety system "
            f"({stage} moderation: {', '.join(categories)}). It may contain content that this server does not allow.",
            extra={"moderation_details": {"moderation_stage": stage, "categories": list(categories)}})
        self.stage = stage
        self.categories = list(categories)
# -- the gateway (core/gateway.py) ----------------------------------------------------------
class BadGateway(ImagegateError):
    """An upstream provider failed in a way that may have completed the work (a broken
    stream, a malformed answer), or every route failed (code all_providers_failed). The
    message names routes and errors, never a key."""

    status = 502
    type = "server_error"
    code = "upstream_error"


class UpstreamClientError(ImagegateError):
    """An upstream's own 4xx (not 408/429), returned to the client as it came: its status,
    message, param and code. No retry, no failover: the same request fails everywhere."""

    type = "invalid_request_error"

    def __init__(self, status: int, message: str, *, type: str | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.status = status
        if type:
            self.type = type
