"""Our exception tree. Each error carries its HTTP status and OpenAI error fields;
exactly one handler (app.py) renders them as {"error": {message, type, param, code}}."""

from __future__ import annotations

from typing import Any


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

    def body(self) -> dict[str, Any]:
        err: dict[str, Any] = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        err.update(self.extra)
        return {"error": err}


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


class Overloaded(ImagegateError):
    """The queue is full or the model is still loading; the SDK retries 503 honouring Retry-After."""

    status = 503
    type = "server_error"
    code = "overloaded"

    def __init__(self, message: str, *, retry_after: float = 1.0, **kw: Any) -> None:
        headers = {"Retry-After": str(max(1, round(retry_after))), "retry-after-ms": str(int(retry_after * 1000))}
        super().__init__(message, headers=headers, **kw)


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
