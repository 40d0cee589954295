"""Docs that tests keep honest: every setting appears in the README's settings table."""

from pathlib import Path

from imagegate.settings import Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_setting_is_documented() -> None:
    missing = [name for name in Settings.model_fields if f"`IMAGEGATE_{name.upper()}`" not in README]
    assert not missing, f"settings missing from README: {missing}"


def test_readme_names_the_two_commands() -> None:
    assert "make serve" in README and "make test" in README
