"""Pure rules for names and addresses: slugs, ``PROJECT/DATASET[/PATH][@VERSION]``, paths.

Nothing here touches the disk or the catalog, so it can be tested exhaustively.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from labkeep.errors import UsageError

#: ``\Z``, not ``$``: ``$`` also matches before a trailing newline
SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}\Z")
#: longest path inside a dataset, in UTF-8 bytes (kept under PostgreSQL's btree row limit)
MAX_PATH_BYTES = 2048
MAX_NAME_BYTES = 255
#: largest version number (catalog integers are 32-bit on PostgreSQL)
MAX_VERSION = 2**31 - 1
#: longest free texts, in characters (pages, tables and the catalog stay usable)
MAX_TITLE = 300
MAX_DESCRIPTION = 10_000
MAX_LABEL = 200
MAX_MESSAGE = 10_000
MAX_REASON = 1_000  # why a dataset was unsealed
MAX_EMAIL = 320


#: names a new project or dataset may not take, with or without an extension: Windows
#: cannot open a folder named like a device, and the tree is shared over SMB
RESERVED_NAMES = frozenset(
    {"con", "prn", "aux", "nul"} | {f"{port}{i}" for port in ("com", "lpt") for i in range(10)}
)


def reserved_name(name: str) -> bool:
    """True for names that a new project or dataset may not take (see RESERVED_NAMES)."""
    return name.split(".", 1)[0].lower() in RESERVED_NAMES


def check_text(value: str, what: str, most: int) -> str:
    """*value* if it is at most *most* characters of storable text, else UsageError."""
    if len(value) > most:
        raise UsageError(f"{what} is too long: {len(value):,} characters, at most {most:,}")
    if "\x00" in value:
        raise UsageError(f"{what} contains a NUL character")
    return value


def check_slug(name: str, what: str = "name") -> str:
    """Return *name* if it is a valid project/dataset slug, else raise UsageError."""
    if not SLUG_RE.match(name) or name in {".", ".."} or ".." in name:
        raise UsageError(
            f"invalid {what} {name!r}",
            hint=(
                "use lowercase letters, digits, '.', '_' and '-', starting with a letter or "
                "digit, at most 64 characters (e.g. imaging-2026, s017-confocal)"
            ),
        )
    return name


def part_name(name: str) -> str:
    """The temporary name beside a file being written as *name*: ``.NAME.labkeep-part``,
    or a name made of its hash where that would pass the file system's 255 bytes."""
    part = f".{name}.labkeep-part"
    if len(part.encode("utf-8", "surrogateescape")) <= 255:
        return part
    import hashlib

    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return f".{digest}.labkeep-part"


def check_relpath(path: str) -> str:
    """Validate a path *inside* a dataset and return it in canonical form.

    Canonical form: components joined by ``/``, no empty, ``.`` or ``..`` components,
    no leading ``/``, no NUL, valid UTF-8 (no lone surrogates), bounded length. Names are
    otherwise kept exactly as given (instrument file names are data).
    """
    if not path:
        raise UsageError("empty path")
    if "\x00" in path:
        raise UsageError(f"path {path!r} contains a NUL character")
    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(
            f"path {path!r} is not valid UTF-8", hint="rename the file to a UTF-8 name"
        ) from None
    if len(encoded) > MAX_PATH_BYTES:
        raise UsageError(f"path is longer than {MAX_PATH_BYTES} bytes: {path[:80]!r}...")
    if path.startswith("/"):
        raise UsageError(f"path {path!r} must be relative to the dataset")
    parts = path.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise UsageError(f"path {path!r} has an empty, '.' or '..' component")
        if len(part.encode("utf-8")) > MAX_NAME_BYTES:
            raise UsageError(f"file name longer than {MAX_NAME_BYTES} bytes in {path[:80]!r}")
    return path


@dataclass(frozen=True)
class Address:
    """A parsed ``PROJECT[/DATASET[/PATH]][@VERSION]``."""

    project: str
    dataset: str | None = None
    path: str | None = None
    version: int | None = None

    def __str__(self) -> str:
        """The address as text that :func:`parse_address` reads back exactly: a path
        that itself ends in ``@`` or ``@DIGITS`` (a file ``scan@2``) at the current
        version gets a closing ``@`` (``P/D/scan@2@``)."""
        text = self.project
        if self.dataset:
            text += f"/{self.dataset}"
        if self.path:
            text += f"/{self.path}"
        if self.version is not None:
            text += f"@{self.version}"
        elif self.path and _LOOKS_VERSIONED.search(self.path):
            text += "@"
        return text

    @property
    def dataset_address(self) -> str:
        if self.dataset is None:
            raise UsageError(f"{self} names a project, not a dataset", hint="use PROJECT/DATASET")
        return f"{self.project}/{self.dataset}"


#: a path that would read as PATH@VERSION, or ends in the explicit "current" marker
_LOOKS_VERSIONED = re.compile(r"@[0-9]*\Z")


def address_text(
    project: str, dataset: str | None = None, path: str | None = None, version: int | None = None
) -> str:
    """The address of these parts, as text that :func:`parse_address` reads back as
    exactly these parts (routes use this: a path in a URL is a path, never a version)."""
    return str(Address(project, dataset, path, version))


def _check_no_bad_version(name: str, address: str) -> None:
    """``P/D@-1``, ``P/D@abc``: a name followed by something that is not a version."""
    head, at, tail = name.partition("@")
    if at and SLUG_RE.fullmatch(head):
        raise UsageError(
            f"{tail!r} in {address!r} is not a version: versions are whole numbers from 1",
            hint=f"e.g. {address.split('@', 1)[0]}@2; 'labkeep versions "
            f"{address.split('@', 1)[0]}' lists them",
        )


def parse_address(text: str, *, need_dataset: bool = False) -> Address:
    """Parse ``PROJECT[/DATASET[/PATH]][@VERSION]``.

    ``@`` is only taken as a version marker when it is followed by digits at the very
    end, so file names containing ``@`` stay addressable; a closing ``@`` with no digits
    says "the current version" explicitly, for a file whose own name ends in ``@2``:
    ``P/D/raw/scan@2@`` is the file ``raw/scan@2``, ``P/D/raw/scan@2`` its version 2.
    """
    if not text:
        raise UsageError("empty address", hint="use PROJECT or PROJECT/DATASET")
    version: int | None = None
    match = re.search(r"@([0-9]+)\Z", text)
    if match:
        digits = match.group(1)
        # (a length check first: int() refuses more than 4300 digits with a ValueError)
        if len(digits) > len(str(MAX_VERSION)) or int(digits) > MAX_VERSION:
            raise UsageError(f"no version {digits[:20]}: versions go up to {MAX_VERSION}")
        version = int(digits)
        text = text[: match.start()]
    elif text.endswith("@") and "/" in text:
        text = text[:-1]
    text = text.rstrip("/") if text.count("/") <= 1 else text
    project, _, rest = text.partition("/")
    _check_no_bad_version(project, text)
    check_slug(project, "project name")
    dataset: str | None = None
    path: str | None = None
    if rest:
        dataset, _, path_part = rest.partition("/")
        _check_no_bad_version(dataset, text)
        check_slug(dataset, "dataset name")
        if path_part:
            path = check_relpath(path_part.rstrip("/") or path_part)
    if need_dataset and dataset is None:
        raise UsageError(f"{text!r} names a project, not a dataset", hint="use PROJECT/DATASET")
    return Address(project, dataset, path, version)
