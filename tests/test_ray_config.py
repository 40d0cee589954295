"""The models file's replica keys (registry.Scaling) and the Serve options they become
(ray_serve.py), without starting Ray."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagegate.registry import load_models_file
from imagegate.settings import Settings

ray_serve = pytest.importorskip("imagegate.ray_serve", reason="Ray Serve is not installed")


def models(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "models.toml"
    p.write_text(body)
    return p


def test_fixed_replicas_on_the_builtin_model_are_cpu_replicas(tmp_path: Path) -> None:
    [c] = load_models_file(models(tmp_path, '[[models]]\nname = "mini"\nsource = "builtin"\nreplicas = 3\n'))
    opts = ray_serve.model_options(c, Settings(data_dir=tmp_path, queue_size=7))
    assert opts["name"] == "model-mini" and opts["num_replicas"] == 3 and "autoscaling_config" not in opts
    assert opts["ray_actor_options"] == {"num_gpus": 0.0, "num_cpus": 1.0}
    assert opts["max_queued_requests"] == 7 and opts["max_ongoing_requests"] >= 2 * c.max_batch_images
    # a CPU replica runs torch on the CPUs it reserved, not on every core of the machine
    assert ray_serve.replica_settings(Settings(data_dir=tmp_path), opts["ray_actor_options"]).torch_threads == 1


def test_autoscaling_and_gpus_from_the_models_file(tmp_path: Path) -> None:
    [c] = load_models_file(models(tmp_path, (
        '[[models]]\nname = "sdxl"\nsource = "/models/sdxl"\ndevice = "cuda"\nmin_replicas = 1\n'
        'max_replicas = 8\ntarget_ongoing_requests = 4\n')))
    assert "min_replicas" not in c.options  # the replica keys are not the backend's options
    opts = ray_serve.model_options(c, Settings(data_dir=tmp_path))
    assert opts["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 8, "target_ongoing_requests": 4}
    assert opts["ray_actor_options"]["num_gpus"] == 1.0 and "num_replicas" not in opts


@pytest.mark.parametrize(("keys", "message"), [
    ("replicas = 0", "replicas must be an integer >= 1"),
    ('replicas = "2"', "replicas must be an integer"),
    ("replicas = 2\nmin_replicas = 1\nmax_replicas = 3", "fixed count"),
    ("min_replicas = 4\nmax_replicas = 2", "min_replicas (4) > max_replicas (2)"),
    ("max_replicas = 2", "needs both min_replicas and max_replicas"),
    ("target_ongoing_requests = 3", "needs min_replicas and max_replicas"),
    ("num_gpus = -1", "num_gpus must be a number >= 0"),
])
def test_bad_replica_keys_name_the_model_and_key(tmp_path: Path, keys: str, message: str) -> None:
    with pytest.raises(ValueError, match="model 'mini'") as err:
        load_models_file(models(tmp_path, f'[[models]]\nname = "mini"\nsource = "builtin"\n{keys}\n'))
    assert message in str(err.value)


def test_application_args_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown imagegate application args"):
        ray_serve.build_app({"model_file": "typo.toml"})


def test_bad_engine_settings_stop_serve_with_one_line_before_ray_starts(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from imagegate.cli import app

    runner = CliRunner()
    data = ["--data-dir", str(tmp_path / "data")]
    r = runner.invoke(app, ["serve", "--engine", "kubernetes", *data])
    assert r.exit_code == 2 and "engine" in r.output and "Traceback" not in r.output, r.output
    r = runner.invoke(app, ["serve", "--engine", "ray", "--ingress-replicas", "0", *data])
    assert r.exit_code == 2 and "ray_ingress_replicas" in r.output, r.output
    bad = models(tmp_path, '[[models]]\nname = "mini"\nsource = "builtin"\nmin_replicas = 3\nmax_replicas = 1\n')
    r = runner.invoke(app, ["serve", "--engine", "ray", "--models", str(bad), *data])
    assert r.exit_code == 2 and "min_replicas (3) > max_replicas (1)" in r.output, r.output
