"""The one exception hierarchy of labkeep.

Every error a user can meet is a :class:`LabkeepError` subclass carrying a message meant
for people, an exit code for the CLI and an HTTP status for the web server. Front ends
translate them at their edge and nowhere else.
"""

from __future__ import annotations


class LabkeepError(Exception):
    """Root of every error labkeep raises on purpose."""

    exit_code: int = 2
    http_status: int = 400
    #: short machine-readable name, stable across releases (used in --json output)
    code: str = "error"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n{self.hint}"

    def as_record(self) -> dict[str, object]:
        record: dict[str, object] = {"status": "error", "error": self.code, "message": self.message}
        if self.hint:
            record["hint"] = self.hint
        return record


class UsageError(LabkeepError, ValueError):
    """The request itself is malformed (bad name, bad address, bad option)."""

    code = "usage"


class KeepNotFound(LabkeepError, FileNotFoundError):
    """No keep at the given place."""

    code = "no-keep"
    http_status = 500


class KeepExists(LabkeepError, FileExistsError):
    code = "keep-exists"


class NotFound(LabkeepError, LookupError):
    """A project, dataset, version or path that does not exist."""

    code = "not-found"
    http_status = 404


class AlreadyExists(LabkeepError):
    code = "exists"
    http_status = 409


class SourceError(LabkeepError, OSError):
    """The ingest source cannot be used (missing, unreadable, inside the keep)."""

    code = "bad-source"


class SealedError(LabkeepError, PermissionError):
    """A write to a sealed dataset was refused."""

    code = "sealed"
    http_status = 409


class Busy(LabkeepError):
    """Another process holds the lock this operation needs."""

    code = "busy"
    http_status = 409


class StorageError(LabkeepError, OSError):
    """A store could not be written (full disk, read-only mount, I/O error)."""

    code = "storage"
    http_status = 500


class CatalogError(LabkeepError):
    """The catalog cannot be opened or is at an unexpected schema version."""

    code = "catalog"
    exit_code = 3
    http_status = 500


class ConfigError(LabkeepError):
    code = "config"


class Forbidden(LabkeepError, PermissionError):
    """The principal may see the resource but not do this to it."""

    code = "forbidden"
    http_status = 403


class AuthenticationFailed(LabkeepError, PermissionError):
    """Wrong password, unknown or disabled account, expired or revoked token or link.

    One message for all of them, so that nobody learns which accounts exist.
    """

    code = "unauthenticated"
    http_status = 401


class TooManyAttempts(LabkeepError):
    """Sign-ins are slowed down after failures (never locked out for good)."""

    code = "too-many-attempts"
    http_status = 429

    def __init__(self, message: str, *, retry_after: int, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.retry_after = retry_after


class IntegrityError(LabkeepError):
    """Content does not match its recorded SHA-256."""

    code = "integrity"
    exit_code = 1
    http_status = 500


class SealInterrupted(SealedError):
    """A seal of the dataset was started and not finished: raw/ may be half protected."""

    code = "seal-interrupted"
