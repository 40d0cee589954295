"""The Store seam: the contract every Store keeps (LocalStore, and S3Store against a moto
server), signed links over any Store, the signing key from
settings (shared by replicas) or from the data dir, and the janitor sweeping through the Store."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from conftest import make_settings, running, sdk_client, tiny_config
from imagegate.app import create_app
from imagegate.container import janitor
from imagegate.errors import Forbidden, Gone
from imagegate.storage import (
    URL_PREFIX,
    Blob,
    BlobNotFound,
    InvalidBlobName,
    LocalStore,
    SignedLinks,
    Store,
)
from imagegate.storage.base import check_name

KEY = "k" * 16 + "0123456789abcdef"  # 32 characters, the least the setting takes


def http(app: Any) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://testserver")


class MemoryStore:
    """A Store that is not a directory: what the links, the route and the janitor may assume."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.deleted: list[str] = []

    def put(self, name: str, data: bytes) -> None:
        self.blobs[check_name(name)] = bytes(data)

    def get(self, name: str) -> bytes:
        try:
            return self.blobs[name]
        except KeyError:
            raise BlobNotFound(name) from None

    def open(self, name: str) -> Blob:
        data = self.get(name)
        return Blob(size=len(data), chunks=iter([data[:3], data[3:]]))

    def delete(self, name: str) -> None:
        self.deleted.append(name)
        self.blobs.pop(name, None)

    def names(self) -> Iterator[str]:
        return iter(list(self.blobs))

    def discard_partial(self, before: float) -> int:
        return 0


# -- the Store contract, over each Store ------------------------------------------------------
@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "local":
        return LocalStore(tmp_path / "blobs")
    from imagegate.storage.s3 import S3Store

    return S3Store(request.getfixturevalue("s3_url"))


def test_store_put_get_open_delete(store: Store, tmp_path: Path) -> None:
    store.put("a-1.png", b"first")
    store.put("a-2.png", b"second")
    assert store.get("a-1.png") == b"first"
    assert sorted(store.names()) == ["a-1.png", "a-2.png"]
    store.put("a-1.png", b"replaced")
    assert store.get("a-1.png") == b"replaced"
    store.delete("a-1.png")
    store.delete("a-1.png")  # twice: not an error (replicas sweep the same store)
    with pytest.raises(BlobNotFound):
        store.get("a-1.png")
    with pytest.raises(BlobNotFound):
        store.open("a-1.png")
    assert list(store.names()) == ["a-2.png"]
    if isinstance(store, LocalStore):
        assert not [p for p in (tmp_path / "blobs").iterdir() if p.name.startswith(".")]


def test_store_streams_large_blobs_in_chunks(store: Store) -> None:
    data = os.urandom(200_000)
    store.put("big.png", data)
    blob = store.open("big.png")
    assert blob.size == len(data) and blob.modified is not None and blob.etag and blob.etag.startswith('"')
    chunks = list(blob.chunks)
    assert len(chunks) > 1 and b"".join(chunks) == data
    assert blob.http_headers()["content-length"] == str(len(data))
    unread = store.open("big.png")
    unread.close()  # closing one that was never read releases the file


def test_store_writes_are_atomic(store: Store, tmp_path: Path) -> None:
    """Readers racing a writer that keeps replacing a blob see one whole version or the
    other, never a mix or a short read."""
    versions = (b"a" * 2_000_000, b"b" * 2_000_000)
    store.put("x.png", versions[0])
    stop = threading.Event()
    seen: set[bytes] = set()
    bad: list[int] = []

    def read() -> None:
        while not stop.is_set():
            got = store.get("x.png")
            if got in versions:
                seen.add(got[:1])
            else:
                bad.append(len(got))

    readers = [threading.Thread(target=read) for _ in range(2)]
    for t in readers:
        t.start()
    try:
        for i in range(40 if isinstance(store, LocalStore) else 8):  # moto is slow at 2 MB objects
            store.put("x.png", versions[i % 2])
    finally:
        stop.set()
        for t in readers:
            t.join()
    assert not bad
    assert seen  # the readers did read
    if isinstance(store, LocalStore):
        assert not [p for p in (tmp_path / "blobs").iterdir() if p.name.startswith(".")]


def test_a_failed_write_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalStore(tmp_path)
    store.put("x.png", b"old")

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        store.put("x.png", b"new")
    with pytest.raises(OSError, match="No space"):
        store.put("y.png", b"new")
    monkeypatch.undo()
    assert store.get("x.png") == b"old"  # the old version is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.png"]


@pytest.mark.parametrize("name", ["../escape.png", "..", ".", "a/b.png", "/etc/passwd", "a\\b.png", ".hidden",
                                  "", "x\x00.png", "-x.png", "é.png", "a" * 201])
def test_stores_reject_names_that_could_escape_their_root(store: Store, tmp_path: Path, name: str) -> None:
    (tmp_path / "escape.png").write_bytes(b"outside")
    for call in (lambda: store.put(name, b"x"), lambda: store.get(name), lambda: store.open(name),
                 lambda: store.delete(name)):
        with pytest.raises(InvalidBlobName):
            call()
    assert (tmp_path / "escape.png").read_bytes() == b"outside"
    assert list(store.names()) == []


def test_partial_writes_are_discarded_only_when_stale(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    now = time.time()
    stale, live = tmp_path / ".a.png.1234.tmp", tmp_path / ".b.png.5678.tmp"
    for p in (stale, live):
        p.write_bytes(b"partial")
    os.utime(stale, (now - 7200, now - 7200))
    (tmp_path / ".keep").write_bytes(b"not a temporary of ours")
    store.put("c.png", b"whole")
    assert list(store.names()) == ["c.png"]  # partial writes are never listed
    assert store.discard_partial(before=now - 3600) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, ".keep", "c.png"])


# -- signed links over any Store ---------------------------------------------------------------
def test_links_work_over_a_store_that_is_not_a_directory() -> None:
    store = MemoryStore()
    links = SignedLinks(store, KEY.encode(), ttl_seconds=60)
    now = time.time()
    name = links.save(b"image bytes", "png", now=now)
    sig = links.url("http://h", name).rsplit("=", 1)[1]
    assert links.read(name, sig) == b"image bytes"
    assert b"".join(links.open(name, sig).chunks) == b"image bytes"
    with pytest.raises(Forbidden):
        links.read(name, "0" * 32)
    with pytest.raises(Gone):
        links.read(name, sig, now=now + 61)
    old = links.save(b"old", "png", now=now - 120)
    assert links.sweep(now=now) == 1 and store.deleted == [old] and list(store.names()) == [name]
    store.delete(name)
    with pytest.raises(Gone):  # a valid link whose blob went: 410, not a 500
        links.open(name, sig)


def test_a_short_signing_key_is_refused_without_echoing_it() -> None:
    with pytest.raises(ValueError, match="at least 32") as e:
        SignedLinks(MemoryStore(), b"short-secret", ttl_seconds=60)
    assert "short-secret" not in str(e.value)


def test_the_signing_key_setting_is_a_hidden_secret(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, url_signing_key=KEY)
    assert settings.url_signing_key is not None and settings.url_signing_key.get_secret_value() == KEY
    assert KEY not in repr(settings) and KEY not in str(settings)
    assert make_settings(tmp_path).url_signing_key is None


async def test_replicas_sharing_a_key_and_a_store_serve_each_others_links(tmp_path: Path, tiny_sd_path: Path) -> None:
    """Two apps with their own data dirs but one key and one image store (the second's images
    dir is a link to the first's, as a shared mount would be): a link made by one is served
    by the other. A replica with another key refuses it."""
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    shared = a / "data" / "images"
    shared.mkdir(parents=True)
    (b / "data").mkdir(parents=True)
    (b / "data" / "images").symlink_to(shared, target_is_directory=True)
    first = create_app(make_settings(a, url_signing_key=KEY), [tiny_config(tiny_sd_path)])
    second = create_app(make_settings(b, url_signing_key=KEY), [tiny_config(tiny_sd_path)])
    async with running(first), running(second):
        sdk = sdk_client(first)
        r = await sdk.images.generate(prompt="a cat", size="256x256", quality="low", response_format="url",
                                      output_format="png")
        await sdk.close()
        url = r.data[0].url
        assert url
        async with http(first) as h1, http(second) as h2:
            mine, theirs = await h1.get(url), await h2.get(url)
            assert mine.status_code == theirs.status_code == 200
            assert theirs.content == mine.content and theirs.content[:8] == b"\x89PNG\r\n\x1a\n"
            assert theirs.headers["content-type"] == "image/png"
            assert theirs.headers["content-length"] == str(len(theirs.content))
    # The configured key is used instead of a data-dir key file: none was made.
    assert not (a / "data" / "url-signing.key").exists() and not (b / "data" / "url-signing.key").exists()
    other = create_app(make_settings(c, url_signing_key="z" * 32), [tiny_config(tiny_sd_path)])
    async with running(other):
        (c / "data" / "images" / url.split("?")[0].rsplit("/", 1)[1]).write_bytes(b"same name, other key")
        async with http(other) as h:
            refused = await h.get(url)
            assert refused.status_code == 403 and refused.json()["error"]["code"] == "invalid_signature"


async def test_without_the_setting_the_databases_key_signs_and_survives_restarts(tmp_path: Path,
                                                                                tiny_sd_path: Path) -> None:
    """No key file is made: the key lives in the database, so every process on it agrees."""
    first = create_app(make_settings(tmp_path), [tiny_config(tiny_sd_path)])
    async with running(first):
        links: SignedLinks = first.state.storage
        url = links.url("http://testserver", links.save(b"kept across restarts", "png"))
    assert not (tmp_path / "data" / "url-signing.key").exists()
    second = create_app(make_settings(tmp_path), [tiny_config(tiny_sd_path)])
    async with running(second), http(second) as h:
        got = await h.get(url)
        assert got.status_code == 200 and got.content == b"kept across restarts"


async def test_an_old_data_dirs_key_file_is_imported_so_its_links_keep_working(tmp_path: Path,
                                                                              tiny_sd_path: Path) -> None:
    key = os.urandom(32)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "url-signing.key").write_bytes(key)
    old_link = SignedLinks(LocalStore(tmp_path / "data" / "images"), key, 60)
    url = old_link.url("http://testserver", old_link.save(b"made before the upgrade", "png"))
    app = create_app(make_settings(tmp_path), [tiny_config(tiny_sd_path)])
    async with running(app), http(app) as h:
        got = await h.get(url)
        assert got.status_code == 200 and got.content == b"made before the upgrade"
    (tmp_path / "data" / "url-signing.key").unlink()  # imported: the file is no longer read
    again = create_app(make_settings(tmp_path), [tiny_config(tiny_sd_path)])
    async with running(again), http(again) as h:
        assert (await h.get(url)).status_code == 200


# -- the content route and the janitor go through the Store -------------------------------------
async def test_the_content_route_serves_from_any_store(tmp_path: Path, tiny_sd_path: Path) -> None:
    app = create_app(make_settings(tmp_path), [tiny_config(tiny_sd_path)])
    async with running(app):
        app.state.storage = links = SignedLinks(MemoryStore(), KEY.encode(), ttl_seconds=60)
        name = links.save(b"not on disk", "webp")
        async with http(app) as h:
            got = await h.get(links.url("http://testserver", name))
            assert got.status_code == 200 and got.content == b"not on disk"
            assert got.headers["content-type"] == "image/webp" and got.headers["content-length"] == "11"
            expired = links.save(b"old", "png", now=time.time() - 120)
            r = await h.get(links.url("http://testserver", expired))
            assert r.status_code == 410 and r.json()["error"]["code"] == "expired"
            links.store.delete(name)
            r = await h.get(links.url("http://testserver", name))
            assert r.status_code == 410 and r.json()["error"]["code"] == "expired"
            r = await h.get(f"{URL_PREFIX}/{name}", params={"sig": "0" * 32})
            assert r.status_code == 403 and r.json()["error"]["code"] == "invalid_signature"


async def test_the_janitor_sweeps_through_the_store() -> None:
    store = MemoryStore()
    links = SignedLinks(store, KEY.encode(), ttl_seconds=60)
    expired = links.save(b"old", "png", now=time.time() - 120)
    fresh = links.save(b"new", "png")
    store.put("README", b"not ours: no expiry in the name")
    sweeper = asyncio.create_task(janitor(links, 0.01))
    try:
        for _ in range(500):
            if expired not in store.blobs:
                break
            await asyncio.sleep(0.01)
    finally:
        sweeper.cancel()
    assert store.deleted == [expired]
    assert sorted(store.names()) == sorted([fresh, "README"])
