"""Property-based API testing with schemathesis against the app's own OpenAPI document:
whatever a client sends to any operation, the server never answers with a 5xx.

How it is wired, and why:
- The schema is the document `create_app(...).openapi()` produces (it does not depend on
  which models are configured), loaded with `from_dict` at import. schemathesis'
  `from_asgi` + `from_fixture` would be the usual pair, but its lazy fixture loader reads
  `request.node._nodeid`, which pytest 9 removed; and `from_asgi` at import would need
  the tiny model (built by a session fixture) to exist before collection.
- Requests go in-process to a real app over schemathesis' ASGI client, which runs the
  app's lifespan (one per test item; the pytest plugin ends it at teardown). The model
  loads in the background, so each item first waits for /health; after that a 503
  would be a real failure (nothing else is in flight)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi

from conftest import make_settings, tiny_config
from imagegate.app import create_app
from schema_support import cap_body, healthy_client

BASE_URL = f"http://{asgi.HOST}"


def _document() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        return create_app(make_settings(Path(tmp)), [tiny_config(Path(tmp) / "unused")]).openapi()


schema = schemathesis.openapi.from_dict(_document())

# Cost caps, magnitudes only. On this 2-core machine one image at 200 steps takes ~13 s and
# n=10 x 200 steps ~70 s (measured under the shared load), so unbounded draws would make the
# run's length a lottery. Values the schema allows are lowered but stay valid, so the same
# code paths run; out-of-range values (negative tests) are left exactly as generated.
CAPS = {"num_inference_steps": (1, 200, 3), "n": (1, 10, 2)}


@schema.hook("map_body")
def cap_cost(context: Any, body: Any) -> Any:
    return cap_body(body, CAPS)


@pytest.fixture(scope="module")
def api_app(tmp_path_factory: pytest.TempPathFactory, tiny_sd_path: Path) -> Any:
    return create_app(make_settings(tmp_path_factory.mktemp("schemathesis")), [tiny_config(tiny_sd_path)])


@pytest.fixture
def client(api_app: Any) -> Iterator[Any]:
    with healthy_client(api_app) as c:  # starts the app's lifespan for this item
        yield c


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_operation_answers_with_a_server_error(case: Any, client: Any) -> None:
    # A slow answer is not a server error: allow more than schemathesis' 10 s default.
    case.call_and_validate(session=client, base_url=BASE_URL, checks=[not_a_server_error], timeout=60)
