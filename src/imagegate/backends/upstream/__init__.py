"""Upstream providers behind the gateway: one module per kind (openai-compatible, openai,
azure-openai, fal), each an async HTTP client over one `Call` (base.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Call, Done, Partial, Upstream, UpstreamBroken, UpstreamEvent, UpstreamUnavailable

if TYPE_CHECKING:
    import httpx2

    from ...catalogue import Provider

__all__ = ["Call", "Done", "Partial", "Upstream", "UpstreamBroken", "UpstreamEvent", "UpstreamUnavailable",
           "client_for"]


def client_for(provider: Provider, http: httpx2.AsyncClient) -> Upstream:
    """The client of a provider's kind."""
    if provider.kind == "fal":
        from .fal import FalQueue

        return FalQueue(provider, http)
    if provider.kind == "azure-openai":
        from .azure import AzureOpenAI

        return AzureOpenAI(provider, http)
    if provider.kind == "openai":
        from .openai import OpenAI

        return OpenAI(provider, http)
    from .openai_compatible import OpenAICompatible

    return OpenAICompatible(provider, http)
