"""The job queue and its workers, on SQLite and PostgreSQL, with real worker processes:
exactly-once effects under 8 workers, a worker SIGKILLed mid-ingest, SIGTERM handing work
back, fencing of a worker that outlived its lease, retries, periodic jobs."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text, update

from labkeep import Keep
from labkeep.catalog import Job
from labkeep.clock import utcnow
from labkeep.errors import Forbidden, NotFound, UsageError
from labkeep.ops import jobs as q
from labkeep.ops.worker import JobWorker, queue_periodic
from tests.conftest import make_files, unseal_tree
from tests.jobplugin import EFFECTS

REPO = Path(__file__).resolve().parents[1]


def configure(root: Path, extra: str = "", **values: Any) -> None:
    """Set [jobs] values in the keep's labkeep.toml (and append *extra* TOML)."""
    config = root / "labkeep.toml"
    lines = config.read_text().splitlines()
    for key, value in values.items():
        for i, line in enumerate(lines):
            if line.startswith(f"{key} = "):
                lines[i] = f"{key} = {json.dumps(value)}"
                break
        else:
            raise AssertionError(f"{key} not in labkeep.toml")
    config.write_text("\n".join(lines) + "\n" + extra)


def worker_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABKEEP_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_worker(root: Path, *args: str, log: Path | None = None) -> subprocess.Popen[bytes]:
    """``labkeep worker`` in a child process; its JSON log lines go to *log*."""
    with open(log or os.devnull, "ab") as stderr:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "labkeep", "worker", "--root", str(root), *args],
            stdout=subprocess.PIPE, stderr=stderr, env=worker_env(),
        )  # fmt: skip


@pytest.fixture
def qroot(tmp_path: Path, catalog_url: str | None) -> Iterator[Path]:
    """A keep whose workers load the test job kinds, with short leases and retries."""
    root = tmp_path / "keep"
    with Keep.init(root, catalog_url=catalog_url) as keep:
        keep.create_project("proj")
        with keep.catalog.write() as session:
            session.execute(text(EFFECTS))
    configure(
        root,
        plugins=["tests.jobplugin"],
        lease_seconds=3,
        retry_base_seconds=0.05,
        retry_max_seconds=0.2,
        poll_seconds=0.05,
    )
    yield root
    unseal_tree(root)


@pytest.fixture
def qkeep(qroot: Path) -> Iterator[Keep]:
    with Keep.open(qroot) as keep:
        yield keep


def effects(keep: Keep) -> list[tuple[int, int]]:
    with keep.catalog.read() as session:
        rows = session.execute(text("SELECT job_id, attempt FROM test_effects")).all()
    return [(int(a), int(b)) for a, b in rows]


def drain(keep: Keep, **kw: Any) -> Any:
    return JobWorker(keep, drain=True, log=io.StringIO(), schedule=False, **kw).run()


# -- the queue's rules -----------------------------------------------------------------------


def test_unique_keys_active_and_forever(qkeep: Keep) -> None:
    a = qkeep.enqueue("count", {}, unique_key="k1")
    assert qkeep.enqueue("count", {"other": 1}, unique_key="k1").id == a.id  # not queued twice
    f = qkeep.enqueue("count", {}, unique_key="period-7", unique_scope="forever")
    drain(qkeep)
    assert {qkeep.get_job(a.id).state, qkeep.get_job(f.id).state} == {"done"}
    # an "active" key is free again once its job ended; a "forever" key is not
    assert qkeep.enqueue("count", {}, unique_key="k1").id != a.id
    assert qkeep.enqueue("count", {}, unique_key="period-7", unique_scope="forever").id == f.id


def test_claims_follow_priority_then_age_and_wait_for_run_after(qkeep: Keep) -> None:
    low = qkeep.enqueue("count", {})
    later = qkeep.enqueue("count", {}, priority=9, run_after=utcnow() + timedelta(hours=1))
    high = qkeep.enqueue("count", {}, priority=5)
    first = q.claim(qkeep, "w", lease_seconds=30)
    second = q.claim(qkeep, "w", lease_seconds=30)
    assert first is not None and second is not None
    assert (first.id, second.id) == (high.id, low.id)
    assert q.claim(qkeep, "w", lease_seconds=30) is None  # 'later' is not due
    assert qkeep.get_job(later.id).state == "queued"
    assert q.claim(qkeep, "w", kinds=("noop",), lease_seconds=30) is None


def test_a_worker_that_outlived_its_lease_cannot_record_a_result(qkeep: Keep) -> None:
    job = qkeep.enqueue("count", {})
    stale = q.claim(qkeep, "worker-a", lease_seconds=30)
    assert stale is not None
    with qkeep.catalog.write() as session:  # worker-a paused: its lease ran out
        session.execute(update(Job).values(lease_until=utcnow() - timedelta(seconds=1)))
    assert q.reap(qkeep) == 1
    assert "stopped renewing its lease" in qkeep.get_job(job.id).last_error
    fresh = q.claim(qkeep, "worker-b", lease_seconds=30)
    assert fresh is not None and fresh.id == job.id and fresh.attempt == 2
    # worker-a wakes up and tries to commit its effect with its completion: refused
    with pytest.raises(q.LeaseLost), qkeep.catalog.write() as session:
        session.execute(text("INSERT INTO test_effects VALUES (:j, 1, 'a')"), {"j": job.id})
        q.complete(session, stale, {"by": "a"})
    assert q.renew(qkeep, [stale], 30)[0] == {job.id}  # and its heartbeat is told so
    with qkeep.catalog.write() as session:
        session.execute(text("INSERT INTO test_effects VALUES (:j, 2, 'b')"), {"j": job.id})
        q.complete(session, fresh, {"by": "b"})
    assert effects(qkeep) == [(job.id, 2)]
    done = qkeep.get_job(job.id)
    assert done.state == "done" and done.result == {"by": "b"} and done.attempts == 2


def test_retries_back_off_then_fail_for_good_with_the_reason(qkeep: Keep) -> None:
    flaky = qkeep.enqueue("count", {"fail_first": True})
    broken = qkeep.enqueue("count", {"fail_first": True}, max_attempts=1)
    stats = drain(qkeep)
    assert qkeep.get_job(flaky.id).state == "done" and qkeep.get_job(flaky.id).attempts == 2
    gone = qkeep.get_job(broken.id)
    assert gone.state == "failed" and gone.attempts == 1
    assert "RuntimeError: the first attempt fails on purpose" in gone.last_error
    assert (stats.done, stats.failed, stats.retried) == (1, 1, 1)
    assert effects(qkeep) == [(flaky.id, 2)]
    # exponential: each retry waits about twice as long, capped
    waits = [q.backoff(n, 30, 3600) for n in (1, 2, 3, 4)]
    assert 15 <= waits[0] <= 30 and 30 <= waits[1] <= 60 and 120 <= waits[3] <= 240
    assert q.backoff(30, 30, 3600) <= 3600
    # a failed job is retried by hand with fresh attempts
    again = qkeep.retry_job(broken.id)
    assert again.state == "queued" and again.attempts == 0
    with pytest.raises(UsageError, match="only failed or cancelled"):
        qkeep.retry_job(flaky.id)


def test_permanent_errors_fail_at_once(qkeep: Keep, tmp_path: Path) -> None:
    job = qkeep.enqueue("ingest", {"source": str(tmp_path / "nowhere"), "dataset": "proj/s1"})
    drain(qkeep)
    failed = qkeep.get_job(job.id)
    assert failed.state == "failed" and failed.attempts == 1
    assert "does not exist" in failed.last_error


def test_job_arguments_are_typed_when_queued(qkeep: Keep, tmp_path: Path) -> None:
    """A command line gives text: "seal=False" must not seal, "jobs=abc" must not be a job
    that fails five times with a traceback."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"a")
    job = qkeep.enqueue(
        "ingest", {"source": str(src), "dataset": "proj/typed", "seal": "False", "link": "no"}
    )
    assert (job.args["seal"], job.args["link"]) == (False, False)
    drain(qkeep)
    assert qkeep.get_job(job.id).state == "done"
    assert not qkeep.get_dataset("proj/typed").sealed
    assert os.stat(src / "a.txt").st_nlink == 1  # copied, not linked
    for bad in ({"seal": "maybe"}, {"jobs": "abc"}, {"jobs": -1}, {"link": 2.5}):
        with pytest.raises(UsageError, match="job argument"):
            qkeep.enqueue("ingest", {"source": str(src), "dataset": "proj/typed", **bad})
    assert qkeep.enqueue("scrub", {"max_age_days": "30"}).args["max_age_days"] == 30


def test_ingest_refuses_bad_jobs_and_sources_before_making_a_dataset(
    qkeep: Keep, tmp_path: Path
) -> None:
    from labkeep.errors import SourceError

    src = tmp_path / "src"
    src.mkdir()
    with pytest.raises(UsageError, match="--jobs -1"):
        qkeep.ingest(src, "proj/never1", jobs=-1)
    with pytest.raises(SourceError, match="neither a folder nor a regular file") as caught:
        qkeep.ingest("/dev/null", "proj/never2")
    assert caught.value.hint
    names = {d.name for d in qkeep.list_datasets("proj")}
    assert not {"never1", "never2"} & names


def test_cancel_a_queued_and_a_running_job(qkeep: Keep) -> None:
    queued = qkeep.enqueue("count", {})
    assert qkeep.cancel_job(queued.id).state == "cancelled"
    running = qkeep.enqueue("count", {"sleep": 30})
    worker = JobWorker(qkeep, log=io.StringIO(), schedule=False)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        _until(lambda: qkeep.get_job(running.id).state == "running")
        assert qkeep.cancel_job(running.id).cancel_requested
        _until(lambda: qkeep.get_job(running.id).state == "cancelled", timeout=10)
    finally:
        worker.stop()
        thread.join(10)
    assert effects(qkeep) == []
    with pytest.raises(UsageError, match="already ended"):
        qkeep.cancel_job(running.id)


def test_jobs_of_others_are_not_found(qkeep: Keep) -> None:
    mine = qkeep.enqueue("count", {})
    qkeep.add_user("bob", password="a long enough password 1")
    bob = qkeep.acting_as(qkeep.principal_for("bob"))
    assert bob.list_jobs() == []
    with pytest.raises(NotFound):
        bob.get_job(mine.id)
    with pytest.raises(NotFound):
        bob.cancel_job(mine.id)
    with pytest.raises(Forbidden):
        bob.enqueue("scrub", {})
    with pytest.raises((Forbidden, NotFound)):  # may not ingest into proj
        bob.enqueue("ingest", {"source": "/tmp", "dataset": "proj/s9"})
    # with write access, bob still may not have the service account read any folder
    qkeep.grant("bob", "write", "proj")
    bob = qkeep.acting_as(qkeep.principal_for("bob"))
    with pytest.raises(Forbidden, match="only from buffers shown to you"):
        bob.enqueue("ingest", {"source": "/etc", "dataset": "proj/s9"})
    with pytest.raises(Forbidden):  # sleeping jobs would tie up the workers
        bob.enqueue("noop", {"seconds": 3600})
    own = bob.enqueue("count", {}, unique_key="nightly")
    # keys are per person: the same key of another user neither finds nor blocks bob's job
    assert qkeep.enqueue("count", {}, unique_key="nightly").id not in (own.id, mine.id)
    with pytest.raises(Forbidden, match="priority"):
        bob.enqueue("count", {}, priority=100)
    assert [j.id for j in bob.list_jobs()] == [own.id]
    assert {j.id for j in qkeep.list_jobs()} >= {mine.id, own.id}  # a site admin sees all
    # a job acts as its creator when it runs: a disabled account's job fails, saying why
    qkeep.set_user_disabled("bob", True)
    drain(qkeep)
    stopped = qkeep.get_job(own.id)
    assert stopped.state == "failed" and "bob can no longer act" in stopped.last_error


def test_periodic_jobs_are_queued_once_per_period(qroot: Path) -> None:
    configure(qroot, '[[jobs.schedule]]\nkind = "noop"\nevery = "1h"\nargs = { seconds = 0 }\n')
    keeps = [Keep.open(qroot) for _ in range(4)]
    try:
        threads = [threading.Thread(target=queue_periodic, args=(k,)) for k in keeps]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        queued = keeps[0].list_jobs(kind="noop")
        assert len(queued) == 1 and queued[0].unique_key is not None
        drain(keeps[0])
        queue_periodic(keeps[1])  # all workers restarted within the same hour
        assert len(keeps[0].list_jobs(kind="noop")) == 1
    finally:
        for k in keeps:
            k.close()


def test_seal_queues_the_copy_on_seal_replication(qkeep: Keep, tmp_path: Path) -> None:
    files = make_files(tmp_path / "buffer", 12)
    qkeep.add_store("backup", kind="objects", path=str(tmp_path / "backup"))
    qkeep.set_policy("proj", min_copies=2, on_seal=["backup"])
    qkeep.ingest(tmp_path / "buffer", "proj/s1")
    sealed = qkeep.seal("proj/s1")
    assert len(sealed.jobs) == 1
    job = qkeep.get_job(sealed.jobs[0])
    assert job.kind == "replicate" and job.target == "proj/s1"
    drain(qkeep)
    assert qkeep.get_job(job.id).state == "done"
    where = qkeep.whereis("proj/s1/raw/" + sorted(files)[0])
    assert {c["store"] for c in where["copies"]} >= {"tree", "backup"}


# -- real worker processes -------------------------------------------------------------------


def test_eight_workers_run_2000_jobs_exactly_once(qroot: Path, tmp_path: Path) -> None:
    with Keep.open(qroot) as keep:
        with keep.catalog.write() as session:
            for i in range(2000):
                q.enqueue(keep, "count", {"fail_first": i % 50 == 0}, session=session)
        log = tmp_path / "workers.log"
        procs = [start_worker(qroot, "--drain", "--json", log=log) for _ in range(8)]
        outs = [json.loads(p.communicate(timeout=300)[0]) for p in procs]
        assert [p.returncode for p in procs] == [0] * 8, log.read_text()[-2000:]
        done = effects(keep)
        counts = keep.job_counts()
    ids = [job_id for job_id, _ in done]
    assert len(ids) == 2000 and len(set(ids)) == 2000  # none lost, none twice
    assert counts["done"] == 2000 and counts["queued"] == counts["running"] == 0
    assert sum(o["done"] for o in outs) == 2000
    assert sum(o["retried"] for o in outs) == 40  # the failing first attempts
    assert sum(1 for o in outs if o["done"]) >= 2  # the work was really shared


def test_sigkill_mid_ingest_another_worker_finishes(qroot: Path, tmp_path: Path) -> None:
    src = tmp_path / "buffer"
    files = make_files(src, 2000, max_size=20_000)
    raw = qroot / "data/proj/s1/raw"
    with Keep.open(qroot) as keep:
        job = keep.enqueue("ingest", {"source": str(src), "dataset": "proj/s1", "jobs": 1})
        log = tmp_path / "workers.log"
        first = start_worker(qroot, log=log)

        def in_tree() -> int:
            return sum(len(f) for _, _, f in os.walk(raw))

        _until(lambda: in_tree() >= 300, timeout=60)  # about a sixth of the way
        os.kill(first.pid, signal.SIGKILL)
        first.communicate(timeout=10)
        assert keep.get_job(job.id).state == "running"  # what the dead worker left
        second = start_worker(qroot, "--drain", log=log)
        second.communicate(timeout=120)
        finished = keep.get_job(job.id)
        assert finished.state == "done", (finished.last_error, log.read_text()[-2000:])
        assert finished.attempts == 2
        assert finished.result is not None and finished.result["summary"].get("error", 0) == 0
        # the dataset is whole: catalog == tree == manifest, nothing twice
        listing = [e["path"] for e in keep.stream_entries("proj/s1").entries]
        assert sorted(listing) == sorted("raw/" + p for p in files)
        report = keep.verify("proj/s1")
        assert report.failed == 0 and report.info["states"]["ok"] == 2000
        manifest = (qroot / "data/proj/s1/MANIFEST.sha256").read_text().splitlines()
        assert len(manifest) == 2000
        tree = [p for p in (qroot / "data/proj/s1/raw").rglob("*") if p.is_file()]
        assert len(tree) == 2000


def test_sigterm_hands_the_running_job_back(qroot: Path, tmp_path: Path) -> None:
    with Keep.open(qroot) as keep:
        job = keep.enqueue("count", {"sleep": 60})
        log = tmp_path / "worker.log"
        proc = start_worker(qroot, "--grace", "0.5", log=log)
        _until(lambda: keep.get_job(job.id).state == "running", timeout=30)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
        assert proc.returncode == 0 and time.monotonic() - started < 10
        back = keep.get_job(job.id)
        assert back.state == "queued" and back.attempts == 0 and back.lease_owner is None
        assert effects(keep) == []
        lines = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
        assert any(r["event"] == "job.released" and r["job"] == job.id for r in lines)
        assert lines[-1]["event"] == "worker.stop"
        assert keep.workers() == []  # it says it stopped


def test_the_cli_queues_lists_shows_and_runs_jobs(qroot: Path) -> None:
    def run(*args: str, check: int = 0) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "labkeep", *args, "--root", str(qroot)],
            capture_output=True, text=True, env=worker_env(), timeout=120,
        )  # fmt: skip
        assert result.returncode == check, (result.stdout, result.stderr)
        return result

    queued = json.loads(run("jobs", "add", "noop", "seconds=0", "--json").stdout)
    assert queued["state"] == "queued" and queued["args"] == {"seconds": 0}
    assert "no worker is running" in run("jobs").stderr
    stats = json.loads(run("worker", "--drain", "--json").stdout)
    assert stats["done"] == 1
    listed = [json.loads(line) for line in run("jobs", "--json").stdout.splitlines()]
    assert [(j["id"], j["state"]) for j in listed] == [(queued["id"], "done")]
    shown = run("jobs", "show", str(queued["id"])).stdout
    assert "state:       done" in shown
    missing = run("jobs", "show", "9999", check=2)
    assert "no job 9999" in missing.stderr and "Traceback" not in missing.stderr
    bad = run("jobs", "add", "nonsense", check=2)
    assert "no job kind 'nonsense'" in bad.stderr and "known kinds" in bad.stderr
    # long commands can be handed to a worker instead of running in the terminal
    make_files(qroot.parent / "run-1", 9)
    ingest = json.loads(
        run("ingest", str(qroot.parent / "run-1"), "proj/s1", "--seal", "--background",
            "--json").stdout
    )  # fmt: skip
    assert ingest["kind"] == "ingest" and ingest["target"] == "proj/s1"
    # the ingest, and the extraction of metadata that it queued
    drained = json.loads(run("worker", "--drain", "--json").stdout)
    assert drained["done"] == 2 and drained["by_kind"] == {"ingest": 1, "extract": 1}
    verify = run("verify", "proj/s1", "--background").stdout
    assert "queued (verify proj/s1)" in verify
    run("worker", "--drain")
    last = json.loads(run("jobs", "--json", "--limit", "1").stdout)
    assert last["kind"] == "verify" and last["state"] == "done"
    assert last["result"]["states"]["ok"] == 9


def _until(condition: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def test_scrub_reverifies_the_oldest_sealed_datasets_and_names_damage(
    qkeep: Keep, tmp_path: Path
) -> None:
    from labkeep.ops.job_kinds import scrub_candidates

    for name in ("s1", "s2", "s3"):
        make_files(tmp_path / name, 5, seed=len(name) + ord(name[-1]))
        qkeep.ingest(tmp_path / name, f"proj/{name}")
    qkeep.seal("proj/s1")
    qkeep.seal("proj/s2")  # s3 stays unsealed: not scrubbed
    qkeep.verify("proj/s2")  # s2 checked just now, s1 never
    assert [a for a, _ in scrub_candidates(qkeep, 0, 10)] == ["proj/s1", "proj/s2"]
    assert [a for a, _ in scrub_candidates(qkeep, 1, 10)] == ["proj/s1"]
    job = qkeep.enqueue("scrub", {"max_age_days": 1, "bandwidth": "50MB"})
    drain(qkeep)
    done = qkeep.get_job(job.id)
    assert done.state == "done" and done.result == {"verified": ["proj/s1"], "left": 0,
                                                    "problems": []}  # fmt: skip
    assert scrub_candidates(qkeep, 1, 10) == []
    # damage is found, named, and the job says what to do
    victim = next((qkeep.root / "data/proj/s2/raw").rglob("*.bin"))
    unseal_tree(victim.parent)
    victim.write_bytes(b"flipped" + victim.read_bytes()[7:])
    job = qkeep.enqueue("scrub", {"max_age_days": 0})
    drain(qkeep)
    failed = qkeep.get_job(job.id)
    assert failed.state == "failed" and failed.attempts == 1
    assert "proj/s2" in failed.last_error and "--repair" in failed.last_error
    assert failed.result is not None and failed.result["problems"][0]["dataset"] == "proj/s2"
    with pytest.raises(Forbidden):
        qkeep.add_user("eve", password="a long enough password 2")
        qkeep.acting_as(qkeep.principal_for("eve")).enqueue("scrub", {})


@pytest.mark.postgresql
def test_a_worker_rides_out_a_catalog_outage(tmp_path: Path, pg_server: Any) -> None:
    """PostgreSQL stops for a few seconds while a worker runs jobs: the worker logs it,
    keeps going, and every job ends done exactly once (a job whose completion could not
    be written is run again once its lease ran out)."""
    root = tmp_path / "keep"
    keep = Keep.init(root, catalog_url=pg_server.create_database())
    with keep, keep.catalog.write() as session:
        session.execute(text(EFFECTS))
    configure(root, plugins=["tests.jobplugin"], lease_seconds=2, poll_seconds=0.05,
              retry_base_seconds=0.05, retry_max_seconds=0.2, retry_seconds=1)  # fmt: skip
    log = tmp_path / "worker.log"
    with Keep.open(root) as keep:
        jobs = [keep.enqueue("count", {"sleep": 0.3}) for _ in range(12)]
        proc = start_worker(root, "--concurrency", "2", log=log)
        try:
            _until(lambda: len(effects(keep)) >= 2, timeout=30)
            subprocess.run(pg_server.stop_command(), check=True, capture_output=True)
            try:
                time.sleep(3)
                assert proc.poll() is None  # still there
            finally:
                subprocess.run(pg_server.start_command(), check=True, capture_output=True)
            _until(lambda: keep.job_counts()["done"] == 12, timeout=60)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=30)
        done = effects(keep)
        assert sorted(j for j, _ in done) == sorted(j.id for j in jobs)  # each once
    events = {json.loads(x)["event"] for x in log.read_text().splitlines() if x.startswith("{")}
    assert "worker.catalog_unreachable" in events or "job.orphaned" in events
    assert "Traceback" not in log.read_text()


def test_serve_runs_a_worker_and_the_watchers_beside_the_web_server(tmp_path: Path) -> None:
    """`labkeep serve` (the README's main command) runs queued jobs and imports finished
    acquisitions from watched buffers with no other process started by hand."""
    from tests.webserver import ServeProcess

    root = tmp_path / "keep"
    buffer = tmp_path / "buffer"
    buffer.mkdir()
    with Keep.init(root) as keep:
        keep.add_watch(str(buffer), name="scope", project_template="scope-{year}",
                       ready="marker:.done", poll_seconds=1)  # fmt: skip
    configure(root, poll_seconds=0.2)
    with ServeProcess(root, tmp_path / "serve.log"), Keep.open(root) as keep:
        job = keep.enqueue("noop", {"seconds": 0})
        _until(lambda: keep.get_job(job.id).state == "done", timeout=60)
        make_files(buffer / "run-7", 5)
        (buffer / "run-7" / ".done").touch()
        _until(lambda: any(j.kind == "buffer-import" and j.state == "done"
                           for j in keep.list_jobs()), timeout=60)  # fmt: skip
        imported = [j.target for j in keep.list_jobs(kind="buffer-import")]
        assert len(imported) == 1 and str(imported[0]).endswith("/run-7"), imported
        assert len(list(keep.stream_entries(str(imported[0])).entries)) == 5
        assert [w["state"] for w in keep.workers()] == ["running"]
    with Keep.open(root) as keep:
        _until(lambda: keep.workers() == [], timeout=20)  # it stopped with the server


def test_sigterm_mid_ingest_hands_it_back_and_it_finishes_later(
    qroot: Path, tmp_path: Path
) -> None:
    src = tmp_path / "buffer"
    files = make_files(src, 2000, max_size=20_000)
    raw = qroot / "data/proj/s1/raw"
    with Keep.open(qroot) as keep:
        job = keep.enqueue("ingest", {"source": str(src), "dataset": "proj/s1", "jobs": 1})
        log = tmp_path / "workers.log"
        first = start_worker(qroot, "--grace", "0", log=log)
        _until(lambda: sum(len(f) for _, _, f in os.walk(raw)) >= 300, timeout=60)
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=60)
        assert first.returncode == 0, log.read_text()[-2000:]
        back = keep.get_job(job.id)  # stopped at its next file, handed back unharmed
        assert back.state == "queued" and back.attempts == 0, back.last_error
        second = start_worker(qroot, "--drain", log=log)
        second.communicate(timeout=120)
        finished = keep.get_job(job.id)
        assert finished.state == "done", (finished.last_error, log.read_text()[-2000:])
        listing = [e["path"] for e in keep.stream_entries("proj/s1").entries]
        assert sorted(listing) == sorted("raw/" + p for p in files)
        assert keep.verify("proj/s1").failed == 0
