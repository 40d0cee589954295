"""The model catalogue: what is served, under which names, with which defaults.

A models file is TOML with one [[models]] table per served model:

    [[models]]
    name = "sdxl"
    aliases = ["gpt-image-1"]
    backend = "diffusers"
    source = "/models/sdxl"          # hub id, local folder, or single .safetensors file
    native_size = 1024               # optional; per-family default otherwise
    quality = { low = [8, 5.0], medium = [20, 6.0], high = [40, 7.0] }

Without a models file the built-in imagegate-mini is served alone.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ModelNotFound
from .pricing import FREE, GPT_IMAGE_1, Pricing
from .pricing import parse as parse_pricing

if sys.version_info >= (3, 11):
    import tomllib
else:  # tomllib is 3.11+; tomli is the same parser, a dependency on 3.10 only
    import tomli as tomllib

# Every OpenAI image model name. Each resolves to the default model unless the models
# file claims it as an alias of another model.
OPENAI_IMAGE_MODELS = (
    "gpt-image-1",
    "gpt-image-1-mini",
    "gpt-image-1.5",
    "gpt-image-2",
    "gpt-image-2-2026-04-21",
    "chatgpt-image-latest",
    "dall-e-2",
    "dall-e-3",
)

@dataclass(frozen=True)
class Scaling:
    """How many replicas serve a model under `imagegate serve --engine ray` (ray_serve.py):
    a fixed `replicas` count, or Ray Serve autoscaling between `min_replicas` and
    `max_replicas` around `target_ongoing_requests` per replica. `num_gpus` is what each
    replica reserves (None: 1 when the model's device is CUDA, else 0); the one-process
    server ignores all of it."""

    replicas: int | None = None
    min_replicas: int | None = None
    max_replicas: int | None = None
    target_ongoing_requests: float | None = None
    num_gpus: float | None = None
    num_cpus: float | None = None

    @property
    def autoscaling(self) -> bool:
        return self.min_replicas is not None or self.max_replicas is not None

    @classmethod
    def parse(cls, table: dict[str, Any], model: str) -> Scaling:
        def number(key: str, integer: bool, low: float) -> Any:
            v = table.get(key)
            if v is None:
                return None
            if isinstance(v, bool) or not isinstance(v, int if integer else (int, float)) or v < low:
                kind = "an integer" if integer else "a number"
                raise ValueError(f"model {model!r}: {key} must be {kind} >= {low:g} (got {v!r})")
            return v

        s = cls(replicas=number("replicas", True, 1), min_replicas=number("min_replicas", True, 0),
                max_replicas=number("max_replicas", True, 1),
                target_ongoing_requests=number("target_ongoing_requests", False, 0.1),
                num_gpus=number("num_gpus", False, 0), num_cpus=number("num_cpus", False, 0))
        if s.replicas is not None and (s.autoscaling or s.target_ongoing_requests is not None):
            raise ValueError(f"model {model!r}: `replicas` is a fixed count; for autoscaling give "
                             "min_replicas / max_replicas / target_ongoing_requests instead")
        if s.target_ongoing_requests is not None and not s.autoscaling:
            raise ValueError(f"model {model!r}: target_ongoing_requests needs min_replicas and max_replicas")
        if s.autoscaling and (s.min_replicas is None or s.max_replicas is None):
            raise ValueError(f"model {model!r}: autoscaling needs both min_replicas and max_replicas")
        if s.min_replicas is not None and s.max_replicas is not None and s.min_replicas > s.max_replicas:
            raise ValueError(f"model {model!r}: min_replicas ({s.min_replicas}) > max_replicas ({s.max_replicas})")
        return s


SCALING_KEYS = frozenset(Scaling.__dataclass_fields__)


@dataclass(frozen=True)
class ModelConfig:
    name: str
    source: str
    backend: str = "diffusers"
    aliases: tuple[str, ...] = ()
    family: str | None = None  # the architecture; None: detected by the backend
    native_size: int | None = None  # None: the family's default
    size_multiple: int | None = None  # None: the family's default
    max_side: int = 4096
    quality: dict[str, tuple[int, float]] = field(default_factory=dict)  # empty: the family's presets
    # img2img strength per input_fidelity: how far from the input the model may go.
    strength: dict[str, float] = field(default_factory=lambda: {"low": 0.75, "high": 0.5})
    variation_strength: float = 0.6
    max_input_images: int = 16
    # Most images one pipeline call may carry (memory-bound on GPUs).
    max_batch_images: int = 8
    builtin: bool = False
    # LoRA adapters selectable per request by name: name -> .safetensors file or folder.
    loras: dict[str, str] = field(default_factory=dict)
    # Load at start-up (else on first use); either way subject to the memory budget.
    preload: bool = True
    # The backend kind's own keys of the table (devices, dtypes, speed settings, extra
    # checkpoints), parsed and checked by that backend (backends/diffusers/options.py).
    options: dict[str, Any] = field(default_factory=dict)
    # The models file's folder: the backend resolves relative paths in `options` against it.
    base_dir: str | None = None
    # Its price table (pricing.py); None: OpenAI's names cost what OpenAI charges, others are free.
    pricing: Pricing | None = None
    # Replicas under the Ray engine (its keys sit in the model's table, beside the others).
    scaling: Scaling = field(default_factory=Scaling)

    def preset(self, tier: str) -> tuple[int, float]:
        return self.quality[tier]

    def resolved(self, family: str, native_size: int, size_multiple: int,
                 quality: dict[str, tuple[int, float]]) -> ModelConfig:
        """Fill what the models file left out with the backend's defaults for the detected
        family (the backend knows its families; the registry does not)."""
        from dataclasses import replace

        return replace(self, family=family, native_size=self.native_size or native_size,
                       size_multiple=self.size_multiple or size_multiple, quality=self.quality or dict(quality))


def builtin_mini_config() -> ModelConfig:
    from . import mini

    return ModelConfig(
        name="imagegate-mini",
        source=str(mini.WEIGHTS_DIR),
        family="sd",
        native_size=mini.NATIVE_SIZE,
        size_multiple=16,
        quality=dict(mini.QUALITY_PRESETS),
        # Evaluated and benchmarked in float32 (docs/imagegate-mini.md); not bf16, whatever the CPU.
        # Traced UNet steps: bit-identical images, ~20% faster on one CPU thread (docs/performance.md).
        options={"dtype": "float32", "compile": "trace"},
        builtin=True,
    )


GENERIC_KEYS = set(ModelConfig.__dataclass_fields__) - {"builtin", "options", "base_dir", "scaling"}


def _config_from_table(table: dict[str, Any], base_dir: Path) -> ModelConfig:
    """One [[models]] table: the keys every model has are read here; the rest go to the
    backend kind as `options` (it refuses keys it does not know, at start-up)."""
    if "name" not in table or "source" not in table:
        raise ValueError("every [[models]] table needs `name` and `source` (or `routes`: catalogue.py)")
    if table["source"] == "builtin":  # the built-in model under the table's name, beside anything else
        from dataclasses import replace

        extra = sorted(set(table) - {"name", "source", "aliases", "pricing", "preload"} - SCALING_KEYS)
        if extra:
            raise ValueError(f"model {table['name']!r}: source = \"builtin\" takes name, aliases, pricing, "
                             f"preload and the replica keys ({', '.join(sorted(SCALING_KEYS))}); unknown keys {extra}")
        return replace(builtin_mini_config(), name=str(table["name"]),
                       aliases=tuple(str(a) for a in table.get("aliases", ())),
                       pricing=parse_pricing(table["pricing"], str(table["name"])) if "pricing" in table else None,
                       preload=bool(table.get("preload", True)), scaling=Scaling.parse(table, str(table["name"])))
    kw = {k: v for k, v in table.items() if k in GENERIC_KEYS}
    kw["scaling"] = Scaling.parse(table, str(table["name"]))
    options = {k: v for k, v in table.items() if k not in GENERIC_KEYS and k not in SCALING_KEYS}
    reserved = sorted(set(options) & {"builtin", "options", "base_dir"})
    if reserved:
        raise ValueError(f"model {kw['name']!r}: unknown keys {reserved}")
    source = str(kw["source"])
    if source.startswith((".", "/")) or (base_dir / source).exists():
        source = str((base_dir / source).resolve()) if not Path(source).is_absolute() else source
    kw["source"] = source
    kw["aliases"] = tuple(kw.get("aliases", ()))
    if "quality" in kw:
        q = {k: (int(v[0]), float(v[1])) for k, v in kw["quality"].items()}
        missing = {"low", "medium", "high"} - set(q)
        if missing:
            raise ValueError(f"model {kw['name']!r}: quality needs low, medium and high (missing {sorted(missing)})")
        kw["quality"] = q
    if "loras" in kw:
        kw["loras"] = {str(k): str((base_dir / str(v)).resolve()) if not Path(str(v)).is_absolute()
                       and (base_dir / str(v)).exists() else str(v) for k, v in kw["loras"].items()}
    if "pricing" in kw:
        kw["pricing"] = parse_pricing(kw["pricing"], str(kw["name"]))
    if "strength" in kw:
        kw["strength"] = {k: float(v) for k, v in kw["strength"].items()}
    return ModelConfig(**kw, options=options, base_dir=str(base_dir.resolve()))


def load_models_file(path: Path) -> list[ModelConfig]:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"cannot read models file {path}: {exc}") from exc
    tables = data.get("models", [])
    if not isinstance(tables, list) or not tables:
        raise ValueError(f"models file {path} has no [[models]] tables")
    # Tables with `routes` are routed names (catalogue.py), not local models.
    return [_config_from_table(t, path.parent) for t in tables if not (isinstance(t, dict) and "routes" in t)]


class Registry:
    """Name → ModelConfig. Loaded pipelines live in the backends, not here."""

    def __init__(self, configs: list[ModelConfig], default: str | None = None, *, allow_empty: bool = False,
                 gpu_hour_usd: float | None = None) -> None:
        # IMAGEGATE_GPU_HOUR_USD: local models without their own table cost their device time.
        self.device_pricing = Pricing(gpu_hour_usd=gpu_hour_usd, source="IMAGEGATE_GPU_HOUR_USD") \
            if gpu_hour_usd is not None else None
        # Empty only in a gateway-only process (every model routed upstream: catalogue.py).
        if not configs and not allow_empty:
            raise ValueError("no models configured")
        self.configs: dict[str, ModelConfig] = {}
        self.aliases: dict[str, str] = {}
        for c in configs:
            if c.name in self.configs:
                raise ValueError(f"model name {c.name!r} configured twice")
            self.configs[c.name] = c
        for c in configs:
            for a in c.aliases:
                if a in self.configs or a in self.aliases:
                    raise ValueError(f"alias {a!r} of {c.name!r} is already taken")
                self.aliases[a] = c.name
        self.default = default or (configs[0].name if configs else "")
        if configs and self.default not in self.configs:
            raise ValueError(f"default model {self.default!r} is not configured")
        for name in OPENAI_IMAGE_MODELS if configs else ():
            self.aliases.setdefault(name, self.default)

    def update(self, config: ModelConfig) -> None:
        """Replace a model's config with its resolved form once its backend has loaded."""
        self.configs[config.name] = config

    def pricing(self, model: ModelConfig, requested: str | None = None) -> Pricing:
        """The prices a request pays: the model's own table, else the server's GPU-hour rate
        (IMAGEGATE_GPU_HOUR_USD) when set, else gpt-image-1's published prices when the model
        or the name asked for is one of OpenAI's, else free."""
        if model.pricing is not None:
            return model.pricing
        if self.device_pricing is not None:
            return self.device_pricing
        if model.name in OPENAI_IMAGE_MODELS or requested in OPENAI_IMAGE_MODELS:
            return GPT_IMAGE_1
        return FREE

    def resolve(self, requested: str | None) -> ModelConfig:
        if (requested is None or requested == "") and self.default in self.configs:
            return self.configs[self.default]
        if requested in self.configs:
            return self.configs[requested]
        if requested in self.aliases:
            return self.configs[self.aliases[requested]]
        raise ModelNotFound(f"The model '{requested}' does not exist.", param="model", code="model_not_found")
