"""Result records: what bulk operations yield, one per file (datalad-next's idea).

``status`` is one of ``ok`` (done), ``notneeded`` (already so), ``impossible`` (refused
by a rule, e.g. a symlink in the source) and ``error`` (something failed). Front ends
summarise them and decide the exit code; ``--json`` prints them as they are.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

STATUSES = ("ok", "notneeded", "impossible", "error")


@dataclass
class Result:
    action: str
    status: str
    path: str | None = None
    dataset: str | None = None
    sha256: str | None = None
    size: int | None = None
    message: str | None = None
    #: for verify: ok | modified | missing | extra
    state: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {"action": self.action, "status": self.status}
        for key in ("dataset", "path", "state", "size", "sha256", "message"):
            value = getattr(self, key)
            if value is not None:
                record[key] = value
        record.update(self.extra)
        return record


@dataclass
class Report:
    """The records of one bulk operation plus its summary.

    Counts cover every record added. With ``keep_all`` (the default, for the Python API)
    every record is kept in ``results``; bulk commands that hand each record to the user
    as it comes set it to False and keep only the problems, so that memory does not
    grow with the number of files.
    """

    action: str
    results: list[Result] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    keep_all: bool = True
    _counts: Counter[str] = field(default_factory=Counter, repr=False)
    _states: Counter[str] = field(default_factory=Counter, repr=False)

    def add(self, result: Result) -> Result:
        self._counts[result.status] += 1
        if result.state:
            self._states[result.state] += 1
        if self.keep_all or result.status in ("error", "impossible"):
            self.results.append(result)
        return result

    def tally(self, status: str, n: int) -> None:
        """Count *n* records of *status* that were reported elsewhere (e.g. by a server)."""
        self._counts[status] += n

    def states(self) -> Counter[str]:
        """How many records had each ``state`` (verify: ok, modified, missing, extra)."""
        return Counter(self._states)

    def counts(self) -> dict[str, int]:
        return {status: self._counts[status] for status in STATUSES if self._counts[status]}

    @property
    def failed(self) -> bool:
        return bool(self.problems)

    @property
    def problems(self) -> int:
        """How many records are errors or impossible."""
        return self._counts["error"] + self._counts["impossible"]

    def summary(self) -> dict[str, Any]:
        return {"action": self.action, "summary": self.counts(), **self.info}


@dataclass
class Listing:
    """What ``ls`` shows: ``kind`` is projects, datasets or entries."""

    kind: str
    address: str | None
    items: list[dict[str, Any]] = field(default_factory=list)
    version: int | None = None


@dataclass
class EntryStream:
    """Every file below a dataset address, in path order, fetched page by page."""

    address: str
    version: int | None
    entries: Iterator[dict[str, Any]]
