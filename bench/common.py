"""Shared helpers for benchmarks: the device description and RESULTS.md appends."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from pathlib import Path

RESULTS = Path(__file__).parent / "RESULTS.md"


def device_description() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    # the model name alone ("AMD EPYC") hid a 3.5x speed gap between AVX-512 and AVX2-only hosts
    isa = torch.backends.cpu.get_cpu_capability()
    return f"{cpu} ({os.cpu_count()} cores, {isa}), torch {torch.__version__}, {torch.get_num_threads()} thread(s)"


def load_average() -> str:
    """The machine's 1/5/15-minute load, for a result's notes (these machines are shared)."""
    try:
        return "/".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False,
                              cwd=Path(__file__).parent).stdout.strip() or "uncommitted"
    except OSError:
        return "unknown"


def append_results(title: str, command: str, table: str, notes: str = "") -> None:
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    block = (f"\n## {title}\n\n- date: {when}\n- device: {device_description()}\n- commit: {commit()}\n"
             f"- command: `{command}`\n{('- ' + notes + chr(10)) if notes else ''}\n{table}\n")
    if not RESULTS.exists():
        RESULTS.write_text(
            "# Benchmark results\n\nEvery run appends a section: date, device, commit, command, table.\n")
    with RESULTS.open("a") as f:
        f.write(block)


def markdown_table(headers: list[str], rows: list[list[object]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)
