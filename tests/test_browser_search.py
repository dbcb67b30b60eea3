"""End-to-end in Chromium: a scientist annotates a dataset with key-values and a sample,
finds it with the search box of any page, opens the result; an outsider finds nothing.
(The browser and sessions are those of tests/test_browser.py.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from labkeep import Keep
from tests import test_browser
from tests.conftest import unseal_tree
from tests.test_browser import PASSWORDS, Session, screenshot, sign_in
from tests.webserver import LiveServer

# the browser, a fresh context per test, and the screenshot folder of test_browser.py
browser = test_browser.browser
session = test_browser.session
shots = test_browser.shots


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    base = tmp_path_factory.mktemp("browser-search")
    keep = Keep.init(base / "keep")
    keep.config.durability = "file"
    for name, password in PASSWORDS.items():
        keep.add_user(name, password=password)
    keep.create_group("lab")
    keep.set_member("lab", "alice", "member")
    keep.create_project("imaging", title="Confocal imaging", group="lab")
    source = base / "src"
    source.mkdir()
    (source / "cell-01.czi").write_bytes(b"czi")
    keep.ingest(source, "imaging/s017")
    alice = keep.acting_as(keep.principal_for("alice"))
    alice.add_sample("mouse-42", type="mouse", attrs={"genotype": "WT"})
    with LiveServer(keep) as live:
        yield live
    keep.close()
    unseal_tree(base)


def test_annotate_search_and_open_a_result(
    session: Session, server: LiveServer, shots: Path
) -> None:
    page = session.new_page()
    sign_in(page, "alice")
    page.goto("/p/imaging/s017")
    page.locator("#keyvalues summary").click()
    page.locator("#kv-pairs").fill("stain=DAPI\ninstrument=LSM 980\n")
    page.locator("#kv-submit").click()
    expect(page.locator("#notice")).to_have_text("Saved.")
    expect(page.locator("#keyvalues-list")).to_contain_text("LSM 980")
    page.locator("#keyvalues summary").click()
    page.locator("#link-sample-id").fill("mouse-42")
    page.locator("#link-sample-submit").click()
    expect(page.locator("#samples-list a.sample-link")).to_have_text("mouse-42")
    # the search box of any page
    page.goto("/")
    page.locator("#site-search-q").fill("mouse-42")
    page.locator("#site-search-submit").click()
    expect(page.locator("#results-title")).to_have_text("2 results")
    expect(page.locator("#search-results .hit-link")).to_have_text(
        ["sample:mouse-42", "imaging/s017"]
    )
    screenshot(page, shots, "search")
    page.locator("#search-results .hit-link", has_text="imaging/s017").click()
    expect(page.locator("#keyvalues-list")).to_contain_text("DAPI")
    # filters of the results page: the sample's page lists its datasets
    page.goto("/search?q=genotype:wt&kind=sample")
    page.locator("#search-results .hit-link").click()
    expect(page.locator("#sample-name")).to_have_text("mouse-42")
    expect(page.locator("#sample-datasets a")).to_have_text(["imaging/s017"])
    page.close()
    # someone of no group finds nothing, and is not told how much there is
    other = session.new_page()
    sign_in(other, "carol")
    other.goto("/search?q=mouse-42")
    expect(other.locator("#search-none")).to_have_text("Nothing found.")
    answer = other.goto("/samples/mouse-42")
    assert answer is not None and answer.status == 404
    other.close()
