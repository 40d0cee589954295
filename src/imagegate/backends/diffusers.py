"""Local diffusers pipelines (Stable-Diffusion-format folders and hub ids).

One pipeline set per model per device: the text-to-image pipeline is loaded once, and
the image-to-image and inpainting pipelines share its components (`from_pipe`, no copy).
Calls are serialised by the model's worker, so the schedulers' per-call state is never
touched by two requests at once; nothing shared is mutated per request."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ..registry import ModelConfig
from . import Job, RunCancelled

log = logging.getLogger("imagegate.diffusers")


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
    return torch.float32


def partial_steps(total: int, partials: int) -> list[int]:
    """Step indices after which previews are sent: evenly spaced, never the last step
    (the final image is the completed event)."""
    if partials <= 0 or total <= 1:
        return []
    steps = sorted({max(0, min(total - 2, round(total * (i + 1) / (partials + 1)) - 1)) for i in range(partials)})
    return steps


class DiffusersBackend:
    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self.name = config.name
        self.device = pick_device(config.device)
        self.dtype = pick_dtype(config.dtype, self.device)
        self.t2i: Any = None
        self.i2i: Any = None
        self.inpaint: Any = None

    def load(self) -> None:
        from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting, DiffusionPipeline

        src = self.config.source
        local = Path(src)
        if local.exists() and local.is_dir() and not (local / "model_index.json").exists():
            raise ValueError(f"model {self.name!r}: {src} has no model_index.json (not a diffusers folder)")
        if not local.exists() and (src.startswith(("/", ".")) or src.endswith(".safetensors")):
            raise ValueError(f"model {self.name!r}: {src} does not exist")
        try:
            pipe = DiffusionPipeline.from_pretrained(src, torch_dtype=self.dtype, local_files_only=local.exists())
        except Exception as exc:  # noqa: BLE001 - any loader failure becomes one clear start-up error
            raise ValueError(f"model {self.name!r}: cannot load {src}: {exc}") from exc
        pipe.to(self.device)
        pipe.set_progress_bar_config(disable=True)
        self.t2i = pipe
        self.i2i = AutoPipelineForImage2Image.from_pipe(pipe)
        self.inpaint = AutoPipelineForInpainting.from_pipe(pipe)
        for p in (self.i2i, self.inpaint):
            p.set_progress_bar_config(disable=True)
        log.info("loaded %s from %s on %s (%s)", self.name, src, self.device, self.dtype)

    # -- one job ------------------------------------------------------------------
    def run(self, job: Job) -> list[Image.Image]:
        spec = job.spec
        seed = spec.seed if spec.seed is not None else secrets.randbelow(2**31)
        job.seed_used = seed
        generators = [torch.Generator(device="cpu").manual_seed(seed + i) for i in range(spec.n)]
        kwargs: dict[str, Any] = dict(
            prompt=spec.prompt,
            negative_prompt=spec.negative_prompt,
            num_images_per_prompt=spec.n,
            num_inference_steps=spec.steps,
            guidance_scale=spec.guidance,
            generator=generators,
            output_type="pil",
            callback_on_step_end=self._callback(job),
        )
        if job.edit_mask is not None:
            pipe = self.inpaint
            kwargs.update(image=job.init_image, mask_image=job.edit_mask, strength=1.0,
                          width=spec.gen_width, height=spec.gen_height)
        elif job.init_image is not None:
            pipe = self.i2i
            kwargs.update(image=job.init_image, strength=spec.strength)
        else:
            pipe = self.t2i
            kwargs.update(width=spec.gen_width, height=spec.gen_height)
        job.pipeline_calls += 1
        with torch.inference_mode():
            out = pipe(**kwargs)
        return [im.convert("RGB") for im in out.images]

    def _callback(self, job: Job) -> Any:
        spec = job.spec
        state: dict[str, Any] = {"at": None}

        def on_step_end(pipe: Any, step: int, timestep: Any, cb_kwargs: dict[str, Any]) -> dict[str, Any]:
            if job.cancel.is_set():
                raise RunCancelled()
            if job.on_step is not None:
                job.on_step(step + 1, int(getattr(pipe, "num_timesteps", spec.steps)))
            if job.on_preview is not None and spec.partial_images:
                if state["at"] is None:
                    state["at"] = partial_steps(int(getattr(pipe, "num_timesteps", spec.steps)), spec.partial_images)
                if step in state["at"]:
                    index = state["at"].index(step)
                    for i, im in enumerate(self._preview(pipe, cb_kwargs["latents"])):
                        job.on_preview(i, index, im)
            return cb_kwargs

        return on_step_end

    @staticmethod
    def _preview(pipe: Any, latents: torch.Tensor) -> list[Image.Image]:
        """The current latents decoded by the model's own VAE: a real intermediate image."""
        vae = pipe.vae
        scaled = latents.to(vae.dtype) / vae.config.scaling_factor
        decoded = vae.decode(scaled, return_dict=False)[0]
        return pipe.image_processor.postprocess(decoded, output_type="pil")
