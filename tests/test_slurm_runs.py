"""`labkeep run --slurm`: submitted, followed by a worker (no process waits), outputs
brought home verified, saved as a version; failures, scancel and job arrays end in a
clear state. A real single-node SLURM cluster (tests/slurmcluster.py)."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from labkeep import Keep
from labkeep.ops.runs import RunRequest
from labkeep.ops.worker import JobWorker
from tests.conftest import make_files
from tests.slurmcluster import SlurmCluster
from tests.test_runs import SEGMENT

PY = sys.executable


@pytest.fixture
def skeep(
    keep: Keep, slurm_cluster: SlurmCluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Keep:
    """A keep whose workers ask SLURM every half second, with a sealed session to read;
    the cluster idle, with no job of an earlier test left."""
    slurm_cluster.reset()
    for name, value in slurm_cluster.env.items():
        monkeypatch.setenv(name, value)
    toml = keep.root / "labkeep.toml"
    text = toml.read_text()
    text, n = re.subn(r"(\[runs\][^\[]*?)poll_seconds = 10", r"\1poll_seconds = 0.5", text)
    assert n == 1
    toml.write_text(text)
    keep.config.runs_poll_seconds = 0.5
    # metadata extraction after each ingest and save is not what these tests follow: its
    # jobs would keep the worker busy past a test's end (tests/test_extract.py has them)
    import dataclasses

    keep.config.extract = dataclasses.replace(keep.config.extract, after_ingest=False)
    src = tmp_path / "acq"
    make_files(src, 4, min_size=10, max_size=100)
    keep.ingest(src, "proj/s017")
    keep.seal("proj/s017")
    keep.create_dataset("proj/seg", kind="analysis")
    return keep


def follow(keep: Keep, run_id: int, timeout: float = 90) -> dict[str, Any]:
    """Run a worker until the run has ended; on a timeout, fail with SLURM's view."""
    import threading

    log = io.StringIO()
    worker = JobWorker(keep, log=log, schedule=False)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            record = keep.get_run(run_id)
            if record["state"] not in ("queued", "running", "saving"):
                return record
            time.sleep(0.2)
    finally:
        worker.stop()
        thread.join(30)
    raise AssertionError(
        f"run {run_id} did not end: {keep.get_run(run_id, outputs=False)}\n"
        f"worker log:\n{log.getvalue()[-3000:]}\n{_diagnosis()}"
    )


def _diagnosis() -> str:
    import os

    conf = os.environ.get("SLURM_CONF", "")
    if not conf:
        return ""
    from tests.slurmcluster import clean_environ

    out = []
    for command in (["sinfo", "-N", "-l"], ["squeue", "-l"]):
        done = subprocess.run(command, env={**clean_environ(), "SLURM_CONF": conf},
                              capture_output=True, text=True, timeout=10, check=False)  # fmt: skip
        out.append(f"$ {' '.join(command)}\n{done.stdout}{done.stderr}")
    return "\n".join(out)


def test_slurm_run_end_to_end(skeep: Keep) -> None:
    keep = skeep
    submitted = keep.run(
        RunRequest(
            [PY, "-c", SEGMENT, "{inputs}", "{outputs}"],
            inputs=["proj/s017"],
            output="proj/seg",
            message="U-Net v2 masks",
            slurm="--time=00:05:00 --cpus-per-task=1",
        )
    )
    # returns at once: queued with its SLURM job id, a worker job follows it
    assert submitted["state"] == "queued" and submitted["executor"] == "slurm"
    assert submitted["slurm"]["job_id"].isdigit() and submitted["job_id"]
    assert submitted["slurm"]["resources"] == "--time=00:05:00 --cpus-per-task=1"
    scratch = Path(submitted["slurm"]["scratch"])
    assert (scratch / "inputs/proj/s017").is_dir()
    done = follow(keep, submitted["id"])
    assert done["state"] == "done" and done["exit_code"] == 0 and done["version"] == 1
    assert done["slurm"]["nodes"] == "localhost" and done["slurm"]["state"] == "COMPLETED"
    assert len(done["outputs"]) == 5  # 4 masks + the table
    seg = keep.tree.dataset_dir("proj", "seg")
    assert sorted(p.name for p in (seg / "masks").iterdir()) == sorted(
        o["path"].split("/")[1] for o in done["outputs"] if o["path"].startswith("masks/")
    )
    assert (
        json.loads((seg / f"provenance/run-{done['id']}.json").read_text())["executor"] == "slurm"
    )
    assert not scratch.exists()  # cleaned
    assert keep.versions("proj/seg")[0]["run"] == done["id"]
    assert keep.get_job(submitted["job_id"]).state == "done"


def test_a_failing_slurm_job_ends_failed_with_its_stderr(skeep: Keep) -> None:
    keep = skeep
    failing = "import sys; print('CUDA out of memory', file=sys.stderr); sys.exit(3)"
    submitted = keep.run(
        RunRequest([PY, "-c", failing], output="proj/seg", slurm="--time=00:05:00")
    )
    done = follow(keep, submitted["id"])
    assert (done["state"], done["exit_code"], done["version"]) == ("failed", 3, None)
    assert "CUDA out of memory" in done["stderr_tail"]
    assert "exited with code 3" in done["error"]
    assert keep.versions("proj/seg") == []


def test_a_cancelled_slurm_job_ends_cancelled(skeep: Keep) -> None:
    keep = skeep
    submitted = keep.run(
        RunRequest([PY, "-c", "import time; time.sleep(120)"], output="proj/seg", slurm="")
    )
    from labkeep.ops.slurm import Slurm

    slurm = Slurm()
    deadline = time.monotonic() + 30
    while slurm.status(submitted["slurm"]["job_id"]).state != "running":
        assert time.monotonic() < deadline, "the job did not start"
        time.sleep(0.2)
    keep.cancel_run(submitted["id"])  # scancel
    done = follow(keep, submitted["id"])
    assert done["state"] == "cancelled" and done["version"] is None
    assert done["error"] == "cancelled"


def test_a_job_array_finishes_when_every_task_has(skeep: Keep) -> None:
    keep = skeep
    task = 'echo "task $SLURM_ARRAY_TASK_ID" > "$1/task-$SLURM_ARRAY_TASK_ID.txt"'
    submitted = keep.run(
        RunRequest(["sh", "-c", task, "sh", "{outputs}"], output="proj/seg", slurm="--array=0-2")
    )
    done = follow(keep, submitted["id"])
    assert done["state"] == "done", done
    paths = sorted(o["path"] for o in done["outputs"])
    assert paths == ["task-0.txt", "task-1.txt", "task-2.txt"]
    assert len(done["slurm"]["tasks"]) == 3
    seg = keep.tree.dataset_dir("proj", "seg")
    assert (seg / "task-2.txt").read_text() == "task 2\n"


def test_cli_run_slurm_returns_at_once(skeep: Keep, slurm_cluster: SlurmCluster) -> None:
    keep = skeep
    env = {**slurm_cluster.env}
    result = subprocess.run(
        [PY, "-m", "labkeep", "run", "--slurm", "--time=00:05:00", "-o", "proj/seg",
         "--root", str(keep.root), "--json", "--", "true"],
        capture_output=True, text=True, timeout=60, env={**__import__("os").environ, **env},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout.splitlines()[-1])
    assert record["state"] == "queued" and record["slurm"]["job_id"]
    refused = subprocess.run(
        [PY, "-m", "labkeep", "run", "--slurm", "--wrap=hostname", "-o", "proj/seg",
         "--root", str(keep.root), "--", "true"],
        capture_output=True, text=True, timeout=60, env={**__import__("os").environ, **env},
    )  # fmt: skip
    assert refused.returncode == 2 and "--wrap" in refused.stderr
    assert "Traceback" not in refused.stderr
    follow(keep, record["id"])
