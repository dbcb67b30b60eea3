"""Build tests/data/keep-0006.tar.gz: a small keep made by the previous release (catalog
schema 0006, labkeep at commit ba1df76), for tests/test_deploy.py's upgrade test.

Run with the previous release's code first on the path, e.g.:

    mkdir /tmp/lk-0006 && git archive ba1df76 src | tar -x -C /tmp/lk-0006
    PYTHONPATH=/tmp/lk-0006/src python tests/data/make_upgrade_fixture.py tests/data

Sealed files are made writable again in the archive (git and tar keep modes, not the
immutable flag); the test re-seals nothing, it reads.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from labkeep import Keep
from labkeep.catalog._db import SCHEMA_HEAD


def main(out_dir: Path) -> None:
    assert SCHEMA_HEAD == "0006", f"run with the 0006 release's code, not {SCHEMA_HEAD}"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "keep"
        keep = Keep.init(root, admin="admin")
        src = Path(tmp) / "src"
        (src / "tiles").mkdir(parents=True)
        for i in range(5):
            (src / "tiles" / f"t{i:02d}.tif").write_bytes(bytes([i]) * (1000 + i))
        (src / "meta.json").write_text('{"objective": "63x"}\n')
        keep.create_project("imaging")
        keep.ingest(src, "imaging/s001", seal=True)
        keep.create_dataset("imaging/a001", kind="analysis")
        work = keep.tree.dataset_dir("imaging", "a001")
        (work / "results.csv").write_text("cell,area\n1,10\n")
        keep.save("imaging/a001", message="first results")
        (work / "results.csv").write_text("cell,area\n1,10\n2,12\n")
        keep.save("imaging/a001", message="more cells")
        keep.add_user("alice", password="alice's long passphrase")
        keep.add_user("bob", password="bob's long passphrase")
        keep.create_group("lab")
        keep.set_member("lab", "alice", "member")
        keep.grant("bob", "read", "imaging/s001")
        keep.verify("imaging")
        keep.close()
        subprocess.run(["chattr", "-R", "-i", str(root)], capture_output=True)
        for folder, dirs, files in os.walk(root):
            for name in dirs + files:
                path = Path(folder) / name
                path.chmod(path.stat().st_mode | 0o200)
        assert (
            not (root / "catalog.db-wal").exists() or (root / "catalog.db-wal").stat().st_size == 0
        )
        target = out_dir / "keep-0006.tar.gz"
        with tarfile.open(target, "w:gz") as tar:
            tar.add(root, arcname="keep", filter=_plain)
        print(f"wrote {target}")


def _plain(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    if info.name.endswith(("-wal", "-shm")) or "/uploads" in info.name:
        return None
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = int(info.mtime)
    return info


if __name__ == "__main__":
    main(Path(sys.argv[1]))
