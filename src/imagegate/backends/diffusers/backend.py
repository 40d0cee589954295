"""DiffusersBackend: every family in families.py, from a diffusers folder, a hub id, or a
single .safetensors file.

One pipeline set per model per device: the checkpoint is loaded once and the pipelines
for its other modes share its components (`from_pipe`, no copy). Calls are serialised by
the model's worker, so the schedulers' per-call state is never touched by two requests
at once, and nothing shared (schedulers, adapters, attention processors) is mutated per
request.

Over 400 lines: one backend is one self-contained file behind the Backend protocol
(loading, optimisation and batching share the pipeline state); the stateless parts live
beside it: families.py, loading.py, options.py, planning.py, previews.py, tracing.py (and, for
the built-in model, mini.regions, mini.compose and mini.inset, which rewrite its prompts, lay them out and set an
edit's one thing into its mask)."""

from __future__ import annotations

import inspect
import logging
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ...engine.base import Capabilities, Job, JobRuntime, RunCancelled
from ...mini import compose
from ...mini.inset import Inset, plan_inset
from ...mini.regions import served_prompt
from ...normalize import ImageSpec
from ...registry import ModelConfig
from . import planning
from .families import FAMILIES, Family, family_for_class
from .loading import _image_only_processors, detect_family, pick_device, pick_dtype
from .options import DiffusersOptions
from .previews import decode_preview, partial_steps
from .tracing import trace_unet

log = logging.getLogger("imagegate.diffusers")


class DiffusersBackend:
    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self.name = config.name
        self.options = DiffusersOptions.parse(config.name, config.options, config.base_dir)
        self.device = pick_device(self.options.device)
        self.dtype = pick_dtype(self.options.dtype, self.device)
        self.family: Family | None = None
        self.pipes: dict[str, Any] = {}
        self.preview_vae: Any = None
        # The family of `inpaint_source` (FLUX.1 Fill beside FLUX.1 dev), for its own presets.
        self.inpaint_family: Family | None = None
        self.main: Any = None  # the loaded checkpoint's own pipeline (owns the LoRA adapters)
        self.segmenter: Any = None  # (CLIPSeg model, processor) when configured
        # The built-in model's prompts pass through its lexicon (mini.lexicon); others unchanged.
        self.rewrite_prompt: Callable[[str], str] = str

    @property
    def modes(self) -> frozenset[str]:
        """What the model can do, known from its family before its weights are loaded."""
        if self.family is None:
            return frozenset(self.pipes)
        return frozenset(self.family.modes) | ({"inpaint"} if self.options.inpaint_source else set())

    @property
    def capabilities(self) -> Capabilities:
        family = self.family
        return Capabilities(modes=self.modes, multi_image=bool(family and family.multi_image),
                            negative_prompt=family is None or family.negative_prompt,
                            segmenter=self.segmenter is not None or self.config.builtin)

    @property
    def loaded(self) -> bool:
        return bool(self.pipes)

    # -- loading -------------------------------------------------------------------
    def prepare(self) -> None:
        """Check the files and detect the family without loading weights, so a bad models
        file fails at start-up naming the model, and lazy models know their presets."""
        family = self._checked_family()
        self.family = family
        self.config = self.config.resolved(family.name, family.native_size, family.size_multiple, dict(family.quality))
        if self.options.segmenter and self.segmenter is None:
            self._load_segmenter(self.options.segmenter)

    def validate(self) -> None:
        """Files present, family known: no weights read (a hub id reads model_index.json).
        A pure check: prepare() is what adopts the family and its defaults."""
        self._checked_family()

    def _checked_family(self) -> Family:
        src = self.config.source
        local = Path(src)
        if local.exists() and local.is_dir() and not (local / "model_index.json").exists():
            raise ValueError(f"model {self.name!r}: {src} has no model_index.json (not a diffusers folder)")
        if not local.exists() and (src.startswith(("/", ".")) or src.endswith(".safetensors")):
            raise ValueError(f"model {self.name!r}: {src} does not exist")
        for extra in (self.options.inpaint_source, self.options.single_file_config, self.options.preview_vae):
            if extra and extra.startswith(("/", ".")) and not Path(extra).exists():
                raise ValueError(f"model {self.name!r}: {extra} does not exist")
        if self.config.family is not None and self.config.family not in FAMILIES:
            raise ValueError(f"model {self.name!r}: unknown family {self.config.family!r}; known: {sorted(FAMILIES)}")
        try:
            family = FAMILIES[self.config.family or detect_family(src)]
        except Exception as exc:  # whatever detection raised: a clear start-up error naming the model
            raise ValueError(f"model {self.name!r}: cannot detect the family of {src}: {exc}") from exc
        return family

    def _load_segmenter(self, source: str) -> None:
        """CLIPSeg is small (~150M parameters): loaded with the model's validation so that
        mask inference works before (and independently of) the diffusion weights."""
        from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor

        local = Path(source).exists()
        try:
            model = CLIPSegForImageSegmentation.from_pretrained(source, local_files_only=local)
            # transformers' decorated PreTrainedModel.to is typed as if unbound; device strings are valid.
            model = model.to(self.device).eval()  # type: ignore[arg-type]
            processor = CLIPSegProcessor.from_pretrained(source, local_files_only=local)
        except Exception as exc:  # whatever the loader raised: one clear start-up error naming the model
            raise ValueError(f"model {self.name!r}: cannot load segmenter {source}: {exc}") from exc
        self.segmenter = (model, processor)

    def segment(self, image: Image.Image, text: str) -> Image.Image | None:
        """The region of `image` that `text` describes, as an 'L' edit mask (255 = edit) at
        the image's size, slightly dilated to cover edges; None when nothing scores above
        the threshold. The built-in model, without CLIPSeg, reads its flat scenes by colour
        (mini.regions)."""
        from PIL import ImageFilter

        if self.segmenter is None:
            from ...mini.regions import infer_region

            return infer_region(image, text)
        model, processor = self.segmenter
        inputs = processor(text=[text], images=[image.convert("RGB")], return_tensors="pt", padding=True)
        with torch.inference_mode():
            logits = model(**{k: v.to(self.device) for k, v in inputs.items()}).logits
        prob = torch.sigmoid(logits.float()).reshape(1, 1, *logits.shape[-2:])
        prob = torch.nn.functional.interpolate(prob, size=(image.height, image.width), mode="bilinear")[0, 0]
        region = (prob >= self.options.segment_threshold).cpu().numpy()
        if not region.any():
            return None
        mask = Image.fromarray((region * 255).astype("uint8"), "L")
        return mask.filter(ImageFilter.MaxFilter(max(3, (min(image.size) // 64) | 1)))

    def estimated_bytes(self) -> int:
        """Weights on disk, a proxy for memory before loading (measured exactly after)."""
        total = 0
        for src in (self.config.source, self.options.inpaint_source):
            if not src or not Path(src).exists():
                continue
            p = Path(src)
            files = [p] if p.is_file() else [f for f in p.rglob("*") if f.suffix in (".safetensors", ".bin")]
            total += sum(f.stat().st_size for f in files)
        return total

    def memory_bytes(self) -> int:
        """Bytes of parameters and buffers of every loaded component (shared ones once)."""
        seen: set[int] = set()
        total = 0
        modules = [c for p in self.pipes.values() for c in p.components.values() if isinstance(c, torch.nn.Module)]
        if self.preview_vae is not None:
            modules.append(self.preview_vae)
        for m in modules:
            for t in list(m.parameters()) + list(m.buffers()):
                if id(t) not in seen:
                    seen.add(id(t))
                    total += t.numel() * t.element_size()
        return total

    def unload(self) -> None:
        import gc

        self.pipes.clear()
        self.preview_vae = None
        gc.collect()
        if self.device == "cuda":
            torch.cuda.empty_cache()
        log.info("unloaded %s", self.name)

    def load(self) -> None:
        import diffusers

        if self.family is None:
            self.prepare()
        assert self.family is not None
        family = self.family
        src = self.config.source
        local = Path(src)
        try:
            main = self._load_main(diffusers, family, src, local.exists())
            built: dict[str, Any] = {type(main).__name__: main}
            for mode, cls_name in family.modes.items():
                if cls_name not in built:
                    # from_pipe casts every shared component to float32 unless told the dtype.
                    built[cls_name] = getattr(diffusers, cls_name).from_pipe(main, dtype=self.dtype)
                self.pipes[mode] = built[cls_name]
            if self.options.inpaint_source:
                inp = diffusers.DiffusionPipeline.from_pretrained(
                    self.options.inpaint_source, torch_dtype=self.dtype,
                    local_files_only=Path(self.options.inpaint_source).exists(),
                    **self._shared_with_inpaint(main))
                self.pipes["inpaint"] = inp
                fam = family_for_class(type(inp).__name__)
                self.inpaint_family = FAMILIES[fam] if fam else None
            # LoRA adapters are loaded once into the shared denoiser; each batch selects its
            # own (see _select_lora).
            for name, path in self.config.loras.items():
                main.load_lora_weights(path, adapter_name=name)
            if self.config.loras:
                main.disable_lora()
            self.main = main
            if self.config.builtin:
                from ...mini.lexicon import Lexicon, known_words

                self.rewrite_prompt = Lexicon.default().rewriter(known_words(main.tokenizer.get_vocab()))
            if self.options.preview_vae:
                self.preview_vae = diffusers.AutoencoderTiny.from_pretrained(
                    self.options.preview_vae, torch_dtype=self.dtype,
                    local_files_only=Path(self.options.preview_vae).exists())
        except Exception as exc:  # any loader failure becomes one clear start-up error
            raise ValueError(f"model {self.name!r}: cannot load {src}: {type(exc).__name__}: {exc}") from exc
        for pipe in {id(p): p for p in self.pipes.values()}.values():
            pipe.to(self.device)
            pipe.set_progress_bar_config(disable=True)
        if self.preview_vae is not None:
            self.preview_vae.to(self.device)
        self._optimize()
        self._warm_up()
        log.info("loaded %s (%s) from %s on %s (%s): %s", self.name, family.name, src, self.device, self.dtype,
                 ", ".join(sorted(self.pipes)))

    def _optimize(self) -> None:
        """The speed settings of the models file (performance.md documents each):
        channels_last for UNets, VAE tiling/slicing, step caching, fp8, torch.compile, tracing.
        Each applies once at load, to components shared by every mode's pipeline."""
        cfg = self.options
        # A traced graph fixes the Python branches it went through: per-batch LoRA switching,
        # step-cache hooks and quantised tensors would be frozen in their first state.
        clash = [k for k, on in (("loras", self.config.loras), ("cache", cfg.cache != "off"), ("fp8", cfg.fp8)) if on]
        if cfg.compile == "trace" and clash:
            raise ValueError(f"model {self.name!r}: compile = \"trace\" cannot be combined with {', '.join(clash)}")
        main = self.main or next(iter(self.pipes.values()))
        denoiser = getattr(main, "unet", None) or getattr(main, "transformer", None)
        channels_last = cfg.channels_last if cfg.channels_last is not None else self.device == "cuda"
        if channels_last and getattr(main, "unet", None) is not None:
            main.unet.to(memory_format=torch.channels_last)
        vae = getattr(main, "vae", None)
        if vae is not None:
            if cfg.vae_tiling and hasattr(vae, "enable_tiling"):
                vae.enable_tiling()
            if cfg.vae_slicing and hasattr(vae, "enable_slicing"):
                vae.enable_slicing()
        if cfg.cache != "off":
            from diffusers import FirstBlockCacheConfig

            if denoiser is None or not hasattr(denoiser, "enable_cache"):
                raise ValueError(f"model {self.name!r}: step caching is not available for {type(denoiser).__name__}")
            denoiser.enable_cache(FirstBlockCacheConfig(threshold=cfg.cache_threshold))
        if cfg.fp8:
            if self.device != "cuda":
                raise ValueError(f"model {self.name!r}: fp8 needs a CUDA GPU (compute capability 8.9+)")
            from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, quantize_

            quantize_(denoiser, Float8DynamicActivationFloat8WeightConfig())
        if cfg.compile == "trace":
            if not trace_unet(getattr(main, "unet", None)):
                log.warning("model %r: compile = \"trace\" applies to UNets; %s runs eagerly", self.name,
                            type(denoiser).__name__)
        elif cfg.compile == "regional" and denoiser is not None and getattr(type(denoiser), "_repeated_blocks", None):
            # Compile each repeated block once and reuse it: seconds of cold start instead of minutes.
            denoiser.compile_repeated_blocks(fullgraph=True)
        elif cfg.compile in ("regional", "full", "graphs"):
            # "graphs": inductor's reduce-overhead mode captures CUDA graphs, which pays for
            # few-step, small-batch workloads where kernel launches dominate (SD-Turbo).
            mode = "reduce-overhead" if cfg.compile == "graphs" else None
            compiled = torch.compile(denoiser, fullgraph=False, mode=mode)
            for pipe in self.pipes.values():
                for attr in ("unet", "transformer"):
                    if getattr(pipe, attr, None) is denoiser:
                        setattr(pipe, attr, compiled)

    def _warm_up(self) -> None:
        """Run the configured sizes once before /health says ready (compilation, autotuning
        and allocator warm-up happen here, not in a user's request)."""
        if not self.options.warmup_sizes or "txt2img" not in self.pipes:
            return
        from ...normalize import build_spec, parse_size

        for size in self.options.warmup_sizes:
            parse_size(size)
            spec = build_spec(task="generate", model=self.config, requested_model=None, prompt="warm-up", n=1,
                              size=size, quality="low", background=None, output_format="png", output_compression=None,
                              response_format="b64_json", stream=False, partial_images=None, seed=0)
            self.run(self.plan(spec))

    def _shared_with_inpaint(self, main: Any) -> dict[str, Any]:
        """FLUX.1 Fill ships the same text encoders, tokenizers and VAE as FLUX.1: reuse the
        loaded ones instead of holding a second copy (T5-XXL alone is ~10 GB in bf16)."""
        src = self.options.inpaint_source
        if not src or self.family is None or not self.family.name.startswith("flux"):
            return {}
        try:
            if detect_family(src) != "flux-fill":
                return {}
        except Exception:  # noqa: BLE001 - then load it whole; errors surface in from_pretrained
            return {}
        names = ("text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "vae")
        return {n: main.components[n] for n in names if main.components.get(n) is not None}

    def _load_main(self, diffusers: Any, family: Family, src: str, local: bool) -> Any:
        if src.endswith(".safetensors"):
            first = next(iter(family.modes.values()))
            cls = getattr(diffusers, first)
            kw: dict[str, Any] = {"torch_dtype": self.dtype}
            if self.options.single_file_config:
                kw.update(config=self.options.single_file_config, local_files_only=True)
            return cls.from_single_file(src, **kw)
        return diffusers.DiffusionPipeline.from_pretrained(src, torch_dtype=self.dtype, local_files_only=local,
                                                         **_image_only_processors(src, local))

    # -- planning and batches ---------------------------------------------------------
    def plan(self, spec: ImageSpec, mode: str = "txt2img", images: Sequence[Image.Image] = (),
             mask: Image.Image | None = None) -> Job:
        """`spec` at this family's bucket, its inputs laid out for `mode` (planning.plan)."""
        return planning.plan(self.config, self.capabilities.multi_image, spec, mode, images, mask)

    @staticmethod
    def batch_key(job: Job) -> tuple[Any, ...]:
        """Jobs with equal keys run as one pipeline call. Prompts, negative prompts, seeds,
        input images and masks may differ; everything that shapes the denoising loop may
        not. Native edits carry per-request reference sets, so they never share a call."""
        spec = job.spec
        mode = job.mode
        return (mode, spec.gen_width, spec.gen_height, spec.steps, round(spec.guidance, 4),
                spec.strength if mode in ("img2img",) else None, id(job) if mode == "edit" else None,
                spec.lora, spec.lora_scale if spec.lora else None)

    def run(self, job: Job, runtime: JobRuntime | None = None) -> list[Image.Image]:
        return self.run_batch([job], [runtime if runtime is not None else JobRuntime()])[0]

    def run_batch(self, jobs: list[Job], runtimes: list[JobRuntime] | None = None) -> list[list[Image.Image]]:
        """One pipeline call for every image of every job. Image i of a job is seeded with
        `seed + i` on its own CPU generator, so it is the same batched or alone (up to
        the numerical noise of batched kernels; see tests). Without runtimes (a direct
        call, a benchmark) nothing is cancelled or previewed."""
        assert self.family is not None, "load() first"
        runtimes = runtimes if runtimes is not None else [JobRuntime() for _ in jobs]
        assert len(runtimes) == len(jobs), "one runtime per job"
        family = self.family
        head = jobs[0]
        spec = head.spec
        pipe = self.pipes[head.mode]
        params = inspect.signature(pipe.__call__).parameters
        prompts: list[str] = []
        negatives: list[str] = []
        generators: list[torch.Generator] = []
        images: list[Image.Image] = []
        masks: list[Image.Image] = []
        layouts: list[list[compose.Layout | None]] = []  # per job, per image: several things, one picture each
        for job, runtime in zip(jobs, runtimes, strict=True):
            seed = job.spec.seed if job.spec.seed is not None else secrets.randbelow(2**31)
            runtime.seed_used = seed
            prompt = job.spec.prompt
            if self.config.builtin:  # "add a star" restated as the scene it learnt to draw, then its lexicon
                prompt = served_prompt(prompt, self.rewrite_prompt, job.init_image, job.edit_mask)
            layouts.append([self._layout(job, prompt, seed + i) for i in range(job.spec.n)])
            for i, layout in enumerate(layouts[-1]):
                for part in compose.parts(layout, prompt):
                    prompts.append(part)
                    negatives.append(job.spec.negative_prompt or "")
                    generators.append(torch.Generator(device="cpu").manual_seed(seed + i))
                    if job.init_image is not None:
                        images.append(job.init_image)
                    if job.edit_mask is not None:
                        masks.append(layout.canvas_mask() if isinstance(layout, Inset) else job.edit_mask)
        kwargs: dict[str, Any] = {
            "num_inference_steps": spec.steps,
            "generator": generators,
            "output_type": "pil",
            family.cfg_param: self._guidance(head),
        }
        if head.mode == "edit":
            # Native editing: one request, its reference image(s), n samples.
            refs = list(head.references)
            kwargs.update(prompt=spec.prompt, num_images_per_prompt=spec.n,
                          image=refs if family.multi_image else refs[0])
            negatives = negatives[: 1]
        else:
            kwargs.update(prompt=prompts, num_images_per_prompt=1)
        if "negative_prompt" in params and family.negative_prompt:
            neg = negatives if head.mode != "edit" else negatives[0]
            if family.cfg_param == "true_cfg_scale":
                # Qwen-Image applies CFG only when a negative prompt is given: " " is the
                # documented neutral one.
                neg = [n or " " for n in neg] if isinstance(neg, list) else (neg or " ")
                kwargs["negative_prompt"] = neg
            elif any(negatives):
                kwargs["negative_prompt"] = neg
        if head.mode == "inpaint":
            kwargs.update(image=images, mask_image=masks, strength=1.0)
        elif head.mode == "img2img":
            kwargs.update(image=images, strength=spec.strength)
        if "height" in params:
            # img2img too: the init image is already at the bucket, and FluxImg2ImgPipeline
            # otherwise resizes it to a 1024x1024 default, whatever the aspect.
            kwargs.update(height=spec.gen_height, width=spec.gen_width)
        if "max_area" in params:
            # Kontext rescales height x width to max_area (default 1024²), which can move it off
            # our bucket (and off the size previews unpack at): the bucket's own area keeps it.
            kwargs["max_area"] = spec.gen_height * spec.gen_width
        if family.max_sequence_length and "max_sequence_length" in params:
            kwargs["max_sequence_length"] = family.max_sequence_length
        if "use_resolution_binning" in params:
            kwargs["use_resolution_binning"] = False  # our own buckets already fit the model
        if "_auto_resize" in params:
            kwargs["_auto_resize"] = False  # keep the bucket we chose (Kontext)
        self._attach_callback(kwargs, params, jobs, runtimes, layouts)
        self._select_lora(spec.lora, spec.lora_scale)
        with torch.inference_mode():
            out = pipe(**kwargs)
        flat = [im.convert("RGB") for im in out.images]
        result, at = [], 0
        for job, mine in zip(jobs, layouts, strict=True):
            took = compose.pictures(mine)
            result.append([self._extend(job, im) for im in compose.gather(mine, flat[at:at + took])])
            at += took
        return result

    def _layout(self, job: Job, prompt: str, seed: int) -> compose.Layout | None:
        """How the built-in model serves one image of ``job``: text-to-image laid out as things (one
        picture each, ``mini.compose``); an inpainting that asks for one thing drawn alone and set into the
        mask (``mini.inset``); anything else (another model, img2img, a prompt the reader declines) None."""
        if not self.config.builtin:
            return None
        if job.mode == "txt2img":
            return compose.plan(prompt, seed)
        if job.mode == "inpaint" and job.init_image is not None and job.edit_mask is not None:
            return plan_inset(prompt, job.init_image, job.edit_mask)
        return None

    def _extend(self, job: Job, img: Image.Image) -> Image.Image:
        """The built-in model's square txt2img picture extended to the asked aspect
        (planning.plan generated it at the native square)."""
        if job.mode != "txt2img" or not self.config.builtin:
            return img
        return planning.extend_scene(img, job.spec.width, job.spec.height)

    def _guidance(self, job: Job) -> float:
        """The preset's guidance belongs to the main checkpoint; a separate inpainting
        checkpoint has its own (FLUX.1 Fill is distilled for 30, where dev's preset is 3.5
        and schnell's 0). A guidance the request set itself (any other value) is kept."""
        spec = job.spec
        inp = self.inpaint_family
        if job.mode == "inpaint" and inp is not None and spec.guidance == self.config.quality[spec.quality][1]:
            return inp.quality[spec.quality][1]
        return spec.guidance

    def _select_lora(self, name: str | None, scale: float) -> None:
        """Activate this batch's adapter (or none). This touches the shared denoiser, which is
        safe here and only here: calls into a model are serialised on its one worker thread
        and a batch never mixes adapters (they are in the batching key), so no request can
        observe another's adapter."""
        if not self.config.loras or self.main is None:
            return
        if name is None:
            self.main.disable_lora()
        else:
            self.main.enable_lora()
            self.main.set_adapters([name], adapter_weights=[scale])

    # -- progress, cancellation, previews -------------------------------------------
    def _attach_callback(self, kwargs: dict[str, Any], params: Any, jobs: list[Job], runtimes: list[JobRuntime],
                         layouts: list[list[compose.Layout | None]]) -> None:
        step_end = self._on_step(jobs, runtimes, layouts)
        if "callback_on_step_end" in params:
            kwargs["callback_on_step_end"] = lambda pipe, step, t, kw: step_end(pipe, step, kw["latents"]) or kw
        elif "callback" in params:  # older pipelines (PixArt-Σ): callback(step, timestep, latents)
            pipe = self.pipes[jobs[0].mode]
            kwargs.update(callback=lambda step, t, latents: step_end(pipe, step, latents), callback_steps=1)

    def _on_step(self, jobs: list[Job], runtimes: list[JobRuntime], layouts: list[list[compose.Layout | None]]) -> Any:
        offsets, counts, at = [], [], 0  # where each job's pictures are in the batch (a layout takes several)
        for mine in layouts:
            offsets.append(at)
            counts.append(compose.pictures(mine))
            at += counts[-1]
        plans: dict[int, list[int]] = {}

        def step_end(pipe: Any, step: int, latents: torch.Tensor) -> None:
            if all(r.cancel.is_set() for r in runtimes):
                raise RunCancelled()
            total = int(getattr(pipe, "num_timesteps", 0) or jobs[0].spec.steps)
            for j, (job, runtime) in enumerate(zip(jobs, runtimes, strict=True)):
                if runtime.cancel.is_set():
                    continue
                if runtime.on_step is not None:
                    runtime.on_step(step + 1, total)
                if runtime.on_preview is None or not job.spec.partial_images:
                    continue
                if j not in plans:
                    plans[j] = partial_steps(total, job.spec.partial_images)
                if step in plans[j]:
                    mine = latents[offsets[j]:offsets[j] + counts[j]]
                    for i, im in enumerate(compose.gather(layouts[j], self.preview(pipe, mine, job, extend=False))):
                        runtime.on_preview(i, plans[j].index(step), self._extend(job, im))

        return step_end

    def preview(self, pipe: Any, latents: torch.Tensor, job: Job, extend: bool = True) -> list[Image.Image]:
        """The current latents of `job` as pictures (previews.decode_preview)."""
        assert self.family is not None
        images = decode_preview(pipe, latents, job.spec, self.family.latents, self.preview_vae)
        return [self._extend(job, im) for im in images] if extend else images
