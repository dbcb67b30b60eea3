"""A scientist's laptop against a facility keep: `labkeep serve` on one side, `labkeep
login URL`, ls, download (files, folders, datasets), verify, whoami and share links on the
other, real HTTP."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from labkeep import Keep
from labkeep.ops.worker import JobWorker
from tests.conftest import make_files
from tests.webserver import ServeProcess

PASSWORD = "alice's long password"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path, dict[str, bytes]]]:
    root = tmp_path / "facility"
    with Keep.init(root) as keep:
        keep.add_user("alice", password=PASSWORD)
        keep.create_project("proj")
        files = make_files(tmp_path / "buffer", 8, min_size=1)
        keep.ingest(tmp_path / "buffer", "proj/s001")
        keep.verify("proj/s001")
        keep.grant("alice", "read", "proj")
    with ServeProcess(root, tmp_path / "serve.log") as served:
        yield served.url, root, files


def laptop(
    tmp_path: Path, *args: str, stdin: str | None = None, check: int = 0
) -> subprocess.CompletedProcess[str]:
    home = tmp_path / "laptop"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABKEEP_")}
    env["XDG_CONFIG_HOME"] = str(home / "config")
    result = subprocess.run(
        [sys.executable, "-m", "labkeep", *args],
        cwd=home,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == check, (result.returncode, result.stdout, result.stderr)
    return result


def test_laptop_against_a_server(
    server: tuple[str, Path, dict[str, bytes]], tmp_path: Path
) -> None:
    url, root, files = server
    # a wrong password is refused, with nothing saved
    bad = laptop(
        tmp_path,
        "login",
        url,
        "--name",
        "alice",
        "--password-stdin",
        stdin="wrong password\n",
        check=2,
    )
    assert "wrong user name or password" in bad.stderr
    assert not (tmp_path / "laptop/config/labkeep/login.json").exists()
    done = laptop(
        tmp_path, "login", url, "--name", "alice", "--password-stdin", stdin=PASSWORD + "\n"
    )
    assert "signed in" in done.stdout and PASSWORD not in done.stdout + done.stderr
    saved = tmp_path / "laptop/config/labkeep/login.json"
    assert saved.stat().st_mode & 0o777 == 0o600
    # ls: projects, datasets, files
    assert json.loads(laptop(tmp_path, "ls", "--json").stdout.splitlines()[0])["project"] == "proj"
    entries = [
        json.loads(line)
        for line in laptop(tmp_path, "ls", "proj/s001", "--json").stdout.splitlines()
    ]
    assert {e["path"] for e in entries} == {f"raw/{rel}" for rel in files}
    # download, checked against its SHA-256
    rel = sorted(files)[0]
    laptop(tmp_path, "download", f"proj/s001/raw/{rel}", "-o", "copy.bin")
    copied = (tmp_path / "laptop/copy.bin").read_bytes()
    assert copied == files[rel]
    assert hashlib.sha256(copied).hexdigest() in {e["sha256"] for e in entries}
    # verification status
    status = json.loads(laptop(tmp_path, "verify", "--status", "proj/s001", "--json").stdout)
    assert status["ok"] and status["files"] == {"ok": len(files)}
    # alice may read but not share; once she may write, she can
    refused = laptop(tmp_path, "share", "create", "proj/s001", "--json", check=2)
    assert "may not" in refused.stderr
    with Keep.open(root) as keep:
        keep.grant("alice", "write", "proj")
    link = json.loads(laptop(tmp_path, "share", "create", "proj/s001", "--json").stdout)
    assert link["url"].startswith(url + "/s/lks_")
    # the link works with no account at all
    page = httpx.get(link["url"], timeout=10)
    assert page.status_code == 200
    # share links: listed and revoked remotely, as share create suggested
    assert (
        f"labkeep share revoke {link['id'] + 1}"
        in laptop(tmp_path, "share", "create", "proj/s001").stderr
    )
    listed = [json.loads(line) for line in laptop(tmp_path, "share", "list", "--json").stdout
              .splitlines()]  # fmt: skip
    assert {entry["id"] for entry in listed} >= {link["id"]}
    assert "token" not in listed[0]
    revoked = json.loads(laptop(tmp_path, "share", "revoke", str(link["id"]), "--json").stdout)
    assert revoked["revoked_at"] and httpx.get(link["url"], timeout=10).status_code != 200
    # whoami on the server
    assert laptop(tmp_path, "whoami").stdout.startswith("alice")
    # commands that need the keep's machine say so
    refused = laptop(tmp_path, "seal", "proj/s001", check=2)
    assert "needs a local keep" in refused.stderr and url in refused.stderr
    laptop(tmp_path, "logout")
    assert not saved.exists()


def test_laptop_downloads_and_verifies_whole_datasets(
    server: tuple[str, Path, dict[str, bytes]], tmp_path: Path
) -> None:
    url, root, files = server
    laptop(tmp_path, "login", url, "--name", "alice", "--password-stdin", stdin=PASSWORD + "\n")
    home = tmp_path / "laptop"
    # a whole dataset: into ./s001 (cp -r), every file checked
    got = laptop(tmp_path, "download", "proj/s001", "--json")
    summary = json.loads(got.stdout.splitlines()[-1])
    assert summary["summary"] == {"ok": len(files)}
    assert {rel: (home / "s001/raw" / rel).read_bytes() for rel in files} == files
    # again: everything is already there (resumable)
    again = json.loads(laptop(tmp_path, "download", "proj/s001", "--json").stdout.splitlines()[-1])
    assert again["summary"] == {"notneeded": len(files)}
    # one folder, into a new folder of another name
    folder = sorted({rel.split("/")[0] for rel in files if "/" in rel})[0]
    laptop(tmp_path, "download", f"proj/s001/raw/{folder}", "-o", "only-that")
    inside = {rel[len(folder) + 1 :]: data for rel, data in files.items()
              if rel.startswith(folder + "/")}  # fmt: skip
    assert {p.relative_to(home / "only-that").as_posix(): p.read_bytes()
            for p in (home / "only-that").rglob("*") if p.is_file()} == inside  # fmt: skip
    # a damaged download is not kept: corrupt a file on the server, download it again
    rel = sorted(files)[0]
    victim = root / "data/proj/s001/raw" / rel
    victim.write_bytes(bytes([victim.read_bytes()[0] ^ 1]) + victim.read_bytes()[1:])
    bad = laptop(tmp_path, "download", f"proj/s001/raw/{rel}", "-o", "fresh.bin", check=1)
    assert "does not match its SHA-256" in bad.stdout and not (home / "fresh.bin").exists()
    # verify runs on the server and reports to the laptop's stdout
    with Keep.open(root) as keep:
        keep.grant("alice", "write", "proj")
    # (the server queues verify jobs: a worker on the server's side runs them)
    with Keep.open(root) as keep:
        worker = JobWorker(keep, log=io.StringIO(), schedule=False, poll_seconds=0.2)
        thread = threading.Thread(target=worker.run)
        thread.start()
        try:
            report = laptop(tmp_path, "verify", "proj/s001", check=1)
            assert "MODIFIED" in report.stdout and rel in report.stdout
            project = laptop(tmp_path, "verify", "proj", check=1).stdout.splitlines()
            assert [line.split()[1] for line in project if line.startswith("MODIFIED")] == [
                f"proj/s001/raw/{rel}"
            ]
        finally:
            worker.stop()
            thread.join(30)
    # the server going away is an environment error (exit 3), not a traceback
    (home / "config/labkeep/login.json").write_text(
        json.dumps({"url": "http://127.0.0.1:9", "token": "lk_x", "user": "alice"})
    )
    down = laptop(tmp_path, "ls", "proj", check=3)
    assert "cannot reach the labkeep server" in down.stderr and "Traceback" not in down.stderr
