"""GET /metrics: Prometheus text. The admin key guards it when one is set (Prometheus sends
it with `authorization: {credentials: ...}`); a server without an admin key serves it
openly, like its other read-only endpoints on a local machine."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ..observability import CONTENT_TYPE, Metrics
from .deps import require_admin

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    if request.app.state.settings.admin_key:
        await require_admin(request)
    m: Metrics = request.app.state.container.observer.metrics
    return Response(m.text(), media_type=CONTENT_TYPE)
