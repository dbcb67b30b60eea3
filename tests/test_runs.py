"""`labkeep run` / `runs` / `rerun`: recorded commands on pinned inputs, locally.

Real processes, real catalogs (SQLite and PostgreSQL); SLURM runs are in
tests/test_slurm_runs.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from labkeep import Keep
from labkeep.catalog import Entry, Run, Version
from labkeep.errors import NotFound, UsageError
from labkeep.ops.runs import RunRequest
from tests.conftest import make_files
from tests.test_cli import records, run

PY = sys.executable

#: a segmentation stand-in: one mask per raw file (upper-cased) and a table
SEGMENT = """
import sys, pathlib
inp, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
(out / "masks").mkdir()
rows = []
for f in sorted(p for p in (inp / "raw").rglob("*") if p.is_file()):
    rel = str(f.relative_to(inp / "raw")).replace("/", "_")
    data = f.read_bytes()
    (out / "masks" / (rel + ".mask")).write_bytes(data.upper())
    rows.append(f"{rel},{len(data)}")
(out / "table.csv").write_text("file,size\\n" + "\\n".join(rows) + "\\n")
"""


@pytest.fixture
def session_in(keep: Keep, tmp_path: Path) -> str:
    """A sealed acquisition session (version 2) to read from."""
    src = tmp_path / "acq"
    make_files(src, 5, min_size=10, max_size=200)
    keep.ingest(src, "proj/s017")
    keep.seal("proj/s017")
    keep.create_dataset("proj/seg", kind="analysis")
    return "proj/s017"


def outputs(record: dict[str, Any]) -> dict[str, str]:
    return {o["path"]: o["sha256"] for o in record["outputs"]}


def test_run_records_everything_and_saves_a_version(keep: Keep, session_in: str) -> None:
    record = keep.run(
        RunRequest(
            [PY, "-c", SEGMENT, "{inputs}", "{outputs}"],
            inputs=[session_in],
            output="proj/seg",
            message="U-Net v2 masks",
        ),
        echo=False,
    )
    assert record["state"] == "done" and record["exit_code"] == 0 and record["version"] == 1
    # inputs pinned to the head (2: ingest + seal) with that version's manifest digest
    with keep.catalog.read() as session:
        manifest = session.execute(
            select(Version.manifest_sha256).where(Version.number == 2, Version.kind == "seal")
        ).scalar_one()
        made = session.execute(select(Version).where(Version.run_id == record["id"])).scalar_one()
        assert (made.number, made.kind, made.message) == (1, "run", "U-Net v2 masks")
    assert record["inputs"] == [
        {
            "address": "proj/s017@2",
            "dataset": "proj/s017",
            "path": None,
            "version": 2,
            "manifest_sha256": manifest,
            "url": None,
        }
    ]
    # the command as given and as run (placeholders replaced by the staging folders)
    assert record["command"][-2:] == ["{inputs}", "{outputs}"]
    assert record["argv"][-2].endswith("/inputs/proj/s017") and record["argv"][-1].endswith(
        "/outputs"
    )
    # environment, times, user, executor
    env = record["environment"]
    assert env["python"]["version"] == ".".join(map(str, sys.version_info[:3]))
    assert env["host"] and "gpu" in env
    assert record["user"] == keep.actor and record["executor"] == "local"
    assert record["started_at"] <= record["finished_at"] and record["duration_seconds"] >= 0
    # outputs with their hashes, in the dataset, with the record beside them
    outs = outputs(record)
    assert "table.csv" in outs and sum(p.startswith("masks/") for p in outs) == 5
    seg = keep.tree.dataset_dir("proj", "seg")
    for path, digest in outs.items():
        import hashlib

        assert hashlib.sha256((seg / path).read_bytes()).hexdigest() == digest
    prov = json.loads((seg / f"provenance/run-{record['id']}.json").read_text())
    assert prov["id"] == record["id"] and prov["inputs"] == record["inputs"]
    assert {o["path"] for o in prov["outputs"]} == set(outs)
    # the staging folder is gone; the sealed inputs were linked, not copied
    assert record["settings"]["staged"] == {"linked": 5, "copied": 0}
    assert not (keep.config.runs_path / str(record["id"])).exists()
    # what was made from the input
    assert [r["id"] for r in keep.runs_from("proj/s017")] == [record["id"]]
    assert [r["id"] for r in keep.runs_of_version("proj/seg@1")] == [record["id"]]


def two_versions(keep: Keep) -> Path:
    """proj/notes with a.txt at "version one" (@1) and "version two" (@2), and an empty
    analysis dataset proj/out; the notes' working tree."""
    keep.create_dataset("proj/notes", kind="analysis")
    notes = keep.tree.dataset_dir("proj", "notes")
    (notes / "a.txt").write_text("version one")
    keep.save("proj/notes")
    time.sleep(0.01)
    (notes / "a.txt").write_text("version two")
    keep.save("proj/notes")
    keep.create_dataset("proj/out", kind="analysis")
    return notes


def test_inputs_are_read_only_and_old_versions_are_staged(keep: Keep, tmp_path: Path) -> None:
    notes = two_versions(keep)
    # the command tries to write into its input: the original stays as it was
    vandal = (
        "import sys, pathlib; p = pathlib.Path(sys.argv[1]) / 'a.txt'\n"
        "try:\n    p.write_text('vandalised')\nexcept OSError as e:\n    print('refused', e)\n"
        "(pathlib.Path(sys.argv[2]) / 'seen.txt').write_text(p.read_text())"
    )
    record = keep.run(
        RunRequest(
            [PY, "-c", vandal, "{inputs}", "{outputs}"], inputs=["proj/notes@1"], output="proj/out"
        ),
        echo=False,
    )
    assert record["state"] == "done"
    assert record["inputs"][0]["version"] == 1  # the old version, from the versions store
    assert record["settings"]["staged"]["copied"] == 1
    assert (notes / "a.txt").read_text() == "version two"
    _, handle = keep.open_file("proj/notes/a.txt@1")
    with handle:
        assert handle.read() == b"version one"


def test_failed_runs_save_nothing_unless_asked(keep: Keep, session_in: str) -> None:
    failing = (
        "import sys, pathlib; (pathlib.Path(sys.argv[1]) / 'half.txt').write_text('x'); "
        "print('segmentation failed: out of memory', file=sys.stderr); sys.exit(3)"
    )
    record = keep.run(
        RunRequest([PY, "-c", failing, "{outputs}"], inputs=[session_in], output="proj/seg"),
        echo=False,
    )
    assert (record["state"], record["exit_code"], record["version"]) == ("failed", 3, None)
    assert "exited with code 3" in record["error"]
    assert "out of memory" in record["stderr_tail"]
    assert keep.versions("proj/seg") == []
    assert outputs(record) == {"half.txt": outputs(record)["half.txt"]}  # hashed all the same
    kept = keep.run(
        RunRequest(
            [PY, "-c", failing, "{outputs}"],
            inputs=[session_in],
            output="proj/seg",
            save_failed=True,
        ),
        echo=False,
    )
    assert kept["state"] == "failed" and kept["version"] == 1
    # a command that does not exist: a clear error, a failed record
    from labkeep.ops.runs import RunFailed

    with pytest.raises(RunFailed, match="could not be started"):
        keep.run(RunRequest(["/no/such/program"], output="proj/seg"), echo=False)
    assert keep.list_runs("proj/seg")[0]["state"] == "failed"
    # bad requests are refused before anything is recorded
    before = len(keep.list_runs())
    with pytest.raises(UsageError):
        keep.run(RunRequest([PY, "-c", "0"], inputs=["proj/s017@9"], output="proj/seg"))
    with pytest.raises(NotFound):
        keep.run(RunRequest([PY, "-c", "0"], inputs=["proj/nope"], output="proj/seg"))
    with pytest.raises(UsageError):
        keep.run(RunRequest([PY, "-c", "0"], output="proj/seg@1"))
    assert len(keep.list_runs()) == before


def test_rerun_reports_identical_and_differing_outputs(keep: Keep, session_in: str) -> None:
    first = keep.run(
        RunRequest(
            [PY, "-c", SEGMENT, "{inputs}", "{outputs}"], inputs=[session_in], output="proj/seg"
        ),
        echo=False,
    )
    again = keep.rerun(first["id"], echo=False)
    assert again["rerun_of"] == first["id"] and again["state"] == "done"
    comparison = again["comparison"]
    assert len(comparison["identical"]) == 6 and not comparison["differing"]
    assert again["version"] is None  # compared, not saved
    noisy = (
        "import sys, os, pathlib; (pathlib.Path(sys.argv[1]) / 'r.bin').write_bytes(os.urandom(8))"
        "; (pathlib.Path(sys.argv[1]) / 'same.txt').write_text('same')"
    )
    rand = keep.run(RunRequest([PY, "-c", noisy, "{outputs}"], output="proj/seg"), echo=False)
    redo = keep.rerun(rand["id"], echo=False, save=True)
    differing = redo["comparison"]["differing"]
    assert [d["path"] for d in differing] == ["r.bin"]
    assert differing[0]["old_sha256"] == outputs(rand)["r.bin"]
    assert differing[0]["new_sha256"] == outputs(redo)["r.bin"]
    assert [i["path"] for i in redo["comparison"]["identical"]] == ["same.txt"]
    assert redo["version"] == rand["version"] + 1


def test_background_runs_are_run_by_a_worker(keep: Keep, session_in: str) -> None:
    from labkeep.ops.run_slurm import queue_local
    from labkeep.ops.worker import JobWorker

    queued = queue_local(
        keep,
        RunRequest(
            [PY, "-c", SEGMENT, "{inputs}", "{outputs}"], inputs=[session_in], output="proj/seg"
        ),
    )
    assert queued["state"] == "queued" and queued["job_id"]
    JobWorker(keep, drain=True, log=io.StringIO(), schedule=False).run()
    done = keep.get_run(queued["id"])
    assert done["state"] == "done" and done["version"] == 1 and len(done["outputs"]) == 6
    assert keep.get_job(queued["job_id"]).state == "done"


def test_a_killed_run_is_marked_failed_and_saves_nothing(tmp_path: Path) -> None:
    root = tmp_path / "keep"
    run("init", str(root))
    run("project", "create", "proj", "--root", str(root))
    run("dataset", "create", "proj/out", "--kind", "analysis", "--root", str(root))
    proc = subprocess.Popen(
        [
            PY,
            "-m",
            "labkeep",
            "run",
            "-o",
            "proj/out",
            "--root",
            str(root),
            "--",
            PY,
            "-c",
            "import time, sys, pathlib; (pathlib.Path(sys.argv[1]) / 'x').write_text('x');"
            " time.sleep(60)",
            "{outputs}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    keep = Keep.open(root)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            rows = keep.list_runs()
            if rows and rows[0]["state"] == "running" and rows[0]["argv"]:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the run did not start")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=10)
        record = keep.list_runs()[0]
        assert record["state"] == "failed" and "died" in record["error"]
        assert keep.versions("proj/out") == []
    finally:
        keep.close()


def test_eight_concurrent_runs_into_one_dataset(tmp_path: Path, catalog_url: str | None) -> None:
    """8 `labkeep run` processes at once: 8 records, 8 versions, never mixed outputs,
    catalog == tree == manifest."""
    root = tmp_path / "keep"
    run("init", str(root), *(["--catalog", catalog_url] if catalog_url else []))
    run("project", "create", "proj", "--root", str(root))
    run("dataset", "create", "proj/seg", "--kind", "analysis", "--root", str(root))
    job = (
        "import sys, pathlib, time; out = pathlib.Path(sys.argv[1]); n = sys.argv[2]\n"
        "(out / 'shared.txt').write_text('written by run ' + n)\n"
        "(out / 'per-run').mkdir(); (out / 'per-run' / (n + '.txt')).write_text(n * 1000)\n"
        "time.sleep(0.2)"
    )
    procs = [
        subprocess.Popen(
            [
                PY,
                "-m",
                "labkeep",
                "run",
                "-o",
                "proj/seg",
                "-m",
                f"run {i}",
                "--json",
                "--root",
                str(root),
                "--",
                PY,
                "-c",
                job,
                "{outputs}",
                str(i),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(8)
    ]
    results = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
        results.append(json.loads(stdout.splitlines()[-1]))
    keep = Keep.open(root)
    try:
        runs = keep.list_runs("proj/seg")
        assert len(runs) == 8 and {r["state"] for r in runs} == {"done"}
        versions = sorted(r["version"] for r in runs)
        assert versions == list(range(1, 9))
        with keep.catalog.read() as session:
            made = dict(session.execute(select(Version.number, Version.run_id)).all())
        for r in results:
            n = r["message"].split()[-1]
            assert made[r["version"]] == r["id"]
            # the version this run made holds exactly its own shared.txt
            with keep.open_file(f"proj/seg/shared.txt@{r['version']}")[1] as handle:
                assert handle.read() == f"written by run {n}".encode()
            assert outputs(keep.get_run(r["id"]))["per-run/" + n + ".txt"]
        head = keep.ls("proj/seg/per-run")
        assert len(head.items) == 8
        verify = keep.verify("proj/seg")
        assert not verify.failed and verify.counts().get("ok") == 8 + 1 + 8
        dataset = root / "data" / "proj" / "seg"
        check = subprocess.run(
            ["sha256sum", "-c", "MANIFEST.sha256"], cwd=dataset, capture_output=True, text=True
        )
        assert check.returncode == 0 and check.stdout.count(": OK") == 17
        with keep.catalog.read() as session:
            assert session.execute(select(Run.state).where(Run.state != "done")).first() is None
            current = (
                session.execute(select(Entry.path).where(Entry.valid_to.is_(None))).scalars().all()
            )
            assert len(current) == 17
    finally:
        keep.close()


def test_cli_run_runs_rerun_show(tmp_path: Path) -> None:
    root = tmp_path / "keep"
    src = tmp_path / "acq"
    make_files(src, 3)
    run("init", str(root))
    run("project", "create", "imaging-2026", "--root", str(root))
    run("ingest", str(src), "imaging-2026/s017", "--seal", "--root", str(root))
    run("dataset", "create", "imaging-2026/seg-unet", "--kind", "analysis", "--root", str(root))
    done = run(
        "run",
        "-i",
        "imaging-2026/s017@2",
        "-o",
        "imaging-2026/seg-unet",
        "-m",
        "U-Net v2 masks",
        "--root",
        str(root),
        "--",
        PY,
        "-c",
        SEGMENT,
        "{inputs}",
        "{outputs}",
    )
    assert "saved as imaging-2026/seg-unet@1" in done.stdout
    listed = records(run("runs", "--json", "--root", str(root)))
    assert (
        listed[0]["state"] == "done" and listed[0]["inputs"][0]["address"] == "imaging-2026/s017@2"
    )
    table = run("runs", "--root", str(root))
    assert "imaging-2026/seg-unet@1" in table.stdout and "local" in table.stdout
    show = run("runs", "show", str(listed[0]["id"]), "--root", str(root))
    assert "U-Net v2 masks" in show.stdout and "imaging-2026/s017@2" in show.stdout
    same = run("rerun", str(listed[0]["id"]), "--root", str(root))
    assert "4 identical, 0 differing" in same.stdout
    failed = run(
        "run",
        "-o",
        "imaging-2026/seg-unet",
        "--root",
        str(root),
        "--",
        PY,
        "-c",
        "import sys; sys.exit(5)",
        check=1,
    )
    assert "exited with code 5" in failed.stderr and "Traceback" not in failed.stderr
    missing = run("run", "--root", str(root), "--", "true", check=2)
    assert "-o PROJECT/DATASET" in missing.stderr
    log = run("log", "imaging-2026/seg-unet", "--root", str(root))
    assert "run" in log.stdout


@pytest.mark.filterwarnings("ignore:ConjunctiveGraph is deprecated:DeprecationWarning")
def test_export_provenance_as_a_valid_process_run_crate(
    tmp_path: Path, validator_cache: Path
) -> None:
    """A version copied out with `get --to` plus its provenance: an RO-Crate the
    Process Run Crate validator accepts, naming the input, the outputs and the command."""
    from tests.test_provenance_export import required_issues

    root = tmp_path / "keep"
    src = tmp_path / "acq"
    make_files(src, 3)
    run("init", str(root))
    run("project", "create", "imaging-2026", "--root", str(root))
    run("ingest", str(src), "imaging-2026/s017", "--seal", "--root", str(root))
    run("dataset", "create", "imaging-2026/seg-unet", "--kind", "analysis", "--root", str(root))
    run("run", "-i", "imaging-2026/s017", "-o", "imaging-2026/seg-unet", "-m", "masks",
        "--root", str(root), "--", PY, "-c", SEGMENT, "{inputs}", "{outputs}")  # fmt: skip
    out = tmp_path / "out"
    out.mkdir()
    run("get", "imaging-2026/seg-unet@1", "--to", str(out), "--root", str(root))
    run("export-provenance", "imaging-2026/seg-unet@1", "--to", str(out / "seg-unet"),
        "--root", str(root))  # fmt: skip
    crate = json.loads((out / "seg-unet/ro-crate-metadata.json").read_text())
    graph = {e["@id"]: e for e in crate["@graph"]}
    actions = [e for e in graph.values() if e.get("@type") == "CreateAction"]
    assert len(actions) == 1
    action = actions[0]
    assert "import sys, pathlib" in action["description"]  # the command line
    results = {r["@id"] for r in action["result"]}
    assert "table.csv" in results and any(r.startswith("masks/") for r in results)
    assert len(action["object"]) == 1
    assert required_issues(out / "seg-unet", validator_cache) == []
    # the records as JSON, and a clear refusal for a version no run made
    as_json = records(run("export-provenance", "imaging-2026/seg-unet@1", "--format", "json",
                          "--root", str(root)))  # fmt: skip
    assert as_json[0]["output_dataset"] == "imaging-2026/seg-unet"
    none = run("export-provenance", "imaging-2026/s017@1", "--root", str(root), check=2)
    assert "no recorded run" in none.stderr
    # for scripts: the crate as one JSON line; wrong destinations are usage errors
    [printed] = records(run("export-provenance", "imaging-2026/seg-unet@1", "--json",
                            "--root", str(root)))  # fmt: skip
    assert {e["@id"] for e in printed["@graph"]} == set(graph)  # (datePublished: now)
    a_file = out / "seg-unet/table.csv"
    bad = run("export-provenance", "imaging-2026/seg-unet@1", "--to", str(a_file), "--json",
              "--root", str(root), check=2)  # fmt: skip
    assert json.loads(bad.stdout.splitlines()[-1])["error"] == "usage"
    bad = run("get", "imaging-2026/seg-unet@1", "--to", str(a_file), "--json",
              "--root", str(root), check=2)  # fmt: skip
    [record] = [json.loads(line) for line in bad.stdout.splitlines()]
    assert record["error"] == "usage" and "is a file" in record["message"]


def test_a_run_does_not_name_inputs_the_viewer_may_not_read(keep: Keep, session_in: str) -> None:
    """bob may read the output but not the private input: the record hides its name."""
    keep.add_user("bob", password="a long enough password")
    keep.grant("bob", "read", "proj/seg")
    record = keep.run(
        RunRequest([PY, "-c", SEGMENT, "{inputs}", "{outputs}"], inputs=[session_in],
                   output="proj/seg"), echo=False)  # fmt: skip
    bob = keep.acting_as(keep.principal_for("bob"))
    seen = bob.get_run(record["id"])
    assert seen["inputs"][0]["hidden"] and seen["inputs"][0]["manifest_sha256"] is None
    assert "s017" not in json.dumps(seen["inputs"])
    assert keep.get_run(record["id"])["inputs"][0]["address"] == "proj/s017@2"


def test_outputs_may_not_replace_raw_or_the_manifest(keep: Keep, session_in: str) -> None:
    """A run writing MANIFEST.sha256, .labkeep/ or raw/ fails clearly; nothing replaced."""
    seg = keep.tree.dataset_dir("proj", "seg")
    for bad in ("MANIFEST.sha256", "raw/x.dat", ".labkeep/lock"):
        script = (f"import sys, pathlib; p = pathlib.Path(sys.argv[1]) / {bad!r}; "
                  "p.parent.mkdir(parents=True, exist_ok=True); p.write_text('x')")  # fmt: skip
        with pytest.raises(UsageError, match="raw/"):
            keep.run(RunRequest([PY, "-c", script, "{outputs}"], output="proj/seg"), echo=False)
        assert keep.list_runs("proj/seg")[0]["state"] == "failed"
    assert not (seg / "raw").exists() and keep.versions("proj/seg") == []


def test_two_versions_of_one_dataset_are_both_inputs(keep: Keep, tmp_path: Path) -> None:
    two_versions(keep)
    both = (
        "import sys, pathlib; a, b, out = map(pathlib.Path, sys.argv[1:3] + sys.argv[-1:])\n"
        "(out / 'both.txt').write_text((a / 'a.txt').read_text() + '|' + (b / 'a.txt').read_text())"
    )
    inputs = ["proj/notes@1", "proj/notes@2", "proj/notes@2"]
    record = keep.run(
        RunRequest([PY, "-c", both, "{inputs}", "{outputs}"], inputs=inputs, output="proj/out"),
        echo=False,
    )
    assert record["state"] == "done", record.get("error")
    _, handle = keep.open_file("proj/out/both.txt")
    with handle:
        assert handle.read() == b"version one|version two"


def test_outputs_that_clash_move_nothing_and_outputs_never_saved_are_kept(
    keep: Keep, session_in: str
) -> None:
    seg = keep.tree.dataset_dir("proj", "seg")
    (seg / "x").mkdir()
    (seg / "x/in.txt").write_text("in")
    (seg / "y").write_text("a file")
    keep.save("proj/seg")
    clash = (
        "import sys, pathlib; o = pathlib.Path(sys.argv[1])\n"
        "(o / 'a.txt').write_text('a'); (o / 'x').write_text('x'); (o / 'y').mkdir()\n"
        "(o / 'y' / 'inner').write_text('inner')"
    )
    with pytest.raises(UsageError, match="2 outputs clash") as caught:
        keep.run(RunRequest([PY, "-c", clash, "{outputs}"], output="proj/seg"), echo=False)
    assert "x is a folder there" in caught.value.message
    assert "y is a file there" in caught.value.message
    assert not (seg / "a.txt").exists()  # all or nothing
    [record] = keep.list_runs("proj/seg")
    assert record["state"] == "failed"
    kept = keep.config.runs_path / str(record["id"]) / "outputs"
    assert (kept / "a.txt").read_text() == "a" and (kept / "y/inner").read_text() == "inner"
    # a name a version cannot hold: the rest is saved, that one stays where it was written
    odd = (
        "import sys, os; o = sys.argv[1]\n"
        "open(os.fsencode(o) + b'/res\\xff', 'wb').write(b'precious')\n"
        "open(o + '/good.txt', 'w').write('good')"
    )
    record = keep.run(RunRequest([PY, "-c", odd, "{outputs}"], output="proj/seg"), echo=False)
    assert record["state"] == "done"
    assert any("not UTF-8" in p for p in record["problems"])
    left = keep.config.runs_path / str(record["id"]) / "outputs"
    with open(os.fsencode(left) + b"/res\xff", "rb") as handle:
        assert handle.read() == b"precious"
    assert (seg / "good.txt").read_text() == "good"


def test_run_ids_no_catalog_can_hold_are_not_found(keep: Keep, tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        keep.get_run(10**24)
    root = tmp_path / "cli-keep"
    run("init", str(root))
    for args in (["runs", "show", str(10**24)], ["rerun", "abc"], ["runs", "show", "abc"]):
        out = run(*args, "--json", "--root", str(root), check=2)
        last = json.loads(out.stdout.strip().splitlines()[-1])
        assert last["status"] == "error" and last["error"] in ("not-found", "usage"), last


def test_unsaved_work_an_output_replaces_is_kept_and_named(keep: Keep, session_in: str) -> None:
    from labkeep.ops.content import open_replica

    seg = keep.tree.dataset_dir("proj", "seg")
    (seg / "r.txt").write_text("saved")
    keep.save("proj/seg")
    time.sleep(0.01)
    (seg / "r.txt").write_text("UNSAVED PRECIOUS WORK")
    script = "import sys, pathlib; (pathlib.Path(sys.argv[1]) / 'r.txt').write_text('new')"
    record = keep.run(RunRequest([PY, "-c", script, "{outputs}"], output="proj/seg"), echo=False)
    assert record["state"] == "done" and (seg / "r.txt").read_text() == "new"
    [note] = [p for p in record["problems"] if p.startswith("r.txt:")]
    sha = note.rsplit("SHA-256 ", 1)[1].rstrip(")")
    data = b"UNSAVED PRECIOUS WORK"
    assert sha == hashlib.sha256(data).hexdigest()
    with open_replica(keep, len(data), bytes.fromhex(sha)) as handle:
        assert handle.read() == data
    # the run's folder is cleaned: nothing of its outputs was left out
    assert not (keep.config.runs_path / str(record["id"])).exists()
