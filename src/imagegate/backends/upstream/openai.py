"""OpenAI itself: api.openai.com by default, a bearer key, the gpt-image models' surface and
published prices as defaults (catalogue.py). OpenAI refuses parameters it does not know, so
nothing of ours is passed through (the gateway notes what it left out)."""

from __future__ import annotations

from typing import Any

from .base import Call
from .openai_compatible import OpenAICompatible


class OpenAI(OpenAICompatible):
    def body(self, call: Call) -> dict[str, Any]:
        body = super().body(call)
        if not call.model.startswith("dall-e"):
            body.pop("response_format")  # GPT image models always answer base64 and refuse the parameter
        return body
