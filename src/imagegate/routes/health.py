from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

router = APIRouter()


@router.get("/health", include_in_schema=True)
async def health(request: Request) -> JSONResponse:
    """200 only once every configured model is ready: loaded, or (for models that load on
    first use, or were unloaded under the memory budget) validated and ready to load."""
    scheduler = getattr(request.app.state, "scheduler", None)
    if scheduler is None:
        return JSONResponse({"status": "starting"}, status_code=503)

    def state(w: object) -> str:
        if getattr(w, "load_error", None):
            return "failed: " + str(w.load_error)  # type: ignore[attr-defined]
        if not w.ready:  # type: ignore[attr-defined]
            return "loading"
        return "ready" if w.backend.loaded else "unloaded"  # type: ignore[attr-defined]

    models = {name: state(w) for name, w in scheduler.workers.items()}
    ok = scheduler.ready
    return JSONResponse({"status": "ok" if ok else "loading", "models": models}, status_code=200 if ok else 503)
