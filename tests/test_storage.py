"""Signed, expiring image URLs: the Storage facade (SignedLinks over a LocalStore) directly and through HTTP."""

from __future__ import annotations

import asyncio
import io
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
from PIL import Image

from conftest import make_settings, running, sdk_client, tiny_config
from imagegate.app import create_app
from imagegate.errors import Forbidden, Gone
from imagegate.storage import URL_PREFIX, LocalStore, Storage

SECRET = b"s" * 32


def http(app: Any) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://testserver")


def local(root: Path, secret: bytes = SECRET, ttl_seconds: int = 60) -> Storage:
    return Storage(LocalStore(root), secret, ttl_seconds)


def split(url: str) -> tuple[str, str]:
    u = urlsplit(url)
    return u.path.rsplit("/", 1)[1], parse_qs(u.query)["sig"][0]


# -- Storage, unit ------------------------------------------------------------------------
def test_saved_bytes_resolve_with_a_valid_signature(tmp_path: Path) -> None:
    st = local(tmp_path / "img")
    name = st.save(b"PNGDATA", "png")
    url = st.url("http://h:1/", name)
    assert url.startswith(f"http://h:1{URL_PREFIX}/{name}?sig=")
    n, sig = split(url)
    assert st.read(n, sig) == b"PNGDATA"
    assert not list((tmp_path / "img").glob(".*"))  # no temporaries left behind


@pytest.mark.parametrize("tamper", ["flip", "empty", "none", "other-name", "other-key"])
def test_tampered_signatures_are_403(tmp_path: Path, tamper: str) -> None:
    st = local(tmp_path / "img")
    name = st.save(b"x", "png")
    other = st.save(b"y", "png")
    _, sig = split(st.url("http://h", name))
    if tamper == "flip":
        sig = sig[:-1] + ("0" if sig[-1] != "0" else "1")
    elif tamper == "empty":
        sig = ""
    elif tamper == "none":
        sig = None  # type: ignore[assignment]
    elif tamper == "other-name":
        _, sig = split(st.url("http://h", other))
    elif tamper == "other-key":
        _, sig = split(local(tmp_path / "img2", b"k" * 32).url("http://h", name))
    with pytest.raises(Forbidden) as e:
        st.read(name, sig)
    assert e.value.status == 403


def test_a_longer_lifetime_cannot_be_forged(tmp_path: Path) -> None:
    """The expiry is in the signed name: renaming the file to live longer breaks the signature."""
    st = local(tmp_path / "img")
    name = st.save(b"x", "png", now=time.time() - 3600)
    _, sig = split(st.url("http://h", name))
    expires, rest = name.split("-", 1)
    forged = f"{int(expires) + 10 ** 6}-{rest}"
    os.rename(tmp_path / "img" / name, tmp_path / "img" / forged)
    with pytest.raises(Forbidden):
        st.read(forged, sig)


def test_expired_links_are_410(tmp_path: Path) -> None:
    st = local(tmp_path / "img")
    t0 = time.time()
    name = st.save(b"x", "png", now=t0)
    _, sig = split(st.url("http://h", name))
    assert st.read(name, sig, now=t0 + 59) == b"x"
    with pytest.raises(Gone) as e:
        st.read(name, sig, now=t0 + 61)
    assert e.value.status == 410


def test_a_signed_link_to_a_deleted_file_is_410(tmp_path: Path) -> None:
    st = local(tmp_path / "img")
    name = st.save(b"x", "png")
    _, sig = split(st.url("http://h", name))
    (tmp_path / "img" / name).unlink()
    with pytest.raises(Gone):
        st.read(name, sig)


def test_sweep_deletes_expired_files_and_keeps_fresh_ones(tmp_path: Path) -> None:
    root = tmp_path / "img"
    st = local(root)
    now = time.time()
    for ext, age in (("png", 120), ("webp", 61)):  # expired
        st.save(b"old", ext, now=now - age)
    fresh = [st.save(b"new", "png", now=now), st.save(b"new", "jpeg", now=now - 30)]
    stale_tmp = root / ".123-abc.png.tmp"
    stale_tmp.write_bytes(b"partial")
    os.utime(stale_tmp, (now - 7200, now - 7200))
    live_tmp = root / ".456-def.png.tmp"  # a write in progress
    live_tmp.write_bytes(b"partial")
    (root / "README").write_text("not ours")  # names we did not write are left alone
    assert st.sweep(now=now) == 3
    left = {p.name for p in root.iterdir()}
    assert left == set(fresh) | {live_tmp.name, "README"}
    assert st.sweep(now=now) == 0
    # later, the fresh ones expire too
    assert st.sweep(now=now + 61) == 2


# -- through HTTP -------------------------------------------------------------------------
async def test_url_response_serves_the_bytes_and_403_on_tamper(tmp_path: Path, tiny_sd_path: Path) -> None:
    app = create_app(make_settings(tmp_path), [tiny_config(tiny_sd_path)])
    async with running(app):
        sdk = sdk_client(app)
        r = await sdk.images.generate(model="gpt-image-1", prompt="a cat", size="256x256", quality="low",
                                      response_format="url", output_format="webp")
        await sdk.close()
        assert r.data[0].b64_json is None
        url = r.data[0].url
        assert url.startswith(f"http://testserver{URL_PREFIX}/") and url.endswith("webp?sig=" + split(url)[1])
        async with http(app) as h:
            # no API key needed (the app has none configured here; see test_server for api_keys)
            got = await h.get(url)
            assert got.status_code == 200
            assert got.headers["content-type"] == "image/webp"
            with Image.open(io.BytesIO(got.content)) as im:
                assert im.format == "WEBP" and im.size == (256, 256)
            name, sig = split(url)
            bad = await h.get(f"{URL_PREFIX}/{name}", params={"sig": sig[::-1]})
            assert bad.status_code == 403
            assert bad.json()["error"]["code"] == "invalid_signature"
            missing = await h.get(f"{URL_PREFIX}/{name}")
            assert missing.status_code == 403


async def test_expired_url_is_410_over_http(tmp_path: Path, tiny_sd_path: Path) -> None:
    app = create_app(make_settings(tmp_path), [tiny_config(tiny_sd_path)])
    async with running(app):
        storage: Storage = app.state.storage
        name = storage.save(b"old image", "png", now=time.time() - 2 * storage.ttl)
        async with http(app) as h:
            r = await h.get(storage.url("http://testserver", name))
            assert r.status_code == 410
            body = r.json()["error"]
            assert body["code"] == "expired" and body["type"] == "invalid_request_error"


async def test_short_ttl_expires_a_real_url(tmp_path: Path, tiny_sd_path: Path) -> None:
    app = create_app(make_settings(tmp_path, url_ttl_seconds=1), [tiny_config(tiny_sd_path)])
    async with running(app):
        sdk = sdk_client(app)
        r = await sdk.images.generate(prompt="a cat", size="256x256", quality="low", response_format="url")
        await sdk.close()
        async with http(app) as h:
            # expires at the whole second after save + 1 s: at most 2 s away
            deadline = time.monotonic() + 3
            status = 200
            while status == 200 and time.monotonic() < deadline:
                status = (await h.get(r.data[0].url)).status_code
                if status == 200:
                    await asyncio.sleep(0.2)
            assert status == 410


async def test_signing_key_persists_across_restarts(tmp_path: Path, tiny_sd_path: Path) -> None:
    settings = make_settings(tmp_path)
    first = create_app(settings, [tiny_config(tiny_sd_path)])
    async with running(first):
        sdk = sdk_client(first)
        r = await sdk.images.generate(prompt="a cat", size="256x256", quality="low", response_format="url")
        await sdk.close()
        async with http(first) as h:
            original = (await h.get(r.data[0].url)).content
    # a new process over the same data dir
    second = create_app(make_settings(tmp_path), [tiny_config(tiny_sd_path)])
    async with running(second), http(second) as h:
        again = await h.get(r.data[0].url)
        assert again.status_code == 200
        assert again.content == original
    # a different data dir has a different key: the old link is not valid there
    third = create_app(make_settings(tmp_path / "elsewhere"), [tiny_config(tiny_sd_path)])
    async with running(third), http(third) as h:
        assert (await h.get(r.data[0].url)).status_code == 403


async def test_the_apps_janitor_sweeps_in_the_background(tmp_path: Path, tiny_sd_path: Path) -> None:
    app = create_app(make_settings(tmp_path, janitor_interval_seconds=0.05), [tiny_config(tiny_sd_path)])
    async with running(app):
        storage: Storage = app.state.storage
        root = tmp_path / "data" / "images"  # the app's LocalStore
        expired = root / storage.save(b"old", "png", now=time.time() - 2 * storage.ttl)
        fresh = root / storage.save(b"new", "png")
        deadline = time.monotonic() + 5
        while expired.exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert not expired.exists()
        assert fresh.exists()


@pytest.mark.parametrize("sig", ["\x80", "é" * 32, "签名", "\x00"])
def test_non_ascii_or_odd_signatures_are_403_not_500(tmp_path: Path, sig: str) -> None:
    st = local(tmp_path / "img")
    name = st.save(b"x", "png")
    with pytest.raises(Forbidden):
        st.read(name, sig)
    with pytest.raises(Forbidden):
        st.read("0", sig)


async def test_non_ascii_signature_over_http_is_403(tmp_path: Path, tiny_sd_path: Path) -> None:
    app = create_app(make_settings(tmp_path), [tiny_config(tiny_sd_path)])
    async with running(app):
        name = app.state.storage.save(b"x", "png")
        async with http(app) as h:
            for sig in ("%C2%80", "%E7%AD%BE", "%00"):
                r = await h.get(f"{URL_PREFIX}/{name}?sig={sig}")
                assert r.status_code == 403, sig
                assert r.json()["error"]["code"] == "invalid_signature"
