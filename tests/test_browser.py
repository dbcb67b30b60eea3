"""End-to-end tests: headless Chromium (Playwright) driving the web UI of a real server.

What a scientist does: sign in, create a project and a dataset, upload files, browse and
download them (one file, the zip, the manifest), seal and verify; share a dataset with
someone who has no account and revoke the link; what an outsider sees of a project; the
sign-in form by keyboard only.

One Chromium for the module, a fresh browser context (no cookies) per test. Playwright
never downloads a browser here: it drives Debian's /usr/bin/chromium.

Screenshots of the main pages are taken on every run (into a temporary folder); with
``UPDATE_SCREENSHOTS=1`` in the environment they are written to ``docs/screenshots``
instead, where they are committed (so a normal test run leaves the work tree clean).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    FilePayload,
    Page,
    Playwright,
    ViewportSize,
    expect,
    sync_playwright,
)

from labkeep import Keep
from labkeep.ops.worker import JobWorker
from tests.conftest import unseal_tree
from tests.webserver import LiveServer

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
TIMEOUT_MS = 20_000  # generous: a busy 2-core machine runs the server and the browser
VIEWPORT = ViewportSize(width=1280, height=900)
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"

PASSWORDS = {
    "alice": "alice password 1",  # member of the group "lab"
    "carol": "carol password 12",  # in no group
}
#: what alice uploads through the form (a non-ASCII name among them)
UPLOADS = {
    "notes.txt": b"sample 17, 40x objective\n",
    "Messwerte_Größe_µm.csv": "länge,µm\n1,2.5\n".encode(),
    "image.tif": bytes(range(256)) * 8,
}
#: the dataset of the fixture that test_share_link shares
SHARED = {"raw/a.txt": b"alpha\n", "raw/sub/b.csv": b"x,y\n1,2\n"}

expect.set_options(timeout=TIMEOUT_MS)


# -- fixtures --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A keep with the group "lab" (alice a plain member), its project "screen" with one
    dataset, and carol, who is in no group."""
    base = tmp_path_factory.mktemp("browser")
    keep = Keep.init(base / "keep")
    keep.config.durability = "file"  # syncfs of a busy shared disk is slow; not tested here
    for name, password in PASSWORDS.items():
        keep.add_user(name, password=password)
    keep.create_group("lab")
    keep.set_member("lab", "alice", "member")
    keep.create_project("screen", title="Drug screen 2026", group="lab")
    source = base / "src"
    for path, content in SHARED.items():
        file = source / path.removeprefix("raw/")
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(content)
    keep.ingest(source, "screen/plate1")
    keep.update_dataset("screen/plate1", title="Plate 1", description="The first plate.")
    with LiveServer(keep) as live:
        yield live
    keep.close()
    unseal_tree(base)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the module; a clear failure (not a skip) if it cannot start."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"no Chromium at {CHROMIUM}: install it with 'apt-get install chromium'")
    with sync_playwright() as p:
        chromium = _launch(p)
        try:
            yield chromium
        finally:
            chromium.close()


def _launch(p: Playwright) -> Browser:
    try:
        return p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    except Exception as exc:
        pytest.fail(f"Chromium ({CHROMIUM}) could not start: {exc}")


class Session:
    """A browser context (a private window: its own cookies) with its pages.

    Collects JavaScript errors and console errors (a CSP violation is one), which
    :meth:`check` turns into a failure.
    """

    def __init__(self, browser: Browser, base_url: str) -> None:
        self.context: BrowserContext = browser.new_context(
            base_url=base_url, viewport=VIEWPORT, accept_downloads=True
        )
        self.context.set_default_timeout(TIMEOUT_MS)
        self.context.set_default_navigation_timeout(TIMEOUT_MS)
        self.problems: list[str] = []

    def new_page(self) -> Page:
        page = self.context.new_page()
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        page.on("console", self._console)
        # sealing and revoking ask "are you sure?" (form[data-confirm]): say yes
        page.on("dialog", lambda dialog: dialog.accept())
        return page

    def _console(self, message: ConsoleMessage) -> None:
        # an error page answers 401/404, which Chromium logs as "Failed to load resource"
        if message.type == "error" and "Failed to load resource" not in message.text:
            self.problems.append(f"console error: {message.text}")

    def cookie_names(self) -> set[str]:
        return {c.get("name", "") for c in self.context.cookies()}

    def check(self) -> None:
        assert not self.problems, self.problems

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def session(browser: Browser, server: LiveServer) -> Iterator[Session]:
    """A fresh context for each test (no cookies), closed after it."""
    made = Session(browser, server.url)
    try:
        yield made
        made.check()
    finally:
        made.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        return SCREENSHOTS
    return tmp_path_factory.mktemp("screenshots")


def screenshot(page: Page, folder: Path, name: str) -> None:
    page.screenshot(path=folder / f"{name}.png", full_page=True, animations="disabled")


# -- helpers ---------------------------------------------------------------------------------
def sign_in(page: Page, name: str) -> None:
    page.goto("/login")
    form = page.locator("form#login")
    form.locator("input[name=name]").fill(name)
    form.locator("input[name=password]").fill(PASSWORDS[name])
    form.locator("button#login-submit").click()
    expect(page.locator("#me")).to_have_text(name)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def download(page: Page, selector: str) -> tuple[str, bytes]:
    """Click a download link; the file's suggested name and bytes."""
    with page.expect_download() as info:
        page.locator(selector).click()
    done = info.value
    assert done.failure() is None, done.failure()
    return done.suggested_filename, Path(done.path()).read_bytes()


def table_paths(page: Page) -> list[str]:
    """The Path column of the file table on this page."""
    return [t.strip() for t in page.locator("#files tbody td.path a").all_inner_texts()]


# -- 1. the scientist's day ------------------------------------------------------------------
def test_sign_in_create_upload_download_seal_verify(
    session: Session, server: LiveServer, shots: Path
) -> None:
    page = session.new_page()

    # a wrong password: the error, no session
    page.goto("/")
    page.locator("a#sign-in").click()
    page.wait_for_url(re.compile(r"/login"))
    screenshot(page, shots, "login")
    page.locator("input[name=name]").fill("alice")
    page.locator("input[name=password]").fill("not the password")
    page.locator("button#login-submit").click()
    expect(page.locator("#login-error")).to_have_text("Wrong user name or password.")
    expect(page.locator("input[name=name]")).to_have_value("alice")
    expect(page.locator("input[name=password]")).to_have_value("")
    assert "labkeep_session" not in session.cookie_names()
    expect(page.locator("#me")).to_have_count(0)

    # the right one: the dashboard, with a session cookie the page script cannot read
    page.locator("input[name=password]").fill(PASSWORDS["alice"])
    page.locator("button#login-submit").click()
    page.wait_for_url(server.url + "/")
    expect(page.locator("#me")).to_have_text("alice")
    assert "labkeep_session" in session.cookie_names()
    assert "labkeep_session" not in page.evaluate("document.cookie")

    # a project of her group, self-service
    form = page.locator("form#create-project")
    form.locator("#project-name").fill("imaging-2026")
    expect(form.locator("#project-group")).to_have_value("lab")
    form.locator("#project-title").fill("Confocal imaging 2026")
    form.locator("#project-description").fill("Live-cell imaging of the spring batch.")
    form.locator("#create-project-submit").click()
    page.wait_for_url(re.compile(r"/p/imaging-2026\?done=project-created$"))
    expect(page.locator("#notice")).to_have_text("The project was created.")
    expect(page.locator("#project-title")).to_have_text("Confocal imaging 2026")

    # a dataset in it
    form = page.locator("form#create-dataset")
    form.locator("#dataset-name").fill("s017-confocal")
    form.locator("#dataset-kind").select_option("session")
    form.locator("#dataset-title").fill("Session 17, confocal")
    form.locator("#create-dataset-submit").click()
    page.wait_for_url(re.compile(r"/p/imaging-2026/s017-confocal\?done=dataset-created$"))
    expect(page.locator("#notice")).to_have_text("The dataset was created.")
    expect(page.locator("#files tbody")).to_contain_text("No files yet.")

    # upload through the form (the page's script sends it with a progress bar)
    upload = page.locator("form#upload")
    upload.locator("#upload-files").set_input_files(
        [
            FilePayload(name=name, mimeType="application/octet-stream", buffer=content)
            for name, content in UPLOADS.items()
        ]
    )
    upload.locator("button#upload-submit").click()
    expect(page.locator("#upload-result")).to_have_text("3 files added: version 1.")
    expect(page.locator("#upload-files-result tbody tr")).to_have_count(3)
    page.locator("a#back").click()
    page.wait_for_url(server.url + "/p/imaging-2026/s017-confocal")

    # the file table lists exactly what was uploaded, in path (byte) order
    expected = sorted((f"raw/{n}" for n in UPLOADS), key=lambda p: p.encode())
    expect(page.locator("#files tbody tr")).to_have_count(3)
    assert table_paths(page) == expected
    expect(page.locator("#versions tbody tr")).to_have_count(1)

    # a file page; download the file: the same bytes, under its own (non-ASCII) name
    name = "Messwerte_Größe_µm.csv"
    page.locator("#files td.path a", has_text=name).click()
    page.wait_for_url(re.compile(r"/-/raw/"))
    expect(page.locator("#file-name")).to_have_text(name)
    expect(page.locator("#file-sha256")).to_have_text(sha256(UPLOADS[name]))
    suggested, data = download(page, "a#download-file")
    assert suggested == name
    assert data == UPLOADS[name]
    file_page = page.url

    # back to the dataset: the zip and the manifest
    page.locator(".crumbs a", has_text="s017-confocal").click()
    page.wait_for_url(server.url + "/p/imaging-2026/s017-confocal")
    suggested, data = download(page, "a#download-zip")
    assert suggested == "s017-confocal.zip"
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        assert sorted(archive.namelist()) == sorted(f"raw/{n}" for n in UPLOADS)
        for n, content in UPLOADS.items():
            assert archive.read(f"raw/{n}") == content

    with page.expect_response(re.compile(r"/manifest$")) as answer:
        page.locator("a#download-manifest").click()
    assert answer.value.status == 200
    lines = answer.value.body().decode("utf-8").splitlines()
    assert lines == [f"{sha256(UPLOADS[p[4:]])}  {p}" for p in expected]  # sha256sum format
    page.go_back()
    page.wait_for_url(server.url + "/p/imaging-2026/s017-confocal")

    # seal (after saying yes to the confirmation): sealed, no upload form any more
    page.locator("button#seal").click()
    page.wait_for_url(re.compile(r"/p/imaging-2026/s017-confocal\?done=sealed"))
    expect(page.locator("#notice")).to_have_text("Sealed: raw/ is now write-once.")
    expect(page.locator("#sealed-state")).to_contain_text("yes")
    expect(page.locator("#sealed-state")).to_contain_text("raw/ is write-once")
    expect(page.locator("#sealed-badge")).to_be_visible()
    expect(page.locator("form#upload")).to_have_count(0)
    expect(page.locator("button#seal")).to_have_count(0)
    # and the server refuses an upload sent anyway (with this session and its CSRF token)
    token = page.locator("form#verify input[name=csrf_token]").input_value()
    refused = session.context.request.post(
        "/p/imaging-2026/s017-confocal/upload",
        multipart={
            "csrf_token": token,
            "files": {"name": "late.txt", "mimeType": "text/plain", "buffer": b"too late"},
        },
    )
    assert refused.status == 409, refused.text()
    refused.dispose()

    # verify: a job is queued (no worker runs yet: the page says so), the worker runs
    # it, the job's page (refreshing itself) shows the result
    expect(page.locator("#verification")).to_contain_text("never verified")
    page.locator("form#verify #verify-submit").click()
    page.wait_for_url(re.compile(r"/jobs/\d+\?done=job-queued$"))
    expect(page.locator("#job-state")).to_have_text("queued")
    expect(page.locator("#no-worker")).to_contain_text("labkeep worker")
    job_page = page.url
    page.goto("/p/imaging-2026/s017-confocal")
    expect(page.locator("#dataset-jobs")).to_contain_text("Verifying")
    page.goto("/jobs")
    expect(page.locator("#jobs tbody tr")).to_have_count(1)
    expect(page.locator("#jobs tbody tr .job-state")).to_have_text("queued")
    page.goto(job_page)
    JobWorker(server.keep, drain=True, log=io.StringIO(), schedule=False).run()
    expect(page.locator("#job-state")).to_have_text("done")  # after its own refresh
    expect(page.locator("#verify-result")).to_have_text("All 3 files match their SHA-256.")
    page.locator("a#back").click()
    page.wait_for_url(server.url + "/p/imaging-2026/s017-confocal")
    expect(page.locator("#verification .state-ok")).to_have_text("OK")
    expect(page.locator("#verification")).to_contain_text("3 ok")
    expect(page.locator("#files tbody .state-ok")).to_have_count(3)
    screenshot(page, shots, "dataset")
    page.goto(file_page)
    expect(page.locator("#file-verification .state-ok")).to_have_text("OK")
    screenshot(page, shots, "file")

    page.goto("/p/imaging-2026")
    expect(page.locator("#datasets tbody tr")).to_have_count(1)
    expect(page.locator("#datasets tbody")).to_contain_text("sealed")
    screenshot(page, shots, "project")

    page.locator("a#nav-projects").click()
    page.wait_for_url(server.url + "/")
    expect(page.locator("#projects tbody")).to_contain_text("imaging-2026")
    expect(page.locator("#projects tbody")).to_contain_text("screen")
    screenshot(page, shots, "dashboard")

    # sign out: the session is gone
    page.locator("button#sign-out").click()
    expect(page.locator("#notice")).to_have_text("You are signed out.")
    expect(page.locator("a#sign-in")).to_be_visible()
    assert "labkeep_session" not in session.cookie_names()
    page.close()


# -- 2. a share link, opened in a private window ---------------------------------------------
def test_share_link_opens_in_a_private_window_until_revoked(
    session: Session, browser: Browser, server: LiveServer, shots: Path
) -> None:
    page = session.new_page()
    sign_in(page, "alice")
    page.goto("/p/screen/plate1")

    form = page.locator("form#share")
    form.locator("#share-expires").select_option("1d")
    form.locator("#share-label").fill("for the reviewers")
    before = datetime.now(UTC)
    form.locator("button#share-create").click()
    link = page.locator("input#share-link")
    expect(link).to_be_visible()
    url = link.input_value()
    assert re.fullmatch(re.escape(server.url) + r"/s/lks_[A-Za-z0-9_\-]+", url), url
    # it expires in one day
    expires = page.locator(".facts dd time").first.get_attribute("datetime")
    assert expires is not None
    when = datetime.fromisoformat(expires.replace("Z", "+00:00"))
    assert before + timedelta(hours=23) < when < before + timedelta(hours=25)
    expect(page.locator(".facts")).to_contain_text("for the reviewers")
    revoke = page.locator("button[id^=revoke-share-]")
    expect(revoke).to_have_count(1)

    # a private window: no cookies, no account
    outsider = Session(browser, server.url)
    try:
        window = outsider.new_page()
        window.goto(url)
        expect(window.locator("#share-title")).to_have_text("Plate 1")
        expect(window.locator(".page-header")).to_contain_text("screen/plate1")
        expect(window.locator("#main")).to_contain_text("The first plate.")
        assert table_paths(window) == list(SHARED)  # exactly the dataset's files
        expect(window.locator(".who")).to_have_text("Viewing a share link")
        expect(window.locator("#sign-out")).to_have_count(0)
        expect(window.locator("form")).to_have_count(0)  # read-only: nothing to change
        screenshot(window, shots, "share")

        suggested, data = download(window, "#files a[aria-label='Download raw/a.txt']")
        assert (suggested, data) == ("a.txt", SHARED["raw/a.txt"])
        suggested, data = download(window, "a#download-zip")
        assert suggested == "plate1.zip"
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            assert {n: archive.read(n) for n in archive.namelist()} == SHARED
        # a folder of it, and nothing beyond it
        window.locator("#files td.path a", has_text="raw/sub/b.csv").click()
        expect(window.locator("#share-title")).to_have_text("b.csv")
        expect(window.locator("#file-sha256")).to_have_text(sha256(SHARED["raw/sub/b.csv"]))
        assert window.goto(server.url + "/p/screen") is not None
        expect(window.locator("#error-title")).to_have_text("Not found")

        # revoked from alice's window: the link shows the error page in the private one
        revoke.click()
        page.wait_for_url(re.compile(r"/p/screen/plate1\?done=share-revoked"))
        expect(page.locator("#notice")).to_contain_text("The share link was revoked")
        page.goto("/me")  # her share links (a member does not see everyone's on the dataset)
        expect(page.locator("#shares #share-links tbody tr")).to_have_count(1)
        expect(page.locator("#shares #share-links tbody")).to_contain_text("revoked")

        answer = window.goto(url)
        assert answer is not None and answer.status == 401
        expect(window.locator("#error-title")).to_have_text("This share link no longer works")
        expect(window.locator("#error-message")).to_be_visible()
        expect(window.locator(".next-steps")).to_contain_text("Ask the person who shared it")
        expect(window.locator("#files")).to_have_count(0)
        assert "labkeep_session" not in outsider.cookie_names()
        outsider.check()
    finally:
        outsider.close()
    page.close()


# -- 3. what an outsider sees of a project ---------------------------------------------------
def test_project_of_another_group_is_the_same_404_as_a_missing_one(
    session: Session, server: LiveServer, shots: Path
) -> None:
    page = session.new_page()
    sign_in(page, "carol")
    expect(page.locator("#projects")).to_have_count(0)
    expect(page.locator("form#create-project")).to_have_count(0)

    pages = {}
    for project in ("screen", "no-such-project"):
        for path in (f"/p/{project}", f"/p/{project}/plate1"):
            answer = page.goto(path)
            assert answer is not None and answer.status == 404, path
            expect(page.locator("#error-title")).to_have_text("Not found")
            expect(page.locator("#error-message")).to_be_visible()
            expect(page.locator("#me")).to_have_text("carol")  # still signed in
            pages[path] = page.locator("#main").inner_text()
            assert page.title() == "Not found · labkeep"
            if path == "/p/screen":
                screenshot(page, shots, "error")
    for path in ("/p/screen", "/p/screen/plate1"):
        text = pages[path]
        assert "Drug screen" not in text and "Plate 1" not in text
        assert (
            text.replace("screen", "no-such-project")
            == pages[path.replace("screen", "no-such-project")]
        ), path
    page.close()


# -- 4. the sign-in form by keyboard ---------------------------------------------------------
def test_sign_in_with_the_keyboard_only(session: Session, server: LiveServer) -> None:
    page = session.new_page()
    page.goto("/login")
    # the name field has the focus from the start (autofocus)
    expect(page.locator("input[name=name]")).to_be_focused()
    page.keyboard.type("alice")
    page.keyboard.press("Tab")
    expect(page.locator("input[name=password]")).to_be_focused()
    page.keyboard.type("a wrong one")
    page.keyboard.press("Enter")  # Enter in a field sends the form
    expect(page.locator("#login-error")).to_have_text("Wrong user name or password.")
    # the answer keeps the name and puts the focus on it again
    expect(page.locator("input[name=name]")).to_be_focused()
    expect(page.locator("input[name=name]")).to_have_value("alice")
    page.keyboard.press("Tab")
    expect(page.locator("input[name=password]")).to_be_focused()
    page.keyboard.type(PASSWORDS["alice"])
    page.keyboard.press("Tab")
    expect(page.locator("button#login-submit")).to_be_focused()
    page.keyboard.press("Enter")  # the focused button
    page.wait_for_url(server.url + "/")
    expect(page.locator("#me")).to_have_text("alice")
    # the first Tab on a page reaches the skip link, which shows itself
    page.keyboard.press("Tab")
    skip = page.locator("a.skip-link")
    expect(skip).to_be_focused()
    expect(skip).to_be_in_viewport()
    page.keyboard.press("Enter")
    expect(page.locator("#main")).to_be_focused()
    page.close()


# -- 5. import a folder of an instrument buffer ----------------------------------------------
def test_import_this_folder_from_a_buffer(
    session: Session, server: LiveServer, shots: Path, tmp_path: Path
) -> None:
    keep = server.keep
    buffer = tmp_path / "confocal-buffer"
    run = buffer / "run 42"  # a space, as instruments write them
    run.mkdir(parents=True)
    files = {"img-0001.tif": b"\x49\x49" * 500, "img-0002.tif": b"\x4d\x4d" * 700}
    for name, data in files.items():
        (run / name).write_bytes(data)
    keep.add_watch(str(buffer), name="confocal", ready="marker:.done")
    keep.show_buffer_to("confocal", ["lab"])

    page = session.new_page()
    sign_in(page, "alice")
    page.locator("a#nav-buffers").click()
    page.locator("a#buffer-confocal").click()
    row = page.locator("#buffer-folders tbody tr", has_text="run 42")
    expect(row).to_contain_text("not imported")
    row.locator("select[name=project]").select_option("screen")
    # the dataset name is left empty: named after the folder, "run 42" -> run-42
    screenshot(page, shots, "buffer")
    row.locator("button", has_text="Import this folder").click()
    page.wait_for_url(re.compile(r".*/jobs/\d+"))
    expect(page.locator("#job-state")).to_have_text("queued")
    JobWorker(keep, drain=True, log=io.StringIO(), schedule=False).run()
    expect(page.locator("#job-state")).to_have_text("done")  # after its own refresh
    page.goto("/p/screen/run-42")
    expect(page.locator("#files tbody tr")).to_have_count(len(files))
    for name in files:
        expect(page.locator("#files tbody")).to_contain_text(name)
    # carol, in no group, sees no buffer
    other = session.context.browser.new_context(base_url=server.url)  # type: ignore[union-attr]
    try:
        carol = other.new_page()
        sign_in(carol, "carol")
        carol.goto("/buffers")
        expect(carol.locator("#no-buffers")).to_be_visible()
        answer = carol.goto("/buffers/confocal")
        assert answer is not None and answer.status == 404
    finally:
        other.close()
    page.close()
