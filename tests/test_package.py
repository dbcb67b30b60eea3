"""`labkeep export P/D[@N] --format bagit|bia --to DIR [--zip]`: BagIt bags (RFC 8493)
with an RO-Crate inside and BioImage Archive packages, checked by the tools a repository
or an archive would run on them."""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
import zipfile
from pathlib import Path

import bagit
import pytest
from rocrate_validator import services
from rocrate_validator.models import ValidationSettings
from sqlalchemy import func, select, update

from labkeep import Keep
from labkeep.catalog import Dataset, Digest
from labkeep.errors import Busy, NotFound, UsageError
from labkeep.ops import package
from labkeep.ops.runs import RunRequest
from tests.conftest import unseal_tree
from tests.test_cli import records, run

pytestmark = pytest.mark.filterwarnings("ignore:ConjunctiveGraph is deprecated:DeprecationWarning")
P = "imaging-2026"
HOSTILE = {
    "title": "<script>alert('x')</script> Zellkerne — 細胞核 & <b>masks</b>",
    "description": "<img src=x onerror=alert(1)> " + "very long abstract. " * 449 + "End.",
    "creators": [
        {"name": "Żółć, Łukasz", "given": "Łukasz", "family": "Żółć",
         "orcid": "0000-0002-1825-0097", "affiliation": "EMBL", "ror": "https://ror.org/03mstc592"},
        {"name": "山田 太郎", "given": "太郎", "family": "山田"},
    ],
    "license": "CC-BY-4.0",
    "keywords": ["nuclei", "Ядро клетки"],
    "funding": [{"funder": "Deutsche Forschungsgemeinschaft", "award": "SFB 1234"}],
}  # fmt: skip
FILES = {
    "masks/cell 01.png": b"mask one",
    "tables/areas.csv": b"cell,area\n1,10\n",
    "odd/ünïcödé ñame.txt": "naïve".encode(),
    "odd/line\nbreak.txt": b"newline in the name",
    "odd/tab\there.txt": b"tab",
}


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)


def make(keep: Keep, name: str, files: dict[str, bytes], *, kind: str = "analysis") -> str:
    if P not in {p.name for p in keep.list_projects()}:
        keep.create_project(P)
    keep.create_dataset(f"{P}/{name}", kind=kind, title=name)
    wt = keep.tree.dataset_dir(P, name)
    for path, data in files.items():
        write(wt / path, data)
    keep.save(f"{P}/{name}", message="first")
    return f"{P}/{name}"


def crate_issues(crate: Path, cache: Path, profile: str = "ro-crate-1.1") -> list[str]:
    settings = ValidationSettings(
        rocrate_uri=str(crate), profile_identifier=profile, requirement_severity="REQUIRED",
        offline=True, cache_path=cache,
    )  # fmt: skip
    result = services.validate(settings)
    return [f"{i.check.identifier} {i.check.name}: {i.message}" for i in result.get_issues()]


def rfc8493_check(bag: Path) -> dict[str, str]:
    """An independent reading of a bag as RFC 8493 defines it: every manifest line's path
    percent-decoded (%0D, %0A, %25), every payload file listed once, every digest right."""
    listed: dict[str, str] = {}
    for alg in ("sha256", "sha512"):
        for line in (bag / f"manifest-{alg}.txt").read_text(encoding="utf-8").splitlines():
            digest, path = line.split("  ", 1)
            path = path.replace("%0D", "\r").replace("%0A", "\n").replace("%25", "%")
            assert hashlib.new(alg, (bag / path).read_bytes()).hexdigest() == digest, path
            listed[path] = digest if alg == "sha256" else listed[path]
    on_disk = {str(p.relative_to(bag)) for p in (bag / "data").rglob("*") if p.is_file()}
    assert on_disk == set(listed)
    for alg in ("sha256", "sha512"):
        for line in (bag / f"tagmanifest-{alg}.txt").read_text(encoding="utf-8").splitlines():
            digest, path = line.split("  ", 1)
            assert hashlib.new(alg, (bag / path).read_bytes()).hexdigest() == digest
    return listed


def bag_info(bag: Path) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in
                (bag / "bag-info.txt").read_text(encoding="utf-8").splitlines())  # fmt: skip


def test_a_bag_passes_bagit_validation_and_its_crate_the_ro_crate_validator(
    keep: Keep, tmp_path: Path, validator_cache: Path
) -> None:
    files = {k: v for k, v in FILES.items() if "\t" not in k}
    address = make(keep, "seg", files)
    keep.set_metadata(address, HOSTILE)
    report = keep.export_package(address, tmp_path / "out")
    assert report.info["finished"] and report.counts() == {"ok": len(files)}
    bag = tmp_path / "out" / "seg-v1"
    assert (bag / "bagit.txt").read_text() == (
        "BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n"
    )
    # the library's full validation, checksums included, and its command line
    bagit.Bag(str(bag)).validate(processes=1, fast=False)
    cli = subprocess.run([sys.executable, "-m", "bagit", "--validate", str(bag)],
                         capture_output=True, text=True)  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert "is valid" in cli.stderr
    listed = rfc8493_check(bag)
    for path, data in files.items():
        assert (bag / "data" / path).read_bytes() == data
        assert listed[f"data/{path}"] == hashlib.sha256(data).hexdigest()
    manifest = (bag / "manifest-sha256.txt").read_text(encoding="utf-8")
    assert "data/odd/line%0Abreak.txt" in manifest and "data/odd/ünïcödé ñame.txt" in manifest
    assert "data/masks/cell 01.png" in manifest
    info = bag_info(bag)
    assert info["Payload-Oxum"].endswith(f".{len(files) + 1}")  # + the crate
    assert info["Contact-Name"] == "Żółć, Łukasz" and info["Source-Organization"] == "labkeep"
    assert info["External-Description"].startswith("<script>alert('x')</script> Zellkerne")
    assert info["Bagging-Date"] and info["Bag-Size"] and info["Bag-Software-Agent"]
    assert info["External-Identifier"].startswith("urn:uuid:")
    # the crate: valid RO-Crate 1.1, the metadata as given, every file with size and SHA-256
    assert crate_issues(bag / "data", validator_cache) == []
    crate = json.loads((bag / "data" / "ro-crate-metadata.json").read_text(encoding="utf-8"))
    graph = {e["@id"]: e for e in crate["@graph"]}
    root = graph["./"]
    assert root["name"] == HOSTILE["title"] and root["description"] == HOSTILE["description"]
    assert root["license"] == {"@id": "https://spdx.org/licenses/CC-BY-4.0"}
    assert root["datePublished"]
    person = graph["https://orcid.org/0000-0002-1825-0097"]
    assert person["@type"] == "Person" and person["affiliation"] == {
        "@id": "https://ror.org/03mstc592"
    }
    assert {e["name"] for e in crate["@graph"] if e["@type"] == "Person"} == {
        "Żółć, Łukasz", "山田 太郎"
    }  # fmt: skip
    entities = {e["name"]: e for e in crate["@graph"] if e["@type"] == "File"}
    assert entities["line\nbreak.txt"]["@id"] == "odd/line%0Abreak.txt"
    assert entities["cell 01.png"]["contentSize"] == "8"
    assert entities["cell 01.png"]["sha256"] == hashlib.sha256(b"mask one").hexdigest()
    assert len(root["hasPart"]) == len(files)


def test_a_percent_sign_is_encoded_as_rfc_8493_requires(keep: Keep, tmp_path: Path) -> None:
    address = make(keep, "pct", {"50% done.txt": b"half", "a%0Ab.txt": b"literal"})
    keep.config.web = dataclasses.replace(keep.config.web, base_url="https://keep.example.org")
    keep.export_package(address, tmp_path)
    bag = tmp_path / "pct-v1"
    landing = "https://keep.example.org/p/imaging-2026/pct/@1"
    assert bag_info(bag)["External-Identifier"] == landing
    manifest = (bag / "manifest-sha256.txt").read_text(encoding="utf-8")
    assert "data/50%25 done.txt" in manifest and "data/a%250Ab.txt" in manifest
    rfc8493_check(bag)
    # bagit-python 1.9 decodes only %0D and %0A (its issue #157): it misreads such names
    with pytest.raises(bagit.BagValidationError):
        bagit.Bag(str(bag)).validate()


def test_an_old_version_comes_from_the_versions_store_and_a_second_package_reads_nothing(
    keep: Keep, tmp_path: Path
) -> None:
    address = make(keep, "seg", {"tables/areas.csv": b"cell,area\n1,10\n", "b.txt": b"bee"})
    wt = keep.tree.dataset_dir(P, "seg")
    time.sleep(0.01)
    write(wt / "tables" / "areas.csv", b"cell,area\n1,12\n")
    keep.save(address, message="second")
    first = keep.export_package(f"{address}@1", tmp_path / "a")
    assert first.info["finished"] and first.info["bytes_read"] == 15 + 3
    bag = tmp_path / "a" / "seg-v1"
    assert (bag / "data" / "tables" / "areas.csv").read_bytes() == b"cell,area\n1,10\n"
    bagit.Bag(str(bag)).validate()
    with keep.catalog.read() as session:
        assert session.execute(select(func.count()).select_from(Digest)).scalar_one() == 2
    # digests are known now: a second package of the same content hashes no byte
    again = keep.export_package(f"{address}@1", tmp_path / "b")
    assert again.info["finished"] and again.info["bytes_read"] == 15  # old content: a store
    head = keep.export_package(address, tmp_path / "b")
    assert head.info["bytes_read"] == 15  # the new areas.csv, read once
    head_again = keep.export_package(address, tmp_path / "c")
    assert head_again.info["bytes_read"] == 0
    bagit.Bag(str(tmp_path / "c" / "seg-v2")).validate()
    # asking again for a finished package does nothing
    assert keep.export_package(address, tmp_path / "c").info["status"] == "notneeded"


def test_a_release_is_packaged_at_its_source_paths(keep: Keep, tmp_path: Path,
                                                  validator_cache: Path) -> None:  # fmt: skip
    address = make(keep, "seg", {"masks/a.png": b"png", "tables/t.csv": b"t"})
    keep.release(f"{address}@1", name="seg-v1")
    with keep.catalog.write() as session:  # as a deposit records it
        session.execute(
            update(Dataset).where(Dataset.name == "seg-v1").values(doi="10.5281/zenodo.42")
        )
    real_zip = package._zip

    def cut_short(bag: Path, final: Path, label: str) -> None:
        (final.parent / f".{final.name}.labkeep-part").write_bytes(b"PK half a zip")
        raise KeyboardInterrupt

    package._zip = cut_short  # type: ignore[assignment]
    try:
        with pytest.raises(KeyboardInterrupt):
            keep.export_package(f"{P}/seg-v1", tmp_path, zip=True)
    finally:
        package._zip = real_zip  # type: ignore[assignment]
    assert not (tmp_path / "seg-v1.zip").exists()
    report = keep.export_package(f"{P}/seg-v1", tmp_path, zip=True)
    assert report.info["finished"]
    archive = tmp_path / "seg-v1.zip"
    assert not (tmp_path / "seg-v1").exists() and not list(tmp_path.glob(".*"))
    with zipfile.ZipFile(archive) as zf:
        names = zf.namelist()
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_STORED}
        zf.extractall(tmp_path / "x")
    assert "seg-v1/data/masks/a.png" in names and "seg-v1/bagit.txt" in names
    assert not any("/raw/" in n for n in names)
    bagit.Bag(str(tmp_path / "x" / "seg-v1")).validate()
    assert crate_issues(tmp_path / "x" / "seg-v1" / "data", validator_cache) == []
    doi = "https://doi.org/10.5281/zenodo.42"
    assert bag_info(tmp_path / "x" / "seg-v1")["External-Identifier"] == doi
    crate = json.loads((tmp_path / "x" / "seg-v1" / "data" / "ro-crate-metadata.json").read_text())
    assert next(e for e in crate["@graph"] if e["@id"] == "./")["identifier"] == doi


def test_a_damaged_tree_file_is_refused_and_no_bag_claims_it(keep: Keep, tmp_path: Path) -> None:
    address = make(keep, "seg", {"a.txt": b"alpha", "b.txt": b"bravo"})
    target = keep.tree.dataset_dir(P, "seg") / "b.txt"
    st = target.stat()
    write(target, b"brave")  # bit rot: same size, mtime put back
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    report = keep.export_package(address, tmp_path / "a")
    assert not report.info["finished"]
    assert [(r.path, r.status) for r in report.results] == [("b.txt", "error")]
    assert "does not match its SHA-256" in (report.results[0].message or "")
    bag = tmp_path / "a" / "seg-v1"
    assert not (bag / "manifest-sha256.txt").exists()
    assert not (bag / "tagmanifest-sha512.txt").exists()
    assert not (bag / "data" / "b.txt").exists()
    # once the digests are known the quick check (size, mtime) guards the kernel copy, and
    # --verify reads every byte: a damage with the mtime put back is still found
    write(target, b"bravo")
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert keep.export_package(address, tmp_path / "a").info["finished"]
    write(target, b"brave")  # mtime changed: the quick check fails, a good copy is used
    assert keep.export_package(address, tmp_path / "b").info["finished"]
    assert (tmp_path / "b" / "seg-v1" / "data" / "b.txt").read_bytes() == b"bravo"
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    checked = keep.export_package(address, tmp_path / "c", verify=True)
    assert not checked.info["finished"] and checked.results[0].path == "b.txt"


def test_a_folder_that_is_something_else_is_not_written_into(keep: Keep, tmp_path: Path) -> None:
    address = make(keep, "seg", {"a.txt": b"alpha"})
    (tmp_path / "seg-v1").mkdir()
    (tmp_path / "seg-v1" / "mine.txt").write_text("mine")
    with pytest.raises(Exception, match="is not an unfinished package"):
        keep.export_package(address, tmp_path)
    # an export running into the same folder holds its marker locked: a second is refused
    running = tmp_path / "running"
    (running / "seg-v1").mkdir(parents=True)
    marker = running / "seg-v1" / ".labkeep-package"
    marker.write_text(json.dumps({"source": f"{address}@1", "format": "bagit"}))
    with open(marker) as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(Busy):
            keep.export_package(address, running)
    assert keep.export_package(address, running).info["finished"]
    with pytest.raises(UsageError):
        keep.export_package(address, tmp_path, format="tar")
    with pytest.raises(UsageError, match="inside the keep"):
        keep.export_package(address, keep.tree.dataset_dir(P, "seg") / "out")
    with pytest.raises(UsageError):
        keep.export_package(f"{address}@7", tmp_path / "n")
    keep.add_user("bob", password="a long enough password")
    bob = keep.acting_as(keep.principal_for("bob"))
    with pytest.raises(NotFound):
        bob.export_package(address, tmp_path / "bob")
    assert not (tmp_path / "bob").exists() or not any((tmp_path / "bob").iterdir())


def test_a_bioimage_archive_package(keep: Keep, tmp_path: Path) -> None:
    address = make(keep, "s017", {k: v for k, v in FILES.items() if "\n" not in k}, kind="session")
    keep.set_metadata(address, HOSTILE)
    report = keep.export_package(address, tmp_path, format="bia")
    # a tab cannot be written in a file list: reported, package not finished
    assert not report.info["finished"]
    assert [(r.path, r.status) for r in report.results] == [("odd/tab\there.txt", "impossible")]
    wt = keep.tree.dataset_dir(P, "s017")
    (wt / "odd" / "tab\there.txt").rename(wt / "odd" / "tab here.txt")
    keep.save(address, message="renamed")
    report = keep.export_package(address, tmp_path, format="bia")
    assert report.info["finished"], report.info
    pkg = tmp_path / "s017-v2-bia"
    rows = (pkg / "file_list.tsv").read_text(encoding="utf-8").splitlines()
    assert rows[0] == "Files\tsize\tsha256"
    assert f"files/masks/cell 01.png\t8\t{hashlib.sha256(b'mask one').hexdigest()}" in rows
    assert len(rows) == 1 + 4
    for row in rows[1:]:
        assert (pkg / row.split("\t")[0]).is_file()
    listed = json.loads((pkg / "file_list.json").read_text(encoding="utf-8"))
    assert [f["path"] for f in listed] == [r.split("\t")[0] for r in rows[1:]]
    tsv = (pkg / "submission.tsv").read_text(encoding="utf-8")
    blocks = [b.splitlines() for b in tsv.strip().split("\n\n")]
    assert [b[0].split("\t")[0] for b in blocks] == [
        "Submission", "Study", "Author", "Author", "Organization", "Funding", "Study Component"
    ]  # fmt: skip
    assert all(len(line.split("\t")) == 2 for b in blocks for line in b[1:])
    study = dict(line.split("\t") for line in blocks[1][1:] if not line.startswith("Keywords"))
    assert study["Title"] == HOSTILE["title"] and study["License"] == "CC-BY-4.0"
    assert "ORCID\t0000-0002-1825-0097" in blocks[2] and "<affiliation>\to1" in blocks[2]
    assert "File List\tfile_list.tsv" in blocks[-1]
    doc = json.loads((pkg / "submission.json").read_text(encoding="utf-8"))
    assert doc["section"]["attributes"][1]["value"] == HOSTILE["description"]
    assert "Biosample" in (pkg / "README.txt").read_text()
    assert not (pkg / ".labkeep-package").exists()


def test_the_crate_holds_the_run_that_made_the_version(
    keep: Keep, tmp_path: Path, validator_cache: Path
) -> None:
    keep.create_project(P)
    keep.create_dataset(f"{P}/seg", kind="analysis")
    code = "import sys,pathlib; pathlib.Path(sys.argv[1], 'mask.png').write_bytes(b'm')"
    record = keep.run(RunRequest([sys.executable, "-c", code, "{outputs}"], output=f"{P}/seg"),
                      echo=False)  # fmt: skip
    assert record["state"] == "done"
    keep.export_package(f"{P}/seg@1", tmp_path)
    data = tmp_path / "seg-v1" / "data"
    crate = json.loads((data / "ro-crate-metadata.json").read_text(encoding="utf-8"))
    graph = {e["@id"]: e for e in crate["@graph"]}
    action = graph[f"#run-{record['id']}"]
    assert action["@type"] == "CreateAction" and action["result"] == {"@id": "mask.png"}
    assert graph["./"]["conformsTo"] == {"@id": "https://w3id.org/ro/wfrun/process/0.5"}
    assert [e["@id"] for e in crate["@graph"]].count("mask.png") == 1
    assert crate_issues(data, validator_cache, "process-run-crate-0.5") == []
    bagit.Bag(str(tmp_path / "seg-v1")).validate()


def test_memory_does_not_grow_with_the_file_count(keep: Keep, tmp_path: Path) -> None:
    peaks = []
    for n in (150, 1500):
        src = tmp_path / f"src{n}"
        for i in range(n):
            write(src / f"d{i % 7}" / f"f{i:05}.txt", b"x" * (i % 50))
        keep.ingest(src, f"proj/m{n}")
        tracemalloc.start()
        report = keep.export_package(f"proj/m{n}", tmp_path / "out")
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert report.info["finished"] and report.info["files"] == n
    # ten times the files, about the same peak (a list of them would add ~1 KB a file)
    assert peaks[1] < peaks[0] * 1.3 + 300_000, peaks


def test_a_killed_export_resumes_without_copying_again(keep_root: Path, tmp_path: Path) -> None:
    keep = Keep.init(keep_root)
    keep.create_project("proj")
    src = tmp_path / "src"
    for i in range(400):
        write(src / f"f{i:04}.bin", os.urandom(64 * 1024))
    keep.ingest(src, "proj/big", seal=True)
    head = keep.get_dataset("proj/big").head_version
    keep.close()
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABKEEP_")}
    with open(tmp_path / "stderr", "w") as errors:
        proc = subprocess.Popen(
            [sys.executable, "-m", "labkeep", "export", "proj/big", "--to", str(out),
             "--root", str(keep_root), "-j", "1", "--json"], env=env,
            stdout=subprocess.DEVNULL, stderr=errors,
        )  # fmt: skip
    bag = out / f"big-v{head}"
    data = bag / "data" / "raw"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done = [p for p in data.glob("f*.bin")] if data.exists() else []
        if len(done) >= 40:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = {p.name: p.stat().st_ino for p in data.glob("f*.bin")}
    assert 40 <= len(finished) < 400, (tmp_path / "stderr").read_text()
    assert not (bag / "tagmanifest-sha512.txt").exists()
    again = run("export", "proj/big", "--to", str(out), "--root", str(keep_root), "--json")
    summary = records(again)[-1]
    assert summary["finished"] is True
    assert summary["summary"].get("notneeded", 0) >= len(finished)
    for name, inode in finished.items():
        assert (data / name).stat().st_ino == inode  # kept, not copied again
    assert not list(bag.rglob("*.labkeep-part")) and not (bag / ".labkeep-package").exists()
    bagit.Bag(str(bag)).validate(processes=2)
    unseal_tree(keep_root)  # so that pytest can delete its folders


def test_cli(keep_root: Path, tmp_path: Path) -> None:
    keep = Keep.init(keep_root)
    address = make(keep, "s1", {"a b.txt": b"alpha", "tab\there.txt": b"tab"}, kind="session")
    keep.close()
    root = ["--root", str(keep_root)]
    refused = run("export", address, "--format", "bia", "--to", str(tmp_path / "o"), *root,
                  check=1)  # fmt: skip
    assert "IMPOSSIBLE" in refused.stdout and "tab\\there.txt" in refused.stdout
    assert "run the same command again" in refused.stderr
    done = run("export", address, "--to", str(tmp_path / "o"), *root)
    assert "package: " in done.stdout and (tmp_path / "o" / "s1-v1" / "bagit.txt").is_file()
    again = records(run("export", address, "--to", str(tmp_path / "o"), *root, "--json"))
    assert again[-1]["status"] == "notneeded" and again[-1]["finished"] is True
    wrong = run("export", address, "--to", str(tmp_path / "o"), "--format", "tar", *root, check=2)
    assert "unknown package format" in wrong.stderr
