"""The gateway: every image request enters here (routes/deps.py answer()). Idempotent
replays are answered first; a name the catalogue routes tries its routes in the strategy's
order; anything else is the local flow (ImageService.run) unchanged.

One routed request, as steps (the numbers are ImageService.run's):

    1. Authorise + limit      as the local flow does (rate limits taken once)
    2. Resolve route          the routed model; its routes ordered by the strategy
    3. Normalise              the spec (our rules: a bad request is a 400 before any call);
                              a seeded repeat is answered from the cache
    4. Moderate input         the prompt, before any upstream sees it
    4b. Budget                the dearest route's estimate is held
    5. Run                    route by route: an upstream call (adapt.py says what is sent
                              and what we emulate), or the local flow on a local model.
                              Failover only while nothing was made: a route that failed in
                              a way that may have made an image ends the request (502).
    6. Moderate output        what an upstream made is classified as our own outputs are
    7-9. Finish, deliver, meter and record, as the local flow does

The response is committed (Accepted) when the first image or partial image arrives, so an
upstream's 4xx and "all routes failed" are plain HTTP errors, streaming or not.

A little over 400 lines (459): the routed flow, its attempts and the replays share one state
(breakers, slots, replays) and read best together; parameter rules live in adapt.py."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

import httpx2
from PIL import Image

from .. import metering, routing
from ..backends.upstream import Done, Partial, Upstream, UpstreamBroken, UpstreamUnavailable, client_for
from ..catalogue import Catalogue, Route, RoutedModel
from ..engine.base import Job
from ..errors import (
    BadGateway,
    Conflict,
    ImagegateError,
    InvalidRequest,
    ModelNotAllowed,
    ModerationBlocked,
    UpstreamClientError,
)
from ..normalize import ImageSpec, build_spec, check_limits, check_request_pixels
from ..registry import ModelConfig
from . import adapt
from .events import Accepted, Completed, Event, Failed, PartialImage
from .replay import IDEMPOTENCY_TTL_S, Replays, Stored, fingerprint
from .request import ImageRequest, RequestContext

if TYPE_CHECKING:
    from .service import ImageService, Prepared

log = logging.getLogger("imagegate.gateway")

# A routed name's spec is built by our own rules; presets and strengths are the upstream's
# business, so the stand-in model has none (0 steps, strength 0: nothing to adjust).
_NO_PRESETS = {"low": (0, 0.0), "medium": (0, 0.0), "high": (0, 0.0)}


class _Failover(Exception):
    """This route made nothing: try the next."""


class Gateway:
    def __init__(self, service: ImageService, catalogue: Catalogue, cache_bytes: int) -> None:
        self.service = service
        self.catalogue = catalogue
        self.health = routing.Health()
        self.replays = Replays(cache_bytes)
        # One connection pool for every provider; each provider's own limit is a semaphore.
        self.http = httpx2.AsyncClient(follow_redirects=False, trust_env=False)
        self.clients: dict[str, Upstream] = {n: client_for(p, self.http) for n, p in catalogue.providers.items()}
        self.slots = {n: asyncio.Semaphore(p.max_concurrency) for n, p in catalogue.providers.items()}

    async def close(self) -> None:
        await self.http.aclose()

    def find(self, requested: str | None) -> RoutedModel | None:
        return self.catalogue.find(requested, local_default=bool(self.service.registry.configs))

    # -- every request ----------------------------------------------------------------
    async def run(self, req: ImageRequest, ctx: RequestContext) -> AsyncGenerator[Event, None]:
        """The events of one request: an Idempotency-Key seen before (same key, same caller,
        within 24 h) replays the first result at no cost; a reuse with other parameters is a 409."""
        key = fp = None
        if ctx.idempotency_key:
            key, fp = f"idem:{ctx.api_key or '-'}:{ctx.idempotency_key}", fingerprint(req)
            while True:
                stored = self.replays.get(key)
                if stored is not None:
                    if stored.fingerprint != fp:
                        raise Conflict("This Idempotency-Key was used with a different request.",
                                       param="Idempotency-Key", code="idempotency_key_reused")
                    ctx.notes.append(f"idempotent replay of {stored.request_id}")
                    async with contextlib.aclosing(self._replay(req, ctx, stored)) as evs:
                        async for ev in evs:
                            yield ev
                    return
                if await self.replays.claim(key):
                    break
        try:
            routed = self.find(req.model)
            events = self.service.run(req, ctx) if routed is None else self._routed(req, ctx, routed)
            async with contextlib.aclosing(events) as evs:
                async for ev in evs:
                    if key is not None and isinstance(ev, Completed):
                        self.replays.put(key, _stored(ev, ctx, fp or "", IDEMPOTENCY_TTL_S))
                    yield ev
        finally:
            if key is not None:
                self.replays.release(key)

    async def _replay(self, req: ImageRequest, ctx: RequestContext, s: Stored) -> AsyncGenerator[Event, None]:
        """A stored result delivered afresh, recorded at no cost."""
        svc = self.service
        ctx.model, ctx.provider, ctx.served_model, ctx.attempts = s.served_model, s.provider, s.served_model, 0
        p = self._prepared(s.served_model, s.spec, [])
        ctx.cost_usd = 0.0
        yield Accepted(s.spec)
        data = await asyncio.get_running_loop().run_in_executor(svc.pool, svc.deliver, list(s.images), s.spec, ctx)
        await svc.record(ctx, req, p, "ok", 200, usage=s.usage, seed=s.seed)
        yield Completed(spec=s.spec, images=s.images, data=tuple(data), usage=s.usage,
                        usage_per_image=s.usage_per_image, seed=s.seed)

    # -- a routed name ----------------------------------------------------------------
    async def _routed(self, req: ImageRequest, ctx: RequestContext,
                      routed: RoutedModel) -> AsyncGenerator[Event, None]:
        svc, who = self.service, ctx.principal
        # 1. Authorise + limit
        if who is not None and who.limited and svc.accounts is not None:
            with ctx.timed("accounts"):
                ctx.rate_windows = await svc.accounts.limits.take(who, req.n or 1)
        # 2. Resolve route
        ctx.model = routed.name
        if who is not None and not who.allows(req.model, routed.name):
            raise ModelNotAllowed(f"This API key may not use the model '{req.model or routed.name}'.", param="model")
        # 3. Normalise (and the cache: seeded requests only)
        spec, sizes = await self._spec(req, routed)
        ctx.notes.extend(spec.notes)
        cache_key = None
        if routed.cache_ttl_s and req.seed is not None:
            cache_key = "cache:" + fingerprint(req, routed.name, *(r.key for r in routed.routes))
            hit = self.replays.get(cache_key)
            if hit is not None:
                ctx.cache = "hit"
                async with contextlib.aclosing(self._replay(req, ctx, hit)) as evs:
                    async for ev in evs:
                        yield ev
                return
            ctx.cache = "miss"
        # 4. Moderate input: the prompt, before any upstream sees it (input images are
        #    classified by the local flow; upstream routes moderate their outputs below)
        mod = svc.moderation
        if mod is not None and mod.enabled:
            with ctx.timed("moderation"):
                await mod.check_input([req.prompt] if req.prompt else [], [], req.moderation or "auto")
        # 4b. Budget: the dearest route's estimate, so a failover never outruns the hold
        estimate = max(self._estimate(r, spec, sizes, req) for r in routed.routes)
        ctx.cost_usd = estimate
        await self._hold(ctx, estimate)
        # 5. Run, route by route
        failures: list[str] = []
        ineligible: list[adapt.Ineligible] = []
        for route in routing.order(routed.strategy, routed.routes, self.health,
                                   lambda r: self._estimate(r, spec, sizes, req)):
            plan = None
            if route.provider is not None:
                try:
                    plan = adapt.plan(route, spec, req, ctx.request_id, svc.matter.steer)
                except adapt.Ineligible as why:
                    ineligible.append(why)
                    continue
            breaker = self.health.breaker(route)
            if not breaker.allow():
                failures.append(f"{route.key}: skipped (circuit open)")
                continue
            ctx.attempts += 1
            ctx.provider, ctx.served_model = route.provider_name, route.model
            attempt = (self._local(route, req, ctx) if plan is None
                       else self._upstream(route, plan, req, ctx, spec, sizes, cache_key, routed))
            try:
                async with contextlib.aclosing(attempt) as evs:
                    async for ev in evs:
                        yield ev
                return
            except _Failover as f:
                failures.append(f"{route.key}: {f}")
                ctx.notes.append(f"failed over from {route.key}")
                await self._hold(ctx, estimate)  # a failed local attempt settled the hold
        ctx.provider = ctx.served_model = None
        if not failures and ineligible:
            raise InvalidRequest(f"No route of '{routed.name}' can serve this request: "
                                 + "; ".join(i.reason for i in ineligible) + ".", param=ineligible[0].param,
                                 code="unsupported_parameter")
        raise BadGateway(f"All routes of '{routed.name}' failed: " + "; ".join(failures) + ".",
                         code="all_providers_failed")

    async def _local(self, route: Route, req: ImageRequest, ctx: RequestContext) -> AsyncGenerator[Event, None]:
        """The local flow on the route's model. It fails over only before acceptance, and
        not for the client's own mistakes (which every route would make)."""
        breaker = self.health.breaker(route)
        t0 = time.perf_counter()
        events = self.service.run(req, ctx, model=self.service.registry.configs[route.model])
        async with contextlib.aclosing(events) as evs:
            try:
                first = await anext(evs)
            except ImagegateError as exc:
                if exc.status < 500 and exc.status not in (408, 429):
                    breaker.release()
                    raise
                breaker.failure()
                ctx.recorded, ctx.started_row = False, True  # the next route rewrites the same row
                raise _Failover(f"{exc.code or exc.status}: {exc.message}") from None
            yield first
            async for ev in evs:
                if isinstance(ev, Completed):
                    breaker.success()
                    self.health.observe(route, time.perf_counter() - t0)
                elif isinstance(ev, Failed):
                    breaker.failure()
                yield ev

    async def _upstream(self, route: Route, plan: adapt.Plan, req: ImageRequest, ctx: RequestContext,
                        spec: ImageSpec, sizes: list[tuple[int, int]], cache_key: str | None,
                        routed: RoutedModel) -> AsyncGenerator[Event, None]:
        assert route.provider is not None
        svc, provider = self.service, route.provider
        client, breaker = self.clients[provider.name], self.health.breaker(route)
        loop = asyncio.get_running_loop()
        ctx.notes.extend(plan.notes)
        p = self._prepared(route.model, spec, sizes)
        accepted = False
        for attempt in range(provider.retries + 1):
            t0 = time.perf_counter()
            dones: list[Done] = []
            try:
                async with self.slots[provider.name]:
                    if len(plan.calls) == 1:
                        async with contextlib.aclosing(client.call(plan.calls[0])) as evs:
                            async for ev in evs:
                                if isinstance(ev, Done):
                                    dones.append(ev)
                                    continue
                                assert isinstance(ev, Partial)
                                if not accepted:
                                    accepted = await self._accept(ctx, req, p)
                                    yield Accepted(spec)
                                b64 = await loop.run_in_executor(svc.pool, _partial, ev.b64_json, spec, plan, svc)
                                yield PartialImage(ev.image_index, ev.partial_index, b64)
                    else:
                        dones = await _parallel(client, plan)
                breaker.success()
                self.health.observe(route, time.perf_counter() - t0)
                break
            except UpstreamClientError:
                breaker.release()
                if not accepted:
                    raise
                err: ImagegateError = BadGateway(f"{route.key}: the upstream refused the request mid-stream")
            except UpstreamUnavailable as exc:
                breaker.failure()
                if not accepted:
                    wait = exc.retry_after if exc.retry_after is not None else routing.backoff_s(attempt + 1)
                    if attempt < provider.retries and breaker.state == "closed" and wait <= provider.max_retry_after_s:
                        ctx.notes.append(f"retried {route.key} after {exc.status or 'an error'} ({wait:.2f}s)")
                        await asyncio.sleep(wait)
                        continue
                    raise _Failover(exc.message) from None
                err = BadGateway(f"{route.key}: {exc.message}")
            except UpstreamBroken as exc:
                breaker.failure()
                err = BadGateway(f"{route.key}: {exc.message}")
            # A failure that may have made images: no failover.
            if not accepted:
                raise err
            await svc.record(ctx, req, p, "error", err.status, error=err)
            yield Failed(err)
            return
        # 7. Finish: what the upstream made → what was asked (untouched when it already is)
        images = [img for d in dones for img in d.images]
        try:
            encoded = await asyncio.gather(*(loop.run_in_executor(svc.pool, adapt.finish, b, spec, plan, svc.matter)
                                             for b in images))
        except ValueError as exc:
            err = BadGateway(f"{route.key}: the upstream sent something that is not an image ({exc})")
            if not accepted:
                raise err from None
            await svc.record(ctx, req, p, "error", err.status, error=err)
            yield Failed(err)
            return
        # 6. Moderate output: what the upstream made, as this server's own outputs are
        mod = svc.moderation
        if mod is not None and mod.enabled:
            try:
                pictures = await loop.run_in_executor(svc.pool, _decode_all, encoded)
                with ctx.timed("moderation"):
                    await mod.check_output(pictures, req.moderation or "auto")
            except ModerationBlocked as blocked:
                if not accepted:
                    raise
                await svc.record(ctx, req, p, "error", blocked.status, error=blocked)
                yield Failed(blocked)
                return
        if not accepted:
            accepted = await self._accept(ctx, req, p)
            yield Accepted(spec)
        # 8. Deliver
        data = await loop.run_in_executor(svc.pool, svc.deliver, encoded, spec, ctx)
        # 9. Meter + record: the route's prices, by its usage or its table at what it made
        use, from_upstream = adapt.usage([d.usage for d in dones], spec, sizes, req.fidelity)
        each = metering.usage(spec, sizes, req.fidelity, images=1)
        ctx.cost_usd = adapt.cost(route.price(), quality=dones[0].quality or spec.quality,
                                  size=dones[0].size or plan.size, images=len(encoded), usage=use,
                                  from_upstream=from_upstream) * ctx.price_factor  # batch discount
        await svc.record(ctx, req, p, "ok", 200, usage=use, seed=req.seed)
        done = Completed(spec=spec, images=tuple(encoded), data=tuple(data), usage=use, usage_per_image=each,
                         seed=req.seed)
        if cache_key is not None and routed.cache_ttl_s:
            self.replays.put(cache_key, _stored(done, ctx, "", routed.cache_ttl_s))
        yield done

    # -- helpers ----------------------------------------------------------------------
    async def _accept(self, ctx: RequestContext, req: ImageRequest, p: Prepared) -> bool:
        await self.service.record(ctx, req, p, "running", 0)
        return True

    async def _hold(self, ctx: RequestContext, estimate: float) -> None:
        svc, who = self.service, ctx.principal
        if who is not None and who.budget_usd is not None and svc.accounts is not None and ctx.held_usd is None:
            with ctx.timed("accounts"):
                await svc.accounts.budgets.hold(who.key_id, who.budget_usd, ctx.request_id, estimate)
            ctx.held_usd = estimate

    def _prepared(self, served: str, spec: ImageSpec, sizes: list[tuple[int, int]]) -> Prepared:
        from .service import Prepared

        return Prepared(model=ModelConfig(name=served, source="", backend="upstream"), spec=spec, job=Job(spec),
                        input_sizes=sizes, composite=None, thumbs=[])

    def _estimate(self, route: Route, spec: ImageSpec, sizes: list[tuple[int, int]], req: ImageRequest) -> float:
        svc = self.service
        local = svc.registry.configs.get(route.model) if route.provider is None else None
        price = route.price(svc.registry.pricing(local) if local else None)
        size = spec.size
        caps = route.caps()
        if route.provider is not None and caps.sizes is not None and size not in caps.sizes:
            size = adapt.nearest_size(spec.width, spec.height, caps.sizes)  # priced at what the route makes
        w, _, h = size.partition("x")
        return metering.estimate(price, spec, sizes, req.fidelity, width=int(w), height=int(h),
                                 seconds_per_image=svc.speed.get(local.name) if local else None)

    async def _spec(self, req: ImageRequest, routed: RoutedModel) -> tuple[ImageSpec, list[tuple[int, int]]]:
        """Our own rules, as for a local model; the inputs are checked from their headers
        (never decoded: they go upstream as they came)."""
        svc, s = self.service, self.service.settings
        stand_in = ModelConfig(name=routed.name, source="", backend="upstream", quality=dict(_NO_PRESETS),
                               strength={"low": 0.0, "high": 0.0}, variation_strength=0.0)
        params = [u.param for u in req.images]
        check_limits(model=stand_in, images=params, negative_prompt=req.negative_prompt,
                     steps=req.num_inference_steps, negative_prompt_ok=True,
                     max_inference_steps=s.max_inference_steps, max_input_images=s.max_input_images)
        sizes = await asyncio.get_running_loop().run_in_executor(svc.pool, svc._probe_inputs, list(req.images),
                                                                 req.mask)
        check_request_pixels(sum(w * h for w, h in sizes), s.max_request_pixels, params)
        spec = build_spec(
            task=req.task, model=stand_in, requested_model=req.model, prompt=req.prompt, n=req.n, size=req.size,
            quality=req.quality, background=req.background, output_format=req.output_format,
            output_compression=req.output_compression, response_format=req.response_format, stream=req.stream,
            partial_images=req.partial_images, style=None, user=req.user, negative_prompt=req.negative_prompt,
            seed=req.seed, num_inference_steps=req.num_inference_steps, guidance_scale=req.guidance_scale,
            aspect_ratio=req.aspect_ratio, resolution=req.resolution, input_fidelity=req.fidelity,
            first_image_size=sizes[0] if sizes and req.task == "edit" else None)
        return spec, sizes[:len(req.images)]

    # -- dry run ----------------------------------------------------------------------
    async def dry_run(self, req: ImageRequest, ctx: RequestContext) -> dict[str, Any]:
        """Which route would serve the request and what it would cost; nothing runs."""
        routed = self.find(req.model)
        if routed is None:
            model = self.service.registry.resolve(req.model)
            routed = RoutedModel(name=model.name, routes=(Route(model=model.name),))
        who = ctx.principal
        if who is not None and not who.allows(req.model, routed.name):
            raise ModelNotAllowed(f"This API key may not use the model '{req.model or routed.name}'.", param="model")
        spec, sizes = await self._spec(req, routed)
        routes: list[dict[str, Any]] = []
        for r in routing.order(routed.strategy, routed.routes, self.health,
                               lambda r: self._estimate(r, spec, sizes, req)):
            entry: dict[str, Any] = {"provider": r.provider_name, "model": r.model,
                                     "state": self.health.breaker(r).state,
                                     "estimated_cost_usd": self._estimate(r, spec, sizes, req)}
            if r.provider is not None:
                try:
                    entry["notes"] = adapt.plan(r, spec, req, "dry-run", self.service.matter.steer).notes
                except adapt.Ineligible as why:
                    entry["state"], entry["reason"] = "ineligible", why.reason
            routes.append(entry)
        first = next((r for r in routes if r["state"] in ("closed", "half-open")), routes[0])
        return {"object": "image.route", "model": routed.name, "provider": first["provider"],
                "served_model": first["model"], "strategy": routed.strategy, "routes": routes,
                "estimated_cost_usd": first["estimated_cost_usd"]}


def _decode_all(files: list[bytes]) -> list[Image.Image]:
    out = []
    for data in files:
        with Image.open(io.BytesIO(data)) as im:
            out.append(im.convert("RGB"))
    return out


async def _parallel(client: Upstream, plan: adapt.Plan) -> list[Done]:
    """n above the upstream's limit: the calls at once. If any may have made images while
    another failed, the request cannot fail over (the made ones would be made twice)."""
    async def one(call: Any) -> Done:
        async with contextlib.aclosing(client.call(call)) as evs:
            async for ev in evs:
                if isinstance(ev, Done):
                    return ev
        raise UpstreamBroken(f"{client.provider.name}: no result")

    results = await asyncio.gather(*(one(c) for c in plan.calls), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if not errors:
        return [r for r in results if isinstance(r, Done)]
    if len(errors) == len(results) and all(isinstance(e, UpstreamUnavailable) for e in errors):
        raise errors[0]
    if isinstance(errors[0], UpstreamClientError) and len(errors) == len(results):
        raise errors[0]
    raise UpstreamBroken(f"{client.provider.name}: {len(errors)} of {len(results)} parallel calls failed "
                         f"({type(errors[0]).__name__})")


def _partial(b64: str, spec: ImageSpec, plan: adapt.Plan, svc: ImageService) -> str:
    """A relayed partial image: as it came when nothing is emulated, else finished like the
    final image."""
    import base64

    if not (plan.reencode or plan.matte or plan.size != spec.size):
        return b64
    try:
        return base64.b64encode(adapt.finish(base64.b64decode(b64), spec, plan, svc.matter)).decode("ascii")
    except ValueError:
        raise UpstreamBroken("a partial image is not an image") from None


def _stored(ev: Completed, ctx: RequestContext, fp: str, ttl: float) -> Stored:
    return Stored(spec=ev.spec, images=ev.images, usage=ev.usage, usage_per_image=ev.usage_per_image, seed=ev.seed,
                  provider=ctx.provider or "local", served_model=ctx.served_model or ctx.model or "",
                  request_id=ctx.request_id, fingerprint=fp, expires=time.time() + ttl)
