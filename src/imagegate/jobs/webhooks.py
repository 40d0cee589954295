"""Webhooks: events signed by the Standard Webhooks scheme (`webhook-id`,
`webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`),
written to the database in the transaction that ended their job or batch, and delivered by
a dispatcher that retries with backoff (IMAGEGATE_WEBHOOK_RETRY_SCHEDULE_S) until a 2xx.

Targets are checked twice, when a request names one and before each delivery: http(s)
only, and every address the host resolves to must be public (not private, loopback,
link-local, multicast, reserved or unspecified) unless the host is listed in
IMAGEGATE_WEBHOOK_ALLOW_HOSTS; when that list is set, only its hosts are targets.

Receivers check a delivery with `verify(secret, headers, body)` (the `standardwebhooks`
package's check: signature and a 5-minute timestamp tolerance)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import ipaddress
import json
import logging
import socket
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx2
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from standardwebhooks.webhooks import Webhook

from ..db.tables import WebhookRow
from ..errors import InvalidRequest

log = logging.getLogger("imagegate.webhooks")


def secret_from_bytes(raw: bytes) -> str:
    """A `whsec_<base64>` secret from a key file's random bytes."""
    return "whsec_" + base64.b64encode(raw[:32]).decode("ascii")


def _webhook(secret: str) -> Webhook:
    """`whsec_<base64>` (Standard Webhooks' form) or plain base64 is decoded; any other text
    is the HMAC key as it is (its UTF-8 bytes)."""
    if not secret.startswith("whsec_"):
        try:
            base64.b64decode(secret, validate=True)
        except ValueError:
            return Webhook(secret.encode())
    return Webhook(secret)


def sign(secret: str, msg_id: str, timestamp: int, body: str) -> dict[str, str]:
    """The three Standard Webhooks headers of one delivery."""
    sig = _webhook(secret).sign(msg_id, dt.datetime.fromtimestamp(timestamp, dt.timezone.utc), body)
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp), "webhook-signature": sig,
            "content-type": "application/json"}


def verify(secret: str, headers: Mapping[str, str], body: bytes | str) -> Any:
    """The event of a delivery whose signature and timestamp check out; raises
    standardwebhooks.WebhookVerificationError otherwise. For receivers."""
    return _webhook(secret).verify(body, {k.lower(): v for k, v in headers.items()})


# -- no SSRF ------------------------------------------------------------------------------------
def _public(addr: str) -> bool:
    ip = ipaddress.ip_address(addr.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved
                or ip.is_unspecified or not ip.is_global)


def _host(entry: str) -> str:
    """An allow-list entry's host: `name`, `name:port`, `[v6]`, `[v6]:port`, a bare IPv6
    address, or a URL."""
    entry = entry.strip().lower()
    if entry.count(":") > 1 and not entry.startswith("["):
        return entry  # a bare IPv6 address
    try:
        return (urlsplit(entry if "//" in entry else "//" + entry).hostname or entry).rstrip(".")
    except ValueError:
        return entry


def check_url(url: str, allow_hosts: Sequence[str], param: str) -> None:
    """Refuse a webhook target we must not call (400 naming `param`). Blocks on DNS: run it
    in a thread."""
    def bad(why: str) -> InvalidRequest:
        return InvalidRequest(f"Invalid webhook URL: {why}.", param=param, code="invalid_webhook_url")

    if len(url) > 2048:
        raise bad("longer than 2048 characters")
    if any(ord(ch) < 0x21 for ch in url):
        raise bad("it contains spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise bad("it cannot be parsed") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise bad("it must be an http or https URL with a host")
    if parts.username or parts.password:
        raise bad("it must not carry credentials")
    host = parts.hostname.lower().rstrip(".")
    allowed = {_host(h) for h in allow_hosts}
    if host in allowed:
        return
    if allowed:
        raise bad(f"the host '{host[:100]}' is not in IMAGEGATE_WEBHOOK_ALLOW_HOSTS")
    try:
        infos = socket.getaddrinfo(host, port or (443 if parts.scheme == "https" else 80), type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError):
        raise bad(f"the host '{host[:100]}' does not resolve") from None
    for info in infos:
        addr = str(info[4][0])
        if not _public(addr):
            raise bad(f"the host '{host[:100]}' resolves to a non-public address ({addr}); list it in "
                      "IMAGEGATE_WEBHOOK_ALLOW_HOSTS to allow it")


def event_row(url: str, event: str, data: dict[str, Any]) -> WebhookRow:
    now = time.time()
    msg_id = f"msg_{uuid.uuid4().hex}"
    payload = {"id": f"evt_{uuid.uuid4().hex}", "object": "event", "type": event, "created_at": int(now),
               "data": data}
    return WebhookRow(id=msg_id, url=url, event=event, payload=payload, status="pending", attempts=0,
                      attempts_log=[], next_attempt_at=now, created_at=now)


class Dispatcher:
    """Sends due deliveries; each is claimed by pushing its next attempt past the request's
    timeout, so processes sharing a database do not send it twice at once."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], secret: str, *, schedule: Sequence[float],
                 timeout_s: float, allow_hosts: Sequence[str]) -> None:
        self.sessions = sessions
        self.secret = secret
        self.schedule = list(schedule)
        self.timeout_s = timeout_s
        self.allow_hosts = list(allow_hosts)
        self.wake = asyncio.Event()

    async def run(self) -> None:
        async with httpx2.AsyncClient(timeout=self.timeout_s, follow_redirects=False) as client:
            while True:
                try:
                    sent = await self._round(client)
                except Exception:  # keep delivering
                    log.exception("webhook round failed")
                    sent = 0
                if not sent:
                    self.wake.clear()
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self.wake.wait(), timeout=1.0)

    async def _round(self, client: httpx2.AsyncClient) -> int:
        now = time.time()
        async with self.sessions() as s:
            due = list((await s.execute(select(WebhookRow).where(
                WebhookRow.status == "pending", WebhookRow.next_attempt_at <= now)
                .order_by(WebhookRow.next_attempt_at).limit(16))).scalars())
            mine = []
            for row in due:
                res = await s.execute(update(WebhookRow).where(
                    WebhookRow.id == row.id, WebhookRow.next_attempt_at == row.next_attempt_at).values(
                    next_attempt_at=now + self.timeout_s + 5))
                if getattr(res, "rowcount", 0) == 1:
                    mine.append(row)
            await s.commit()
        await asyncio.gather(*(self._deliver(client, row) for row in mine))
        return len(mine)

    async def _deliver(self, client: httpx2.AsyncClient, row: WebhookRow) -> None:
        body = json.dumps(row.payload, separators=(",", ":"))
        stamp = int(time.time())
        code: int | None = None
        error: str | None = None
        refused = False
        try:
            await asyncio.to_thread(check_url, row.url, self.allow_hosts, "webhook_url")
            resp = await client.post(row.url, content=body.encode(), headers=sign(self.secret, row.id, stamp, body))
            code = resp.status_code
        except InvalidRequest as exc:  # the target became refused (its DNS changed): no retry
            error, refused = exc.message, True
        except Exception as exc:  # noqa: BLE001 - any transport failure is retried
            error = f"{type(exc).__name__}: {exc}"[:500]
        ok = code is not None and 200 <= code < 300
        attempts = row.attempts + 1
        log_entry = {"at": stamp, "status_code": code, "error": error}
        if ok:
            values: dict[str, Any] = dict(status="delivered", delivered_at=time.time())
        elif refused or attempts > len(self.schedule):
            values = dict(status="failed")
            log.warning("webhook %s to %s failed %d times; giving up", row.id, row.url, attempts)
        else:
            values = dict(next_attempt_at=time.time() + self.schedule[attempts - 1])
        async with self.sessions() as s:
            await s.execute(update(WebhookRow).where(WebhookRow.id == row.id).values(
                attempts=attempts, attempts_log=[*(row.attempts_log or []), log_entry], **values))
            await s.commit()
