"""labkeep.ops.slurm against a real single-node SLURM cluster (tests/slurmcluster.py)."""

from __future__ import annotations

import shlex
import socket
import time
from pathlib import Path

import pytest

from labkeep.errors import SchedulerUnavailable, UsageError
from labkeep.ops.slurm import (
    Slurm,
    SlurmStatus,
    parse_sacct,
    parse_sbatch_args,
    read_task_records,
    render_script,
    stderr_tail,
)
from tests.slurmcluster import SlurmCluster

DEADLINE = 30.0


class Run:
    """A run folder, a working folder and a submitted script, as labkeep run lays them out."""

    def __init__(self, slurm: Slurm, tmp_path: Path, argv: list[str], args: str = "") -> None:
        self.slurm = slurm
        self.dir = tmp_path / "run"
        self.workdir = tmp_path / "work"
        self.dir.mkdir()
        self.workdir.mkdir()
        script = self.dir / "job.sh"
        script.write_text(render_script(argv, self.workdir, self.dir))
        self.job_id = slurm.submit(script, parse_sbatch_args(args), self.dir, "labkeep-test")

    def status(self) -> SlurmStatus:
        return self.slurm.status(self.job_id)

    def wait(self, until: str = "finished") -> SlurmStatus:
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            status = self.status()
            if status.finished if until == "finished" else status.state == until:
                return status
            time.sleep(0.1)
        raise AssertionError(f"job {self.job_id} not {until} after {DEADLINE} s: {status}")

    def file(self, suffix: str, task: int | None = None) -> Path:
        key = self.job_id if task is None else f"{self.job_id}_{task}"
        return self.dir / f"slurm-{key}{suffix}"


def test_a_job_that_succeeds(slurm: Slurm, tmp_path: Path) -> None:
    awkward = 'it\'s a $HOME `x` "y"'
    argv = ["sh", "-c", 'printf "%s\\n" "$1"; pwd; echo made > result.txt', "sh", awkward]
    run = Run(slurm, tmp_path, argv, "--time=00:05:00 -c 1")
    status = run.wait()
    assert (status.state, status.slurm_state, status.exit_code) == ("done", "COMPLETED", 0)
    assert status.nodes == ("localhost",)
    assert status.start is not None and status.end is not None and status.start <= status.end
    assert len(status.tasks) == 1 and status.tasks[0].job_id == run.job_id
    # the command got its arguments unchanged and ran in the working folder
    assert run.file(".out").read_text() == f"{awkward}\n{run.workdir}\n"
    assert (run.workdir / "result.txt").read_text() == "made\n"
    assert run.file(".exit").read_text() == "0\n"
    [record] = read_task_records(run.dir, run.job_id)
    assert (record.key, record.task_id, record.exit_code) == (run.job_id, None, 0)
    assert record.host == socket.gethostname() and record.started
    assert stderr_tail(run.dir, run.job_id) == ""
    assert not [p for p in run.dir.iterdir() if p.name.startswith(".")]  # no temp files left


def test_a_job_that_fails(slurm: Slurm, tmp_path: Path) -> None:
    argv = ["sh", "-c", "for i in 1 2 3; do echo line $i >&2; done; "
            "echo 'cannot read input.csv' >&2; exit 3"]  # fmt: skip
    run = Run(slurm, tmp_path, argv)
    status = run.wait()
    assert (status.state, status.slurm_state, status.exit_code) == ("failed", "FAILED", 3)
    assert status.finished and status.tasks[0].signal is None
    assert stderr_tail(run.dir, run.job_id, lines=2) == "line 3\ncannot read input.csv"
    assert read_task_records(run.dir, run.job_id)[0].exit_code == 3


def test_a_job_cancelled_while_running(slurm: Slurm, tmp_path: Path) -> None:
    run = Run(slurm, tmp_path, ["sleep", "60"])
    run.wait("running")
    deadline = time.monotonic() + DEADLINE
    while not run.file(".info").exists():  # the script got as far as the command
        assert time.monotonic() < deadline
        time.sleep(0.05)
    slurm.cancel(run.job_id)
    status = run.wait()
    assert (status.state, status.slurm_state) == ("cancelled", "CANCELLED")
    assert status.exit_code is None and status.tasks[0].signal in (9, 15)  # not "exit 0"
    # the task started and never returned: no exit file
    [record] = read_task_records(run.dir, run.job_id)
    assert record.host is not None and record.exit_code is None
    assert not run.file(".exit").exists()
    slurm.cancel(run.job_id)  # again: nothing left to cancel, no error
    assert run.status().state == "cancelled"


def test_a_job_array(slurm: Slurm, tmp_path: Path) -> None:
    argv = ["sh", "-c", 'echo "task $SLURM_ARRAY_TASK_ID"; '
            'if [ "$SLURM_ARRAY_TASK_ID" = 2 ]; then sleep 2; fi']  # fmt: skip
    run = Run(slurm, tmp_path, argv, "--array=0-2")
    seen: list[SlurmStatus] = []
    deadline = time.monotonic() + DEADLINE
    while not (seen and seen[-1].finished):
        assert time.monotonic() < deadline, seen[-1]
        seen.append(run.status())
        time.sleep(0.1)
    status = seen[-1]
    assert (status.state, status.slurm_state, status.exit_code) == ("done", "COMPLETED", 0)
    assert [t.job_id for t in status.tasks] == [f"{run.job_id}_{i}" for i in range(3)]
    assert [t.task_id for t in status.tasks] == [0, 1, 2]
    assert all(t.state == "done" and t.node == "localhost" for t in status.tasks)
    # while task 2 slept, the first tasks were done and the array was not
    assert any(not s.finished and any(t.state == "done" for t in s.tasks) for s in seen[:-1]), [
        s.slurm_state for s in seen
    ]
    for i in range(3):
        assert run.file(".out", i).read_text() == f"task {i}\n"
        assert run.file(".exit", i).read_text() == "0\n"
    records = read_task_records(run.dir, run.job_id)
    assert [(r.task_id, r.exit_code) for r in records] == [(0, 0), (1, 0), (2, 0)]


def test_an_array_with_a_failing_task(slurm: Slurm, tmp_path: Path) -> None:
    argv = ["sh", "-c", 'echo "bad task $SLURM_ARRAY_TASK_ID" >&2; exit "$SLURM_ARRAY_TASK_ID"']
    run = Run(slurm, tmp_path, argv, "-a 0-1")
    status = run.wait()
    assert (status.state, status.exit_code) == ("failed", 1)
    assert [t.state for t in status.tasks] == ["done", "failed"]
    assert set(status.slurm_state.split(",")) == {"COMPLETED", "FAILED"}
    assert stderr_tail(run.dir, run.job_id) == (
        "==> task 0 <==\nbad task 0\n==> task 1 <==\nbad task 1"
    )


def test_sbatch_refusing_the_options_is_a_usage_error(slurm: Slurm, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"(?i)SLURM refused the job: .*invalid partition"):
        Run(slurm, tmp_path, ["true"], "--partition=nosuch")


def test_a_job_slurm_does_not_know(slurm: Slurm) -> None:
    status = slurm.status("987654")
    assert status.state == "unknown" and not status.finished
    assert status.reason and "no longer knows" in status.reason
    slurm.cancel("987654")  # nothing to cancel


@pytest.mark.parametrize(
    "text",
    [
        "--wrap=ls", "--wrap", "-o out.txt", "-oout.txt", "--output=x", "--out=x", "-e x",
        "--error x", "-D /tmp", "--chdir=/tmp", "--parsable", "-W", "--wait", "-HW",
        "-Ho x", "--export=NONE", "--export", "-J name", "--job-name=x", "--test-only",
        "--uid=0", "--help",
    ],
)  # fmt: skip
def test_options_labkeep_owns_are_refused(text: str) -> None:
    option = text.split()[0].split("=")[0]
    with pytest.raises(UsageError) as caught:
        parse_sbatch_args(f"--partition=gpu {text} --time=1:00:00")
    assert option in caught.value.message and "set by labkeep" in caught.value.message
    assert caught.value.hint


@pytest.mark.parametrize(
    "text", ["--partition gpu script.sh", "-p gpu : -p cpu", "-- -p gpu", "'--time=1"]
)
def test_arguments_that_are_not_options_are_refused(text: str) -> None:
    with pytest.raises(UsageError, match="--slurm"):
        parse_sbatch_args(text)


def test_resource_options_are_kept() -> None:
    text = ("--partition=gpu --gres=gpu:1 --time=02:00:00 --array=0-3%2 --mem=4G -c 2 "
            "-p gpu -n1 --comment -o --nodes 1 --hold --mail-type=END")  # fmt: skip
    assert parse_sbatch_args(text) == shlex.split(text)
    assert parse_sbatch_args("") == []


def test_without_sbatch_slurm_is_unavailable(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    script = tmp_path / "job.sh"
    script.write_text(render_script(["true"], tmp_path, tmp_path))
    for slurm in (Slurm(bin_dir=empty), Slurm(env={"PATH": str(empty)})):
        with pytest.raises(SchedulerUnavailable, match="SLURM is not installed") as caught:
            slurm.submit(script, [], tmp_path, "x")
        assert caught.value.hint and caught.value.exit_code == 3
        with pytest.raises(SchedulerUnavailable):
            slurm.status("1")


def test_a_missing_configuration_fails_at_once(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    slurm = Slurm(env={"SLURM_CONF": str(tmp_path / "nope.conf")}, bin_dir=slurm_cluster.bin_dir)
    started = time.monotonic()
    with pytest.raises(SchedulerUnavailable, match=r"nope\.conf"):
        slurm.status("1")
    assert time.monotonic() - started < 5  # sbatch itself would retry for 60 s


def test_stderr_tail_reads_only_the_end(tmp_path: Path) -> None:
    big = tmp_path / "slurm-7.err"
    with big.open("w") as out:
        for i in range(400_000):
            out.write(f"progress {i}\n")
        out.write("Traceback: boom\n\n")
    # blank lines at the end are left out
    assert (
        stderr_tail(tmp_path, "7", lines=3) == "progress 399998\nprogress 399999\nTraceback: boom"
    )
    assert stderr_tail(tmp_path, "8") == ""


def test_sacct_output() -> None:
    text = (
        "41_0|COMPLETED|0:0|gpu01|None|2026-01-02T03:04:05|2026-01-02T03:05:05\n"
        "41_1|CANCELLED by 1000|0:15|gpu02|None|2026-01-02T03:04:05|2026-01-02T03:04:09\n"
        "41_[2-3%1]|PENDING|0:0|None assigned|JobArrayTaskLimit|Unknown|Unknown\n"
    )
    status = parse_sacct("41", text)
    assert [(t.job_id, t.state) for t in status.tasks] == [
        ("41_0", "done"), ("41_1", "cancelled"), ("41_2", "pending"), ("41_3", "pending"),
    ]  # fmt: skip
    assert status.state == "running" and not status.finished
    assert status.tasks[1].signal == 15 and status.nodes == ("gpu01", "gpu02")
