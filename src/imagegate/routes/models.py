from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Request

from ..errors import ModelNotFound
from ..protocol import ModelCard, ModelList
from ..registry import Registry
from .deps import require_api_key

router = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)])
_CREATED = int(time.time())


def _cards(registry: Registry) -> list[ModelCard]:
    """Each card carries the prices a request naming it pays (an OpenAI name served by a
    model without its own table pays OpenAI's published prices)."""
    cards = [ModelCard(id=name, created=_CREATED, owned_by="imagegate", pricing=registry.pricing(c).card())
             for name, c in registry.configs.items()]
    cards += [ModelCard(id=a, created=_CREATED, owned_by="imagegate", alias_of=t,
                        pricing=registry.pricing(registry.configs[t], a).card())
              for a, t in registry.aliases.items()]
    return cards


@router.get("/models", response_model=ModelList, response_model_exclude_none=True)
async def list_models(request: Request) -> ModelList:
    """Served models, then every alias (OpenAI names included) with the model it maps to."""
    return ModelList(data=_cards(request.app.state.registry))


@router.get("/models/{model_id:path}", response_model=ModelCard, response_model_exclude_none=True)
async def get_model(model_id: str, request: Request) -> ModelCard:
    for card in _cards(request.app.state.registry):
        if card.id == model_id:
            return card
    raise ModelNotFound(f"The model '{model_id}' does not exist.", param="model", code="model_not_found")
