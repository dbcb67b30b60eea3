"""The authorization matrix (tests/authz_matrix.yaml) walked through the Keep, and the
rules of share links, API tokens and secrets."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from labkeep import Keep
from labkeep.access import ALL_ACTIONS, ANONYMOUS, Principal
from labkeep.errors import (
    AlreadyExists,
    AuthenticationFailed,
    Forbidden,
    NameUnavailable,
    NotFound,
    UsageError,
)
from tests.conftest import unseal_tree

MATRIX = yaml.safe_load((Path(__file__).parent / "authz_matrix.yaml").read_text())
PASSWORD = "correct horse battery"


@dataclass
class World:
    """A keep with two labs, their projects and people; fresh datasets on demand."""

    admin: Keep
    tmp: Path
    counter: Iterator[int] = field(default_factory=itertools.count)
    own: str = ""
    foreign: str = ""
    share_token: str = ""

    def fresh(self) -> None:
        """A new dataset in each lab's project (one file each), the external's grant and
        a share link on the own one."""
        n = next(self.counter)
        src = self.tmp / f"src{n}"
        src.mkdir()
        (src / "f.txt").write_bytes(b"data %d" % n)
        self.own, self.foreign = f"a_proj/c{n}", f"axproj/c{n}"
        for address in (self.own, self.foreign):
            self.admin.ingest(src, address)
        self.admin.grant("ext", "read", self.own)
        self.share_token, _ = self.admin.create_share(self.own, expires="1d")
        # an event below the foreign dataset: "a_proj/cN/%" would match it
        self.admin.create_share(self.foreign + "/raw/f.txt", expires="1d")

    def name(self, prefix: str) -> str:
        return f"{prefix}{next(self.counter)}"

    def principal(self, kind: str) -> Principal:
        keep = self.admin
        if kind == "anonymous":
            return ANONYMOUS
        if kind == "share_link":
            return keep.open_share(self.share_token)
        if kind == "disabled":
            from labkeep.catalog import User
            from labkeep.ops._access import load_principal

            with keep.catalog.read() as session:
                user = session.query(User).filter_by(name="dis").one()
                return load_principal(session, user)
        if kind == "site_admin":
            return keep.principal
        return keep.principal_for(
            {
                "external": "ext",
                "member": "alice",
                "other_admin": "badmin",
                "group_admin": "gadmin",
            }[kind]
        )


@pytest.fixture
def world(keep: Keep, tmp_path: Path) -> Iterator[World]:
    keep.create_group("lab-a")
    keep.create_group("lab-b")
    for name in ("alice", "gadmin", "badmin", "ext", "dis", "zed"):
        keep.add_user(name, password=PASSWORD)
    keep.set_member("lab-a", "alice", "member")
    keep.set_member("lab-a", "dis", "member")
    keep.set_member("lab-a", "gadmin", "admin")
    keep.set_member("lab-b", "badmin", "admin")
    keep.set_user_disabled("dis")
    keep.create_project("a_proj", group="lab-a")
    keep.create_project("axproj", group="lab-b")
    keep.add_store("backup", kind="objects", path=str(tmp_path / "backup"))
    w = World(keep, tmp_path)
    w.fresh()
    yield w


def _target(w: World, own: bool) -> str:
    return w.own if own else w.foreign


def _project(w: World, own: bool) -> str:
    return "a_proj" if own else "axproj"


def _ingest(k: Keep, w: World, own: bool) -> None:
    src = w.tmp / w.name("more")
    src.mkdir()
    (src / "new.txt").write_bytes(b"new")
    k.ingest(src, _target(w, own))


def _unseal(k: Keep, w: World, own: bool) -> None:
    w.admin.seal(_target(w, own))
    k.unseal(_target(w, own), force=True)


def _list_projects(k: Keep, w: World, own: bool) -> None:
    if _project(w, own) not in [p.name for p in k.list_projects()]:
        raise NotFound("not listed")


class Leaked(AssertionError):
    """An operation answered with something outside what was asked for."""


def _events(k: Keep, target: str) -> None:
    """The events on *target*: none may be on anything but *target* or below it."""
    for event in k.events(target=target, limit=None):
        if event["target"] != target and not event["target"].startswith(target + "/"):
            raise Leaked(f"events of {target!r} include one on {event['target']!r}")


def _download(k: Keep, w: World, own: bool) -> None:
    info, handle = k.open_file(_target(w, own) + "/raw/f.txt")
    with handle:
        assert handle.read() == info.local_path.read_bytes()


def queued_run(admin: Keep, address: str) -> int:
    """A run into *address* queued for a worker (by the site admin): its id."""
    from labkeep.ops.run_slurm import queue_local
    from labkeep.ops.runs import RunRequest

    return int(queue_local(admin, RunRequest(command=["true"], output=address))["id"])


def _release(k: Keep, w: World, own: bool) -> None:
    """A release of the dataset; it must hold the dataset's files."""
    result = k.release(_target(w, own), name=w.name("rel"))
    assert result.status == "ok", result.to_dict()


def _search(k: Keep, w: World, own: bool) -> None:
    """Found (ok), or neither found nor counted (hidden); anything else found leaks."""
    target = _target(w, own)
    name = target.split("/")[1]
    result = k.search(name, project=_project(w, own), kind="dataset")
    found = [h["address"] for h in result.items]
    if target in found:
        return
    if found or result.total:
        raise Leaked(f"search for {name} in {_project(w, own)} shows {found} ({result.total})")
    raise NotFound("not found")


OPERATIONS: dict[str, Callable[[Keep, World, bool], Any]] = {
    "read_metadata": lambda k, w, own: k.get_dataset(_target(w, own)),
    "list_projects": _list_projects,
    "read_project": lambda k, w, own: k.get_project(_project(w, own)),
    "list_files": lambda k, w, own: k.ls(_target(w, own)),
    "download": _download,
    "create_dataset": lambda k, w, own: k.create_dataset(f"{_project(w, own)}/{w.name('new')}"),
    "edit_project": lambda k, w, own: k.update_project(_project(w, own), title="New title"),
    "ingest": _ingest,
    "write_manifest": lambda k, w, own: k.write_manifest(_target(w, own)),
    "seal": lambda k, w, own: k.seal(_target(w, own)),
    "unseal": _unseal,
    "verify": lambda k, w, own: k.verify(_target(w, own), log_dir=w.tmp / "logs"),
    "verify_all": lambda k, w, own: k.verify(log_dir=w.tmp / "logs"),
    "grant": lambda k, w, own: k.grant("zed", "read", _target(w, own)),
    "list_grants": lambda k, w, own: k.list_grants(_project(w, own)),
    "make_public": lambda k, w, own: k.set_public(_target(w, own)),
    "share": lambda k, w, own: k.create_share(_target(w, own)),
    "list_shares": lambda k, w, own: k.list_shares(_project(w, own)),
    "read_events": lambda k, w, own: _events(k, _target(w, own)),
    "read_project_events": lambda k, w, own: _events(k, _project(w, own)),
    "all_events": lambda k, w, own: k.events(),
    "status": lambda k, w, own: k.status(),
    "create_project": lambda k, w, own: k.create_project(
        w.name("p"), group="lab-a" if own else "lab-b"
    ),
    "create_existing_project": lambda k, w, own: k.create_project(
        _project(w, own), group="lab-a" if own else "lab-b"
    ),
    "create_taken_project": lambda k, w, own: k.create_project(
        _project(w, not own), group="lab-a" if own else "lab-b"
    ),
    "create_existing_dataset": lambda k, w, own: k.create_dataset(_target(w, own)),
    "create_group": lambda k, w, own: k.create_group(w.name("g")),
    "list_groups": lambda k, w, own: k.list_groups(),
    "manage_members": lambda k, w, own: k.set_member("lab-a" if own else "lab-b", "zed", "member"),
    "add_user": lambda k, w, own: k.add_user(w.name("u"), password=PASSWORD),
    "disable_user": lambda k, w, own: k.set_user_disabled("zed"),
    "list_users": lambda k, w, own: k.list_users(),
    "whoami_tokens": lambda k, w, own: k.list_tokens(),
    "create_token": lambda k, w, own: k.create_token("t"),
    "whereis": lambda k, w, own: k.whereis(_target(w, own) + "/raw/f.txt"),
    "copy": lambda k, w, own: k.copy(_target(w, own), to="backup"),
    "drop": lambda k, w, own: k.drop(_target(w, own), from_store="backup"),
    "repair": lambda k, w, own: k.verify_store(_target(w, own), store="backup", repair=True),
    "set_policy": lambda k, w, own: k.set_policy(_project(w, own), min_copies=1),
    "add_store": lambda k, w, own: k.add_store(
        w.name("s"), kind="objects", path=str(w.tmp / w.name("store"))
    ),
    "queue_verify": lambda k, w, own: k.enqueue("verify", {"target": _target(w, own)}),
    "queue_copy": lambda k, w, own: k.enqueue(
        "replicate", {"dataset": _target(w, own), "store": "backup"}
    ),
    "queue_scrub": lambda k, w, own: k.enqueue("scrub", {}),
    "dataset_jobs": lambda k, w, own: k.dataset_jobs(*_target(w, own).split("/")),
    "list_workers": lambda k, w, own: k.workers(),
    "cancel_run": lambda k, w, own: k.cancel_run(queued_run(w.admin, _target(w, own))),
    "read_datacite": lambda k, w, own: k.datacite(_target(w, own)),
    "edit_datacite": lambda k, w, own: k.set_metadata(_target(w, own), {"keywords": ["x"]}),
    "release": lambda k, w, own: _release(k, w, own),
    "search": _search,
    "read_values": lambda k, w, own: k.get_values(_target(w, own)),
    "set_values": lambda k, w, own: k.set_values(_target(w, own), {"stain": "DAPI"}),
    "annotate_project": lambda k, w, own: k.set_values(_project(w, own), {"grant_no": "42"}),
    "create_sample": lambda k, w, own: k.add_sample(w.name("mouse-")),
}
#: operations that change what later cells see get fresh datasets before they run
MUTATING = {"ingest", "seal", "unseal", "make_public", "grant", "disable_user"}


def test_matrix_covers_every_action_and_operation() -> None:
    assert set(MATRIX["operations"]) == set(OPERATIONS), "matrix and test list other operations"
    covered = {a for op in MATRIX["operations"].values() for a in op["actions"]}
    assert covered == set(ALL_ACTIONS), f"actions missing from the matrix: {ALL_ACTIONS - covered}"
    for operation, row in MATRIX["expected"].items():
        assert set(row) == set(MATRIX["principals"]), operation
    assert set(MATRIX["expected"]) == set(OPERATIONS)


def _outcome(func: Callable[[], Any]) -> str:
    try:
        func()
    except NotFound:
        return "hidden"
    except (Forbidden, AuthenticationFailed):
        return "denied"
    except AlreadyExists:
        return "exists"
    except NameUnavailable:
        return "unavailable"
    except Leaked as exc:
        return f"leaked ({exc})"
    return "ok"


@pytest.mark.parametrize("kind", list(MATRIX["principals"]))
def test_authorization_matrix(world: World, kind: str) -> None:
    failures = []
    try:
        for operation, func in OPERATIONS.items():
            for own, expected in zip(
                (True, False), MATRIX["expected"][operation][kind], strict=True
            ):
                if operation in MUTATING:
                    world.fresh()
                keep = world.admin.acting_as(world.principal(kind))
                got = _outcome(lambda f=func, k=keep, o=own: f(k, world, o))  # type: ignore[misc]
                if got != expected:
                    where = "own" if own else "foreign"
                    failures.append(
                        f"{operation} by {kind} on {where}: expected {expected}, got {got}"
                    )
                if operation == "disable_user" and got == "ok":
                    world.admin.set_user_disabled("zed", False)
    finally:
        unseal_tree(world.tmp)
    assert not failures, "\n".join(failures)


def test_share_links_stay_in_scope(world: World) -> None:
    admin = world.admin
    src = world.tmp / "scope"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"a")
    (src / "sub" / "b.txt").write_bytes(b"b")
    admin.ingest(src, "a_proj/ds-a")
    admin.ingest(src, "a_proj/ds-sibling")
    token, _info = admin.create_share("a_proj/ds-a/raw/sub", expires="1h")
    holder = admin.acting_as(admin.open_share(token))
    assert [e["path"] for e in holder.ls("a_proj/ds-a/raw/sub").items] == ["raw/sub/b.txt"]
    _, handle = holder.open_file("a_proj/ds-a/raw/sub/b.txt")
    with handle:
        assert handle.read() == b"b"
    # inside the shared dataset, outside the shared folder: refused
    with pytest.raises(Forbidden):
        holder.ls("a_proj/ds-a")  # the whole dataset's listing
    with pytest.raises(Forbidden):
        holder.open_file("a_proj/ds-a/raw/a.txt")
    with pytest.raises(Forbidden):
        holder.open_file("a_proj/ds-a/raw/subx/b.txt")  # a prefix that is not the folder
    # other datasets and projects: not even their existence
    for address in ("a_proj/ds-sibling/raw/sub/b.txt", "axproj/c0/raw/f.txt"):
        with pytest.raises(NotFound):
            holder.open_file(address)
    # ".." never gets past the address parser
    with pytest.raises(UsageError, match=r"'\.\.'"):
        holder.ls("a_proj/ds-a/raw/sub/../a.txt")
    assert [p.name for p in holder.list_projects()] == ["a_proj"]
    assert [d.name for d in holder.list_datasets("a_proj")] == ["ds-a"]
    # nothing but reading
    with pytest.raises(Forbidden):
        holder.seal("a_proj/ds-a")


def test_share_links_expire_are_revocable_and_count_downloads(world: World) -> None:
    from sqlalchemy import update

    from labkeep.catalog import ShareLink
    from labkeep.clock import utcnow

    admin = world.admin
    token, _info = admin.create_share(world.own + "/raw/f.txt", max_downloads=2)
    assert token.startswith("lks_") and len(token) > 40
    holder = admin.acting_as(admin.open_share(token))
    for _ in range(2):
        _, handle = holder.open_file(world.own + "/raw/f.txt")
        handle.close()
    with pytest.raises(AuthenticationFailed):
        holder.open_file(world.own + "/raw/f.txt")
    with pytest.raises(AuthenticationFailed):
        admin.open_share(token)
    # expiry
    token2, info2 = admin.create_share(world.own, expires="1h")
    admin.open_share(token2)
    with admin.catalog.write() as session:
        session.execute(
            update(ShareLink).where(ShareLink.id == info2.id).values(expires_at=utcnow())
        )
    with pytest.raises(AuthenticationFailed, match="expired"):
        admin.open_share(token2)
    # revocation
    token3, info3 = admin.create_share(world.own)
    admin.revoke_share(info3.id)
    with pytest.raises(AuthenticationFailed):
        admin.open_share(token3)
    # a made-up token
    with pytest.raises(AuthenticationFailed):
        admin.open_share("lks_" + "A" * 43)
    listed = {s.id: s for s in admin.list_shares()}
    assert not listed[info3.id].active and listed[info3.id].revoked_at is not None


def test_api_tokens(world: World) -> None:
    admin = world.admin
    alice = admin.acting_as(admin.principal_for("alice"))
    secret, info = alice.create_token("laptop", expires="1d")
    principal = admin.authenticate_token(secret)
    assert principal.name == "alice" and not principal.read_only
    as_token = admin.acting_as(principal)
    as_token.seal(world.own)
    ro_secret, _ = alice.create_token("reader", read_only=True)
    reader = admin.acting_as(admin.authenticate_token(ro_secret))
    reader.ls(world.own)
    with pytest.raises(Forbidden, match="read"):
        world.fresh()
        reader.seal(world.own)
    with pytest.raises(Forbidden):
        reader.create_token("escalate")
    alice.revoke_token(info.id)
    with pytest.raises(AuthenticationFailed):
        admin.authenticate_token(secret)
    # a disabled user's tokens die with the account
    secret2, _ = alice.create_token("other")
    admin.set_user_disabled("alice")
    with pytest.raises(AuthenticationFailed):
        admin.authenticate_token(secret2)
    with pytest.raises(AuthenticationFailed):
        admin.authenticate_password("alice", PASSWORD)
    unseal_tree(world.tmp)


def test_passwords(world: World) -> None:
    admin = world.admin
    assert admin.authenticate_password("alice", PASSWORD).name == "alice"
    for name, password in (("alice", "wrong password"), ("nobody", PASSWORD), ("alice", "")):
        with pytest.raises(AuthenticationFailed, match="wrong user name or password"):
            admin.authenticate_password(name, password)
    alice = admin.acting_as(admin.principal_for("alice"))
    with pytest.raises(AuthenticationFailed):
        alice.set_password("alice", "a new long password", current="wrong")
    alice.set_password("alice", "a new long password", current=PASSWORD)
    assert admin.authenticate_password("alice", "a new long password").name == "alice"
    with pytest.raises(Forbidden):
        alice.set_password("gadmin", "taking over gadmin")


def test_secrets_never_reach_events_or_records(world: World) -> None:
    import json

    admin = world.admin
    admin.add_user("carol", password="carol's secret pw")
    secret, info = admin.create_token("x")
    link, share = admin.create_share(world.own)
    everything = json.dumps(admin.events(limit=None)) + json.dumps(info.to_dict())
    everything += json.dumps(share.to_dict()) + json.dumps(
        [u.to_dict() for u in admin.list_users()]
    )
    for needle in ("carol's secret pw", secret, link, PASSWORD, "argon2"):
        assert needle not in everything
    from sqlalchemy import text

    with admin.catalog.read() as session:
        stored = json.dumps(
            [list(map(str, r)) for r in session.execute(text("SELECT * FROM api_tokens"))]
        )
        stored += json.dumps(
            [list(map(str, r)) for r in session.execute(text("SELECT * FROM share_links"))]
        )
    assert secret not in stored and link not in stored


def test_private_projects_and_public_datasets(world: World) -> None:
    admin = world.admin
    gadmin = admin.acting_as(admin.principal_for("gadmin"))
    gadmin.create_project("a-secret", group="lab-a", private=True)
    alice = admin.acting_as(admin.principal_for("alice"))
    assert "a-secret" not in [p.name for p in alice.list_projects()]
    with pytest.raises(NotFound):
        alice.get_project("a-secret")
    gadmin.grant("alice", "read", "a-secret")
    assert alice.get_project("a-secret").private
    # public datasets: readable by anyone without an account
    admin.set_public(world.foreign)
    anyone = admin.acting_as(ANONYMOUS)
    assert anyone.get_dataset(world.foreign).public
    assert [p.name for p in anyone.list_projects()] == ["axproj"]
    with pytest.raises(Forbidden):
        anyone.seal(world.foreign)


def test_local_os_user_mapping(keep: Keep, keep_root: Path) -> None:
    """Whoever ran init is the first site admin; unknown OS users have no rights."""
    assert keep.principal.site_admin and keep.whoami()["site_admin"]
    stranger = keep.acting_as(dataclasses.replace(ANONYMOUS, name="os:stranger"))
    with pytest.raises(Forbidden):
        stranger.create_project("x")
    from labkeep.ops.accounts import local_principal

    assert local_principal(keep, "stranger").kind == "anonymous"
    keep.add_user("bob", password=PASSWORD, os_user="stranger")
    assert local_principal(keep, "stranger").name == "bob"


def test_a_hidden_project_name_is_answered_as_a_reserved_one(world: World) -> None:
    """Those who may not see a project learn nothing from trying its name: the answer is
    the one for a reserved name (and those who may see it are told it exists)."""
    admin = world.admin
    gadmin = admin.acting_as(admin.principal_for("gadmin"))
    gadmin.create_project("a-secret", group="lab-a", private=True)
    alice = admin.acting_as(admin.principal_for("alice"))
    badmin = admin.acting_as(admin.principal_for("badmin"))
    answers = []
    for keep, name in ((alice, "a-secret"), (alice, "nul"), (badmin, "a_proj"), (badmin, "com1")):
        with pytest.raises(NameUnavailable) as caught:
            keep.create_project(name, group="lab-a" if keep is alice else "lab-b")
        error = caught.value
        answers.append(
            (error.code, error.http_status, error.message.replace(name, "NAME"), error.hint)
        )
    assert len(set(answers)) == 1, answers
    with pytest.raises(AlreadyExists, match="already exists"):
        gadmin.create_project("a-secret", group="lab-a")
    # datasets the same way
    for name in ("aux", "lpt1.dat"):
        with pytest.raises(NameUnavailable):
            alice.create_dataset(f"a_proj/{name}")
    with pytest.raises(AlreadyExists):
        alice.create_dataset(world.own)


def test_a_link_in_use_stops_when_its_creator_loses_access(world: World) -> None:
    """Downloads re-check the link, so a holder who opened it earlier is stopped too."""
    admin = world.admin
    alice = admin.acting_as(admin.principal_for("alice"))
    token, _ = alice.create_share(world.own)
    holder = admin.acting_as(admin.open_share(token))
    _, handle = holder.open_file(world.own + "/raw/f.txt")
    handle.close()
    admin.set_user_disabled("alice")
    with pytest.raises(AuthenticationFailed, match="invalid, expired or revoked"):
        holder.open_file(world.own + "/raw/f.txt")
    with pytest.raises(AuthenticationFailed, match="invalid, expired or revoked"):
        holder.files_for_download(world.own)


def test_event_filters_match_names_exactly(world: World) -> None:
    """``_`` (a slug character) and ``%`` are no wildcards: a reader of a_b and of
    a_proj/d_1 sees none of the events of axb, a_proj/dx1 or a_proj/d_10."""
    admin = world.admin
    admin.create_project("a_b", group="lab-a")
    admin.create_project("axb", group="lab-b")
    for dataset in ("a_proj/d_1", "a_proj/dx1", "a_proj/d_10", "a_b/s1", "axb/s1"):
        admin.create_dataset(dataset)
    alice = admin.acting_as(admin.principal_for("alice"))  # member of lab-a
    targets = {e["target"] for e in alice.events(target="a_b", limit=None)}
    assert targets == {"a_b", "a_b/s1"}
    assert {e["target"] for e in alice.events(target="a_proj/d_1", limit=None)} == {"a_proj/d_1"}
    everything = {e["target"] for e in admin.events(target="a_proj", limit=None)}
    assert {"a_proj/d_1", "a_proj/dx1", "a_proj/d_10"} <= everything
    assert not any(t.startswith(("a_b", "axb")) for t in everything)
    with pytest.raises(UsageError):
        admin.events(target="a%b")


def test_share_links_live_no_longer_than_their_creators_access(world: World) -> None:
    admin = world.admin
    alice = admin.acting_as(admin.principal_for("alice"))  # member of lab-a: may share
    token, info = alice.create_share(world.own, expires="30d")
    assert admin.open_share(token).kind == "share"
    # disabled: the link stops working (and the command says so); enabled: it works again
    disabled = admin.set_user_disabled("alice", True)
    assert disabled.suspended_shares == 1 and disabled.to_dict()["suspended_shares"] == 1
    assert disabled.to_dict()["message"] == "1 share link made by alice is suspended"
    with pytest.raises(AuthenticationFailed):
        admin.open_share(token)
    listed = {s.id: s for s in admin.list_shares(world.own)}
    assert listed[info.id].suspended and not listed[info.id].active
    assert listed[info.id].state == "suspended"
    assert listed[info.id].to_dict()["suspended"] is True
    admin.set_user_disabled("alice", False)
    assert admin.open_share(token).kind == "share"
    # a grant that let its creator share is revoked: suspended too
    admin.grant("ext", "write", world.own)
    ext = admin.acting_as(admin.principal_for("ext"))
    ext_token, _ = ext.create_share(world.own, expires="7d")
    record = admin.revoke("ext", world.own)
    assert record["suspended_shares"] == 1
    with pytest.raises(AuthenticationFailed):
        admin.open_share(ext_token)
    assert admin.open_share(token).kind == "share"  # alice's link does not depend on it


def test_a_ranged_download_counts_once(world: World, tmp_path: Path) -> None:
    admin = world.admin
    src = tmp_path / "two"
    src.mkdir()
    (src / "one.bin").write_bytes(b"1" * 100)
    (src / "two.bin").write_bytes(b"2" * 100)
    admin.ingest(src, "a_proj/pair")
    token, _ = admin.create_share("a_proj/pair", expires="1d", max_downloads=1)
    holder = admin.acting_as(admin.open_share(token))
    _, first = holder.open_file("a_proj/pair/raw/one.bin")  # the first range (or all of it)
    first.close()
    with pytest.raises(AuthenticationFailed):
        admin.open_share(token)  # used up by that one download
    for _ in range(5):  # the rest of the same download, range by range
        resumed = admin.acting_as(admin.open_share(token, resuming=True))
        _, more = resumed.open_file("a_proj/pair/raw/one.bin", resuming=True)
        more.close()
    # but not another file, and not the same one again from its start
    resumed = admin.acting_as(admin.open_share(token, resuming=True))
    with pytest.raises(AuthenticationFailed):
        resumed.open_file("a_proj/pair/raw/two.bin", resuming=True)
    with pytest.raises(AuthenticationFailed):
        resumed.open_file("a_proj/pair/raw/one.bin")


def test_denials_are_plain_sentences() -> None:
    """No "Share may not dataset download.": every action has words, and each kind of
    principal hears what it is and what to do."""
    from labkeep.access import ALL_ACTIONS, Principal, ShareScope
    from labkeep.access.policy import ACTION_WORDS, denial

    assert set(ACTION_WORDS) == set(ALL_ACTIONS)
    principals = [
        ANONYMOUS,
        Principal("share", name="share:1", share=ShareScope(1, 1)),
        Principal("user", name="alice", user_id=1),
        Principal("user", name="bot", user_id=2, read_only=True),
        Principal("user", name="gone", user_id=3, disabled=True),
    ]
    for principal in principals:
        for action in sorted(ALL_ACTIONS):
            error = denial(principal, action)
            assert action not in error.message, error.message
            assert error.hint, (principal, action)
    share = denial(principals[1], "dataset.seal")
    assert share.message == "a share link gives read-only access: it cannot seal this dataset"
    assert denial(principals[2], "dataset.download").message == (
        "alice may not download files of this dataset"
    )


def test_free_texts_have_limits(world: World) -> None:
    """A 100,000-character title would break every page that shows it: refused by the
    use case (so the CLI, the API and the web all get it) with a plain message."""
    admin = world.admin
    huge = "x" * 100_000
    for call in (
        lambda: admin.create_project("p-long", title=huge),
        lambda: admin.update_project("a_proj", description=huge),
        lambda: admin.update_dataset(world.own, title=huge),
        lambda: admin.create_share(world.own, label=huge),
        lambda: admin.create_token(huge),
        lambda: admin.add_user("long-one", display_name=huge),
        lambda: admin.create_group("long-lab", title=huge),
    ):
        with pytest.raises(UsageError, match="too long"):
            call()
    admin.update_project("a_proj", title="t" * 300)  # the limit itself is fine
