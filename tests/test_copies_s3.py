"""Copies to a real S3 server (SeaweedFS on loopback, Object Lock enforced): WORM
archives, audits, drops that an unreachable or locked store cannot fool, a flaky network.

What is in the bucket is checked with the server's own client, not through labkeep.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from labkeep import Keep
from labkeep.catalog import Replica, Store
from labkeep.errors import BelowPolicy, StoreUnavailable
from tests.conftest import make_files
from tests.flakyproxy import FlakyProxy
from tests.s3server import S3Server


def bucket_objects(server: S3Server, bucket: str) -> dict[str, dict[str, Any]]:
    """{key: head} of the newest version of every object in the bucket."""
    client = server.client()
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            found[item["Key"]] = client.head_object(Bucket=bucket, Key=item["Key"])
    return found


def good_in_bucket(server: S3Server, bucket: str) -> set[str]:
    """SHA-256s of the objects whose bytes hash to the name they are stored under."""
    client = server.client()
    good = set()
    for key in bucket_objects(server, bucket):
        data = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        name = key.rsplit("/", 1)[-1]
        if hashlib.sha256(data).hexdigest() == name:
            good.add(name)
    return good


def add_s3(
    keep: Keep, server: S3Server, name: str, *, endpoint: str | None = None, **kw: Any
) -> str:
    bucket = f"lk-{name}-{uuid.uuid4().hex[:10]}"
    keep.add_store(
        name,
        kind="s3",
        endpoint=endpoint or server.endpoint,
        bucket=bucket,
        credentials=server.profile,
        credentials_file=str(server.credentials_file),
        create_bucket=True,
        **kw,
    )
    return bucket


@pytest.fixture
def dataset(keep: Keep, tmp_path: Path) -> dict[str, bytes]:
    files = make_files(tmp_path / "src", 12, min_size=1, max_size=300_000)
    assert not keep.ingest(tmp_path / "src", "proj/s1", seal=True).failed
    return files


def shas(files: dict[str, bytes]) -> set[str]:
    return {hashlib.sha256(d).hexdigest() for d in files.values()}


def test_copy_to_a_worm_archive(keep: Keep, s3_server: S3Server, dataset: dict[str, bytes]) -> None:
    bucket = add_s3(
        keep, s3_server, "archive", tier="cold", offsite=True,
        object_lock="compliance", retention="2d",
    )  # fmt: skip
    report = keep.copy("proj/s1", to="archive")
    assert not report.failed and report.counts()["ok"] == len(shas(dataset))
    objects = bucket_objects(s3_server, bucket)
    assert (
        {k.rsplit("/", 1)[-1] for k in objects}
        == shas(dataset)
        == good_in_bucket(s3_server, bucket)
    )
    soon = datetime.now(UTC) + timedelta(days=1)
    for head in objects.values():
        assert head["ObjectLockMode"] == "COMPLIANCE"
        assert head["ObjectLockRetainUntilDate"] > soon
    # whereis and the dataset's page data say WORM until when
    rel = sorted(dataset)[0]
    copies = {c["store"]: c for c in keep.whereis(f"proj/s1/raw/{rel}")["copies"]}
    assert copies["archive"]["retain_until"] and copies["archive"]["checked_by"] == "server"
    summary = {c["store"]: c for c in keep.whereis("proj/s1")["copies"]}
    assert summary["archive"]["complete"] and summary["archive"]["retain_until"]
    # a second copy sends nothing; an audit re-reads every object
    assert keep.copy("proj/s1", to="archive").counts() == {"notneeded": len(dataset)}
    audit = keep.verify("proj/s1", store="archive")
    assert audit.info["states"]["ok"] == len(dataset) and not audit.failed
    quick = keep.verify("proj/s1", store="archive", quick=True)
    assert {r.extra.get("checked_by") for r in quick.results} == {"server"}
    # dropping it is refused while the retention holds, whatever the policy says
    keep.set_policy("proj", min_copies=1)
    dropped = keep.drop("proj/s1", from_store="archive")
    assert dropped.counts() == {"impossible": len(dataset)}
    assert all("WORM" in (r.message or "") for r in dropped.results)
    assert good_in_bucket(s3_server, bucket) == shas(dataset)
    listed = {s.name: s for s in keep.list_stores()}
    assert listed["archive"].reachable and (listed["archive"].lock_mode or "").upper() == (
        "COMPLIANCE"
    )
    # someone hides an object (a delete marker on top of the locked version): the audit
    # finds it missing, and the repair puts a good version back on top, under the lock
    client = s3_server.client()
    key = sorted(objects)[0]
    client.delete_object(Bucket=bucket, Key=key)
    assert key not in bucket_objects(s3_server, bucket)
    fixed = keep.verify("proj/s1", store="archive", repair=True)
    assert fixed.info.get("repaired", 0) >= 1, [r.to_dict() for r in fixed.results]
    assert not fixed.failed, [r.to_dict() for r in fixed.results if r.status == "error"]
    assert good_in_bucket(s3_server, bucket) == shas(dataset)
    assert bucket_objects(s3_server, bucket)[key]["ObjectLockMode"] == "COMPLIANCE"
    assert not keep.verify("proj/s1", store="archive").failed


def test_drop_from_the_tree_with_s3_down_is_refused(
    keep: Keep, s3_server: S3Server, tmp_path: Path, dataset: dict[str, bytes]
) -> None:
    host, port = s3_server.endpoint.rsplit(":", 1)
    proxy = FlakyProxy((host.removeprefix("http://"), int(port)))
    proxy.start()
    try:
        add_s3(keep, s3_server, "cloud", endpoint=proxy.url)
        keep.add_store("backup", kind="objects", path=str(tmp_path / "backup"))
        keep.copy("proj/s1", to="cloud")
        keep.copy("proj/s1", to="backup")
    finally:
        proxy.close()  # the S3 endpoint is unreachable from now on
    keep.set_policy("proj", min_copies=2, tree_droppable=True)
    with pytest.raises(BelowPolicy):
        keep.drop("proj/s1", from_store="tree")
    raw = keep.tree.dataset_dir("proj", "s1") / "raw"
    assert sum(1 for p in raw.rglob("*") if p.is_file()) == len(dataset)
    refused = keep.drop("proj/s1", from_store="backup")
    assert refused.counts() == {"impossible": len(dataset)}
    assert all("cloud" in (r.message or "") for r in refused.results)  # names why
    with pytest.raises(StoreUnavailable, match="cloud"):
        keep.copy("proj/s1", to="cloud")


def test_copy_through_a_flaky_network_retries_and_counts_only_verified(
    keep: Keep, s3_server: S3Server, tmp_path: Path
) -> None:
    files = make_files(tmp_path / "many", 30, min_size=200_000, max_size=900_000, seed=5)
    keep.ingest(tmp_path / "many", "proj/big")
    host, port = s3_server.endpoint.rsplit(":", 1)
    with FlakyProxy(
        (host.removeprefix("http://"), int(port)),
        reset_rate=0.3,
        reset_after=(50_000, 400_000),
        latency=0.002,
    ) as proxy:
        bucket = add_s3(keep, s3_server, "far", endpoint=proxy.url)
        report = keep.copy("proj/big", to="far")
        assert not report.failed, [r.to_dict() for r in report.results if r.status == "error"]
        assert proxy.resets > 0  # the network really failed under it
    assert good_in_bucket(s3_server, bucket) == shas(files)
    with keep.catalog.read() as session:
        recorded = {
            bytes(h).hex()
            for (h,) in session.execute(
                select(Replica.sha256).join(Store).where(Store.name == "far")
            )
        }
    assert recorded == shas(files)


def test_bad_s3_settings_are_clear_errors_and_record_nothing(
    keep: Keep, s3_server: S3Server, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong-credentials"
    wrong.write_text("[x]\naws_access_key_id = nobody\naws_secret_access_key = nothing\n")
    cases = [
        dict(endpoint=s3_server.endpoint, bucket="no-such-bucket-here",
             credentials=s3_server.profile, credentials_file=str(s3_server.credentials_file)),
        dict(endpoint=s3_server.endpoint, bucket="any", credentials="x",
             credentials_file=str(wrong), create_bucket=True),
        dict(endpoint="http://127.0.0.1:9", bucket="any", credentials=s3_server.profile,
             credentials_file=str(s3_server.credentials_file)),
    ]  # fmt: skip
    for i, case in enumerate(cases):
        with pytest.raises(StoreUnavailable) as caught:
            keep.add_store(f"bad{i}", kind="s3", **case)  # type: ignore[arg-type]
        assert f"bad{i}" in caught.value.message
    with keep.catalog.read() as session:
        assert session.execute(select(func.count(Store.id))).scalar_one() == 1  # the tree
    # Object Lock asked of a bucket without it
    client = s3_server.client()
    plain = f"plain-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=plain)
    with pytest.raises(StoreUnavailable, match="no Object Lock"):
        keep.add_store(
            "worm", kind="s3", endpoint=s3_server.endpoint, bucket=plain,
            credentials=s3_server.profile, credentials_file=str(s3_server.credentials_file),
            object_lock="compliance", retention="10y",
        )  # fmt: skip


def test_a_copy_killed_midway_resumes_without_storing_anything_twice(
    tmp_path: Path, s3_server: S3Server
) -> None:
    """After SIGKILL the next copy looks before it puts: every object ends up stored
    once (one version in a versioned, locked bucket), all of them verified."""
    import signal
    import subprocess
    import sys

    from tests.test_cli import run

    root = tmp_path / "keep"
    run("init", str(root))
    files = make_files(tmp_path / "src", 600, min_size=2_000, max_size=30_000, seed=3)
    run("project", "create", "proj", "--root", str(root))
    run("ingest", str(tmp_path / "src"), "proj/s1", "--root", str(root))
    bucket = f"lk-kill-{uuid.uuid4().hex[:8]}"
    run(
        "store", "add", "archive", "--kind", "s3", "--endpoint", s3_server.endpoint,
        "--bucket", bucket, "--credentials", s3_server.profile,
        "--credentials-file", str(s3_server.credentials_file), "--create-bucket",
        "--object-lock", "governance", "--retention", "1d", "--root", str(root),
    )  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "labkeep", "copy", "proj/s1", "--to", "archive", "--json",
         "--root", str(root)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        if '"ok"' in line:
            break
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    out = run("copy", "proj/s1", "--to", "archive", "--json", "--root", str(root))
    assert '"error"' not in out.stdout
    client = s3_server.client()
    versions: dict[str, int] = {}
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for item in page.get("Versions", []):
            versions[item["Key"]] = versions.get(item["Key"], 0) + 1
    assert {k.rsplit("/", 1)[-1] for k in versions} == shas(files)
    assert set(versions.values()) == {1}
    assert good_in_bucket(s3_server, bucket) == shas(files)
