"""The ``s3`` store: content in a bucket of any S3-compatible server (AWS, SeaweedFS, ...).

Layout (docs/formats.md): the object of a content is ``<prefix>ab/cd/<sha256 hex>``, and
carries its full SHA-256 as user metadata ``sha256`` (hex), since a multipart upload's
own checksum is a checksum of part checksums.

A put is verified twice: the server refuses a body that does not hash to the
``ChecksumSHA256`` sent with it (BadDigest: nothing stored), and a multipart upload,
whose parts the server checks one by one, is hashed whole while it is sent and aborted,
never completed, when it is not the expected content. Memory holds one part at most.
Transient failures (connection reset, timeout, 5xx) are retried by botocore per request
and, above that, by restarting the whole put from its source, up to ``max_attempts``:
keys are content-addressed, so a put is idempotent (a restart first looks whether the
content already arrived). A stream cannot be restarted: a multipart put of a stream
retries each request (the part is in memory) instead.

With ``lock_mode`` set, every object is written under Object Lock retention until the
put's ``retain_until`` (or now + ``retention_days``); a no-op put of content already
held extends a shorter retention. :meth:`S3Store.delete` removes every version of a key
and refuses, deleting nothing, while one is under retention or legal hold.

Credentials never come from the catalog: ``profile`` names a section of an AWS shared
credentials file (``credentials_file``, else boto3's default), otherwise boto3's own
chain (environment variables, ...) applies.

Errors: every boto3/botocore exception is translated here, at this module's edge, into
labkeep's typed errors naming the store, its bucket and endpoint (``StoreUnavailable``
for an unreachable endpoint, refused credentials or a missing bucket). boto3 is the
``labkeep[s3]`` extra, imported when an S3 store is opened.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import functools
import hashlib
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any, TypeVar, cast

from labkeep.errors import (
    AlreadyExists,
    ConfigError,
    LabkeepError,
    NotFound,
    RetentionLocked,
    StorageError,
    StoreUnavailable,
    TransferCorrupted,
    UsageError,
    from_os_error,
)
from labkeep.storage._s3io import Body, Progress, RangeReader, file_parts, stream_parts
from labkeep.storage.base import Capabilities, ContentStore, Health, OnBytes, Stored

T = TypeVar("T")
MiB = 1 << 20
#: S3's smallest part (all but the last) and most parts of a multipart upload
MIN_PART = 5 * MiB
MAX_PARTS = 10_000
LOCK_MODES = ("GOVERNANCE", "COMPLIANCE")

_CREDENTIAL_CODES = {
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken",
    "ExpiredToken", "TokenRefreshRequired", "AuthorizationHeaderMalformed", "403",
}  # fmt: skip
_DIGEST_CODES = {"BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch", "InvalidChecksum"}
_TRANSIENT_CODES = {
    "RequestTimeout", "SlowDown", "InternalError", "ServiceUnavailable", "Throttling",
    "ThrottlingException", "IncompleteBody", "RequestTimeoutException",
}  # fmt: skip
_NO_LOCK_CODES = {"ObjectLockConfigurationNotFoundError", "NotImplemented", "404", "NoSuchKey"}


def _botocore_exceptions() -> ModuleType:
    try:
        import boto3  # noqa: F401 (fails here, with the hint, when the extra is missing)
        from botocore import exceptions
    except ImportError as exc:
        raise ConfigError(
            "S3 stores need boto3, which is not installed",
            hint="install labkeep's s3 extra: pip install 'labkeep[s3]'",
        ) from exc
    return cast(ModuleType, exceptions)


@functools.cache
def _raw_errors() -> tuple[type[BaseException], ...]:
    """What boto3 may raise: botocore's errors and urllib3's (a body read mid-stream)."""
    from botocore.exceptions import BotoCoreError, ClientError
    from urllib3.exceptions import HTTPError

    return (BotoCoreError, ClientError, HTTPError)


def _error_of(exc: BaseException) -> tuple[str, int]:
    """(code, HTTP status) of a botocore ClientError; ('', 0) for anything else."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return "", 0
    code = str(response.get("Error", {}).get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code, status


def _no_handshake_for_small(request: Any, **_: Any) -> None:
    """botocore asks for ``Expect: 100-continue`` on every put with a body (it wraps
    even bytes in a file object), and then waits a round trip for the server's go-ahead
    before sending anything: for a small object that doubles the round trips. A body of
    at most SMALL_BODY bytes is sent at once (``Expect`` is not a signed header)."""
    try:
        size = int(request.headers.get("Content-Length", SMALL_BODY + 1))
    except (TypeError, ValueError):
        return None
    if size <= SMALL_BODY and "Expect" in request.headers:
        del request.headers["Expect"]
    return None  # (a value returned here would be taken as the answer)


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def _naive_utc(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    if value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


def _sha_of_name(key: str) -> bytes | None:
    name = key.rsplit("/", 1)[-1]
    if len(name) != 64:
        return None
    try:
        return bytes.fromhex(name)
    except ValueError:
        return None


def _recorded_sha(head: dict[str, Any]) -> bytes | None:
    """The full SHA-256: our metadata, else the server's checksum of a single-part put."""
    meta = head.get("Metadata") or {}
    with contextlib.suppress(ValueError, TypeError):
        value = bytes.fromhex(str(meta.get("sha256", "")))
        if len(value) == 32:
            return value
    checksum = head.get("ChecksumSHA256")
    if (
        isinstance(checksum, str)
        and "-" not in checksum
        and head.get("ChecksumType") != "COMPOSITE"
    ):
        with contextlib.suppress(ValueError):
            value = base64.b64decode(checksum, validate=True)
            if len(value) == 32:
                return value
    return None


#: bodies up to this size are sent without the "Expect: 100-continue" handshake
SMALL_BODY = 1 << 20


class S3Store(ContentStore):
    kind = "s3"

    def __init__(
        self,
        name: str,
        *,
        bucket: str,
        endpoint: str | None = None,
        prefix: str = "",
        region: str = "us-east-1",
        profile: str | None = None,
        credentials_file: str | os.PathLike[str] | None = None,
        lock_mode: str | None = None,
        retention_days: int | None = None,
        storage_class: str | None = None,
        part_size: int = 64 * MiB,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        max_attempts: int = 5,
        retry_backoff: float = 0.5,
    ) -> None:
        """*retry_backoff*: seconds before the first restart of a failed put (doubling)."""
        super().__init__(name)
        if lock_mode is not None and lock_mode not in LOCK_MODES:
            raise UsageError(f"{self.describe()}: lock mode must be GOVERNANCE or COMPLIANCE")
        if retention_days is not None and (lock_mode is None or retention_days < 1):
            raise UsageError(f"{self.describe()}: retention days need a lock mode and be >= 1")
        if part_size < MIN_PART:
            raise UsageError(f"{self.describe()}: part size must be at least 5 MiB (S3's minimum)")
        if max_attempts < 1:
            raise UsageError(f"{self.describe()}: max attempts must be at least 1")
        self.bucket = bucket
        self.endpoint = endpoint
        self.prefix = prefix.lstrip("/")
        if self.prefix and not self.prefix.endswith("/"):
            self.prefix += "/"
        self.region = region
        self.profile = profile
        self.credentials_file = os.fspath(credentials_file) if credentials_file else None
        self.lock_mode = lock_mode
        self.retention_days = retention_days
        self.storage_class = storage_class
        self.part_size = part_size
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_attempts = max_attempts
        self.retry_backoff = retry_backoff
        self.capabilities = Capabilities(
            content_addressed=True, server_checksum=True, supports_object_lock=lock_mode is not None
        )
        self._bx = _botocore_exceptions()
        self._s3: Any = None
        self._lock = threading.Lock()
        self._bucket_seen = False

    # -- the client and the error edge ----------------------------------------------------
    def _client(self) -> Any:
        if self._s3 is None:
            with self._lock:
                if self._s3 is None:
                    self._s3 = self._make_client()
        return self._s3

    def _make_client(self) -> Any:
        import boto3
        import botocore.session
        from botocore.config import Config

        core = botocore.session.Session()
        if self.credentials_file:
            core.set_config_variable("credentials_file", self.credentials_file)
        session = boto3.Session(botocore_session=core, profile_name=self.profile)
        config = Config(
            region_name=self.region,
            # payload_signing_enabled=False: the body is not hashed a second time for the
            # signature (ChecksumSHA256, which the server checks, protects it)
            s3={"addressing_style": "path", "payload_signing_enabled": False},
            retries={"mode": "standard", "total_max_attempts": min(3, self.max_attempts)},
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        try:
            client = session.client("s3", endpoint_url=self.endpoint, config=config)
        except ValueError as exc:  # botocore: "Invalid endpoint: ..."
            raise StoreUnavailable(
                f"{self.describe()}: {exc}",
                hint="give the endpoint as http(s)://HOST[:PORT] "
                f"('labkeep store remove {self.name}', then add it again)",
            ) from None
        client.meta.events.register("before-send.s3.PutObject", _no_handshake_for_small)
        return client

    def close(self) -> None:
        client, self._s3 = self._s3, None
        if client is not None:
            client.close()

    def _where(self) -> str:
        return f"{self.describe()} (bucket {self.bucket!r} at {self._endpoint()})"

    def _endpoint(self) -> str:
        return self.endpoint or f"AWS S3, {self.region}"

    def _full(self, key: str) -> str:
        if not key or key.startswith("/"):
            raise NotFound(f"{key!r} is not a key of {self.describe()}")
        return self.prefix + key

    def _transient(self, exc: BaseException) -> bool:
        bx = self._bx
        if isinstance(exc, bx.ClientError):
            code, status = _error_of(exc)
            return code in _TRANSIENT_CODES or status >= 500
        from urllib3.exceptions import HTTPError

        transient = (bx.ConnectionError, bx.HTTPClientError, bx.IncompleteReadError, HTTPError)
        return isinstance(exc, transient)

    def _translate(
        self, exc: BaseException, doing: str, *, key: str | None = None, attempts: int = 1
    ) -> Exception:
        """The typed error for an exception of boto3 (anything else is returned as is)."""
        bx = self._bx
        if isinstance(exc, LabkeepError) or not isinstance(exc, _raw_errors()):
            return exc if isinstance(exc, Exception) else RuntimeError(str(exc))
        where = self._where()
        tries = f" (after {attempts} attempts)" if attempts > 1 else ""
        if isinstance(exc, bx.ClientError):
            code, status = _error_of(exc)
            text = str(exc.response.get("Error", {}).get("Message") or code)
            if code in _DIGEST_CODES:
                return TransferCorrupted(
                    f"{where}: the server refused the bytes while {doing}: they do not hash "
                    f"to the expected SHA-256 ({code}); nothing was stored",
                    hint="the source changed or is damaged, or the transfer was: verify the "
                    "source, then try again",
                )
            if code in ("NoSuchKey", "NoSuchVersion"):
                return NotFound(f"{self.describe()} does not hold {key or 'it'} ({doing})")
            if code == "NoSuchBucket" or status == 404:
                return StoreUnavailable(
                    f"{where}: the bucket does not exist (while {doing})",
                    hint="check the store's bucket name, or create the bucket (labkeep "
                    "store add --create-bucket), then run the same command again",
                )
            if code in _CREDENTIAL_CODES or status == 403:
                return StoreUnavailable(
                    f"{where}: the server refused the credentials ({code}) while {doing}",
                    hint=self._credentials_hint(),
                )
            if code in _TRANSIENT_CODES or status >= 500:
                return StoreUnavailable(
                    f"{where}: the server failed ({code}: {text}) while {doing}{tries}",
                    hint="run the same command again later; if it persists, look at the "
                    "server's logs. Nothing was recorded that did not happen",
                )
            return StorageError(
                f"{where}: the server refused {doing}: {code}: {text}",
                hint="check the store's settings (bucket, lock mode, storage class) "
                "against what the server supports",
            )
        if isinstance(exc, (bx.NoCredentialsError, bx.PartialCredentialsError, bx.ProfileNotFound,
                            bx.CredentialRetrievalError)):  # fmt: skip
            return StoreUnavailable(
                f"{where}: no usable credentials ({exc})", hint=self._credentials_hint()
            )
        if self._transient(exc):
            return StoreUnavailable(
                f"{where}: cannot reach the server while {doing}{tries}: {exc}",
                hint=f"check that the server runs, the network, and the endpoint "
                f"({self._endpoint()}); then run the same command again: what was stored "
                "is kept",
            )
        return StorageError(
            f"{where}: {exc} while {doing}", hint="check the store's settings, then try again"
        )

    def _credentials_hint(self) -> str:
        if self.profile:
            where = self.credentials_file or "~/.aws/credentials (or AWS_SHARED_CREDENTIALS_FILE)"
            return f"check the access key and secret of profile [{self.profile}] in {where}"
        return (
            "give the store a profile of an AWS credentials file, or set "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, and check them"
        )

    def _retrying(
        self, doing: str, attempt: Callable[[], T], *, attempts: int | None = None, key: str = ""
    ) -> T:
        """*attempt()*, again after a transient failure; typed errors out."""
        attempts = attempts or self.max_attempts
        for number in range(1, attempts + 1):
            try:
                return attempt()
            except LabkeepError:
                raise
            except _raw_errors() as exc:
                if number >= attempts or not self._transient(exc):
                    error = self._translate(exc, doing, key=key or None, attempts=number)
                    raise error from exc
                delay = min(10.0, self.retry_backoff * 2 ** (number - 1))
                time.sleep(delay * random.uniform(0.5, 1.0))  # noqa: S311 (jitter)
        raise AssertionError("unreachable")

    # -- writing --------------------------------------------------------------------------
    def _part_size(self, size: int) -> int:
        if size <= self.part_size * MAX_PARTS:
            return self.part_size
        need = -(-size // MAX_PARTS)  # the smallest part that fits in MAX_PARTS parts
        return -(-need // MiB) * MiB

    def _until(self, retain_until: datetime | None) -> datetime | None:
        """When a put's retention ends (aware UTC), or None for no retention."""
        if self.lock_mode is None:
            return None
        if retain_until is not None:
            if retain_until.tzinfo is None:
                return retain_until.replace(tzinfo=UTC)
            return retain_until.astimezone(UTC)
        if self.retention_days:
            return datetime.now(UTC) + timedelta(days=self.retention_days)
        return None

    def put_file(
        self,
        key: str,
        path: str,
        *,
        sha256: bytes,
        size: int,
        on_bytes: OnBytes = None,
        retain_until: datetime | None = None,
        absent: bool = False,
    ) -> Stored:
        progress = Progress(on_bytes)
        until = self._until(retain_until)
        where = f"{self.describe()}, storing {key} from {path}"

        skip = [absent]  # the first attempt may skip looking; a retry (which may follow a
        # put whose answer was lost) always looks

        def attempt() -> Stored:
            if skip[0]:
                skip[0] = False
            else:
                existing = self._existing(key, sha256, size, until)
                if existing is not None:
                    return existing
            try:
                handle = open(path, "rb", buffering=0)  # noqa: SIM115 (closed below)
            except FileNotFoundError:
                raise NotFound(f"{path} is gone: nothing to copy from it") from None
            except OSError as exc:
                raise from_os_error(exc, f"read {path}") from exc
            with handle:
                parts = file_parts(handle, size, self._part_size(size), where)
                return self._upload(key, parts, sha256, size, progress, until, retry_calls=False)

        return self._retrying(f"storing {key}", attempt, key=key)

    def put_stream(
        self,
        key: str,
        chunks: Iterable[bytes],
        *,
        sha256: bytes,
        size: int,
        on_bytes: OnBytes = None,
        retain_until: datetime | None = None,
        absent: bool = False,
    ) -> Stored:
        progress = Progress(on_bytes)
        until = self._until(retain_until)
        doing = f"storing {key}"
        if not absent:
            existing = self._retrying(doing, lambda: self._existing(key, sha256, size, until))
            if existing is not None:
                return existing
        part_size = self._part_size(size)
        parts = stream_parts(chunks, size, part_size, f"{self.describe()}, storing {key}")
        if size <= part_size:  # all in memory: the whole put can be restarted
            data = next(parts)
            return self._retrying(
                doing,
                lambda: self._upload(key, iter([data]), sha256, size, progress, until, False),
                key=key,
            )
        return self._retrying(
            doing,
            lambda: self._upload(key, parts, sha256, size, progress, until, retry_calls=True),
            attempts=1,
            key=key,
        )

    def _existing(
        self, key: str, sha256: bytes, size: int, until: datetime | None
    ) -> Stored | None:
        """What is stored when it is this content (retention extended to *until*)."""
        held = self._head(key)
        if held is None or held.size != size or held.sha256 != sha256:
            return None
        naive = _naive_utc(until)
        if naive is not None and (held.retain_until is None or held.retain_until < naive):
            mode = held.lock_mode or self.lock_mode
            args: dict[str, Any] = {"Bucket": self.bucket, "Key": self._full(key)}
            if held.extra.get("version_id"):
                args["VersionId"] = held.extra["version_id"]
            self._client().put_object_retention(
                **args, Retention={"Mode": mode, "RetainUntilDate": until}
            )
            held = dataclasses.replace(held, retain_until=naive, lock_mode=mode)
        return held

    def _put_args(self, sha256: bytes, until: datetime | None) -> dict[str, Any]:
        args: dict[str, Any] = {
            "Bucket": self.bucket,
            "ChecksumAlgorithm": "SHA256",
            "Metadata": {"sha256": sha256.hex()},
        }
        if self.storage_class:
            args["StorageClass"] = self.storage_class
        if until is not None and self.lock_mode:
            args["ObjectLockMode"] = self.lock_mode
            args["ObjectLockRetainUntilDate"] = until
        return args

    def _upload(
        self,
        key: str,
        parts: Iterator[memoryview],
        sha256: bytes,
        size: int,
        progress: Progress,
        until: datetime | None,
        retry_calls: bool,
    ) -> Stored:
        """One put of *parts* (raw boto3 errors out, unless *retry_calls*)."""
        client = self._client()
        full = self._full(key)
        args = self._put_args(sha256, until)
        doing = f"storing {key}"

        def call(request: Callable[[], Any]) -> Any:
            return self._retrying(doing, request, key=key) if retry_calls else request()

        def stored(answer: Any) -> Stored:
            return Stored(
                key,
                size,
                sha256,
                retain_until=_naive_utc(until),
                lock_mode=self.lock_mode if until is not None else None,
                storage_class=self.storage_class or "STANDARD",
                extra={"version_id": str(answer.get("VersionId") or "")},
            )

        if size <= self._part_size(size):
            data = next(parts)
            # A small body goes as bytes: botocore sends "Expect: 100-continue" with any
            # file-like body and waits for the server's go-ahead before sending it, a
            # round trip per put. Larger ones keep the handshake (an error answer comes
            # before megabytes are sent) and report progress as their bytes leave.
            small = len(data) <= SMALL_BODY
            body: Any = data.tobytes() if small else Body(data, progress, 0)
            request = functools.partial(
                client.put_object, Key=full, Body=body,
                ContentLength=len(data), ChecksumSHA256=_b64(sha256), **args,
            )  # fmt: skip
            answer = call(request)
            if small:
                progress.reached(len(data))
            return stored(answer)

        upload_id = str(
            call(functools.partial(client.create_multipart_upload, Key=full, **args))["UploadId"]
        )
        try:
            whole = hashlib.sha256()
            sent = 0
            done: list[dict[str, Any]] = []
            for number, data in enumerate(parts, start=1):
                whole.update(data)
                checksum = _b64(hashlib.sha256(data).digest())
                request = functools.partial(
                    client.upload_part, Bucket=self.bucket, Key=full, UploadId=upload_id,
                    PartNumber=number, Body=Body(data, progress, sent), ContentLength=len(data),
                    ChecksumAlgorithm="SHA256", ChecksumSHA256=checksum,
                )  # fmt: skip
                answer = call(request)
                done.append(
                    {"PartNumber": number, "ETag": answer["ETag"], "ChecksumSHA256": checksum}
                )
                sent += len(data)
            if sent != size or whole.digest() != sha256:
                raise TransferCorrupted(
                    f"{self._where()}: the {sent} bytes sent for {key} (SHA-256 "
                    f"{whole.hexdigest()[:12]}…) are not the expected content ({size} bytes, "
                    f"{sha256.hex()[:12]}…): the upload was aborted, nothing was stored",
                    hint="the source changed or is damaged: verify it, then try again",
                )
            complete = functools.partial(
                client.complete_multipart_upload, Bucket=self.bucket, Key=full,
                UploadId=upload_id, MultipartUpload={"Parts": done},
            )  # fmt: skip
            try:
                answer = call(complete)
            except self._bx.ClientError as exc:
                # a completion whose answer was lost, then retried: it is there already
                held = self._head(key) if _error_of(exc)[0] == "NoSuchUpload" else None
                if held is None or held.sha256 != sha256 or held.size != size:
                    raise
                return held
        except BaseException:
            self._abort(full, upload_id)
            raise
        return stored(answer)

    def _abort(self, full: str, upload_id: str) -> None:
        """Abort a multipart upload (its parts are dropped); best effort."""
        with contextlib.suppress(*_raw_errors()):
            self._client().abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload_id)

    # -- reading --------------------------------------------------------------------------
    def _head(self, key: str) -> Stored | None:
        """HeadObject (raw errors out); None when the key is not held."""
        try:
            head = self._client().head_object(
                Bucket=self.bucket, Key=self._full(key), ChecksumMode="ENABLED"
            )
        except self._bx.ClientError as exc:
            code, status = _error_of(exc)
            if status != 404 and code not in ("NoSuchKey", "NotFound", "404"):
                raise
            if not self._bucket_seen:  # a missing bucket answers 404 too
                self._client().head_bucket(Bucket=self.bucket)
                self._bucket_seen = True
            return None
        extra = {
            name: str(head[field])
            for name, field in (("version_id", "VersionId"), ("etag", "ETag"),
                                ("legal_hold", "ObjectLockLegalHoldStatus"))
            if head.get(field)
        }  # fmt: skip
        return Stored(
            key,
            int(head["ContentLength"]),
            _recorded_sha(head),
            retain_until=_naive_utc(head.get("ObjectLockRetainUntilDate")),
            lock_mode=head.get("ObjectLockMode"),
            storage_class=head.get("StorageClass") or "STANDARD",
            extra=extra,
        )

    def stat(self, key: str) -> Stored | None:
        return self._retrying(f"looking up {key}", lambda: self._head(key), attempts=1, key=key)

    def open(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        full = self._full(key)
        doing = f"reading {key}"
        if end is not None and end <= start:
            if self.stat(key) is None:
                raise NotFound(f"{self.describe()} does not hold {key}")
            return iter(())

        def get(first: int, last: int | None, etag: str | None) -> tuple[Any, str | None]:
            args: dict[str, Any] = {"Bucket": self.bucket, "Key": full}
            if first or last is not None:
                args["Range"] = f"bytes={first}-{'' if last is None else last}"
            if etag:
                args["IfMatch"] = etag

            def request() -> tuple[Any, str | None]:
                try:
                    answer = self._client().get_object(**args)
                except self._bx.ClientError as exc:
                    if _error_of(exc)[0] != "InvalidRange":
                        raise
                    return _Empty(), etag  # starts at or past the end
                return answer["Body"], answer.get("ETag")

            return self._retrying(doing, request, key=key)

        return RangeReader(
            get,
            start,
            end,
            attempts=self.max_attempts,
            resumable=self._transient,
            translate=lambda exc: self._translate(exc, doing, key=key),
        )

    def list(self, prefix: str = "") -> Iterator[Stored]:
        doing = f"listing {prefix or 'the bucket'}"
        pages: Iterator[dict[str, Any]] = self._retrying(
            doing,
            lambda: iter(
                self._client()
                .get_paginator("list_objects_v2")
                .paginate(Bucket=self.bucket, Prefix=self.prefix + prefix)
            ),
            attempts=1,
        )
        cut = len(self.prefix)
        while True:
            page = self._retrying(doing, lambda: next(pages, None), attempts=1)
            if page is None:
                return
            for item in page.get("Contents", ()):
                key = str(item["Key"])[cut:]
                yield Stored(
                    key,
                    int(item["Size"]),
                    _sha_of_name(key),
                    storage_class=item.get("StorageClass") or "STANDARD",
                )

    # -- deleting -------------------------------------------------------------------------
    def delete(self, key: str) -> None:
        self._retrying(f"deleting {key}", lambda: self._delete(key), key=key)

    def _delete(self, key: str) -> None:
        client = self._client()
        full = self._full(key)
        versions: list[str] = []
        markers: list[str] = []
        try:
            pages = client.get_paginator("list_object_versions").paginate(
                Bucket=self.bucket, Prefix=full
            )
            for page in pages:
                for item in page.get("Versions", ()):
                    if item["Key"] == full:
                        versions.append(str(item["VersionId"]))
                for item in page.get("DeleteMarkers", ()):
                    if item["Key"] == full:
                        markers.append(str(item["VersionId"]))
        except self._bx.ClientError as exc:
            if _error_of(exc)[0] != "NotImplemented":
                raise
            client.delete_object(Bucket=self.bucket, Key=full)  # no versions here
            return
        # refused as a whole, before anything is deleted, while one version is retained
        for version in versions:
            self._refuse_if_retained(key, version)
        for version in versions + markers:
            try:
                client.delete_object(Bucket=self.bucket, Key=full, VersionId=version)
            except self._bx.ClientError as exc:
                code, status = _error_of(exc)
                if code in ("NoSuchVersion", "NoSuchKey") or status == 404:
                    continue
                if status == 403 or code in ("AccessDenied", "ObjectLocked", "InvalidRequest"):
                    self._refuse_if_retained(key, version)
                raise

    def _refuse_if_retained(self, key: str, version: str) -> None:
        try:
            head = self._client().head_object(
                Bucket=self.bucket, Key=self._full(key), VersionId=version
            )
        except self._bx.ClientError as exc:
            if _error_of(exc)[1] in (404, 405):
                return
            raise
        until = _naive_utc(head.get("ObjectLockRetainUntilDate"))
        held = head.get("ObjectLockLegalHoldStatus") == "ON"
        now = datetime.now(UTC).replace(tzinfo=None)
        if held:
            raise RetentionLocked(
                f"{self._where()}: {key} (version {version}) is under a legal hold: it "
                "cannot be deleted while the hold is on",
                hint="the hold is lifted in the bucket, by whoever may do so; nothing was deleted",
            )
        if until is not None and until > now:
            mode = head.get("ObjectLockMode") or "Object Lock"
            raise RetentionLocked(
                f"{self._where()}: {key} (version {version}) is under {mode} retention "
                f"until {until:%Y-%m-%d %H:%M:%S} UTC: it cannot be deleted before then",
                hint="nothing was deleted; keep its catalog record until the retention ends",
            )

    # -- health ---------------------------------------------------------------------------
    def check(self) -> Health:
        try:
            return self._retrying("checking the bucket", self._check, attempts=1)
        except LabkeepError as exc:  # one line: the message, then what to do
            return Health(False, f"{exc.message}; {exc.hint}" if exc.hint else exc.message)

    def _check(self) -> Health:
        client = self._client()
        client.head_bucket(Bucket=self.bucket)
        self._bucket_seen = True
        enabled, default_mode = False, None
        try:
            answer = client.get_object_lock_configuration(Bucket=self.bucket)
        except self._bx.ClientError as exc:
            code, status = _error_of(exc)
            if code not in _NO_LOCK_CODES and status not in (404, 501):
                raise
        else:
            config = answer.get("ObjectLockConfiguration") or {}
            enabled = config.get("ObjectLockEnabled") == "Enabled"
            default_mode = config.get("Rule", {}).get("DefaultRetention", {}).get("Mode")
        if self.lock_mode and not enabled:
            return Health(
                False,
                f"{self._where()}: the store keeps objects under {self.lock_mode} retention, "
                "but the bucket has no Object Lock; use a bucket created with Object Lock "
                "(labkeep store add --create-bucket), or remove the store's lock mode",
            )
        return Health(True, lock_mode=(self.lock_mode or default_mode) if enabled else None)

    # -- making a bucket ------------------------------------------------------------------
    @classmethod
    def create_bucket(
        cls,
        bucket: str,
        *,
        endpoint: str | None = None,
        region: str = "us-east-1",
        profile: str | None = None,
        credentials_file: str | os.PathLike[str] | None = None,
        default_lock_mode: str | None = None,
        default_retention_days: int | None = None,
        abort_incomplete_days: int | None = 7,
        name: str = "new",
    ) -> None:
        """Create *bucket* with versioning and Object Lock enabled.

        With *default_lock_mode* and *default_retention_days*, every object put into it is
        retained by default. *abort_incomplete_days*: a lifecycle rule dropping the parts
        of multipart uploads nobody finished or aborted (a crash mid-put), where the server
        supports it. Raises AlreadyExists when the bucket is there already.
        """
        store = cls(name, bucket=bucket, endpoint=endpoint, region=region, profile=profile,
                    credentials_file=credentials_file)  # fmt: skip
        try:
            store._retrying(
                f"creating bucket {bucket}",
                lambda: store._create(
                    default_lock_mode, default_retention_days, abort_incomplete_days
                ),
                attempts=1,
            )
        finally:
            store.close()

    def _create(self, mode: str | None, days: int | None, abort_days: int | None) -> None:
        client = self._client()
        args: dict[str, Any] = {"Bucket": self.bucket, "ObjectLockEnabledForBucket": True}
        if self.region != "us-east-1":
            args["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            client.create_bucket(**args)
        except self._bx.ClientError as exc:
            if _error_of(exc)[0] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise
            raise AlreadyExists(f"{self._where()}: the bucket exists already") from None
        client.put_bucket_versioning(
            Bucket=self.bucket, VersioningConfiguration={"Status": "Enabled"}
        )
        if mode is not None:
            if mode not in LOCK_MODES or not days:
                raise UsageError("a default retention needs a mode and a number of days")
            client.put_object_lock_configuration(
                Bucket=self.bucket,
                ObjectLockConfiguration={
                    "ObjectLockEnabled": "Enabled",
                    "Rule": {"DefaultRetention": {"Mode": mode, "Days": days}},
                },
            )
        if abort_days:
            rule = {
                "ID": "labkeep-abort-incomplete-uploads",
                "Status": "Enabled",
                "Filter": {"Prefix": ""},
                "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": abort_days},
            }
            with contextlib.suppress(self._bx.ClientError):  # not every server has lifecycles
                client.put_bucket_lifecycle_configuration(
                    Bucket=self.bucket, LifecycleConfiguration={"Rules": [rule]}
                )


class _Empty:
    """The body of a range that starts at or past the end of the object."""

    def read(self, size: int = -1) -> bytes:
        return b""

    def close(self) -> None:
        pass
