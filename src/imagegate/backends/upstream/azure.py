"""Azure OpenAI: the route's model is the deployment, the URL carries it and `api-version`,
and the key goes in `api-key` (not `Authorization`)."""

from __future__ import annotations

from typing import Any

from .base import Call, key_header
from .openai_compatible import OpenAICompatible


class AzureOpenAI(OpenAICompatible):
    def url(self, call: Call) -> str:
        kind = "edits" if call.task == "edit" else "generations"
        base = self.provider.base_url
        return f"{base}/openai/deployments/{call.model}/images/{kind}?api-version={self.provider.api_version}"

    def headers(self, call: Call) -> dict[str, str]:
        return {**key_header(self.provider, "api-key", ""), "idempotency-key": call.idempotency_key}

    def body(self, call: Call) -> dict[str, Any]:
        body = super().body(call)
        body.pop("model")  # the deployment in the URL names it
        return body
