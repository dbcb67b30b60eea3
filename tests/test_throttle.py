"""Password guessing is slowed for the guesser, never for the account's owner elsewhere,
and concurrent guesses cannot slip past the counter (both catalogs)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from labkeep import Keep
from labkeep.catalog import AuthFailure
from labkeep.errors import AuthenticationFailed, TooManyAttempts
from labkeep.ops import accounts, sessions

PASSWORD = "the right password"


@pytest.fixture
def alice(keep: Keep) -> Keep:
    keep.add_user("alice", password=PASSWORD)
    return keep


def attempt(keep: Keep, password: str, client: str) -> str:
    try:
        keep.login("alice", password, client=client)
    except TooManyAttempts:
        return "slowed"
    except AuthenticationFailed:
        return "wrong"
    return "in"


def age_failures(keep: Keep, seconds: float) -> None:
    """As if every recorded failure happened *seconds* earlier."""
    with keep.catalog.write() as session:
        for row in session.query(AuthFailure):
            row.last_failure_at -= timedelta(seconds=seconds)


def test_concurrent_guesses_get_only_the_free_checks(
    alice: Keep, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked = []
    real = accounts.verify_password

    def counting(stored: str | None, password: str) -> bool:
        checked.append(password)
        return real(stored, password)

    monkeypatch.setattr(accounts, "verify_password", counting)
    barrier = threading.Barrier(30)
    outcomes: list[str] = []

    def guess(i: int) -> None:
        barrier.wait()
        try:
            outcomes.append(attempt(alice, f"guess {i}", "10.0.0.66"))
        except Exception as exc:  # the test looks at every outcome
            outcomes.append(repr(exc))

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(checked) <= sessions.FREE_ATTEMPTS, len(checked)
    assert outcomes.count("wrong") == len(checked), outcomes
    assert outcomes.count("slowed") == 30 - len(checked), outcomes


def test_a_guesser_does_not_keep_the_owner_out(alice: Keep) -> None:
    # the guesser's client is slowed after its free attempts
    for _ in range(sessions.FREE_ATTEMPTS):
        assert attempt(alice, "wrong guess", "10.0.0.66") == "wrong"
    age_failures(alice, -5)  # the last failure just now (a loaded machine is slow)
    assert attempt(alice, "wrong guess", "10.0.0.66") == "slowed"
    with pytest.raises(TooManyAttempts) as info:
        alice.login("alice", "wrong guess", client="10.0.0.66")
    assert info.value.retry_after >= 1
    # ... and keeps guessing, one attempt whenever it may, for hours
    for _ in range(40):
        age_failures(alice, 600)
        attempt(alice, "wrong guess", "10.0.0.66")
    # the owner, at her own computer, gets in at once, every time
    assert attempt(alice, PASSWORD, "192.168.1.20") == "in"
    assert attempt(alice, PASSWORD, "192.168.1.20") == "in"


def test_a_slow_guesser_everywhere_never_locks_the_account(alice: Keep) -> None:
    """One wrong attempt every few minutes, each from another address: the owner is never
    refused, from a client of her own."""
    for i in range(30):
        assert attempt(alice, "wrong guess", f"10.1.0.{i}") == "wrong"
        age_failures(alice, 240)
    assert attempt(alice, PASSWORD, "192.168.1.20") == "in"


def test_a_spread_out_guesser_is_slowed_too(alice: Keep) -> None:
    """Many addresses guessing one account: each address's second try waits."""
    for i in range(sessions.FREE_ACCOUNT_ATTEMPTS + 2):
        assert attempt(alice, "wrong guess", f"10.2.0.{i}") == "wrong"
    assert attempt(alice, "wrong guess", "10.2.0.1") == "slowed"
    # failures decay: after a quiet quarter of an hour, it starts afresh
    age_failures(alice, sessions.DECAY.total_seconds() + 1)
    assert attempt(alice, "wrong guess", "10.2.0.1") == "wrong"


def test_success_clears_the_account(alice: Keep) -> None:
    for _ in range(sessions.FREE_ATTEMPTS):
        attempt(alice, "typo", "192.168.1.20")
    age_failures(alice, 3600)
    assert attempt(alice, PASSWORD, "192.168.1.20") == "in"
    with alice.catalog.read() as session:
        keys = {row.key for row in session.query(AuthFailure)}
    assert not any(key.startswith(("pair:alice", "user:alice")) for key in keys)


def test_unknown_accounts_are_throttled_like_real_ones(keep: Keep) -> None:
    """Nobody learns which accounts exist from the throttle."""
    outcomes = []
    for _ in range(sessions.FREE_ATTEMPTS + 1):
        try:
            keep.login("nobody-here", "whatever", client="10.0.0.9")
        except TooManyAttempts:
            outcomes.append("slowed")
        except AuthenticationFailed:
            outcomes.append("wrong")
    assert outcomes == ["wrong"] * sessions.FREE_ATTEMPTS + ["slowed"]
