"""The deploy files (deploy/, docs/deploy.md) kept honest by static checks: no Docker daemon or
Kubernetes cluster runs here, so these read the files and hold them to the settings, names and
conventions the code has. docs/deploy.md says what was validated beyond this, and how."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from imagegate.settings import Settings

if sys.version_info >= (3, 11):
    import tomllib
else:  # the project's floor is 3.10, where the models file is read with tomli too
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
COMPOSE_GPU = DEPLOY / "compose.gpu.yaml"
SERVE = DEPLOY / "ray" / "serve.yaml"
RAYSERVICE = DEPLOY / "kuberay" / "rayservice.yaml"
MODELS = DEPLOY / "models.toml"
MAKE_ENV = DEPLOY / "make-env.sh"
DOC = ROOT / "docs" / "deploy.md"

IMPORT_PATH = "imagegate.ray_serve:build_app"
BUILD_APP_ARGS = {"models_file", "ingress_replicas", "ingress_num_cpus"}
# The built-in model's name: the one model of an application without a models file.
BUILTIN_MODEL = "imagegate-mini"


def _yaml_files() -> list[Path]:
    return sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])


def _rayservice() -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(RAYSERVICE.read_text()) if d]
    (service,) = [d for d in docs if d["kind"] == "RayService"]
    return service


def _configmap_models() -> str:
    docs = [d for d in yaml.safe_load_all(RAYSERVICE.read_text()) if d]
    (configmap,) = [d for d in docs if d["kind"] == "ConfigMap"]
    return str(configmap["data"]["models.toml"])


def _serve_configs() -> dict[str, dict[str, Any]]:
    """Every Ray Serve config in deploy/: the file and the RayService's serveConfigV2."""
    return {
        "deploy/ray/serve.yaml": yaml.safe_load(SERVE.read_text()),
        "serveConfigV2": yaml.safe_load(_rayservice()["spec"]["serveConfigV2"]),
    }


def _model_names(models_file: str | None) -> set[str]:
    if models_file is None:
        return {BUILTIN_MODEL}
    assert models_file == "/etc/imagegate/models.toml", "the manifests mount the models file there"
    return {m["name"] for m in tomllib.loads(MODELS.read_text())["models"]}


def _env_names() -> dict[str, set[str]]:
    """IMAGEGATE_* names each file sets, as environment entries or inside serve configs."""
    found: dict[str, set[str]] = {}
    for path in [*_yaml_files(), DOCKERFILE, MAKE_ENV]:
        text = path.read_text()
        names = set(re.findall(r"^\s*(?:ENV\s+)?(IMAGEGATE_[A-Z0-9_]+)\s*[:=]", text, re.MULTILINE))
        names |= set(re.findall(r"name:\s*(IMAGEGATE_[A-Z0-9_]+)", text))  # Kubernetes env: lists
        found[str(path.relative_to(ROOT))] = names
    for where, config in _serve_configs().items():
        for app in config["applications"]:
            found[where] = found.get(where, set()) | set(app.get("runtime_env", {}).get("env_vars", {}))
    return found


def test_every_yaml_file_parses() -> None:
    files = _yaml_files()
    assert {COMPOSE, COMPOSE_GPU, SERVE, RAYSERVICE} <= set(files)
    for path in files:
        assert [d for d in yaml.safe_load_all(path.read_text()) if d], f"{path} is empty"
    tomllib.loads(MODELS.read_text())


def test_environment_variables_are_real_settings() -> None:
    fields = {f"IMAGEGATE_{name.upper()}" for name in Settings.model_fields}
    # The compose file's own knobs, read by compose alone (never by imagegate).
    compose_only = {"IMAGEGATE_VARIANT"}
    unknown = {where: sorted(names - fields - compose_only)
               for where, names in _env_names().items() if names - fields - compose_only}
    assert not unknown, f"not settings of imagegate.settings.Settings: {unknown}"


def test_serve_configs_build_imagegates_application() -> None:
    for where, config in _serve_configs().items():
        (app,) = config["applications"]
        assert app["import_path"] == IMPORT_PATH, where
        assert set(app.get("args", {})) <= BUILD_APP_ARGS, where
        models = _model_names(app.get("args", {}).get("models_file"))
        names = [d["name"] for d in app.get("deployments", [])]
        # Serve refuses a config that overrides a deployment the application does not have.
        allowed = {"imagegate"} | {f"model-{m}" for m in models}
        assert "imagegate" in names and set(names) <= allowed, (where, names, allowed)
        for deployment in app.get("deployments", []):
            # An override of ray_actor_options replaces the code's whole dict: a model
            # replica's GPU count must be restated, never dropped by accident.
            if deployment["name"].startswith("model-") and "ray_actor_options" in deployment:
                assert "num_gpus" in deployment["ray_actor_options"], (where, deployment["name"])


def test_serve_configs_pass_rays_own_schema() -> None:
    schema = pytest.importorskip("ray.serve.schema", reason="ray (the `ray` extra) is not installed")
    for where, config in _serve_configs().items():
        try:
            schema.ServeDeploySchema.model_validate(config)
        except Exception as exc:  # noqa: BLE001 - the message is what the test reports
            pytest.fail(f"{where}: {exc}")


def test_rayservice_matches_the_serve_file() -> None:
    local, cluster = _serve_configs().values()
    (local_app,), (cluster_app,) = local["applications"], cluster["applications"]
    for key in ("name", "route_prefix", "import_path"):
        assert local_app[key] == cluster_app[key], key
    assert cluster["http_options"]["host"] == "0.0.0.0", "pods are reached on their own address"
    service = _rayservice()
    assert service["apiVersion"] == "ray.io/v1"
    assert _configmap_models() == MODELS.read_text(), "the ConfigMap must carry deploy/models.toml as is"


def test_rayservice_has_a_cpu_head_and_gpu_workers_with_secrets() -> None:
    cluster = _rayservice()["spec"]["rayClusterConfig"]
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"].get("num-gpus") == "0"
    (head_container,) = head["template"]["spec"]["containers"]
    assert "nvidia.com/gpu" not in head_container["resources"].get("limits", {})
    containers = [head_container]
    for group in cluster["workerGroupSpecs"]:
        (container,) = group["template"]["spec"]["containers"]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
        containers.append(container)
    for container in containers:
        # Every node runs the same image (one Ray version) and reads the same secrets.
        assert container["image"] == head_container["image"]
        assert {"secretRef": {"name": "imagegate"}} in container["envFrom"]
    assert re.search(r"ARG RAY_VERSION=" + re.escape(cluster["rayVersion"]) + r"\n", DOCKERFILE.read_text())


def test_dockerfile_runs_as_non_root_with_a_healthcheck() -> None:
    text = DOCKERFILE.read_text()
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in {"0", "root"}
    assert re.search(r"^HEALTHCHECK .*\n?.*/health", text, re.MULTILINE)
    assert 'CMD ["imagegate", "serve", "--host", "0.0.0.0"]' in text
    assert re.search(r"^ARG VARIANT=cpu$", text, re.MULTILINE)
    stages = set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", text, re.MULTILINE))
    assert {"torch-cpu", "torch-cuda", "runtime-cpu", "runtime-cuda"} <= stages
    assert "download.pytorch.org/whl/cpu" in text
    assert re.search(r'^VOLUME \["/data"\]', text, re.MULTILINE)


def test_docker_context_carries_what_the_build_copies() -> None:
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE.read_text(), re.MULTILINE)
    for sources in copied:
        for source in sources.split():
            assert source in allowed and (ROOT / source).exists(), source


def _compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def test_compose_runs_imagegate_on_postgres_and_s3() -> None:
    services = _compose()["services"]
    assert {"imagegate", "postgres", "s3", "create-bucket", "proxy"} <= set(services)
    assert services["postgres"]["image"].startswith("postgres:")
    env = services["imagegate"]["environment"]
    assert env["IMAGEGATE_DATABASE_URL"].startswith("postgresql+asyncpg://")
    assert env["IMAGEGATE_DATABASE_URL"].endswith("@postgres:5432/imagegate")
    assert env["IMAGEGATE_STORAGE_URL"].startswith("s3://")
    assert env["AWS_ENDPOINT_URL"] == "http://s3:8333"
    depends = services["imagegate"]["depends_on"]
    assert depends["postgres"]["condition"] == "service_healthy"
    assert depends["create-bucket"]["condition"] == "service_completed_successfully"
    # Replicas publish no port of their own (so --scale works): the proxy is the one port.
    assert "ports" not in services["imagegate"] and services["proxy"]["ports"]
    assert services["imagegate"]["deploy"]["replicas"] >= 2
    assert services["imagegate"]["build"]["dockerfile"] == "deploy/docker/Dockerfile"


def test_compose_secrets_come_from_the_env_file_only() -> None:
    text = COMPOSE.read_text()
    env = _compose()["services"]["imagegate"]["environment"]
    for name in ("IMAGEGATE_URL_SIGNING_KEY", "IMAGEGATE_KEY_SECRET", "IMAGEGATE_WEBHOOK_SECRET",
                 "IMAGEGATE_ADMIN_KEY", "AWS_SECRET_ACCESS_KEY"):
        # `${X:?...}`: compose stops on a missing value; no default secret is ever used.
        assert re.fullmatch(r"\$\{\w+:\?[^}]+\}", env[name]), name
    required = set(re.findall(r"\$\{(\w+):\?", text))
    made = dict(line.split("=", 1) for line in _make_env().splitlines() if line and not line.startswith("#"))
    assert required <= set(made), f"deploy/make-env.sh does not write {sorted(required - set(made))}"
    assert len(made["IMAGEGATE_URL_SIGNING_KEY"]) >= 32 and len(made["IMAGEGATE_KEY_SECRET"]) >= 32
    Settings(url_signing_key=made["IMAGEGATE_URL_SIGNING_KEY"], key_secret=made["IMAGEGATE_KEY_SECRET"],
             webhook_secret=made["IMAGEGATE_WEBHOOK_SECRET"], api_keys=yaml.safe_load(made["IMAGEGATE_API_KEYS"]))
    assert made["IMAGEGATE_WEBHOOK_SECRET"].startswith("whsec_")
    assert _make_env() != _make_env(), "every run makes new secrets"
    assert "deploy/.env" in (ROOT / ".gitignore").read_text()


def _make_env() -> str:
    return subprocess.run(["bash", str(MAKE_ENV)], capture_output=True, text=True, check=True,
                          env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")}).stdout


def test_compose_mounts_files_that_exist() -> None:
    for path in (COMPOSE, COMPOSE_GPU):
        for service in yaml.safe_load(path.read_text())["services"].values():
            for volume in service.get("volumes", []):
                source = volume.split(":")[0]
                if source.startswith("."):  # a bind mount, relative to deploy/ (the project dir)
                    assert (DEPLOY / source).exists(), f"{path.name}: {source}"


def test_docs_cover_every_deploy_file() -> None:
    doc = DOC.read_text()
    for path in [DOCKERFILE, COMPOSE, COMPOSE_GPU, SERVE, RAYSERVICE, MODELS, MAKE_ENV,
                 DEPLOY / "compose" / "Caddyfile"]:
        assert str(path.relative_to(ROOT)) in doc, path
    assert "untested" in doc.lower()
    assert "docs/deploy.md" in (ROOT / "README.md").read_text()


def test_the_serve_configs_args_build_the_application_they_name(tmp_path: Path) -> None:
    """imagegate's own builder takes each config's args and makes the deployments the config
    overrides (Ray is not started: binding an application needs no cluster)."""
    ray_serve = pytest.importorskip("imagegate.ray_serve", reason="Ray Serve is not installed")
    for where, config in _serve_configs().items():
        (app,) = config["applications"]
        args = dict(app.get("args", {}))
        if "models_file" in args:  # mounted at /etc/imagegate in the manifests; the repo's copy here
            args["models_file"] = str(MODELS)
        old = os.environ.get("IMAGEGATE_DATA_DIR")
        os.environ["IMAGEGATE_DATA_DIR"] = str(tmp_path)
        try:
            built = ray_serve.build_app(args)
        finally:
            if old is None:
                os.environ.pop("IMAGEGATE_DATA_DIR")
            else:
                os.environ["IMAGEGATE_DATA_DIR"] = old
        names = {built._bound_deployment.name} | {
            h._bound_deployment.name for h in built._bound_deployment.init_args[2].values()}
        overridden = {d["name"] for d in app.get("deployments", [])}
        assert overridden <= names, (where, overridden, names)
