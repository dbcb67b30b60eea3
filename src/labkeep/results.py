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
    """The records of one bulk operation plus its summary."""

    action: str
    results: list[Result] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def add(self, result: Result) -> Result:
        self.results.append(result)
        return result

    def counts(self) -> dict[str, int]:
        counter = Counter(r.status for r in self.results)
        return {status: counter[status] for status in STATUSES if counter[status]}

    @property
    def failed(self) -> bool:
        return any(r.status in ("error", "impossible") for r in self.results)

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
