"""Logging for the web server: secrets never reach the access log.

Share links carry their secret in the URL (``/s/lks_...``): uvicorn's access log would
write it for anyone who can read the log. :class:`RedactSecrets` rewrites access-log
records before they are formatted; :func:`log_config` is uvicorn's logging configuration
with it installed (passed to every worker process).
"""

from __future__ import annotations

import copy
import logging
import re
from typing import Any

_SECRETS = [
    (re.compile(r"(/s/lks_)[A-Za-z0-9_-]+"), r"\1…"),
    (re.compile(r"\b((?:token|csrf_token|password|secret)=)[^&\s]*", re.IGNORECASE), r"\1…"),
]


def redact(text: str) -> str:
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class RedactSecrets(logging.Filter):
    """Removes share tokens (and secret-looking query values) from log records."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


def log_config() -> dict[str, Any]:
    """uvicorn's default logging configuration, with :class:`RedactSecrets` on its
    handlers."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact"] = {"()": "labkeep.web.logs.RedactSecrets"}
    for handler in config.get("handlers", {}).values():
        handler.setdefault("filters", []).append("redact")
    return config
