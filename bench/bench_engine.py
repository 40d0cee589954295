"""The serving engine under concurrent load, against the naive baseline, on one device in one run.

    .venv/bin/python bench/bench_engine.py                  # concurrency 1, 8, 32, 64 (<= ~6 min on the build machine)
    .venv/bin/python bench/bench_engine.py --quick          # concurrency 1 and 8 (<= 60 s)
    .venv/bin/python bench/bench_engine.py --arch-scale toy # adds SD-Turbo / SDXL / FLUX.1-schnell at toy width (CPU)
    .venv/bin/python bench/bench_engine.py --workloads sdxl --levels 1,8,32,64   # one GPU workload at a time

Two systems serve the same model folder, on the same device, with the same dtype, attention
processors and torch threads (the naive one calls the very pipeline object ours loaded):

- ours: imagegate's real HTTP server (create_app + uvicorn on 127.0.0.1 in this process, the
  production loader, micro-batching on).
- naive: what peer servers do: a minimal FastAPI endpoint (uvicorn on 127.0.0.1) whose sync
  handler calls the plain diffusers pipeline once per request (num_images_per_prompt=1) under
  a lock, one at a time, then resizes, JPEG-encodes and base64s the image outside the lock
  (the same postprocess functions as ours, so the encode work is identical).

The load: the official `openai` AsyncOpenAI client (over httpx2), in a process of its own
(as real clients are: its JSON parsing must not take the servers' GIL), with c concurrent
clients each sending its next request as soon as the last one returns (so c requests arrive
at once), max(2c, --min-requests) requests per level, the same prompts and seeds for both
systems, the two systems alternating level by level (ours, naive, naive, ours, ...) so a
drifting co-tenant load hits both alike.

Reported per workload and concurrency: images/s, p50/p95 latency, the Server-Timing split
(queue / inference / encode medians; ours reports its batch's whole call as inference),
images per pipeline call, peak memory (CPU: peak-RSS delta over the level, /proc VmHWM reset
through /proc/self/clear_refs, else psutil sampling; GPU: torch.cuda.max_memory_allocated),
ours/naive images/s; FLOPs per image (torch.utils.flop_counter over one pipeline call through
the backend: text encoders + denoiser + VAE), achieved FLOP/s and its share of the GPU's dense
bf16 peak; device-seconds and dollars per image beside OpenAI's gpt-image-1 price.

Workloads: `tiny` (tests/tiny.py's random SD pipeline), `mini` (the built-in model, when its
weights exist), and on a GPU the real architectures at random init from bench/archs/*.json
(SD-Turbo 512px 1 step, SDXL 1024px 30 steps CFG, FLUX.1-schnell 1024px 4 steps).
`--arch-scale toy` builds those at 1/8 width, fewer layers and 128px so their code paths run
on a CPU (tests/test_bench_engine.py does). The full-size architectures' parameters and FLOPs
per image are always counted on the meta device (no weights, no timing).

On a GPU each architecture is built on the device in bf16 and saved as a diffusers folder
for the server to load (FLUX.1-schnell: ~34 GB on disk and ~34 GB of GPU memory); run one
workload per call (--workloads) to stay inside a 10-minute slot: SDXL and FLUX at
concurrency 64 are 2 x 128 images of 30 and 4 steps.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import functools
import gc
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

ROOT = Path(__file__).resolve().parents[1]
ARCHS = Path(__file__).resolve().parent / "archs"
for _path in (ROOT / "src", ROOT / "tests", ROOT / "bench"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import torch  # noqa: E402

from common import append_results, device_description, markdown_table  # noqa: E402

LEVELS = (1, 8, 32, 64)
QUICK_LEVELS = (1, 8)
SIZE = "1024x1024"
QUALITY = "medium"
OUTPUT_FORMAT = "jpeg"
# tests/conftest.py's presets for the tiny pipeline: (steps, guidance) per quality tier.
TINY_QUALITY = {"low": (2, 5.0), "medium": (3, 5.0), "high": (4, 5.0)}
TOY_RESOLUTION = 128
ARCH_NAMES = ("sd-turbo", "sdxl", "flux-schnell")
# OpenAI's price per gpt-image-1 image at 1024x1024 (openai.com/api/pricing).
GPT_IMAGE_1_USD = {"low": 0.011, "medium": 0.042, "high": 0.167}
# Dense (no sparsity) bf16 tensor-core peaks, NVIDIA datasheets; first match wins.
GPU_PEAK_BF16_TFLOPS = (("H100 PCIe", 756.0), ("H100", 989.0), ("H200", 989.0))
PROMPTS = ("red circle", "blue square", "green dot", "a cat", "a small boat", "two trees", "sunset", "yellow star")


# -- the architectures (bench/archs) -----------------------------------------------------------
def load_arch(name: str) -> dict[str, Any]:
    return json.loads((ARCHS / f"{name}.json").read_text())


def _fields(spec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in spec.items() if not k.startswith("_")}


def toy_config(cls: str, cfg: dict[str, Any], vocab: int) -> dict[str, Any]:
    """The same architecture at 1/8 width and a few layers: every block type and code path
    is kept, only the sizes shrink. UNets and CLIP towers keep their head counts (heads
    become 8 wide); T5 and the FLUX transformer keep their head width and lose heads."""
    c = dict(cfg)
    if cls == "UNet2DConditionModel":
        c["block_out_channels"] = [ch // 8 for ch in c["block_out_channels"]]
        c.update(layers_per_block=1, norm_num_groups=8, cross_attention_dim=c["cross_attention_dim"] // 8)
        if isinstance(c.get("transformer_layers_per_block"), list):
            c["transformer_layers_per_block"] = [max(1, n // 5) for n in c["transformer_layers_per_block"]]
        if "addition_time_embed_dim" in c:
            c["addition_time_embed_dim"] //= 8
            c["projection_class_embeddings_input_dim"] //= 8
    elif cls.startswith("Autoencoder"):
        c["block_out_channels"] = [ch // 8 for ch in c["block_out_channels"]]
        c.update(layers_per_block=1, norm_num_groups=8)
    elif cls.startswith("CLIPTextModel"):
        c.update(hidden_size=c["hidden_size"] // 8, intermediate_size=c["intermediate_size"] // 8,
                 projection_dim=c["projection_dim"] // 8, num_hidden_layers=2, vocab_size=vocab)
    elif cls == "T5EncoderModel":
        c.update(d_model=c["d_model"] // 8, d_ff=c["d_ff"] // 8, num_heads=c["num_heads"] // 8, num_layers=2,
                 vocab_size=vocab)
    elif cls == "FluxTransformer2DModel":
        # Heads / 8 keeps the 128-wide heads, so the rotary axes (16, 56, 56) stay as released.
        c.update(num_attention_heads=c["num_attention_heads"] // 8, num_layers=1, num_single_layers=2,
                 joint_attention_dim=c["joint_attention_dim"] // 8,
                 pooled_projection_dim=c["pooled_projection_dim"] // 8)
    return c


@contextlib.contextmanager
def _materialise(device: str, dtype: torch.dtype) -> Iterator[None]:
    """Parameters are created on the target device in the target dtype: a 12B-parameter
    transformer never takes a float32 detour through host memory."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(old)


def construct(cls: str, cfg: dict[str, Any], device: str, dtype: torch.dtype) -> torch.nn.Module:
    import diffusers
    import transformers

    with _materialise(device, dtype):
        if cls.startswith("CLIPTextModel"):
            model = getattr(transformers, cls)(transformers.CLIPTextConfig(**cfg))
        elif cls == "T5EncoderModel":
            model = transformers.T5EncoderModel(transformers.T5Config(**cfg))
        else:
            model = getattr(diffusers, cls).from_config(cfg)
    return model.to(device=device, dtype=dtype).eval()


def char_tokenizer(folder: Path, max_length: int) -> Any:
    """tests/tiny.py's byte-level CLIP tokenizer (no download) padding to the real length
    (77 for CLIP, 512 for the T5 slot), so the text encoders see the real sequence lengths."""
    from transformers import CLIPTokenizer

    from tiny import write_char_clip_tokenizer

    write_char_clip_tokenizer(folder)
    return CLIPTokenizer.from_pretrained(folder, model_max_length=max_length)


def build_arch_pipeline(arch: dict[str, Any], scale: str, device: str, dtype: torch.dtype, workdir: Path) -> Any:
    """The released architecture at random init (scale 'full': same shapes and FLOPs as the
    released weights) or at toy width. Tokenizers are byte-level CLIP tokenizers built here;
    the T5 slot gets one too (a real-size T5 sentencepiece model cannot be built offline),
    padding to the same 512 tokens, so T5 does the same work."""
    import diffusers

    comps = arch["components"]
    tokenizers = {name: char_tokenizer(workdir / f"_{name}", spec["model_max_length"])
                  for name, spec in comps.items() if "Tokenizer" in spec["_class_name"]}
    first = next(iter(tokenizers.values()))
    torch.manual_seed(0)
    built: dict[str, Any] = dict(tokenizers)
    for name, spec in comps.items():
        cls = spec["_class_name"]
        if name in tokenizers:
            continue
        cfg = _fields(spec)
        if "Scheduler" in cls:
            built[name] = getattr(diffusers, cls).from_config(cfg)
            continue
        if scale == "toy":
            cfg = toy_config(cls, cfg, len(first))
        if cls.startswith(("CLIPText", "T5")):
            cfg.update(bos_token_id=first.bos_token_id, eos_token_id=first.eos_token_id,
                       pad_token_id=first.pad_token_id)
        built[name] = construct(cls, cfg, device, dtype)
    extra = {
        "StableDiffusionPipeline": dict(safety_checker=None, feature_extractor=None, requires_safety_checker=False),
    }
    return getattr(diffusers, arch["pipeline"])(**built, **extra.get(arch["pipeline"], {}))


# -- FLOPs ---------------------------------------------------------------------------------
def _register_cpu_attention_flops() -> None:
    """torch's flop counter knows the CUDA SDPA kernels but not the CPU flash kernel that
    F.scaled_dot_product_attention picks on CPU; count it with the same formula."""
    from torch.utils.flop_counter import flop_registry, register_flop_formula, sdpa_flop_count

    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is None or op in flop_registry or op.default in flop_registry:
        return

    @register_flop_formula(op)
    def _cpu_flash(query_shape: Any, key_shape: Any, value_shape: Any, *args: Any, out_shape: Any = None,
                   **kwargs: Any) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)


def _split(counts: dict[str, dict[Any, int]]) -> dict[str, int]:
    """Top-level modules → text encoders / denoiser / VAE (the rest: VAE convs called outside
    a module forward, e.g. post_quant_conv)."""
    total = sum(counts.get("Global", {}).values())
    text = denoise = 0
    for name, ops in counts.items():
        if "." in name or name == "Global":
            continue
        if "Text" in name or name.startswith("T5"):
            text += sum(ops.values())
        elif "UNet" in name or "Transformer2D" in name:
            denoise += sum(ops.values())
    return {"text": text, "denoise": denoise, "vae": total - text - denoise, "total": total}


def count_call_flops(fn: Any) -> dict[str, int]:
    from torch.utils.flop_counter import FlopCounterMode

    _register_cpu_attention_flops()
    with FlopCounterMode(display=False) as counter:
        fn()
    return _split(counter.get_flop_counts())


def meta_models(arch: dict[str, Any], scale: str = "full") -> dict[str, torch.nn.Module]:
    """The architecture's models on the meta device: shapes without memory or data."""
    models: dict[str, torch.nn.Module] = {}
    for name, spec in arch["components"].items():
        cls = spec["_class_name"]
        if "Tokenizer" in cls or "Scheduler" in cls:
            continue
        cfg = _fields(spec)
        if scale == "toy":
            cfg = toy_config(cls, cfg, 1000)
        models[name] = construct(cls, cfg, "meta", torch.bfloat16)
    return models


def arch_flops(arch: dict[str, Any], scale: str = "full") -> dict[str, Any]:
    """Parameters and FLOPs per image of an architecture, counted on the meta device (no
    weights, no data): text encoders as the pipeline calls them, the denoiser × steps (CFG
    doubles its batch), one VAE decode. tests/test_bench_engine.py checks this against a
    real pipeline call at toy scale."""
    from torch.utils.flop_counter import FlopCounterMode

    comps = arch["components"]
    res = TOY_RESOLUTION if scale == "toy" else arch["resolution"]
    models = meta_models(arch, scale)
    params = {name: sum(p.numel() for p in m.parameters()) for name, m in models.items()}
    pipeline = arch["pipeline"]
    cfg_mult = 2 if pipeline.startswith("StableDiffusion") and arch["guidance_scale"] > 1 else 1
    meta = dict(device="meta", dtype=torch.bfloat16)
    vae = models["vae"]
    h = res // 8

    def zeros(*shape: int, **kw: Any) -> torch.Tensor:
        return torch.zeros(*shape, **{**meta, **kw})

    out: dict[str, int] = {}
    with torch.no_grad():
        with FlopCounterMode(display=False) as fc:
            for te, tok in (("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2")):
                if te in models:
                    # SD 1/2 encode the empty negative prompt too; SDXL zeroes it (force_zeros_for_empty_prompt).
                    calls = 2 if pipeline == "StableDiffusionPipeline" and cfg_mult == 2 else 1
                    for _ in range(calls):
                        models[te](zeros(1, comps[tok]["model_max_length"], dtype=torch.long))
        out["text"] = fc.get_total_flops()
        with FlopCounterMode(display=False) as fc:
            if "unet" in models:
                unet = models["unet"]
                kw: dict[str, Any] = {}
                if unet.config.addition_embed_type == "text_time":
                    proj = models["text_encoder_2"].config.projection_dim
                    kw["added_cond_kwargs"] = {"text_embeds": zeros(cfg_mult, proj), "time_ids": zeros(cfg_mult, 6)}
                unet(zeros(cfg_mult, unet.config.in_channels, h, h), zeros(1),
                     zeros(cfg_mult, comps["tokenizer"]["model_max_length"], unet.config.cross_attention_dim), **kw)
            else:
                tr = models["transformer"]
                tokens, text_len = (h // 2) ** 2, comps["tokenizer_2"]["model_max_length"]
                tr(hidden_states=zeros(1, tokens, tr.config.in_channels),
                   encoder_hidden_states=zeros(1, text_len, tr.config.joint_attention_dim),
                   pooled_projections=zeros(1, tr.config.pooled_projection_dim), timestep=zeros(1),
                   img_ids=zeros(tokens, 3), txt_ids=zeros(text_len, 3), guidance=None)
        out["denoise"] = fc.get_total_flops() * arch["steps"]
        with FlopCounterMode(display=False) as fc:
            vae.decode(zeros(1, vae.config.latent_channels, h, h))
        out["vae"] = fc.get_total_flops()
    out["total"] = out["text"] + out["denoise"] + out["vae"]
    return {"params": params, "flops": out, "resolution": res}


# -- workloads -----------------------------------------------------------------------------
@dataclasses.dataclass
class Workload:
    name: str
    title: str
    arch: dict[str, Any] | None = None
    skip: str | None = None


def select_workloads(names: list[str], scale: str, device: str, mini_weights: Path | None = None) -> list[Workload]:
    from imagegate import mini

    out = []
    for name in names:
        if name == "tiny":
            out.append(Workload("tiny", "tests/tiny.py random SD pipeline, generated at 64px, 3 steps CFG 5 (medium)"))
        elif name == "mini":
            folder = mini_weights or mini.WEIGHTS_DIR
            shown = folder.relative_to(ROOT) if folder.is_relative_to(ROOT) else folder
            skip = None if (folder / "model_index.json").exists() else (
                f"skipped: {shown}/model_index.json is not there yet")
            title = "built-in imagegate-mini" if mini_weights is None else f"imagegate-mini from {shown}"
            out.append(Workload("mini", f"{title}, 128px, medium preset", skip=skip))
        elif name in ARCH_NAMES:
            arch = load_arch(name)
            label = name if scale == "full" else f"{name}-toy"
            skip = None
            if scale == "full" and device != "cuda":
                skip = "unmeasured: needs a GPU (run with --arch-scale toy to exercise the code path on CPU)"
            res = arch["resolution"] if scale == "full" else TOY_RESOLUTION
            out.append(Workload(label, f"{arch['pipeline']} {'random init' if scale == 'full' else 'toy width'}, "
                                       f"{res}px, {arch['reference_setting'].split(',')[0]}", arch=arch, skip=skip))
        else:
            raise SystemExit(f"unknown workload {name!r}; known: tiny, mini, {', '.join(ARCH_NAMES)}")
    return out


def prepare_model(w: Workload, scale: str, device: str, dtype: torch.dtype, tmp: Path,
                  mini_weights: Path | None = None) -> Any:
    """The model folder and its ModelConfig; the server loads it with the production loader."""
    from imagegate.registry import ModelConfig, builtin_mini_config

    if w.name == "tiny":
        from tiny import build_tiny_sd

        path = build_tiny_sd(tmp / "tiny")
        return ModelConfig(name="tiny", source=str(path), family="sd", native_size=64, size_multiple=16,
                           quality=dict(TINY_QUALITY))
    if w.name == "mini":
        config = builtin_mini_config()
        return dataclasses.replace(config, source=str(mini_weights)) if mini_weights else config
    assert w.arch is not None
    arch = w.arch
    folder = tmp / w.name
    pipe = build_arch_pipeline(arch, scale, device, dtype, tmp / f"{w.name}-tokenizers")
    pipe.save_pretrained(folder, safe_serialization=True)
    del pipe
    _free(device)
    setting = (arch["steps"], float(arch["guidance_scale"]))
    return ModelConfig(name=w.name, source=str(folder), family=arch["imagegate_family"],
                       native_size=arch["resolution"] if scale == "full" else TOY_RESOLUTION, size_multiple=16,
                       quality={"low": setting, "medium": setting, "high": setting})


def _free(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


# -- the two servers -------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve(app: Any, ready_timeout_s: float) -> Iterator[str]:
    """A real uvicorn on 127.0.0.1 in a thread, as tests/conftest.py::live_server, with a
    start-up deadline long enough to load a 30 GB model."""
    import httpx2
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + ready_timeout_s
    while True:
        try:
            if httpx2.get(base + "/health", timeout=1).status_code == 200:
                break
        except httpx2.HTTPError:
            pass
        if time.monotonic() > deadline or not thread.is_alive():
            server.should_exit = True
            raise TimeoutError(f"server at {base} did not become healthy")
        time.sleep(0.05)
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def naive_app(pipe: Any, spec: Any) -> Any:
    """The peer-server baseline: one plain pipeline call per request, one at a time."""
    from fastapi import Body, FastAPI
    from fastapi.responses import JSONResponse

    from imagegate import postprocess

    app = FastAPI()
    lock = threading.Lock()

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/images/generations")
    def generations(body: dict[str, Any] = Body(...)) -> JSONResponse:  # sync: runs in FastAPI's threadpool
        arrived = time.perf_counter()
        with lock:
            started = time.perf_counter()
            image = pipe(prompt=body["prompt"], num_inference_steps=spec.steps, guidance_scale=spec.guidance,
                         width=spec.gen_width, height=spec.gen_height, num_images_per_prompt=1,
                         generator=torch.Generator(device="cpu").manual_seed(int(body.get("seed", 0)))).images[0]
            ran = time.perf_counter()
        img = postprocess.resize_to(image.convert("RGB"), spec.width, spec.height)
        b64 = base64.b64encode(postprocess.encode(img, spec.output_format, None)).decode("ascii")
        done = time.perf_counter()
        timing = (f"queue;dur={(started - arrived) * 1000:.1f}, inference;dur={(ran - started) * 1000:.1f}, "
                  f"encode;dur={(done - ran) * 1000:.1f}")
        return JSONResponse({"created": int(time.time()), "data": [{"b64_json": b64}]},
                            headers={"server-timing": timing})

    return app


# -- measuring -------------------------------------------------------------------------------
def _proc_status(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class PeakMemory:
    """GPU: torch.cuda.max_memory_allocated over the block (weights included). CPU: the
    process's peak RSS over the block minus its RSS at the start: VmHWM, reset through
    /proc/self/clear_refs; where that is not allowed, psutil sampled every 5 ms (psutil has
    no peak RSS on Linux, and sampling can miss a short spike)."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.value: float | None = None
        self._sampler: threading.Thread | None = None
        self._stop = threading.Event()
        self._sampled = 0

    def __enter__(self) -> PeakMemory:
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            return self
        self.start = _proc_status("VmRSS") or 0
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.method = "VmHWM"
        except OSError:
            self.method = "psutil"
            self._sampler = threading.Thread(target=self._sample, daemon=True)
            self._sampler.start()
        return self

    def _sample(self) -> None:
        try:
            import psutil
        except ImportError:
            return
        proc = psutil.Process()
        while not self._stop.is_set():
            self._sampled = max(self._sampled, proc.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *exc: Any) -> None:
        if self.device == "cuda":
            self.value = torch.cuda.max_memory_allocated()
            return
        if self._sampler is not None:
            self._stop.set()
            self._sampler.join()
            peak = self._sampled or None
        else:
            peak = _proc_status("VmHWM")
        self.value = None if peak is None else max(0, peak - self.start)

    def text(self) -> str:
        if self.value is None:
            return "n/a"
        if self.device == "cuda":
            return f"{self.value / 2**30:.1f} GiB"
        return f"+{self.value / 2**20:.0f} MiB"


def parse_timing(header: str) -> dict[str, float]:
    out = {}
    for part in header.split(","):
        name, _, dur = part.strip().partition(";dur=")
        if dur:
            out[name] = float(dur)
    return out


@dataclasses.dataclass
class Level:
    workload: str
    system: str  # "ours" | "naive"
    concurrency: int
    requests: int
    ok: int = 0
    errors: int = 0
    wall_s: float = 0.0
    latencies: list[float] = dataclasses.field(default_factory=list)
    timings: list[dict[str, float]] = dataclasses.field(default_factory=list)
    pipeline_calls: int | None = None
    memory: str = "n/a"
    first_error: str | None = None

    @property
    def images_per_s(self) -> float:
        return self.ok / self.wall_s if self.wall_s > 0 else 0.0

    def pct(self, q: float) -> float:
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))] if xs else float("nan")

    def timing(self, name: str) -> float | None:
        xs = [t[name] for t in self.timings if name in t]
        return statistics.median(xs) if xs else None


def prompt(i: int) -> str:
    return f"{PROMPTS[i % len(PROMPTS)]} {i}"


async def drive(client: Any, model: str, level: Level, seed0: int = 0) -> None:
    """c clients, each sending its next request when the last one returns."""
    todo = iter(range(level.requests))

    async def client_loop() -> None:
        for i in todo:
            t0 = time.perf_counter()
            try:
                raw = await client.images.with_raw_response.generate(
                    model=model, prompt=prompt(seed0 + i), size=SIZE, quality=QUALITY, output_format=OUTPUT_FORMAT,
                    extra_body={"seed": seed0 + i})
                resp = raw.parse()
                if not resp.data or not (resp.data[0].b64_json or "").startswith("/9j/"):  # a JPEG's first bytes
                    raise ValueError("response carries no JPEG image")
            except Exception as exc:  # noqa: BLE001 - counted and reported, the level goes on
                level.errors += 1
                level.first_error = level.first_error or f"{type(exc).__name__}: {exc}"[:200]
                continue
            level.latencies.append(time.perf_counter() - t0)
            level.timings.append(parse_timing(raw.headers.get("server-timing", "")))
            level.ok += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(client_loop() for _ in range(level.concurrency)))
    level.wall_s = time.perf_counter() - t0


def _client(base: str) -> Any:
    from openai import AsyncOpenAI

    return AsyncOpenAI(base_url=base + "/v1", api_key="bench", max_retries=0, timeout=3600.0)


def load_client_main() -> None:
    """The load generator's process: one JSON command per stdin line, one Level per stdout line."""
    out, sys.stdout = sys.stdout, sys.stderr  # stdout carries the protocol only

    async def main() -> None:
        clients: dict[str, Any] = {}
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            cmd = json.loads(line)
            if cmd["base"] not in clients:
                clients[cmd["base"]] = _client(cmd["base"])
            level = Level(cmd["workload"], cmd["system"], cmd["concurrency"], cmd["requests"])
            await drive(clients[cmd["base"]], cmd["model"], level, cmd["seed0"])
            out.write(json.dumps(dataclasses.asdict(level)) + "\n")
            out.flush()
        for client in clients.values():
            await client.close()

    asyncio.run(main())


class LoadClient:
    """The load generator in its own process, as real clients are: its event loop and JSON
    parsing do not take the servers' GIL (these small models are Python-bound on a CPU),
    and its memory is not counted as theirs."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--load-client"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def run(self, base: str, model: str, level: Level, seed0: int = 0) -> Level:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        cmd = dict(base=base, model=model, workload=level.workload, system=level.system,
                   concurrency=level.concurrency, requests=level.requests, seed0=seed0)
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the load client exited with {self.proc.wait()}")
        return Level(**json.loads(line))

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def measure(load: LoadClient, bases: dict[str, str], model: str, worker: Any, levels: list[int], min_requests: int,
            warmup: int, device: str, workload: str) -> list[Level]:
    for system, base in bases.items():  # warm both alike: one lone request, then a burst
        load.run(base, model, Level(workload, system, 1, 1), seed0=10_000)
        load.run(base, model, Level(workload, system, warmup, warmup), seed0=10_000)
    out = []
    for k, c in enumerate(levels):
        order = ["ours", "naive"] if k % 2 == 0 else ["naive", "ours"]
        for system in order:
            calls0 = worker.pipeline_calls
            with PeakMemory(device) as mem:
                level = load.run(bases[system], model, Level(workload, system, c, max(2 * c, min_requests)))
            level.memory = mem.text()
            level.pipeline_calls = worker.pipeline_calls - calls0 if system == "ours" else level.ok
            out.append(level)
            print(f"  {workload:>16} {system:>5} c={c:<3} {level.images_per_s:7.2f} images/s  "
                  f"p50 {level.pct(0.5) * 1000:7.0f} ms  errors {level.errors}", flush=True)
    return out


@dataclasses.dataclass
class WorkloadResult:
    workload: Workload
    config: Any = None
    spec: Any = None
    flops: dict[str, int] | None = None
    levels: list[Level] = dataclasses.field(default_factory=list)


def run_workload(w: Workload, args: argparse.Namespace, device: str, dtype: torch.dtype, tmp: Path,
                 load: LoadClient) -> WorkloadResult:
    from imagegate.app import create_app
    from imagegate.engine.base import Job
    from imagegate.normalize import build_spec
    from imagegate.settings import Settings

    result = WorkloadResult(w)
    print(f"[{w.name}] preparing the model folder", flush=True)
    config = prepare_model(w, args.arch_scale, device, dtype, tmp, args.mini_weights)
    levels = args.levels
    settings = Settings(data_dir=tmp / f"data-{w.name}", torch_threads=args.threads,
                        # Raised so the top level measures service, not 503s (the default is 32).
                        queue_size=max(64, 2 * max(levels)))
    app = create_app(settings, [config])
    with serve(app, ready_timeout_s=args.load_timeout) as ours_base:
        worker = app.state.scheduler.worker(config.name)
        backend = worker.backend
        config = backend.config  # resolved with the family's defaults
        spec = build_spec(task="generate", model=config, requested_model=config.name, prompt=prompt(0), n=1, size=SIZE,
                          quality=QUALITY, background=None, output_format=OUTPUT_FORMAT, output_compression=None,
                          response_format="b64_json", stream=False, partial_images=None, seed=0)
        spec = backend.plan(spec).spec  # at the model's bucket, as the server runs it
        pipe = backend.pipes["txt2img"]  # the object the server runs; the naive server calls it too
        # One pipeline call through the backend, as the server makes it for one image (also a warm-up).
        backend.run_batch([Job(spec=spec)])
        print(f"[{w.name}] counting FLOPs over one pipeline call", flush=True)
        flops = count_call_flops(functools.partial(backend.run_batch, [Job(spec=spec)]))
        result.config, result.spec, result.flops = config, spec, flops
        with serve(naive_app(pipe, spec), ready_timeout_s=60) as naive_base:
            print(f"[{w.name}] load: levels {levels}", flush=True)
            result.levels = measure(load, {"ours": ours_base, "naive": naive_base}, config.name, worker, levels,
                                    args.min_requests, min(8, max(levels)), device, w.name)
        del pipe, backend, worker
    del app
    _free(device)
    if w.arch is not None:
        shutil.rmtree(tmp / w.name, ignore_errors=True)  # a full-size FLUX folder is ~34 GB
    return result


# -- the machine ------------------------------------------------------------------------------
def machine_load() -> tuple[str, bool]:
    """Load average and the other processes busy on the CPU (names only), so a result taken
    beside a co-tenant says so."""
    load1, load5, load15 = os.getloadavg()
    busy = []
    try:
        import psutil

        me = os.getpid()
        procs = [p for p in psutil.process_iter(["name"]) if p.pid != me]
        for p in procs:
            with contextlib.suppress(psutil.Error):
                p.cpu_percent(None)
        time.sleep(0.5)
        for p in procs:
            with contextlib.suppress(psutil.Error):
                pc = p.cpu_percent(None)
                if pc >= 20:
                    busy.append(f"{p.info['name']} {pc:.0f}%")
    except ImportError:
        pass
    cores = os.cpu_count() or 1
    shared = bool(busy) or load1 > 0.5
    text = f"load average {load1:.2f}/{load5:.2f}/{load15:.2f} on {cores} cores"
    if busy:
        text += "; other processes on the CPU: " + ", ".join(busy)
    return text, shared


def gpu_peak_flops(device: str, override_tflops: float | None) -> float | None:
    if override_tflops:
        return override_tflops * 1e12
    if device != "cuda":
        return None
    name = torch.cuda.get_device_name(0)
    for key, tflops in GPU_PEAK_BF16_TFLOPS:
        if key in name:
            return tflops * 1e12
    return None


# -- the report -------------------------------------------------------------------------------
@dataclasses.dataclass
class Report:
    rows: list[dict[str, Any]]
    text: str
    notes: list[str]


def _ms(x: float | None) -> str:
    return "n/a" if x is None or x != x else f"{x:.0f}" if x >= 10 else f"{x:.1f}"


def _g(x: float) -> str:
    return f"{x:.3g}"


def build_report(results: list[WorkloadResult], archs: list[tuple[str, dict[str, Any]]], device: str,
                 dtype: torch.dtype, args: argparse.Namespace, machine: str, shared: bool) -> Report:
    peak = gpu_peak_flops(device, args.peak_tflops)
    rate = args.usd_per_gpu_hour if device == "cuda" else args.usd_per_cpu_hour
    rows: list[dict[str, Any]] = []
    load_rows, cost_rows, work_rows = [], [], []
    for r in results:
        w = r.workload
        if w.skip:
            work_rows.append([w.name, w.title, w.skip, "", "", ""])
            continue
        f = r.flops or {}
        s = r.spec
        work_rows.append([w.name, w.title, f"{s.gen_width}x{s.gen_height} → {s.width}x{s.height} {s.output_format}",
                          f"{s.steps} steps, guidance {s.guidance:g}",
                          f"{_g(f.get('total', 0) / 1e9)}", f"{_g(f.get('text', 0) / 1e9)} / "
                          f"{_g(f.get('denoise', 0) / 1e9)} / {_g(f.get('vae', 0) / 1e9)}"])
        naive = {lv.concurrency: lv for lv in r.levels if lv.system == "naive"}
        for lv in r.levels:
            ips = lv.images_per_s
            base = naive.get(lv.concurrency)
            ratio = ips / base.images_per_s if lv.system == "ours" and base and base.images_per_s > 0 else None
            achieved = f.get("total", 0) * ips
            dev_s = 1 / ips if ips > 0 else None
            usd = dev_s * rate / 3600 if dev_s is not None and rate else None
            row = dict(workload=w.name, system=lv.system, concurrency=lv.concurrency, requests=lv.requests,
                       errors=lv.errors, images_per_s=ips, ratio=ratio, p50_ms=lv.pct(0.5) * 1000,
                       p95_ms=lv.pct(0.95) * 1000, queue_ms=lv.timing("queue"), inference_ms=lv.timing("inference"),
                       encode_ms=lv.timing("encode"),
                       images_per_call=(lv.ok / lv.pipeline_calls) if lv.pipeline_calls else None,
                       peak_memory=lv.memory, flops_per_image=f.get("total"), achieved_flops=achieved,
                       peak_fraction=(achieved / peak) if peak else None, device_s_per_image=dev_s,
                       usd_per_image=usd, openai_usd_per_image=GPT_IMAGE_1_USD[QUALITY], first_error=lv.first_error)
            rows.append(row)
            requests = f"{lv.requests}" + (f" ({lv.errors} failed)" if lv.errors else "")
            load_rows.append([w.name, lv.system, lv.concurrency, requests,
                              f"{ips:.2f}", f"{ratio:.2f}x" if ratio is not None else "",
                              _ms(row["p50_ms"]), _ms(row["p95_ms"]), _ms(row["queue_ms"]), _ms(row["inference_ms"]),
                              _ms(row["encode_ms"]),
                              f"{row['images_per_call']:.1f}" if row["images_per_call"] else "n/a", lv.memory])
            frac = f"{row['peak_fraction'] * 100:.1f}%" if row["peak_fraction"] is not None else "n/a"
            cost = f"${usd:.5f}" if usd is not None else "n/a"
            cost_rows.append([w.name, lv.system, lv.concurrency, _g(achieved / 1e9), frac,
                              f"{dev_s:.3f}" if dev_s else "n/a", cost, f"${GPT_IMAGE_1_USD[QUALITY]:.3f}"])
    arch_rows = []
    for name, a in archs:
        p, fl = a["params"], a["flops"]
        den = p.get("unet", p.get("transformer", 0))
        text = sum(v for k, v in p.items() if k.startswith("text_encoder"))
        status = "measured above" if any(r.workload.name == name and not r.workload.skip for r in results) else (
            "unmeasured: no GPU in this run")
        arch_rows.append([name, f"{a['resolution']}px", f"{den / 1e9:.2f} / {text / 1e9:.2f} / {p['vae'] / 1e9:.3f}",
                          f"{fl['total'] / 1e12:.1f}", f"{fl['text'] / 1e12:.2f} / {fl['denoise'] / 1e12:.1f} / "
                          f"{fl['vae'] / 1e12:.2f}", status])
    rate_note = (f"${rate:.2f}/{'GPU' if device == 'cuda' else 'CPU'}-hour" if rate
                 else "no CPU price given (--usd-per-cpu-hour); --usd-per-gpu-hour applies to GPUs")
    peak_note = (f"peak {peak / 1e12:.0f} TFLOP/s dense bf16" if peak else
                 "n/a: no honest peak for a shared, virtualised CPU (give --peak-tflops to set one)")
    parts = [
        "Workloads (FLOPs per image: torch.utils.flop_counter over one pipeline call through the backend)\n\n"
        + markdown_table(["workload", "what", "generated → delivered", "setting", "GFLOP/image",
                          "text / denoise / VAE GFLOP"], work_rows),
        "Throughput and latency (ours = imagegate HTTP server; naive = one pipeline call per request, one at a time; "
        "queue/inference/encode = Server-Timing medians, ms)\n\n"
        + markdown_table(["workload", "system", "concurrency", "requests", "images/s", "ours/naive", "p50 ms", "p95 ms",
                          "queue ms", "inference ms", "encode ms", "images/call", "peak memory"], load_rows),
        f"Compute and cost (achieved = FLOPs/image × images/s; share of {peak_note}; cost at {rate_note})\n\n"
        + markdown_table(["workload", "system", "concurrency", "achieved GFLOP/s", "of peak", "device-s/image",
                          "$/image", f"gpt-image-1 $/image ({QUALITY}, {SIZE})"], cost_rows),
    ]
    if arch_rows:
        parts.append("Architectures at full size (bench/archs; counted on the meta device, no weights, no timing)\n\n"
                     + markdown_table(["architecture", "resolution", "params B (denoiser / text / VAE)", "TFLOP/image",
                                       "text / denoise / VAE TFLOP", "serving"], arch_rows))
    notes = [
        f"both systems: {str(dtype).replace('torch.', '')} (imagegate's pick_dtype for this {device}), "
        f"{args.threads} torch thread(s), the same pipeline object",
        f"machine: {machine}" + ("; the CPU was shared with other work during this run, so absolute numbers are "
                                 "noisy; both systems ran interleaved under the same conditions" if shared else ""),
        "naive = a minimal FastAPI endpoint over uvicorn on 127.0.0.1: a sync handler calls the plain diffusers "
        "pipeline (num_images_per_prompt=1) under a lock, then resizes + JPEG-encodes + base64s outside the lock; "
        "it calls the same pipeline object as ours (same weights, dtype, attention, device)",
        f"load = openai AsyncOpenAI over HTTP from a separate process, c clients back to back, "
        f"max(2c, {args.min_requests}) requests per level, "
        f"{SIZE} {OUTPUT_FORMAT} quality={QUALITY}; ours: queue_size raised to {max(64, 2 * max(args.levels))}, "
        "max 8 images per pipeline call",
        "peak memory: " + ("torch.cuda.max_memory_allocated over the level (weights included)" if device == "cuda" else
                           "peak RSS over the level minus RSS at its start, of the process serving both systems "
                           "(the client runs apart), VmHWM reset via /proc/self/clear_refs"),
        f"gpt-image-1 prices per image at {SIZE}: low ${GPT_IMAGE_1_USD['low']}, medium ${GPT_IMAGE_1_USD['medium']}, "
        f"high ${GPT_IMAGE_1_USD['high']}",
    ]
    if device != "cuda":
        notes.append("GPU rows (SD-Turbo, SDXL, FLUX.1-schnell at full size) are unmeasured: no GPU in this run")
    text = "\n\n".join(parts)
    return Report(rows=rows, text=text, notes=notes)


# -- main -------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="concurrency 1 and 8, fewer requests (<= 60 s on CPU)")
    ap.add_argument("--levels", help="comma-separated concurrency levels (default 1,8,32,64)")
    ap.add_argument("--min-requests", type=int, help="requests per level at least this many, and 2x concurrency")
    ap.add_argument("--workloads",
                    help="comma-separated: tiny, mini, sd-turbo, sdxl, flux-schnell "
                         "(default: tiny, mini, and the architectures on a GPU or with --arch-scale toy)")
    ap.add_argument("--arch-scale", choices=["full", "toy"], default="full")
    ap.add_argument("--mini-weights", type=Path, default=None,
                    help="benchmark this imagegate-mini folder instead of the built-in weights (e.g. a new checkpoint)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (house default on the 2-core box)")
    ap.add_argument("--usd-per-gpu-hour", type=float, default=2.50)
    ap.add_argument("--usd-per-cpu-hour", type=float, default=None)
    ap.add_argument("--peak-tflops", type=float, default=None, help="override the device's dense bf16 peak")
    ap.add_argument("--load-timeout", type=float, default=900.0, help="seconds allowed for a model to load")
    ap.add_argument("--no-arch-flops", action="store_true", help="skip the full-size architecture FLOP count")
    ap.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    args = ap.parse_args(argv)
    args.levels = ([int(x) for x in args.levels.split(",")] if args.levels
                   else list(QUICK_LEVELS if args.quick else LEVELS))
    if args.min_requests is None:
        args.min_requests = 4 if args.quick else 8
    return args


def run(argv: list[str] | None = None) -> Report:
    args = parse_args(argv)
    warnings.filterwarnings("ignore", message="invalid value encountered in cast")  # random weights can give NaNs
    from imagegate.backends.diffusers import pick_device, pick_dtype

    device = pick_device("auto")
    dtype = pick_dtype("auto", device)
    torch.set_num_threads(args.threads)
    if args.workloads:
        names = [x.strip() for x in args.workloads.split(",") if x.strip()]
    else:
        names = ["tiny", "mini"] + (list(ARCH_NAMES) if device == "cuda" or args.arch_scale == "toy" else [])
    workloads = select_workloads(names, args.arch_scale, device, args.mini_weights)
    machine_before, shared_before = machine_load()
    print(f"device: {device_description()} ({device}, {dtype})\nmachine: {machine_before}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="imagegate-bench-engine-"))
    results = []
    t0 = time.perf_counter()
    load = LoadClient()
    try:
        for w in workloads:
            if w.skip:
                print(f"[{w.name}] {w.skip}", flush=True)
                results.append(WorkloadResult(w))
                continue
            results.append(run_workload(w, args, device, dtype, tmp, load))
    finally:
        load.close()
        shutil.rmtree(tmp, ignore_errors=True)
    archs = []
    if not args.no_arch_flops:
        print("[archs] counting full-size parameters and FLOPs on the meta device", flush=True)
        archs = [(name, arch_flops(load_arch(name), "full")) for name in ARCH_NAMES]
    machine_after, shared_after = machine_load()
    machine = f"before: {machine_before}; after: {machine_after}"
    report = build_report(results, archs, device, dtype, args, machine, shared_before or shared_after)
    elapsed = time.perf_counter() - t0
    report.notes.append(f"run time {elapsed:.0f} s")
    print()
    print(report.text)
    print()
    for n in [f"device: {device_description()}", *report.notes]:
        print(f"- {n}")
    if not args.no_record:
        command = "python bench/bench_engine.py" + ("" if argv is None and len(sys.argv) == 1 else " " + " ".join(
            argv if argv is not None else sys.argv[1:]))
        append_results("Serving engine vs naive baseline under concurrent load", command, report.text,
                       notes="\n- ".join(report.notes))
    return report


if __name__ == "__main__":
    if sys.argv[1:] == ["--load-client"]:
        load_client_main()
    else:
        run()
