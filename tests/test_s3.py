"""Storage in an S3-compatible bucket (a moto server started by tests/s3_support.py): an app
on s3:// answers b64 and url responses and serves its links, the janitor expires objects in
the bucket, presigned links are fetched from the store itself, two apps sharing a database
and a bucket serve each other's links and keys, and a storage setting that cannot work stops
the start with the setting named."""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path
from typing import Any

import httpx2
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from cli_fixtures import clean_env, served  # noqa: F401 - fixtures
from conftest import make_settings, running, sdk_client, tiny_config
from imagegate.app import create_app
from imagegate.cli import app as cli
from imagegate.storage import SignedLinks
from imagegate.storage.s3 import S3Store, StoreConfigError

ADMIN = "admin-" + "a" * 32
PNG = b"\x89PNG\r\n\x1a\n"


def http(app: Any) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://testserver")


def objects(s3_bucket: tuple[Any, str]) -> list[str]:
    client, bucket = s3_bucket
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", []))


async def test_an_app_on_s3_answers_b64_and_url_and_serves_its_links(tmp_path: Path, tiny_sd_path: Path,
                                                                     s3_url: str, s3_bucket: Any) -> None:
    app = create_app(make_settings(tmp_path, storage_url=s3_url), [tiny_config(tiny_sd_path)])
    async with running(app):
        assert isinstance(app.state.storage.store, S3Store)
        sdk = sdk_client(app)
        b64 = await sdk.images.generate(prompt="a cat", size="256x256", quality="low", output_format="png")
        assert base64.b64decode(b64.data[0].b64_json or "")[:8] == PNG
        assert objects(s3_bucket) == []  # b64 stores nothing
        r = await sdk.images.generate(prompt="a cat", size="256x256", quality="low", response_format="url",
                                      output_format="png", n=2)
        await sdk.close()
        urls = [d.url or "" for d in r.data]
        names = sorted(u.split("?")[0].rsplit("/", 1)[1] for u in urls)
        assert objects(s3_bucket) == [f"imgs/{n}" for n in names]
        async with http(app) as h:
            for url in urls:
                got = await h.get(url)
                assert got.status_code == 200 and got.content[:8] == PNG
                assert got.headers["content-type"] == "image/png"
                assert got.headers["content-length"] == str(len(got.content)) and got.headers["etag"]
            tampered = await h.get(urls[0][:-4] + "0000")
            assert tampered.status_code == 403
    assert not (tmp_path / "data" / "images").exists()  # nothing went to the data dir


async def test_the_janitor_expires_objects_in_the_bucket(tmp_path: Path, tiny_sd_path: Path, s3_url: str,
                                                         s3_bucket: Any) -> None:
    app = create_app(make_settings(tmp_path, storage_url=s3_url, janitor_interval_seconds=0.05),
                     [tiny_config(tiny_sd_path)])
    async with running(app):
        links: SignedLinks = app.state.storage
        expired = links.save(b"old", "png", now=time.time() - 2 * links.ttl)
        fresh = links.save(b"new", "png")
        s3_bucket[0].put_object(Bucket=s3_bucket[1], Key="imgs/README", Body=b"not ours: no expiry in its name")
        deadline = time.monotonic() + 30
        while f"imgs/{expired}" in objects(s3_bucket):
            assert time.monotonic() < deadline, "the janitor did not remove the expired object"
            await asyncio.sleep(0.05)
    assert objects(s3_bucket) == sorted([f"imgs/{fresh}", "imgs/README"])


async def test_presigned_urls_are_fetched_from_the_store(tmp_path: Path, tiny_sd_path: Path, s3_url: str,
                                                        s3_bucket: Any) -> None:
    app = create_app(make_settings(tmp_path, storage_url=s3_url, presigned_urls=True, url_ttl_seconds=120),
                     [tiny_config(tiny_sd_path)])
    async with running(app):
        sdk = sdk_client(app)
        r = await sdk.images.generate(prompt="a cat", size="256x256", quality="low", response_format="url",
                                      output_format="webp")
        await sdk.close()
    url = r.data[0].url or ""
    endpoint = s3_bucket[0].meta.endpoint_url
    assert url.startswith(f"{endpoint}/{s3_bucket[1]}/imgs/") and "X-Amz-Signature=" in url
    expires = int(url.split("X-Amz-Expires=")[1].split("&")[0])
    assert 110 <= expires <= 120  # until the image's own expiry, not longer
    got = httpx2.get(url)  # straight from the store: the app is closed
    assert got.status_code == 200 and got.content[:4] == b"RIFF" and got.headers["content-type"] == "image/webp"
    # (moto does not check signatures, so a forged one is not tested here; the SigV4 signing is obstore's.)


async def test_two_apps_on_one_database_and_bucket_share_links_and_keys(tmp_path: Path, tiny_sd_path: Path,
                                                                        s3_url: str, db_url: str) -> None:
    """No URL-signing key or key secret is configured: both come from the database, so a link
    made by the first is served by the second once the first is gone, and a key created
    through the second works on the first (each app has its own data dir)."""
    def settings(name: str) -> Any:
        return make_settings(tmp_path / name, storage_url=s3_url, database_url=db_url, admin_key=ADMIN)

    first = create_app(settings("a"), [tiny_config(tiny_sd_path)])
    second = create_app(settings("b"), [tiny_config(tiny_sd_path)])
    async with running(first):
        async with running(second):
            async with http(second) as h:
                made = await h.post("/admin/v1/keys", json={"name": "shared"},
                                    headers={"authorization": f"Bearer {ADMIN}"})
                assert made.status_code == 201, made.text
            sdk = sdk_client(first, api_key=made.json()["key"])
            r = await sdk.images.generate(prompt="a cat", size="256x256", quality="low", response_format="url",
                                          output_format="png")
            await sdk.close()
        url = r.data[0].url or ""
    # The first is closed; a third app on the same database and bucket serves its link.
    third = create_app(settings("c"), [tiny_config(tiny_sd_path)])
    async with running(third), http(third) as h:
        got = await h.get(url)
        assert got.status_code == 200 and got.content[:8] == PNG
    for name in ("a", "b", "c"):
        assert not list((tmp_path / name / "data").glob("*.key"))


@pytest.mark.parametrize(("url", "needle"), [
    ("gs://bucket/x", "unknown scheme"),
    ("s3://", "names no bucket"),
    ("s3:///prefix", "names no bucket"),
    ("file://relative/dir", "absolute local directory"),
    ("file:relative", "unknown scheme"),
    ("/abs/dir", "unknown scheme"),
])
def test_a_storage_url_that_cannot_work_is_refused_naming_the_setting(tmp_path: Path, url: str,
                                                                      needle: str) -> None:
    with pytest.raises(ValidationError) as e:
        make_settings(tmp_path, storage_url=url)
    assert "IMAGEGATE_STORAGE_URL" in str(e.value) and needle in str(e.value)


def test_presigned_urls_need_an_s3_store(tmp_path: Path) -> None:
    for url in (None, f"file://{tmp_path}/images"):
        with pytest.raises(ValidationError, match="IMAGEGATE_PRESIGNED_URLS=true needs an s3://"):
            make_settings(tmp_path, storage_url=url, presigned_urls=True)


def test_a_file_url_names_the_store_directory(tmp_path: Path) -> None:
    from imagegate.storage import LocalStore, open_store

    settings = make_settings(tmp_path, storage_url=f"file://{tmp_path}/elsewhere%20x")
    store = open_store(settings.resolved_storage_url)
    assert isinstance(store, LocalStore) and store.root == tmp_path / "elsewhere x"
    default = open_store(make_settings(tmp_path).resolved_storage_url)  # today's place
    assert isinstance(default, LocalStore) and default.root == (tmp_path / "data" / "images").resolve()


async def test_a_missing_bucket_stops_the_start_naming_the_setting(tmp_path: Path, tiny_sd_path: Path,
                                                                   s3_bucket: Any) -> None:
    app = create_app(make_settings(tmp_path, storage_url="s3://no-such-bucket-here/x"), [tiny_config(tiny_sd_path)])
    with pytest.raises(StoreConfigError, match=r"IMAGEGATE_STORAGE_URL='s3://no-such-bucket-here/x': cannot list "
                                               r"bucket 'no-such-bucket-here'.*NoSuchBucket|404"):
        async with running(app):
            pass


def test_serve_refuses_a_missing_bucket_in_one_line(tmp_path: Path, s3_bucket: Any, clean_env: None,  # noqa: F811
                                                    served: list[Any]) -> None:  # noqa: F811
    r = CliRunner().invoke(cli, ["serve", "--data-dir", str(tmp_path / "d")],
                           env={"IMAGEGATE_STORAGE_URL": "s3://no-such-bucket-here"})
    assert r.exit_code == 2, r.output
    assert "IMAGEGATE_STORAGE_URL='s3://no-such-bucket-here': cannot list bucket" in r.output
    assert "Traceback" not in r.output and served == []
