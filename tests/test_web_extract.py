"""Extracted metadata and previews on the web (issue 13 parts 1-2), over a real server:
the metadata API, thumbnails with caching headers and exactly the file's access, the
file page (metadata, escaped; the preview), thumbnails on the dataset page; and a
browser test that opens a file page and sees the preview loaded and the metadata."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from labkeep import Keep
from labkeep.ops.worker import JobWorker
from tests import imaging_samples as samples
from tests.conftest import unseal_tree
from tests.webserver import LiveServer

API = "/api/v1"
PASSWORD = "a long enough password"
FILE = "raw/cell-01.ome.tif"


@dataclass
class World:
    server: LiveServer
    keep: Keep
    sha256: str

    def client(self, user: str | None) -> httpx.Client:
        if user is None:
            return self.server.client(timeout=30)
        keep = self.keep.acting_as(self.keep.principal_for(user))
        token, _ = keep.create_token("t", expires="1h")
        return self.server.client(headers={"Authorization": f"Bearer {token}"}, timeout=30)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """alice (member of the lab that owns proj), carol (no group); proj/s017 holds an
    OME-TIFF, a PNG, a text file and an OME-TIFF whose channel name is HTML; proj/open is
    public. Extraction ran as the job queued by ingest."""
    from argon2 import PasswordHasher

    from labkeep.access import secrets

    base = tmp_path_factory.mktemp("webextract")
    cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(secrets, "_hasher", lambda: cheap)
        keep = Keep.init(base / "keep")
        keep.config.durability = "file"
        try:
            for name in ("alice", "carol"):
                keep.add_user(name, password=PASSWORD)
            keep.create_group("lab")
            keep.set_member("lab", "alice", "member")
            keep.create_project("proj", group="lab", private=False)
            src = base / "src"
            src.mkdir()
            samples.ome_tiff(src / "cell-01.ome.tif", y=600, x=800, z=2)
            samples.png(src / "overview.png")
            (src / "notes.txt").write_text("mouse 42\n")
            evil = samples.OME_XML.replace('Name="DAPI"', 'Name="&lt;script&gt;x()&lt;/script&gt;"')
            import tifffile

            tifffile.imwrite(src / "evil.ome.tif", samples.image_data(1, 16, 16).reshape(2, 16, 16),
                             description=evil.format(x=16, y=16, z=1, planes=2).encode(),
                             metadata=None)  # fmt: skip
            keep.ingest(src, "proj/s017")
            pub = base / "pub"
            pub.mkdir()
            samples.ome_tiff(pub / "open.ome.tif")
            keep.ingest(pub, "proj/open")
            keep.set_public("proj/open", True)
            stats = JobWorker(keep, drain=True, log=io.StringIO(), schedule=False).run()
            assert stats.done == 2, stats
            sha = keep.stat_file(f"proj/s017/{FILE}").sha256
            with LiveServer(keep) as live:
                yield World(live, keep, sha)
        finally:
            keep.close()
            unseal_tree(base)


def test_metadata_api(world: World) -> None:
    with world.client("alice") as alice:
        got = alice.get(f"{API}/metadata/proj/s017/{FILE}")
        assert got.status_code == 200, got.text
        record = got.json()
        assert record["status"] == "ok" and record["preview"] == "ok"
        assert record["fields"]["objective"]["magnification"] == 63.0
        assert record["search"]["channels"] == "DAPI,GFP"
        assert alice.get(f"{API}/metadata/proj/s017/{FILE}?version=1").json()["version"] == 1
        assert alice.get(f"{API}/metadata/proj/s017/raw/nothing.tif").status_code == 404
    with world.client("carol") as carol:
        assert carol.get(f"{API}/metadata/proj/s017/{FILE}").status_code == 404


def test_preview_is_a_small_png_with_caching_headers(world: World) -> None:
    from PIL import Image

    with world.client("alice") as alice:
        got = alice.get(f"{API}/previews/proj/s017/{FILE}")
        assert got.status_code == 200, got.text
        assert got.headers["content-type"] == "image/png"
        assert got.headers["etag"] == f'"{world.sha256}-256"'
        assert got.headers["cache-control"].startswith("private")
        image = Image.open(io.BytesIO(got.content))
        assert max(image.size) == 256 and image.size == (256, 192)  # 800 x 600, scaled
        assert len(got.content) < 64 << 10
        again = alice.get(
            f"{API}/previews/proj/s017/{FILE}", headers={"If-None-Match": got.headers["etag"]}
        )
        assert again.status_code == 304 and again.content == b""
        # no preview for text
        assert alice.get(f"{API}/previews/proj/s017/raw/notes.txt").status_code == 404
        assert alice.get(f"{API}/previews/proj/s017/raw/overview.png").status_code == 200


def test_preview_answers_like_the_file_itself(world: World) -> None:
    """Another user without a grant gets 404: with or without the ETag, and exactly as
    for a file that does not exist."""
    url = f"{API}/previews/proj/s017/{FILE}"
    with world.client("carol") as carol, world.client(None) as anon:
        for client in (carol, anon):
            for headers in ({}, {"If-None-Match": f'"{world.sha256}-256"'}):
                answer = client.get(url, headers=headers)
                assert answer.status_code in (401, 404), answer.status_code
                assert answer.headers.get("etag") is None
                assert "image" not in answer.headers.get("content-type", "")
        missing = carol.get(f"{API}/previews/proj/s017/raw/no-such-file.tif")
        assert carol.get(url).status_code == missing.status_code == 404
        public = anon.get(f"{API}/previews/proj/open/raw/open.ome.tif")
        assert public.status_code == 200 and public.headers["cache-control"].startswith("public")


def test_file_page_shows_metadata_escaped_and_the_preview(world: World) -> None:
    with world.client("alice") as alice:
        page = alice.get(f"/p/proj/s017/-/{FILE}", headers={"Accept": "text/html"}).text
        assert 'id="file-metadata"' in page and 'id="file-preview-image"' in page
        assert f"/api/v1/previews/proj/s017/{FILE}" in page
        for text in ("OME-TIFF", "800 x 600 x 2 x 2 x 1", "63x NA 1.4 Oil", "Zeiss LSM 980",
                     "DAPI (405 nm/461 nm)", "2026-03-14T10:21:07"):  # fmt: skip
            assert text in page, text
        evil = alice.get("/p/proj/s017/-/raw/evil.ome.tif", headers={"Accept": "text/html"}).text
        assert "<script>x()" not in evil and "&lt;script&gt;x()&lt;/script&gt;" in evil
        text_page = alice.get("/p/proj/s017/-/raw/notes.txt", headers={"Accept": "text/html"})
        assert "text/plain" in text_page.text and 'id="file-preview"' not in text_page.text
        dataset = alice.get("/p/proj/s017", headers={"Accept": "text/html"}).text
        assert 'id="dataset-previews"' in dataset
        assert dataset.count('<img src="/api/v1/previews/proj/s017/') == 3  # 2 TIFFs, 1 PNG


# -- in a browser -------------------------------------------------------------------------------
def test_browser_file_page_shows_the_preview_and_metadata(world: World) -> None:
    from playwright.sync_api import expect, sync_playwright

    from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS, VIEWPORT

    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"no Chromium at {CHROMIUM}: install it with 'apt-get install chromium'")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(base_url=world.server.url, viewport=VIEWPORT)
            context.set_default_timeout(TIMEOUT_MS)
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto("/login")
            form = page.locator("form#login")
            form.locator("input[name=name]").fill("alice")
            form.locator("input[name=password]").fill(PASSWORD)
            form.locator("button#login-submit").click()
            expect(page.locator("#me")).to_have_text("alice")
            page.goto("/p/proj/s017")
            expect(page.locator("#dataset-previews img")).to_have_count(3)
            page.locator("#dataset-previews a", has_text="cell-01.ome.tif").click()
            image = page.locator("#file-preview-image")
            expect(image).to_be_visible()
            page.wait_for_function(
                "() => { const i = document.querySelector('#file-preview-image');"
                " return i && i.complete && i.naturalWidth > 0; }"
            )
            assert image.evaluate("i => [i.naturalWidth, i.naturalHeight]") == [256, 192]
            facts = page.locator("#metadata-facts")
            expect(facts).to_contain_text("63x NA 1.4 Oil")
            expect(facts).to_contain_text("DAPI")
            if os.environ.get("SCREENSHOT_DIR"):
                shot = Path(os.environ["SCREENSHOT_DIR"]) / "file-preview.png"
                page.screenshot(path=shot, full_page=True)
            assert not errors, errors
            context.close()
        finally:
            browser.close()


def test_dataset_page_shows_the_first_thumbnails_only(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from labkeep.web import ui_extract

    monkeypatch.setattr(ui_extract, "GALLERY", 2)
    with world.client("alice") as alice:
        page = alice.get("/p/proj/s017", headers={"Accept": "text/html"}).text
    assert page.count('<img src="/api/v1/previews/proj/s017/') == 2
    assert "The first 2 images in path order" in page
