"""ImageService: the whole flow of one request, as numbered steps. Generations, edits
and variations share it; streaming differs only in how results leave (SSE events)."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from PIL import Image

from . import metering, postprocess
from .backends import Job
from .db import Ledger, RequestRow
from .errors import Cancelled, ImagegateError, InvalidRequest
from .admission import Budget
from .inputs import InputImage, decode_data_url, decode_image, decode_mask, probe_size
from .normalize import ImageSpec, Task, build_spec
from .protocol import (
    CompletedEvent,
    CreateImageEditForm,
    CreateImageEditJSONRequest,
    CreateImageRequest,
    CreateImageVariationForm,
    Image as WireImage,
    ImagesResponse,
    ImagesUsage,
    PartialImageEvent,
)
from .registry import ModelConfig, Registry
from .scheduler import Scheduler
from .settings import Settings
from .storage import Storage

log = logging.getLogger("imagegate.service")


@dataclass
class RequestContext:
    """Per-request facts the flow needs and fills in (timings and notes end up in headers)."""

    request_id: str
    endpoint: str
    base_url: str
    api_key: str | None = None
    started: float = field(default_factory=time.perf_counter)
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    composited: int = 0
    model: str | None = None  # the served model, once resolved
    created_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))
    recorded: bool = False  # the final ledger row is written
    started_row: bool = False  # a `running` row was written when the request was accepted
    priority: str = "interactive"
    batch: tuple[int, int, int] | None = None  # (batch id, requests in it, images in it)


@dataclass
class Upload:
    """One uploaded file: where it came from (for error messages) and its bytes."""

    param: str
    data: bytes


@dataclass
class Composite:
    """What a masked edit needs after generation to restore the original pixels outside
    the mask. Kept compressed while the job waits and runs: the decoded first image and mask
    can be 40 M pixels each, and a queue of them would hold gigabytes."""

    image: Upload
    mask: Upload | None  # None when the region was inferred (segmenter)
    region: Image.Image | None = None  # the inferred region, 'L' at the first image's size
    pixels: int = 0  # decoded size of image + mask, for the in-flight budget


@dataclass
class Prepared:
    model: ModelConfig
    spec: ImageSpec
    job: Job
    input_sizes: list[tuple[int, int]]
    composite: Composite | None
    fidelity: str


def hash_key(key: str | None) -> str | None:
    return hashlib.sha256(key.encode()).hexdigest()[:16] if key else None


class ImageService:
    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        scheduler: Scheduler,
        storage: Storage,
        ledger: Ledger,
        encode_pool: ThreadPoolExecutor,
        matter: postprocess.Matter | None = None,
    ) -> None:
        self.settings = settings
        # 16 M pixels, about 64 MB decoded: below that the heap keeps little worth returning.
        self.pixels = Budget("decoded input pixels", settings.max_inflight_pixels, "pixels", trim_after=16_000_000)
        self.registry = registry
        self.scheduler = scheduler
        self.storage = storage
        self.ledger = ledger
        self.pool = encode_pool
        self.matter = matter or postprocess.ChromaKeyMatter()

    # -- entry points ------------------------------------------------------------------
    async def generate(self, req: CreateImageRequest, ctx: RequestContext) -> ImagesResponse | AsyncIterator[str]:
        return await self._handle(ctx, req, "generate", lambda: self._prepare(
            "generate", req, ctx, uploads=[], mask=None, moderation=req.moderation, style=req.style))

    async def edit(
        self,
        req: CreateImageEditForm | CreateImageEditJSONRequest,
        uploads: list[Upload],
        mask: Upload | None,
        ctx: RequestContext,
    ) -> ImagesResponse | AsyncIterator[str]:
        return await self._handle(ctx, req, "edit", lambda: self._prepare(
            "edit", req, ctx, uploads=uploads, mask=mask, fidelity=req.input_fidelity or "low"))

    async def variation(self, req: CreateImageVariationForm, upload: Upload, ctx: RequestContext) -> ImagesResponse:
        result = await self._handle(ctx, req, "variation", lambda: self._prepare(
            "variation", req, ctx, uploads=[upload], mask=None))
        assert isinstance(result, ImagesResponse)
        return result

    @staticmethod
    def json_edit_uploads(req: CreateImageEditJSONRequest) -> tuple[list[Upload], Upload | None]:
        """JSON edit bodies reference images by data URL; file ids need a Files API we do not have."""
        uploads = []
        for i, ref in enumerate(req.images):
            uploads.append(Upload(f"images[{i}]", _ref_bytes(ref.image_url, ref.file_id, f"images[{i}]")))
        mask = Upload("mask", _ref_bytes(req.mask.image_url, req.mask.file_id, "mask")) if req.mask else None
        return uploads, mask

    # -- the flow --------------------------------------------------------------------
    async def _handle(self, ctx: RequestContext, req: Any, task: Task, prepare: Callable[[], Any]) -> Any:
        prepared: Prepared | None = None
        try:
            prepared = await prepare()
            # Accepted: the ledger row exists from now on (status `running`), so a crash
            # leaves a trace; the next start marks such rows `interrupted`.
            await self._record(ctx, req, prepared, "running", 0)
            if prepared.spec.stream:
                # Back-pressure must answer 503 before the event stream starts.
                self.scheduler.worker(prepared.model.name).check_capacity()
                return self._stream(prepared, ctx, req)
            resp = await self._complete(prepared, ctx)
            await self._record(ctx, req, prepared, "ok", 200, usage=resp.usage)
            return resp
        except asyncio.CancelledError:
            await asyncio.shield(self._record(ctx, req, prepared, "cancelled", 499, error=Cancelled("client went away")))
            raise
        except ImagegateError as exc:
            await self._record(ctx, req, prepared, "cancelled" if isinstance(exc, Cancelled) else "error", exc.status, error=exc)
            raise

    async def _prepare(
        self,
        task: Task,
        req: Any,
        ctx: RequestContext,
        *,
        uploads: list[Upload],
        mask: Upload | None,
        moderation: str | None = None,
        style: str | None = None,
        fidelity: str = "low",
    ) -> Prepared:
        # 1. Resolve model (and refuse early while it loads or its queue is full)
        model = self.registry.resolve(req.model)
        ctx.model = model.name
        self.scheduler.worker(model.name).check_capacity()
        steps = getattr(req, "num_inference_steps", None)
        if steps is not None and steps > self.settings.max_inference_steps:
            raise InvalidRequest(f"num_inference_steps is {steps}; this server allows at most "
                                 f"{self.settings.max_inference_steps}.", param="num_inference_steps")
        if req.negative_prompt and not _negative_prompt_ok(self.scheduler.worker(model.name).backend):
            raise InvalidRequest(f"Model '{model.name}' does not take a negative_prompt.", param="negative_prompt")
        # 2. Normalise: decode and check inputs (in a thread: decoding is CPU work), then the spec
        if len(uploads) > min(self.settings.max_input_images, model.max_input_images):
            limit = min(self.settings.max_input_images, model.max_input_images)
            # Name the field the client sent: `images` in JSON bodies, `image` in multipart forms.
            param = "images" if uploads[0].param.startswith("images") else "image"
            raise InvalidRequest(f"{len(uploads)} images were sent; at most {limit} are accepted.", param=param,
                                 code="too_many_images")
        loop = asyncio.get_running_loop()
        sizes = await loop.run_in_executor(self.pool, self._probe_inputs, uploads, mask)
        total = sum(w * h for w, h in sizes)
        if total > self.settings.max_request_pixels:
            param = uploads[0].param.split("[")[0] if uploads else "image"
            raise InvalidRequest(
                f"The input images of this request have {total} pixels in all; the limit is "
                f"{self.settings.max_request_pixels}. Send fewer or smaller images.", param=param, code="image_too_large")
        # Decoded pixels are held only from here to the end of this block (503 when the
        # server's budget for them is spent); the job keeps copies at the generation size.
        with self.pixels.hold(total):
            return await self._prepare_decoded(task, req, ctx, model, uploads, mask, sizes, style, fidelity, moderation)

    async def _prepare_decoded(
        self,
        task: Task,
        req: Any,
        ctx: RequestContext,
        model: ModelConfig,
        uploads: list[Upload],
        mask: Upload | None,
        sizes: list[tuple[int, int]],
        style: str | None,
        fidelity: str,
        moderation: str | None,
    ) -> Prepared:
        loop = asyncio.get_running_loop()
        inputs, edit_mask = await loop.run_in_executor(self.pool, self._decode_inputs, uploads, mask)
        prompt = getattr(req, "prompt", "") or ""
        spec = build_spec(
            task=task,
            model=model,
            requested_model=req.model,
            prompt=prompt,
            n=req.n,
            size=req.size,
            quality=getattr(req, "quality", None),
            background=getattr(req, "background", None),
            output_format=req.output_format,
            output_compression=req.output_compression,
            response_format=req.response_format,
            stream=getattr(req, "stream", False),
            partial_images=getattr(req, "partial_images", None),
            style=style,
            user=getattr(req, "safety_identifier", None) or req.user,
            negative_prompt=req.negative_prompt,
            seed=req.seed,
            num_inference_steps=req.num_inference_steps,
            guidance_scale=req.guidance_scale,
            aspect_ratio=req.aspect_ratio,
            resolution=req.resolution,
            input_fidelity=fidelity,
            lora=req.lora,
            lora_scale=req.lora_scale,
            first_image_size=inputs[0].size if inputs and task == "edit" else None,
        )
        ctx.notes.extend(spec.notes)
        if spec.negative_prompt and spec.guidance <= 1.0:
            # diffusers pipelines run classifier-free guidance only above 1 (turbo presets use 0),
            # and the negative prompt is the unconditional half of it: say it went unused.
            ctx.notes.append("negative_prompt has no effect at guidance_scale <= 1 (no classifier-free guidance)")
        if moderation == "low":
            ctx.notes.append("moderation=low: no moderation model is configured, both levels behave alike")
        # 3. Moderate prompt: no moderation stage is configured yet (see README).
        if spec.background == "transparent":
            spec = _replace(spec, prompt=self.matter.steer(spec.prompt))
        backend = self.scheduler.worker(model.name).backend
        job = await loop.run_in_executor(
            self.pool, build_job, spec, inputs, edit_mask, backend.modes, _multi_image(backend), ctx,
            backend.segment if getattr(backend, "segmenter", None) is not None else None)
        composite = None
        if job.inferred_region is not None:
            composite = Composite(image=uploads[0], mask=None, region=job.inferred_region, pixels=sizes[0][0] * sizes[0][1])
        elif edit_mask is not None:
            composite = Composite(image=uploads[0], mask=mask, pixels=2 * sizes[0][0] * sizes[0][1])
        if getattr(req, "input_fidelity", None) and job.mode in ("edit", "inpaint"):
            # It maps to image-to-image strength; native editing and inpainting (strength 1)
            # have no such knob: say so rather than drop it silently.
            ctx.notes.append(f"input_fidelity={req.input_fidelity} has no effect in {job.mode} mode "
                             "(it sets image-to-image strength only)")
        input_sizes = [i.size for i in inputs]
        return Prepared(model=model, spec=spec, job=job, input_sizes=input_sizes, composite=composite, fidelity=fidelity)

    def _probe_inputs(self, uploads: list[Upload], mask: Upload | None) -> list[tuple[int, int]]:
        """Each upload's size from its header, checked before anything is decoded."""
        s = self.settings
        return [probe_size(u.data, param=u.param, max_pixels=s.max_input_pixels, max_bytes=s.max_image_bytes)
                for u in ([*uploads, mask] if mask is not None else uploads)]

    def _decode_inputs(self, uploads: list[Upload], mask: Upload | None) -> tuple[list[InputImage], Image.Image | None]:
        s = self.settings
        inputs = [decode_image(u.data, param=u.param, max_pixels=s.max_input_pixels, max_bytes=s.max_image_bytes)
                  for u in uploads]
        edit_mask = None
        if mask is not None:
            if not inputs:
                raise InvalidRequest("mask needs an image.", param="mask")
            edit_mask = decode_mask(mask.data, first_size=inputs[0].size, max_pixels=s.max_input_pixels,
                                    max_bytes=s.max_image_bytes)
        return inputs, edit_mask

    async def _complete(self, p: Prepared, ctx: RequestContext) -> ImagesResponse:
        # 4. Schedule + run
        result = await self.scheduler.worker(p.model.name).run(p.job, ctx.priority)
        ctx.timings["queue"] = result.queue_s
        ctx.timings["inference"] = result.inference_s
        ctx.batch = (result.batch_id, result.batch_jobs, result.batch_images)
        # 5. Moderate output: no moderation stage is configured yet.
        # 6. Post-process (size policy, mask compositing, background, encode) in worker threads
        t0 = time.perf_counter()
        loop = asyncio.get_running_loop()
        encoded = await self._finish_all(result.images, p)
        # 7. Deliver
        data = await loop.run_in_executor(self.pool, self._deliver, encoded, p.spec, ctx)
        ctx.timings["encode"] = time.perf_counter() - t0
        # 8. Meter
        usage = metering.usage(p.spec, p.input_sizes, p.fidelity)
        # 9. Respond
        return ImagesResponse(
            created=int(time.time()),
            data=data,
            background=p.spec.background,
            output_format=p.spec.output_format,  # type: ignore[arg-type]
            size=p.spec.size,
            quality=p.spec.quality,
            usage=usage,
        )

    async def _finish_all(self, images: list[Image.Image], p: Prepared) -> list[bytes]:
        loop = asyncio.get_running_loop()
        if p.composite is None:
            return list(await asyncio.gather(*(
                loop.run_in_executor(self.pool, postprocess.finish, im, p.spec, None, None, self.matter) for im in images)))
        # A masked edit: the original and its mask are decoded again (they were kept
        # compressed while queued), waiting for room in the in-flight budget if need be.
        async with self.pixels.wait(p.composite.pixels):
            original, region = await loop.run_in_executor(self.pool, self._decode_composite, p.composite)
            return list(await asyncio.gather(*(
                loop.run_in_executor(self.pool, postprocess.finish, im, p.spec, original, region, self.matter)
                for im in images)))

    def _decode_composite(self, c: Composite) -> tuple[Image.Image, Image.Image]:
        s = self.settings
        lim = dict(max_pixels=s.max_input_pixels, max_bytes=s.max_image_bytes)
        original = decode_image(c.image.data, param=c.image.param, **lim).image
        if c.region is not None:
            return original, c.region
        assert c.mask is not None
        return original, decode_mask(c.mask.data, first_size=original.size, **lim)

    def _deliver(self, encoded: list[bytes], spec: ImageSpec, ctx: RequestContext) -> list[WireImage]:
        if spec.response_format == "url":
            names = [self.storage.save(b, spec.output_format) for b in encoded]
            base = self.settings.public_base_url or ctx.base_url
            return [WireImage(url=self.storage.url(base, n)) for n in names]
        return [WireImage(b64_json=base64.b64encode(b).decode("ascii")) for b in encoded]

    # -- streaming -------------------------------------------------------------------
    async def _stream(self, p: Prepared, ctx: RequestContext, original: Any = None) -> AsyncIterator[str]:
        """SSE events: partial images as the latents are decoded, then one completed event
        per image. Everything that can fail on the client's input has failed before this."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[int, int, Image.Image]] = asyncio.Queue()
        p.job.on_preview = lambda i, k, im: loop.call_soon_threadsafe(events.put_nowait, (i, k, im))
        prefix = "image_edit" if p.spec.task == "edit" else "image_generation"
        req = p.spec.requested
        common = dict(size=req.size, quality=req.quality, background=req.background, output_format=req.output_format)
        run = asyncio.ensure_future(self.scheduler.worker(p.model.name).run(p.job, ctx.priority))
        status, http_status, error, usage = "ok", 200, None, None
        sent: set[tuple[int, int]] = set()
        try:
            while not run.done() or not events.empty():
                getter = asyncio.ensure_future(events.get())
                await asyncio.wait({getter, run}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    continue
                i, k, preview = getter.result()
                if (i, k) in sent:  # the batch failed and this job ran again alone: sent already
                    continue
                sent.add((i, k))
                b64 = await loop.run_in_executor(self.pool, self._encode_preview, preview, p.spec)
                ev = PartialImageEvent(type=f"{prefix}.partial_image", b64_json=b64, created_at=int(time.time()),
                                       partial_image_index=k, **common)
                yield _sse(ev.type, ev.model_dump())
            result = run.result()
            ctx.timings["queue"], ctx.timings["inference"] = result.queue_s, result.inference_s
            ctx.batch = (result.batch_id, result.batch_jobs, result.batch_images)
            encoded = await self._finish_all(result.images, p)
            usage = metering.usage(p.spec, p.input_sizes, p.fidelity, images=1)
            for b in encoded:
                done = CompletedEvent(type=f"{prefix}.completed", b64_json=base64.b64encode(b).decode("ascii"),
                                      created_at=int(time.time()), usage=usage, **common)
                yield _sse(done.type, done.model_dump(exclude_none=True))
            usage = metering.usage(p.spec, p.input_sizes, p.fidelity)
        except ImagegateError as exc:
            status, http_status, error = ("cancelled" if isinstance(exc, Cancelled) else "error"), exc.status, exc
            yield _sse(None, exc.body())
        except (asyncio.CancelledError, GeneratorExit):
            status, http_status, error = "cancelled", 499, Cancelled("client went away")
            raise
        except Exception as exc:  # noqa: BLE001 - a mid-stream failure is still reported in-band
            log.exception("stream failed")
            status, http_status = "error", 500
            error = ImagegateError(f"Internal error: {type(exc).__name__}")
            yield _sse(None, error.body())
        finally:
            if not run.done():
                p.job.cancel.set()
                run.cancel()
            # The original request, so the row keeps the model name the client asked for.
            await asyncio.shield(self._record(ctx, original if original is not None else p.spec, p, status, http_status,
                                              error=error, usage=usage))

    def _encode_preview(self, preview: Image.Image, spec: ImageSpec) -> str:
        img = postprocess.resize_to(preview, spec.width, spec.height)
        fmt = spec.output_format if spec.output_format != "gif" else "png"
        return base64.b64encode(postprocess.encode(img, fmt, spec.compression)).decode("ascii")

    # -- the ledger ------------------------------------------------------------------
    async def record_rejection(self, ctx: RequestContext, error: ImagegateError) -> None:
        """A request refused before the flow started (auth, body parsing, validation)."""
        await self._record(ctx, None, None, "error", error.status, error=error)

    async def _record(
        self,
        ctx: RequestContext,
        req: Any,
        p: Prepared | None,
        status: str,
        http_status: int,
        *,
        error: ImagegateError | None = None,
        usage: ImagesUsage | None = None,
    ) -> None:
        final = status != "running"
        if ctx.recorded or (not final and ctx.started_row):
            return
        spec = p.spec if p else None
        params = _bounded_params(spec if spec is not None else req, self.settings.ledger_text_chars)
        row = RequestRow(
            id=ctx.request_id,
            created_at=ctx.created_at,
            endpoint=ctx.endpoint,
            api_key=ctx.api_key,
            user=_clip(spec.user if spec else getattr(req, "user", None), 256),
            model_requested=_clip(getattr(req, "model", None), 256) if not isinstance(req, ImageSpec) else None,
            model=p.model.name if p else ctx.model,
            params=params,
            status=status,
            http_status=http_status,
            error_code=error.code if error else None,
            error_message=_clip(getattr(error, "detail", None) or error.message, 2000) if error else None,
            n=spec.n if spec else None,
            seed=p.job.seed_used if p else None,
            queue_s=ctx.timings.get("queue"),
            inference_s=ctx.timings.get("inference"),
            encode_s=ctx.timings.get("encode"),
            total_s=time.perf_counter() - ctx.started if final else None,
            # Failures are not billed: usage only on success.
            input_tokens=usage.input_tokens if usage and status == "ok" else None,
            output_tokens=usage.output_tokens if usage and status == "ok" else None,
            notes=list(ctx.notes),
            batch_id=ctx.batch[0] if ctx.batch else None,
            batch_jobs=ctx.batch[1] if ctx.batch else None,
            batch_images=ctx.batch[2] if ctx.batch else None,
        )
        if final:
            ctx.recorded = True
        try:
            if ctx.started_row:
                await self.ledger.update(row)
            else:
                await self.ledger.record(row)
                ctx.started_row = not final
        except Exception:  # noqa: BLE001 - a ledger outage must not turn a good response into a 500
            log.exception("could not record request %s", ctx.request_id)


def _multi_image(backend: Any) -> bool:
    family = getattr(backend, "family", None)
    return bool(family and family.multi_image)


def _negative_prompt_ok(backend: Any) -> bool:
    family = getattr(backend, "family", None)
    return family is None or family.negative_prompt


# Native-edit pipelines (FLUX.2, Kontext, Qwen-Image-Edit) refuse references more extreme
# than this (FLUX.2 checks 8:1); a clear 400 instead of the pipeline's 500.
MAX_REFERENCE_ASPECT = 8.0


def build_job(spec: ImageSpec, inputs: list[InputImage], edit_mask: Image.Image | None, modes: frozenset[str],
              multi_image: bool, ctx: RequestContext, segment: Callable[[Image.Image, str], Image.Image | None] | None = None,
              ) -> Job:
    """Choose how the model serves the request, from what it can do:

    - no input image: text-to-image;
    - a mask: inpainting of the first image;
    - images without a mask: the family's native instruction editing (all references when
      it takes several, else composited into one), or image-to-image on the composite;
    - a mode the model lacks: 400 naming the parameter that asked for it."""
    gw, gh = spec.gen_width, spec.gen_height
    if not inputs:
        if "txt2img" not in modes:
            raise InvalidRequest(f"Model '{spec.model}' cannot generate from text alone; use /v1/images/edits.",
                                 param="model", code="unsupported_mode")
        return Job(spec=spec, mode="txt2img")
    if edit_mask is not None:
        if "inpaint" not in modes:
            raise InvalidRequest(f"Model '{spec.model}' cannot edit with a mask.", param="mask", code="unsupported_mode")
        if len(inputs) > 1:
            ctx.notes.append(f"mask applies to the first image; {len(inputs) - 1} further image(s) not used by inpainting")
        init = postprocess.resize_to(inputs[0].image.convert("RGB"), gw, gh)
        m = edit_mask.resize((gw, gh), Image.Resampling.BILINEAR)
        return Job(spec=spec, mode="inpaint", init_image=init, edit_mask=m)
    if "edit" in modes:
        for k, i in enumerate(inputs):
            w, h = i.size
            if max(w, h) / min(w, h) > MAX_REFERENCE_ASPECT:
                raise InvalidRequest(f"image[{k}] is {w}x{h}; native editing takes references up to "
                                     f"{MAX_REFERENCE_ASPECT:g}:1.", param="image", code="invalid_image")
        if multi_image or len(inputs) == 1:
            refs = [postprocess.fit_area(i.image, gw * gh) for i in inputs]
        else:
            ctx.composited = len(inputs)
            ctx.notes.append(f"{len(inputs)} images composited into one reference")
            refs = [postprocess.layout_references([i.image for i in inputs], gw, gh)]
        return Job(spec=spec, mode="edit", references=refs)
    if segment is not None and "inpaint" in modes:
        region = segment(inputs[0].image, spec.prompt)
        if region is not None:
            ctx.notes.append("no mask: the edit region was inferred from the prompt (segmenter)")
            job = build_job(spec, inputs[:1], region, modes, multi_image, ctx)
            job.inferred_region = region
            return job
        ctx.notes.append("no mask: the segmenter found no region for the prompt; image-to-image instead")
    if "img2img" not in modes:
        raise InvalidRequest(f"Model '{spec.model}' cannot edit images.", param="image", code="unsupported_mode")
    if len(inputs) > 1:
        ctx.composited = len(inputs)
        ctx.notes.append(f"{len(inputs)} images composited into one reference")
    init = postprocess.layout_references([i.image for i in inputs], gw, gh)
    return Job(spec=spec, mode="img2img", init_image=init)


def _ref_bytes(image_url: str | None, file_id: str | None, param: str) -> bytes:
    if file_id is not None and image_url is not None:
        raise InvalidRequest(f"{param}: give exactly one of image_url or file_id.", param=param)
    if file_id is not None:
        raise InvalidRequest(f"{param}.file_id: this server has no Files API yet; send the image as a data URL.",
                             param=f"{param}.file_id", code="unsupported_file_id")
    if image_url is None:
        raise InvalidRequest(f"{param}: image_url is required.", param=param)
    return decode_data_url(image_url, param=f"{param}.image_url")


def _replace(spec: ImageSpec, **kw: Any) -> ImageSpec:
    from dataclasses import replace

    return replace(spec, **kw)


def _params(obj: Any) -> dict[str, Any]:
    if isinstance(obj, ImageSpec):
        d = asdict(obj)
    elif hasattr(obj, "model_dump"):
        d = obj.model_dump(exclude_none=True, exclude={"images", "mask"})
    else:
        d = {}
    return json.loads(json.dumps(d, default=str))


def _clip(text: str | None, limit: int) -> str | None:
    return text if text is None or len(text) <= limit else text[:limit]


def _bounded_params(obj: Any, limit: int) -> dict[str, Any]:
    """The request's parameters with every text cut to `limit` characters, so a ledger row
    has a bounded size whatever was sent (a rejected 100 MB prompt once became 200 MB of
    database). A cut text keeps its full UTF-8 length and SHA-256 beside it."""
    params = _params(obj)
    for key, value in list(params.items()):
        if isinstance(value, str) and len(value) > limit:
            raw = value.encode("utf-8", "surrogatepass")
            params[key] = value[:limit]
            params[f"{key}_bytes"] = len(raw)
            params[f"{key}_sha256"] = hashlib.sha256(raw).hexdigest()
    return params


def _sse(event: str | None, payload: dict[str, Any]) -> str:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(payload, separators=(',', ':'))}\n\n"
