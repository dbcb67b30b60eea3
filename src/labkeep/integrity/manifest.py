"""``MANIFEST.sha256``: the exact text format of GNU coreutils ``sha256sum``.

A line is ``<64 lowercase hex>  <path>\\n`` (two spaces: text mode, as sha256sum writes
it). When the path contains a backslash, a newline or a carriage return, coreutils
escapes them as ``\\\\``, ``\\n`` and ``\\r`` and starts the line with a single
backslash; ``sha256sum -c`` undoes this. Lines are sorted by the UTF-8 bytes of the
path so that the file is deterministic and diffs well.

:func:`format_lines` writes a manifest from entries that arrive already sorted (the
catalog streams them in byte order), so a manifest of ten million files never has to
be held in memory; :func:`format_manifest` sorts small inputs itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from labkeep.errors import UsageError

MANIFEST_NAME = "MANIFEST.sha256"
_HEX_RE = re.compile(r"^[0-9a-f]{64}$")
_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r"}
_UNESCAPES = {"\\": "\\", "n": "\n", "r": "\r"}


def format_line(sha256_hex: str, path: str) -> str:
    """One manifest line (with its trailing newline) for *path*."""
    if not _HEX_RE.match(sha256_hex):
        raise ValueError(f"not a SHA-256 hex digest: {sha256_hex!r}")
    if any(ch in path for ch in _ESCAPES):
        escaped = "".join(_ESCAPES.get(ch, ch) for ch in path)
        return f"\\{sha256_hex}  {escaped}\n"
    return f"{sha256_hex}  {path}\n"


def sort_key(path: str) -> bytes:
    return path.encode("utf-8", "surrogateescape")


class OutOfOrder(ValueError):
    """Entries given to :func:`format_lines` were not in strictly ascending byte order."""


def format_lines(entries: Iterable[tuple[str, str]]) -> Iterator[str]:
    """Manifest lines for ``(path, sha256_hex)`` pairs that are already sorted by path bytes.

    Checks the order as the lines go (a wrong collation in a database would otherwise
    write a manifest that differs from the one the catalog's hash describes) and raises
    :class:`OutOfOrder` at the first path that is not greater than the one before.
    """
    previous: bytes | None = None
    for path, digest in entries:
        key = sort_key(path)
        if previous is not None and key <= previous:
            raise OutOfOrder(f"manifest entries out of byte order at {path!r}")
        previous = key
        yield format_line(digest, path)


def format_manifest(entries: Iterable[tuple[str, str]]) -> str:
    """The whole manifest for ``(path, sha256_hex)`` pairs, sorted by path bytes."""
    return "".join(
        format_line(digest, path) for path, digest in sorted(entries, key=lambda e: sort_key(e[0]))
    )


def _unescape(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            if i + 1 >= len(text) or text[i + 1] not in _UNESCAPES:
                raise UsageError(f"invalid escape in manifest path {text!r}")
            out.append(_UNESCAPES[text[i + 1]])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def parse_manifest(text: str) -> Iterator[tuple[str, str]]:
    """Yield ``(path, sha256_hex)`` from manifest text (text or binary mode lines)."""
    for number, line in enumerate(text.split("\n"), start=1):
        if not line:
            continue
        escaped = line.startswith("\\")
        body = line[1:] if escaped else line
        digest, sep, rest = body[:64], body[64:66], body[66:]
        if not _HEX_RE.match(digest.lower()) or sep not in ("  ", " *"):
            raise UsageError(f"line {number} of the manifest is not in sha256sum format")
        yield (_unescape(rest) if escaped else rest), digest.lower()
