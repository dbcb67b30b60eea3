"""Pure parts of watched buffers: listing an acquisition folder, its fingerprint, the
ready rules, the name templates and their sanitisation, the owner rules' parsing.

Nothing here touches the catalog; the listing is the only I/O (``os.scandir``/``lstat``).
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

from labkeep.errors import UsageError
from labkeep.names import check_slug, reserved_name

#: owner rules (``user:NAME`` names one user for every folder)
OWNER_RULES = ("folder-owner", "folder-name", "map")
PLACEHOLDERS = ("folder", "parent", "user", "year", "month", "day", "instrument")


@dataclass
class Listing:
    """What an acquisition folder holds now (its marker file left out)."""

    #: (path below the folder, size, mtime_ns), sorted by path
    files: list[tuple[str, int, int]] = field(default_factory=list)
    marker: bool = False
    #: newest mtime of any file (the marker included), ns; 0 when empty
    newest_ns: int = 0
    #: oldest mtime of any file, ns; 0 when empty
    oldest_ns: int = 0
    #: things ingest will refuse (symbolic links, special files, unreadable folders)
    odd: list[str] = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        return sum(size for _, size, _ in self.files)

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the sorted (path, size, mtime_ns) listing, hex: any file added,
        removed, renamed, resized or touched changes it."""
        h = hashlib.sha256()
        for rel, size, mtime in self.files:
            h.update(rel.encode("utf-8", "surrogateescape") + b"\0")
            h.update(f"{size}\0{mtime}\n".encode())
        for rel in self.odd:
            h.update(b"odd\0" + rel.encode("utf-8", "surrogateescape") + b"\n")
        return h.hexdigest()


def list_folder(folder: str, marker: str | None = None) -> Listing | None:
    """Every regular file below *folder* (None if the folder is gone). The marker file
    (at the folder's top) is noted, not listed: it is not data."""
    listing = Listing()
    try:
        st = os.lstat(folder)
    except FileNotFoundError:
        return None
    if not stat.S_ISDIR(st.st_mode):
        return None
    for rel, st in _walk(folder, "", listing):
        if marker is not None and rel == marker:
            listing.marker = True
        else:
            listing.files.append((rel, st.st_size, st.st_mtime_ns))
        listing.newest_ns = max(listing.newest_ns, st.st_mtime_ns)
        listing.oldest_ns = min(listing.oldest_ns or st.st_mtime_ns, st.st_mtime_ns)
    listing.files.sort()
    listing.odd.sort()
    return listing


def _walk(folder: str, prefix: str, listing: Listing) -> Iterator[tuple[str, os.stat_result]]:
    try:
        with os.scandir(folder) as it:
            entries = list(it)
    except FileNotFoundError:
        return
    except OSError as exc:
        listing.odd.append(f"{prefix}: cannot read folder ({exc.strerror})")
        return
    for entry in entries:
        rel = prefix + entry.name
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(st.st_mode):
            yield from _walk(entry.path, rel + "/", listing)
        elif stat.S_ISREG(st.st_mode):
            yield rel, st
        else:
            listing.odd.append(rel)


def acquisition_folders(base: str, depth: int) -> list[str]:
    """The folders exactly *depth* levels below *base*, as "/"-joined relative paths
    (hidden folders, starting with ".", are skipped)."""
    level = [""]
    for _ in range(depth):
        below: list[str] = []
        for rel in level:
            path = os.path.join(base, rel) if rel else base
            try:
                with os.scandir(path) as it:
                    names = [
                        e.name
                        for e in it
                        if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")
                    ]
            except (FileNotFoundError, NotADirectoryError):
                continue
            below.extend(f"{rel}/{n}" if rel else n for n in names)
        level = below
    return sorted(level)


# -- ready rules -----------------------------------------------------------------------
@dataclass(frozen=True)
class ReadyRule:
    kind: str  # marker | quiet
    marker: str = ""
    seconds: float = 0.0

    def __str__(self) -> str:
        return f"marker:{self.marker}" if self.kind == "marker" else f"quiet:{self.seconds:g}"


def parse_ready(text: str) -> ReadyRule:
    """``marker:.done`` or ``quiet:10m`` (a duration: 90, 30s, 10m, 1h)."""
    from labkeep.config import parse_duration

    kind, _, value = text.partition(":")
    if kind == "marker" and value and "/" not in value and value not in (".", ".."):
        return ReadyRule("marker", marker=value)
    if kind == "quiet" and value:
        try:
            return ReadyRule("quiet", seconds=parse_duration(value))
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    raise UsageError(
        f"invalid ready rule {text!r}",
        hint="use marker:FILE (e.g. marker:.done) or quiet:DURATION (e.g. quiet:10m)",
    )


def is_ready(rule: ReadyRule, listing: Listing, last_change: float, now: float) -> bool:
    """Whether an acquisition is finished: its marker file is there, or its listing has
    not changed for the quiet period *and* no file's mtime is newer than that (a file
    still being written keeps a fresh mtime even when a scan missed the change).
    *last_change* and *now* are POSIX times."""
    if not listing.files:
        return False
    if rule.kind == "marker":
        return listing.marker
    quiet_since = now - rule.seconds
    return last_change <= quiet_since and listing.newest_ns / 1e9 <= quiet_since


# -- name templates ---------------------------------------------------------------------
_NOT_SLUG = re.compile(r"[^a-z0-9._-]+")


def sanitise(text: str) -> str:
    """A slug from any text: accents dropped (NFKD), lowercase, every run of other
    characters (spaces, ``%#?``, newlines...) becomes one ``-``, runs of ``.`` and ``-``
    collapse, leading characters other than a letter or digit and trailing ``-``/``.``/``_``
    are removed, and the result is cut to 64 characters."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    text = _NOT_SLUG.sub("-", text)
    text = re.sub(r"\.{2,}", ".", text)
    text = re.sub(r"-{2,}", "-", text)
    text = re.sub(r"^[^a-z0-9]+", "", text)
    return text[:64].rstrip("-._")


def render_name(template: str, values: dict[str, str], what: str) -> str:
    """*template* with *values* filled in, sanitised into a valid slug; UsageError when
    the template names an unknown placeholder or nothing usable is left."""
    try:
        raw = template.format_map(values)
    except (KeyError, IndexError, ValueError) as exc:
        raise UsageError(
            f"the {what} template {template!r} cannot be filled ({exc})",
            hint="placeholders: " + ", ".join("{" + p + "}" for p in PLACEHOLDERS),
        ) from None
    name = sanitise(raw)
    if not name:
        raise UsageError(f"the {what} template {template!r} gives no usable name for {raw!r}")
    if reserved_name(name):
        raise UsageError(f"the {what} name {name!r} (from {raw!r}) is reserved")
    return check_slug(name, f"{what} name")


def check_template(template: str, what: str) -> None:
    """Refuse a template with an unknown placeholder when the watch is added."""
    sample = dict.fromkeys(PLACEHOLDERS, "x")
    sample.update(year="2026", month="01", day="01")
    render_name(template, sample, what)


def template_values(folder: str, user: str, instrument: str, when: datetime) -> dict[str, str]:
    """The placeholders for an acquisition folder (a "/"-joined path below the buffer)."""
    parts = folder.split("/")
    return {
        "folder": parts[-1],
        "parent": parts[-2] if len(parts) > 1 else instrument,
        "user": user,
        "year": f"{when.year:04d}",
        "month": f"{when.month:02d}",
        "day": f"{when.day:02d}",
        "instrument": instrument,
    }


# -- owner rules --------------------------------------------------------------------------
def parse_owner_rule(text: str) -> str:
    if text in OWNER_RULES or (text.startswith("user:") and len(text) > 5):
        return text
    raise UsageError(
        f"invalid owner rule {text!r}",
        hint="use folder-owner, folder-name, map (with --owner-map ACCOUNT=USER) or user:NAME",
    )


def parse_owner_map(items: list[str]) -> dict[str, str]:
    """``sysacct=alice`` pairs as a dict."""
    mapping: dict[str, str] = {}
    for item in items:
        account, sep, user = item.partition("=")
        if not sep or not account.strip() or not user.strip():
            raise UsageError(f"invalid owner map entry {item!r}", hint="use ACCOUNT=USER")
        mapping[account.strip()] = user.strip()
    return mapping


def os_account(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid:{uid}"
