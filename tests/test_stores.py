"""One backend test suite every content store passes: ``objects`` (a temp folder) and
``s3`` (a real SeaweedFS server, a fresh bucket with Object Lock per test).

Results are checked by looking at the storage directly (the folder with os/pathlib, the
bucket with its own boto3 client), never through the store under test. Then the faults
each store can meet: Object Lock on the real server, wrong credentials, a missing bucket,
an unreachable endpoint, a network that resets connections; a full disk.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from labkeep.errors import (
    NotFound,
    RetentionLocked,
    StorageError,
    StoreUnavailable,
    TransferCorrupted,
)
from labkeep.storage.base import CHUNK, ContentStore
from labkeep.storage.objects import TMP, ObjectsStore
from tests.flakyproxy import FlakyProxy
from tests.s3server import S3Server

MiB = 1 << 20
PART = 5 * MiB  # the smallest S3 part: a 12 MiB object is a 3-part upload
PREFIX = "keep-a/"


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def content(size: int, seed: int = 0) -> bytes:
    return (hashlib.sha256(str(seed).encode()).digest() * (size // 32 + 1))[:size]


# -- looking at the storage directly ----------------------------------------------------------
class FolderView:
    """The objects store's folder, seen with os/pathlib."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def keys(self) -> set[str]:
        found = set()
        for folder, dirs, files in os.walk(self.root):
            dirs[:] = [d for d in dirs if not (Path(folder) == self.root and d == TMP)]
            for name in files:
                found.add(Path(folder, name).relative_to(self.root).as_posix())
        return found

    def read(self, key: str) -> bytes:
        return (self.root / key).read_bytes()

    def copies(self, key: str) -> int:
        return 1 if (self.root / key).is_file() else 0

    def leftovers(self) -> list[str]:
        tmp = self.root / TMP
        return sorted(os.listdir(tmp)) if tmp.is_dir() else []


class BucketView:
    """The s3 store's bucket, seen with a plain boto3 client."""

    def __init__(self, client: Any, bucket: str, prefix: str) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix

    def keys(self) -> set[str]:
        found = set()
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            for item in page.get("Contents", ()):
                assert item["Key"].startswith(self.prefix)
                found.add(item["Key"][len(self.prefix) :])
        return found

    def read(self, key: str) -> bytes:
        body = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)["Body"]
        with body:
            return bytes(body.read())

    def versions(self, key: str) -> list[dict[str, Any]]:
        answer = self.client.list_object_versions(Bucket=self.bucket, Prefix=self.prefix + key)
        items = answer.get("Versions", []) + answer.get("DeleteMarkers", [])
        return [v for v in items if v["Key"] == self.prefix + key]

    def copies(self, key: str) -> int:
        return len(self.versions(key))

    def head(self, key: str, **args: Any) -> dict[str, Any]:
        return dict(self.client.head_object(Bucket=self.bucket, Key=self.prefix + key, **args))

    def leftovers(self) -> list[str]:
        answer = self.client.list_multipart_uploads(Bucket=self.bucket)
        return [u["Key"] for u in answer.get("Uploads", [])]


@dataclass
class Backend:
    kind: str
    store: ContentStore
    raw: FolderView | BucketView
    #: another store on the same storage, with other settings
    make: Callable[..., ContentStore]


def new_bucket(server: S3Server) -> str:
    from labkeep.storage.s3 import S3Store

    bucket = f"t-{uuid.uuid4().hex[:20]}"
    S3Store.create_bucket(
        bucket,
        endpoint=server.endpoint,
        profile=server.profile,
        credentials_file=server.credentials_file,
    )
    return bucket


@pytest.fixture
def s3_client(s3_server: S3Server) -> Iterator[Any]:
    client = s3_server.client()
    yield client
    client.close()


@pytest.fixture
def s3_store_factory(
    s3_server: S3Server, s3_client: Any
) -> Iterator[Callable[..., tuple[Any, BucketView]]]:
    """``make(**settings)`` -> (an S3Store on a fresh bucket, a view of that bucket)."""
    from labkeep.storage.s3 import S3Store

    opened: list[S3Store] = []

    def make(bucket: str | None = None, **settings: Any) -> tuple[S3Store, BucketView]:
        bucket = bucket or new_bucket(s3_server)
        args: dict[str, Any] = {
            "bucket": bucket,
            "endpoint": s3_server.endpoint,
            "prefix": PREFIX,
            "profile": s3_server.profile,
            "credentials_file": s3_server.credentials_file,
            "part_size": PART,
            "retry_backoff": 0.01,
        }
        args.update(settings)
        store = S3Store(args.pop("name", "offsite"), **args)
        opened.append(store)
        return store, BucketView(s3_client, bucket, store.prefix)

    yield make
    for store in opened:
        store.close()


@pytest.fixture(params=["objects", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "objects":
        root = tmp_path / "objects"
        root.mkdir()
        yield Backend(
            "objects",
            ObjectsStore("backup", root),
            FolderView(root),
            lambda **_: ObjectsStore("backup", root),
        )
        return
    make = request.getfixturevalue("s3_store_factory")
    store, view = make()
    yield Backend("s3", store, view, lambda **kw: make(bucket=view.bucket, **kw)[0])


def put(store: ContentStore, data: bytes, tmp_path: Path, **kw: Any) -> str:
    key = store.key_for(sha(data))
    path = tmp_path / f"src-{uuid.uuid4().hex}"
    path.write_bytes(data)
    store.put_file(key, str(path), sha256=sha(data), size=len(data), **kw)
    return key


def read_all(chunks: Iterator[bytes]) -> bytes:
    out = []
    for chunk in chunks:
        assert 0 < len(chunk) <= CHUNK
        out.append(chunk)
    return b"".join(out)


# -- every store ------------------------------------------------------------------------------
def test_put_file_then_stat_and_ranged_reads(backend: Backend, tmp_path: Path) -> None:
    data = content(3 * MiB + 17)
    told: list[int] = []
    key = put(backend.store, data, tmp_path, on_bytes=told.append)
    assert backend.raw.keys() == {key}
    assert backend.raw.read(key) == data
    assert sum(told) == len(data)

    held = backend.store.stat(key)
    assert held is not None and held.key == key
    assert (held.size, held.sha256) == (len(data), sha(data))
    assert backend.store.has(key)

    size = len(data)
    for start, end in [(0, None), (0, 10), (5, MiB + 3), (size - 7, None), (size - 7, size),
                       (MiB, 2 * MiB), (size, None), (10, 10), (20, 10)]:  # fmt: skip
        assert read_all(backend.store.open(key, start, end)) == data[start:end], (start, end)


def test_put_stream_in_uneven_chunks(backend: Backend) -> None:
    data = content(MiB + 999, seed=2)
    chunks = [data[i : i + 70_001] for i in range(0, len(data), 70_001)]
    key = backend.store.key_for(sha(data))
    told: list[int] = []
    stored = backend.store.put_stream(
        key, iter(chunks), sha256=sha(data), size=len(data), on_bytes=told.append
    )
    assert (stored.size, stored.sha256) == (len(data), sha(data))
    assert backend.raw.read(key) == data
    assert sum(told) == len(data)


def test_empty_content(backend: Backend, tmp_path: Path) -> None:
    key = put(backend.store, b"", tmp_path)
    assert backend.raw.read(key) == b""
    held = backend.store.stat(key)
    assert held is not None and held.size == 0
    assert read_all(backend.store.open(key)) == b""


def test_second_put_of_the_same_content_is_a_no_op(backend: Backend, tmp_path: Path) -> None:
    data = content(1000, seed=3)
    key = put(backend.store, data, tmp_path)
    first = backend.raw.copies(key)
    again = backend.store.put_stream(
        key, iter([b"never read"]), sha256=sha(data), size=len(data)
    )  # no-op: the chunks are not even looked at
    assert (again.size, again.sha256) == (len(data), sha(data))
    put(backend.store, data, tmp_path)
    assert backend.raw.copies(key) == first == 1  # no second object, no second version
    assert backend.raw.read(key) == data


@pytest.mark.parametrize("how", ["file", "stream", "short", "long"])
def test_content_not_matching_its_sha256_is_refused(
    backend: Backend, tmp_path: Path, how: str, request: pytest.FixtureRequest
) -> None:
    data = content(200_000, seed=4)
    expected = sha(b"something else")
    key = backend.store.key_for(expected)
    with pytest.raises(TransferCorrupted) as caught:
        if how == "file":
            path = tmp_path / "src"
            path.write_bytes(data)
            backend.store.put_file(key, str(path), sha256=expected, size=len(data))
        elif how == "stream":
            backend.store.put_stream(key, [data], sha256=expected, size=len(data))
        elif how == "short":  # the source gives fewer bytes than announced
            backend.store.put_stream(key, [data], sha256=sha(data), size=len(data) + 1)
        else:
            backend.store.put_stream(key, [data, b"x"], sha256=sha(data), size=len(data))
    assert backend.store.name in str(caught.value)
    assert backend.raw.keys() == set()
    assert backend.raw.copies(key) == 0
    assert backend.raw.leftovers() == []


def test_multipart_size_object(backend: Backend, tmp_path: Path) -> None:
    data = os.urandom(12 * MiB + 5)
    told: list[int] = []
    key = put(backend.store, data, tmp_path, on_bytes=told.append)
    assert sum(told) == len(data)
    assert sha(backend.raw.read(key)) == sha(data)
    held = backend.store.stat(key)
    assert held is not None and (held.size, held.sha256) == (len(data), sha(data))
    assert read_all(backend.store.open(key, PART - 3, PART + 3)) == data[PART - 3 : PART + 3]
    if isinstance(backend.raw, BucketView):
        head = backend.raw.head(key, ChecksumMode="ENABLED")
        assert head["ETag"].endswith('-3"')  # three parts
        assert head["Metadata"]["sha256"] == sha(data).hex()
    assert backend.raw.leftovers() == []


def test_multipart_stream(backend: Backend) -> None:
    data = os.urandom(11 * MiB)
    key = backend.store.key_for(sha(data))
    chunks = (data[i : i + CHUNK] for i in range(0, len(data), CHUNK))
    backend.store.put_stream(key, chunks, sha256=sha(data), size=len(data))
    assert sha(backend.raw.read(key)) == sha(data)


def test_multipart_with_a_wrong_sha256_is_aborted(
    backend: Backend, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    data = os.urandom(11 * MiB)
    path = tmp_path / "big"
    path.write_bytes(data)
    expected = sha(data[:-1] + bytes([data[-1] ^ 1]))  # (a random last byte may be 0)
    key = backend.store.key_for(expected)
    with pytest.raises(TransferCorrupted):
        backend.store.put_file(key, str(path), sha256=expected, size=len(data))
    assert backend.raw.keys() == set()
    assert backend.raw.copies(key) == 0
    assert backend.raw.leftovers() == []  # the multipart upload was aborted, not completed


def test_delete(backend: Backend, tmp_path: Path) -> None:
    keep = put(backend.store, b"keep me", tmp_path)
    gone = put(backend.store, b"delete me", tmp_path)
    backend.store.delete(gone)
    assert backend.raw.keys() == {keep}
    assert backend.raw.copies(gone) == 0  # every version, no delete marker left behind
    assert backend.store.stat(gone) is None
    backend.store.delete(gone)  # not held: not an error
    backend.store.delete(backend.store.key_for(sha(b"never stored")))
    assert backend.raw.read(keep) == b"keep me"


def test_list_and_usage(backend: Backend, tmp_path: Path) -> None:
    datas = [content(100 * i + 1, seed=i) for i in range(7)]
    keys = {put(backend.store, d, tmp_path) for d in datas}
    listed = {item.key: item for item in backend.store.list()}
    assert set(listed) == keys == backend.raw.keys()
    for d in datas:
        item = listed[backend.store.key_for(sha(d))]
        assert item.size == len(d)
    some = sorted(keys)[0][:2]
    assert {i.key for i in backend.store.list(some)} == {k for k in keys if k.startswith(some)}
    assert list(backend.store.list("zz")) == []
    usage = backend.store.usage()
    assert (usage.objects, usage.bytes) == (len(datas), sum(map(len, datas)))


def test_missing_key(backend: Backend) -> None:
    key = backend.store.key_for(sha(b"not there"))
    assert backend.store.stat(key) is None
    assert not backend.store.has(key)
    with pytest.raises(NotFound):
        backend.store.open(key)
    with pytest.raises(NotFound):
        backend.store.open(key, 5, 5)


def test_reader_closed_early_releases_its_source(
    backend: Backend, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    data = content(3 * MiB, seed=9)
    key = put(backend.store, data, tmp_path)
    reader = backend.store.open(key)
    assert next(reader) == data[:CHUNK]
    reader.close()  # type: ignore[attr-defined]
    unread = backend.store.open(key, 10)
    unread.close()  # type: ignore[attr-defined]  (ResourceWarning is an error here)


def test_check_healthy(backend: Backend) -> None:
    health = backend.store.check()
    assert health.reachable, health.message


def test_importing_the_stores_does_not_import_boto3() -> None:
    code = (
        "import sys\n"
        "import labkeep.storage, labkeep.storage.base, labkeep.storage.objects\n"
        "print('boto3' in sys.modules, 'botocore' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)  # fmt: skip
    assert result.stdout.split() == ["False", "False"]


# -- s3: Object Lock on the real server -------------------------------------------------------
def test_compliance_retention_holds(
    s3_store_factory: Callable[..., tuple[Any, BucketView]], tmp_path: Path
) -> None:
    from botocore.exceptions import ClientError

    store, view = s3_store_factory(lock_mode="COMPLIANCE", name="vault")
    assert store.capabilities.supports_object_lock
    until = (datetime.now(UTC) + timedelta(days=1)).replace(tzinfo=None, microsecond=0)
    key = put(store, b"kept for a day", tmp_path, retain_until=until)
    held = store.stat(key)
    assert held is not None
    assert (held.lock_mode, held.retain_until) == ("COMPLIANCE", until)
    assert store.check().lock_mode == "COMPLIANCE"

    with pytest.raises(RetentionLocked) as caught:
        store.delete(key)
    message = str(caught.value)
    assert "vault" in message and key in message and f"{until:%Y-%m-%d %H:%M:%S}" in message
    (version,) = view.versions(key)
    assert version["IsLatest"] and "Size" in version  # still there, no delete marker
    assert view.read(key) == b"kept for a day"

    # the server itself refuses to shorten, downgrade, or bypass
    full = view.prefix + key
    vid = version["VersionId"]
    for retention in (
        {"Mode": "COMPLIANCE", "RetainUntilDate": until - timedelta(hours=1)},
        {"Mode": "GOVERNANCE", "RetainUntilDate": until + timedelta(days=1)},
    ):
        with pytest.raises(ClientError):
            view.client.put_object_retention(
                Bucket=view.bucket, Key=full, VersionId=vid, Retention=retention
            )
    with pytest.raises(ClientError):
        view.client.delete_object(
            Bucket=view.bucket, Key=full, VersionId=vid, BypassGovernanceRetention=True
        )
    head = view.head(key)
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert head["ObjectLockRetainUntilDate"].astimezone(UTC).replace(tzinfo=None) == until
    assert view.copies(key) == 1


def test_governance_retention_by_days_and_multipart(
    s3_store_factory: Callable[..., tuple[Any, BucketView]], tmp_path: Path
) -> None:
    store, view = s3_store_factory(lock_mode="GOVERNANCE", retention_days=1)
    small = put(store, b"governed", tmp_path)
    big = put(store, os.urandom(11 * MiB), tmp_path)
    soon = datetime.now(UTC).replace(tzinfo=None) + timedelta(days=1)
    for key in (small, big):
        head = view.head(key)
        assert head["ObjectLockMode"] == "GOVERNANCE"
        until = head["ObjectLockRetainUntilDate"].astimezone(UTC).replace(tzinfo=None)
        assert abs((until - soon).total_seconds()) < 120
        with pytest.raises(RetentionLocked):
            store.delete(key)
        assert view.copies(key) == 1


def test_a_no_op_put_extends_a_shorter_retention(
    s3_store_factory: Callable[..., tuple[Any, BucketView]], tmp_path: Path
) -> None:
    store, view = s3_store_factory(lock_mode="COMPLIANCE")
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    key = put(store, b"x", tmp_path, retain_until=now + timedelta(hours=1))
    put(store, b"x", tmp_path, retain_until=now + timedelta(hours=3))
    put(store, b"x", tmp_path, retain_until=now + timedelta(hours=2))  # never shortened
    held = store.stat(key)
    assert held is not None and held.retain_until == now + timedelta(hours=3)
    assert view.copies(key) == 1


def test_without_retention_everything_is_deleted(
    s3_store_factory: Callable[..., tuple[Any, BucketView]], s3_client: Any
) -> None:
    """Several versions and a delete marker under one key: all go, a neighbour stays."""
    store, view = s3_store_factory()
    key = store.key_for(sha(b"v"))
    full = view.prefix + key
    for body in (b"v1", b"v2"):
        s3_client.put_object(Bucket=view.bucket, Key=full, Body=body)
    s3_client.delete_object(Bucket=view.bucket, Key=full)
    s3_client.put_object(Bucket=view.bucket, Key=full + "x", Body=b"neighbour")
    assert view.copies(key) == 3
    store.delete(key)
    assert view.copies(key) == 0
    assert view.keys() == {key + "x"}


# -- s3: a store that cannot be used ----------------------------------------------------------
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def assert_unavailable(store: Any, tmp_path: Path, *words: str) -> None:
    health = store.check()
    assert not health.reachable
    for word in (store.name, *words):
        assert word in health.message, health.message
    for attempt in (
        lambda: put(store, b"data", tmp_path),
        lambda: store.stat(store.key_for(sha(b"data"))),
        lambda: list(store.list()),
        lambda: store.delete(store.key_for(sha(b"data"))),
    ):
        with pytest.raises(StoreUnavailable) as caught:
            attempt()
        assert store.name in caught.value.message and caught.value.hint
        assert caught.value.exit_code == 3


def test_wrong_credentials(
    s3_store_factory: Callable[..., tuple[Any, BucketView]], s3_server: S3Server, tmp_path: Path
) -> None:
    bucket = new_bucket(s3_server)
    wrong = tmp_path / "credentials"
    wrong.write_text(
        f"[wrong-secret]\naws_access_key_id = {s3_server.access_key}\n"
        "aws_secret_access_key = not-the-secret\n"
        "[unknown-key]\naws_access_key_id = NOBODY\naws_secret_access_key = x\n"
    )
    for profile in ("wrong-secret", "unknown-key"):
        store, view = s3_store_factory(
            bucket=bucket, name=f"bad-{profile}", profile=profile, credentials_file=wrong
        )
        assert_unavailable(store, tmp_path, "credentials", profile, str(wrong))
        assert view.keys() == set()
    store, _ = s3_store_factory(bucket=bucket, profile="no-such-profile", credentials_file=wrong)
    assert_unavailable(store, tmp_path, "no-such-profile")


def test_missing_bucket(
    s3_store_factory: Callable[..., tuple[Any, BucketView]], tmp_path: Path
) -> None:
    store, _ = s3_store_factory(bucket="no-such-bucket", name="lost")
    assert_unavailable(store, tmp_path, "no-such-bucket", "does not exist")


def test_unreachable_endpoint(
    s3_store_factory: Callable[..., tuple[Any, BucketView]], tmp_path: Path
) -> None:
    port = closed_port()
    store, _ = s3_store_factory(
        bucket="anything", name="far", endpoint=f"http://127.0.0.1:{port}", max_attempts=2
    )
    assert_unavailable(store, tmp_path, f"127.0.0.1:{port}", "cannot reach")


# -- s3: a flaky network ----------------------------------------------------------------------
def test_puts_through_a_flaky_network_retry_and_finish(
    s3_server: S3Server, s3_store_factory: Callable[..., tuple[Any, BucketView]], tmp_path: Path
) -> None:
    port = s3_server.endpoint.rsplit(":", 1)[1]
    with FlakyProxy(("127.0.0.1", int(port)), reset_rate=0.4, latency=0.0005, seed=7) as proxy:
        store, view = s3_store_factory(endpoint=proxy.url, max_attempts=8)
        datas = [os.urandom(n) for n in (300_000, 12 * MiB, 2 * MiB, 7 * MiB)]
        keys = [put(store, d, tmp_path) for d in datas]
        streamed = os.urandom(11 * MiB)  # a stream cannot restart: its requests are retried
        chunks = (streamed[i : i + CHUNK] for i in range(0, len(streamed), CHUNK))
        keys.append(store.key_for(sha(streamed)))
        store.put_stream(keys[-1], chunks, sha256=sha(streamed), size=len(streamed))
        datas.append(streamed)
        store.close()
    assert proxy.resets > 0, "the proxy cut no connection: the test proved nothing"
    for key, data in zip(keys, datas, strict=True):
        assert sha(view.read(key)) == sha(data)
        assert view.copies(key) == 1
    assert view.keys() == set(keys)
    assert view.leftovers() == []


@pytest.mark.parametrize("size", [MiB, 11 * MiB])
def test_a_put_that_keeps_failing_stores_nothing(
    s3_server: S3Server,
    s3_store_factory: Callable[..., tuple[Any, BucketView]],
    tmp_path: Path,
    size: int,
) -> None:
    port = s3_server.endpoint.rsplit(":", 1)[1]
    with FlakyProxy(("127.0.0.1", int(port)), reset_rate=1.0, reset_after=(200_000, 300_000)):
        pass  # (proves it starts and stops cleanly on its own)
    proxy = FlakyProxy(("127.0.0.1", int(port)), reset_rate=1.0, reset_after=(200_000, 300_000))
    with proxy:
        store, view = s3_store_factory(endpoint=proxy.url, max_attempts=2, name="cutoff")
        data = os.urandom(size)
        with pytest.raises(StoreUnavailable) as caught:
            put(store, data, tmp_path)
        store.close()
    assert "cutoff" in caught.value.message and "attempts" in caught.value.message
    assert proxy.resets >= 2
    assert view.keys() == set()
    assert view.copies(store.key_for(sha(data))) == 0
    assert view.leftovers() == []


# -- objects: a full disk ---------------------------------------------------------------------
@pytest.mark.parametrize("size", [2 * MiB, 100_000])
def test_objects_on_a_full_disk(
    small_disk: Callable[[int], Path], tmp_path: Path, size: int
) -> None:
    from tests.conftest import fill_disk

    root = small_disk(1024)
    store = ObjectsStore("usb-disk", root)
    assert store.check().reachable
    put(store, b"fits", tmp_path)
    fill_disk(root, leave=20_000)
    data = os.urandom(size)
    with pytest.raises(StorageError) as caught:
        put(store, data, tmp_path)
    assert "usb-disk" in caught.value.message and "no space" in caught.value.message
    view = FolderView(root)
    assert view.keys() == {store.key_for(sha(b"fits")), "filler"}
    assert view.leftovers() == []


def test_small_puts_skip_the_continue_handshake(
    s3_store_factory: Callable[..., tuple[Any, BucketView]], tmp_path: Path
) -> None:
    """A small object goes out with its first packet: no ``Expect: 100-continue`` (which
    costs a round trip to the server per put); a large one still asks first (an error
    answer then comes before megabytes are sent). Looked at as the request leaves
    botocore, after every handler of its own."""
    from labkeep.storage.s3 import SMALL_BODY

    store, view = s3_store_factory()
    sent: list[tuple[int, bool]] = []

    def watch(request: Any, **_: Any) -> None:
        sent.append((int(request.headers.get("Content-Length")), "Expect" in request.headers))

    store._client().meta.events.register_last("before-send.s3.PutObject", watch)
    small, large = content(64 * 1024, seed=3), content(SMALL_BODY + 4096, seed=4)
    for data in (small, large):
        key = put(store, data, tmp_path, absent=True)
        assert view.read(key) == data
    assert sent == [(len(small), False), (len(large), True)]
