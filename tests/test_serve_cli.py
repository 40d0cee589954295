"""`imagegate serve` and its settings: IMAGEGATE_* variables apply unless an option is given
on the command line, keys come from a file (never from argv), and the server is built with
server.py's timeouts. One test runs the real command as a process and talks to it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx2
import pytest
from typer.testing import CliRunner

from cli_fixtures import clean_env, models_toml, served  # noqa: F401 - fixtures
from conftest import free_port
from imagegate.cli import app
from imagegate.settings import Settings

runner = CliRunner()


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    p = tmp_path / "keys"
    p.write_text("# operators\nsk-file-one\n\n   sk-file-two  \n# sk-commented-out\n")
    return p


# -- settings -----------------------------------------------------------------------------------
def test_the_keys_file_is_merged_with_api_keys(keys_file: Path) -> None:
    s = Settings(api_keys=["sk-listed", "sk-file-one"], api_keys_file=keys_file)
    assert s.api_keys == ["sk-listed", "sk-file-one", "sk-file-two"]


def test_the_keys_file_from_the_environment(keys_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEGATE_API_KEYS_FILE", str(keys_file))
    assert Settings().api_keys == ["sk-file-one", "sk-file-two"]


def test_an_empty_keys_file_is_an_error_not_an_open_server(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("# nothing yet\n\n")
    with pytest.raises(ValueError, match="has no keys"):
        Settings(api_keys_file=empty)


# -- serve: where each value comes from -----------------------------------------------------------
def test_serve_takes_host_port_data_dir_and_log_level_from_the_environment(
        tmp_path: Path, served: list[dict[str, Any]], models_toml: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    created: list[Settings] = []
    import imagegate.app

    real = imagegate.app.create_app
    monkeypatch.setattr(imagegate.app, "create_app", lambda settings: created.append(settings) or real(settings))
    monkeypatch.setenv("IMAGEGATE_HOST", "127.0.0.2")
    monkeypatch.setenv("IMAGEGATE_PORT", "9321")
    monkeypatch.setenv("IMAGEGATE_DATA_DIR", str(tmp_path / "from-env"))
    monkeypatch.setenv("IMAGEGATE_LOG_LEVEL", "warning")
    monkeypatch.setenv("IMAGEGATE_MODELS_FILE", str(models_toml))
    r = runner.invoke(app, ["serve"])
    assert r.exit_code == 0, r.output
    (call,) = served
    assert (call["host"], call["port"], call["log_level"]) == ("127.0.0.2", 9321, "warning")
    assert created[0].data_dir == tmp_path / "from-env"


def test_serve_options_on_the_command_line_win_over_the_environment(
        tmp_path: Path, served: list[dict[str, Any]], models_toml: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEGATE_PORT", "9321")
    monkeypatch.setenv("IMAGEGATE_LOG_LEVEL", "warning")
    r = runner.invoke(app, ["serve", "--models", str(models_toml), "--port", "9400", "--log-level", "error",
                            "--data-dir", str(tmp_path / "d")])
    assert r.exit_code == 0, r.output
    assert (served[0]["port"], served[0]["log_level"]) == (9400, "error")


def test_serve_builds_uvicorn_with_the_connection_settings(
        tmp_path: Path, served: list[dict[str, Any]], models_toml: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEGATE_HEADER_TIMEOUT_SECONDS", "4")
    monkeypatch.setenv("IMAGEGATE_BODY_TIMEOUT_SECONDS", "12")
    monkeypatch.setenv("IMAGEGATE_KEEP_ALIVE_TIMEOUT_SECONDS", "3")
    monkeypatch.setenv("IMAGEGATE_MAX_CONNECTIONS", "64")
    r = runner.invoke(app, ["serve", "--models", str(models_toml), "--data-dir", str(tmp_path / "d")])
    assert r.exit_code == 0, r.output
    call = served[0]
    assert (call["timeout_keep_alive"], call["limit_concurrency"]) == (3.0, 64)
    assert (call["http"].header_timeout, call["http"].drain_timeout) == (4.0, 12.0)


def test_a_keys_file_counts_as_keys_for_a_public_bind(tmp_path: Path, served: list[dict[str, Any]],
                                                      models_toml: Path, keys_file: Path) -> None:
    r = runner.invoke(app, ["serve", "--models", str(models_toml), "--host", "0.0.0.0", "--api-keys-file",
                            str(keys_file), "--data-dir", str(tmp_path / "d")])
    assert r.exit_code == 0, r.output
    assert served[0]["host"] == "0.0.0.0"


@pytest.mark.parametrize("via", ["option", "environment"])
def test_a_missing_keys_file_is_a_clear_error(tmp_path: Path, served: list[dict[str, Any]], models_toml: Path,
                                              monkeypatch: pytest.MonkeyPatch, via: str) -> None:
    missing = tmp_path / "no-such-keys"
    args = ["serve", "--models", str(models_toml), "--data-dir", str(tmp_path / "d")]
    if via == "option":
        args += ["--api-keys-file", str(missing)]
    else:
        monkeypatch.setenv("IMAGEGATE_API_KEYS_FILE", str(missing))
    r = runner.invoke(app, args)
    assert r.exit_code == 2
    assert f"cannot read the API keys file {missing}" in r.output and "No such file" in r.output
    assert "Traceback" not in r.output
    assert served == []


# -- the real command -----------------------------------------------------------------------------
def test_serve_listens_where_the_environment_says_with_keys_from_a_file(
        tmp_path: Path, models_toml: Path, keys_file: Path) -> None:
    port = free_port()
    data = tmp_path / "env-data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEGATE_")}
    env.update(IMAGEGATE_HOST="127.0.0.1", IMAGEGATE_PORT=str(port), IMAGEGATE_DATA_DIR=str(data),
               IMAGEGATE_MODELS_FILE=str(models_toml), IMAGEGATE_API_KEYS_FILE=str(keys_file),
               IMAGEGATE_LOG_LEVEL="warning", IMAGEGATE_TORCH_THREADS="1", IMAGEGATE_ENCODE_WORKERS="1",
               OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "imagegate.cli", "serve"], env=env, cwd=tmp_path,
                            stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx2.get(base + "/health", timeout=5).status_code == 200:
                    break
            except httpx2.HTTPError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.2)
        assert (data / "imagegate.db").exists() and not (data / "url-signing.key").exists()  # the key is in the db
        assert not (tmp_path / "data").exists()  # not the option default's ./data
        cmdline = Path(f"/proc/{proc.pid}/cmdline")
        if cmdline.exists():
            argv = cmdline.read_bytes()
            assert b"sk-file" not in argv
        assert httpx2.get(base + "/v1/models").status_code == 401
        for key in ("sk-file-one", "sk-file-two"):
            r = httpx2.get(base + "/v1/models", headers={"authorization": f"Bearer {key}"})
            assert r.status_code == 200, r.text
        assert httpx2.get(base + "/v1/models", headers={"authorization": "Bearer sk-commented-out"}).status_code == 401
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
