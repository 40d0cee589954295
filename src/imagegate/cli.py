"""`imagegate serve | generate | edit | models | keys | db`."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from typing import Annotated, Any

import typer

from .cli_common import DatabaseUrlOption, DataDirOption, database_url_of, load_settings
from .cli_keys import database_has_keys, keys_app
from .cli_usage import usage_command
from .cli_verify import verify_command
from .cli_webhooks import webhooks_app

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


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind [IMAGEGATE_HOST; 127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on [IMAGEGATE_PORT; 8000].")] = None,
    data_dir: Annotated[Path | None, typer.Option(
        "--data-dir", help="Ledger, stored images, signing key [IMAGEGATE_DATA_DIR; data].")] = None,
    models: Annotated[Path | None, typer.Option("--models", help="TOML models file [IMAGEGATE_MODELS_FILE].")] = None,
    api_key: Annotated[list[str] | None, typer.Option(
        "--api-key", help="Accepted bearer key (repeatable); visible in `ps`: prefer --api-keys-file.")] = None,
    api_keys_file: Annotated[Path | None, typer.Option(
        "--api-keys-file", help="File of accepted keys, one a line, # comments [IMAGEGATE_API_KEYS_FILE].")] = None,
    allow_anonymous: Annotated[bool, typer.Option(
        "--allow-anonymous", help="Allow a non-loopback bind with no key.")] = False,
    log_level: Annotated[str | None, typer.Option(help="Log level [IMAGEGATE_LOG_LEVEL; info].")] = None,
    engine: Annotated[str | None, typer.Option(
        help="local: models in this process; ray: on Ray Serve, joining RAY_ADDRESS or a local instance "
             "[IMAGEGATE_ENGINE; local].")] = None,
    ingress_replicas: Annotated[int | None, typer.Option(
        help="Ingress replicas under --engine ray [IMAGEGATE_RAY_INGRESS_REPLICAS; 1].")] = None,
) -> None:
    """Start the HTTP server. Options given here win over IMAGEGATE_* variables, which win over the defaults."""
    given: dict[str, object | None] = {
        "host": host, "port": port, "data_dir": data_dir, "models_file": models, "api_keys": api_key or None,
        "api_keys_file": api_keys_file, "allow_anonymous": allow_anonymous or None, "log_level": log_level,
        "engine": engine, "ray_ingress_replicas": ingress_replicas,
    }
    settings = load_settings(**{k: v for k, v in given.items() if v is not None})
    if (not _is_loopback(settings.host) and not settings.api_keys and not settings.allow_anonymous
            and not database_has_keys(settings)):
        typer.echo(
            f"refusing to bind {settings.host} with no API key: make one (`imagegate keys create NAME`), set "
            "--api-keys-file (or IMAGEGATE_API_KEYS_FILE, IMAGEGATE_API_KEYS, --api-key), or pass --allow-anonymous "
            "to serve everyone on the network.",
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
        from .container import backend_for, model_configs

        for config in model_configs(settings):
            backend_for(config, settings).validate()
        from .storage import open_store

        open_store(settings.resolved_storage_url)  # a missing bucket or refused credentials: now, in one line
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    if settings.engine == "ray":
        try:
            from . import ray_serve
        except ImportError as exc:
            typer.echo(f"error: --engine ray needs Ray Serve: pip install 'imagegate[ray]' ({exc})", err=True)
            raise typer.Exit(2) from exc
        ray_serve.run(settings)
        return
    uvicorn.run(application, **uvicorn_options(settings))


def _run_local(task: str, prompt: str, out: Path, images: list[Path], mask: Path | None, **params: object) -> None:
    """The CLI's local mode: the same flow as the server (ledger and metering included,
    in IMAGEGATE_DATA_DIR), consumed here to write files."""
    import asyncio

    from .core.request import ImageRequest, Upload
    from .errors import ImagegateError

    models = params.pop("models")
    settings = load_settings(models_file=models) if models else load_settings()
    suffixes = {".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp", ".avif": "avif", ".gif": "gif"}
    fmt = suffixes.get(out.suffix.lower(), "png")
    try:
        request = ImageRequest(task=task, prompt=prompt, output_format=fmt, response_format="b64_json",  # type: ignore[arg-type]
                               images=tuple(Upload(str(p), p.read_bytes()) for p in images),
                               mask=Upload(str(mask), mask.read_bytes()) if mask else None, **params)  # type: ignore[arg-type]
    except OSError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    try:
        done = asyncio.run(_run_flow(settings, request))
    except ImagegateError as exc:
        typer.echo(f"error ({exc.param or 'request'}): {exc.message}", err=True)
        raise typer.Exit(2) from exc
    count = len(done.images)
    outs = [out] if count == 1 else [out.with_name(f"{out.stem}-{i}{out.suffix}") for i in range(count)]
    for data, path in zip(done.images, outs, strict=True):
        path.write_bytes(data)
        typer.echo(f"wrote {path} ({done.spec.size}, seed {done.seed})")


async def _run_flow(settings: Any, request: Any) -> Any:
    import asyncio
    import uuid

    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from .container import Container
    from .core.events import Accepted, Completed, Failed
    from .core.request import RequestContext
    from .engine.local import LocalEngine

    container = await Container.start(settings)
    beats = asyncio.create_task(container.instance.beat_forever())  # no janitor here: beat while running
    try:
        console = Console(stderr=True)
        with console.status("loading model"):
            name = container.registry.resolve(request.model).name
            engine = container.engine
            assert isinstance(engine, LocalEngine)  # the CLI's local mode runs the model in this process
            await engine.worker(name).load()
        # A bar of the denoising steps with an ETA, fed by the pipeline's step callback
        # (rich's Progress takes updates from the model's thread).
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"),
                   TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
        with Progress(*columns, console=console, transient=False) as progress:
            task: Any = None  # added once the request is accepted (a refusal shows no bar)

            def on_step(step: int, total: int) -> None:
                if task is not None:
                    progress.update(task, completed=step, total=total, description=f"{name}: generating")

            ctx = RequestContext(request_id=f"req_{uuid.uuid4().hex}", endpoint=f"cli.{request.task}", base_url="",
                                 on_step=on_step)
            async for ev in container.service.run(request, ctx):
                if isinstance(ev, Accepted):
                    task = progress.add_task(f"{name}: waiting", total=None)
                if isinstance(ev, Failed):
                    raise ev.error
                if isinstance(ev, Completed):
                    progress.update(task, description=f"{name}: done")
                    return ev
        raise AssertionError("the flow ended without a result")
    finally:
        beats.cancel()
        await container.close()


@app.command()
def generate(
    prompt: str,
    out: Annotated[Path, typer.Option(
        "-o", "--out", help="Output file (.png, .jpg, .webp, .avif, .gif).")] = Path("out.png"),
    size: Annotated[str | None, typer.Option(help="WxH or auto.")] = None,
    quality: Annotated[str | None, typer.Option(help="low, medium, high or auto.")] = None,
    n: Annotated[int, typer.Option(help="Number of images.")] = 1,
    seed: Annotated[int | None, typer.Option(help="Seed for reproducible output.")] = None,
    model: Annotated[str | None, typer.Option(help="Model name or alias.")] = None,
    models: Annotated[Path | None, typer.Option("--models", help="TOML models file.")] = None,
    background: Annotated[str | None, typer.Option(help="transparent, opaque or auto.")] = None,
) -> None:
    """Generate an image in-process (no server)."""
    _run_local("generate", prompt, out, [], None, size=size, quality=quality, n=n, seed=seed, model=model,
               models=models, background=background)


@app.command()
def edit(
    args: Annotated[list[str], typer.Argument(help="IMAGE... PROMPT")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output file.")] = Path("out.png"),
    mask: Annotated[Path | None, typer.Option(help="PNG whose alpha-0 pixels mark the region to edit.")] = None,
    size: Annotated[str | None, typer.Option(help="WxH or auto.")] = None,
    quality: Annotated[str | None, typer.Option(help="low, medium, high or auto.")] = None,
    n: Annotated[int, typer.Option(help="Number of images.")] = 1,
    seed: Annotated[int | None, typer.Option(help="Seed.")] = None,
    model: Annotated[str | None, typer.Option(help="Model name or alias.")] = None,
    models: Annotated[Path | None, typer.Option("--models", help="TOML models file.")] = None,
    background: Annotated[str | None, typer.Option(help="transparent, opaque or auto.")] = None,
) -> None:
    """Edit one or more images in-process (no server): `imagegate edit a.png b.png "prompt" -o out.png`."""
    if len(args) < 2:
        typer.echo("usage: imagegate edit IMAGE... PROMPT -o out.png", err=True)
        raise typer.Exit(2)
    *images, prompt = args
    _run_local("edit", prompt, out, [Path(p) for p in images], mask, size=size, quality=quality, n=n, seed=seed,
               model=model, models=models, background=background)


@app.command("models")
def list_models(models: Annotated[Path | None, typer.Option("--models", help="TOML models file.")] = None) -> None:
    """List the models and aliases a models file (or the built-in default) serves."""
    from .container import catalogue_for, model_configs
    from .registry import Registry

    settings = load_settings(models_file=models) if models else load_settings()
    configs = model_configs(settings)
    routed = catalogue_for(settings, configs)
    registry = Registry(configs, allow_empty=bool(routed))
    for m in routed.models.values():
        typer.echo(f"{m.name}\t" + " | ".join(r.key for r in m.routes))
    for name, c in registry.configs.items():
        typer.echo(f"{name}\t{c.source}")
    for alias, target in registry.aliases.items():
        typer.echo(f"{alias}\t-> {target}")


app.add_typer(keys_app, name="keys")
app.command("usage")(usage_command)
app.command("verify")(verify_command)
app.add_typer(webhooks_app, name="webhooks")

db_app = typer.Typer(no_args_is_help=True, help="The request ledger's database: schema revision and upgrades.")
app.add_typer(db_app, name="db")

async def _db_revision(ledger) -> str:  # type: ignore[no-untyped-def]
    from sqlalchemy import inspect

    from .db import migrate

    rev = await ledger.revision()
    if rev is None:
        async with ledger.engine.connect() as conn:
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        return "none (from before migrations)" if "requests" in tables else "none"
    if not migrate.known(rev):
        return f"{rev} (newer than this imagegate knows)"
    return f"{rev} (head)" if rev == migrate.head() else rev


@db_app.command("upgrade")
def db_upgrade(data_dir: DataDirOption = None, database_url: DatabaseUrlOption = None) -> None:
    """Upgrade the ledger's schema to the newest revision, in place (the server also does this when it starts)."""
    import asyncio

    from .db import Ledger, migrate

    url, db_file = database_url_of(data_dir, database_url)
    if db_file is not None:
        db_file.parent.mkdir(parents=True, exist_ok=True)

    async def run() -> tuple[str, str]:
        ledger = Ledger(url)
        try:
            before = await _db_revision(ledger)
            await ledger.start()
            return before, await _db_revision(ledger)
        finally:
            await ledger.close()

    try:
        before, after = asyncio.run(run())
    except migrate.SchemaTooNew as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"already at {after}" if before == after else f"{before} -> {after}")


@db_app.command("current")
def db_current(data_dir: DataDirOption = None, database_url: DatabaseUrlOption = None) -> None:
    """Print the ledger's schema revision ("(head)": the newest this version knows)."""
    import asyncio

    from .db import Ledger

    url, db_file = database_url_of(data_dir, database_url)
    if db_file is not None and not db_file.exists():  # don't create an empty file just to look
        typer.echo(f"error: no ledger database at {db_file}", err=True)
        raise typer.Exit(1)

    async def run() -> str:
        ledger = Ledger(url)
        try:
            return await _db_revision(ledger)
        finally:
            await ledger.close()

    typer.echo(asyncio.run(run()))


if __name__ == "__main__":
    app()
