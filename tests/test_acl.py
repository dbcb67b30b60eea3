"""``labkeep acl sync``: POSIX ACLs on a real ext4/tmpfs tree, checked with getfacl and
by two real OS accounts reading and writing (as themselves, through ``runuser``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from labkeep import Keep
from tests.conftest import unseal_tree

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(c) for c in ("setfacl", "getfacl", "runuser")),
    reason="needs root (to create OS accounts), setfacl/getfacl and runuser",
)


@dataclass
class Site:
    keep: Keep
    reader: str  # OS account of the labkeep user with read on p/shared
    writer: str  # OS account of the labkeep user with write on p/shared (and nothing else)

    def as_user(self, user: str, *cmd: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["runuser", "-u", user, "--", *cmd], capture_output=True, text=True, timeout=60
        )

    def dataset(self, name: str) -> Path:
        return self.keep.tree.dataset_dir("p", name)


def _cli(keep: Keep, *args: str) -> subprocess.CompletedProcess[str]:
    import sys

    import labkeep

    env = {k: v for k, v in os.environ.items() if not k.startswith("LABKEEP_")}
    env["PYTHONPATH"] = str(Path(labkeep.__file__).parents[1])  # this checkout's labkeep
    return subprocess.run(
        [sys.executable, "-m", "labkeep", *args, "--root", str(keep.root)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    tag = uuid.uuid4().hex[:6]
    reader, writer = f"lkr{tag}", f"lkw{tag}"
    for name in (reader, writer):
        subprocess.run(["useradd", "-M", "-s", "/bin/sh", name], check=True)
    # a folder the test accounts may pass through (pytest's own is private to root)
    top = Path(tempfile.mkdtemp(prefix="labkeep-acl-", dir="/tmp"))
    top.chmod(0o711)
    keep = None
    try:
        with pytest.MonkeyPatch.context() as mp:
            for name in [n for n in os.environ if n.startswith("LABKEEP_")]:
                mp.delenv(name)
            keep = Keep.init(top / "keep")
        (top / "keep").chmod(0o711)
        src = top / "src"
        (src / "sub").mkdir(parents=True)
        (src / "a.txt").write_bytes(b"alpha\n")
        (src / "sub" / "b.txt").write_bytes(b"beta\n")
        keep.create_project("p")
        keep.ingest(src, "p/shared")
        keep.ingest(src, "p/sealed")
        keep.seal("p/sealed")
        keep.ingest(src, "p/private")
        results = keep.tree.dataset_dir("p", "shared") / "results"
        results.mkdir()
        (results / "r.csv").write_bytes(b"x\n")
        keep.save("p/shared")
        # labkeep users named like their OS accounts, and one mapped in [acl] users
        keep.add_user(reader)
        keep.add_user("wendy")
        with open(keep.root / "labkeep.toml", "a", encoding="utf-8") as f:
            f.write(f'\n[acl]\nusers = {{wendy = "{writer}"}}\n')
        keep.grant(reader, "read", "p/shared")
        keep.grant(reader, "read", "p/sealed")
        keep.grant("wendy", "write", "p/shared")
        keep.grant("wendy", "write", "p/sealed")
        yield Site(keep, reader, writer)
    finally:
        if keep is not None:
            keep.close()
        unseal_tree(top)
        subprocess.run(["chattr", "-R", "-i", str(top)], capture_output=True)
        shutil.rmtree(top, ignore_errors=True)
        for name in (reader, writer):
            subprocess.run(["userdel", name], capture_output=True)


def _acl(path: Path) -> set[str]:
    out = subprocess.run(
        ["getfacl", "-p", "-E", str(path)], capture_output=True, text=True, check=True
    ).stdout
    return {line for line in out.splitlines() if line and not line.startswith("#")}


def test_sync_sets_acls_that_follow_the_grants(site: Site) -> None:
    dry = _cli(site.keep, "acl", "sync", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    planned = json.loads(dry.stdout)
    assert planned["dry_run"] is True and planned["changed"] > 0
    assert f"user:{site.reader}:r-x" not in _acl(site.dataset("shared"))  # nothing written

    done = _cli(site.keep, "acl", "sync", "--json")
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["changed"] == planned["changed"]
    assert {d["dataset"] for d in record["datasets"]} == {"p/shared", "p/sealed", "p/private"}

    shared = _acl(site.dataset("shared"))
    assert {f"user:{site.reader}:r-x", f"user:{site.writer}:rwx", "other::---"} <= shared
    assert f"default:user:{site.writer}:rwx" in shared
    assert site.dataset("shared").stat().st_mode & 0o1000  # sticky: raw/ stays put
    csv = _acl(site.dataset("shared") / "results" / "r.csv")
    assert {f"user:{site.reader}:r--", f"user:{site.writer}:rw-"} <= csv
    private = _acl(site.dataset("private"))
    assert not [line for line in private if site.reader in line or site.writer in line]
    project = _acl(site.keep.tree.base / "p")
    assert {f"user:{site.reader}:--x", f"user:{site.writer}:--x"} <= project

    # idempotent: a second run changes nothing
    again = json.loads(_cli(site.keep, "acl", "sync", "--json").stdout)
    assert again["changed"] == 0


def test_os_users_read_and_write_as_their_grants_say(site: Site) -> None:
    site.keep.acl_sync()
    shared, sealed, private = (site.dataset(n) for n in ("shared", "sealed", "private"))
    # the reader reads, never writes
    got = site.as_user(site.reader, "cat", str(shared / "raw" / "a.txt"))
    assert got.returncode == 0 and got.stdout == "alpha\n"
    assert site.as_user(site.reader, "cat", str(shared / "results" / "r.csv")).stdout == "x\n"
    assert site.as_user(site.reader, "ls", str(shared / "raw" / "sub")).stdout == "b.txt\n"
    assert site.as_user(site.reader, "touch", str(shared / "results" / "new")).returncode != 0
    assert site.as_user(site.reader, "sh", "-c", f"echo x >> {shared}/results/r.csv").returncode
    # nobody without a grant gets in, not even to list the names
    for user in (site.reader, site.writer):
        assert site.as_user(user, "cat", str(private / "raw" / "a.txt")).returncode != 0
        assert site.as_user(user, "ls", str(private)).returncode != 0
        assert site.as_user(user, "ls", str(site.keep.tree.base)).returncode != 0
        assert site.as_user(user, "ls", str(shared / ".labkeep")).returncode != 0
    # the writer (labkeep user "wendy", mapped in [acl]) writes the working tree
    assert (
        site.as_user(site.writer, "sh", "-c", f"echo y >> {shared}/results/r.csv").returncode == 0
    )
    new = shared / "results" / "from-smb.txt"
    assert site.as_user(site.writer, "sh", "-c", f"echo new > {new}").returncode == 0
    # ... files made there inherit the ACL: the reader reads them, labkeep saves them
    assert site.as_user(site.reader, "cat", str(new)).stdout == "new\n"
    report = site.keep.save("p/shared")
    assert report.info["version"] is not None
    assert "results/from-smb.txt" in {i["path"] for i in site.keep.ls("p/shared").items}
    # raw/ is read-only to everyone but labkeep, sealed or not; it cannot be moved away
    for ds in (shared, sealed):
        assert site.as_user(site.writer, "touch", str(ds / "raw" / "x")).returncode != 0
        assert site.as_user(site.writer, "sh", "-c", f"echo z >> {ds}/raw/a.txt").returncode
        assert site.as_user(site.writer, "rm", "-f", str(ds / "raw" / "a.txt")).returncode
        assert site.as_user(site.writer, "mv", str(ds / "raw"), str(ds / "gone")).returncode
        assert site.as_user(site.writer, "rm", "-f", str(ds / "MANIFEST.sha256")).returncode
    assert (shared / "raw" / "a.txt").read_bytes() == b"alpha\n"


def test_revoked_grant_is_taken_away(site: Site) -> None:
    site.keep.acl_sync()
    site.keep.revoke(site.reader, "p/sealed")
    site.keep.acl_sync("p")
    sealed = site.dataset("sealed")
    assert not [line for line in _acl(sealed) if site.reader in line]
    assert site.as_user(site.reader, "cat", str(sealed / "raw" / "a.txt")).returncode != 0
    site.keep.grant(site.reader, "read", "p/sealed")
    site.keep.acl_sync()
    assert site.as_user(site.reader, "cat", str(sealed / "raw" / "a.txt")).stdout == "alpha\n"


def test_only_site_admins(site: Site) -> None:
    from labkeep.errors import Forbidden

    other = site.keep.acting_as(site.keep.principal_for(site.reader))
    with pytest.raises(Forbidden):
        other.acl_sync()
