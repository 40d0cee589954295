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

    # -- batches --------------------------------------------------------------------
    @staticmethod
    def batch_key(job: Job) -> tuple[Any, ...]:
        """Jobs with equal keys run as one pipeline call. Prompts, negative prompts, seeds,
        input images and masks may differ; everything that shapes the denoising loop may not."""
        spec = job.spec
        mode = "inpaint" if job.edit_mask is not None else "img2img" if job.init_image is not None else "txt2img"
        return (mode, spec.gen_width, spec.gen_height, spec.steps, round(spec.guidance, 4),
                None if mode == "txt2img" else spec.strength)

    def run(self, job: Job) -> list[Image.Image]:
        return self.run_batch([job])[0]

    def run_batch(self, jobs: list[Job]) -> list[list[Image.Image]]:
        """One pipeline call for every image of every job. Image i of a job is seeded with
        `seed + i` on its own CPU generator, so it is the same batched or alone (up to
        the numerical noise of batched kernels; see tests)."""
        head = jobs[0].spec
        prompts: list[str] = []
        negatives: list[str] = []
        generators: list[torch.Generator] = []
        images: list[Image.Image] = []
        masks: list[Image.Image] = []
        for job in jobs:
            spec = job.spec
            seed = spec.seed if spec.seed is not None else secrets.randbelow(2**31)
            job.seed_used = seed
            job.pipeline_calls += 1
            for i in range(spec.n):
                prompts.append(spec.prompt)
                negatives.append(spec.negative_prompt or "")
                generators.append(torch.Generator(device="cpu").manual_seed(seed + i))
                if job.init_image is not None:
                    images.append(job.init_image)
                if job.edit_mask is not None:
                    masks.append(job.edit_mask)
        kwargs: dict[str, Any] = dict(
            prompt=prompts,
            negative_prompt=negatives if any(negatives) else None,
            num_images_per_prompt=1,
            num_inference_steps=head.steps,
            guidance_scale=head.guidance,
            generator=generators,
            output_type="pil",
            callback_on_step_end=self._callback(jobs),
        )
        if masks:
            pipe = self.inpaint
            kwargs.update(image=images, mask_image=masks, strength=1.0, width=head.gen_width, height=head.gen_height)
        elif images:
            pipe = self.i2i
            kwargs.update(image=images, strength=head.strength)
        else:
            pipe = self.t2i
            kwargs.update(width=head.gen_width, height=head.gen_height)
        with torch.inference_mode():
            out = pipe(**kwargs)
        flat = [im.convert("RGB") for im in out.images]
        result, at = [], 0
        for job in jobs:
            result.append(flat[at:at + job.spec.n])
            at += job.spec.n
        return result

    def _callback(self, jobs: list[Job]) -> Any:
        offsets, at = [], 0
        for job in jobs:
            offsets.append(at)
            at += job.spec.n
        plans: dict[int, list[int]] = {}

        def on_step_end(pipe: Any, step: int, timestep: Any, cb_kwargs: dict[str, Any]) -> dict[str, Any]:
            if all(j.cancel.is_set() for j in jobs):
                raise RunCancelled()
            total = int(getattr(pipe, "num_timesteps", jobs[0].spec.steps))
            for j, job in enumerate(jobs):
                if job.cancel.is_set():
                    continue
                if job.on_step is not None:
                    job.on_step(step + 1, total)
                if job.on_preview is None or not job.spec.partial_images:
                    continue
                if j not in plans:
                    plans[j] = partial_steps(total, job.spec.partial_images)
                if step in plans[j]:
                    latents = cb_kwargs["latents"][offsets[j]:offsets[j] + job.spec.n]
                    for i, im in enumerate(self._preview(pipe, latents)):
                        job.on_preview(i, plans[j].index(step), im)
            return cb_kwargs

        return on_step_end

    @staticmethod
    def _preview(pipe: Any, latents: torch.Tensor) -> list[Image.Image]:
        """The current latents decoded by the model's own VAE: a real intermediate image."""
        vae = pipe.vae
        scaled = latents.to(vae.dtype) / vae.config.scaling_factor
        decoded = vae.decode(scaled, return_dict=False)[0]
        return pipe.image_processor.postprocess(decoded, output_type="pil")
