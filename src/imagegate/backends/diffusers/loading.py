"""Loading helpers for diffusers checkpoints: the device and dtype to run on, the family of
a checkpoint (a diffusers folder, a hub id, or a single .safetensors file), and processor
set-up that keeps multimodal families image-only."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .families import FAMILIES, SINGLE_FILE_TYPES, family_for_class

if TYPE_CHECKING:
    from transformers.processing_utils import ProcessorMixin


def pick_device(requested: str) -> str:
    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(requested: str, device: str) -> torch.dtype:
    if requested != "auto":
        return {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
                "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}[requested]
    if device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device == "cpu" and cpu_has_native_bf16():
        # Measured 2026-11-21 on an AMD EPYC with avx512_bf16, 1 thread: a 32x32-latent
        # SD-style UNet ran 1.38x faster in bf16 than fp32 (see bench/RESULTS.md).
        return torch.bfloat16
    return torch.float32


def cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))


def detect_family(source: str) -> str:
    """The family of a checkpoint: model_index.json's class name, or a single file's keys."""
    path = Path(source)
    if path.suffix == ".safetensors":
        from diffusers.loaders.single_file_utils import infer_diffusers_model_type
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            keys = dict.fromkeys(f.keys())
        # infer_diffusers_model_type only looks at key names and a few shapes; give it the
        # shapes it reads without loading every tensor.
        checkpoint = _shape_view(path, keys)
        kind = infer_diffusers_model_type(checkpoint)
        if kind == "v1" and not any(k.startswith("model.diffusion_model.") for k in keys):
            # "v1" is infer_diffusers_model_type's fallback for any file it does not know
            # (a LoRA, a bare denoiser in diffusers layout): refuse it here, not deep in loading.
            raise ValueError(f"{source}: not a recognised single-file checkpoint (no model.diffusion_model.* keys)")
        if kind not in SINGLE_FILE_TYPES:
            raise ValueError(f"{source}: single-file checkpoints of type {kind!r} are not supported")
        return SINGLE_FILE_TYPES[kind]
    if path.is_dir():
        index = json.loads((path / "model_index.json").read_text())
    else:
        from diffusers import DiffusionPipeline

        index = DiffusionPipeline.load_config(source)
    cls = index.get("_class_name", "")
    in_channels = None
    if path.is_dir() and (path / "unet" / "config.json").exists():
        in_channels = json.loads((path / "unet" / "config.json").read_text()).get("in_channels")
    fam = family_for_class(cls, in_channels)
    if fam is None:
        raise ValueError(f"{source}: pipeline class {cls!r} is not a supported family; known: {sorted(FAMILIES)}")
    return fam


def _shape_view(path: Path, keys: dict[str, None]) -> dict[str, Any]:
    from safetensors import safe_open

    class _Lazy(dict):  # type: ignore[type-arg]
        def __getitem__(self, key: str) -> Any:
            if not dict.__contains__(self, key):
                raise KeyError(key)
            with safe_open(str(path), framework="pt") as f:
                return f.get_tensor(key)

        # dict.get would skip __getitem__ and answer None for a present key
        # (infer_diffusers_model_type reads some keys with .get).
        def get(self, key: str, default: Any = None) -> Any:
            if key in self:
                return self[key]
            return default

    return _Lazy(keys)


def _image_only_processors(src: str, local: bool) -> dict[str, Any]:
    """Vision-language processors loaded without their video processor when torchvision is
    missing. transformers' Qwen2-VL processor (Qwen-Image-Edit shows the reference images to
    its Qwen2.5-VL text encoder through it) insists on a video processor, and video
    processors import torchvision, which nothing else here needs and which has no wheel for
    every CPU torch build. The edit pipelines never pass videos, so an image-only processor
    (its image processor's PIL backend, same tokenizer) serves them unchanged."""
    from transformers.utils.import_utils import is_torchvision_available

    if is_torchvision_available():
        return {}
    import transformers
    from transformers.processing_utils import ProcessorMixin

    path = Path(src)
    if path.suffix == ".safetensors":
        return {}
    if path.is_dir():
        index = json.loads((path / "model_index.json").read_text())
    else:
        from diffusers import DiffusionPipeline

        index = DiffusionPipeline.load_config(src)
    out: dict[str, Any] = {}
    for name, entry in index.items():
        if not (isinstance(entry, list) and len(entry) == 2 and entry[0] == "transformers"):
            continue
        cls = getattr(transformers, str(entry[1]), None)
        if not (isinstance(cls, type) and issubclass(cls, ProcessorMixin)):
            continue
        if list(inspect.signature(cls.__init__).parameters)[1:4] != ["image_processor", "tokenizer", "video_processor"]:
            continue
        out[name] = _without_video(cls).from_pretrained(src, subfolder=name, local_files_only=local)
    return out


def _without_video(cls: type[ProcessorMixin]) -> type[ProcessorMixin]:
    """`cls` with no video_processor slot (ProcessorMixin reads its slots from __init__'s signature)."""

    class ImageOnly(cls):  # type: ignore[valid-type,misc]  # a base chosen at run time
        def __init__(self, image_processor: Any = None, tokenizer: Any = None, chat_template: Any = None,
                     **kwargs: Any) -> None:
            super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

    ImageOnly.__name__ = ImageOnly.__qualname__ = cls.__name__
    return ImageOnly
