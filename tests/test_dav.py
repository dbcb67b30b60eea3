"""WebDAV at /dav with a real client (rclone's webdav backend) against a real server.

Two people: alice may write p/open and read p/sealed; bob may only read p/open; neither
may see p/private. Every write is checked in the catalog (a version by its author), every
refusal by what did not change.
"""

from __future__ import annotations

import http.client
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from labkeep import Keep
from tests.conftest import unseal_tree
from tests.webserver import LiveServer

pytestmark = pytest.mark.skipif(shutil.which("rclone") is None, reason="needs rclone")

ALICE_PW = "alice's long passphrase 1"
BOB_PW = "bob's long passphrase 2"
CANARY = b"CANARY-DAV-5e1f: must never leave its folder\n"
SECRET = b"PRIVATE-7a2c: p/private only\n"


@dataclass
class Site:
    tmp: Path
    keep: Keep
    server: LiveServer
    alice_token: str
    bob_token: str
    alice_read_token: str

    def rclone(self, user: str, password: str, *args: str, check: bool = True) -> str:
        obscured = subprocess.run(
            ["rclone", "obscure", password], capture_output=True, text=True, check=True
        ).stdout.strip()
        env = {
            "PATH": os.environ["PATH"],
            "HOME": str(self.tmp),
            "RCLONE_CONFIG": str(self.tmp / "rclone.conf"),
            "RCLONE_CONFIG_DAV_TYPE": "webdav",
            "RCLONE_CONFIG_DAV_URL": self.server.url + "/dav",
            "RCLONE_CONFIG_DAV_VENDOR": "other",
            "RCLONE_CONFIG_DAV_USER": user,
            "RCLONE_CONFIG_DAV_PASS": obscured,
            "RCLONE_LOW_LEVEL_RETRIES": "1",
            "RCLONE_RETRIES": "1",
        }
        done = subprocess.run(
            ["rclone", *args], capture_output=True, text=True, env=env, timeout=120
        )
        if check:
            assert done.returncode == 0, done.stderr
        else:
            assert done.returncode != 0, done.stdout
        return done.stdout

    def raw_request(
        self, method: str, target: str, *, auth: str | None = None, body: bytes | None = None
    ) -> tuple[int, bytes]:
        """Send *target* byte for byte (httpx would normalise ``..`` away)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=60)
        try:
            conn.putrequest(method, target, skip_accept_encoding=True)
            if auth is not None:
                conn.putheader("Authorization", auth)
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()


def _basic(user: str, password: str) -> str:
    import base64

    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("dav")
    with pytest.MonkeyPatch.context() as mp:
        for name in [n for n in os.environ if n.startswith("LABKEEP_")]:
            mp.delenv(name)
        keep = Keep.init(tmp / "keep")
    try:
        src = tmp / "src"
        (src / "sub").mkdir(parents=True)
        (src / "a.txt").write_bytes(b"alpha\n")
        (src / "sub" / "b.txt").write_bytes(b"beta\n")
        keep.create_project("p")
        keep.ingest(src, "p/open")
        keep.ingest(src, "p/sealed")
        keep.seal("p/sealed")
        private = tmp / "private"
        private.mkdir()
        (private / "secret.txt").write_bytes(SECRET)
        keep.ingest(private, "p/private")
        keep.add_user("alice", password=ALICE_PW)
        keep.add_user("bob", password=BOB_PW)
        keep.grant("alice", "write", "p/open")
        keep.grant("alice", "read", "p/sealed")
        keep.grant("bob", "read", "p/open")
        alice = keep.acting_as(keep.principal_for("alice"))
        alice_token, _ = alice.create_token("dav")
        alice_read_token, _ = alice.create_token("dav-read", read_only=True)
        bob_token, _ = keep.acting_as(keep.principal_for("bob")).create_token("dav")
        for canary in (tmp / "canary.txt", keep.root / "canary.txt", keep.tree.base / "c.txt"):
            canary.write_bytes(CANARY)
        with LiveServer(keep) as server:
            yield Site(tmp, keep, server, alice_token, bob_token, alice_read_token)
    finally:
        keep.close()
        unseal_tree(tmp)


def _paths(keep: Keep, address: str) -> set[str]:
    return {item["path"] for item in keep.ls(address).items}


def test_list_shows_exactly_the_grants(site: Site) -> None:
    alice = site.rclone("alice", ALICE_PW, "lsf", "-R", "dav:").split()
    assert "p/open/raw/a.txt" in alice and "p/sealed/raw/sub/b.txt" in alice
    assert not [p for p in alice if p.startswith("p/private")]
    bob = site.rclone("bob", BOB_PW, "lsf", "-R", "dav:").split()
    assert "p/open/raw/sub/b.txt" in bob
    assert not [p for p in bob if p.startswith(("p/sealed", "p/private"))]
    # what one may not see does not exist: the same answer as a name that never existed
    site.rclone("bob", BOB_PW, "lsf", "dav:p/sealed", check=False)
    status, _ = site.raw_request("PROPFIND", "/dav/p/private/", auth=_basic("bob", BOB_PW))
    missing, _ = site.raw_request("PROPFIND", "/dav/p/nothing/", auth=_basic("bob", BOB_PW))
    assert status == missing == 404


def test_read_streams_the_catalogued_bytes(site: Site) -> None:
    assert site.rclone("bob", BOB_PW, "cat", "dav:p/open/raw/sub/b.txt") == "beta\n"
    out = site.tmp / "got.txt"
    site.rclone("alice", ALICE_PW, "copyto", "dav:p/sealed/raw/a.txt", str(out))
    assert out.read_bytes() == b"alpha\n"
    status, body = site.raw_request(
        "GET", "/dav/p/private/raw/secret.txt", auth=_basic("alice", ALICE_PW)
    )
    assert status == 404 and SECRET not in body


def test_write_into_open_dataset_lands_as_versions(site: Site) -> None:
    new = site.tmp / "result.csv"
    new.write_bytes(b"x,y\n1,2\n")
    before = len(site.keep.versions("p/open"))
    site.rclone("alice", ALICE_PW, "copyto", str(new), "dav:p/open/results/result.csv")
    site.rclone("alice", ALICE_PW, "copyto", str(new), "dav:p/open/raw/day2/result.csv")
    versions = site.keep.versions("p/open")
    assert len(versions) == before + 2
    assert [v["author"] for v in versions[-2:]] == ["alice", "alice"]
    assert [v["kind"] for v in versions[-2:]] == ["save", "ingest"]
    assert {"results/result.csv", "raw/day2/result.csv"} <= _paths(site.keep, "p/open")
    # the manifest the keep wrote lists them, so sha256sum -c works on the tree
    manifest = (site.keep.tree.dataset_dir("p", "open") / "MANIFEST.sha256").read_text()
    assert "results/result.csv" in manifest and "raw/day2/result.csv" in manifest
    # and they read back through the drive
    assert site.rclone("bob", BOB_PW, "cat", "dav:p/open/results/result.csv") == "x,y\n1,2\n"
    # replacing a working-tree file is a new version; the old content stays retrievable
    # (a different size: rclone compares sizes only where it cannot set modification times)
    new.write_bytes(b"x,y\n3,4\n5,6\n")
    site.rclone("alice", ALICE_PW, "copyto", str(new), "dav:p/open/results/result.csv")
    got = site.rclone("alice", ALICE_PW, "cat", "dav:p/open/results/result.csv")
    assert got == "x,y\n3,4\n5,6\n"
    old = site.keep.versions("p/open")[-2]["version"]
    _info, handle = site.keep.open_file(f"p/open/results/result.csv@{old}")
    with handle:
        assert handle.read() == b"x,y\n1,2\n"
    # removing one is saved too
    site.rclone("alice", ALICE_PW, "deletefile", "dav:p/open/results/result.csv")
    assert "results/result.csv" not in _paths(site.keep, "p/open")


def test_raw_is_append_only_and_sealed_raw_refused(site: Site) -> None:
    new = site.tmp / "evil.txt"
    new.write_bytes(b"replaced\n")
    sealed_versions = len(site.keep.versions("p/sealed"))
    open_versions = len(site.keep.versions("p/open"))
    # sealed raw/: refused (alice may only read p/sealed; the seal refuses everyone)
    site.rclone("alice", ALICE_PW, "copyto", str(new), "dav:p/sealed/raw/new.txt", check=False)
    status, _ = site.raw_request(
        "PUT", "/dav/p/sealed/raw/new.txt", auth=_basic("alice", ALICE_PW), body=b"x"
    )
    assert status == 403
    admin = f"Bearer {site.keep.create_token('admin')[0]}"
    status, _ = site.raw_request("PUT", "/dav/p/sealed/raw/new.txt", auth=admin, body=b"x")
    assert status == 403
    status, _ = site.raw_request("PUT", "/dav/p/sealed/raw/a.txt", auth=admin, body=b"x")
    assert status == 403
    # raw/ of an open dataset takes new files, never replaces nor removes one
    status, _ = site.raw_request(
        "PUT", "/dav/p/open/raw/a.txt", auth=_basic("alice", ALICE_PW), body=b"changed\n"
    )
    assert status == 403
    status, _ = site.raw_request("DELETE", "/dav/p/open/raw/a.txt", auth=_basic("alice", ALICE_PW))
    assert status == 403
    assert site.rclone("alice", ALICE_PW, "cat", "dav:p/open/raw/a.txt") == "alpha\n"
    assert len(site.keep.versions("p/sealed")) == sealed_versions
    assert len(site.keep.versions("p/open")) == open_versions
    assert "raw/new.txt" not in _paths(site.keep, "p/sealed")
    assert (site.keep.tree.dataset_dir("p", "open") / "raw" / "a.txt").read_bytes() == b"alpha\n"


def test_read_grants_and_read_only_tokens_cannot_write(site: Site) -> None:
    new = site.tmp / "bob.txt"
    new.write_bytes(b"bob was here\n")
    before = len(site.keep.versions("p/open"))
    site.rclone("bob", BOB_PW, "copyto", str(new), "dav:p/open/results/bob.txt", check=False)
    site.rclone("bob", BOB_PW, "copyto", str(new), "dav:p/open/raw/bob.txt", check=False)
    status, _ = site.raw_request(
        "PUT", "/dav/p/open/results/ro.txt", auth=f"Bearer {site.alice_read_token}", body=b"x"
    )
    assert status == 403
    status, _ = site.raw_request("MKCOL", "/dav/p/open/results/bobdir", auth=_basic("bob", BOB_PW))
    assert status == 403
    assert len(site.keep.versions("p/open")) == before
    assert not {"results/bob.txt", "raw/bob.txt", "results/ro.txt"} & _paths(site.keep, "p/open")
    assert not (site.keep.tree.dataset_dir("p", "open") / "results" / "bob.txt").exists()


def test_tokens_and_failed_sign_ins(site: Site) -> None:
    status, body = site.raw_request("PROPFIND", "/dav/p/", auth=f"Bearer {site.bob_token}")
    assert status == 207 and b"/dav/p/open/" in body and b"sealed" not in body
    # an API token as the Basic password (clients that only know user and password)
    status, _ = site.raw_request("PROPFIND", "/dav/p/", auth=_basic("bob", site.bob_token))
    assert status == 207
    status, _ = site.raw_request("PROPFIND", "/dav/p/")
    assert status == 401
    status, _ = site.raw_request("PROPFIND", "/dav/p/", auth=_basic("bob", "wrong"))
    assert status == 401
    status, _ = site.raw_request("PROPFIND", "/dav/p/", auth="Bearer lkt_not-a-token")
    assert status == 401
    # each failure is an audit event, as on the sign-in page
    failures = [e for e in site.keep.events() if e["action"] == "login-failed"]
    assert failures and failures[-1]["target"] == "user:bob"


@pytest.mark.parametrize(
    "target",
    [
        "/dav/p/open/../private/raw/secret.txt",
        "/dav/p/open/raw/../../private/raw/secret.txt",
        "/dav/p/open/%2e%2e/private/raw/secret.txt",
        "/dav/../canary.txt",
        "/dav/p/open/raw/%2e%2e/%2e%2e/%2e%2e/%2e%2e/canary.txt",
        "/dav/p/open/.labkeep/lock",
        "/dav/p/open/raw/..%2f..%2f..%2fcanary.txt",
        "/dav/p/open/raw/%00",
    ],
)
def test_traversal_refused(site: Site, target: str) -> None:
    for method in ("GET", "PROPFIND"):
        status, body = site.raw_request(method, target, auth=_basic("bob", BOB_PW))
        assert status in (400, 403, 404), (method, status)
        assert CANARY not in body and SECRET not in body
    status, _ = site.raw_request("PUT", target, auth=_basic("alice", ALICE_PW), body=CANARY)
    assert status in (400, 403, 404, 409)
    assert "raw/secret.txt" in _paths(site.keep, "p/private")
    written = [
        p for p in site.keep.tree.base.rglob("*") if p.is_file() and p.read_bytes() == CANARY
    ]
    assert written == [site.keep.tree.base / "c.txt"]


def test_too_large_refused_before_reading(site: Site) -> None:
    web = site.keep.config.web
    object.__setattr__(web, "max_upload_bytes", 1000)  # (frozen: the server reads it live)
    try:
        # into a folder that exists and one that does not (WsgiDAV would answer 409 for
        # it): the size is refused first either way
        statuses = [
            site.raw_request(
                "PUT", f"/dav/p/open/{folder}/big.bin", auth=_basic("alice", ALICE_PW),
                body=b"x" * 5000,
            )[0]
            for folder in ("raw", "no-such-folder")
        ]  # fmt: skip
    finally:
        object.__setattr__(web, "max_upload_bytes", 2 << 30)
    assert statuses == [413, 413]
    assert not list(site.keep.tree.base.rglob("big.bin"))
    assert not list((site.keep.root / "uploads").glob("*"))
