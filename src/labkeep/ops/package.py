"""Packages of a dataset version: a BagIt bag with an RO-Crate inside, or a BioImage
Archive submission package. ``keep.export_package("P/D@N", to, format=...)``.

**BagIt** (RFC 8493, ``BagIt-Version: 1.0``, written by labkeep: the ``bagit`` library
still writes 0.97, and RO-Crate's BagIt guidance asks for 1.0)::

    NAME/                       P-D-vN (a release: its name; with zip: NAME.zip holding it)
      bagit.txt                 BagIt-Version: 1.0, Tag-File-Character-Encoding: UTF-8
      bag-info.txt              from the DataCite metadata, Payload-Oxum, Bag-Size, ...
      data/                     the version's files at their paths (a release's without raw/)
      data/ro-crate-metadata.json   RO-Crate 1.1: the payload folder is the crate's root,
                                as RO-Crate's implementation notes advise ("Adding RO-Crate
                                to BagIt"): the bag's manifests then cover the crate too
      manifest-sha256.txt, manifest-sha512.txt   payload, one line per file, written as
                                the files are copied; paths percent-encoded as RFC 8493
                                section 2.1.3 requires (CR, LF and %)
      tagmanifest-sha256.txt, tagmanifest-sha512.txt   written last: they mark the bag done

Write order, so that a bag is resumable and never lies: each payload file is written under
a temporary name and renamed when complete (see :mod:`labkeep.ops._payload`); the payload
manifests are written under temporary names and renamed when every file is in; then the
crate, ``bagit.txt`` and ``bag-info.txt``; a ``sync``; then the tag manifests, SHA-512's
last. A hidden ``.labkeep-package`` file names the package's source while it is unfinished
(so a rerun resumes it, and a folder that is something else is never written into) and is
removed when the bag is done. A rerun of a killed export copies only what is not there.

The **BioImage Archive** package is in :mod:`labkeep.ops._bia`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from labkeep.catalog import Version
from labkeep.errors import AlreadyExists, Busy, UsageError
from labkeep.names import parse_address, part_name
from labkeep.ops._access import find_dataset
from labkeep.ops._payload import Payload, PayloadCopier, hash_file
from labkeep.results import Report, Result

if TYPE_CHECKING:
    from labkeep.keep import Keep
    from labkeep.ops.ingest import Progress

FORMATS = ("bagit", "bia")
MARKER = ".labkeep-package"
BAGIT_TXT = "BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n"
PAYLOAD_MANIFESTS = ("manifest-sha256.txt", "manifest-sha512.txt")
TAG_MANIFESTS = ("tagmanifest-sha256.txt", "tagmanifest-sha512.txt")


class Source:
    """What a package is made of: one committed version of a dataset, and its metadata."""

    def __init__(self, keep: Keep, address: str) -> None:
        from labkeep.ops.metadata import datacite_of

        addr = parse_address(address, need_dataset=True)
        assert addr.dataset is not None
        if addr.path:
            raise UsageError(
                f"a package is made of a whole dataset version, not {address!r}",
                hint="use PROJECT/DATASET[@N]",
            )
        with keep.catalog.read() as session:
            project, dataset = find_dataset(
                keep, session, addr.project, addr.dataset, "dataset.download"
            )
            number = addr.version if addr.version is not None else dataset.head_version
            row = session.execute(
                select(Version).where(
                    Version.dataset_id == dataset.id,
                    Version.number == number,
                    Version.state == "committed",
                )
            ).scalar_one_or_none()
            if row is None or number < 1:
                raise UsageError(
                    f"{addr.dataset_address} has no version {number}"
                    if number >= 1
                    else f"{addr.dataset_address} has no saved version yet",
                    hint=f"see its versions with 'labkeep log {addr.dataset_address}'",
                )
            self.project, self.name, self.version = addr.project, addr.dataset, number
            self.kind = dataset.kind
            self.n_files, self.n_bytes = int(row.n_files or 0), int(row.n_bytes or 0)
            self.run_id = row.run_id
            when = dataset.published_at or dataset.sealed_at or row.committed_at
            self.published = (
                (when or datetime.now(UTC)).replace(tzinfo=UTC).isoformat(timespec="seconds")
            )
            self.doc = datacite_of(keep, project, dataset, version=number)
        self.address = f"{self.project}/{self.name}@{number}"
        self.keep = keep

    @property
    def label(self) -> str:
        """The package's folder name: a release's name, else ``DATASET-vN``."""
        return self.name if self.kind == "release" else f"{self.name}-v{self.version}"

    def rel(self, path: str) -> str:
        from labkeep.ops.release import source_path

        return source_path(path) if self.kind == "release" else path

    def items(self) -> Iterator[Payload]:
        stream = self.keep.stream_entries(self.address)
        for e in stream.entries:
            yield Payload(e["path"], self.rel(e["path"]), int(e["size"]), e["sha256"],
                          int(e["mtime_ns"]))  # fmt: skip

    def runs(self) -> list[dict[str, Any]]:
        """The run that made this version, with its outputs (none if no run made it)."""
        if self.run_id is None:
            return []
        from labkeep.ops.runs import iter_outputs, run_of_version

        record = run_of_version(self.keep, self.address)
        if record is None:
            return []
        outputs = []
        for o in iter_outputs(self.keep, self.run_id):
            o["path"] = self.rel(o["path"])
            outputs.append(o)
        record["outputs"] = outputs
        return [record]


def export_package(
    keep: Keep,
    address: str,
    to: str | os.PathLike[str],
    *,
    format: str = "bagit",
    zip: bool = False,
    verify: bool = False,
    jobs: int | None = None,
    progress: Progress | None = None,
    on_result: Callable[[Result], None] | None = None,
) -> Report:
    """Write a package of ``PROJECT/DATASET[@N]`` into the folder *to* (see the module
    docstring); running it again finishes a package that was cut short.

    *verify* reads and checks every byte against the catalog's SHA-256 even where the
    tree's copy passes the quick check and its digests are known. The report's info says
    where the package is (``package``), whether it is ``finished``, and how many bytes
    were read to hash them (``bytes_read``, 0 when every digest was known).
    """
    if format not in FORMATS:
        raise UsageError(f"unknown package format {format!r}", hint="use bagit or bia")
    if zip and format != "bagit":
        raise UsageError("--zip is for BagIt bags", hint="leave out --zip")
    source = Source(keep, address)
    dest = Path(to).expanduser()
    tree = keep.tree.base.resolve()
    if dest.resolve() == tree or tree in dest.resolve().parents:
        raise UsageError(
            f"{dest} is inside the keep's tree", hint="write packages to a folder outside the keep"
        )
    dest.mkdir(parents=True, exist_ok=True)
    label = source.label if format == "bagit" else f"{source.label}-bia"
    final = dest / (f"{label}.zip" if zip else label)
    work = dest / f".{label}.labkeep-bag" if zip else final
    report = Report("package", keep_all=False,
                    info={"source": source.address, "format": format, "package": str(final),
                          "finished": False, "files": 0, "bytes": 0, "bytes_read": 0})  # fmt: skip

    def emit(result: Result) -> None:
        result.dataset = f"{source.project}/{source.name}"
        report.add(result)
        if on_result is not None:
            on_result(result)

    if final.exists() and (zip or not (final / MARKER).exists()) and _done(final, format, zip):
        report.info.update(finished=True, status="notneeded", files=source.n_files)
        return report
    if zip and not (work / MARKER).exists() and _done(work, format, False):
        pass  # the bag was finished and only its zip was cut short: zip it again
    else:
        resuming, lock = _claim(work, source, format)
        try:
            copier = PayloadCopier(keep, source.project, source.name, work, verify=verify,
                                   jobs=jobs, progress=progress, resuming=resuming)  # fmt: skip
            if progress is not None:
                progress.start(source.n_files, source.n_bytes)
            if format == "bagit":
                finished = _write_bag(source, copier, work, report, emit)
            else:
                from labkeep.ops._bia import write_bia

                finished = write_bia(source, copier, work, report, emit)
        finally:
            os.close(lock)
        report.info["bytes_read"] = copier.bytes_read
        if not finished:
            return report
    if zip:
        _zip(work, final, label)
        shutil.rmtree(work)
    report.info.update(finished=True, status="ok")
    return report


def _done(final: Path, format: str, zip: bool) -> bool:
    if zip:
        return final.is_file()
    last = TAG_MANIFESTS[-1] if format == "bagit" else "submission.tsv"
    return (final / last).is_file()


def _claim(work: Path, source: Source, format: str) -> tuple[bool, int]:
    """Start or resume the package folder *work*; refuse a folder that is something else,
    and one that another export is writing now (the marker is locked while an export
    runs). Returns whether an unfinished package of the same source is resumed, and the
    locked descriptor (the caller closes it)."""
    import fcntl

    mark = {"source": source.address, "format": format}
    marker = work / MARKER
    found = None
    if work.exists():
        try:
            found = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            found = None
        if found != mark and any(work.iterdir()):
            raise AlreadyExists(
                f"{work} exists and is not an unfinished package of {source.address}",
                hint="choose another --to folder, or move that one away",
            )
    work.mkdir(parents=True, exist_ok=True)
    if found != mark:
        _write_text(marker, json.dumps(mark) + "\n")
    lock = os.open(marker, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock)
        raise Busy(f"another export is writing {work} now", hint="wait for it to finish") from None
    if found == mark:
        for name in TAG_MANIFESTS:  # a rerun rewrites them; never a stale "done" mark
            with contextlib.suppress(FileNotFoundError):
                (work / name).unlink()
    return found == mark, lock


def _write_text(path: Path, text: str) -> None:
    part = path.with_name(part_name(path.name))
    with open(part, "w", encoding="utf-8", newline="\n") as out:
        out.write(text)
    os.replace(part, path)


def encode_path(path: str) -> str:
    """A payload path as RFC 8493 section 2.1.3 writes it in a manifest: CR, LF and ``%``
    (and only those) percent-encoded."""
    return path.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def bag_info(source: Source, oxum_bytes: int, oxum_files: int) -> str:
    from labkeep import __version__
    from labkeep.ops._bag_crate import _description, _title

    doc = source.doc
    creators = [c["name"] for c in doc.get("creators", []) if c.get("name") != ":unav"]
    contacts = [c["name"] for c in doc.get("contributors", [])
                if c.get("contributorType") == "ContactPerson"]  # fmt: skip
    if doc.get("doi"):
        identifier = f"https://doi.org/{doc['doi']}"
    else:
        identifier = doc.get("url") or f"urn:uuid:{uuid.uuid4()}"
    description = _title(doc)
    abstract = _description(doc)
    if abstract:
        description += ". " + abstract
    fields = [
        ("Source-Organization", (doc.get("publisher") or {}).get("name", "")),
        ("Contact-Name", (contacts or creators or [""])[0]),
        ("External-Description", description),
        ("External-Identifier", identifier),
        ("Internal-Sender-Identifier", source.address),
        ("Bagging-Date", datetime.now(UTC).date().isoformat()),
        ("Payload-Oxum", f"{oxum_bytes}.{oxum_files}"),
        ("Bag-Size", _size(oxum_bytes)),
        ("Bag-Software-Agent", f"labkeep {__version__} (https://pypi.org/project/labkeep/)"),
    ]
    return "".join(f"{k}: {_one_line(v)}\n" for k, v in fields if _one_line(v))


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError  # pragma: no cover


def _write_bag(
    source: Source,
    copier: PayloadCopier,
    bag: Path,
    report: Report,
    emit: Callable[[Result], None],
) -> bool:
    from labkeep.ops._bag_crate import METADATA, CrateBuilder, file_entity, file_id

    crate = CrateBuilder(source.doc, source.runs(), source.published)
    data = bag / "data"
    data.mkdir(exist_ok=True)
    copier.root = data
    parts = {name: bag / f".{name}.labkeep-part" for name in PAYLOAD_MANIFESTS}
    oxum_bytes = oxum_files = 0
    failed = 0
    with (
        tempfile.TemporaryFile("w+", encoding="utf-8") as spool,
        open(parts["manifest-sha256.txt"], "w", encoding="utf-8", newline="\n") as m256,
        open(parts["manifest-sha512.txt"], "w", encoding="utf-8", newline="\n") as m512,
    ):

        def checked() -> Iterator[Payload]:
            for item in source.items():
                if item.rel == METADATA:
                    raise UsageError(
                        f"{source.address} has its own {METADATA}: labkeep writes the "
                        "package's crate under that name",
                        hint="rename that file in a new version, then package that version",
                    )
                yield item

        for item, result in copier.run(checked()):
            emit(result)
            if result.status not in ("ok", "notneeded") or item.sha512 is None:
                failed += 1
                continue
            line = "data/" + encode_path(item.rel)
            m256.write(f"{item.sha256}  {line}\n")
            m512.write(f"{item.sha512}  {line}\n")
            if file_id(item.rel) not in crate.known_files and item.rel not in crate.known_files:
                spool.write(json.dumps(file_entity(item.rel, item.size, item.sha256),
                                       ensure_ascii=False) + "\n")  # fmt: skip
            oxum_bytes += item.size
            oxum_files += 1
        report.info.update(files=oxum_files, bytes=oxum_bytes)
        if failed:
            report.info["message"] = (
                f"{failed} file(s) could not be packaged; the bag was not finished"
            )
            return False
        crate_part = data / f".{METADATA}.labkeep-part"
        crate.write(spool, crate_part)
        os.replace(crate_part, data / METADATA)
        s256, s512, n = hash_file(data / METADATA)
        m256.write(f"{s256}  data/{METADATA}\n")
        m512.write(f"{s512}  data/{METADATA}\n")
        oxum_bytes += n
        oxum_files += 1
    for name, part in parts.items():
        os.replace(part, bag / name)
    _write_text(bag / "bagit.txt", BAGIT_TXT)
    _write_text(bag / "bag-info.txt", bag_info(source, oxum_bytes, oxum_files))
    sync_folder(bag)  # everything above is durable before the tag manifests say it is done
    tags = [bag / n for n in ("bagit.txt", "bag-info.txt", *PAYLOAD_MANIFESTS)]
    sums = [(p.name, *hash_file(p)[:2]) for p in tags]
    _write_text(bag / TAG_MANIFESTS[0], "".join(f"{a}  {name}\n" for name, a, _ in sums))
    _write_text(bag / TAG_MANIFESTS[1], "".join(f"{b}  {name}\n" for name, _, b in sums))
    (bag / MARKER).unlink()
    return True


def sync_folder(path: Path) -> None:
    """Flush the filesystem holding *path* (``syncfs``; ``sync`` where it is missing)."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(path, os.O_RDONLY)
    except (OSError, AttributeError):
        os.sync()
        return
    try:
        if libc.syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


def _zip(bag: Path, final: Path, label: str) -> None:
    """One zip (stored, ZIP64 where sizes or counts need it) holding the bag as ``LABEL/``,
    written under a temporary name and renamed when complete."""
    import zipfile

    part = final.with_name(part_name(final.name))
    with zipfile.ZipFile(part, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for folder, dirs, files in os.walk(bag):
            dirs.sort()
            for name in sorted(files):
                path = Path(folder) / name
                zf.write(path, f"{label}/{path.relative_to(bag).as_posix()}")
    os.replace(part, final)
