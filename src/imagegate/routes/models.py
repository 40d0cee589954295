from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Request

from ..catalogue import Catalogue
from ..errors import ModelNotFound
from ..protocol import ModelCard, ModelList
from ..registry import Registry
from .deps import require_api_key

router = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)])
_CREATED = int(time.time())


def _cards(registry: Registry, catalogue: Catalogue | None = None) -> list[ModelCard]:
    """Each card carries the prices a request naming it pays (an OpenAI name served by a
    model without its own table pays OpenAI's published prices). Routed names come first:
    owned by their first route's provider, priced by the model's table or that route's."""
    cards: list[ModelCard] = []
    routed: set[str] = set()
    for m in (catalogue.models.values() if catalogue else ()):
        first = m.routes[0]
        local = registry.configs.get(first.model) if first.provider is None else None
        price = (m.pricing or first.price(registry.pricing(local) if local else None)).card()
        cards.append(ModelCard(id=m.name, created=_CREATED, owned_by=first.provider_name, pricing=price))
        cards += [ModelCard(id=a, created=_CREATED, owned_by=first.provider_name, alias_of=m.name, pricing=price)
                  for a in m.aliases]
        routed.update((m.name, *m.aliases))
    cards += [ModelCard(id=name, created=_CREATED, owned_by="imagegate", pricing=registry.pricing(c).card())
              for name, c in registry.configs.items()]
    cards += [ModelCard(id=a, created=_CREATED, owned_by="imagegate", alias_of=t,
                        pricing=registry.pricing(registry.configs[t], a).card())
              for a, t in registry.aliases.items() if a not in routed]
    return cards


@router.get("/models", response_model=ModelList, response_model_exclude_none=True)
async def list_models(request: Request) -> ModelList:
    """Routed names, served models, then every alias (OpenAI names included) with the model it maps to."""
    return ModelList(data=_cards(request.app.state.registry, getattr(request.app.state, "gateway", None) and
                                 request.app.state.gateway.catalogue))


@router.get("/models/{model_id:path}", response_model=ModelCard, response_model_exclude_none=True)
async def get_model(model_id: str, request: Request) -> ModelCard:
    gateway = getattr(request.app.state, "gateway", None)
    for card in _cards(request.app.state.registry, gateway.catalogue if gateway else None):
        if card.id == model_id:
            return card
    raise ModelNotFound(f"The model '{model_id}' does not exist.", param="model", code="model_not_found")
