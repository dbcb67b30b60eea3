"""Unexpected exceptions at the edges: a reference id for the user, the traceback in a log.

No traceback reaches a user. The CLI writes it to ``$XDG_STATE_HOME/labkeep/errors.log``
(``~/.local/state/labkeep/errors.log``) and prints the reference; the web server logs it
to its own log (logger ``labkeep.internal``) and answers the reference. Set
``LABKEEP_DEBUG=1`` to also see the traceback on the terminal.
"""

from __future__ import annotations

import os
import secrets
import traceback
from datetime import UTC, datetime
from pathlib import Path


def new_reference() -> str:
    """A short id that ties a user's error message to its log entry."""
    return secrets.token_hex(4)


def log_file() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "labkeep" / "errors.log"


def format_incident(exc: BaseException, reference: str) -> str:
    when = datetime.now(UTC).isoformat(timespec="seconds")
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
    return f"--- {when} reference {reference}\n" + "".join(lines)


def record_to_file(exc: BaseException, reference: str) -> Path | None:
    """Append the traceback to the user's error log; None when that is not possible."""
    path = log_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8", errors="backslashreplace") as handle:
            handle.write(format_incident(exc, reference))
    except OSError:
        return None
    return path


def debug_enabled() -> bool:
    return os.environ.get("LABKEEP_DEBUG", "") not in ("", "0")
