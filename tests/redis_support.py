"""A throwaway Redis server for the tests (`redis_url` fixture): redis-server on a Unix
socket in a temporary folder, no TCP, no persistence, stopped at the end of the session.
Where redis-server is missing (`bash scripts/redis.sh ensure` installs it) or limits' Redis
client (coredis) is not installed, the tests that ask for it skip with the reason."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("Redis tests skipped: no redis-server (`bash scripts/redis.sh ensure` installs it)")
    if importlib.util.find_spec("coredis") is None:
        pytest.skip("Redis tests skipped: coredis (limits[async-redis]) is not installed")
    root = Path(tempfile.mkdtemp(prefix="imagegate-redis-"))
    sock = root / "redis.sock"
    proc = subprocess.Popen([binary, "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700",
                             "--save", "", "--appendonly", "no", "--dir", str(root)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start (exit {proc.returncode})")
            time.sleep(0.02)
        yield f"redis+unix://{sock}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(root, ignore_errors=True)
