"""The command line end to end: real processes, real temp folders, both catalogs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from labkeep.errors import NotFound
from tests.conftest import make_files, unseal_tree


def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
        check: int | None = 0) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """Run ``labkeep ARGS`` as a user would; assert its exit code unless *check* is None."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LABKEEP_")}
    full_env.update(env or {})
    result = subprocess.run(
        [sys.executable, "-m", "labkeep", *args],
        cwd=cwd, env=full_env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if check is not None:
        assert result.returncode == check, (result.returncode, result.stdout, result.stderr)
    return result


def records(result: subprocess.CompletedProcess[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_new_user_journey(tmp_path: Path, catalog_url: str | None) -> None:
    """The sequence from the issue, as a new user types it."""
    root = tmp_path / "srv" / "keep"
    buffer = tmp_path / "mnt" / "buffer" / "run-17"
    files = make_files(buffer, 25)
    init_args = ["init", str(root)] + (["--catalog", catalog_url] if catalog_url else [])
    out = run(*init_args)
    assert "created keep" in out.stdout and "next:" in out.stderr
    if catalog_url:
        assert "postgresql" in (root / "labkeep.toml").read_text()
    try:
        run("project", "create", "imaging-2026", "--title", "Confocal screen 2026", cwd=root)
        ingest = run("ingest", str(buffer), "imaging-2026/s017-confocal", cwd=root)
        assert "ok 25" in ingest.stdout and "version 1" in ingest.stdout
        listing = run("ls", "imaging-2026/s017-confocal", cwd=root)
        assert "raw/top0000.dat" in listing.stdout
        seal = run("seal", "imaging-2026/s017-confocal", cwd=root)
        assert "sealed imaging-2026/s017-confocal as version 2" in seal.stdout
        verify = run("verify", "imaging-2026/s017-confocal", cwd=root)
        assert "OK 25" in verify.stdout
        status = run("status", cwd=root)
        assert "1 sealed" in status.stdout and "25 files" in status.stdout
        # the same from anywhere with --root or LABKEEP_ROOT
        run("ls", "--root", str(root), cwd=tmp_path)
        run("ls", cwd=tmp_path, env={"LABKEEP_ROOT": str(root)})
        # a folder with no keep says what to do
        lost = run("ls", cwd=tmp_path, check=2)
        assert "no keep found" in lost.stderr and "labkeep init" in lost.stderr
        # the manifest checks with coreutils alone
        dataset = root / "data" / "imaging-2026" / "s017-confocal"
        check = subprocess.run(["sha256sum", "-c", "MANIFEST.sha256"], cwd=dataset,
                               capture_output=True, text=True)  # fmt: skip
        assert check.returncode == 0 and check.stdout.count(": OK") == len(files)
    finally:
        unseal_tree(root)


@pytest.fixture
def cli_keep(tmp_path: Path) -> Path:
    root = tmp_path / "keep"
    run("init", str(root))
    run("project", "create", "proj", "--root", str(root))
    yield root
    unseal_tree(root)


def test_every_command_speaks_json(cli_keep: Path, tmp_path: Path) -> None:
    buffer = tmp_path / "buffer"
    make_files(buffer, 6)
    root = ["--root", str(cli_keep), "--json"]
    ingest = records(run("ingest", str(buffer), "proj/s001", *root))
    assert [r["status"] for r in ingest[:-1]] == ["ok"] * 6
    assert ingest[-1]["summary"] == {"ok": 6} and ingest[-1]["version"] == 1
    assert all(len(str(r["sha256"])) == 64 for r in ingest[:-1])
    entries = records(run("ls", "proj/s001", *root))
    assert len(entries) == 6 and {"path", "size", "sha256"} <= set(entries[0])
    assert records(run("ls", *root))[0]["project"] == "proj"
    assert records(run("ls", "proj", *root))[0]["dataset"] == "proj/s001"
    assert records(run("versions", "proj/s001", *root))[0]["version"] == 1
    assert records(run("seal", "proj/s001", *root))[0]["status"] == "ok"
    verify = records(run("verify", "proj/s001", *root))
    assert verify[-1]["states"]["ok"] == 6
    assert records(run("status", *root))[0]["sealed_datasets"] == 1
    events = records(run("events", *root))
    assert [e["action"] for e in events][:3] == ["verify", "seal", "ingest"]
    assert records(run("events", "--check", *root))[0]["status"] == "ok"
    assert records(run("manifest", "proj/s001", *root))[0]["status"] == "ok"
    assert records(run("project", "list", *root))[0]["project"] == "proj"
    assert records(run("dataset", "create", "proj/a1", "--kind", "analysis", *root))[0]["kind"] == (
        "analysis"
    )
    assert records(run("upgrade", *root))[0]["status"] == "notneeded"
    unseal = records(run("unseal", "proj/s001", "--force", *root))
    assert unseal[0]["status"] == "ok"
    # errors are records too, with exit code 2
    error = run("ls", "proj/nope", *root, check=2)
    assert records(error)[0] == {
        "status": "error",
        "error": "not-found",
        "message": "no dataset proj/nope",
        "hint": "see 'labkeep ls proj' for its datasets",
    }


def test_exit_codes(cli_keep: Path, tmp_path: Path) -> None:
    buffer = tmp_path / "buffer"
    make_files(buffer, 4, min_size=1)
    root = ["--root", str(cli_keep)]
    run("ingest", str(buffer), "proj/s001", "--seal", *root)
    run("verify", *root)  # 0: all is well
    # 2: usage and input errors
    run("ingest", str(tmp_path / "missing"), "proj/s002", *root, check=2)
    run("ingest", str(buffer), "Bad Name/x", *root, check=2)
    run("ingest", str(buffer), "proj/s001", *root, check=2)  # sealed
    run("unseal", "proj/s001", *root, check=2)  # without --force
    run("nosuchcommand", check=2)
    # 1: problems found
    target = cli_keep / "data/proj/s001/raw/top0000.dat"
    from labkeep.integrity.immutable import set_immutable

    set_immutable(str(target), False)
    target.chmod(0o644)
    target.write_bytes(b"tampered" + target.read_bytes()[8:])
    bad = run("verify", *root, check=1)
    # the report goes to stdout (verify > report.txt keeps it), diagnostics to stderr
    assert "MODIFIED" in bad.stdout and "proj/s001/raw/top0000.dat" in bad.stdout
    assert "MODIFIED" not in bad.stderr and "problems found" in bad.stderr
    (buffer / "link").symlink_to("top0000.dat")
    partial = run("ingest", str(buffer), "proj/s002", *root, check=1)
    assert "symbolic link" in partial.stdout and "IMPOSSIBLE" in partial.stdout
    assert "run the same command again" in partial.stderr
    # 3: the environment broke (here: the catalog's server is unreachable)
    config = cli_keep / "labkeep.toml"
    config.write_text(
        config.read_text()
        .replace('url = "sqlite:///catalog.db"', 'url = "postgresql+psycopg://x@127.0.0.1:9/x"')
        .replace("retry_seconds = 30", "retry_seconds = 0")
    )
    down = run("ls", *root, check=3)
    assert "cannot reach the catalog" in down.stderr and "Traceback" not in down.stderr


def test_events_check_fails_on_tampering(cli_keep: Path) -> None:
    import sqlite3

    db = sqlite3.connect(cli_keep / "catalog.db")
    with db:
        db.execute("DROP TRIGGER events_no_update")
        db.execute("UPDATE events SET target = 'elsewhere' WHERE id = 1")
    db.close()
    result = run("events", "--check", "--root", str(cli_keep), check=1)
    assert "BROKEN" in result.stdout and "event 1" in result.stdout


def test_help_does_not_import_heavy_modules() -> None:
    code = (
        "import sys\n"
        "from labkeep.cli import app\n"
        "heavy = [m for m in ('sqlalchemy', 'alembic', 'fastapi', 'boto3', 'psycopg', "
        "'prometheus_client') "
        "if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)  # fmt: skip
    assert result.stdout.strip() == ""
    assert "ingest" in run("--help").stdout


def test_a_command_imports_only_what_it_uses(cli_keep: Path) -> None:
    """``labkeep ls PROJECT`` pays for no ingest, verify, web, migration or server code."""
    code = (
        "import atexit, sys\n"
        "from labkeep.cli import main\n"
        "atexit.register(lambda: sys.stderr.write('MODULES ' + ' '.join(sys.modules)))\n"
        "sys.argv[0] = 'labkeep'\n"
        "main()\n"
    )
    result = subprocess.run([sys.executable, "-c", code, "ls", "proj", "--root", str(cli_keep)],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    loaded = set(result.stderr.split("MODULES ")[1].split())
    assert "sqlalchemy" in loaded  # (it does read the catalog)
    unused = {
        "labkeep.ops.ingest", "labkeep.ops.verify", "labkeep.ops.seal", "labkeep.ops.upload",
        "labkeep.ops.shares", "labkeep.ops.tokens", "labkeep.ops.sessions",
        "labkeep.integrity.hashing", "labkeep.web", "alembic", "fastapi", "starlette",
        "httpx", "pydantic", "argon2", "uvicorn", "concurrent.futures.thread",
    }  # fmt: skip
    assert loaded & unused == set()


def test_ls_streams_limits_and_prints_names_one_way(tmp_path: Path, cli_keep: Path) -> None:
    """A plain ``ls DATASET`` shows the first 1,000 files and says how to see more; --all and
    --json give every file; names with control characters print escaped on one line, and
    piped output never wraps a long path."""
    buffer = tmp_path / "buffer"
    buffer.mkdir()
    for i in range(1003):
        (buffer / f"f{i:05d}.bin").write_bytes(b"x")
    odd = ["tab\there.tif", "new\nline.tif", "back\\slash.tif", "x" * 200 + ".tif"]
    for name in odd:
        (buffer / name).write_bytes(b"odd")
    root = ["--root", str(cli_keep)]
    run("ingest", str(buffer), "proj/big", *root)

    plain = run("ls", "proj/big", *root)
    lines = plain.stdout.splitlines()
    assert lines[0] == "proj/big (version 1)" and lines[1].split() == [
        "size", "sha256", "verified", "path"
    ]  # fmt: skip
    assert len(lines) == 2 + 1000
    assert "1000 files shown, more follow" in plain.stderr and "--after" in plain.stderr
    assert "--all" in plain.stderr
    every = run("ls", "proj/big", "--all", *root).stdout.splitlines()
    assert len(every) == 2 + 1007
    paths = [line.split("  ")[-1] for line in every[2:]]
    assert "raw/tab\\there.tif" in paths and "raw/new\\nline.tif" in paths
    assert "raw/back\\\\slash.tif" in paths
    assert "raw/" + "x" * 200 + ".tif" in paths  # on one line, unwrapped
    assert len({line for line in every}) == len(every)
    # the next page starts where the note said
    after = plain.stderr.split("--after ")[1].split(" for the next page")[0].strip("'")
    following = run("ls", "proj/big", "--after", after, *root).stdout.splitlines()
    assert following[2:] == every[2 + 1000 :]

    listed = records(run("ls", "proj/big", "--json", *root))
    assert len(listed) == 1007
    assert {"tab\there.tif", "new\nline.tif"} <= {str(r["path"])[4:] for r in listed}
    assert [r["path"] for r in listed] == sorted(
        (r["path"] for r in listed), key=lambda p: str(p).encode()
    )

    # a reader that stops early ends the listing quietly (no traceback, no error text)
    head = subprocess.run(
        f"{sys.executable} -m labkeep ls proj/big --all --root {cli_keep} | head -3",
        shell=True, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert len(head.stdout.splitlines()) == 3
    assert head.stderr == ""


def test_stream_entries_pages_through_everything(keep_with_files: tuple[Any, int]) -> None:
    keep, n = keep_with_files
    stream = keep.stream_entries("proj/s001", page_size=7)
    paths = [e["path"] for e in stream.entries]
    assert len(paths) == n and paths == sorted(paths, key=str.encode)
    assert stream.version == 1
    folder = keep.stream_entries("proj/s001/raw/d1", page_size=3)
    assert [e["path"] for e in folder.entries] == [p for p in paths if p.startswith("raw/d1/")]
    with pytest.raises(NotFound):
        keep.stream_entries("proj/s001/raw/nothing-here")


@pytest.fixture
def keep_with_files(keep: Any, tmp_path: Path) -> tuple[Any, int]:
    files = make_files(tmp_path / "src", 40)
    keep.ingest(tmp_path / "src", "proj/s001")
    return keep, len(files)
