"""The code's shape, kept honest: the import graph of src/imagegate has no cycles, no module
imports a layer above its own, no module is over 400 lines without a reason at its top,
and importing the server does not import torch (only a configured local model does)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# Lowest first. A module may import its own layer and those below.
LAYERS = [
    ["errors", "settings", "protocol", "admission", "mini", "logs"],
    ["normalize", "inputs", "postprocess", "metering", "families", "registry", "pricing"],
    ["engine", "catalogue", "routing"],
    ["backends", "storage", "db", "accounts", "safety"],
    ["core"],
    ["jobs"],
    ["observability"],
    ["container", "server"],
    ["routes"],
    ["app", "ray_serve"],
    ["cli", "cli_common", "cli_keys", "cli_usage", "cli_verify", "cli_webhooks"],
]
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    out = {}
    for f in (SRC / "imagegate").rglob("*.py"):
        parts = f.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = f
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, f in mods.items():
        package = m.split(".") if f.name == "__init__.py" else m.split(".")[:-1]
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            graph[m].update(t for t in targets if t in mods and t != m)
    # A package's __init__ re-exporting its own modules is not a dependency cycle.
    for m in graph:
        graph[m] = {d for d in graph[m] if not (d.startswith(m + ".") or (m.startswith(d + ".") and _is_init(d, mods)))}
    return graph


def _is_init(name: str, mods: dict[str, Path]) -> bool:
    return mods[name].name == "__init__.py"


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{module} is in no layer: add it to LAYERS in tests/test_layout.py")


def test_the_import_graph_has_no_cycles() -> None:
    graph = _graph()
    seen: dict[str, int] = {}  # 1 = on the path, 2 = done

    def visit(m: str, path: list[str]) -> None:
        seen[m] = 1
        for d in sorted(graph[m]):
            assert seen.get(d) != 1, "import cycle: " + " -> ".join([*path, m, d])
            if d not in seen:
                visit(d, [*path, m])
        seen[m] = 2

    for m in sorted(graph):
        if m not in seen:
            visit(m, [])


def test_no_module_imports_a_layer_above_it() -> None:
    upward = [(m, d) for m, deps in _graph().items() if m != "imagegate" for d in deps
              if d != "imagegate" and _layer(d) > _layer(m)]
    assert not upward, upward


def test_long_modules_say_why_at_the_top() -> None:
    long = []
    for name, f in _modules().items():
        text = f.read_text()
        if len(text.splitlines()) > MAX_LINES and "over 400 lines" not in "\n".join(text.splitlines()[:30]).lower():
            long.append(f"{name}: {len(text.splitlines())} lines")
    assert not long, long


def test_the_server_imports_without_torch() -> None:
    code = ("import sys, imagegate.app, imagegate.cli, imagegate.container; "
            "from imagegate.app import create_app; from imagegate.settings import Settings; "
            "create_app(Settings()); "
            "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
