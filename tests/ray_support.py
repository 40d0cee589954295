"""A Ray head node of our own for the Ray tests and bench/bench_scaleout.py: `ray start --head`
on a free port with 4 logical CPUs (ingress + 2 model replicas + slack on a 2-core machine),
joined by `imagegate serve --engine ray` through RAY_ADDRESS as a cluster would be."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from conftest import free_port

BIN = Path(sys.executable).parent


@contextmanager
def ray_head(work: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """Start the head (its log in `work`), yield its address, stop it and every Ray process."""
    port = free_port()
    short = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # Ray's socket paths must stay under 107 bytes
    log = work / "head.log"
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", f"--port={port}", "--num-cpus=4", "--num-gpus=0",
         "--include-dashboard=false", f"--temp-dir={short}", "--disable-usage-stats"],
        env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in log.read_text():
            if head.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("Ray head did not start:\n" + log.read_text()[-3000:])
            time.sleep(1)
        yield f"127.0.0.1:{port}"
    finally:
        # `ray start --block` takes over 10 s to stop its processes one by one on SIGTERM;
        # after 10 s the whole group (head, raylet, workers) is killed.
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        shutil.rmtree(short, ignore_errors=True)
