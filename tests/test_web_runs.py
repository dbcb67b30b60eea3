"""Runs in the web, as a user sees them, over a real server: how a version was made (the
command, its pinned inputs linked to their landing pages, environment, outputs), what was
made from a dataset, the runs pages (a failed run's error, a rerun's comparison), cancel,
the JSON API of runs, the JSON-LD provenance, who may see what; and one browser test that
clicks from a version made by a run to its input's landing page."""

from __future__ import annotations

import hashlib
import importlib
import json
import re
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from labkeep import Keep
from tests.conftest import unseal_tree
from tests.webserver import LiveServer


def _environment_stand_in() -> None:
    """labkeep.ops.environment (capture, container_info, container_argv) is being written
    in parallel: until it lands, runs here use this tiny stand-in. It is installed only
    when the real module cannot be imported, and is replaced by the real one when it
    lands (then this function does nothing)."""
    try:
        importlib.import_module("labkeep.ops.environment")
    except ImportError:
        import platform
        import socket

        module = types.ModuleType("labkeep.ops.environment")

        def capture(container: dict[str, Any] | None = None) -> dict[str, Any]:
            return {
                "python": {"version": platform.python_version()},
                "os": {"platform": platform.platform()},
                "host": {"hostname": socket.gethostname()},
                "cpu": {"model": platform.machine(), "count": 2},
                "gpu": [],
            }

        def container_info(image: str) -> dict[str, Any]:
            return {"image": image, "digest": "", "engine": "none"}

        def container_argv(
            info: dict[str, Any], argv: list[str], binds: list[tuple[str, str, bool]]
        ) -> list[str]:
            return argv

        module.capture = capture  # type: ignore[attr-defined]
        module.container_info = container_info  # type: ignore[attr-defined]
        module.container_argv = container_argv  # type: ignore[attr-defined]
        sys.modules["labkeep.ops.environment"] = module
        import labkeep.ops

        labkeep.ops.environment = module  # type: ignore[attr-defined]


_environment_stand_in()

from labkeep.ops.runs import RunRequest  # noqa: E402

API = "/api/v1"
PASSWORD = "a long enough password"
#: reads every file of its input folder, writes a listing (the same every time) and a
#: stamp (different every time: a rerun finds it differing)
ANALYSIS = (
    "import os, sys, time\n"
    "src, out = sys.argv[1], sys.argv[2]\n"
    "names = sorted(os.path.relpath(os.path.join(d, f), src)"
    " for d, _, fs in os.walk(src) for f in fs)\n"
    "with open(os.path.join(out, 'result.txt'), 'w') as h:\n"
    "    for n in names:\n"
    "        h.write(n + ' ' + str(os.path.getsize(os.path.join(src, n))) + '\\n')\n"
    "open(os.path.join(out, 'stamp.txt'), 'w').write(str(time.time_ns()))\n"
)
FAILING = "import sys\nsys.stderr.write('cannot read the plate <b>layout</b>\\n')\nsys.exit(3)\n"


@dataclass
class World:
    server: LiveServer
    keep: Keep
    done: dict[str, Any]
    failed: dict[str, Any]
    rerun: dict[str, Any]
    result_sha256: str

    @property
    def pinned(self) -> int:
        """The version of proj/s1 the runs read (its head when they ran: sealed)."""
        return int(self.done["inputs"][0]["version"])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """alice and bob (lab members), carol (no group); proj/s1 (a sealed session, 2 files)
    read by a run of alice's into proj/ana; a failed run; a rerun of the first run."""
    from argon2 import PasswordHasher

    from labkeep.access import secrets

    base = tmp_path_factory.mktemp("webruns")
    cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(secrets, "_hasher", lambda: cheap)
        keep = Keep.init(base / "keep")
        keep.config.durability = "file"
        try:
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
            keep.ingest(source, "proj/s1")
            keep.seal("proj/s1")
            keep.create_dataset("proj/ana", kind="analysis")
            alice = keep.acting_as(keep.principal_for("alice"))
            done = alice.run(
                RunRequest(
                    command=[sys.executable, "-c", ANALYSIS, "{input}", "{outputs}"],
                    inputs=["proj/s1"],
                    output="proj/ana",
                    message="count the plate's files",
                ),
                echo=False,
            )
            assert done["state"] == "done", done
            try:
                failed = alice.run(
                    RunRequest(
                        command=[sys.executable, "-c", FAILING],
                        inputs=["proj/s1"],
                        output="proj/ana",
                        message="a broken step",
                    ),
                    echo=False,
                )
            except Exception:  # a RunFailed: the record says why
                failed = alice.list_runs("proj/ana", limit=1)[0]
            assert failed["state"] == "failed", failed
            rerun = alice.rerun(done["id"], echo=False)
            expected = b"raw/a.txt 6\nraw/sub/b.csv 8\n"  # what ANALYSIS writes
            with LiveServer(keep) as live:
                yield World(live, keep, done, failed, rerun, hashlib.sha256(expected).hexdigest())
        finally:
            keep.close()
            unseal_tree(base)


def api_client(w: World, user: str) -> httpx.Client:
    token, _ = w.keep.acting_as(w.keep.principal_for(user)).create_token("t", expires="1h")
    return w.server.client(headers={"Authorization": f"Bearer {token}"}, timeout=30)


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]*)"', html)
    assert match, "no csrf_token field on the page"
    return match.group(1)


def sign_in(client: httpx.Client, name: str) -> str:
    token = csrf_of(client.get("/login").text)
    answer = client.post("/login", data={"name": name, "password": PASSWORD, "csrf_token": token})
    assert answer.status_code == 303, answer.text
    return csrf_of(client.get("/").text)


def json_ld(html: str) -> dict[str, Any]:
    match = re.search(r'<script type="application/ld\+json">(.*?)</script>', html, re.S)
    assert match
    data: dict[str, Any] = json.loads(match.group(1))
    return data


# -- pages ------------------------------------------------------------------------------------
def test_a_version_page_shows_how_the_run_made_it(world: World) -> None:
    run, version = world.done, world.done["version"]
    assert version is not None
    with world.server.client() as client:
        sign_in(client, "alice")
        page = client.get(f"/p/proj/ana/@{version}")
        assert page.status_code == 200, page.text
        html = page.text
        assert 'id="made-by"' in html and "count the plate&#39;s files" in html
        # the command as given (with its placeholders) and as run (staged paths)
        assert "{input}" in html and "{outputs}" in html and sys.executable in html
        assert 'id="run-argv"' in html
        # the input, linked to its landing page at the pinned version
        assert f'class="run-input" href="/p/proj/s1/@{world.pinned}"' in html
        # environment, executor, exit code, user
        assert "Python" in html and 'id="run-exit-code">0<' in html
        assert 'id="run-user">alice<' in html and 'id="run-executor">local' in html
        # the outputs with their SHA-256
        assert "result.txt" in html and world.result_sha256 in html
        assert f'href="/runs/{run["id"]}"' in html
        # JSON-LD: the inputs it is based on and the CreateAction whose result it is
        data = json_ld(html)
        assert data["@type"] == "Dataset"
        assert [i["url"] for i in data["isBasedOn"]] == [
            f"{world.server.url}/p/proj/s1/@{world.pinned}"
        ]
        action = data["@reverse"]["result"]
        assert action["@type"] == "CreateAction"
        assert action["url"] == f"{world.server.url}/runs/{run['id']}"
        assert action["object"][0]["url"].endswith(f"/p/proj/s1/@{world.pinned}")
        assert action["actionStatus"] == "https://schema.org/CompletedActionStatus"
        # the dataset's page links each version made by a run to the run
        head = client.get("/p/proj/ana").text
        assert f'id="version-{version}-run" href="/runs/{run["id"]}"' in head
        # the input's pages list what was made from it
        for url in ("/p/proj/s1", f"/p/proj/s1/@{world.pinned}"):
            made = client.get(url).text
            assert f'id="derived-run-{run["id"]}"' in made, url
            assert f'href="/p/proj/ana/@{version}"' in made, url
        # a version not made by a run shows no run
        assert 'id="made-by"' not in client.get("/p/proj/s1/@1").text
        assert 'id="derived"' not in client.get("/p/proj/s1/@1").text  # no run read @1


def test_pages_respect_the_root_path(world: World) -> None:
    """Behind a reverse proxy under /lk (the server's root path), links carry the prefix."""
    import asyncio

    app = world.server.app
    assert app is not None
    token, _ = world.keep.acting_as(world.keep.principal_for("alice")).create_token("rp")

    async def get(url: str) -> str:
        transport = httpx.ASGITransport(app=app, root_path="/lk")
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://proxy",
            headers={"Authorization": f"Bearer {token}", "Accept": "text/html"},
        ) as client:
            answer = await client.get(url)
            assert answer.status_code == 200, answer.text
            return answer.text

    html = asyncio.run(get(f"/lk/p/proj/ana/@{world.done['version']}"))
    assert f'class="run-input" href="/lk/p/proj/s1/@{world.pinned}"' in html
    assert f'href="/lk/runs/{world.done["id"]}"' in html
    page = asyncio.run(get(f"/lk/runs/{world.done['id']}"))
    assert f'class="run-input" href="/lk/p/proj/s1/@{world.pinned}"' in page


def test_runs_pages(world: World) -> None:
    done, failed, rerun = world.done, world.failed, world.rerun
    with world.server.client() as client:
        sign_in(client, "bob")  # a reader of the output dataset, not who ran them
        assert 'id="nav-runs"' in client.get("/").text
        listing = client.get("/runs").text
        ids = [int(i) for i in re.findall(r'<tr id="run-(\d+)">', listing)]
        assert ids == sorted([done["id"], failed["id"], rerun["id"]], reverse=True)
        only_failed = client.get("/runs", params={"state": "failed"}).text
        assert re.findall(r'<tr id="run-(\d+)">', only_failed) == [str(failed["id"])]
        by_dataset = client.get("/runs", params={"dataset": "proj/s1"}).text
        assert 'id="run-' not in by_dataset.replace('id="run-filters"', "")
        assert client.get("/runs", params={"state": "bogus"}).status_code == 400
        assert client.get("/runs", params={"dataset": "proj/nope"}).status_code == 404
        # one run: the whole record
        page = client.get(f"/runs/{done['id']}").text
        assert "count the plate&#39;s files" in page and world.result_sha256 in page
        assert f'class="run-input" href="/p/proj/s1/@{world.pinned}"' in page
        assert 'id="cancel-run"' not in page  # it has finished
        # a failed run: its error and the end of its stderr (escaped)
        page = client.get(f"/runs/{failed['id']}").text
        assert 'id="run-error"' in page and "exited with code 3" in page
        assert "cannot read the plate &lt;b&gt;layout&lt;/b&gt;" in page
        assert "<b>layout</b>" not in page
        assert 'id="run-exit-code">3<' in page
        # a rerun: compared with the original, the differing output with both hashes
        page = client.get(f"/runs/{rerun['id']}").text
        assert f'id="rerun-of" href="/runs/{done["id"]}"' in page
        assert 'id="count-identical">1 identical' in page
        assert 'id="count-differing">1 differing' in page
        differing = {d["path"]: d for d in rerun["comparison"]["differing"]}
        assert set(differing) == {"stamp.txt"}
        assert differing["stamp.txt"]["old_sha256"] in page
        assert differing["stamp.txt"]["new_sha256"] in page
        # bounds and nonsense
        assert client.get("/runs/99999999999").status_code == 404
        assert client.get("/runs/abc").status_code == 404
        assert client.get("/runs", params={"before": "x"}).status_code == 404


# -- JSON API ---------------------------------------------------------------------------------
def test_api_returns_the_records(world: World) -> None:
    done, failed, rerun = world.done, world.failed, world.rerun
    with api_client(world, "bob") as api:
        listed = api.get(f"{API}/runs", params={"dataset": "proj/ana", "limit": 2}).json()
        newest = sorted([done["id"], failed["id"], rerun["id"]], reverse=True)
        assert [r["id"] for r in listed["items"]] == newest[:2]
        assert "outputs" not in listed["items"][0]
        older = api.get(
            f"{API}/runs", params={"dataset": "proj/ana", "before": listed["next_before"]}
        ).json()
        assert done["id"] in [r["id"] for r in older["items"]]
        assert [
            r["id"] for r in api.get(f"{API}/runs", params={"state": "failed"}).json()["items"]
        ] == [failed["id"]]
        assert api.get(f"{API}/runs", params={"state": "bogus"}).status_code == 422
        assert api.get(f"{API}/runs", params={"limit": 100_000}).status_code == 422
        # one run, its outputs a page at a time
        record = api.get(f"{API}/runs/{done['id']}").json()
        assert record["command"] == done["command"] and record["state"] == "done"
        assert record["inputs"][0]["address"] == f"proj/s1@{world.pinned}"
        assert record["outputs_total"] == 2 and record["outputs_next_after"] is None
        assert [o["path"] for o in record["outputs"]] == ["result.txt", "stamp.txt"]
        first = api.get(f"{API}/runs/{done['id']}", params={"outputs_limit": 1}).json()
        assert len(first["outputs"]) == 1 and first["outputs_next_after"]
        rest = api.get(
            f"{API}/runs/{done['id']}",
            params={"outputs_limit": 5, "outputs_after": first["outputs_next_after"]},
        ).json()
        assert [o["path"] for o in first["outputs"] + rest["outputs"]] == [
            o["path"] for o in record["outputs"]
        ]
        assert next(o for o in record["outputs"] if o["path"] == "result.txt")["sha256"] == (
            world.result_sha256
        )
        again = api.get(f"{API}/runs/{rerun['id']}").json()
        assert again["rerun_of"] == done["id"]
        assert again["settings"]["comparison"]["differing"] == 1
        assert [d["path"] for d in again["differing"]] == ["stamp.txt"]
        # runs into a dataset; runs that read one
        into = api.get(f"{API}/datasets/proj/ana/runs").json()
        assert {r["id"] for r in into} == {done["id"], failed["id"], rerun["id"]}
        derived = api.get(f"{API}/datasets/proj/s1/derived").json()
        assert {r["id"] for r in derived} == {done["id"], failed["id"], rerun["id"]}
        assert api.get(f"{API}/datasets/proj/s1/derived", params={"version": 1}).json() == []
        assert api.get(f"{API}/datasets/proj/s1/runs").json() == []
        missing = api.get(f"{API}/runs/99999")
        assert missing.status_code == 404 and missing.json()["error"] == "not-found"


def test_others_get_not_found(world: World) -> None:
    run_id = world.done["id"]
    with api_client(world, "carol") as carol:
        hidden = carol.get(f"{API}/runs/{run_id}")
        missing = carol.get(f"{API}/runs/99999")
        assert hidden.status_code == missing.status_code == 404
        assert hidden.json()["message"] == missing.json()["message"].replace("99999", str(run_id))
        assert carol.get(f"{API}/runs").json()["items"] == []
        assert carol.get(f"{API}/runs", params={"dataset": "proj/ana"}).status_code == 404
        assert carol.get(f"{API}/datasets/proj/s1/derived").status_code == 404
        assert carol.get(f"{API}/datasets/proj/ana/runs").status_code == 404
    with world.server.client() as client:
        sign_in(client, "carol")
        page = client.get(f"/runs/{run_id}")
        assert page.status_code == 404 and "count the plate" not in page.text
        assert 'id="run-' not in client.get("/runs").text.replace('id="run-filters"', "")
    with world.server.client() as anonymous:
        assert anonymous.get(f"/runs/{run_id}").status_code == 404
        assert anonymous.get(f"{API}/runs/{run_id}").status_code == 404


def test_cancel(world: World) -> None:
    from labkeep.ops.run_slurm import queue_local

    keep = world.keep
    alice = keep.acting_as(keep.principal_for("alice"))
    with world.server.client() as client:
        token = sign_in(client, "bob")
        # a finished run: refused, with a clear error (no traceback)
        late = client.post(f"/runs/{world.done['id']}/cancel", data={"csrf_token": token})
        assert late.status_code == 400
        assert f"Run {world.done['id']} is done: nothing to cancel." in late.text
        assert "Traceback" not in late.text
        # a queued run of alice's: bob may save to proj/ana, so he may cancel it
        queued = queue_local(
            alice,
            RunRequest(command=[sys.executable, "-c", "pass"], output="proj/ana"),
        )
        page = client.get(f"/runs/{queued['id']}").text
        assert 'id="cancel-run"' in page and ">queued<" in page
        assert client.post(f"/runs/{queued['id']}/cancel").status_code == 403  # no CSRF
        answer = client.post(f"/runs/{queued['id']}/cancel", data={"csrf_token": token})
        assert answer.status_code == 303, answer.text
        page = client.get(answer.headers["location"]).text
        assert ">cancelled<" in page and "cancelled before it ran" in page
        assert 'id="cancel-run"' not in page
    with api_client(world, "alice") as api:
        late = api.post(f"{API}/runs/{world.done['id']}/cancel")
        assert late.status_code == 400 and late.json()["status"] == "error"
        assert "nothing to cancel" in late.json()["message"]
        again = queue_local(alice, RunRequest(command=["true"], output="proj/ana"))
        cancelled = api.post(f"{API}/runs/{again['id']}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    with api_client(world, "carol") as carol:
        assert carol.post(f"{API}/runs/{world.done['id']}/cancel").status_code == 404


# -- a browser --------------------------------------------------------------------------------
def test_browser_from_a_version_to_its_input(world: World) -> None:
    from playwright.sync_api import expect, sync_playwright

    from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS, VIEWPORT

    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: install it with 'apt-get install chromium'")
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(base_url=world.server.url, viewport=VIEWPORT)
            context.set_default_timeout(TIMEOUT_MS)
            page = context.new_page()
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on(
                "console",
                lambda m: problems.append(m.text) if m.type == "error" else None,
            )
            page.goto("/login")
            form = page.locator("form#login")
            form.locator("input[name=name]").fill("alice")
            form.locator("input[name=password]").fill(PASSWORD)
            form.locator("button#login-submit").click()
            expect(page.locator("#me")).to_have_text("alice")
            page.goto(f"/p/proj/ana/@{world.done['version']}")
            expect(page.locator("#made-by-title")).to_contain_text("was made")
            expect(page.locator("#run-outputs")).to_contain_text("result.txt")
            page.locator("a.run-input").first.click()
            page.wait_for_url(re.compile(rf"/p/proj/s1/@{world.pinned}$"))
            expect(page.locator("#dataset-address")).to_have_text("proj/s1")
            expect(page.locator(f"#derived-run-{world.done['id']}")).to_be_visible()
            # and on to the run's page from there
            page.locator(f"#derived-run-{world.done['id']} a").first.click()
            page.wait_for_url(re.compile(rf"/runs/{world.done['id']}$"))
            expect(page.locator("#run-title")).to_have_text("count the plate's files")
            context.close()
        finally:
            browser.close()
    assert not problems, problems
