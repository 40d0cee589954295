"""The playground's server side, without a browser: the page and its files come from the
package and name nothing outside it; the history endpoint keeps an image in the store
behind a signed, expiring link, and refuses what is not an image."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import httpx2
import tomli
from PIL import Image

from conftest import make_settings, running, tiny_config
from imagegate.app import create_app

ROOT = Path(__file__).parents[1]
WEB = ROOT / "src/imagegate/web"


def http(app: Any) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://testserver")


async def test_the_page_and_its_files_are_served_from_the_package(app: Any) -> None:
    async with http(app) as c:
        for path in ("/", "/playground"):
            r = await c.get(path)
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
            assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        page = r.text
        refs = re.findall(r'(?:src|href)="([^"]+)"', page)
        assert refs and all(ref.startswith(("/playground/static/", "#")) for ref in refs), refs
        for ref in refs:
            if ref.startswith("/"):
                got = await c.get(ref)
                assert got.status_code == 200, ref
                assert got.content == (WEB / ref.rsplit("/", 1)[-1]).read_bytes()
        missing = await c.get("/playground/static/nope.js")
        assert missing.status_code == 404 and missing.json()["error"]["type"]
        traversal = await c.get("/playground/static/..%2F..%2Fsettings.py")
        assert traversal.status_code == 404


def test_nothing_is_fetched_from_elsewhere() -> None:
    for f in WEB.iterdir():
        if f.suffix in (".js", ".css", ".html"):
            text = f.read_text()
            assert not re.search(r"https?://", text), f"{f.name} names an outside URL"
            assert "@import" not in text and "//cdn" not in text


def test_the_files_ship_in_the_wheel() -> None:
    data = tomli.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["imagegate"]
    assert "web/**/*" in data


async def test_history_keeps_an_image_in_the_store(app: Any) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (16, 8), (200, 10, 10)).save(buf, "WEBP")
    async with http(app) as c:
        r = await c.post("/playground/api/history", content=buf.getvalue(), headers={"content-type": "image/webp"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert ".webp?sig=" in body["url"] and body["expires_at"] > 0
        got = await c.get(body["url"])
        assert got.status_code == 200 and got.content == buf.getvalue()
        tampered = await c.get(body["url"][:-2] + "00")
        assert tampered.status_code == 403
        bad = await c.post("/playground/api/history", content=b"not an image")
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "body"
        empty = await c.post("/playground/api/history", content=b"")
        assert empty.status_code == 400


async def test_history_takes_a_key_when_keys_exist(tmp_path: Path, tiny_sd_path: Path) -> None:
    application = create_app(make_settings(tmp_path, api_keys=["k1"]), [tiny_config(tiny_sd_path)])
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, "PNG")
    async with running(application), http(application) as c:
        assert (await c.post("/playground/api/history", content=buf.getvalue())).status_code == 401
        ok = await c.post("/playground/api/history", content=buf.getvalue(), headers={"authorization": "Bearer k1"})
        assert ok.status_code == 200
        assert (await c.get("/")).status_code == 200  # the page itself is public: it asks for the key
