"""Password sign-in through LDAP, against a real OpenLDAP slapd (tests/ldapserver.py)."""

from __future__ import annotations

import json
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from labkeep import Keep
from labkeep.access.ldap import DirectoryUnavailable
from labkeep.errors import AuthenticationFailed, ConfigError
from tests.ldapserver import USER_DN, LdapServer, LdapServerUnavailable

#: the directory's people and their passwords (none of them is a labkeep password)
DIRECTORY = {
    "alice": "alice-directory-pw",
    "bob": "bob-directory-pw",
    "carol": "carol-directory-pw",
    "dave": "dave-directory-pw",
}
DAVE_LOCAL = "dave-local-password"


@pytest.fixture(scope="session")
def ldap_server() -> Iterator[LdapServer]:
    server = LdapServer(DIRECTORY)
    try:
        server.start()
    except LdapServerUnavailable as exc:
        server.stop()
        pytest.skip(f"no OpenLDAP server for the LDAP tests: {exc}")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def blank_keep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new keep to copy: 'Keep.init' once instead of in every test."""
    root = tmp_path_factory.mktemp("ldap-template") / "keep"
    Keep.init(root).close()
    return root


def _keep_with_ldap(
    tmp_path: Path, blank: Path, url: str, timeout: float = 5.0, start_tls: bool = False
) -> Keep:
    """A copy of *blank* with an [ldap] section, opened as its site admin."""
    root = tmp_path / "keep"
    shutil.copytree(blank, root)
    with (root / "labkeep.toml").open("a", encoding="utf-8") as config:
        config.write(
            f'\n[ldap]\nurl = "{url}"\nuser_dn = "{USER_DN}"\ntimeout = {timeout}\n'
            f"start_tls = {str(start_tls).lower()}\n"
        )
    return Keep.open(root)


@pytest.fixture
def keep(tmp_path: Path, blank_keep: Path, ldap_server: LdapServer) -> Iterator[Keep]:
    """A keep (run by its site admin) whose [ldap] is the test directory."""
    k = _keep_with_ldap(tmp_path, blank_keep, ldap_server.url)
    assert k.config.ldap is not None and k.config.ldap.url == ldap_server.url
    yield k
    k.close()


def _users(keep: Keep) -> dict[str, str]:
    return {u.name: u.source for u in keep.list_users()}


def _refused(keep: Keep, name: str, password: str) -> None:
    with pytest.raises(AuthenticationFailed, match="wrong user name or password"):
        keep.authenticate_password(name, password)


def test_directory_password_signs_in_an_ldap_account(keep: Keep) -> None:
    keep.add_user("alice", ldap=True)
    principal = keep.authenticate_password("alice", DIRECTORY["alice"])
    assert (principal.kind, principal.name, principal.authenticated) == ("user", "alice", True)
    assert not principal.site_admin
    assert _users(keep)["alice"] == "ldap"


@pytest.mark.parametrize(
    "password",
    ["wrong password", DIRECTORY["bob"], DIRECTORY["alice"].upper(), DIRECTORY["alice"] + " "],
)
def test_wrong_password_is_refused(keep: Keep, password: str) -> None:
    keep.add_user("alice", ldap=True)
    _refused(keep, "alice", password)


def test_empty_password_is_never_an_unauthenticated_bind(
    keep: Keep, ldap_server: LdapServer
) -> None:
    # the test server, like many, takes a DN with no password as an anonymous bind
    assert ldap_server.whoami(ldap_server.dn("alice"), "") == "anonymous"
    keep.add_user("alice", ldap=True)
    _refused(keep, "alice", "")
    _refused(keep, "bob", "")  # in the directory, not in labkeep yet
    assert "bob" not in _users(keep)


def test_unknown_user_is_refused_and_gets_no_account(keep: Keep) -> None:
    before = _users(keep)
    _refused(keep, "zoe", DIRECTORY["alice"])
    _refused(keep, "zoe", "")
    assert _users(keep) == before


@pytest.mark.parametrize(
    "name",
    [
        "alice,ou=people",
        f"alice,ou=people,{USER_DN.split(',', 2)[2]}",
        "*",
        "alice)(uid=*",
        "uid=alice",
        "alice+cn=Alice",
        "alice\\",
        "#alice",
        "",
    ],
)
def test_dn_injection_is_refused(keep: Keep, name: str) -> None:
    before = _users(keep)
    _refused(keep, name, DIRECTORY["alice"])
    keep.add_user("alice", ldap=True)
    _refused(keep, name, DIRECTORY["alice"])
    assert _users(keep) == {**before, "alice": "ldap"}


@pytest.mark.parametrize(
    "name", ["ALICE", "Alice", " alice", "alice ", "\uff41\uff4c\uff49\uff43\uff45"]
)
def test_names_the_directory_folds_to_alice_are_refused(
    keep: Keep, ldap_server: LdapServer, name: str
) -> None:
    # LDAP compares uids ignoring case, outer spaces and width: the directory says yes...
    assert ldap_server.whoami(ldap_server.dn(name), DIRECTORY["alice"]) == (
        "dn:" + ldap_server.dn("alice")
    )
    # ...but none of these is a labkeep user name, so they must not sign in (nor get an
    # account of their own next to alice's, which would dodge alice being disabled)
    before = _users(keep)
    _refused(keep, name, DIRECTORY["alice"])
    keep.add_user("alice", ldap=True)
    keep.set_user_disabled("alice")
    _refused(keep, name, DIRECTORY["alice"])
    assert _users(keep) == {**before, "alice": "ldap"}


def test_first_sign_in_creates_an_ldap_account(keep: Keep) -> None:
    assert "bob" not in _users(keep)
    principal = keep.authenticate_password("bob", DIRECTORY["bob"])
    assert (principal.kind, principal.name, principal.groups) == ("user", "bob", {})
    [bob] = [u for u in keep.list_users() if u.name == "bob"]
    assert (bob.source, bob.disabled, bob.site_admin, bob.groups) == ("ldap", False, False, {})
    created = keep.events(action="user-create")
    assert [(e["actor"], e["target"], e["details"]) for e in created] == [
        ("bob", "user:bob", {"source": "ldap"})
    ]
    # the second time it is the same account, not a new one
    assert keep.authenticate_password("bob", DIRECTORY["bob"]).user_id == principal.user_id
    assert len(keep.events(action="user-create")) == 1
    _refused(keep, "bob", "not bob's password")
    assert keep.check_events().ok  # the event went into the hash chain


def test_disabled_ldap_account_is_refused_with_the_right_password(
    keep: Keep, ldap_server: LdapServer
) -> None:
    keep.add_user("carol", ldap=True)
    assert keep.authenticate_password("carol", DIRECTORY["carol"]).name == "carol"
    keep.set_user_disabled("carol")
    assert ldap_server.whoami(ldap_server.dn("carol"), DIRECTORY["carol"])  # still valid there
    _refused(keep, "carol", DIRECTORY["carol"])
    keep.set_user_disabled("carol", False)
    assert keep.authenticate_password("carol", DIRECTORY["carol"]).name == "carol"


def test_local_accounts_keep_their_local_password(keep: Keep) -> None:
    # dave is also in the directory, with another password: a local account never asks it
    keep.add_user("dave", password=DAVE_LOCAL)
    assert keep.authenticate_password("dave", DAVE_LOCAL).name == "dave"
    _refused(keep, "dave", DIRECTORY["dave"])
    _refused(keep, "dave", "")
    assert _users(keep)["dave"] == "local"


def test_passwords_never_reach_the_audit_log(keep: Keep) -> None:
    keep.add_user("alice", ldap=True)
    keep.add_user("dave", password=DAVE_LOCAL)
    keep.authenticate_password("alice", DIRECTORY["alice"])
    keep.authenticate_password("bob", DIRECTORY["bob"])  # first sign-in: an event
    keep.authenticate_password("dave", DAVE_LOCAL)
    for name, password in [("alice", "wrong-pw-123"), ("zoe", DIRECTORY["carol"])]:
        _refused(keep, name, password)
    log = json.dumps(keep.events(limit=None))
    assert "user:bob" in log
    for secret in [*DIRECTORY.values(), DAVE_LOCAL, "wrong-pw-123"]:
        assert secret not in log


def test_url_may_end_with_a_slash(
    tmp_path: Path, blank_keep: Path, ldap_server: LdapServer
) -> None:
    with _keep_with_ldap(tmp_path, blank_keep, ldap_server.url + "/", timeout=2.5) as keep:
        keep.add_user("alice", ldap=True)
        assert keep.authenticate_password("alice", DIRECTORY["alice"]).name == "alice"


# ldap3 checks host names with ssl.match_hostname, which Python 3.10 and 3.11 deprecate
@pytest.mark.filterwarnings("ignore:ssl.match_hostname:DeprecationWarning")
@pytest.mark.parametrize("tls", ["starttls", "ldaps"])
def test_tls_checks_the_directory_certificate(
    tmp_path: Path,
    blank_keep: Path,
    ldap_server: LdapServer,
    monkeypatch: pytest.MonkeyPatch,
    tls: str,
) -> None:
    if ldap_server.ca_file is None:
        pytest.skip(f"the test directory has no TLS: {ldap_server.no_tls_reason}")
    url = ldap_server.url if tls == "starttls" else ldap_server.ldaps_url
    with _keep_with_ldap(tmp_path, blank_keep, url, start_tls=tls == "starttls") as keep:
        keep.add_user("alice", ldap=True)
        # a self-signed certificate that this machine does not trust: no password goes out
        with pytest.raises(DirectoryUnavailable, match="certificate"):
            keep.authenticate_password("alice", DIRECTORY["alice"])
        # once its CA is trusted, the same directory works
        monkeypatch.setenv("SSL_CERT_FILE", str(ldap_server.ca_file))
        assert keep.authenticate_password("alice", DIRECTORY["alice"]).name == "alice"
        _refused(keep, "alice", "wrong password")


@pytest.mark.filterwarnings("ignore:ssl.match_hostname:DeprecationWarning")
# when the name does not match, ldap3 drops its TLS socket without closing it
@pytest.mark.filterwarnings("ignore:unclosed <ssl.SSLSocket:ResourceWarning")
def test_tls_checks_the_directory_host_name(
    tmp_path: Path, blank_keep: Path, ldap_server: LdapServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    if ldap_server.ca_file is None:
        pytest.skip(f"the test directory has no TLS: {ldap_server.no_tls_reason}")
    monkeypatch.setenv("SSL_CERT_FILE", str(ldap_server.ca_file))
    # a trusted certificate, but for 127.0.0.1, and this is 127.0.0.2
    url = ldap_server.other_name_url
    with _keep_with_ldap(tmp_path, blank_keep, url, start_tls=True) as keep:
        keep.add_user("alice", ldap=True)
        with pytest.raises(DirectoryUnavailable, match="doesn't match"):
            keep.authenticate_password("alice", DIRECTORY["alice"])


def test_invalid_url_is_a_config_error(tmp_path: Path, blank_keep: Path) -> None:
    keep = _keep_with_ldap(tmp_path, blank_keep, "ldap://127.0.0.1:notaport")
    with keep, pytest.raises(ConfigError, match="not a valid LDAP URL"):
        keep.authenticate_password("alice", DIRECTORY["alice"])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_directory_is_a_clear_error(tmp_path: Path, blank_keep: Path) -> None:
    url = f"ldap://127.0.0.1:{_free_port()}"  # nothing listens there
    with _keep_with_ldap(tmp_path, blank_keep, url, timeout=2) as keep:
        keep.add_user("alice", ldap=True)
        before = _users(keep)
        for name in ("alice", "bob"):
            with pytest.raises(DirectoryUnavailable, match="cannot be reached") as caught:
                keep.authenticate_password(name, DIRECTORY[name])
            assert url in str(caught.value) and caught.value.code == "ldap-unavailable"
        assert _users(keep) == before


def test_directory_that_never_answers_times_out(tmp_path: Path, blank_keep: Path) -> None:
    with socket.socket() as silent:  # accepts connections (the kernel does), never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"ldap://127.0.0.1:{silent.getsockname()[1]}"
        with _keep_with_ldap(tmp_path, blank_keep, url, timeout=1) as keep:
            keep.add_user("alice", ldap=True)
            started = time.monotonic()
            with pytest.raises(DirectoryUnavailable, match="cannot be reached"):
                keep.authenticate_password("alice", DIRECTORY["alice"])
            assert time.monotonic() - started < 10


def test_first_sign_ins_at_once_make_one_account(keep: Keep) -> None:
    """Two browser tabs or two server workers signing a new LDAP user in at the same
    moment: both are signed in, one account and one event are made."""
    import threading

    racers = 6
    barrier = threading.Barrier(racers)
    outcomes: list[object] = []

    def sign_in() -> None:
        barrier.wait()
        try:
            outcomes.append(keep.authenticate_password("carol", DIRECTORY["carol"]))
        except BaseException as exc:  # the test looks at every outcome
            outcomes.append(exc)

    threads = [threading.Thread(target=sign_in) for _ in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not [o for o in outcomes if isinstance(o, BaseException)], outcomes
    assert len({o.user_id for o in outcomes}) == 1  # type: ignore[attr-defined]
    assert _users(keep)["carol"] == "ldap"
    assert len(keep.events(action="user-create")) == 1
