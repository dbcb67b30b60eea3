"""When the environment breaks (catalog down or full, disk full, a bug), users get a typed
error naming what failed and what to do, exit code 3 (70 for a bug), a last ``--json``
record, and never a traceback; transient catalog outages are retried."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from labkeep import Keep
from tests.conftest import fill_disk, make_files, unseal_tree
from tests.pgserver import PostgresServer
from tests.webserver import LiveServer

ADDRESS = "proj/s001"

#: runs the labkeep CLI with one fault injected before the Nth catalog commit of a batch
#: (a moment when no transaction is open): the catalog server is stopped, and started
#: again after DOWN seconds unless DOWN is negative
STOP_BEFORE_COMMIT = """
import json, os, subprocess, sys, threading, time
from labkeep.cli import main
from labkeep.ops import ingest

calls = 0
commit = ingest._IngestRun._commit

def stop_catalog_then_commit(self, placed, rows):
    global calls
    calls += 1
    if calls == int(os.environ["FAULT_AT"]):
        subprocess.run(json.loads(os.environ["FAULT_STOP"]), check=True, capture_output=True)
        down = float(os.environ["FAULT_DOWN"])
        if down >= 0:
            def restart():
                time.sleep(down)
                subprocess.run(json.loads(os.environ["FAULT_START"]), check=True,
                               capture_output=True)
            threading.Thread(target=restart).start()
    return commit(self, placed, rows)

ingest._IngestRun._commit = stop_catalog_then_commit
sys.argv[0] = "labkeep"
main()
"""


def run_cli(*args: str, env: dict[str, str] | None = None, code: str | None = None,
            timeout: float = 180) -> subprocess.CompletedProcess[str]:  # fmt: skip
    command = [sys.executable, "-c", code] if code else [sys.executable, "-m", "labkeep"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})  # fmt: skip


def records(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def assert_no_traceback(*texts: str) -> None:
    for text in texts:
        assert "Traceback" not in text, text
        assert 'File "' not in text, text


def set_config(root: Path, **values: str) -> None:
    """Change ``key = value`` lines of the keep's labkeep.toml."""
    config = root / "labkeep.toml"
    lines = config.read_text().splitlines()
    for key, value in values.items():
        lines = [f"{key} = {value}" if line.split(" = ")[0] == key else line for line in lines]
    config.write_text("\n".join(lines) + "\n")


@pytest.fixture
def pg_keep(tmp_path: Path, pg_server: PostgresServer) -> Iterator[Path]:
    """A keep on the throwaway PostgreSQL, whose server the test may stop; it is always
    running again when the test ends."""
    root = tmp_path / "keep"
    with Keep.init(root, catalog_url=pg_server.create_database()) as keep:
        keep.create_project("proj")
    set_config(root, batch_files="4")
    try:
        yield root
    finally:
        probe = subprocess.run(
            ["pg_isready", "-h", "127.0.0.1", "-p", str(pg_server.port)], capture_output=True
        )
        if probe.returncode != 0:
            subprocess.run(pg_server.start_command(), check=True, capture_output=True)
        unseal_tree(root)


def fault_env(pg: PostgresServer, at: int, down: float) -> dict[str, str]:
    return {
        "FAULT_AT": str(at),
        "FAULT_DOWN": str(down),
        "FAULT_STOP": json.dumps(pg.stop_command()),
        "FAULT_START": json.dumps(pg.start_command()),
    }


def listed(root: Path) -> dict[str, str]:
    with Keep.open(root) as keep:
        return {e["path"]: e["sha256"] for e in keep.ls(ADDRESS).items}


def expected(files: dict[str, bytes]) -> dict[str, str]:
    return {f"raw/{rel}": hashlib.sha256(data).hexdigest() for rel, data in files.items()}


@pytest.mark.postgresql
def test_a_catalog_blip_mid_ingest_is_retried(
    tmp_path: Path, pg_keep: Path, pg_server: PostgresServer
) -> None:
    """PostgreSQL goes away for 0.4 s between two batches: the ingest waits for it and
    finishes as if nothing happened."""
    src = tmp_path / "buffer"
    files = make_files(src, 30, max_size=2000)
    result = run_cli("ingest", str(src), ADDRESS, "--root", str(pg_keep), "--json",
                     code=STOP_BEFORE_COMMIT, env=fault_env(pg_server, at=3, down=0.4))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert_no_traceback(result.stderr)
    assert "retrying" in result.stderr  # the user saw why it paused
    assert records(result)[-1]["summary"] == {"ok": len(files)}
    assert listed(pg_keep) == expected(files)


@pytest.mark.postgresql
def test_a_catalog_outage_mid_ingest_is_a_clear_error_and_resumes(
    tmp_path: Path, pg_keep: Path, pg_server: PostgresServer
) -> None:
    src = tmp_path / "buffer"
    files = make_files(src, 30, max_size=2000)
    set_config(pg_keep, retry_seconds="1")
    result = run_cli("ingest", str(src), ADDRESS, "--root", str(pg_keep), "--json",
                     code=STOP_BEFORE_COMMIT, env=fault_env(pg_server, at=3, down=-1))  # fmt: skip
    assert result.returncode == 3, result.stderr
    assert_no_traceback(result.stderr, result.stdout)
    last = records(result)[-1]
    assert last["status"] == "error" and last["error"] == "catalog-unavailable", last
    assert "cannot reach the catalog" in last["message"]
    assert "run the same command again" in last["hint"]
    assert "cannot reach the catalog" in result.stderr
    # what was committed before the outage was reported as done, and nothing else
    done = {r["path"] for r in records(result) if r.get("status") == "ok"}
    assert 0 < len(done) < len(files)

    subprocess.run(pg_server.start_command(), check=True, capture_output=True)
    again = run_cli("ingest", str(src), ADDRESS, "--root", str(pg_keep), "--json")
    assert again.returncode == 0, again.stderr
    assert listed(pg_keep) == expected(files)
    assert list((pg_keep / "data" / ADDRESS / ".labkeep" / "partial").iterdir()) == []
    verify = run_cli("verify", ADDRESS, "--root", str(pg_keep))
    assert verify.returncode == 0, verify.stdout + verify.stderr


@pytest.mark.postgresql
def test_commands_and_web_answer_clearly_while_the_catalog_is_down(
    pg_keep: Path, pg_server: PostgresServer
) -> None:
    set_config(pg_keep, retry_seconds="0")
    keep = Keep.open(pg_keep)
    try:
        with LiveServer(keep) as server, server.client() as client:
            assert client.get("/healthz").json() == {"status": "ok"}
            subprocess.run(pg_server.stop_command(), check=True, capture_output=True)
            try:
                health = client.get("/healthz")
                assert health.status_code == 503
                assert health.json()["error"] == "catalog-unavailable"
                assert "cannot reach the catalog" in health.json()["message"]
                api = client.get("/api/v1/projects")
                assert api.status_code == 503 and api.headers["retry-after"]
                assert api.json()["error"] == "catalog-unavailable"
                page = client.get("/p/proj", headers={"accept": "text/html"})
                assert page.status_code == 503
                assert "text/html" in page.headers["content-type"]
                for answer in (health, api, page):
                    assert_no_traceback(answer.text)
                    assert "Internal Server Error" not in answer.text
                cli = run_cli("ls", "--root", str(pg_keep), "--json")
                assert cli.returncode == 3
                assert_no_traceback(cli.stderr)
                assert records(cli)[-1]["error"] == "catalog-unavailable"
            finally:
                subprocess.run(pg_server.start_command(), check=True, capture_output=True)
            assert client.get("/healthz").status_code == 200
            assert client.get("/api/v1/projects").status_code == 200
    finally:
        keep.close()


def test_the_catalogs_disk_full_mid_ingest(
    tmp_path: Path, small_disk: Callable[[int], Path]
) -> None:
    """The SQLite catalog lives on a disk that fills up during an ingest: exit 3 with a
    message naming the catalog's disk; once space is freed the same command finishes."""
    disk = small_disk(8192)
    root = tmp_path / "keep"
    with Keep.init(root, catalog_url=f"sqlite:///{disk}/catalog.db") as keep:
        keep.create_project("proj")
    set_config(root, batch_files="50")
    src = tmp_path / "buffer"
    src.mkdir()
    files = {f"{'long-instrument-file-name-' * 6}{i:05d}.tif": b"%d" % i for i in range(1500)}
    for name, data in files.items():
        (src / name).write_bytes(data)
    filler = fill_disk(disk, leave=64 << 10)
    result = run_cli("ingest", str(src), ADDRESS, "--root", str(root), "--json")
    assert result.returncode == 3, result.stderr[-3000:]
    assert_no_traceback(result.stderr)
    last = records(result)[-1]
    assert last["error"] == "catalog-full", last
    assert "disk is full" in result.stderr and "free space" in result.stderr

    filler.unlink()
    again = run_cli("ingest", str(src), ADDRESS, "--root", str(root), "--json")
    assert again.returncode == 0, again.stderr[-3000:]
    assert listed(root) == expected(files)


def test_verify_cannot_write_its_log_on_a_full_disk(
    tmp_path: Path, small_disk: Callable[[int], Path]
) -> None:
    root = tmp_path / "keep"
    src = tmp_path / "buffer"
    make_files(src, 5)
    with Keep.init(root) as keep:
        keep.create_project("proj")
        keep.ingest(src, ADDRESS)
    disk = small_disk(256)
    fill_disk(disk)
    result = run_cli("verify", ADDRESS, "--root", str(root), "--log-dir", str(disk), "--json")
    assert result.returncode == 3, result.stderr
    assert_no_traceback(result.stderr)
    last = records(result)[-1]
    assert last["error"] == "storage" and "no space left" in last["message"], last
    assert str(disk) in last["message"]  # names what could not be written


BROKEN_LS = """
import sys
from labkeep.cli import main
from labkeep.keep import Keep

def broken(self, *args, **kwargs):
    raise RuntimeError("boom: a bug")

Keep.ls = broken
sys.argv[0] = "labkeep"
main()
"""


def test_a_bug_shows_a_reference_not_a_traceback(tmp_path: Path) -> None:
    root = tmp_path / "keep"
    Keep.init(root).close()
    state = tmp_path / "state"
    for json_out in ([], ["--json"]):
        result = run_cli("ls", "--root", str(root), *json_out, code=BROKEN_LS,
                         env={"XDG_STATE_HOME": str(state)})  # fmt: skip
        assert result.returncode == 70, result.stderr
        assert_no_traceback(result.stderr, result.stdout)
        assert "internal error (reference" in result.stderr
        reference = result.stderr.split("(reference ")[1].split(")")[0]
        log = (state / "labkeep" / "errors.log").read_text()
        assert f"reference {reference}" in log
        assert "RuntimeError: boom: a bug" in log and "Traceback" in log
        if json_out:
            assert records(result)[-1] == {
                "status": "error",
                "error": "internal",
                "message": f"internal error (reference {reference})",
                "hint": records(result)[-1]["hint"],
                "reference": reference,
            }


def test_a_bug_in_the_web_server_answers_a_reference(
    keep: Keep, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(self: Keep) -> None:
        raise RuntimeError("boom: a bug")

    monkeypatch.setattr(Keep, "list_projects", broken)
    with (
        caplog.at_level(logging.ERROR, logger="labkeep.internal"),
        LiveServer(keep) as server,
        server.client() as client,
    ):
        api = client.get("/api/v1/projects")
        page = client.get("/", headers={"accept": "text/html"})
    assert api.status_code == 500 and page.status_code == 500
    assert api.json()["error"] == "internal"
    reference = api.json()["reference"]
    assert reference in api.json()["message"]
    assert "text/html" in page.headers["content-type"]
    for answer in (api, page):
        assert_no_traceback(answer.text)
        assert "boom" not in answer.text
    logged = [r for r in caplog.records if r.name == "labkeep.internal"]
    assert any(reference in r.getMessage() and r.exc_info for r in logged)


def test_unexpected_os_errors_are_environment_errors() -> None:
    import errno

    from labkeep.cli._common import as_labkeep_error

    full = as_labkeep_error(OSError(errno.ENOSPC, "No space left on device", "/mnt/x"))
    assert full.exit_code == 3 and "no space left" in full.message and "/mnt/x" in full.message
    readonly = as_labkeep_error(OSError(errno.EROFS, "Read-only file system", "/mnt/y"))
    assert readonly.exit_code == 3 and "/mnt/y" in readonly.message


def test_healthz_is_503_when_the_tree_is_gone(keep: Keep) -> None:
    with LiveServer(keep) as server:
        assert httpx.get(server.url + "/healthz").status_code == 200
        keep.tree.base.rename(keep.tree.base.with_name("moved"))
        try:
            answer = httpx.get(server.url + "/healthz")
        finally:
            keep.tree.base.with_name("moved").rename(keep.tree.base)
    assert answer.status_code == 503
    assert "tree folder" in answer.json()["message"]


def test_serve_on_a_busy_port_says_what_to_do(tmp_path: Path) -> None:
    import socket

    root = tmp_path / "keep"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", "--root", str(root), "--create", "--port", str(port),
                         timeout=60)  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert_no_traceback(result.stderr)
    assert "Errno" not in result.stderr
    assert f"port {port}" in result.stderr and "already in use" in result.stderr
    assert f"--port {port + 1}" in result.stderr
    assert "serving" not in result.stderr  # no URL that does not work
