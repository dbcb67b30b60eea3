"""The access-control commands end to end: real processes on a keep made by ``labkeep init``.

Secrets (passwords, API tokens, share-link tokens) must never reach an output, the audit
log or the catalog in clear, except the one place each is meant to be shown: the stdout
of the ``token create`` / ``share create`` that made it.

Commands that do not depend on each other run side by side (``Transcript.start``), as
several people would on one keep; that also keeps these tests quick.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from labkeep import Keep
from labkeep.errors import AuthenticationFailed, Forbidden

Result = subprocess.CompletedProcess[str]


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABKEEP_")}
    env.update(extra or {})
    return env


def records(result: Result) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


class Running:
    """A started ``labkeep`` process; :meth:`wait` collects and checks it."""

    def __init__(
        self, transcript: Transcript, proc: subprocess.Popen[str], stdin: str, check: int | None
    ) -> None:
        self._transcript = transcript
        self._proc = proc
        self._stdin = stdin
        self._check = check

    def wait(self) -> Result:
        """Feed stdin (the process starts up meanwhile), wait, check the exit code."""
        stdout, stderr = self._proc.communicate(self._stdin, timeout=120)
        result = subprocess.CompletedProcess(self._proc.args, self._proc.returncode, stdout, stderr)
        if self._check is not None:
            assert result.returncode == self._check, (result.args, result.stdout, result.stderr)
        self._transcript.results.append(result)
        return result

    def json(self) -> list[dict[str, Any]]:
        return records(self.wait())

    def stop(self) -> None:
        if self._proc.returncode is None:
            self._proc.kill()
            self._proc.communicate()


class Transcript:
    """Every command run against one keep, so a test can search all their output."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.results: list[Result] = []
        self.running: list[Running] = []

    def close(self) -> None:
        """Stop what a failed test left running."""
        for running in self.running:
            running.stop()

    def start(
        self,
        *args: str,
        stdin: str = "",
        env: dict[str, str] | None = None,
        check: int | None = 0,
        tty_less: bool = False,
    ) -> Running:
        """Start ``labkeep ARGS --root KEEP``, its exit code to be *check* (None: any).

        *tty_less* starts the process in a new session, without a controlling terminal,
        so hidden prompts read from stdin instead of waiting on /dev/tty.
        """
        proc = subprocess.Popen(
            [sys.executable, "-m", "labkeep", *args, "--root", str(self.root)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=clean_env(env),
            text=True,
            start_new_session=tty_less,
        )
        running = Running(self, proc, stdin, check)
        self.running.append(running)
        return running

    def run(self, *args: str) -> Result:
        return self.start(*args).wait()

    def json(self, *args: str) -> list[dict[str, Any]]:
        return self.start(*args, "--json").json()

    def assert_never_shown(self, secret: str, *, except_in: Result | None = None) -> None:
        """*secret* is in no output but *except_in*'s stdout, and not in the catalog files."""
        for result in self.results:
            assert secret not in result.stderr, result.args
            if result is not except_in:
                assert secret not in result.stdout, result.args
        if except_in is not None:
            assert secret in except_in.stdout
        for db in self.root.glob("catalog.db*"):  # with the WAL
            assert secret.encode() not in db.read_bytes(), db


InitKeep = Callable[..., tuple[Transcript, dict[str, Any]]]


@pytest.fixture
def init_keep(tmp_path: Path) -> Iterator[InitKeep]:
    """``labkeep init`` a keep (the OS user running it is its site admin)."""
    made: list[Transcript] = []

    def init(*args: str) -> tuple[Transcript, dict[str, Any]]:
        root = tmp_path / "keep"
        result = subprocess.run(
            [sys.executable, "-m", "labkeep", "init", str(root), *args, "--json"],
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        transcript = Transcript(root)
        transcript.results.append(result)
        made.append(transcript)
        return transcript, records(result)[0]

    yield init
    for transcript in made:
        transcript.close()


def test_users_groups_and_grants(init_keep: InitKeep) -> None:
    keep, init = init_keep("--admin", "boss")
    assert init["admin"] == "boss"
    alice_pw, alice_pw2, alice_pw3 = "alice-first-pw-1", "alice-reset-pw-2", "alice-own-pw-333"
    bob_pw = "bob-typed-pw-22"

    # user add from stdin, and from the hidden prompt (typed twice); a group
    add_alice = keep.start(
        "user",
        "add",
        "alice",
        "--password-stdin",
        "--display-name",
        "Alice A",
        "--email",
        "alice@example.org",
        "--json",
        stdin=alice_pw + "\n",
    )
    add_bob = keep.start("user", "add", "bob", stdin=f"{bob_pw}\n{bob_pw}\n", tty_less=True)
    mismatch = keep.start(
        "user", "add", "carol", stdin="carol-pw-00001\ncarol-pw-00002\n", tty_less=True, check=1
    )
    group = keep.start("group", "create", "lab-a", "--title", "A lab", "--json")
    alice = add_alice.json()[0]
    assert alice["user"] == "alice" and alice["source"] == "local"
    assert alice["site_admin"] is False and alice["email"] == "alice@example.org"
    bob = add_bob.wait()
    assert "created user bob" in bob.stdout and "Password" in bob.stderr
    assert "do not match" in mismatch.wait().stderr
    assert group.json()[0]["group"] == "lab-a"

    # members and roles, a private group project; disable, and reset a password (site admin)
    member = keep.start("group", "add-member", "lab-a", "alice", "--role", "admin", "--json")
    add_bob_to_group = keep.start("group", "add-member", "lab-a", "bob")
    project = keep.start("project", "create", "p1", "--group", "lab-a", "--private", "--json")
    disable = keep.start("user", "disable", "alice", "--json")
    reset = keep.start("user", "passwd", "alice", "--password-stdin", "--json", stdin=alice_pw2)
    assert member.json()[0]["members"]["alice"] == "admin"
    add_bob_to_group.wait()
    p1 = project.json()[0]
    assert p1["group"] == "lab-a" and p1["private"] is True
    assert disable.json()[0]["disabled"] is True
    assert reset.json() == [{"action": "user-passwd", "status": "ok", "user": "alice"}]

    # listings; enable; grants
    users = keep.start("user", "list", "--json")
    groups = keep.start("group", "list", "--json")
    enable = keep.start("user", "enable", "alice", "--json")
    grant_bob = keep.start("grant", "bob", "read", "p1")
    grant_group = keep.start("grant", "group:lab-a", "write", "p1")
    bad = keep.start("grant", "bob", "read", "p1/d1/some/file", check=2)
    by_name = {u["user"]: u for u in users.json()}
    assert sorted(by_name) == ["alice", "bob", "boss"]
    assert by_name["boss"]["site_admin"] is True and by_name["bob"]["groups"] == {"lab-a": "member"}
    members = {"alice": "admin", "bob": "member"}
    assert groups.json() == [{"group": "lab-a", "title": "A lab", "members": members}]
    assert enable.json()[0]["disabled"] is False
    assert "granted read on p1 to bob" in grant_bob.wait().stdout
    grant_group.wait()
    refused = bad.wait().stderr
    assert "grants are on a project or a dataset" in refused
    assert "PROJECT[/DATASET]" in refused  # brackets in hints survive Rich markup

    # alice (no site admin) through the same use cases the CLI calls: the local CLI acts
    # as the OS account running it (from the process uid), and tests run as one account
    grants = keep.start("grants", "p1", "--json")
    with Keep.open(keep.root) as api:
        alice = api.acting_as(api.principal_for("alice"))
        me = alice.whoami()
        assert me["name"] == "alice" and me["site_admin"] is False
        assert me["groups"] == {"lab-a": "admin"}
        with pytest.raises(Forbidden):
            alice.add_user("eve", ldap=True)
        with pytest.raises(AuthenticationFailed, match="current password is wrong"):
            alice.set_password("alice", alice_pw3, current="not-her-password")
        alice.set_password("alice", alice_pw3, current=alice_pw2)
    # the creator of a private project gets manage on it
    assert {(g["principal"], g["permission"]) for g in grants.json()} == {
        ("user:boss", "manage"),
        ("user:bob", "read"),
        ("group:lab-a", "write"),
    }

    assert keep.json("revoke", "user:bob", "p1")[0]["status"] == "ok"
    listing = keep.start("grants", "p1")
    events = keep.start("events", "--limit", "0", "--json")
    listed = listing.wait().stdout
    assert "group:lab-a" in listed and "user:bob" not in listed
    actions = [e["action"] for e in events.json()]
    for action in (
        "user-create",
        "user-disable",
        "user-enable",
        "group-create",
        "group-member",
        "project-create",
        "grant",
        "revoke",
    ):
        assert action in actions
    assert actions.count("user-password") == 2

    # the passwords work, and were never shown anywhere
    with Keep.open(keep.root) as api:
        assert api.authenticate_password("alice", alice_pw3).name == "alice"
        assert api.authenticate_password("bob", bob_pw).name == "bob"
        for old in (alice_pw, alice_pw2):
            with pytest.raises(AuthenticationFailed):
                api.authenticate_password("alice", old)
    for secret in (alice_pw, alice_pw2, alice_pw3, bob_pw, "carol-pw-00001", "not-her-password"):
        keep.assert_never_shown(secret)


def test_share_links_and_tokens_show_their_secret_once(init_keep: InitKeep) -> None:
    keep, _ = init_keep()
    keep.run("project", "create", "p1")

    # share links: the full link with a base URL, else the bare token and a hint; tokens
    dataset = keep.start("dataset", "create", "p1/d1")
    bare = keep.start("share", "create", "p1")
    made_token = keep.start("token", "create", "--name", "ci", "--read-only", "--json")
    plain = keep.start("token", "create", "--expires", "1d")
    dataset.wait()
    made = keep.start(
        "share",
        "create",
        "p1/d1",
        "--expires",
        "2d",
        "--max-downloads",
        "3",
        "--label",
        "for bo",
        "--json",
        env={"LABKEEP_URL": "https://keep.example.org/"},
    )
    public = keep.start("public", "p1/d1", "--json")

    bare_result = bare.wait()
    bare_token = bare_result.stdout.strip()
    assert bare_token.startswith("lks_") and "/s/TOKEN" in bare_result.stderr
    assert "cannot be shown again" in bare_result.stderr
    token_result = made_token.wait()
    token = records(token_result)[0]
    api_token = str(token["token"])
    assert api_token.startswith("lk_") and token["read_only"] is True and token["user"]
    plain_result = plain.wait()
    plain_token = plain_result.stdout.strip()
    assert plain_token.startswith("lk_") and "cannot be shown again" in plain_result.stderr
    share_result = made.wait()
    link = records(share_result)[0]
    share_token = str(link["token"])
    assert share_token.startswith("lks_") and link["target"] == "p1/d1"
    assert link["url"] == f"https://keep.example.org/s/{share_token}"
    assert link["max_downloads"] == 3 and link["label"] == "for bo"
    assert public.json() == [
        {"action": "public", "status": "ok", "dataset": "p1/d1", "public": True}
    ]

    revoke_share = keep.start("share", "revoke", str(link["id"]), "--json")
    revoke_token = keep.start("token", "revoke", str(token["id"]), "--json")
    revoked = revoke_share.json()[0]
    assert revoked["active"] is False and revoked["revoked_at"]
    assert revoke_token.json()[0]["active"] is False

    shares = keep.start("share", "list", "--json")
    on_dataset = keep.start("share", "list", "p1/d1", "--json")
    tokens = keep.start("token", "list", "--json")
    events = keep.start("events", "--limit", "0", "--json")
    assert sorted((s["target"], s["active"]) for s in shares.json()) == [
        ("p1", True),
        ("p1/d1", False),
    ]
    assert [s["id"] for s in on_dataset.json()] == [link["id"]]
    assert sorted((t["name"], t["active"]) for t in tokens.json()) == [("", True), ("ci", False)]
    actions = [e["action"] for e in events.json()]
    for action in ("share-create", "share-revoke", "public", "token-create", "token-revoke"):
        assert action in actions

    # the revoked ones no longer open anything; the others do
    with Keep.open(keep.root) as api:
        for call, secret in ((api.open_share, share_token), (api.authenticate_token, api_token)):
            with pytest.raises(AuthenticationFailed):
                call(secret)
        assert api.open_share(bare_token).kind == "share"
        assert api.authenticate_token(plain_token).name == token["user"]
    keep.assert_never_shown(share_token, except_in=share_result)
    keep.assert_never_shown(bare_token, except_in=bare_result)
    keep.assert_never_shown(api_token, except_in=token_result)
    keep.assert_never_shown(plain_token, except_in=plain_result)


def test_disable_and_revoke_say_which_share_links_are_suspended(init_keep: InitKeep) -> None:
    """Links live on their creator's access: the commands that take access away say how
    many links they suspended, and ``share list`` shows them as suspended."""
    keep, _ = init_keep()
    with Keep.open(keep.root) as api:  # the setup, in-process: the commands are below
        api.create_project("p1")
        api.create_dataset("p1/d1")
        api.add_user("alice")
        api.add_user("bob")
        api.grant("alice", "write", "p1")
        api.grant("bob", "write", "p1/d1")
        alice = api.acting_as(api.principal_for("alice"))
        bob = api.acting_as(api.principal_for("bob"))
        alice_token, _ = alice.create_share("p1/d1")
        alice.create_share("p1")
        bob_token, _ = bob.create_share("p1/d1")

    disable = keep.start("user", "disable", "alice")
    revoke = keep.start("revoke", "bob", "p1/d1", "--json")
    assert "2 share links made by alice are suspended" in disable.wait().stdout
    revoked = revoke.json()[0]
    assert revoked["suspended_shares"] == 1
    assert revoked["message"] == "1 share link made by bob is suspended"
    listing = keep.start("share", "list", "p1")
    on_dataset = keep.start("share", "list", "p1/d1", "--json")
    assert listing.wait().stdout.count("suspended") == 3
    states = {s["created_by"]: s["state"] for s in on_dataset.json()}
    assert states == {"alice": "suspended", "bob": "suspended"}
    with Keep.open(keep.root) as api:
        for token in (alice_token, bob_token):
            with pytest.raises(AuthenticationFailed, match="invalid, expired or revoked"):
                api.open_share(token)

    enable = keep.start("user", "enable", "alice")
    assert "2 share links made by alice are working again" in enable.wait().stdout
    with Keep.open(keep.root) as api:
        assert api.open_share(alice_token).kind == "share"
