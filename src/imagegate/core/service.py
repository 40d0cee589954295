"""ImageService.run: the whole flow of one request as numbered steps, one async generator
of events (core/events.py). Generations, edits and variations share it; the JSON
response, the SSE stream and the CLI consume the same events."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import AsyncGenerator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from PIL import Image

from .. import metering, postprocess
from ..admission import Budget
from ..db import Ledger, RequestRow
from ..engine.base import Job, RunResult
from ..engine.client import Done, EngineClient
from ..errors import Cancelled, GenerationFailed, ImagegateError, InvalidRequest
from ..inputs import InputImage, decode_image, decode_mask, probe_size
from ..normalize import ImageSpec, build_spec, check_limits, check_request_pixels
from ..protocol import Image as WireImage
from ..protocol import ImagesUsage
from ..registry import ModelConfig, Registry
from ..settings import Settings
from ..storage import SignedLinks
from .events import Accepted, Completed, Event, Failed, PartialImage
from .planning import build_job
from .request import ImageRequest, RequestContext, Upload

log = logging.getLogger("imagegate.service")


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


class ImageService:
    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        engine: EngineClient,
        storage: SignedLinks,
        ledger: Ledger,
        encode_pool: ThreadPoolExecutor,
        matter: postprocess.Matter | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.engine = engine
        self.storage = storage
        self.ledger = ledger
        self.pool = encode_pool
        self.matter = matter or postprocess.ChromaKeyMatter()
        # 16 M pixels, about 64 MB decoded: below that the heap keeps little worth returning.
        self.pixels = Budget("decoded input pixels", settings.max_inflight_pixels, "pixels", trim_after=16_000_000)

    # -- the flow --------------------------------------------------------------------
    async def run(self, req: ImageRequest, ctx: RequestContext) -> AsyncGenerator[Event, None]:
        """Accepted, then PartialImage*, then Completed or Failed. A failure before Accepted
        is raised (the consumer answers it with a plain error); every outcome, including a
        consumer that stops early, ends in one ledger row."""
        p: Prepared | None = None
        status, http_status, error, usage = "error", 500, None, None
        try:
            # 1. Authorise + limit: the API key is checked by the route (accounts come here).
            # 2. Resolve route: the served model, refused early while it loads or its queue is full
            model = self.registry.resolve(req.model)
            ctx.model = model.name
            self.engine.check_capacity(model.name)
            # 3. Normalise: inputs checked from their headers, decoded under the memory
            #    budget, the spec built and the job planned (plain data at the generation size)
            p = await self._prepare(req, ctx, model)
            # 4. Moderate input: no moderation stage is configured yet (see README).
            # The request is accepted: its ledger row exists from now on (status `running`),
            # so a crash leaves a trace; the next start marks such rows `interrupted`.
            await self._record(ctx, req, p, "running", 0)
            yield Accepted(p.spec)
            # 5. Run
            result: RunResult | None = None
            sent: set[tuple[int, int]] = set()
            # (aclosing: if our consumer stops early, the engine hears of it at once and cancels the job)
            async with contextlib.aclosing(self.engine.submit(model.name, p.job, ctx.priority)) as run:
                async for ev in run:
                    if isinstance(ev, Done):
                        result = ev.result
                        break
                    if (ev.image_index, ev.partial_index) in sent:  # a failed batch ran again alone
                        continue
                    sent.add((ev.image_index, ev.partial_index))
                    # 6. Moderate output (previews too, before they leave): none configured yet.
                    b64 = await asyncio.get_running_loop().run_in_executor(
                        self.pool, self._encode_preview, ev.image, p.spec)
                    yield PartialImage(ev.image_index, ev.partial_index, b64)
            assert result is not None
            ctx.timings["queue"], ctx.timings["inference"] = result.queue_s, result.inference_s
            ctx.batch = (result.batch_id, result.batch_jobs, result.batch_images)
            # 7. Finish: size policy, mask compositing, background, encode (worker threads)
            t0 = time.perf_counter()
            encoded = await self._finish_all(result.images, p)
            # 8. Deliver: b64_json | signed, expiring URL
            data = await asyncio.get_running_loop().run_in_executor(self.pool, self._deliver, encoded, p.spec, ctx)
            ctx.timings["encode"] = time.perf_counter() - t0
            # 9. Meter + record (failures are not billed)
            usage = metering.usage(p.spec, p.input_sizes, req.fidelity)
            each = metering.usage(p.spec, p.input_sizes, req.fidelity, images=1)
            status, http_status = "ok", 200
            await self._record(ctx, req, p, status, http_status, usage=usage, seed=result.seed)
            yield Completed(spec=p.spec, images=tuple(encoded), data=tuple(data), usage=usage, usage_per_image=each,
                            seed=result.seed)
        except ImagegateError as exc:
            status = "cancelled" if isinstance(exc, Cancelled) else "error"
            http_status, error = exc.status, exc
            await self._record(ctx, req, p, status, http_status, error=error)
            if p is None:
                raise
            yield Failed(exc)
        except (asyncio.CancelledError, GeneratorExit):
            # The client went away (the consumer was cancelled or stopped iterating).
            await asyncio.shield(self._record(ctx, req, p, "cancelled", 499, error=Cancelled("client went away")))
            raise
        except Exception as exc:
            # Not one of ours: a bug, a 500 with the request id; the detail stays in the log and the ledger.
            log.exception("request %s failed", ctx.request_id)
            failure = GenerationFailed(f"The server had an error processing request {ctx.request_id}.",
                                       detail=f"{type(exc).__name__}: {exc}")
            await self._record(ctx, req, p, "error", 500, error=failure)
            if p is None:
                raise failure from exc
            yield Failed(failure)

    async def _prepare(self, req: ImageRequest, ctx: RequestContext, model: ModelConfig) -> Prepared:
        caps = self.engine.capabilities(model.name)
        uploads, mask = list(req.images), req.mask
        params = [u.param for u in uploads]
        check_limits(model=model, images=params, negative_prompt=req.negative_prompt, steps=req.num_inference_steps,
                     negative_prompt_ok=caps.negative_prompt, max_inference_steps=self.settings.max_inference_steps,
                     max_input_images=self.settings.max_input_images)
        loop = asyncio.get_running_loop()
        sizes = await loop.run_in_executor(self.pool, self._probe_inputs, uploads, mask)
        total = sum(w * h for w, h in sizes)
        check_request_pixels(total, self.settings.max_request_pixels, params)
        # Decoded pixels are held only within this block (503 when the server's budget for
        # them is spent); the job keeps copies at the generation size.
        with self.pixels.hold(total):
            inputs, edit_mask = await loop.run_in_executor(self.pool, self._decode_inputs, uploads, mask)
            spec = self._spec(req, model, inputs)
            ctx.notes.extend(spec.notes)
            segment = (lambda image, text: self.engine.segment(model.name, image, text)) if caps.segmenter else None
            job = await loop.run_in_executor(self.pool, build_job, spec, inputs, edit_mask, caps, ctx, segment)
            input_sizes = [i.size for i in inputs]
        composite = None
        if job.inferred_region is not None:
            composite = Composite(image=uploads[0], mask=None, region=job.inferred_region,
                                  pixels=sizes[0][0] * sizes[0][1])
        elif edit_mask is not None:
            composite = Composite(image=uploads[0], mask=mask, pixels=2 * sizes[0][0] * sizes[0][1])
        if req.input_fidelity and job.mode in ("edit", "inpaint"):
            # It maps to image-to-image strength; native editing and inpainting (strength 1)
            # have no such knob: say so rather than drop it silently.
            ctx.notes.append(f"input_fidelity={req.input_fidelity} has no effect in {job.mode} mode "
                             "(it sets image-to-image strength only)")
        return Prepared(model=model, spec=spec, job=job, input_sizes=input_sizes, composite=composite)

    def _spec(self, req: ImageRequest, model: ModelConfig, inputs: list[InputImage]) -> ImageSpec:
        spec = build_spec(
            task=req.task, model=model, requested_model=req.model, prompt=req.prompt, n=req.n, size=req.size,
            quality=req.quality, background=req.background, output_format=req.output_format,
            output_compression=req.output_compression, response_format=req.response_format, stream=req.stream,
            partial_images=req.partial_images, style=req.style, user=req.user, negative_prompt=req.negative_prompt,
            seed=req.seed, num_inference_steps=req.num_inference_steps, guidance_scale=req.guidance_scale,
            aspect_ratio=req.aspect_ratio, resolution=req.resolution, input_fidelity=req.fidelity, lora=req.lora,
            lora_scale=req.lora_scale, first_image_size=inputs[0].size if inputs and req.task == "edit" else None)
        notes = list(spec.notes)
        if spec.negative_prompt and spec.guidance <= 1.0:
            # diffusers pipelines run classifier-free guidance only above 1 (turbo presets use 0),
            # and the negative prompt is the unconditional half of it: say it went unused.
            notes.append("negative_prompt has no effect at guidance_scale <= 1 (no classifier-free guidance)")
        if req.moderation == "low":
            notes.append("moderation=low: no moderation model is configured, both levels behave alike")
        prompt = self.matter.steer(spec.prompt) if spec.background == "transparent" else spec.prompt
        return replace(spec, prompt=prompt, notes=tuple(notes))

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

    async def _finish_all(self, images: list[Image.Image], p: Prepared) -> list[bytes]:
        loop = asyncio.get_running_loop()
        if p.composite is None:
            return list(await asyncio.gather(*(
                loop.run_in_executor(self.pool, postprocess.finish, im, p.spec, None, None, self.matter)
                for im in images)))
        # A masked edit: the original and its mask are decoded again (they were kept
        # compressed while queued), waiting for room in the in-flight budget if need be.
        async with self.pixels.wait(p.composite.pixels):
            original, region = await loop.run_in_executor(self.pool, self._decode_composite, p.composite)
            return list(await asyncio.gather(*(
                loop.run_in_executor(self.pool, postprocess.finish, im, p.spec, original, region, self.matter)
                for im in images)))

    def _decode_composite(self, c: Composite) -> tuple[Image.Image, Image.Image]:
        s = self.settings
        original = decode_image(c.image.data, param=c.image.param, max_pixels=s.max_input_pixels,
                                max_bytes=s.max_image_bytes).image
        if c.region is not None:
            return original, c.region
        assert c.mask is not None
        return original, decode_mask(c.mask.data, first_size=original.size, max_pixels=s.max_input_pixels,
                                     max_bytes=s.max_image_bytes)

    def _deliver(self, encoded: list[bytes], spec: ImageSpec, ctx: RequestContext) -> list[WireImage]:
        # A stream's events carry the image itself (OpenAI's stream events have no url).
        if spec.response_format == "url" and not spec.stream:
            names = [self.storage.save(b, spec.output_format) for b in encoded]
            base = self.settings.public_base_url or ctx.base_url
            return [WireImage(url=self.storage.url(base, n)) for n in names]
        return [WireImage(b64_json=base64.b64encode(b).decode("ascii")) for b in encoded]

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
        req: ImageRequest | None,
        p: Prepared | None,
        status: str,
        http_status: int,
        *,
        error: ImagegateError | None = None,
        usage: ImagesUsage | None = None,
        seed: int | None = None,
    ) -> None:
        final = status != "running"
        if ctx.recorded or (not final and ctx.started_row):
            return
        spec = p.spec if p else None
        row = RequestRow(
            id=ctx.request_id,
            created_at=ctx.created_at,
            endpoint=ctx.endpoint,
            api_key=ctx.api_key,
            user=_clip(req.user if req else None, 256),
            model_requested=_clip(req.model if req else None, 256),
            model=p.model.name if p else ctx.model,
            params=_bounded_params(spec if spec is not None else req, self.settings.ledger_text_chars),
            status=status,
            http_status=http_status,
            error_code=error.code if error else None,
            error_message=_clip(getattr(error, "detail", None) or error.message, 2000) if error else None,
            n=spec.n if spec else None,
            seed=seed,
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
        except Exception:  # a ledger outage must not turn a good response into a 500
            log.exception("could not record request %s", ctx.request_id)


def _clip(text: str | None, limit: int) -> str | None:
    return text if text is None or len(text) <= limit else text[:limit]


def _bounded_params(obj: ImageSpec | ImageRequest | None, limit: int) -> dict[str, Any]:
    """The request's parameters with every text cut to `limit` characters, so a ledger row
    has a bounded size whatever was sent (a rejected 100 MB prompt once became 200 MB of
    database). A cut text keeps its full UTF-8 length and SHA-256 beside it."""
    if obj is None:
        return {}
    if isinstance(obj, ImageRequest):  # not the uploads: megabytes, and not parameters
        d = {f.name: getattr(obj, f.name) for f in fields(obj) if f.name not in ("images", "mask")}
    else:
        d = asdict(obj)
    d = {k: v for k, v in d.items() if v is not None}
    params: dict[str, Any] = json.loads(json.dumps(d, default=str))
    for key, value in list(params.items()):
        if isinstance(value, str) and len(value) > limit:
            raw = value.encode("utf-8", "surrogatepass")
            params[key] = value[:limit]
            params[f"{key}_bytes"] = len(raw)
            params[f"{key}_sha256"] = hashlib.sha256(raw).hexdigest()
    return params
