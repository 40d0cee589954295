"""The `imagegate` command line: serve's bind check, in-process generate/edit, models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from typer.testing import CliRunner

from cli_fixtures import clean_env, models_toml, served  # noqa: F401 - fixtures
from imagegate.cli import app

runner = CliRunner()


# -- serve --------------------------------------------------------------------------------
def test_serve_refuses_a_public_bind_without_a_key(tmp_path: Path, served: list[dict[str, Any]],
                                                   models_toml: Path) -> None:
    r = runner.invoke(app, ["serve", "--models", str(models_toml), "--host", "0.0.0.0",
                            "--data-dir", str(tmp_path / "d")])
    assert r.exit_code != 0
    assert "no API key" in r.output and "--allow-anonymous" in r.output and "--api-key" in r.output
    assert served == []


def test_serve_public_bind_with_a_database_key(tmp_path: Path, served: list[dict[str, Any]],
                                              models_toml: Path) -> None:
    made = runner.invoke(app, ["keys", "create", "ops", "--data-dir", str(tmp_path / "d")])
    assert made.exit_code == 0, made.output
    r = runner.invoke(app, ["serve", "--models", str(models_toml), "--host", "0.0.0.0",
                            "--data-dir", str(tmp_path / "d")])
    assert r.exit_code == 0, r.output
    assert len(served) == 1


def test_serve_allow_anonymous_passes_the_check(tmp_path: Path, served: list[dict[str, Any]],
                                                models_toml: Path) -> None:
    r = runner.invoke(app, ["serve", "--models", str(models_toml), "--host", "0.0.0.0", "--port", "9123",
                            "--allow-anonymous", "--data-dir", str(tmp_path / "d")])
    assert r.exit_code == 0, r.output
    assert len(served) == 1
    assert served[0]["host"] == "0.0.0.0" and served[0]["port"] == 9123
    assert served[0]["app"].title == "imagegate"


def test_serve_public_bind_with_a_key_and_loopback_without(tmp_path: Path, served: list[dict[str, Any]],
                                                           models_toml: Path) -> None:
    r = runner.invoke(app, ["serve", "--models", str(models_toml), "--host", "0.0.0.0", "--api-key", "k1",
                            "--data-dir", str(tmp_path / "d")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["serve", "--models", str(models_toml), "--host", "127.0.0.1",
                            "--data-dir", str(tmp_path / "d")])
    assert r.exit_code == 0, r.output
    assert [c["host"] for c in served] == ["0.0.0.0", "127.0.0.1"]


def test_serve_with_the_key_from_the_environment(tmp_path: Path, served: list[dict[str, Any]], models_toml: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEGATE_API_KEYS", '["from-env"]')
    r = runner.invoke(app, ["serve", "--models", str(models_toml), "--host", "0.0.0.0",
                            "--data-dir", str(tmp_path / "d")])
    assert r.exit_code == 0, r.output
    assert len(served) == 1


def test_serve_reports_a_bad_models_file_clearly(tmp_path: Path, served: list[dict[str, Any]]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[[models]]\nname = 'x'\n")  # no source
    r = runner.invoke(app, ["serve", "--models", str(bad), "--data-dir", str(tmp_path / "d")])
    assert r.exit_code != 0
    assert "source" in r.output
    assert served == []


# -- generate / edit ----------------------------------------------------------------------
def test_generate_writes_a_png_of_the_requested_size(tmp_path: Path, models_toml: Path) -> None:
    out = tmp_path / "out.png"
    r = runner.invoke(app, ["generate", "a red circle", "-o", str(out), "--models", str(models_toml),
                            "--size", "256x256", "--seed", "1"])
    assert r.exit_code == 0, r.output
    assert "seed 1" in r.output
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (256, 256)
        first = im.tobytes()
    # same seed, same pixels
    again = tmp_path / "again.png"
    r = runner.invoke(app, ["generate", "a red circle", "-o", str(again), "--models", str(models_toml),
                            "--size", "256x256", "--seed", "1"])
    assert r.exit_code == 0, r.output
    with Image.open(again) as im:
        assert im.tobytes() == first


def test_generate_format_from_suffix_and_several_images(tmp_path: Path, models_toml: Path) -> None:
    out = tmp_path / "pic.jpg"
    r = runner.invoke(app, ["generate", "a cat", "-o", str(out), "--models", str(models_toml), "--size", "512x256",
                            "--n", "2", "--quality", "low"])
    assert r.exit_code == 0, r.output
    for name in ("pic-0.jpg", "pic-1.jpg"):
        with Image.open(tmp_path / name) as im:
            assert im.format == "JPEG" and im.size == (512, 256)


def test_generate_bad_size_is_a_clear_error(tmp_path: Path, models_toml: Path) -> None:
    r = runner.invoke(app, ["generate", "a cat", "-o", str(tmp_path / "x.png"), "--models", str(models_toml),
                            "--size", "1000x1000"])
    assert r.exit_code == 2
    assert "size" in r.output
    assert not (tmp_path / "x.png").exists()


def test_edit_with_a_mask_keeps_the_unmasked_pixels(tmp_path: Path, models_toml: Path) -> None:
    src = Image.new("RGB", (128, 96), (200, 30, 30))
    src.paste((20, 200, 40), (0, 0, 64, 96))
    src.save(tmp_path / "in.png")
    mask = Image.new("RGBA", (128, 96), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (40, 24, 88, 72))  # alpha 0 = edit here
    mask.save(tmp_path / "m.png")
    out = tmp_path / "out.png"
    r = runner.invoke(app, ["edit", str(tmp_path / "in.png"), "make it blue", "-o", str(out),
                            "--mask", str(tmp_path / "m.png"), "--models", str(models_toml), "--seed", "3"])
    assert r.exit_code == 0, r.output
    with Image.open(out) as im:
        assert im.size == (128, 96)  # size=auto on an edit: the input's size
        got = im.convert("RGB")
    for xy in [(0, 0), (127, 95), (10, 50), (120, 10), (39, 50)]:
        assert got.getpixel(xy) == src.getpixel(xy), xy


def test_edit_without_a_mask_and_with_a_background(tmp_path: Path, models_toml: Path) -> None:
    Image.new("RGB", (64, 64), (10, 10, 200)).save(tmp_path / "a.png")
    Image.new("RGB", (64, 64), (10, 200, 10)).save(tmp_path / "b.png")
    out = tmp_path / "out.png"
    r = runner.invoke(app, ["edit", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "both together", "-o", str(out),
                            "--models", str(models_toml), "--size", "256x256", "--background", "opaque"])
    assert r.exit_code == 0, r.output
    with Image.open(out) as im:
        assert im.size == (256, 256)


def test_edit_needs_an_image_and_a_prompt(tmp_path: Path, models_toml: Path) -> None:
    r = runner.invoke(app, ["edit", "only-a-prompt", "--models", str(models_toml)])
    assert r.exit_code == 2
    assert "usage" in r.output


# -- models -------------------------------------------------------------------------------
def test_models_lists_models_and_aliases(models_toml: Path, tiny_sd_path: Path) -> None:
    r = runner.invoke(app, ["models", "--models", str(models_toml)])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert f"tiny\t{tiny_sd_path}" in lines
    assert "gpt-image-1\t-> tiny" in lines
    assert "dall-e-3\t-> tiny" in lines


def test_models_without_a_file_lists_the_builtin_model() -> None:
    r = runner.invoke(app, ["models"])
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[0].startswith("imagegate-mini\t")


def test_serve_refuses_a_models_file_with_missing_files(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A bad models file is reported before the server binds, naming the model."""
    import uvicorn
    from typer.testing import CliRunner

    from imagegate.cli import app as cli_app

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: (_ for _ in ()).throw(AssertionError("must not serve")))
    models = tmp_path / "models.toml"
    models.write_text('[[models]]\nname = "ghost"\nsource = "./nowhere"\n')
    result = CliRunner().invoke(cli_app, ["serve", "--models", str(models), "--data-dir", str(tmp_path / "d")])
    assert result.exit_code == 2
    assert "ghost" in result.output and "does not exist" in result.output


def test_local_mode_beats_its_instance_while_it_runs(tmp_path: Path, models_toml: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI has no janitor: it beats its instance row itself, so a server sharing the
    database does not take a long CLI run for a dead process's and mark it interrupted."""
    from imagegate.db.instances import Instance

    beats: list[str] = []
    real_beat = Instance.beat

    async def counted(self: Instance) -> None:
        beats.append(self.id)
        await real_beat(self)

    monkeypatch.setattr(Instance, "beat", counted)
    monkeypatch.setenv("IMAGEGATE_JANITOR_INTERVAL_SECONDS", "0.01")
    r = runner.invoke(app, ["generate", "a red circle", "-o", str(tmp_path / "o.png"), "--models", str(models_toml),
                            "--size", "256x256", "--quality", "high"])
    assert r.exit_code == 0, r.output
    assert beats and len(set(beats)) == 1
