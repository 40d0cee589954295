"""OpenAI's Usage API for images and its Costs API, read from the request ledger. The admin
key (or anyone, on a server without keys) sees every row; any other key sees only its own
rows: filters naming other keys or projects then match nothing (no 403, so a key learns
nothing about what else exists).

The query string is parsed by accounts.usage.parse_query (arrays as `models=a&models=b` or
`models[]=a`); its parameters are declared here for the OpenAPI document only."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from ..accounts import usage
from ..errors import Forbidden
from .deps import Viewer, require_viewer

router = APIRouter(prefix="/v1/organization", tags=["usage"])


def _param(name: str, schema: dict[str, Any], description: str, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema, "description": description}


def _array(name: str, description: str, items: dict[str, Any] | None = None) -> dict[str, Any]:
    return {**_param(name, {"type": "array", "items": items or {"type": "string"}}, description),
            "style": "form", "explode": True}


def _params(kind: usage.Kind) -> list[dict[str, Any]]:
    widths = list(usage.WIDTHS)
    groups = list(usage.USAGE_GROUPS if kind == "usage" else usage.COSTS_GROUPS)
    limits = usage.USAGE_LIMITS if kind == "usage" else usage.COSTS_LIMITS
    out = [
        _param("start_time", {"type": "integer", "minimum": 0, "maximum": usage.MAX_TIME},
               "Start of the range (unix seconds), inclusive.", required=True),
        _param("end_time", {"type": "integer", "minimum": 0, "maximum": usage.MAX_TIME},
               "End of the range (unix seconds), exclusive; default now."),
        _param("bucket_width", {"type": "string", "enum": widths, "default": "1d"},
               "Width of each bucket, aligned in UTC." + (" OpenAI's costs take 1d only." if kind == "costs" else "")),
        _array("group_by", "Fields to group by.", {"type": "string", "enum": groups}),
        _param("limit", {"type": "integer", "minimum": 1, "maximum": max(m for _, m in limits.values())},
               "Buckets per page: " + "; ".join(f"{w}: default {d}, max {m}" for w, (d, m) in limits.items()) + "."),
        _param("page", {"type": "string"}, "The next_page cursor of the previous response."),
    ]
    filters = usage.USAGE_FILTERS if kind == "usage" else usage.COSTS_FILTERS
    for f in filters:
        items = {"type": "string", "enum": list(usage.ENDPOINTS)} if f == "sources" else None
        out.append(_array(f, f"Only rows with one of these {f}.", items))
    return out


def _only_key(viewer: Viewer) -> str | None:
    if viewer.admin:
        return None
    if viewer.principal is None:  # require_viewer never does this; refuse rather than show everything
        raise Forbidden("This key cannot read usage.")
    return viewer.principal.key_id


@router.get("/usage/images", openapi_extra={"parameters": _params("usage")})
async def usage_images(request: Request, viewer: Annotated[Viewer, Depends(require_viewer)]) -> dict[str, Any]:
    """Images usage: per time bucket, requests and images, grouped as asked."""
    args = usage.parse_query("usage", request.query_params.multi_items())
    return await usage.usage_images(request.app.state.ledger.sessions, **args, only_key=_only_key(viewer))


@router.get("/costs", openapi_extra={"parameters": _params("costs")})
async def costs(request: Request, viewer: Annotated[Viewer, Depends(require_viewer)]) -> dict[str, Any]:
    """Costs in USD: per time bucket, grouped as asked."""
    args = usage.parse_query("costs", request.query_params.multi_items())
    return await usage.costs(request.app.state.ledger.sessions, **args, only_key=_only_key(viewer))
