"""Metadata and releases on the web, against a real server: the form (errors named, text
kept), "Cite as" and JSON-LD on landing pages, hostile text escaped, the API, a release
made from a page, and a public release readable by anyone."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from html import unescape

import httpx
import pytest
from datacite.schema45 import validator

from labkeep import Keep
from tests.conftest import unseal_tree
from tests.test_web_ui import PASSWORDS, csrf_of, sign_in
from tests.webserver import LiveServer

HOSTILE = '<script>alert("x")</script> Ядро & 細胞'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    base = tmp_path_factory.mktemp("webpub")
    keep = Keep.init(base / "keep")
    keep.config.durability = "file"
    for name in ("alice", "bob"):
        keep.add_user(name, password=PASSWORDS[name])
    keep.create_group("lab")
    keep.set_member("lab", "alice", "admin")
    keep.create_project("proj", title="Confocal 2026", group="lab")
    source = base / "src"
    source.mkdir()
    (source / "img 1.tif").write_bytes(b"pixels")
    keep.ingest(source, "proj/s017", seal=True)
    keep.set_metadata(
        "proj",
        {
            "creators": [
                {
                    "name": "Curie, Marie",
                    "orcid": "0000-0002-1825-0097",
                    "affiliation": "Institut du Radium",
                    "ror": "05dxps055",
                }
            ],
            "license": "CC-BY-4.0",
        },
    )
    with LiveServer(keep) as live:
        yield live
    keep.close()
    unseal_tree(base)


@pytest.fixture(scope="module")
def alice(server: LiveServer) -> Iterator[tuple[httpx.Client, str]]:
    with httpx.Client(base_url=server.url) as client:
        yield client, sign_in(client, "alice")


def json_ld(html: str) -> dict[str, object]:
    match = re.search(r'<script type="application/ld\+json">(.*?)</script>', html, re.S)
    assert match
    return json.loads(match.group(1))  # type: ignore[no-any-return]


def test_the_form_names_each_problem_and_keeps_what_was_typed(
    alice: tuple[httpx.Client, str],
) -> None:
    client, csrf = alice
    page = client.get("/meta/p/proj/s017")
    assert page.status_code == 200 and 'id="metadata-form"' in page.text
    # the project's creators are the placeholder: the dataset inherits them
    assert "Curie, Marie | 0000-0002-1825-0097" in unescape(page.text)
    typed = "Doe, Jane | 0000-0002-1825-0098"
    answer = client.post(
        "/meta/p/proj/s017",
        data={"csrf_token": csrf, "creators": typed, "license": "CC-BY-99", "title": HOSTILE},
    )
    assert answer.status_code == 422
    text = unescape(answer.text)
    assert "creators[1].orcid: '0000-0002-1825-0098' is not a valid ORCID iD" in text
    assert "license: 'CC-BY-99' is not an SPDX licence id" in text
    assert typed in text and "<script>alert" not in answer.text  # kept, and escaped
    assert client.get("/api/v1/datasets/proj/s017/metadata").json()["metadata"] == {}
    # too many parts on a line are named, not dropped silently
    answer = client.post(
        "/meta/p/proj/s017",
        data={"csrf_token": csrf, "dates": "2026-03-14 | Collected | surplus"},
    )
    assert answer.status_code == 422 and "extra" in answer.text


def test_saved_metadata_shows_as_citation_and_json_ld(alice: tuple[httpx.Client, str]) -> None:
    client, csrf = alice
    answer = client.post(
        "/meta/p/proj/s017",
        data={
            "csrf_token": csrf,
            "title": HOSTILE,
            "keywords": "nuclei, DAPI",
            "related": "10.1234/paper.5 | IsSupplementTo",
            "funding": "ERC | 0472cxd90 | 101010",
        },
    )
    assert answer.status_code == 303, answer.text
    page = client.get("/p/proj/s017")
    assert "<script>alert" not in page.text
    citation = unescape(re.search(r'id="citation">(.*?)</p>', page.text, re.S).group(1))  # type: ignore[union-attr]
    assert citation.startswith("Curie, Marie (20") and HOSTILE in citation
    assert citation.endswith("/p/proj/s017")
    ld = json_ld(page.text)
    assert ld["name"] == HOSTILE
    assert ld["creator"][0]["@id"] == "https://orcid.org/0000-0002-1825-0097"  # type: ignore[index]
    assert ld["license"] == "https://spdx.org/licenses/CC-BY-4.0.html"
    assert ld["keywords"] == ["nuclei", "DAPI"]
    assert ld["citation"] == ["https://doi.org/10.1234/paper.5"]
    api = client.get("/api/v1/datasets/proj/s017/metadata").json()
    assert not list(validator.iter_errors(api["datacite"]))
    assert api["datacite"]["fundingReferences"][0]["funderIdentifier"] == (
        "https://ror.org/0472cxd90"
    )


def test_the_api_puts_and_refuses(alice: tuple[httpx.Client, str], server: LiveServer) -> None:
    client, csrf = alice
    headers = {"X-CSRF-Token": csrf}
    good = client.put(
        "/api/v1/projects/proj/metadata",
        json={"creators": [{"name": "Lab, The"}], "license": "CC0-1.0"},
        headers=headers,
    )
    assert good.status_code == 200, good.text
    assert good.json()["datacite"]["rightsList"][0]["rightsIdentifier"] == "CC0-1.0"
    bad = client.put(  # values that do not pass: every problem named
        "/api/v1/projects/proj/metadata",
        content=json.dumps(
            {"creators": [{"name": "x" * 5000}, {"\udc00": "\ud800"}], "license": "nope"}
        ),
        headers={**headers, "Content-Type": "application/json"},
    )
    assert bad.status_code == 400, bad.text
    assert bad.json()["error"] == "metadata-invalid"
    problems = bad.json()["problems"]
    assert any(p.startswith("creators[1].name: is 5,000 characters long") for p in problems)
    assert any(p.startswith("license: 'nope'") for p in problems)
    assert any("unknown field" in p for p in problems)  # the surrogate key, named safely
    unknown = client.put("/api/v1/projects/proj/metadata", json={"colour": 1}, headers=headers)
    assert unknown.status_code == 422  # not a field of the form at all
    with httpx.Client(base_url=server.url) as bob:
        sign_in(bob, "bob")
        assert bob.get("/api/v1/datasets/proj/s017/metadata").status_code == 404
        assert bob.get("/meta/p/proj/s017").status_code == 404


def test_release_from_the_page_then_public(
    alice: tuple[httpx.Client, str], server: LiveServer
) -> None:
    client, csrf = alice
    page = client.get("/p/proj/s017")
    assert 'id="release-form"' in page.text
    answer = client.post(
        "/p/proj/s017/release",
        data={"csrf_token": csrf, "name": "s017-v1", "version": "2", "message": "paper"},
    )
    assert answer.status_code == 303 and answer.headers["location"].startswith("/p/proj/s017-v1")
    release = client.get("/p/proj/s017-v1")
    assert 'id="release-source"' in release.text and "proj/s017@2" in release.text
    assert 'id="release-form"' not in release.text  # a release is not released again
    assert "s017-v1" in client.get("/p/proj/s017").text  # the source lists its releases
    # the release is the version's content, sealed
    entries = client.get("/api/v1/datasets/proj/s017-v1/entries").json()
    items = entries["items"] if isinstance(entries, dict) else entries
    assert [e["path"] for e in items] == ["raw/raw/img 1.tif"]
    server.keep.set_public("proj/s017-v1", True)
    with httpx.Client(base_url=server.url) as anyone:
        landing = anyone.get("/p/proj/s017-v1")
        assert landing.status_code == 200 and 'id="citation"' in landing.text
        assert 'id="edit-metadata"' not in landing.text
        assert anyone.get("/api/v1/datasets/proj/s017-v1/metadata").status_code == 200
        assert anyone.get("/p/proj/s017").status_code == 404  # the source stays private
    assert csrf_of(client.get("/").text)
