"""The ledger row of one request, from what the flow knows when it writes it: bounded in
size whatever was sent, and without the uploads."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, fields
from typing import Any

from ..db import RequestRow
from ..errors import ImagegateError
from ..normalize import ImageSpec
from ..protocol import ImagesUsage
from .request import ImageRequest, RequestContext


def ledger_row(ctx: RequestContext, req: ImageRequest | None, spec: ImageSpec | None, model: str | None, status: str,
               http_status: int, *, error: ImagegateError | None, usage: ImagesUsage | None, seed: int | None,
               cost: float | None, final: bool, text_limit: int) -> RequestRow:
    """`status` "running" writes the row of an accepted request; a final status replaces it.
    Failures are not billed: usage and cost only on success (cost 0 otherwise)."""
    ok = status == "ok"
    who = ctx.principal
    params = bounded_params(spec if spec is not None else req, text_limit)
    if error is not None and error.code == "moderation_blocked":
        params = redacted(params)
    return RequestRow(
        id=ctx.request_id,
        created_at=ctx.created_at,
        endpoint=ctx.endpoint,
        api_key=ctx.api_key,
        user=clip(req.user if req else None, 256),
        model_requested=clip(req.model if req else None, 256),
        model=model,
        params=params,
        status=status,
        http_status=http_status,
        error_code=error.code if error else None,
        error_message=clip(getattr(error, "detail", None) or error.message, 2000) if error else None,
        n=spec.n if spec else None,
        seed=seed,
        queue_s=ctx.timings.get("queue"),
        inference_s=ctx.timings.get("inference"),
        encode_s=ctx.timings.get("encode"),
        total_s=time.perf_counter() - ctx.started if final else None,
        # Failures are not billed: usage only on success.
        input_tokens=usage.input_tokens if usage and status == "ok" else None,
        output_tokens=usage.output_tokens if usage and status == "ok" else None,
        notes=list(ctx.notes),
        batch_id=ctx.batch[0] if ctx.batch else None,
        batch_jobs=ctx.batch[1] if ctx.batch else None,
        batch_images=ctx.batch[2] if ctx.batch else None,
        api_key_id=who.key_id if who else None,
        project_id=who.project if who else None,
        size=spec.size if spec else None,
        quality=spec.quality if spec else None,
        images=(spec.n if ok and spec else 0) if final else None,
        cost_usd=cost,
        provider=ctx.provider or ("local" if model and ctx.model else None),
        attempts=ctx.attempts if ctx.attempts or ctx.provider else (1 if model and ctx.model and status != "error"
                                                                    else None),
    )


def redacted(params: dict[str, Any]) -> dict[str, Any]:
    """A blocked request's parameters without its texts: only their UTF-8 length and SHA-256
    (enough to find repeats, not to read what was asked for)."""
    out = dict(params)
    for key in ("prompt", "negative_prompt"):
        value = out.pop(key, None)
        if isinstance(value, str):
            out.setdefault(f"{key}_bytes", len(value.encode("utf-8", "surrogatepass")))
            out.setdefault(f"{key}_sha256", hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest())
    return out


def clip(text: str | None, limit: int) -> str | None:
    return text if text is None or len(text) <= limit else text[:limit]


def bounded_params(obj: ImageSpec | ImageRequest | None, limit: int) -> dict[str, Any]:
    """The request's parameters with every text cut to `limit` characters, so a ledger row
    has a bounded size whatever was sent (a rejected 100 MB prompt once became 200 MB of
    database). A cut text keeps its full UTF-8 length and SHA-256 beside it."""
    if obj is None:
        return {}
    if isinstance(obj, ImageRequest):  # not the uploads: megabytes, and not parameters
        d = {f.name: getattr(obj, f.name) for f in fields(obj) if f.name not in ("images", "mask")}
    else:
        d = asdict(obj)
    d = {k: v for k, v in d.items() if v is not None}
    params: dict[str, Any] = json.loads(json.dumps(d, default=str))
    for key, value in list(params.items()):
        if isinstance(value, str) and len(value) > limit:
            raw = value.encode("utf-8", "surrogatepass")
            params[key] = value[:limit]
            params[f"{key}_bytes"] = len(raw)
            params[f"{key}_sha256"] = hashlib.sha256(raw).hexdigest()
    return params
