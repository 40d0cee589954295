"""`imagegate serve` as a real child process, for tests that measure or kill the process
itself (peak memory, kill -9). The server serves the tiny model from a models file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx2

from conftest import free_port

IMAGEGATE = Path(sys.executable).with_name("imagegate")


def tiny_models_file(directory: Path, model_path: Path) -> Path:
    p = directory / "models.toml"
    p.write_text(
        "[[models]]\n"
        'name = "tiny"\n'
        f'source = "{model_path}"\n'
        'family = "sd"\n'
        'dtype = "float32"\n'
        "native_size = 64\n"
        "size_multiple = 16\n"
        "quality = { low = [2, 5.0], medium = [3, 5.0], high = [4, 5.0] }\n"
    )
    return p


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    base: str
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def status(self, field: str) -> int:
        """A /proc/PID/status figure in bytes (VmRSS, VmHWM)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise KeyError(field)

    def reset_peak(self) -> bool:
        """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not allowed."""
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
            return True
        except OSError:
            return False

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)


def start(data_dir: Path, models_file: Path | None, timeout: float = 120, **env: str) -> Server:
    """Serve `models_file` (None: the built-in model) on a free port; returns once healthy."""
    port = free_port()
    log = data_dir.parent / f"server-{port}.log"
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    environ = {**os.environ, "IMAGEGATE_TORCH_THREADS": "1", "IMAGEGATE_ENCODE_WORKERS": "2", "OMP_NUM_THREADS": "1",
               "HF_HUB_OFFLINE": "1", **env}
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [str(IMAGEGATE), "serve", *(["--models", str(models_file)] if models_file else []), "--data-dir",
             str(data_dir), "--port", str(port), "--log-level", "warning"],
            stdout=out, stderr=subprocess.STDOUT, env=environ, stdin=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx2.get(base + "/health", timeout=1).status_code == 200:
                return Server(proc, base, log)
        except httpx2.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise TimeoutError("server did not become healthy")
        time.sleep(0.1)
