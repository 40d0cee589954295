"""The gateway's catalogue: upstream providers and routed model names, from the models file.

    [[providers]]
    name = "backup"
    kind = "openai-compatible"          # openai | azure-openai | openai-compatible | fal
    base_url = "http://127.0.0.1:9001/v1"
    api_key_env = "BACKUP_KEY"          # the key is read from this variable; never in the file
    timeout_s = 120
    max_concurrency = 8
    capabilities = { sizes = ["1024x1024"], max_n = 1 }   # optional overrides of the kind's
    pricing = { per_image = { ... } }                       # optional; pricing.py's tables

    [[models]]
    name = "gpt-image-1"
    strategy = "priority"               # priority | weighted | least-latency | cheapest
    cache_ttl_s = 3600                  # optional: answer seeded repeats from a cache
    routes = [{ provider = "backup", model = "imagegate-mini", weight = 1 }, { model = "imagegate-mini" }]

A route without `provider` is a local model of this process (a [[models]] table of its own,
or `source = "builtin"`). Local models themselves stay in registry.py; this module knows
names, capabilities and prices only, never HTTP."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .pricing import FREE, GPT_IMAGE_1, Pricing
from .pricing import parse as parse_pricing
from .registry import OPENAI_IMAGE_MODELS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - 3.10
    import tomli as tomllib

KINDS = ("openai", "azure-openai", "openai-compatible", "fal")
STRATEGIES = ("priority", "weighted", "least-latency", "cheapest")
ALL_FORMATS = frozenset({"png", "jpeg", "webp", "avif", "gif"})


@dataclass(frozen=True)
class UpstreamCaps:
    """What an upstream model takes natively; everything else is emulated by the gateway
    (docs/gateway.md has the table)."""

    sizes: tuple[str, ...] | None = None  # None: any size our own rules accept
    max_n: int = 10
    response_formats: frozenset[str] = frozenset({"b64_json", "url"})
    output_formats: frozenset[str] = ALL_FORMATS
    compression: bool = True
    background: bool = True  # transparent backgrounds
    streaming: bool = True  # stream + partial_images
    edits: bool = True
    masks: bool = True
    max_input_images: int = 16
    extensions: bool = True  # seed, negative_prompt, steps, guidance, lora: our extensions
    passthrough: bool = True  # unknown parameters are forwarded as they came


# gpt-image-1's surface (OpenAI's API reference): three sizes, b64 only, png/jpeg/webp,
# transparent backgrounds, streaming with partial images, n up to 10, 16 input images.
OPENAI_GPT_IMAGE = UpstreamCaps(
    sizes=("1024x1024", "1536x1024", "1024x1536"), max_n=10, response_formats=frozenset({"b64_json"}),
    output_formats=frozenset({"png", "jpeg", "webp"}), compression=True, background=True, streaming=True,
    edits=True, masks=True, max_input_images=16, extensions=False, passthrough=False)
OPENAI_MODELS: dict[str, UpstreamCaps] = {
    "dall-e-3": replace(OPENAI_GPT_IMAGE, sizes=("1024x1024", "1792x1024", "1024x1792"), max_n=1,
                        response_formats=frozenset({"b64_json", "url"}), output_formats=frozenset({"png"}),
                        compression=False, background=False, streaming=False, edits=False, masks=False),
    "dall-e-2": replace(OPENAI_GPT_IMAGE, sizes=("256x256", "512x512", "1024x1024"), max_n=10,
                        response_formats=frozenset({"b64_json", "url"}), output_formats=frozenset({"png"}),
                        compression=False, background=False, streaming=False, max_input_images=1),
}
# fal's queue API (flux-style apps): image_size {width, height}, num_images up to 4,
# png/jpeg, images returned as URLs we fetch; no streaming, no transparent background.
FAL_DEFAULT = UpstreamCaps(
    sizes=None, max_n=4, response_formats=frozenset({"url"}), output_formats=frozenset({"png", "jpeg"}),
    compression=False, background=False, streaming=False, edits=True, masks=True, max_input_images=1,
    extensions=True, passthrough=True)
DEFAULT_BASE_URL = {"openai": "https://api.openai.com/v1", "fal": "https://queue.fal.run"}
CAP_KEYS = set(UpstreamCaps.__dataclass_fields__)
PROVIDER_KEYS = {"name", "kind", "base_url", "api_key_env", "timeout_s", "max_concurrency", "capabilities",
                 "pricing", "retries", "breaker_failures", "breaker_cooldown_s", "api_version", "max_retry_after_s"}
ROUTE_KEYS = {"provider", "model", "weight", "pricing"}
ROUTED_MODEL_KEYS = {"name", "strategy", "routes", "aliases", "cache_ttl_s", "pricing"}


@dataclass(frozen=True)
class Provider:
    name: str
    kind: str
    base_url: str
    api_key_env: str | None = None
    timeout_s: float = 120.0
    max_concurrency: int = 8
    caps: dict[str, Any] = field(default_factory=dict)  # overrides of the model's defaults
    pricing: Pricing | None = None
    retries: int = 1  # extra attempts on the same route for 429/5xx/connection errors
    breaker_failures: int = 3  # consecutive failures that open the circuit
    breaker_cooldown_s: float = 30.0  # open this long, then one half-open probe
    api_version: str = "2025-04-01-preview"  # azure-openai only
    max_retry_after_s: float = 10.0  # a longer Retry-After fails over instead of waiting

    def api_key(self) -> str | None:
        """Read at call time, so a rotated key needs no restart; never stored on the object."""
        return os.environ.get(self.api_key_env) if self.api_key_env else None

    def __repr__(self) -> str:  # no key can be in it, but be plain about what is
        return f"Provider(name={self.name!r}, kind={self.kind!r}, base_url={self.base_url!r})"


@dataclass(frozen=True)
class Route:
    model: str  # the upstream's model name (deployment for azure, app id for fal), or a local model
    provider: Provider | None = None  # None: a local model of this process
    weight: float = 1.0
    pricing: Pricing | None = None

    @property
    def key(self) -> str:
        """Identifies the route for breakers, latency and messages."""
        return f"{self.provider.name}/{self.model}" if self.provider else f"local/{self.model}"

    @property
    def provider_name(self) -> str:
        return self.provider.name if self.provider else "local"

    def caps(self) -> UpstreamCaps:
        if self.provider is None:
            return UpstreamCaps()
        kind = self.provider.kind
        if kind in ("openai", "azure-openai"):
            base = OPENAI_MODELS.get(self.model, OPENAI_GPT_IMAGE)
        elif kind == "fal":
            base = FAL_DEFAULT
        else:
            base = UpstreamCaps()
        over = dict(self.provider.caps)
        for k in ("sizes",):
            if k in over and over[k] is not None:
                over[k] = tuple(str(s) for s in over[k])
        for k in ("response_formats", "output_formats"):
            if k in over:
                over[k] = frozenset(str(s) for s in over[k])
        return replace(base, **over)

    def price(self, local: Pricing | None = None) -> Pricing:
        """The route's own table, else its provider's, else OpenAI's published prices for
        OpenAI and Azure (what they bill), else free. Local routes: the local model's."""
        if self.pricing is not None:
            return self.pricing
        if self.provider is None:
            return local or FREE
        if self.provider.pricing is not None:
            return self.provider.pricing
        if self.provider.kind in ("openai", "azure-openai"):
            return GPT_IMAGE_1
        return FREE


@dataclass(frozen=True)
class RoutedModel:
    name: str
    routes: tuple[Route, ...]
    strategy: str = "priority"
    aliases: tuple[str, ...] = ()
    cache_ttl_s: float | None = None
    pricing: Pricing | None = None  # what /v1/models shows; else the first route's


@dataclass
class Catalogue:
    """Routed names (and their aliases) → RoutedModel; providers by name."""

    providers: dict[str, Provider] = field(default_factory=dict)
    models: dict[str, RoutedModel] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.models)

    def find(self, requested: str | None, *, local_default: bool) -> RoutedModel | None:
        """The routed model a name asks for. An OpenAI name or no name at all reaches the
        first routed model only when no local model is served (a gateway-only process)."""
        if requested and requested in self.models:
            return self.models[requested]
        if requested and requested in self.aliases:
            return self.models[self.aliases[requested]]
        if not local_default and self.models and (not requested or requested in OPENAI_IMAGE_MODELS):
            return next(iter(self.models.values()))
        return None

    def check(self, local_names: set[str]) -> None:
        """Every local route names a served local model, and no name is taken twice."""
        for m in self.models.values():
            if m.name in local_names:
                raise ValueError(f"model name {m.name!r} is both a local model and a routed one")
            for r in m.routes:
                if r.provider is None and r.model not in local_names:
                    raise ValueError(f"model {m.name!r}: route to local model {r.model!r}, which is not served "
                                     "(add a [[models]] table for it, or source = \"builtin\")")


def _number(v: Any, where: str, *, positive: bool = True) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (positive and v <= 0) or v < 0:
        raise ValueError(f"{where} must be a {'positive' if positive else 'non-negative'} number, not {v!r}")
    return float(v)


def parse_provider(t: Any) -> Provider:
    if not isinstance(t, dict) or "name" not in t or "kind" not in t:
        raise ValueError("every [[providers]] table needs `name` and `kind`")
    name = str(t["name"])
    where = f"provider {name!r}"
    if "api_key" in t:
        raise ValueError(f"{where}: keys never go in the file; name an environment variable in api_key_env")
    unknown = sorted(set(t) - PROVIDER_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}")
    kind = str(t["kind"])
    if kind not in KINDS:
        raise ValueError(f"{where}: kind must be one of {', '.join(KINDS)}, not {kind!r}")
    base_url = t.get("base_url") or DEFAULT_BASE_URL.get(kind)
    if not base_url:
        raise ValueError(f"{where}: kind {kind!r} needs base_url")
    caps = t.get("capabilities", {})
    if not isinstance(caps, dict) or set(caps) - CAP_KEYS:
        raise ValueError(f"{where}: capabilities takes {sorted(CAP_KEYS)}")
    return Provider(
        name=name, kind=kind, base_url=str(base_url).rstrip("/"),
        api_key_env=str(t["api_key_env"]) if t.get("api_key_env") else None,
        timeout_s=_number(t.get("timeout_s", 120), f"{where}: timeout_s"),
        max_concurrency=int(_number(t.get("max_concurrency", 8), f"{where}: max_concurrency")),
        caps=dict(caps), pricing=parse_pricing(t["pricing"], name) if "pricing" in t else None,
        retries=int(_number(t.get("retries", 1), f"{where}: retries", positive=False)),
        breaker_failures=int(_number(t.get("breaker_failures", 3), f"{where}: breaker_failures")),
        breaker_cooldown_s=_number(t.get("breaker_cooldown_s", 30), f"{where}: breaker_cooldown_s"),
        api_version=str(t.get("api_version", "2025-04-01-preview")),
        max_retry_after_s=_number(t.get("max_retry_after_s", 10), f"{where}: max_retry_after_s", positive=False),
    )


def parse_routed(t: dict[str, Any], providers: dict[str, Provider]) -> RoutedModel:
    name = str(t["name"])
    where = f"model {name!r}"
    unknown = sorted(set(t) - ROUTED_MODEL_KEYS)
    if unknown:
        raise ValueError(f"{where}: a routed model takes {sorted(ROUTED_MODEL_KEYS)}; unknown keys {unknown}")
    strategy = str(t.get("strategy", "priority"))
    if strategy not in STRATEGIES:
        raise ValueError(f"{where}: strategy must be one of {', '.join(STRATEGIES)}, not {strategy!r}")
    raw = t["routes"]
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"{where}: routes must be a non-empty list of {{provider, model}} tables")
    routes = []
    for i, r in enumerate(raw):
        rw = f"{where}: routes[{i}]"
        if not isinstance(r, dict) or "model" not in r or set(r) - ROUTE_KEYS:
            raise ValueError(f"{rw} needs `model` (and optionally provider, weight, pricing)")
        prov = None
        if "provider" in r:
            prov = providers.get(str(r["provider"]))
            if prov is None:
                raise ValueError(f"{rw}: no [[providers]] table is named {r['provider']!r}")
        routes.append(Route(model=str(r["model"]), provider=prov,
                            weight=_number(r.get("weight", 1), f"{rw}.weight", positive=False),
                            pricing=parse_pricing(r["pricing"], name) if "pricing" in r else None))
    ttl = t.get("cache_ttl_s")
    return RoutedModel(name=name, routes=tuple(routes), strategy=strategy,
                       aliases=tuple(str(a) for a in t.get("aliases", ())),
                       cache_ttl_s=_number(ttl, f"{where}: cache_ttl_s") if ttl is not None else None,
                       pricing=parse_pricing(t["pricing"], name) if "pricing" in t else None)


def is_routed_table(t: Any) -> bool:
    return isinstance(t, dict) and "routes" in t


def load(path: Path | None) -> Catalogue:
    """The providers and routed models of a models file (local models: registry.py)."""
    if path is None:
        return Catalogue()
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"cannot read models file {path}: {exc}") from exc
    providers: dict[str, Provider] = {}
    for t in data.get("providers", []):
        p = parse_provider(t)
        if p.name in providers:
            raise ValueError(f"provider name {p.name!r} configured twice")
        providers[p.name] = p
    cat = Catalogue(providers=providers)
    for t in data.get("models", []):
        if not is_routed_table(t):
            continue
        m = parse_routed(t, providers)
        if m.name in cat.models or m.name in cat.aliases:
            raise ValueError(f"model name {m.name!r} configured twice")
        cat.models[m.name] = m
    for m in cat.models.values():
        for a in m.aliases:
            if a in cat.models or a in cat.aliases:
                raise ValueError(f"alias {a!r} of {m.name!r} is already taken")
            cat.aliases[a] = m.name
    return cat
