"""Fixtures shared by the CLI tests (import them into a test module's namespace)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from procserver import tiny_models_file


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # Settings reads IMAGEGATE_*: a key or host from the environment must not leak in.
    for k in list(os.environ):
        if k.startswith("IMAGEGATE_"):
            monkeypatch.delenv(k)
    # The CLI sets torch's thread count from Settings; keep it at the test suite's one thread.
    monkeypatch.setenv("IMAGEGATE_TORCH_THREADS", "1")


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """uvicorn.run replaced by a recorder: serve's checks run, nothing listens."""
    import uvicorn

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda application, **kw: calls.append({"app": application, **kw}))
    return calls


@pytest.fixture
def models_toml(tmp_path: Path, tiny_sd_path: Path) -> Path:
    return tiny_models_file(tmp_path, tiny_sd_path)
