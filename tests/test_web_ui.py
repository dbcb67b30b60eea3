"""The HTML UI against a real uvicorn server on loopback (no browser: see the e2e tests).

Sign-in and sign-out, cookie flags, CSRF, the same 404 for private and missing things,
security headers, share links without an account, JSON-LD, uploads and pagination.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
from collections.abc import Iterator
from html import unescape
from html.parser import HTMLParser

import httpx
import pytest

from labkeep import Keep
from labkeep.ops.worker import JobWorker
from tests.conftest import unseal_tree
from tests.webserver import LiveServer

PASSWORDS = {"alice": "alice password 1", "bob": "bob password 12"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A keep with a lab group, a public dataset, a private project and a big dataset."""
    base = tmp_path_factory.mktemp("webui")
    keep = Keep.init(base / "keep")
    keep.config.batch_files = 50
    keep.config.durability = "file"  # syncfs of a busy shared disk is slow; not tested here
    keep.add_user("alice", password=PASSWORDS["alice"])
    keep.add_user("bob", password=PASSWORDS["bob"])
    keep.create_group("lab")
    keep.set_member("lab", "alice", "admin")
    keep.set_member("lab", "bob", "member")
    keep.create_project("proj", title="Confocal 2026", description="Imaging.", group="lab")
    keep.create_project("vault", title="Private one", group="lab", private=True)
    source = base / "src"
    (source / "sub").mkdir(parents=True)
    (source / "a.txt").write_bytes(b"alpha\n")
    (source / "sub" / "b #1.csv").write_bytes(b"x,y\n1,2\n")
    keep.ingest(source, "proj/ds")
    keep.ingest(source, "vault/ds")
    keep.update_dataset("proj/ds", title="Session one", description="First session")
    keep.set_public("proj/ds", True)
    many = base / "many"
    many.mkdir()
    for i in range(205):
        (many / f"f{i:04d}.dat").write_bytes(b"%d" % i)
    keep.ingest(many, "proj/many")
    with LiveServer(keep) as live:
        yield live
    keep.close()
    unseal_tree(base)


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]*)"', html)
    assert match, "no csrf_token field on the page"
    return match.group(1)


def sign_in(client: httpx.Client, name: str) -> str:
    """Sign *client* in through the form; return the session's CSRF token."""
    token = csrf_of(client.get("/login").text)
    answer = client.post(
        "/login", data={"name": name, "password": PASSWORDS[name], "csrf_token": token}
    )
    assert answer.status_code == 303, answer.text
    return csrf_of(client.get("/").text)


@pytest.fixture(scope="module")
def alice(server: LiveServer) -> Iterator[tuple[httpx.Client, str]]:
    """Alice (admin of the group "lab") signed in once for the module: argon2 is slow."""
    with httpx.Client(base_url=server.url) as client:
        yield client, sign_in(client, "alice")


@pytest.fixture
def anon(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url) as client:
        yield client


# -- signing in and out ----------------------------------------------------------------------
def test_login_sets_a_hardened_cookie_and_logout_ends_the_session(server: LiveServer) -> None:
    with httpx.Client(base_url=server.url) as client:
        page = client.get("/login")
        assert page.status_code == 200
        assert 'id="login"' in page.text and 'name="password"' in page.text
        token = csrf_of(page.text)
        wrong = client.post(
            "/login", data={"name": "alice", "password": "not it at all", "csrf_token": token}
        )
        assert wrong.status_code == 401
        assert "Wrong user name or password" in wrong.text
        assert "labkeep_session" not in wrong.headers.get("set-cookie", "")
        token = csrf_of(wrong.text)
        ok = client.post(
            "/login",
            data={
                "name": "alice",
                "password": PASSWORDS["alice"],
                "csrf_token": token,
                "next": "/p/proj",
            },
        )
        assert ok.status_code == 303
        assert ok.headers["location"] == "/p/proj"
        cookie = next(
            c for c in ok.headers.get_list("set-cookie") if c.startswith("labkeep_session=")
        )
        flags = [part.strip().lower() for part in cookie.split(";")]
        assert "httponly" in flags
        assert "samesite=lax" in flags
        assert "path=/" in flags
        assert "secure" not in flags  # plain http, secure_cookies = "auto"
        home = client.get("/")
        assert 'id="me"' in home.text and ">alice<" in home.text
        session_csrf = csrf_of(home.text)

        assert client.post("/logout").status_code == 403  # no CSRF token
        out = client.post("/logout", data={"csrf_token": session_csrf})
        assert out.status_code == 303
        assert 'labkeep_session=""' in out.headers["set-cookie"]
        assert 'id="sign-in"' in client.get("/").text
    # the old cookie is worthless on the server too
    secret = cookie.split(";")[0].split("=", 1)[1]
    with httpx.Client(base_url=server.url, cookies={"labkeep_session": secret}) as stale:
        assert stale.get("/me").status_code == 403


def test_redirect_after_login_stays_on_this_server(server: LiveServer) -> None:
    with httpx.Client(base_url=server.url) as client:
        token = csrf_of(client.get("/login").text)
        data = {"name": "bob", "password": PASSWORDS["bob"], "csrf_token": token}
        answer = client.post("/login", data={**data, "next": "//evil.example/x"})
        assert answer.status_code == 303
        assert answer.headers["location"] == "/"


def test_sign_in_form_needs_its_own_token(server: LiveServer) -> None:
    with httpx.Client(base_url=server.url) as client:
        answer = client.post("/login", data={"name": "alice", "password": PASSWORDS["alice"]})
        assert answer.status_code == 403
        assert "labkeep_session" not in answer.headers.get("set-cookie", "")


def test_secure_cookie_when_configured(server: LiveServer) -> None:
    config = server.keep.config
    web = config.web
    config.web = dataclasses.replace(web, secure_cookies="true")
    try:
        with httpx.Client(base_url=server.url) as client:
            form = client.get("/login")
            assert "secure" in form.headers["set-cookie"].lower()
            # a Secure cookie does not come back over http: hand it over as a browser on
            # https would
            token = csrf_of(form.text)
            client.cookies.set("labkeep_login", token)
            ok = client.post(
                "/login",
                data={"name": "bob", "password": PASSWORDS["bob"], "csrf_token": token},
            )
            cookie = next(
                c for c in ok.headers.get_list("set-cookie") if c.startswith("labkeep_session=")
            )
            assert "secure" in [p.strip().lower() for p in cookie.split(";")]
    finally:
        config.web = web


def test_form_posts_need_the_csrf_token(
    server: LiveServer, alice: tuple[httpx.Client, str]
) -> None:
    client, token = alice
    for data in ({"title": "changed"}, {"title": "changed", "csrf_token": "wrong"}):
        refused = client.post("/p/proj/edit", data=data)
        assert refused.status_code == 403
        assert "CSRF" in refused.text
    assert server.keep.get_project("proj").title == "Confocal 2026"
    done = client.post("/p/proj/edit", data={"title": "Confocal 2026", "csrf_token": token})
    assert done.status_code == 303


# -- landing pages ---------------------------------------------------------------------------
def test_landing_pages_answer_those_who_may_see_them(alice: tuple[httpx.Client, str]) -> None:
    client, _ = alice
    pages = {
        "/": "Confocal 2026",
        "/p/proj": "Session one",
        "/p/proj/ds": "First session",
        "/p/proj/ds/@1": "version 1",
        "/p/proj/ds/-/raw/a.txt": "SHA-256",
        "/p/proj/ds/@1/-/raw/a.txt": "SHA-256",
        "/p/proj/ds/-/raw/sub": "b #1.csv",
        "/p/proj/ds/-/raw/sub/b%20%231.csv": "text/csv",
        "/p/vault": "Private one",
        "/me": "API tokens",
        "/admin/groups": "lab",
    }
    for path, text in pages.items():
        answer = client.get(path)
        assert answer.status_code == 200, path
        assert text in answer.text, path
        assert_sound_html(path, answer.text)


def test_public_dataset_is_readable_without_an_account(anon: httpx.Client) -> None:
    home = anon.get("/")
    assert home.status_code == 200 and "proj/ds" in home.text
    page = anon.get("/p/proj/ds")
    assert page.status_code == 200
    assert 'id="download-zip"' in page.text
    assert 'id="upload"' not in page.text and 'id="seal"' not in page.text
    download = anon.get("/api/v1/files/proj/ds/raw/a.txt")
    assert download.content == b"alpha\n"


def test_private_and_missing_things_answer_the_same_404(server: LiveServer) -> None:
    with httpx.Client(base_url=server.url) as bob, httpx.Client(base_url=server.url) as anon:
        sign_in(bob, "bob")
        for client in (bob, anon):
            for private, missing in (
                ("/p/vault", "/p/absent"),
                ("/p/vault/ds", "/p/absent/ds"),
                ("/p/vault/ds/-/raw/a.txt", "/p/absent/ds/-/raw/a.txt"),
                ("/p/vault/ds/@1", "/p/absent/ds/@1"),
            ):
                one, other = client.get(private), client.get(missing)
                assert one.status_code == other.status_code == 404, private
                assert one.text.replace("vault", "absent") == other.text, private
                assert "Private one" not in one.text
        # bob may see the project's datasets but not change who has access
        page = bob.get("/p/proj")
        assert page.status_code == 200 and 'id="grant"' not in page.text


def test_security_headers_on_every_page(
    server: LiveServer, alice: tuple[httpx.Client, str], anon: httpx.Client
) -> None:
    client, _ = alice
    answers = [client.get(p) for p in ("/", "/p/proj", "/p/proj/ds", "/p/proj/ds/-/raw/a.txt")]
    answers += [anon.get(p) for p in ("/", "/login", "/p/vault", "/s/lks_nonsense")]
    answers.append(anon.get("/static/labkeep.css"))
    for answer in answers:
        csp = answer.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["x-frame-options"] == "DENY"
    for answer in answers[:-1]:
        assert not re.search(r"\sstyle=|\son[a-z]+=", answer.text), answer.url
        assert "<script>" not in answer.text  # only external or JSON-LD scripts


def test_dataset_page_has_json_ld_dataset(alice: tuple[httpx.Client, str]) -> None:
    client, _ = alice
    page = client.get("/p/proj/ds")
    blocks = re.findall(r'<script type="application/ld\+json">(.*?)</script>', page.text, re.S)
    assert len(blocks) == 1
    data = json.loads(blocks[0])
    assert data["@type"] == "Dataset"
    assert data["url"].endswith("/p/proj/ds") and data["identifier"] == data["url"]
    assert data["version"] == "1"
    assert data["dateModified"].endswith("Z")
    kinds = {d["encodingFormat"] for d in data["distribution"]}
    assert {d["@type"] for d in data["distribution"]} == {"DataDownload"}
    assert kinds == {"application/zip", "text/plain"}
    project = json.loads(
        re.findall(
            r'<script type="application/ld\+json">(.*?)</script>', client.get("/p/proj").text, re.S
        )[0]
    )
    assert project["@type"] == "Project" and project["hasPart"]
    file = json.loads(
        re.findall(
            r'<script type="application/ld\+json">(.*?)</script>',
            client.get("/p/proj/ds/-/raw/a.txt").text,
            re.S,
        )[0]
    )
    assert file["@type"] == "DataDownload" and file["contentSize"] == "6 B"
    assert len(file["sha256"]) == 64


def test_json_ld_cannot_be_closed_by_a_description(
    server: LiveServer, alice: tuple[httpx.Client, str]
) -> None:
    client, _ = alice
    nasty = 'x </script><script src="/evil.js"></script> & <!--'
    server.keep.update_dataset("proj/many", description=nasty)
    page = client.get("/p/proj/many").text
    assert '<script src="/evil.js">' not in page
    block = re.findall(r'<script type="application/ld\+json">(.*?)</script>', page, re.S)
    assert json.loads(block[0])["description"] == nasty


def test_file_table_pages_through_a_big_dataset(alice: tuple[httpx.Client, str]) -> None:
    from labkeep.web.pages import PAGE_SIZE

    client, _ = alice
    page = client.get("/p/proj/many")
    seen: list[str] = []
    pages = 0
    while True:
        names = re.findall(r">raw/(f\d{4}\.dat)</a>", page.text)
        assert 0 < len(names) <= PAGE_SIZE
        seen += names
        pages += 1
        following = re.search(r'id="next-page" rel="next" href="([^"]+)"', page.text)
        if following is None:
            break
        assert len(names) == PAGE_SIZE
        page = client.get(following.group(1).replace("&amp;", "&"))
    assert seen == [f"f{i:04d}.dat" for i in range(205)]
    assert pages == -(-205 // PAGE_SIZE) and 'id="first-page"' in page.text


# -- changing things through forms -----------------------------------------------------------
def test_upload_then_seal(server: LiveServer, alice: tuple[httpx.Client, str]) -> None:
    client, token = alice
    made = client.post(
        "/p/proj/datasets", data={"name": "up", "kind": "session", "csrf_token": token}
    )
    assert made.status_code == 303 and made.headers["location"].startswith("/p/proj/up")
    files = [
        ("files", ("one.txt", b"one", "text/plain")),
        ("files", ("two.txt", b"two!", "text/plain")),
        ("files", ("", b"", "application/octet-stream")),  # an empty second file input
    ]
    done = client.post("/p/proj/up/upload", data={"csrf_token": token}, files=files)
    assert done.status_code == 200
    assert "2 files added" in done.text
    assert [e["path"] for e in server.keep.ls("proj/up").items] == ["raw/one.txt", "raw/two.txt"]
    sealed = client.post("/p/proj/up/seal", data={"csrf_token": token})
    assert sealed.status_code == 303
    page = client.get(sealed.headers["location"])
    assert "raw/ is now write-once" in page.text
    assert 'id="upload"' not in page.text and 'id="seal"' not in page.text
    again = client.post("/p/proj/up/upload", data={"csrf_token": token}, files=files[:1])
    assert again.status_code == 409
    # verify queues a job and shows it; a worker (here, in this process) runs it
    verified = client.post("/p/proj/up/verify", data={"csrf_token": token})
    assert verified.status_code == 303 and verified.headers["location"].startswith("/jobs/")
    assert "queued" in client.get(verified.headers["location"]).text
    JobWorker(server.keep, drain=True, log=io.StringIO(), schedule=False).run()
    page = client.get(verified.headers["location"])
    assert "All 2 files match" in page.text and 'http-equiv="refresh"' not in page.text


# -- share links -----------------------------------------------------------------------------
def test_share_link_works_without_an_account_until_revoked(
    server: LiveServer, alice: tuple[httpx.Client, str]
) -> None:
    client, token = alice
    created = client.post(
        "/p/vault/ds/share", data={"csrf_token": token, "expires": "1d", "label": "reviewers"}
    )
    assert created.status_code == 201
    url = re.search(r'id="share-link" type="text" value="([^"]+)"', created.text)
    assert url and url.group(1).startswith(server.url + "/s/lks_")
    link_id = re.search(r'id="revoke-share-(\d+)"', created.text)
    assert link_id
    path = url.group(1)[len(server.url) :]
    with httpx.Client(base_url=server.url) as outsider:
        landing = outsider.get(path)
        assert landing.status_code == 200
        assert "vault/ds" in landing.text and "a.txt" in landing.text
        assert "private, no-store" in landing.headers["cache-control"]
        file = outsider.get(f"{path}/file/vault/ds/raw/a.txt")
        assert file.status_code == 200 and file.content == b"alpha\n"
        archive = outsider.get(f"{path}/zip/vault/ds")
        assert archive.status_code == 200
        assert archive.headers["content-type"] == "application/zip"
        folder = outsider.get(f"{path}/browse/vault/ds/raw/sub")
        assert folder.status_code == 200 and "b #1.csv" in folder.text
        # the link opens this dataset, nothing else of the keep
        assert outsider.get(f"{path}/browse/proj/ds").status_code in (403, 404)
        assert outsider.get("/p/vault").status_code == 404

        revoked = client.post(
            f"/shares/{link_id.group(1)}/revoke", data={"csrf_token": token, "next": "/me"}
        )
        assert revoked.status_code == 303 and revoked.headers["location"].startswith("/me")
        gone = outsider.get(path)
        assert gone.status_code == 401
        assert "ask the person who shared it" in gone.text.lower()
        assert outsider.get(f"{path}/file/vault/ds/raw/a.txt").status_code == 401


def test_share_link_to_one_file(alice: tuple[httpx.Client, str], anon: httpx.Client) -> None:
    client, token = alice
    created = client.post(
        "/p/proj/ds/share",
        data={
            "csrf_token": token,
            "path": "raw/sub/b #1.csv",
            "version": "1",
            "max_downloads": "1",
        },
    )
    assert created.status_code == 201
    url = re.search(r'id="share-link" type="text" value="http://[^/]+([^"]+)"', created.text)
    assert url
    landing = anon.get(url.group(1))
    assert landing.status_code == 200 and 'id="download-file"' in landing.text
    href = re.search(r'id="download-file" href="([^"]+)"', landing.text)
    assert href
    assert anon.get(href.group(1).replace("&amp;", "&")).content == b"x,y\n1,2\n"
    assert anon.get(url.group(1)).status_code == 401  # its one download is used up


# -- accounts --------------------------------------------------------------------------------
def test_api_token_is_shown_once_and_can_be_revoked(
    server: LiveServer, alice: tuple[httpx.Client, str]
) -> None:
    client, token = alice
    created = client.post("/me/tokens", data={"csrf_token": token, "name": "laptop"})
    assert created.status_code == 201
    secret = re.search(r'id="token-secret" type="text" value="([^"]+)"', created.text)
    token_id = re.search(r'id="revoke-token-(\d+)"', created.text)
    assert secret and token_id
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {secret.group(1)}"}
    ) as script:
        assert script.get("/api/v1/whoami").json()["name"] == "alice"
        assert secret.group(1) not in client.get("/me").text
        client.post(f"/me/tokens/{token_id.group(1)}/revoke", data={"csrf_token": token})
        assert script.get("/api/v1/whoami").status_code == 401


def test_admin_pages_are_for_admins(server: LiveServer, alice: tuple[httpx.Client, str]) -> None:
    client, token = alice  # admin of the group "lab", not a site admin
    assert client.get("/admin/users").status_code == 200  # group admins may list users
    added = client.post(
        "/admin/users", data={"csrf_token": token, "name": "carol", "password": "x" * 12}
    )
    assert added.status_code == 403
    member = client.post(
        "/admin/groups/lab/members", data={"csrf_token": token, "user": "bob", "role": "member"}
    )
    assert member.status_code == 303
    assert server.keep.list_groups()[0]["members"]["bob"] == "member"


# -- page soundness ----------------------------------------------------------------------------
class _Soundness(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.fields: list[str | None] = []
        self.labelled: set[str | None] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.append(str(a["id"]))
        visible = a.get("type") != "hidden" and "hidden" not in a
        if tag in ("input", "select", "textarea") and visible:
            self.fields.append(a.get("id"))
        if tag == "label":
            self.labelled.add(a.get("for"))


def assert_sound_html(where: str, html: str) -> None:
    """Unique ids, and a label for every visible form field."""
    parser = _Soundness()
    parser.feed(html)
    duplicates = {i for i in parser.ids if parser.ids.count(i) > 1}
    assert not duplicates, f"{where}: duplicate ids {duplicates}"
    unlabelled = [f for f in parser.fields if f is None or f not in parser.labelled]
    assert not unlabelled, f"{where}: fields without a label {unlabelled}"


def test_static_files_are_served(anon: httpx.Client) -> None:
    css = anon.get("/static/labkeep.css")
    js = anon.get("/static/labkeep.js")
    assert css.status_code == js.status_code == 200
    assert "focus-visible" in css.text and "XMLHttpRequest" in js.text


def test_a_project_page_shows_its_datasets_a_page_at_a_time(
    server: LiveServer, alice: tuple[httpx.Client, str]
) -> None:
    """A project of 230 datasets: the page lists 100 at a time (keyset by name), never
    all of them at once; every dataset is reachable through the pages."""
    keep = server.keep
    keep.create_project("crowd", group="lab")
    names = [f"s{i:04d}" for i in range(230)]
    for name in names:
        keep.create_dataset(f"crowd/{name}", kind="analysis")
    client, _ = alice
    seen: list[str] = []
    url = "/p/crowd"
    for _ in range(5):
        page = client.get(url)
        assert page.status_code == 200
        shown = re.findall(r'href="/p/crowd/(s\d{4})"', page.text)
        assert len(shown) <= 100
        seen += shown
        found = re.search(r'id="next-page" rel="next" href="([^"]+)"', page.text)
        if found is None:
            break
        url = unescape(found.group(1))
    assert seen == names
