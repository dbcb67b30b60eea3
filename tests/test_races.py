"""Creating things at the same moment from several processes or threads: one wins, the
others get the thing or a typed error, never a database traceback (both catalogs)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from labkeep import Keep
from labkeep.errors import AlreadyExists, Busy, NameUnavailable

RACERS = 8


def race(root: Path, work: Callable[[Keep, int], Any]) -> list[Any]:
    """Run *work* on RACERS threads, each with its own Keep (own connections), released
    together; returns each one's result or exception."""
    keeps = [Keep.open(root) for _ in range(RACERS)]
    barrier = threading.Barrier(RACERS)
    outcomes: list[Any] = [None] * RACERS

    def run(i: int) -> None:
        barrier.wait()
        try:
            outcomes[i] = work(keeps[i], i)
        except Exception as exc:  # the test looks at every outcome
            outcomes[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(RACERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for keep in keeps:
        keep.close()
    return outcomes


def test_ingests_racing_to_create_a_dataset(keep: Keep, keep_root: Path, tmp_path: Path) -> None:
    for round_ in range(4):
        sources = []
        for i in range(RACERS):
            src = tmp_path / f"src-{round_}-{i}"
            src.mkdir()
            (src / f"from-{i}.txt").write_bytes(b"%d" % i)
            sources.append(src)
        dataset = f"proj/new{round_}"
        outcomes = race(keep_root, lambda k, i, s=sources, d=dataset: k.ingest(s[i], d))
        unexpected = [o for o in outcomes if isinstance(o, Exception) and not isinstance(o, Busy)]
        assert not unexpected, unexpected
        done = [o for o in outcomes if not isinstance(o, Exception)]
        assert done, "at least one ingest went through"
        created = [e for e in keep.events(target=dataset, limit=None)
                   if e["action"] == "dataset-create"]  # fmt: skip
        assert len(created) == 1
        listed = {e["path"] for e in keep.ls(dataset).items}
        assert len(listed) == sum(o.counts().get("ok", 0) for o in done)


def test_projects_groups_and_users_racing(keep: Keep, keep_root: Path) -> None:
    for make in (
        lambda k, i: k.create_project("contested"),
        lambda k, i: k.create_group("contested-lab"),
        lambda k, i: k.add_user("contested-user"),
        lambda k, i: k.create_dataset("proj/contested"),
    ):
        outcomes = race(keep_root, make)
        wins = [o for o in outcomes if not isinstance(o, Exception)]
        losses = [o for o in outcomes if isinstance(o, Exception)]
        assert len(wins) == 1, outcomes
        assert all(isinstance(o, AlreadyExists) for o in losses), losses


def test_a_hidden_projects_name_is_not_confirmed(keep: Keep) -> None:
    keep.create_group("lab-a")
    keep.create_group("lab-b")
    keep.add_user("alice", password="a long enough password")
    keep.set_member("lab-a", "alice", "member")
    keep.create_project("secret-plans", group="lab-b", private=True)
    keep.create_project("open-lab-a", group="lab-a")
    alice = keep.acting_as(keep.principal_for("alice"))
    with pytest.raises(NameUnavailable) as hidden:
        alice.create_project("secret-plans", group="lab-a")
    assert "exist" not in str(hidden.value) and "not available" in hidden.value.message
    with pytest.raises(NameUnavailable) as reserved:
        alice.create_project("con", group="lab-a")
    assert reserved.value.message == hidden.value.message.replace("secret-plans", "con")
    with pytest.raises(AlreadyExists) as visible:
        alice.create_project("open-lab-a", group="lab-a")
    assert "already exists" in visible.value.message
