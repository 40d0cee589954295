"""Routing's pure parts (strategies, breaker, Retry-After) and the models file's gateway
tables: the documented configuration parses, and a gateway-only process needs no torch."""

from __future__ import annotations

import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from imagegate import catalogue
from imagegate.catalogue import Provider, Route
from imagegate.registry import load_models_file
from imagegate.routing import Breaker, Health, order, retry_after_seconds

DOCS = Path(__file__).resolve().parents[1] / "docs" / "gateway.md"


def _routes() -> list[Route]:
    p = Provider(name="p", kind="openai-compatible", base_url="http://x")
    return [Route(model="a", provider=p, weight=1), Route(model="b", provider=p, weight=3), Route(model="local")]


def test_strategies_order_routes() -> None:
    rs, health = _routes(), Health()
    assert [r.model for r in order("priority", rs, health, lambda r: 0)] == ["a", "b", "local"]
    costs = {"a": 0.04, "b": 0.01, "local": 0.02}
    assert [r.model for r in order("cheapest", rs, health, lambda r: costs[r.model])] == ["b", "local", "a"]
    health.observe(rs[0], 2.0)
    health.observe(rs[1], 0.5)
    # the unmeasured route first (so it gets measured), then the fastest
    assert [r.model for r in order("least-latency", rs, health, lambda r: 0)] == ["local", "b", "a"]
    health.observe(rs[1], 10.0)  # decayed: 0.8 * 0.5 + 0.2 * 10 = 2.4, now slower than a's 2.0
    assert [r.model for r in order("least-latency", rs, health, lambda r: 0)][1:] == ["a", "b"]
    rng = random.Random(1)
    firsts = [order("weighted", rs, health, lambda r: 0, rng)[0].model for _ in range(3000)]
    assert 0.52 < firsts.count("b") / 3000 < 0.68  # weight 3 of 5


def test_breaker_opens_then_half_opens_for_one_probe() -> None:
    now = [0.0]
    b = Breaker(failures=2, cooldown_s=10, clock=lambda: now[0])
    b.failure()
    assert b.allow()
    b.failure()
    assert b.state == "open" and not b.allow()
    now[0] = 10.0
    assert b.state == "half-open" and b.allow() and not b.allow()  # one probe at a time
    b.failure()  # the probe failed: open again for another cooldown
    assert b.state == "open"
    now[0] = 20.0
    assert b.allow()
    b.success()
    assert b.state == "closed" and b.allow()


def test_retry_after_forms() -> None:
    assert retry_after_seconds("2") == 2.0
    assert retry_after_seconds("1", "250") == 0.25
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert retry_after_seconds("soon") is None


def test_the_documented_configuration_parses(tmp_path: Path) -> None:
    block = re.search(r"```toml\n(.*?)```", DOCS.read_text(), re.S)
    assert block is not None
    f = tmp_path / "models.toml"
    f.write_text(block.group(1))
    cat = catalogue.load(f)
    local = load_models_file(f)
    cat.check({c.name for c in local})
    assert [c.name for c in local] == ["sdxl-turbo"]
    route = cat.models["gpt-image-1"]
    assert [r.key for r in route.routes] == ["openai/gpt-image-1", "local/sdxl-turbo"]
    assert route.routes[0].price().per_image["medium"]["1024x1024"] == 0.042
    assert route.routes[0].caps().response_formats == frozenset({"b64_json"})


@pytest.mark.parametrize(("text", "message"), [
    ('[[providers]]\nname = "p"\nkind = "grpc"\nbase_url = "http://x"\n', "kind must be one of"),
    ('[[providers]]\nname = "p"\nkind = "openai"\napi_key = "sk-x"\n', "keys never go in the file"),
    ('[[models]]\nname = "m"\nroutes = [{ provider = "nope", model = "x" }]\n', "no [[providers]] table is named"),
    ('[[models]]\nname = "m"\nstrategy = "random"\nroutes = [{ model = "x" }]\n', "strategy must be one of"),
])
def test_bad_gateway_tables_are_refused(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "models.toml"
    f.write_text(text)
    with pytest.raises(ValueError, match=re.escape(message)):
        catalogue.load(f)


def test_a_gateway_only_process_starts_without_torch(tmp_path: Path) -> None:
    f = tmp_path / "models.toml"
    f.write_text('[[providers]]\nname = "up"\nkind = "openai-compatible"\nbase_url = "http://127.0.0.1:9/v1"\n'
                 '[[models]]\nname = "gpt-image-1"\nroutes = [{ provider = "up", model = "m" }]\n')
    code = (
        "import asyncio, sys\n"
        "from imagegate.app import create_app\nfrom imagegate.settings import Settings\n"
        f"app = create_app(Settings(models_file={str(f)!r}, data_dir={str(tmp_path / 'd')!r}))\n"
        "async def main():\n"
        "    async with app.router.lifespan_context(app):\n"
        "        assert app.state.gateway.find(None).name == 'gpt-image-1'\n"
        "asyncio.run(main())\n"
        "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
