"""Share links over HTTP, against a real server: a download continued with Range
requests counts once against the link's limit, and a link stops with its creator's
access and works again when the access comes back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from labkeep import Keep
from tests.conftest import unseal_tree
from tests.webserver import LiveServer

DATA = bytes(range(256)) * 40  # 10,240 bytes


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Keep, httpx.Client]]:
    base = tmp_path_factory.mktemp("shares")
    keep = Keep.init(base / "keep")
    keep.config.durability = "file"
    keep.add_user("alice")
    keep.create_group("lab")
    keep.set_member("lab", "alice", "member")
    keep.create_project("proj", group="lab")
    source = base / "src"
    source.mkdir()
    (source / "big.bin").write_bytes(DATA)
    (source / "other.bin").write_bytes(DATA[::-1])
    keep.ingest(source, "proj/ds")
    try:
        with LiveServer(keep) as server, server.client(timeout=30) as client:
            yield keep, client
    finally:
        keep.close()
        unseal_tree(base)


def _alice(keep: Keep) -> Keep:
    return keep.acting_as(keep.principal_for("alice"))


def _get(client: httpx.Client, token: str, path: str, byte_range: str | None) -> httpx.Response:
    headers = {"Range": byte_range} if byte_range else {}
    return client.get(f"/s/{token}/file/proj/ds/raw/{path}", headers=headers)


def _downloads(keep: Keep, link_id: int) -> int:
    return {s.id: s for s in keep.list_shares("proj/ds")}[link_id].downloads


def test_a_download_in_ranges_counts_once(site: tuple[Keep, httpx.Client]) -> None:
    keep, client = site
    token, info = _alice(keep).create_share("proj/ds", max_downloads=1, expires="1h")
    got = b""
    for start in range(0, len(DATA), 2048):  # a download manager's pieces, in order
        answer = _get(client, token, "big.bin", f"bytes={start}-{start + 2047}")
        assert answer.status_code == 206, answer.text
        got += answer.content
    assert got == DATA
    assert _downloads(keep, info.id) == 1
    # the one download is used: what was begun can be resumed, nothing new can start
    assert _get(client, token, "big.bin", "bytes=5000-").content == DATA[5000:]
    for path, byte_range in (
        ("big.bin", None),
        ("big.bin", "bytes=0-"),
        ("big.bin", "bytes=-100"),
        ("other.bin", "bytes=100-"),
    ):
        refused = _get(client, token, path, byte_range)
        assert refused.status_code == 401, (path, byte_range)
    assert client.get(f"/s/{token}").status_code == 401
    assert client.get(f"/s/{token}", headers={"Range": "bytes=100-"}).status_code in (401, 403)
    assert client.get(f"/s/{token}/zip/proj/ds").status_code == 401
    assert _downloads(keep, info.id) == 1


def test_a_range_that_continues_nothing_is_a_download(site: tuple[Keep, httpx.Client]) -> None:
    keep, client = site
    token, info = _alice(keep).create_share("proj/ds", max_downloads=3, expires="1h")
    for _ in range(2):
        assert _get(client, token, "other.bin", "bytes=1-").status_code == 206
    assert _downloads(keep, info.id) == 1  # the first one started a download; then resumed
    assert _get(client, token, "big.bin", None).content == DATA
    assert _downloads(keep, info.id) == 2


def test_a_link_stops_and_comes_back_with_its_creators_access(
    site: tuple[Keep, httpx.Client],
) -> None:
    keep, client = site
    token, _ = _alice(keep).create_share("proj/ds", expires="1h")
    assert client.get(f"/s/{token}").status_code == 200
    answer = client.post("/api/v1/users/alice/disable", headers=_admin_headers(keep))
    assert answer.status_code == 200
    assert answer.json()["suspended_shares"] >= 1
    assert "made by alice" in answer.json()["message"]
    for url in (f"/s/{token}", f"/s/{token}/file/proj/ds/raw/big.bin", f"/s/{token}/zip/proj/ds"):
        assert client.get(url).status_code == 401, url
    keep.set_user_disabled("alice", False)
    assert client.get(f"/s/{token}").status_code == 200
    keep.set_member("lab", "alice", None)
    assert client.get(f"/s/{token}").status_code == 401
    keep.set_member("lab", "alice", "member")
    assert client.get(f"/s/{token}").status_code == 200


_TOKENS: dict[Path, str] = {}


def _admin_headers(keep: Keep) -> dict[str, str]:
    if keep.root not in _TOKENS:
        _TOKENS[keep.root], _ = keep.create_token("test", expires="1h")
    return {"Authorization": f"Bearer {_TOKENS[keep.root]}"}
