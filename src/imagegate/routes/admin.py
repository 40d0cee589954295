"""The admin API: keys made, listed and revoked over HTTP with the admin key
(IMAGEGATE_ADMIN_KEY), the same operations as `imagegate keys`."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from ..accounts import KeyInfo, parse_duration
from ..errors import InvalidRequest
from .deps import accounts, require_admin

router = APIRouter(prefix="/admin/v1", dependencies=[Depends(require_admin)])


class CreateKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    project: str | None = Field(None, max_length=128)
    models: list[str] | None = Field(None, max_length=1000)
    rpm: int | None = Field(None, ge=1)
    ipm: int | None = Field(None, ge=1)
    budget_usd: float | None = Field(None, ge=0, allow_inf_nan=False)
    expires_in: str | None = Field(None, description="A duration: 30d, 12h, 90m, 2w.")
    expires_at: int | None = Field(None, description="Unix seconds.")


class KeyObject(BaseModel):
    object: Literal["api_key"] = "api_key"
    id: str
    name: str
    redacted_value: str
    project: str
    models: list[str] | None
    rpm: int | None
    ipm: int | None
    budget_usd: float | None
    spent_usd_this_month: float | None = None
    created_at: int
    expires_at: int | None
    revoked_at: int | None
    status: str
    key: str | None = None  # only in the answer to a create

    @classmethod
    def of(cls, k: KeyInfo, **extra: Any) -> KeyObject:
        return cls(id=k.id, name=k.name, redacted_value=k.redacted, project=k.project, models=k.models, rpm=k.rpm,
                   ipm=k.ipm, budget_usd=k.budget_usd, created_at=_unix(k.created_at), expires_at=_unix(k.expires_at),
                   revoked_at=_unix(k.revoked_at), status=k.status, **extra)


def _unix(t: dt.datetime | None) -> Any:
    return int(t.timestamp()) if t is not None else None


def _expiry(body: CreateKey) -> dt.datetime | None:
    if body.expires_in is not None and body.expires_at is not None:
        raise InvalidRequest("Give expires_in or expires_at, not both.", param="expires_in")
    if body.expires_in is not None:
        try:
            return dt.datetime.now(dt.timezone.utc) + parse_duration(body.expires_in)
        except ValueError as exc:
            raise InvalidRequest(f"expires_in: {exc}.", param="expires_in") from None
    if body.expires_at is not None:
        try:
            return dt.datetime.fromtimestamp(body.expires_at, dt.timezone.utc)
        except (OverflowError, OSError, ValueError):
            raise InvalidRequest("expires_at is not a valid unix time.", param="expires_at") from None
    return None


@router.post("/keys", status_code=201)
async def create_key(body: CreateKey, request: Request) -> JSONResponse:
    """A new key; the answer is the only place its value is ever shown."""
    info, key = await accounts(request).keys.create(
        body.name, project=body.project, models=body.models, rpm=body.rpm, ipm=body.ipm, budget_usd=body.budget_usd,
        expires_at=_expiry(body))
    return JSONResponse(KeyObject.of(info, key=key).model_dump(), status_code=201)


@router.get("/keys")
async def list_keys(request: Request) -> dict[str, Any]:
    acc = accounts(request)
    data = []
    for k in await acc.keys.list():
        spent = await acc.budgets.spent(k.id) if k.budget_usd is not None else None
        data.append(KeyObject.of(k, spent_usd_this_month=spent).model_dump(exclude_none=False, exclude={"key"}))
    return {"object": "list", "data": data}


@router.get("/keys/{name}")
async def get_key(name: str, request: Request) -> dict[str, Any]:
    acc = accounts(request)
    k = await acc.keys.get(name)
    spent = await acc.budgets.spent(k.id) if k.budget_usd is not None else None
    return KeyObject.of(k, spent_usd_this_month=spent).model_dump(exclude={"key"})


@router.delete("/keys/{name}")
async def revoke_key(name: str, request: Request) -> dict[str, Any]:
    """Revoke: the key gets 401 within a second on every process sharing the database."""
    return KeyObject.of(await accounts(request).keys.revoke(name)).model_dump(exclude={"key"})


@router.post("/keys/{name}/revoke")
async def revoke_key_post(name: str, request: Request) -> dict[str, Any]:
    return await revoke_key(name, request)
