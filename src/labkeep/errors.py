"""The one exception hierarchy of labkeep.

Every error a user can meet is a :class:`LabkeepError` subclass carrying a message meant
for people, an exit code for the CLI and an HTTP status for the web server. Front ends
translate them at their edge and nowhere else.

Exit codes of the ``labkeep`` command (documented in the README):

====  ==========================================================================
0     all done
1     problems found: verify found damage, some files could not be ingested, a
      drop was refused because too few verified copies would remain
2     usage or input error: bad name or option, missing source, sealed target,
      no such project/dataset, not allowed, wrong password
3     environment: the catalog, a disk, a store or the server is unreachable or
      full, or the keep's configuration is broken; nothing was lost, run the same
      command again once it is fixed
4     busy: another process holds what this one needs; try again later
70    internal error: a bug in labkeep (logged with a reference id)
130   interrupted (Ctrl-C); run the same command again to resume
====  ==========================================================================
"""

from __future__ import annotations

#: exit codes (see the module docstring)
EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2
EXIT_ENVIRONMENT = 3
EXIT_BUSY = 4
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130


class LabkeepError(Exception):
    """Root of every error labkeep raises on purpose."""

    exit_code: int = EXIT_USAGE
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


class EnvironmentFailure(LabkeepError):
    """Something labkeep depends on broke: a database, a disk, a store, a server.

    Not the user's input and not a finding about their data: exit code 3, HTTP 503
    unless a subclass says otherwise. Whatever was done before it is kept.
    """

    code = "environment"
    exit_code = EXIT_ENVIRONMENT
    http_status = 503


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
    exit_code = EXIT_BUSY
    http_status = 409


class StorageError(EnvironmentFailure, OSError):
    """A store could not be written (full disk, read-only mount, I/O error)."""

    code = "storage"
    http_status = 507


class CatalogError(EnvironmentFailure):
    """The catalog cannot be opened or is at an unexpected schema version."""

    code = "catalog"
    http_status = 503


class CatalogUnavailable(CatalogError):
    """The catalog database cannot be reached (server down, network, file unreadable)."""

    code = "catalog-unavailable"


class CatalogFull(CatalogError):
    """The catalog's database has no room left (its disk is full)."""

    code = "catalog-full"
    http_status = 507


class CatalogBusy(Busy):
    """The catalog stayed locked by another writer for longer than we wait."""

    code = "catalog-busy"
    http_status = 503


class NameUnavailable(LabkeepError):
    """A new project or dataset cannot take this name: it is reserved, or something the
    caller may not see already has it. Both get the same answer, so that nobody learns of
    hidden projects by trying names."""

    code = "name-unavailable"
    http_status = 409


class Conflict(LabkeepError):
    """A change collided with another one made at the same moment: run it again."""

    code = "conflict"
    exit_code = EXIT_BUSY
    http_status = 409


class ConfigError(EnvironmentFailure):
    code = "config"
    http_status = 500


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
    exit_code = EXIT_PROBLEMS
    http_status = 500


class TooLarge(LabkeepError):
    """A request or upload is larger than this server accepts."""

    code = "too-large"
    http_status = 413


class ServerUnreachable(EnvironmentFailure):
    """The labkeep server of ``labkeep login`` cannot be reached."""

    code = "server-unreachable"


class InternalError(LabkeepError):
    """A bug: an exception nobody expected. Users see a reference id, the log the rest."""

    code = "internal"
    exit_code = EXIT_INTERNAL
    http_status = 500

    def __init__(self, reference: str, *, where: str | None = None) -> None:
        hint = (
            f"this is a bug in labkeep; the details are in {where} under reference {reference}"
            if where
            else f"this is a bug in labkeep; the server log has the details under {reference}"
        )
        super().__init__(f"internal error (reference {reference})", hint=hint)
        self.reference = reference

    def as_record(self) -> dict[str, object]:
        return {**super().as_record(), "reference": self.reference}


def from_os_error(exc: OSError, doing: str | None = None) -> LabkeepError:
    """A typed error for an OSError nobody handled where it happened.

    Full disks, read-only mounts, permissions and I/O errors are the environment's
    problem (exit 3); a missing file named by the user is an input error.
    """
    import errno

    where = f" ({exc.filename})" if exc.filename else ""
    what = f"cannot {doing}: " if doing else ""
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageError(
            f"{what}no space left on the device{where}",
            hint="free some space (or raise the quota), then run the same command again: "
            "nothing that was done is lost",
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return StorageError(
            f"{what}{reason}{where}",
            hint="check the permissions and mount of that path (is it read-only or immutable?)",
        )
    if exc.errno == errno.ENOENT:
        return NotFound(f"{what}{reason}{where}")
    return StorageError(f"{what}{reason}{where}", hint="check the disk and the path, then retry")


class SealInterrupted(SealedError):
    """A seal of the dataset was started and not finished: raw/ may be half protected."""

    code = "seal-interrupted"


class StoreUnavailable(EnvironmentFailure):
    """A store (a backup folder, an S3 endpoint) cannot be reached or used: unreachable,
    wrong credentials, a missing bucket. Nothing was recorded that did not happen."""

    code = "store-unavailable"


class TransferCorrupted(StorageError):
    """Bytes that arrived in a store (or were read back from it) do not hash to the
    expected SHA-256: nothing was stored under the key, nothing counted as a copy."""

    code = "checksum-mismatch"


class RetentionLocked(SealedError):
    """The content is under WORM retention (Object Lock) in a store: it cannot be deleted
    or changed before its retain-until date, by anyone."""

    code = "retention"


class BelowPolicy(LabkeepError):
    """Refused: fewer verified copies than the policy's minimum would remain (exit 1, as
    when a drop refuses single files: the keep is fine, the copies are not there yet)."""

    code = "below-min-copies"
    exit_code = EXIT_PROBLEMS
    http_status = 409


class SchedulerUnavailable(EnvironmentFailure):
    """The batch scheduler (SLURM) cannot be used from here: its commands are not
    installed, it has no configuration, or its controller does not answer. Nothing was
    submitted or cancelled."""

    code = "scheduler-unavailable"


class ContainerEngineUnavailable(EnvironmentFailure):
    """No container engine (Apptainer/Singularity, Docker, Podman) that can run the image is
    installed, or the one installed does not answer (a Docker client without its daemon)."""

    code = "container-engine"


class ContainerImageNotFound(NotFound):
    """The container engine does not know the image (not pulled, misspelt, no such file)."""

    code = "container-image"


class MetadataInvalid(UsageError):
    """Metadata that does not pass labkeep's field checks or the DataCite schema: every
    problem is listed, each naming its field; nothing was stored."""

    code = "metadata-invalid"

    def __init__(self, target: str, problems: list[str]) -> None:
        shown = problems[:20]
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        super().__init__(
            f"the metadata of {target} was not saved: {len(problems)} problem"
            f"{'s' if len(problems) != 1 else ''}\n  " + "\n  ".join(shown) + more,
            hint="fix the fields named above and save again ('labkeep meta edit')",
        )
        self.problems = problems

    def as_record(self) -> dict[str, object]:
        record = super().as_record()
        record["problems"] = self.problems
        return record
