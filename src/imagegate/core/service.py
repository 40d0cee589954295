"""ImageService.run: the whole flow of one request as numbered steps, one async generator
of events (core/events.py). Generations, edits and variations share it; the JSON
response, the SSE stream and the CLI consume the same events."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from PIL import Image

from .. import metering, postprocess
from ..accounts import Accounts
from ..admission import Budget
from ..db import Ledger, RequestRow
from ..engine.base import Job, RunResult
from ..engine.client import Done, EngineClient
from ..errors import Cancelled, GenerationFailed, ImagegateError, InvalidRequest, ModelNotAllowed, ModerationBlocked
from ..inputs import InputImage, decode_image, decode_mask, probe_size
from ..normalize import ImageSpec, build_spec, check_limits, check_request_pixels
from ..pricing import DeviceSpeed, Pricing
from ..protocol import Image as WireImage
from ..protocol import ImagesUsage
from ..registry import ModelConfig, Registry
from ..safety import Ingredient, Moderation, Signer, sniff_mime, thumbnail
from ..settings import Settings
from ..storage import SignedLinks
from .events import Accepted, Completed, Event, Failed, PartialImage
from .planning import plan_job
from .records import ledger_row
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
    thumbs: list[Image.Image]  # the input images as the moderation classifier sees them


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
        accounts: Accounts | None = None,
        moderation: Moderation | None = None,
        signer: Signer | None = None,
        observer: Callable[[RequestContext, RequestRow], None] | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.engine = engine
        self.storage = storage
        self.ledger = ledger
        self.pool = encode_pool
        self.matter = matter or postprocess.ChromaKeyMatter()
        self.accounts = accounts
        self.moderation = moderation
        self.signer = signer
        self.observer = observer  # metrics and traces, fed with each final ledger row (observability.py)
        self.speed = DeviceSpeed()  # the budget estimate of models priced by device time
        # 16 M pixels, about 64 MB decoded: below that the heap keeps little worth returning.
        self.pixels = Budget("decoded input pixels", settings.max_inflight_pixels, "pixels", trim_after=16_000_000)

    # -- the flow --------------------------------------------------------------------
    async def run(self, req: ImageRequest, ctx: RequestContext, *,
                  model: ModelConfig | None = None) -> AsyncGenerator[Event, None]:
        """Accepted, then PartialImage*, then Completed or Failed. A failure before Accepted
        is raised (the consumer answers it with a plain error); every outcome, including a
        consumer that stops early, ends in one ledger row.

        `model`: a local route of a routed name (core/gateway.py), which has already taken
        the rate limits and held the budget; the route's model is priced as itself."""
        routed = model is not None
        p: Prepared | None = None
        accepted = False
        status, http_status, error, usage = "error", 500, None, None
        try:
            # 1. Authorise + limit: the route authenticated the key; here its requests and
            #    images per minute are taken (429 rate_limit_exceeded, nothing taken)
            who = ctx.principal
            if who is not None and who.limited and self.accounts is not None and not routed:
                with ctx.timed("accounts"):
                    ctx.rate_windows = await self.accounts.limits.take(who, req.n or 1)
            # 2. Resolve route: the served model (within the key's allow-list), refused early
            #    while it loads or its queue is full
            model = model or self.registry.resolve(req.model)
            ctx.model = model.name
            if who is not None and not who.allows(req.model, model.name):
                raise ModelNotAllowed(f"This API key may not use the model '{req.model or model.name}'.",
                                      param="model")
            self.engine.check_capacity(model.name)
            # 3. Normalise: inputs checked from their headers, decoded under the memory
            #    budget, the spec built and the job planned (plain data at the generation size)
            p = await self._prepare(req, ctx, model)
            # 4. Moderate input: the prompt and the input images (400 moderation_blocked, nothing held or billed)
            level = req.moderation or "auto"
            if self.moderation is not None and self.moderation.enabled:
                with ctx.timed("moderation"):
                    await self.moderation.check_input([req.prompt] if req.prompt else [], p.thumbs, level)
            # 4b. Budget: the cost estimate is held against the key's monthly budget (429
            #     insufficient_quota when it does not fit), settled with the actual cost at the end
            price = self.registry.pricing(model, None if routed else req.model)
            estimate = self._estimate(price, p, req) * ctx.price_factor
            ctx.cost_usd = estimate  # the stream's header: exact for table prices
            if who is not None and who.budget_usd is not None and self.accounts is not None and ctx.held_usd is None:
                with ctx.timed("accounts"):
                    await self.accounts.budgets.hold(who.key_id, who.budget_usd, ctx.request_id, estimate)
                ctx.held_usd = estimate
            # The request is accepted: its ledger row exists from now on (status `running`),
            # so a crash leaves a trace; the next start marks such rows `interrupted`.
            await self.record(ctx, req, p, "running", 0)
            accepted = True
            yield Accepted(p.spec)
            # 5. Run
            result: RunResult | None = None
            sent: set[tuple[int, int]] = set()
            # (aclosing: if our consumer stops early, the engine hears of it at once and cancels the job)
            steps = {"on_step": ctx.on_step} if ctx.on_step is not None else {}
            async with contextlib.aclosing(self.engine.submit(model.name, p.job, ctx.priority, **steps)) as run:
                async for ev in run:
                    if isinstance(ev, Done):
                        result = ev.result
                        break
                    if (ev.image_index, ev.partial_index) in sent:  # a failed batch ran again alone
                        continue
                    sent.add((ev.image_index, ev.partial_index))
                    # 6. Moderate output, previews too, before they leave: a blocked preview ends the request
                    await self._moderate_output([ev.image], level, ctx)
                    b64 = await asyncio.get_running_loop().run_in_executor(
                        self.pool, self._encode_preview, ev.image, p.spec)
                    yield PartialImage(ev.image_index, ev.partial_index, b64)
            assert result is not None
            ctx.timings["queue"], ctx.timings["inference"] = result.queue_s, result.inference_s
            ctx.batch = (result.batch_id, result.batch_jobs, result.batch_images)
            ctx.replica = result.replica
            # 6. Moderate output: every final image, in one batched call, before it is finished or stored
            await self._moderate_output(result.images, level, ctx)
            # 7. Finish: size policy, mask compositing, background, encode (worker threads)
            t0 = time.perf_counter()
            encoded = await self._finish_all(result.images, p, req, ctx)
            # 8. Deliver: b64_json | signed, expiring URL
            data = await asyncio.get_running_loop().run_in_executor(self.pool, self.deliver, encoded, p.spec, ctx)
            ctx.timings["encode"] = time.perf_counter() - t0
            # 9. Meter + record (failures are not billed)
            usage = metering.usage(p.spec, p.input_sizes, req.fidelity)
            each = metering.usage(p.spec, p.input_sizes, req.fidelity, images=1)
            # A batched call's device time is shared by its images.
            device_s = result.inference_s * len(encoded) / max(1, result.batch_images)
            self.speed.learn(model.name, device_s, len(encoded))
            ctx.cost_usd = price.cost(quality=p.spec.quality, width=p.spec.width, height=p.spec.height,
                                      images=len(encoded), tokens=metering.tokens(usage),
                                      device_seconds=device_s) * ctx.price_factor  # batch discount
            status, http_status = "ok", 200
            await self.record(ctx, req, p, status, http_status, usage=usage, seed=result.seed)
            yield Completed(spec=p.spec, images=tuple(encoded), data=tuple(data), usage=usage, usage_per_image=each,
                            seed=result.seed)
        except ImagegateError as exc:
            status = "cancelled" if isinstance(exc, Cancelled) else "error"
            if isinstance(exc, ModerationBlocked):  # the ledger keeps stage and categories, not the prompt
                ctx.notes.append(f"moderation blocked at {exc.stage}: {', '.join(exc.categories)}")
            http_status, error = exc.status, exc
            await self.record(ctx, req, p, status, http_status, error=error)
            if not accepted:
                raise
            yield Failed(exc)
        except (asyncio.CancelledError, GeneratorExit):
            # The client went away (the consumer was cancelled or stopped iterating).
            await asyncio.shield(self.record(ctx, req, p, "cancelled", 499, error=Cancelled("client went away")))
            raise
        except Exception as exc:
            # Not one of ours: a bug, a 500 with the request id; the detail stays in the log and the ledger.
            log.exception("request %s failed", ctx.request_id)
            failure = GenerationFailed(f"The server had an error processing request {ctx.request_id}.",
                                       detail=f"{type(exc).__name__}: {exc}")
            await self.record(ctx, req, p, "error", 500, error=failure)
            if not accepted:
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
            planned = await loop.run_in_executor(self.pool, plan_job, self.engine, spec, inputs, edit_mask, ctx)
            job, spec = planned.job, planned.job.spec  # the backend's plan set the generation size
            input_sizes = [i.size for i in inputs]
            thumbs = (await loop.run_in_executor(self.pool, lambda: [thumbnail(i.image) for i in inputs])
                      if inputs and self.moderation is not None and self.moderation.enabled else [])
        composite = None
        if planned.inferred_region is not None:
            composite = Composite(image=uploads[0], mask=None, region=planned.inferred_region,
                                  pixels=sizes[0][0] * sizes[0][1])
        elif edit_mask is not None:
            composite = Composite(image=uploads[0], mask=mask, pixels=2 * sizes[0][0] * sizes[0][1])
        if req.input_fidelity and job.mode in ("edit", "inpaint"):
            # It maps to image-to-image strength; native editing and inpainting (strength 1)
            # have no such knob: say so rather than drop it silently.
            ctx.notes.append(f"input_fidelity={req.input_fidelity} has no effect in {job.mode} mode "
                             "(it sets image-to-image strength only)")
        return Prepared(model=model, spec=spec, job=job, input_sizes=input_sizes, composite=composite, thumbs=thumbs)

    def _estimate(self, price: Pricing, p: Prepared, req: ImageRequest) -> float:
        """What the request will cost if every image is delivered (the budget hold)."""
        return metering.estimate(price, p.spec, p.input_sizes, req.fidelity,
                                 seconds_per_image=self.speed.get(p.model.name))

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
        if self.moderation is None or not self.moderation.enabled:
            notes.append("moderation is off on this server (IMAGEGATE_MODERATION=off)")
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

    async def _moderate_output(self, images: list[Image.Image], level: str, ctx: RequestContext) -> None:
        if self.moderation is not None and self.moderation.enabled:
            with ctx.timed("moderation"):
                await self.moderation.check_output(images, level)

    async def _finish_all(self, images: list[Image.Image], p: Prepared, req: ImageRequest,
                          ctx: RequestContext) -> list[bytes]:
        loop = asyncio.get_running_loop()
        ingredients = [Ingredient(u.data, sniff_mime(u.data)) for u in req.images] if self.signer else []
        if p.composite is None:
            done = await asyncio.gather(*(
                loop.run_in_executor(self.pool, self._finish_one, im, p, None, None, ingredients) for im in images))
        else:
            # A masked edit: the original and its mask are decoded again (they were kept
            # compressed while queued), waiting for room in the in-flight budget if need be.
            async with self.pixels.wait(p.composite.pixels):
                original, region = await loop.run_in_executor(self.pool, self._decode_composite, p.composite)
                done = await asyncio.gather(*(
                    loop.run_in_executor(self.pool, self._finish_one, im, p, original, region, ingredients)
                    for im in images))
        if self.signer is not None:
            ctx.timings["provenance"] = sum(t for _, t in done)
        return [b for b, _ in done]

    def _finish_one(self, im: Image.Image, p: Prepared, original: Image.Image | None, region: Image.Image | None,
                    ingredients: list[Ingredient]) -> tuple[bytes, float]:
        """7. Finish one image (worker thread): encode, then sign its C2PA manifest."""
        data = postprocess.finish(im, p.spec, original, region, self.matter)
        if self.signer is None:
            return data, 0.0
        t0 = time.perf_counter()
        signed = self.signer.sign(data, p.spec.output_format, model=p.model.name, ingredients=ingredients)
        return signed, time.perf_counter() - t0

    def _decode_composite(self, c: Composite) -> tuple[Image.Image, Image.Image]:
        s = self.settings
        original = decode_image(c.image.data, param=c.image.param, max_pixels=s.max_input_pixels,
                                max_bytes=s.max_image_bytes).image
        if c.region is not None:
            return original, c.region
        assert c.mask is not None
        return original, decode_mask(c.mask.data, first_size=original.size, max_pixels=s.max_input_pixels,
                                     max_bytes=s.max_image_bytes)

    def deliver(self, encoded: list[bytes], spec: ImageSpec, ctx: RequestContext) -> list[WireImage]:
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
        await self.record(ctx, None, None, "error", error.status, error=error)

    async def record(
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
        ok = status == "ok"
        who = ctx.principal
        cost = (ctx.cost_usd or 0.0) if ok else 0.0  # failures cost nothing
        if final:
            ctx.cost_usd = cost
        row = ledger_row(ctx, req, spec, p.model.name if p else ctx.model, status, http_status, error=error,
                         usage=usage, seed=seed, cost=cost if final else None, final=final,
                         text_limit=self.settings.ledger_text_chars)
        if final:
            ctx.recorded = True
            if ctx.held_usd is not None and who is not None and self.accounts is not None:
                try:
                    with ctx.timed("accounts"):
                        await self.accounts.budgets.settle(who.key_id, ctx.request_id, cost)
                except Exception:  # the hold expires by itself; the spend is lost: say so loudly
                    log.exception("could not settle the budget of request %s (cost $%.6f)", ctx.request_id, cost)
                ctx.held_usd = None
        try:
            if ctx.started_row:
                await self.ledger.update(row)
            else:
                await self.ledger.record(row)
                ctx.started_row = not final
        except Exception:  # a ledger outage must not turn a good response into a 500
            log.exception("could not record request %s", ctx.request_id)
        if final and self.observer is not None:
            try:
                self.observer(ctx, row)
            except Exception:  # metrics must not fail a request
                log.exception("could not observe request %s", ctx.request_id)

