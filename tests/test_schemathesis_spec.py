"""Property-based API testing with schemathesis against OpenAI's own spec (issue #19): the
excerpt of openai/openai-openapi for the /images paths (tests/data/, MIT licence beside
it). Whatever a client of OpenAI's API may send to /v1/images/{generations,edits,variations},
our server never answers with a 5xx.

Wired as tests/test_schemathesis.py is (see there for why): an in-process ASGI client
that runs the app's lifespan per test item and waits for /health, the same cost caps on
the body, and only the `not_a_server_error` check. The spec's paths are relative to its
server, https://api.openai.com/v1, hence the /v1 base URL. Its bearer-key scheme is
harmless: the app is built with no keys, so any Authorization header is ignored."""

from __future__ import annotations

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

SPEC = Path(__file__).parent / "data" / "openai-images-openapi.yaml"
BASE_URL = f"http://{asgi.HOST}/v1"

schema = schemathesis.openapi.from_path(str(SPEC))

# The same cost caps as tests/test_schemathesis.py (magnitudes measured there): values the
# spec allows are lowered but stay valid, out-of-range ones are left as generated. The
# spec has no steps parameter, so `n` is the one that multiplies the work.
CAPS = {"n": (1, 10, 2), "partial_images": (0, 3, 1)}


@schema.hook("map_body")
def cap_cost(context: Any, body: Any) -> Any:
    return cap_body(body, CAPS)


@pytest.fixture(scope="module")
def api_app(tmp_path_factory: pytest.TempPathFactory, tiny_sd_path: Path) -> Any:
    return create_app(make_settings(tmp_path_factory.mktemp("schemathesis-spec")), [tiny_config(tiny_sd_path)])


@pytest.fixture
def client(api_app: Any) -> Iterator[Any]:
    with healthy_client(api_app) as c:  # starts the app's lifespan for this item
        yield c


def test_the_spec_copy_is_openais_images_excerpt() -> None:
    text = SPEC.read_text()
    assert text.startswith("openapi: 3.1.0") and "openai/openai-openapi, MIT license" in text
    assert (SPEC.parent / "LICENSE-openai-openapi").read_text().startswith("The MIT License")
    ops = {(op.method.upper(), op.path) for op in (r.ok() for r in schema.get_all_operations())}
    assert ops == {("POST", "/images/edits"), ("POST", "/images/generations"), ("POST", "/images/variations")}


@schema.parametrize()
@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_operation_of_openais_spec_answers_with_a_server_error(case: Any, client: Any) -> None:
    # A slow answer is not a server error: allow more than schemathesis' 10 s default.
    case.call_and_validate(session=client, base_url=BASE_URL, checks=[not_a_server_error], timeout=60)
