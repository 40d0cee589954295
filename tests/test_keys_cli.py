"""`imagegate keys create | list | revoke` against the database a running server uses: a key
made by the CLI works on the server's next request, and its revocation reaches the server
within a second; the key is printed once, alone on stdout, and never again."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import openai
import pytest
from typer.testing import CliRunner

from cli_fixtures import clean_env  # noqa: F401 - autouse fixture
from conftest import make_settings, running, sdk_client, tiny_config
from imagegate.app import create_app
from imagegate.cli import app as cli

runner = CliRunner()


def _keys(*args: str, db: list[str]) -> Any:
    return runner.invoke(cli, ["keys", *args, *db])


@pytest.fixture
def db_args(tmp_path: Path, db_url: str) -> list[str]:
    return ["--data-dir", str(tmp_path / "data"), "--database-url", db_url]


async def test_cli_keys_against_a_running_server(tmp_path: Path, tiny_sd_path: Path, db_url: str,
                                                 db_args: list[str]) -> None:
    settings = make_settings(tmp_path, database_url=db_url)
    application = create_app(settings, [tiny_config(tiny_sd_path)])
    async with running(application):
        made = await asyncio.to_thread(_keys, "create", "ci-bot", "--project", "research", "--rpm", "5",
                                       "--ipm", "20", "--budget-usd", "12.5", "--models", "tiny-sd,other",
                                       "--expires", "30d", db=db_args)
        assert made.exit_code == 0, made.output
        key = made.stdout.strip()
        assert key.startswith("sk-ig-") and made.stdout == key + "\n"  # the key alone on stdout
        # The server had no keys: it closes now that one exists, and takes this one.
        await asyncio.sleep(0.6)
        with pytest.raises(openai.AuthenticationError):
            await sdk_client(application, api_key="made-up").images.generate(prompt="x")
        raw = await sdk_client(application, api_key=key).images.with_raw_response.generate(prompt="x")
        assert raw.headers["x-ratelimit-limit-requests"] == "5"
        assert raw.headers["x-ratelimit-remaining-images"] == "19"

        listed = await asyncio.to_thread(_keys, "list", db=db_args)
        assert listed.exit_code == 0 and "ci-bot" in listed.stdout and "research" in listed.stdout
        assert key not in listed.stdout and key[-4:] in listed.stdout and "active" in listed.stdout

        revoked = await asyncio.to_thread(_keys, "revoke", "ci-bot", db=db_args)
        assert revoked.exit_code == 0, revoked.output
        t0 = time.monotonic()
        while True:
            try:
                await sdk_client(application, api_key=key).models.list()
            except openai.AuthenticationError:
                break
            assert time.monotonic() - t0 < 1.0
            await asyncio.sleep(0.05)
        listed = await asyncio.to_thread(_keys, "list", db=db_args)
        assert "revoked" in listed.stdout


def test_cli_keys_errors(tmp_path: Path) -> None:
    db = ["--data-dir", str(tmp_path / "data")]
    assert _keys("create", "dup", db=db).exit_code == 0
    again = _keys("create", "dup", db=db)
    assert again.exit_code == 2 and "already exists" in again.stderr and again.stdout == ""
    bad = _keys("create", "x", "--expires", "soon", db=db)
    assert bad.exit_code == 2 and "--expires" in bad.stderr
    missing = _keys("revoke", "nobody", db=db)
    assert missing.exit_code == 2 and "No key named 'nobody'" in missing.stderr
    badname = _keys("create", "has space", db=db)
    assert badname.exit_code == 2 and "name must be" in badname.stderr
