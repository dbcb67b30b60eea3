"""Time as the catalog stores it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def utcnow() -> datetime:
    """Naive UTC with microseconds: round-trips unchanged through SQLite and PostgreSQL."""
    return datetime.now(UTC).replace(tzinfo=None)


def isoformat(value: datetime | None) -> str | None:
    """ISO 8601 with an explicit UTC marker, for records and pages."""
    return None if value is None else value.isoformat(timespec="seconds") + "Z"


def parse_duration(text: str) -> timedelta:
    """``90d``, ``12h``, ``30m``, ``2w`` (or a bare number of days) as a timedelta."""
    from labkeep.errors import UsageError

    units = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
    raw = text.strip().lower()
    unit = raw[-1:] if raw[-1:] in units else "d"
    number = raw[:-1] if raw[-1:] in units else raw
    try:
        value = float(number)
    except ValueError:
        value = -1
    if not value > 0:
        raise UsageError(f"invalid duration {text!r}", hint="use e.g. 30m, 12h, 7d or 2w")
    try:
        delta = timedelta(**{units[unit]: value})
    except OverflowError:  # "inf", "1e12d": far beyond any limit below
        delta = timedelta.max
    if delta > timedelta(days=3660):
        raise UsageError(f"duration {text!r} is longer than ten years")
    return delta
