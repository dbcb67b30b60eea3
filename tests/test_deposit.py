"""`labkeep publish P/D --to invenio`: a deposit through InvenioRDM's records API against a
real HTTP server on loopback (tests/invenio_server.py) that injects 413, 429, 503 and
dropped connections; every rerun must end in exactly one published record holding every
file exactly once, with matching checksums."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from labkeep import Keep
from labkeep.catalog import Dataset, Deposit, DepositFile, Digest, Event
from labkeep.errors import (
    AlreadyPublished,
    Forbidden,
    NotFound,
    RepositoryRefused,
    RepositoryUnavailable,
    UsageError,
)
from labkeep.ops.deposit import invenio_metadata
from tests.conftest import unseal_tree
from tests.invenio_server import InvenioServer
from tests.test_cli import records, run

TOKEN = "lkt-Secret-Token-0123456789"
ORCID = "0000-0002-1825-0097"
FILES = {
    "masks/cell 01.png": b"mask one",
    "masks/deep/cell 02.png": b"mask two" * 1000,
    "tables/areas.csv": b"cell,area\n1,10\n",
    "README.txt": b"read me",
}


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@pytest.fixture
def server() -> Iterator[InvenioServer]:
    with InvenioServer(token=TOKEN) as s:
        yield s


def make_release(keep: Keep, tmp_path: Path, files: dict[str, bytes], name: str = "seg-v1") -> str:
    """A release of an analysis dataset holding *files* (the lead's release path)."""
    keep.create_project("imaging-2026", title="Screen")
    keep.set_metadata(
        "imaging-2026",
        {
            "creators": [
                {
                    "name": "Curie, Marie",
                    "given": "Marie",
                    "family": "Curie",
                    "orcid": ORCID,
                    "affiliation": "Institut du Radium",
                    "ror": "05dxps055",
                },
                {"name": "Imaging Facility"},
            ],
            "license": "CC-BY-4.0",
            "keywords": ["nuclei", "DAPI"],
            "funding": [{"funder": "Agence", "award": "ANR-1"}],
        },
    )
    keep.create_dataset("imaging-2026/seg", kind="analysis", title="Masks")
    wt = keep.tree.dataset_dir("imaging-2026", "seg")
    for rel, data in files.items():
        (wt / rel).parent.mkdir(parents=True, exist_ok=True)
        (wt / rel).write_bytes(data)
    keep.save("imaging-2026/seg", message="first")
    keep.set_metadata(
        "imaging-2026/seg",
        {"description": "Masks <script>alert(1)</script> & tables\n\nSecond part"},
    )
    result = keep.release("imaging-2026/seg@1", name=name)
    assert result.status == "ok", result
    return f"imaging-2026/{name}"


def configure(keep: Keep, server: InvenioServer, **extra: Any) -> None:
    keep.config.publish_targets = {
        "invenio": {"url": server.url, "retry_base_seconds": 0.01, "attempts": 4, **extra}
    }


@pytest.fixture
def skeep(keep_root: Path) -> Iterator[Keep]:
    """A keep on SQLite only, for the fault matrices (the catalog's part of a deposit is
    checked on both engines by the other tests)."""
    k = Keep.init(keep_root)
    yield k
    k.close()
    unseal_tree(keep_root)


@pytest.fixture
def waits() -> list[float]:
    return []


def publish(keep: Keep, address: str, waits: list[float], **kw: Any) -> Any:
    return keep.publish(address, to="invenio", sleep=waits.append, **kw)


def assert_one_record(server: InvenioServer, expected: dict[str, bytes]) -> dict[str, Any]:
    """Exactly one draft was made, it is published, and holds every file once, each with
    the right bytes and MD5."""
    assert len(server.records) == 1, list(server.records)
    [record] = server.published()
    assert set(record.files) == set(expected)
    for key, entry in record.files.items():
        assert entry.status == "completed"
        assert entry.data == expected[key], key
        assert entry.checksum == "md5:" + md5(expected[key])
    assert record.published is not None
    return record.published


# -- the whole path ---------------------------------------------------------------------


def test_publish_a_release_end_to_end(
    keep: Keep,
    tmp_path: Path,
    server: InvenioServer,
    monkeypatch: pytest.MonkeyPatch,
    waits: list[float],
) -> None:
    address = make_release(keep, tmp_path, FILES)
    configure(keep, server)
    monkeypatch.setenv("LABKEEP_INVENIO_TOKEN", TOKEN)
    result = publish(keep, address, waits)
    assert result.status == "ok" and result.state == "published"
    published = assert_one_record(server, FILES)  # the release's raw/ is gone from keys
    record = next(iter(server.records.values()))
    doi = f"10.5072/lkt.{record.id}"
    assert result.doi == doi and published["pids"]["doi"]["identifier"] == doi
    assert result.record_url == f"{server.url}/records/{record.id}"
    assert (result.files_sent, result.files_skipped, result.packaged) == (4, 0, False)
    # every request carried the token as a bearer token, and only there
    assert server.auth_headers and set(server.auth_headers) == {f"Bearer {TOKEN}"}
    # the DOI reserved on the draft is the one published
    assert server.requests("POST", r"/draft/pids/doi$")
    # metadata mapped to InvenioRDM's schema
    meta = record.metadata
    assert meta["resource_type"] == {"id": "dataset"}
    curie, facility = meta["creators"]
    assert curie["person_or_org"] == {
        "type": "personal",
        "family_name": "Curie",
        "given_name": "Marie",
        "identifiers": [{"scheme": "orcid", "identifier": ORCID}],
    }
    assert curie["affiliations"] == [{"id": "05dxps055"}]
    assert facility["person_or_org"] == {"type": "organizational", "name": "Imaging Facility"}
    assert meta["rights"] == [{"id": "cc-by-4.0"}]
    assert {"subject": "nuclei"} in meta["subjects"]
    assert meta["funding"] == [{"funder": {"name": "Agence"}, "award": {"number": "ANR-1"}}]
    assert "<script>" not in meta["description"]
    assert meta["description"].startswith("<p>Masks &lt;script&gt;alert(1)&lt;/script&gt; &amp;")
    # recorded on the dataset, in the status and in an audit event
    with keep.catalog.read() as session:
        row = session.execute(select(Dataset).where(Dataset.name == "seg-v1")).scalar_one()
        assert (row.doi, row.record_url) == (doi, result.record_url)
        assert row.published_at is not None
        events = (
            session.execute(
                select(Event)
                .where(Event.action.in_(["publish", "publish-start"]))
                .order_by(Event.id)
            )
            .scalars()
            .all()
        )
        assert [e.action for e in events] == ["publish-start", "publish"]
        assert json.loads(events[-1].details)["doi"] == doi
        # the MD5s are kept for later packages and deposits
        assert session.execute(select(Digest)).scalars().all()
    [status] = keep.publish_status(address)
    assert status.state == "published" and status.summary == f"published, DOI {doi}"
    assert (status.files_done, status.files_total) == (4, 4)
    assert_token_nowhere(keep)
    # published once: a second publish to the same target is refused, clearly
    with pytest.raises(AlreadyPublished, match="already published") as info:
        publish(keep, address, waits)
    assert "new version" in (info.value.hint or "")
    assert len(server.records) == 1


def assert_token_nowhere(keep: Keep) -> None:
    """The token is in no table of the catalog (events, jobs, deposits included)."""
    with keep.catalog.read() as session:
        for table in ("events", "deposits", "deposit_files", "jobs", "datasets", "keep_state"):
            for row in session.execute(text(f"SELECT * FROM {table}")).all():
                assert TOKEN not in repr(row), table


# -- faults and reruns ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "pattern", "fault"),
    [
        ("POST", r"^/api/records$", {"status": 429, "retry_after": "3", "times": 2}),
        ("PUT", r"/content$", {"status": 503, "retry_after": "2", "times": 3}),
        ("PUT", r"/content$", {"drop": True, "times": 2}),
        ("POST", r"/commit$", {"status": 503, "times": 1}),
        ("POST", r"/actions/publish$", {"status": 503, "retry_after": "1", "times": 2}),
        ("POST", r"/actions/publish$", {"drop_after": True, "times": 1}),
        ("GET", r"/draft/files$", {"status": 502, "times": 1}),
    ],
    ids=[
        "429-create",
        "503-upload",
        "dropped-upload",
        "503-commit",
        "503-publish",
        "publish-answer-lost",
        "502-list",
    ],
)
def test_a_passing_fault_is_retried_in_the_same_run(
    skeep: Keep,
    tmp_path: Path,
    server: InvenioServer,
    monkeypatch: pytest.MonkeyPatch,
    waits: list[float],
    method: str,
    pattern: str,
    fault: dict[str, Any],
) -> None:
    address = make_release(skeep, tmp_path, FILES)
    configure(skeep, server)
    monkeypatch.setenv("LABKEEP_INVENIO_TOKEN", TOKEN)
    server.fail(method, pattern, **fault)
    result = publish(skeep, address, waits)
    assert result.state == "published"
    if fault.get("drop_after"):  # the record was looked up, not published again
        assert server.requests("GET", r"^/api/records/[^/]+$")
    else:
        assert result.retries >= 1
    assert_one_record(server, FILES)
    if fault.get("retry_after"):
        assert float(fault["retry_after"]) in waits  # Retry-After honoured
    refused = fault["times"] if "publish" in pattern and "status" in fault else 0
    assert len(server.requests("POST", r"/actions/publish$")) == 1 + refused


@pytest.mark.parametrize(
    ("method", "pattern", "fault"),
    [
        ("POST", r"^/api/records$", {"status": 503, "times": 4}),
        ("POST", r"/draft/pids/doi$", {"status": 500, "times": 4}),
        ("POST", r"/draft/files$", {"drop_after": True}),
        ("PUT", r"/content$", {"drop": True, "times": 4}),
        ("PUT", r"deep%2Fcell%2002\.png/content$", {"drop": True, "times": 4}),
        ("POST", r"README\.txt/commit$", {"drop_after": True}),
        ("POST", r"/actions/publish$", {"status": 503, "times": 4}),
        ("POST", r"/actions/publish$", {"drop": True, "times": 4}),
        ("GET", r"/draft$", {"status": 503, "times": 4}),
    ],
    ids=[
        "create",
        "doi",
        "init-answer-lost",
        "every-upload",
        "one-upload",
        "commit-answer-lost",
        "publish-503",
        "publish-dropped",
        "get-draft",
    ],
)
def test_a_rerun_after_a_failure_continues_with_the_same_draft(
    skeep: Keep,
    tmp_path: Path,
    server: InvenioServer,
    monkeypatch: pytest.MonkeyPatch,
    waits: list[float],
    method: str,
    pattern: str,
    fault: dict[str, Any],
) -> None:
    address = make_release(skeep, tmp_path, FILES)
    configure(skeep, server)
    monkeypatch.setenv("LABKEEP_INVENIO_TOKEN", TOKEN)
    if pattern == r"/draft$":  # the draft is read only on a rerun: fail the first rerun
        with pytest.raises(RepositoryUnavailable):
            server.fail("POST", r"/actions/publish$", status=503, times=4)
            publish(skeep, address, waits)
    server.fail(method, pattern, **fault)
    with pytest.raises(RepositoryUnavailable):
        publish(skeep, address, waits)
    [status] = skeep.publish_status(address)
    assert status.state != "published" and status.last_error
    puts_before = {
        key: len(server.requests("PUT", key.replace(" ", "%20").replace("/", "%2F") + "/content$"))
        for key in FILES
    }
    result = publish(skeep, address, waits)
    assert result.state == "published"
    assert_one_record(server, FILES)
    # files committed before the failure were not sent again
    committed_before = result.files_skipped
    assert result.files_sent + committed_before == len(FILES)
    resent = [
        key
        for key in FILES
        if len(server.requests("PUT", key.replace(" ", "%20").replace("/", "%2F") + "/content$"))
        > puts_before[key]
    ]
    assert len(resent) == result.files_sent
    assert_token_nowhere(skeep)


def test_a_crash_between_commit_and_its_record_skips_the_file_on_rerun(
    keep: Keep,
    tmp_path: Path,
    server: InvenioServer,
    monkeypatch: pytest.MonkeyPatch,
    waits: list[float],
) -> None:
    """The repository committed a file but the keep never recorded it (killed): the rerun
    finds it in the draft with our MD5 (from ``digests``) and does not send it again."""
    address = make_release(keep, tmp_path, FILES)
    configure(keep, server)
    monkeypatch.setenv("LABKEEP_INVENIO_TOKEN", TOKEN)
    server.fail("POST", r"/actions/publish$", status=503, times=4)
    with pytest.raises(RepositoryUnavailable):
        publish(keep, address, waits)
    with keep.catalog.write() as session:  # as if killed before recording the commits
        for f in session.execute(select(DepositFile)).scalars():
            f.state, f.md5 = "pending", None
    puts = len(server.requests("PUT", r"/content$"))
    result = publish(keep, address, waits)
    assert (result.files_sent, result.files_skipped) == (0, 4)
    assert len(server.requests("PUT", r"/content$")) == puts
    assert_one_record(server, FILES)


def test_a_draft_holding_a_wrong_or_foreign_file_is_cleaned(
    skeep: Keep,
    tmp_path: Path,
    server: InvenioServer,
    monkeypatch: pytest.MonkeyPatch,
    waits: list[float],
) -> None:
    address = make_release(skeep, tmp_path, FILES)
    configure(skeep, server)
    monkeypatch.setenv("LABKEEP_INVENIO_TOKEN", TOKEN)
    server.fail("POST", r"/actions/publish$", status=503, times=4)
    with pytest.raises(RepositoryUnavailable):
        publish(skeep, address, waits)
    from tests.invenio_server import FileEntry

    [record] = server.records.values()
    record.files["stray.bin"] = FileEntry("stray.bin", "completed", b"x", "md5:" + md5(b"x"), 1)
    wrong = record.files["README.txt"]
    wrong.data, wrong.checksum = b"other", "md5:" + md5(b"other")
    wrong.size, wrong.md5 = 5, md5(b"other")
    result = publish(skeep, address, waits)
    assert (result.files_sent, result.files_skipped) == (1, 3)
    assert_one_record(server, FILES)


def test_a_file_over_the_repository_limit_is_a_clear_error(
    skeep: Keep, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, waits: list[float]
) -> None:
    address = make_release(skeep, tmp_path, FILES)
    with InvenioServer(token=TOKEN, max_file_size=1000) as server:
        configure(skeep, server)
        monkeypatch.setenv("LABKEEP_INVENIO_TOKEN", TOKEN)
        with pytest.raises(RepositoryRefused, match="size limit") as info:
            publish(skeep, address, waits)
        assert "413" in info.value.message and "deep/cell 02.png" in info.value.message
        assert not server.published() and waits == []  # not retried
    [status] = skeep.publish_status(address)
    assert "size limit" in status.last_error and status.state == "uploading"


def test_a_wrong_token_is_refused_and_never_shown(
    skeep: Keep,
    tmp_path: Path,
    server: InvenioServer,
    monkeypatch: pytest.MonkeyPatch,
    waits: list[float],
) -> None:
    address = make_release(skeep, tmp_path, FILES)
    configure(skeep, server)
    monkeypatch.setenv("LABKEEP_INVENIO_TOKEN", "wrong-" + TOKEN)
    with pytest.raises(RepositoryRefused, match="refused the token") as info:
        publish(skeep, address, waits)
    assert TOKEN not in str(info.value)


# -- what is refused before anything is sent -----------------------------------------------


def test_refusals(
    skeep: Keep,
    tmp_path: Path,
    server: InvenioServer,
    monkeypatch: pytest.MonkeyPatch,
    waits: list[float],
) -> None:
    address = make_release(skeep, tmp_path, FILES)
    configure(skeep, server)
    # no token: names where to put it
    with pytest.raises(UsageError, match="no token for invenio") as info:
        publish(skeep, address, waits)
    assert "LABKEEP_INVENIO_TOKEN" in (info.value.hint or "")
    monkeypatch.setenv("LABKEEP_INVENIO_TOKEN", TOKEN)
    # an unsealed dataset: make a release first
    skeep.create_dataset("imaging-2026/open", kind="analysis")
    wt = skeep.tree.dataset_dir("imaging-2026", "open")
    (wt / "a.txt").write_bytes(b"a")
    skeep.save("imaging-2026/open", message="one")
    with pytest.raises(UsageError, match="not sealed") as info:
        publish(skeep, "imaging-2026/open", waits)
    assert "labkeep release imaging-2026/open@1 --name NAME" in (info.value.hint or "")
    with pytest.raises(UsageError, match="no committed version 7"):
        publish(skeep, address + "@7", waits)
    with pytest.raises(UsageError, match="no publishing target"):
        skeep.publish(address, to="figshare")
    with pytest.raises(UsageError, match="whole dataset version"):
        publish(skeep, address + "/raw/README.txt", waits)
    assert server.log == []  # nothing was sent


def test_access_needs_manage(
    skeep: Keep,
    tmp_path: Path,
    server: InvenioServer,
    monkeypatch: pytest.MonkeyPatch,
    waits: list[float],
) -> None:
    address = make_release(skeep, tmp_path, FILES)
    configure(skeep, server)
    monkeypatch.setenv("LABKEEP_INVENIO_TOKEN", TOKEN)
    skeep.add_user("bob", password="a long enough password")
    bob = skeep.acting_as(skeep.principal_for("bob"))
    with pytest.raises(NotFound):
        bob.publish(address, to="invenio", sleep=waits.append)
    skeep.grant("bob", "write", "imaging-2026")
    with pytest.raises(Forbidden):
        bob.publish(address, to="invenio", sleep=waits.append)
    with pytest.raises(Forbidden):
        bob.publish(address, to="invenio", dry_run=True)
    with pytest.raises(Forbidden):
        bob.enqueue("publish", {"dataset": address, "to": "invenio"})
    assert server.log == []
    assert [d.state for d in bob.publish_status(address)] == []  # may read the status
    skeep.grant("bob", "manage", "imaging-2026")
    assert bob.publish(address, to="invenio", sleep=waits.append).state == "published"


def test_dry_run_sends_nothing(skeep: Keep, tmp_path: Path, server: InvenioServer) -> None:
    address = make_release(skeep, tmp_path, FILES)
    configure(skeep, server)
    result = skeep.publish(address, to="invenio", dry_run=True)  # no token needed
    assert result.status == "dry-run" and server.log == []
    assert result.metadata is not None and result.metadata["metadata"]["title"] == "Masks"
    assert [f["key"] for f in result.files] == sorted(FILES)
    assert skeep.publish_status(address) == []  # nothing recorded either


def test_hostile_and_non_latin_metadata_is_carried_as_written() -> None:
    doc = {
        "titles": [{"title": "Маски <b>ядер</b> 細胞 & co"}],
        "creators": [{"name": "Škłodowska, Marïa", "nameType": "Personal"}],
        "publisher": {"name": "Facility"},
        "types": {"resourceTypeGeneral": "Image"},
        "descriptions": [{"description": "x" * 10_000 + "<img src=x onerror=alert(1)>"}],
    }
    meta = invenio_metadata(doc, publication_date="2026-11-29")
    assert meta["title"] == "Маски <b>ядер</b> 細胞 & co"  # a plain string field
    assert meta["creators"][0]["person_or_org"] == {
        "type": "personal",
        "family_name": "Škłodowska",
        "given_name": "Marïa",
    }
    assert meta["resource_type"] == {"id": "image"}
    assert "<img" not in meta["description"] and "&lt;img src=x" in meta["description"]


# -- many files ----------------------------------------------------------------------------


def test_many_files_are_packed_one_zip_per_top_folder(
    keep: Keep,
    tmp_path: Path,
    server: InvenioServer,
    monkeypatch: pytest.MonkeyPatch,
    waits: list[float],
) -> None:
    files = {
        f"plate{p}/well{w:02d}.tif": f"p{p}w{w}".encode() * (w + 1)
        for p in range(3)
        for w in range(6)
    }
    files["README.txt"] = b"read me"
    files["plate0/sub/deep.txt"] = b"deep"
    address = make_release(keep, tmp_path, files)
    configure(keep, server, max_files=10)
    monkeypatch.setenv("LABKEEP_INVENIO_TOKEN", TOKEN)
    dry = keep.publish(address, to="invenio", dry_run=True)
    assert dry.packaged and "sent as 3 zip file(s), one per top folder" in dry.message
    assert [f["key"] for f in dry.files] == ["README.txt", "plate0.zip", "plate1.zip", "plate2.zip"]
    result = publish(keep, address, waits)
    assert result.packaged and result.source_files == 20 and result.files_total == 4
    assert "more than the 10 files a record of invenio takes" in result.message
    [record] = server.published()
    assert set(record.files) == {"README.txt", "plate0.zip", "plate1.zip", "plate2.zip"}
    unpacked: dict[str, bytes] = {"README.txt": record.files["README.txt"].data or b""}
    for key, entry in record.files.items():
        assert entry.checksum == "md5:" + md5(entry.data or b"")
        if key.endswith(".zip"):
            with zipfile.ZipFile(io.BytesIO(entry.data or b"")) as archive:
                assert archive.testzip() is None
                assert all(i.compress_type == zipfile.ZIP_STORED for i in archive.infolist())
                for info in archive.infolist():
                    assert info.filename.startswith(key[: -len(".zip")] + "/")
                    unpacked[info.filename] = archive.read(info)
    assert unpacked == files  # every file exactly once
    assert not (keep.config.runs_path / "publish-1").exists()  # staging removed


def test_a_broken_zip_upload_is_rebuilt_with_the_same_bytes(
    skeep: Keep,
    tmp_path: Path,
    server: InvenioServer,
    monkeypatch: pytest.MonkeyPatch,
    waits: list[float],
) -> None:
    files = {f"t{t}/f{i}.bin": bytes([t, i]) * 500 for t in range(3) for i in range(4)}
    address = make_release(skeep, tmp_path, files)
    configure(skeep, server, max_files=5)
    monkeypatch.setenv("LABKEEP_INVENIO_TOKEN", TOKEN)
    server.fail("PUT", r"t1\.zip/content$", drop=True, times=4)
    with pytest.raises(RepositoryUnavailable):
        publish(skeep, address, waits)
    [status] = skeep.publish_status(address)
    assert (status.files_done, status.files_total, status.summary) == (1, 3, "uploading 1/3")
    result = publish(skeep, address, waits)
    assert (result.files_sent, result.files_skipped) == (2, 1)
    assert len(server.published()) == 1 and len(server.records) == 1


# -- the command line and the job ------------------------------------------------------------


def test_cli_publish_status_and_dry_run(
    keep: Keep, keep_root: Path, tmp_path: Path, server: InvenioServer
) -> None:
    address = make_release(keep, tmp_path, FILES)
    with open(keep_root / "labkeep.toml", "a", encoding="utf-8") as handle:
        handle.write(f'\n[publish.invenio]\nurl = "{server.url}"\nretry_base_seconds = 0.01\n')
    env = {"LABKEEP_ROOT": str(keep_root)}
    dry = run("publish", address, "--to", "invenio", "--dry-run", env=env)
    assert '"family_name": "Curie"' in dry.stdout and "masks/deep/cell 02.png" in dry.stdout
    assert server.log == []
    none = run("publish", address, "--to", "invenio", env=env, check=2)
    assert "no token for invenio" in none.stderr and "LABKEEP_INVENIO_TOKEN" in none.stderr
    # a credentials file (INI, as for S3 stores), passed on the command line
    creds = tmp_path / "publish.ini"
    creds.write_text(f"[invenio]\ntoken = {TOKEN}\n", encoding="utf-8")
    server.fail("POST", r"/actions/publish$", status=503, times=10)
    failed = run(
        "publish", address, "--to", "invenio", "--credentials", str(creds), env=env, check=3
    )
    assert "busy or failing" in failed.stderr and "run the same command again" in failed.stderr
    status = run("publish", "--status", address, env=env)
    assert "publishing" in status.stdout and "HTTP 503" in status.stdout
    server.faults.clear()
    done = run("publish", address, "--to", "invenio", "--credentials", str(creds), env=env)
    assert "DOI: 10.5072/lkt." in done.stdout and "0 file(s) sent, 4 already there" in done.stdout
    status = records(run("publish", "--status", address, "--json", env=env))
    assert status[0]["state"] == "published" and status[0]["doi"].startswith("10.5072/")
    for out in (dry, none, failed, done):
        assert TOKEN not in out.stdout + out.stderr
    again = run(
        "publish",
        address,
        "--to",
        "invenio",
        "--json",
        "--credentials",
        str(creds),
        env=env,
        check=2,
    )
    assert records(again)[-1]["error"] == "already-published"


def test_the_publish_job_runs_in_a_worker(
    keep: Keep, tmp_path: Path, server: InvenioServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from labkeep.ops.worker import JobWorker

    address = make_release(keep, tmp_path, FILES)
    configure(keep, server)
    monkeypatch.setenv("LABKEEP_INVENIO_TOKEN", TOKEN)
    server.fail("POST", r"/actions/publish$", status=503, times=4)  # the first attempt fails
    job = keep.enqueue("publish", {"dataset": address, "to": "invenio"})
    assert job.target == address
    keep.config.jobs = type(keep.config.jobs)(retry_base_seconds=0.01, retry_max_seconds=0.01)
    JobWorker(keep, drain=True, log=io.StringIO(), schedule=False).run()
    info = keep.get_job(job.id)
    assert info.state == "done", info
    assert info.attempts == 2 and info.result["doi"].startswith("10.5072/")
    assert_one_record(server, FILES)
    assert_token_nowhere(keep)


def test_deposit_rows_are_one_per_dataset_and_target(
    skeep: Keep,
    tmp_path: Path,
    server: InvenioServer,
    monkeypatch: pytest.MonkeyPatch,
    waits: list[float],
) -> None:
    address = make_release(skeep, tmp_path, FILES)
    configure(skeep, server)
    skeep.config.publish_targets["zenodo"] = {
        "url": server.url,
        "sandbox_url": server.url,
        "retry_base_seconds": 0.01,
    }
    monkeypatch.setenv("LABKEEP_INVENIO_TOKEN", TOKEN)
    monkeypatch.setenv("LABKEEP_ZENODO_SANDBOX_TOKEN", TOKEN)
    publish(skeep, address, waits)
    sandbox = skeep.publish(address, to="zenodo", sandbox=True, sleep=waits.append)
    assert sandbox.state == "published" and sandbox.sandbox
    with skeep.catalog.read() as session:
        rows = session.execute(select(Deposit.target, Deposit.sandbox)).all()
    assert sorted(rows) == [("invenio", False), ("zenodo", True)]
    assert len(server.published()) == 2


def test_a_community_publishes_it_after_review(
    skeep: Keep,
    tmp_path: Path,
    server: InvenioServer,
    monkeypatch: pytest.MonkeyPatch,
    waits: list[float],
) -> None:
    address = make_release(skeep, tmp_path, FILES)
    configure(skeep, server, community="imaging-facility")
    monkeypatch.setenv("LABKEEP_INVENIO_TOKEN", TOKEN)
    result = publish(skeep, address, waits)
    assert result.state == "review" and "once its curators accept it" in result.message
    [record] = server.records.values()
    assert record.review == {"community": "imaging-facility", "status": "submitted"}
    assert not server.published() and not server.requests("POST", r"/actions/publish$")
    [status] = skeep.publish_status(address)
    assert status.summary == "submitted to a community for review"
    waiting = publish(skeep, address, waits)  # not accepted yet: nothing is sent again
    assert waiting.status == "notneeded" and "still waiting" in waiting.message
    assert len(server.requests("PUT", r"/content$")) == len(FILES)
    server.accept(record.id)
    done = publish(skeep, address, waits)
    assert done.state == "published" and done.doi == f"10.5072/lkt.{record.id}"
    assert_one_record(server, FILES)
    assert skeep.get_dataset(address).doi == done.doi


def test_one_publish_at_a_time(
    skeep: Keep,
    tmp_path: Path,
    server: InvenioServer,
    monkeypatch: pytest.MonkeyPatch,
    waits: list[float],
) -> None:
    """Two publishes of one dataset to one target at once would make two drafts: the
    second is refused while the first holds the deposit's lease."""
    from labkeep.errors import Busy
    from labkeep.ops.leases import lease

    address = make_release(skeep, tmp_path, FILES)
    configure(skeep, server)
    monkeypatch.setenv("LABKEEP_INVENIO_TOKEN", TOKEN)
    with skeep.catalog.read() as session:
        dataset_id = session.execute(select(Dataset.id).where(Dataset.name == "seg-v1")).scalar()
    with (
        lease(skeep, f"publish:{dataset_id}:invenio", what="another publish"),
        pytest.raises(Busy, match="another publish"),
    ):
        publish(skeep, address, waits)
    assert server.log == []
    assert publish(skeep, address, waits).state == "published"


def test_the_landing_page_is_linked_from_the_record(
    skeep: Keep,
    tmp_path: Path,
    server: InvenioServer,
    monkeypatch: pytest.MonkeyPatch,
    waits: list[float],
) -> None:
    address = make_release(skeep, tmp_path, FILES)
    configure(skeep, server)
    monkeypatch.setenv("LABKEEP_INVENIO_TOKEN", TOKEN)
    skeep.config.web = type(skeep.config.web)(base_url="https://data.example.org")
    publish(skeep, address, waits)
    [record] = server.published()
    related = record.metadata["related_identifiers"]
    assert {
        "identifier": "https://data.example.org/p/imaging-2026/seg-v1/@2",
        "scheme": "url",
        "relation_type": {"id": "isidenticalto"},
        "resource_type": {"id": "dataset"},
    } in related
    assert {
        "identifier": "https://data.example.org/p/imaging-2026/seg/@1",
        "scheme": "url",
        "relation_type": {"id": "isderivedfrom"},
    } in related


def test_empty_files_and_odd_names_are_sent_as_they_are(
    skeep: Keep,
    tmp_path: Path,
    server: InvenioServer,
    monkeypatch: pytest.MonkeyPatch,
    waits: list[float],
) -> None:
    files = {"empty.txt": b"", "données/ß %2F #?.txt": b"odd", "a/b/c/d.bin": b"\0" * 70_000}
    address = make_release(skeep, tmp_path, files)
    configure(skeep, server)
    monkeypatch.setenv("LABKEEP_INVENIO_TOKEN", TOKEN)
    assert publish(skeep, address, waits).state == "published"
    assert_one_record(server, files)


def test_files_are_streamed_not_held_in_memory(
    skeep: Keep, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, waits: list[float]
) -> None:
    """A 48 MiB file goes up with a few MiB of Python memory at most (1 MiB chunks)."""
    import tracemalloc

    size = 48 << 20
    block = hashlib.sha256(b"seed").digest() * (1 << 15)  # 1 MiB, not all zeros
    source = tmp_path / "big"
    source.mkdir()
    with open(source / "big.bin", "wb") as handle:
        for _ in range(size >> 20):
            handle.write(block)
    skeep.create_project("imaging-2026")
    skeep.set_metadata("imaging-2026", {"creators": [{"name": "Imaging Facility"}]})
    skeep.ingest(source, "imaging-2026/big", seal=True)
    with InvenioServer(token=TOKEN, keep_content=False) as server:
        configure(skeep, server)
        monkeypatch.setenv("LABKEEP_INVENIO_TOKEN", TOKEN)
        tracemalloc.start()
        try:
            result = publish(skeep, "imaging-2026/big", waits)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert result.state == "published"
        [record] = server.published()
        [entry] = record.files.values()
        expected = hashlib.md5(block * (size >> 20)).hexdigest()
        assert (entry.size, entry.checksum) == (size, "md5:" + expected)
    assert peak < 12 << 20, peak


def test_a_session_is_packed_below_raw(
    skeep: Keep,
    tmp_path: Path,
    server: InvenioServer,
    monkeypatch: pytest.MonkeyPatch,
    waits: list[float],
) -> None:
    """A sealed session holds everything under raw/: its zips are raw/'s folders."""
    source = tmp_path / "run-17"
    made: dict[str, bytes] = {}
    for i in range(12):
        rel = f"plate{i % 3}/w{i:02d}.tif" if i % 4 else f"notes{i}.txt"
        made[f"raw/{rel}"] = f"content {i}".encode()
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        (source / rel).write_bytes(made[f"raw/{rel}"])
    skeep.create_project("imaging-2026")
    skeep.set_metadata("imaging-2026", {"creators": [{"name": "Imaging Facility"}]})
    skeep.ingest(source, "imaging-2026/s017", seal=True)
    configure(skeep, server, max_files=4)
    monkeypatch.setenv("LABKEEP_INVENIO_TOKEN", TOKEN)
    dry = skeep.publish("imaging-2026/s017", to="invenio", dry_run=True)
    assert [(f["key"], f.get("folder"), f.get("files")) for f in dry.files] == [
        ("plate0.zip", "raw/plate0", 3),
        ("plate1.zip", "raw/plate1", 3),
        ("plate2.zip", "raw/plate2", 3),
        ("root-files.zip", "raw", 3),
    ]
    result = publish(skeep, "imaging-2026/s017", waits)
    assert result.packaged and result.files_total == 4
    [record] = server.published()
    unpacked: dict[str, bytes] = {}
    for entry in record.files.values():
        with zipfile.ZipFile(io.BytesIO(entry.data or b"")) as archive:
            for info in archive.infolist():
                assert info.filename not in unpacked
                unpacked[info.filename] = archive.read(info)
    assert unpacked == made
