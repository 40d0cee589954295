"""`imagegate generate/edit` show the denoising steps (a rich progress bar with an ETA),
fed by the pipeline's step callback through the engine."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from cli_fixtures import clean_env, models_toml  # noqa: F401 - fixtures
from imagegate.cli import app

runner = CliRunner()


def test_generate_shows_the_steps(tmp_path: Path, models_toml: Path) -> None:  # noqa: F811
    out = tmp_path / "a.png"
    r = runner.invoke(app, ["generate", "a red circle", "-o", str(out), "--models", str(models_toml), "--size",
                            "256x256", "--quality", "high"], env={"IMAGEGATE_DATA_DIR": str(tmp_path / "d"),
                                                                "COLUMNS": "120"})
    assert r.exit_code == 0, r.output
    assert out.exists()
    # high = 4 steps on the tiny model; the bar ends at all of them
    assert "4/4 steps" in r.stderr and "tiny: done" in r.stderr, r.stderr


def test_edit_shows_the_steps(tmp_path: Path, models_toml: Path) -> None:  # noqa: F811
    from PIL import Image

    Image.new("RGB", (64, 64), (10, 200, 30)).save(tmp_path / "in.png")
    r = runner.invoke(app, ["edit", str(tmp_path / "in.png"), "make it blue", "-o", str(tmp_path / "o.png"),
                            "--models", str(models_toml), "--quality", "medium"],
                      env={"IMAGEGATE_DATA_DIR": str(tmp_path / "d"), "COLUMNS": "120"})
    assert r.exit_code == 0, r.output
    assert "steps" in r.stderr and "tiny: done" in r.stderr, r.stderr
