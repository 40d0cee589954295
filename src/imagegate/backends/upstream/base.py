"""What the gateway asks of an upstream (`Call`), what comes back (`Partial`s, then one
`Done`), and the two ways a call fails that are not a client error:

- `UpstreamUnavailable`: the answer proves nothing was completed (connection refused, a
  timeout before the first byte, 408/429/5xx before any image, a queued job that ended in
  an error): the gateway may retry or fail over without making an image twice;
- `UpstreamBroken`: the upstream may have completed (and billed) the work — a stream cut
  after it started, a 200 whose body is not what it should be: no failover.

An upstream 4xx (but 408/429) is errors.UpstreamClientError, passed to the client as is.
Messages name the provider and what happened, never a key."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx2

from ...catalogue import Provider
from ...errors import UpstreamClientError
from ...routing import retry_after_seconds


@dataclass(frozen=True)
class Call:
    task: str  # generate | edit
    model: str  # the upstream's name (azure: the deployment; fal: the app id)
    prompt: str
    n: int
    size: str | None  # WxH the upstream supports; None: the upstream's default
    quality: str | None
    output_format: str | None  # None: the upstream's default (png)
    compression: int | None
    background: str | None
    stream: bool
    partial_images: int
    idempotency_key: str
    images: tuple[bytes, ...] = ()
    mask: bytes | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # passed through under their own names


@dataclass(frozen=True)
class Partial:
    b64_json: str
    partial_index: int
    image_index: int = 0


@dataclass(frozen=True)
class Done:
    images: tuple[bytes, ...]  # encoded, as the upstream sent them
    size: str | None = None  # what the upstream says it made
    quality: str | None = None
    output_format: str | None = None
    usage: dict[str, Any] | None = None  # the upstream's usage object, when it sends one


UpstreamEvent = Partial | Done


class UpstreamUnavailable(Exception):
    def __init__(self, message: str, *, retry_after: float | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message, self.retry_after, self.status = message, retry_after, status


class UpstreamBroken(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Upstream(Protocol):
    provider: Provider

    def call(self, call: Call) -> AsyncGenerator[UpstreamEvent, None]:
        """Partials (streaming upstreams), then exactly one Done; raises the errors above."""


def timeout(provider: Provider) -> httpx2.Timeout:
    """`timeout_s` bounds each wait for bytes (and so the wait for the first one); connecting
    is bounded tighter, so a dead host fails over quickly."""
    t = provider.timeout_s
    return httpx2.Timeout(t, connect=min(10.0, t))


def transport_error(provider: Provider, exc: Exception, *, started: bool) -> Exception:
    """An httpx2 failure as ours: before the response began it proves nothing was done
    (failover); after, the upstream may have finished the work."""
    what = type(exc).__name__
    if isinstance(exc, httpx2.ConnectError | httpx2.ConnectTimeout):
        return UpstreamUnavailable(f"{provider.name}: cannot connect ({what})")
    if not started and isinstance(exc, httpx2.TimeoutException | httpx2.RemoteProtocolError | httpx2.ReadError
                                  | httpx2.WriteError):
        return UpstreamUnavailable(f"{provider.name}: no response ({what})")
    return UpstreamBroken(f"{provider.name}: the response was cut off ({what})")


async def raise_for_status(provider: Provider, response: httpx2.Response) -> None:
    """Non-2xx answers as our errors (the body is read here; it is small)."""
    if response.status_code < 300:
        return
    try:
        body = json.loads(await response.aread())
    except (ValueError, httpx2.HTTPError):
        body = None
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        err = {"message": body.get("detail") if isinstance(body, dict) else None}
    message = scrub(provider, str(err.get("message") or f"HTTP {response.status_code}")[:500])
    status = response.status_code
    if status in (408, 429) or status >= 500:
        wait = retry_after_seconds(response.headers.get("retry-after"), response.headers.get("retry-after-ms"))
        raise UpstreamUnavailable(f"{provider.name}: HTTP {status}: {message}", retry_after=wait, status=status)
    param, code, kind = err.get("param"), err.get("code"), err.get("type")
    raise UpstreamClientError(status, message, param=str(param) if param is not None else None,
                              code=str(code) if code is not None else None,
                              type=str(kind) if isinstance(kind, str) else None)


def key_header(provider: Provider, name: str = "authorization", scheme: str = "Bearer") -> dict[str, str]:
    key = provider.api_key()
    if not key:
        return {}
    return {name: f"{scheme} {key}" if scheme else key}


def scrub(provider: Provider, text: str) -> str:
    """An upstream's own words, with its key cut out should it echo it back (the message
    reaches the client, the log and the ledger)."""
    key = provider.api_key()
    return text.replace(key, "***") if key and len(key) >= 4 else text
