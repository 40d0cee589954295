"""The diffusers backend's own keys of a `[[models]]` table (everything the registry does
not know): devices and dtypes, speed settings, extra checkpoints. Parsed and checked here,
so a typo is a start-up error naming the model and the key."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

COMPILE_MODES = ("off", "regional", "full", "graphs", "trace")
CACHE_MODES = ("off", "first-block")
# Keys holding a path: a relative one is resolved against the models file's folder.
PATH_KEYS = ("inpaint_source", "single_file_config", "preview_vae", "segmenter")


@dataclass(frozen=True)
class DiffusersOptions:
    device: str = "auto"
    dtype: str = "auto"
    # A text-prompted segmentation model (CLIPSeg, transformers format): mask-less edits on
    # families without native editing inpaint the region it finds for the prompt.
    segmenter: str | None = None
    segment_threshold: float = 0.4
    # Speed settings (docs/performance.md): None/off defaults are the safe ones; GPU
    # users opt in after measuring on their card with bench/bench_engine.py.
    channels_last: bool | None = None  # None: on for UNets on CUDA
    compile: str = "off"  # off | regional (repeated blocks) | full | graphs (full + CUDA graphs) | trace (tracing.py)
    vae_tiling: bool = False
    vae_slicing: bool = False
    cache: str = "off"  # off | first-block (diffusers' first-block cache hook; a quality/speed trade)
    cache_threshold: float = 0.1
    fp8: bool = False  # torchao float8 dynamic quantisation of the denoiser (CUDA, DiT families)
    warmup_sizes: tuple[str, ...] = ()  # sizes generated once at load, before /health says ready
    # A companion inpainting checkpoint (FLUX.1 Fill beside FLUX.1 dev).
    inpaint_source: str | None = None
    # For a single .safetensors file: a local diffusers folder holding the component configs
    # and tokenizers (no weights needed), so loading never touches the network.
    single_file_config: str | None = None
    # A tiny autoencoder (e.g. TAESD) for cheap streaming previews; default: the model's VAE.
    preview_vae: str | None = None

    @classmethod
    def parse(cls, model: str, options: Mapping[str, Any], base_dir: str | None = None) -> DiffusersOptions:
        known = {f.name for f in fields(cls)}
        unknown = set(options) - known
        if unknown:
            raise ValueError(f"model {model!r}: unknown keys {sorted(unknown)}")
        kw = dict(options)
        for key in PATH_KEYS:
            if isinstance(kw.get(key), str) and base_dir is not None:
                kw[key] = _resolve(kw[key], Path(base_dir))
        if "warmup_sizes" in kw:
            kw["warmup_sizes"] = tuple(str(s) for s in kw["warmup_sizes"])
        if kw.get("compile", "off") not in COMPILE_MODES:
            raise ValueError(f"model {model!r}: compile must be off, regional, full, graphs or trace")
        if kw.get("cache", "off") not in CACHE_MODES:
            raise ValueError(f"model {model!r}: cache must be off or first-block")
        return cls(**kw)


def _resolve(value: str, base_dir: Path) -> str:
    if Path(value).is_absolute() or not (value.startswith(".") or (base_dir / value).exists()):
        return value  # absolute, or a hub id
    return str((base_dir / value).resolve())
