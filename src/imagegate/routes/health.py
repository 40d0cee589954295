from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

router = APIRouter()


@router.get("/health", include_in_schema=True)
async def health(request: Request) -> JSONResponse:
    """200 only once every configured model is loaded and ready."""
    scheduler = getattr(request.app.state, "scheduler", None)
    if scheduler is None:
        return JSONResponse({"status": "starting"}, status_code=503)
    models = {
        name: ("ready" if w.ready else ("failed: " + w.load_error) if w.load_error else "loading")
        for name, w in scheduler.workers.items()
    }
    ok = scheduler.ready
    return JSONResponse({"status": "ok" if ok else "loading", "models": models}, status_code=200 if ok else 503)
