"""`imagegate serve | generate | edit | models`."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="A self-hosted, drop-in OpenAI Images API.")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
        except OSError:
            return False


def _settings(**overrides: object):  # type: ignore[no-untyped-def]
    """Settings from the environment with the options given on the command line on top; a
    bad value (or an unreadable keys file) is a one-line error and exit 2, not a traceback."""
    from pydantic import ValidationError

    from .settings import Settings

    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        for err in exc.errors():
            cause = (err.get("ctx") or {}).get("error")
            where = ".".join(str(p) for p in err["loc"])
            typer.echo(f"error: {cause}" if cause is not None and not where else f"error: {where}: {err['msg']}", err=True)
        raise typer.Exit(2) from exc


@app.command()
def serve(
    host: Annotated[Optional[str], typer.Option(help="Address to bind [IMAGEGATE_HOST; 127.0.0.1].")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port to listen on [IMAGEGATE_PORT; 8000].")] = None,
    data_dir: Annotated[Optional[Path], typer.Option(
        "--data-dir", help="Ledger, stored images, signing key [IMAGEGATE_DATA_DIR; data].")] = None,
    models: Annotated[Optional[Path], typer.Option("--models", help="TOML models file [IMAGEGATE_MODELS_FILE].")] = None,
    api_key: Annotated[Optional[list[str]], typer.Option(
        "--api-key", help="Accepted bearer key (repeatable); visible in `ps`: prefer --api-keys-file.")] = None,
    api_keys_file: Annotated[Optional[Path], typer.Option(
        "--api-keys-file", help="File of accepted keys, one a line, # comments [IMAGEGATE_API_KEYS_FILE].")] = None,
    allow_anonymous: Annotated[bool, typer.Option("--allow-anonymous", help="Allow a non-loopback bind with no key.")] = False,
    log_level: Annotated[Optional[str], typer.Option(help="Log level [IMAGEGATE_LOG_LEVEL; info].")] = None,
) -> None:
    """Start the HTTP server. Options given here win over IMAGEGATE_* variables, which win over the defaults."""
    given: dict[str, object | None] = {
        "host": host, "port": port, "data_dir": data_dir, "models_file": models, "api_keys": api_key or None,
        "api_keys_file": api_keys_file, "allow_anonymous": allow_anonymous or None, "log_level": log_level,
    }
    settings = _settings(**{k: v for k, v in given.items() if v is not None})
    if not _is_loopback(settings.host) and not settings.api_keys and not settings.allow_anonymous:
        typer.echo(
            f"refusing to bind {settings.host} with no API key: set --api-keys-file (or IMAGEGATE_API_KEYS_FILE, "
            "IMAGEGATE_API_KEYS, --api-key), or pass --allow-anonymous to serve everyone on the network.",
            err=True,
        )
        raise typer.Exit(2)
    import uvicorn

    from .app import create_app
    from .server import uvicorn_options

    try:
        application = create_app(settings)
        # Fail before binding: a models file naming missing files or unknown checkpoints is
        # an operator error to see now, not a 503 on /health later.
        from .app import model_configs
        from .backends.diffusers import DiffusersBackend

        for config in model_configs(settings):
            DiffusersBackend(config).validate()
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    uvicorn.run(application, **uvicorn_options(settings))


def _local_pipeline(model: Optional[str], models: Optional[Path]):  # type: ignore[no-untyped-def]
    import torch

    from .app import model_configs
    from .backends.diffusers import DiffusersBackend
    from .registry import Registry

    settings = _settings(models_file=models) if models else _settings()
    torch.set_num_threads(settings.torch_threads or os.cpu_count() or 1)
    registry = Registry(model_configs(settings), default=settings.default_model)
    config = registry.resolve(model)
    backend = DiffusersBackend(config)
    backend.load()
    return settings, backend.config, backend


def _run_local(task: str, prompt: str, out: Path, images: list[Path], mask: Optional[Path], **params: object) -> None:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from . import postprocess
    from .errors import ImagegateError
    from .inputs import decode_image, decode_mask
    from .normalize import build_spec
    from .service import build_job

    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                      TimeElapsedColumn()) as progress:
            bar = progress.add_task("loading model", total=None)
            settings, config, backend = _local_pipeline(params.pop("model"), params.pop("models"))  # type: ignore[arg-type]
            lim = dict(max_pixels=settings.max_input_pixels, max_bytes=settings.max_image_bytes)
            inputs = [decode_image(p.read_bytes(), param=str(p), **lim) for p in images]
            edit = decode_mask(mask.read_bytes(), first_size=inputs[0].size, **lim) if mask and inputs else None
            fmt = {".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp", ".avif": "avif", ".gif": "gif"}.get(out.suffix.lower(), "png")
            spec = build_spec(task=task, model=config, requested_model=None, prompt=prompt, output_format=fmt,  # type: ignore[arg-type]
                              output_compression=None, response_format="b64_json", stream=False, partial_images=None,
                              first_image_size=inputs[0].size if inputs else None, **params)  # type: ignore[arg-type]
            if spec.background == "transparent":
                spec = _steered(spec)
            from .service import RequestContext

            job = build_job(spec, inputs, edit, backend.modes, bool(backend.family and backend.family.multi_image),
                            RequestContext("cli", "cli", ""))
            progress.update(bar, description=f"{config.name} {spec.size}", total=spec.steps, completed=0)
            job.on_step = lambda step, total: progress.update(bar, completed=step, total=total)
            generated = backend.run(job)
    except ImagegateError as exc:
        typer.echo(f"error ({exc.param or 'request'}): {exc.message}", err=True)
        raise typer.Exit(2) from exc
    matter = postprocess.ChromaKeyMatter()
    original = inputs[0].image if edit is not None else None
    outs = [out] if len(generated) == 1 else [out.with_name(f"{out.stem}-{i}{out.suffix}") for i in range(len(generated))]
    for img, path in zip(generated, outs):
        path.write_bytes(postprocess.finish(img, spec, original, edit, matter))
        typer.echo(f"wrote {path} ({spec.size}, seed {job.seed_used})")


def _steered(spec):  # type: ignore[no-untyped-def]
    from dataclasses import replace

    from .postprocess import ChromaKeyMatter

    return replace(spec, prompt=ChromaKeyMatter().steer(spec.prompt))


@app.command()
def generate(
    prompt: str,
    out: Annotated[Path, typer.Option("-o", "--out", help="Output file (.png, .jpg, .webp, .avif, .gif).")] = Path("out.png"),
    size: Annotated[Optional[str], typer.Option(help="WxH or auto.")] = None,
    quality: Annotated[Optional[str], typer.Option(help="low, medium, high or auto.")] = None,
    n: Annotated[int, typer.Option(help="Number of images.")] = 1,
    seed: Annotated[Optional[int], typer.Option(help="Seed for reproducible output.")] = None,
    model: Annotated[Optional[str], typer.Option(help="Model name or alias.")] = None,
    models: Annotated[Optional[Path], typer.Option("--models", help="TOML models file.")] = None,
    background: Annotated[Optional[str], typer.Option(help="transparent, opaque or auto.")] = None,
) -> None:
    """Generate an image in-process (no server)."""
    _run_local("generate", prompt, out, [], None, size=size, quality=quality, n=n, seed=seed, model=model,
               models=models, background=background)


@app.command()
def edit(
    args: Annotated[list[str], typer.Argument(help="IMAGE... PROMPT")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output file.")] = Path("out.png"),
    mask: Annotated[Optional[Path], typer.Option(help="PNG whose alpha-0 pixels mark the region to edit.")] = None,
    size: Annotated[Optional[str], typer.Option(help="WxH or auto.")] = None,
    quality: Annotated[Optional[str], typer.Option(help="low, medium, high or auto.")] = None,
    n: Annotated[int, typer.Option(help="Number of images.")] = 1,
    seed: Annotated[Optional[int], typer.Option(help="Seed.")] = None,
    model: Annotated[Optional[str], typer.Option(help="Model name or alias.")] = None,
    models: Annotated[Optional[Path], typer.Option("--models", help="TOML models file.")] = None,
    background: Annotated[Optional[str], typer.Option(help="transparent, opaque or auto.")] = None,
) -> None:
    """Edit one or more images in-process (no server): `imagegate edit a.png b.png "prompt" -o out.png`."""
    if len(args) < 2:
        typer.echo("usage: imagegate edit IMAGE... PROMPT -o out.png", err=True)
        raise typer.Exit(2)
    *images, prompt = args
    _run_local("edit", prompt, out, [Path(p) for p in images], mask, size=size, quality=quality, n=n, seed=seed,
               model=model, models=models, background=background)


@app.command("models")
def list_models(models: Annotated[Optional[Path], typer.Option("--models", help="TOML models file.")] = None) -> None:
    """List the models and aliases a models file (or the built-in default) serves."""
    from .app import model_configs
    from .registry import Registry

    registry = Registry(model_configs(_settings(models_file=models) if models else _settings()))
    for name, c in registry.configs.items():
        typer.echo(f"{name}\t{c.source}")
    for alias, target in registry.aliases.items():
        typer.echo(f"{alias}\t-> {target}")


if __name__ == "__main__":
    app()
