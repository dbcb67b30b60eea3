"""Time as the catalog stores it."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """Naive UTC with microseconds: round-trips unchanged through SQLite and PostgreSQL."""
    return datetime.now(UTC).replace(tzinfo=None)


def isoformat(value: datetime | None) -> str | None:
    """ISO 8601 with an explicit UTC marker, for records and pages."""
    return None if value is None else value.isoformat(timespec="seconds") + "Z"
