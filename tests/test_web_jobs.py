"""The job queue over real HTTP: the JSON API (/api/v1/jobs, dataset verify and copy
queued with 202) and the HTML pages (/jobs, /jobs/ID, cancel and retry forms, progress on
the dataset page, the queue on the admin dashboard). Workers run in the test process
(``JobWorker(drain=True)``) against the same catalog as the server."""

from __future__ import annotations

import dataclasses
import io
import re
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import update

from labkeep import Keep
from labkeep.catalog import Job
from labkeep.ops.worker import JobWorker
from tests.conftest import unseal_tree
from tests.webserver import LiveServer

API = "/api/v1"
PASSWORD = "a long enough password"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """lab: alice and bob (members), project proj with dataset proj/ds; carol elsewhere."""
    from argon2 import PasswordHasher

    from labkeep.access import secrets

    base = tmp_path_factory.mktemp("webjobs")
    cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(secrets, "_hasher", lambda: cheap)
        keep = Keep.init(base / "keep")
        keep.config.durability = "file"
        # this module is about the queue: no extraction jobs after ingest (test_extract)
        keep.config.extract = dataclasses.replace(keep.config.extract, after_ingest=False)
        for name in ("alice", "bob", "carol"):
            keep.add_user(name, password=PASSWORD)
        keep.create_group("lab")
        keep.set_member("lab", "alice", "member")
        keep.set_member("lab", "bob", "member")
        keep.create_project("proj", group="lab")
        source = base / "src"
        (source / "sub").mkdir(parents=True)
        (source / "a.txt").write_bytes(b"alpha\n")
        (source / "sub" / "b.csv").write_bytes(b"x,y\n1,2\n")
        keep.ingest(source, "proj/ds")
        try:
            with LiveServer(keep) as live:
                yield live
        finally:
            keep.close()
            unseal_tree(base)


def api_client(server: LiveServer, user: str) -> httpx.Client:
    keep = server.keep
    token, _ = keep.acting_as(keep.principal_for(user)).create_token("t", expires="1h")
    return server.client(headers={"Authorization": f"Bearer {token}"}, timeout=30)


def drain(keep: Keep) -> None:
    JobWorker(keep, drain=True, log=io.StringIO(), schedule=False).run()


# -- JSON API ---------------------------------------------------------------------------------
def test_queue_verify_list_run_and_see_the_result(server: LiveServer) -> None:
    with api_client(server, "alice") as alice, api_client(server, "bob") as bob:
        queued = alice.post(f"{API}/datasets/proj/ds/verify")
        assert queued.status_code == 202, queued.text
        job = queued.json()
        assert job["kind"] == "verify" and job["state"] == "queued"
        assert job["target"] == "proj/ds" and job["created_by"] == "alice"
        assert job["workers"] == 0
        # a double click queues nothing new
        assert alice.post(f"{API}/datasets/proj/ds/verify").json()["id"] == job["id"]
        # listed for alice, not for bob; bob is told it does not exist
        mine = alice.get(f"{API}/jobs", params={"state": "active"}).json()
        assert [j["id"] for j in mine["items"]] == [job["id"]]
        assert mine["counts"]["queued"] == 1
        assert job["id"] not in [j["id"] for j in bob.get(f"{API}/jobs").json()["items"]]
        hidden = bob.get(f"{API}/jobs/{job['id']}")
        assert hidden.status_code == 404 and hidden.json()["error"] == "not-found"
        assert bob.post(f"{API}/jobs/{job['id']}/cancel").status_code == 404
        # bob may read the dataset: he sees that a job runs on it, not its arguments
        active = bob.get(f"{API}/datasets/proj/ds/jobs").json()
        assert [(j["id"], j["kind"], j["state"]) for j in active] == [
            (job["id"], "verify", "queued")
        ]
        assert "args" not in active[0]

        drain(server.keep)
        done = alice.get(f"{API}/jobs/{job['id']}").json()
        assert done["state"] == "done", done
        assert done["result"]["states"]["ok"] == 2 and done["result"]["problems"] == []
        assert alice.get(f"{API}/datasets/proj/ds/jobs").json() == []
        assert alice.get(f"{API}/datasets/proj/ds/verification").json()["ok"] is True
        # cancelling a finished job: a usage error in the API's error shape
        late = alice.post(f"{API}/jobs/{job['id']}/cancel")
        assert late.status_code == 400 and late.json()["status"] == "error"


def test_cancel_a_queued_job_and_retry_a_failed_one(server: LiveServer) -> None:
    with api_client(server, "alice") as alice:
        job = alice.post(f"{API}/jobs", json={"kind": "verify", "args": {"target": "proj/ds"}})
        assert job.status_code == 202, job.text
        job_id = job.json()["id"]
        cancelled = alice.post(f"{API}/jobs/{job_id}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
        # a copy to a store that does not exist is refused when it is queued
        nowhere = alice.post(f"{API}/datasets/proj/ds/copy", json={"to": "nowhere"})
        assert nowhere.status_code == 404 and "no store 'nowhere'" in nowhere.text
        # a job that fails for good: a verify that finds a damaged file
        victim = next(p for p in (server.keep.tree.base / "proj/ds/raw").rglob("*") if p.is_file())
        original = victim.read_bytes()
        victim.write_bytes(b"damaged" + original)
        try:
            failing = alice.post(f"{API}/datasets/proj/ds/verify")
            assert failing.status_code == 202, failing.text
            fail_id = failing.json()["id"]
            drain(server.keep)
        finally:
            victim.write_bytes(original)
        failed = alice.get(f"{API}/jobs/{fail_id}").json()
        assert failed["state"] == "failed" and failed["attempts"] == 1
        assert victim.name in failed["last_error"]
        assert alice.get(f"{API}/jobs", params={"state": "failed"}).json()["items"][0]["id"] == (
            fail_id
        )
        again = alice.post(f"{API}/jobs/{fail_id}/retry")
        assert again.status_code == 200 and again.json()["state"] == "queued"
        assert again.json()["attempts"] == 0
        # the cancelled one can be retried too; a queued one cannot
        assert alice.post(f"{API}/jobs/{job_id}/retry").json()["state"] == "queued"
        assert alice.post(f"{API}/jobs/{job_id}/retry").status_code == 400
        for i in (job_id, fail_id):
            alice.post(f"{API}/jobs/{i}/cancel")


def test_who_may_queue_what(server: LiveServer) -> None:
    with api_client(server, "alice") as alice, api_client(server, "carol") as carol:
        scrub = alice.post(f"{API}/jobs", json={"kind": "scrub", "args": {}})
        assert scrub.status_code == 403 and scrub.json()["error"] == "forbidden"
        assert alice.post(f"{API}/jobs", json={"kind": "noop", "args": {}}).status_code == 403
        assert alice.post(f"{API}/jobs", json={"kind": "nope", "args": {}}).status_code == 400
        assert alice.get(f"{API}/workers").status_code == 403
        # carol is in no group: proj/ds does not exist for her
        assert carol.post(f"{API}/datasets/proj/ds/verify").status_code == 404
        assert carol.get(f"{API}/datasets/proj/ds/jobs").status_code == 404
        assert carol.get(f"{API}/jobs").json()["items"] == []
    keep = server.keep
    secret, _ = keep.acting_as(keep.principal_for("alice")).create_token(
        "ro", expires="1h", read_only=True
    )
    with server.client(headers={"Authorization": f"Bearer {secret}"}) as read_only:
        assert read_only.get(f"{API}/jobs").status_code == 200
        assert read_only.post(f"{API}/datasets/proj/ds/verify").status_code == 403
    with server.client() as anonymous:
        assert anonymous.get(f"{API}/jobs").status_code == 403
        assert anonymous.post(f"{API}/datasets/proj/ds/verify").status_code == 403
    # a site admin sees everyone's jobs and the workers
    admin_token, _ = keep.create_token("admin", expires="1h")
    with server.client(headers={"Authorization": f"Bearer {admin_token}"}) as admin:
        assert admin.get(f"{API}/workers").json() == []
        queued = admin.post(f"{API}/jobs", json={"kind": "scrub", "args": {"max_age_days": 1}})
        assert queued.status_code == 202
        admin.post(f"{API}/jobs/{queued.json()['id']}/cancel")
        creators = {j["created_by"] for j in admin.get(f"{API}/jobs").json()["items"]}
        assert {"alice", keep.actor} <= creators


def test_job_list_pages_by_id(server: LiveServer) -> None:
    keep = server.keep
    alice = keep.acting_as(keep.principal_for("alice"))
    ids = [alice.enqueue("verify", {"target": "proj/ds"}).id for _ in range(5)]
    for i in ids:
        alice.cancel_job(i)
    with api_client(server, "alice") as client:
        first = client.get(f"{API}/jobs", params={"limit": 3, "kind": "verify"}).json()
        assert [j["id"] for j in first["items"]] == ids[::-1][:3]
        rest = client.get(
            f"{API}/jobs", params={"limit": 3, "kind": "verify", "before": first["next_before"]}
        ).json()
        assert [j["id"] for j in rest["items"]][:2] == ids[::-1][3:]
        bad = client.get(f"{API}/jobs", params={"limit": 100_000})
        assert bad.status_code == 422


# -- HTML pages -------------------------------------------------------------------------------
def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]*)"', html)
    assert match, "no csrf_token field on the page"
    return match.group(1)


def sign_in(client: httpx.Client, name: str) -> str:
    token = csrf_of(client.get("/login").text)
    answer = client.post("/login", data={"name": name, "password": PASSWORD, "csrf_token": token})
    assert answer.status_code == 303, answer.text
    return csrf_of(client.get("/").text)


def test_pages_verify_button_job_page_cancel_retry(server: LiveServer) -> None:
    keep = server.keep
    with server.client() as client:
        token = sign_in(client, "alice")
        assert 'id="nav-jobs"' in client.get("/").text
        queued = client.post("/p/proj/ds/verify", data={"csrf_token": token})
        assert queued.status_code == 303
        url = queued.headers["location"].split("?")[0]
        assert re.fullmatch(r"/jobs/\d+", url)
        job_id = int(url.rsplit("/", 1)[1])
        page = client.get(url)
        assert 'id="job-state"' in page.text and ">queued<" in page.text
        assert 'http-equiv="refresh"' in page.text
        assert "No worker is running" in page.text and "labkeep worker" in page.text
        assert 'id="cancel-job"' in page.text
        # the dataset page shows the job, with progress once it runs
        dataset = client.get("/p/proj/ds").text
        assert f'id="dataset-job-{job_id}"' in dataset and "Verifying" in dataset
        with keep.catalog.write() as session:
            session.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(
                    state="running",
                    progress='{"files": 812, "total_files": 2000, "bytes": 5, "total_bytes": 0}',
                )
            )
        dataset = client.get("/p/proj/ds").text
        assert "812 / 2,000 files (41 %)" in dataset and "<progress" in dataset
        listing = client.get("/jobs").text
        assert f'id="job-{job_id}"' in listing and "812 / 2,000 files" in listing
        with keep.catalog.write() as session:
            session.execute(update(Job).where(Job.id == job_id).values(state="queued"))
        # a CSRF-less cancel is refused; with the token it cancels
        assert client.post(f"/jobs/{job_id}/cancel").status_code == 403
        done = client.post(f"/jobs/{job_id}/cancel", data={"csrf_token": token})
        assert done.status_code == 303
        page = client.get(done.headers["location"]).text
        assert ">cancelled<" in page and 'id="retry-job"' in page
        assert 'http-equiv="refresh"' not in page
        again = client.post(f"/jobs/{job_id}/retry", data={"csrf_token": token})
        assert ">queued<" in client.get(again.headers["location"]).text
        drain(keep)
        page = client.get(url).text
        assert ">done<" in page and "All 2 files match their SHA-256." in page
        # filters and bounds
        assert f'id="job-{job_id}"' in client.get("/jobs", params={"state": "done"}).text
        assert f'id="job-{job_id}"' not in client.get("/jobs", params={"state": "failed"}).text
        assert client.get("/jobs", params={"state": "bogus"}).status_code == 400
        assert client.get("/jobs/99999999999").status_code == 404
        assert client.get("/jobs/abc").status_code == 404
    with server.client() as bob:
        sign_in(bob, "bob")
        assert bob.get(url).status_code == 404
        assert f'id="job-{job_id}"' not in bob.get("/jobs").text
    with server.client() as anonymous:
        assert anonymous.get("/jobs").status_code == 403


def test_admin_dashboard_shows_the_queue(server: LiveServer) -> None:
    keep = server.keep
    keep.set_password(keep.actor, PASSWORD)
    alice = keep.acting_as(keep.principal_for("alice"))
    job = alice.enqueue("verify", {"target": "proj/ds"})
    try:
        with server.client() as client:
            sign_in(client, keep.actor)
            home = client.get("/").text
            assert 'id="queue"' in home and 'id="queue-queued">1<' in home
            assert 'id="queue-workers">0<' in home and "labkeep worker" in home
            listing = client.get("/jobs").text
            assert f'id="job-{job.id}"' in listing and "alice" in listing
        with server.client() as client:
            sign_in(client, "alice")
            assert 'id="queue"' not in client.get("/").text
    finally:
        alice.cancel_job(job.id)
