"""What a deposit sends: the target's settings and token, InvenioRDM metadata made from
DataCite, the file plan, and the zips of top folders (see :mod:`labkeep.ops.deposit`)."""

from __future__ import annotations

import configparser
import contextlib
import hashlib
import html
import os
import re
import shutil
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

from labkeep.clock import utcnow
from labkeep.errors import ConfigError, IntegrityError, UsageError
from labkeep.names import address_text

if TYPE_CHECKING:
    from labkeep.keep import Keep

#: defaults of the targets labkeep knows; any other [publish.NAME] needs its url
KNOWN_TARGETS: dict[str, dict[str, Any]] = {
    "zenodo": {
        "url": "https://zenodo.org",
        "sandbox_url": "https://sandbox.zenodo.org",
        "max_files": 100,
    },
    "invenio": {"max_files": 100},
}
RELEASE_PREFIX = "raw/"
CHUNK = 1 << 20
#: InvenioRDM's resource types for DataCite's resourceTypeGeneral
RESOURCE_TYPES = {
    "Dataset": "dataset",
    "Image": "image",
    "Software": "software",
    "Text": "publication",
    "JournalArticle": "publication-article",
    "Preprint": "publication-preprint",
    "Report": "publication-report",
    "Audiovisual": "video",
    "Model": "model",
    "Workflow": "workflow",
    "PhysicalObject": "physicalobject",
    "ComputationalNotebook": "software",
}


@dataclass(frozen=True)
class Target:
    """A repository to deposit in: a ``[publish.NAME]`` section of labkeep.toml."""

    name: str
    url: str
    sandbox: bool
    max_files: int
    credentials_file: str | None
    profile: str
    timeout: float
    attempts: int
    retry_base: float
    retry_cap: float
    reserve_doi: bool
    #: a community the record is submitted to (its curators publish it)
    community: str | None = None

    @property
    def label(self) -> str:
        return f"{self.name} (sandbox)" if self.sandbox else self.name

    @property
    def token_variable(self) -> str:
        name = re.sub(r"[^A-Z0-9]", "_", self.name.upper())
        return f"LABKEEP_{name}_SANDBOX_TOKEN" if self.sandbox else f"LABKEEP_{name}_TOKEN"


def target_of(keep: Keep, name: str, *, sandbox: bool = False) -> Target:
    """The target *name* from labkeep.toml over labkeep's defaults for it."""
    configured = keep.config.publish_targets.get(name)
    if configured is None and name not in KNOWN_TARGETS:
        known = sorted({*KNOWN_TARGETS, *keep.config.publish_targets})
        raise UsageError(
            f"no publishing target {name!r}",
            hint="use one of: " + ", ".join(known) + f" (or add [publish.{name}] with its "
            "url to labkeep.toml)",
        )
    section = {**KNOWN_TARGETS.get(name, {}), **(configured or {})}
    key = "sandbox_url" if sandbox else "url"
    url = str(section.get(key) or "").rstrip("/")
    if not url:
        raise ConfigError(
            f"[publish.{name}] has no {key}" + (": this target has no sandbox" if sandbox else ""),
            hint=f'set {key} = "https://..." (the repository\'s base URL) in labkeep.toml',
        )
    if not url.startswith(("https://", "http://")):
        raise ConfigError(f"[publish.{name}] {key} must be an http(s) URL, not {url!r}")
    try:
        target = Target(
            name=name,
            url=url,
            sandbox=sandbox,
            max_files=int(section.get("max_files", 100)),
            credentials_file=str(keep.root / Path(str(section["credentials_file"])).expanduser())
            if section.get("credentials_file")
            else None,
            profile=str(section.get("profile") or name),
            timeout=float(section.get("timeout", 120)),
            attempts=int(section.get("attempts", 6)),
            retry_base=float(section.get("retry_base_seconds", 1.0)),
            retry_cap=float(section.get("retry_max_seconds", 120.0)),
            reserve_doi=bool(section.get("reserve_doi", True)),
            community=str(section["community"]) if section.get("community") else None,
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[publish.{name}] in labkeep.toml: {exc}") from None
    if target.max_files < 1 or target.attempts < 1:
        raise ConfigError(f"[publish.{name}]: max_files and attempts must be at least 1")
    return target


def token_for(target: Target, credentials: str | None = None) -> str:
    """The target's token: the environment first, then the credentials file (*credentials*
    overrides the configured one). Never stored, never printed."""
    value = os.environ.get(target.token_variable, "").strip()
    if value:
        return value
    path = credentials or target.credentials_file
    key = "sandbox_token" if target.sandbox else "token"
    if path:
        parser = configparser.ConfigParser(interpolation=None)
        try:
            with open(Path(path).expanduser(), encoding="utf-8") as handle:
                parser.read_file(handle)
        except OSError as exc:
            raise UsageError(
                f"cannot read the credentials file {path}: {exc.strerror or exc}",
                hint="check the path and its permissions (it should be readable by you only)",
            ) from None
        except configparser.Error:
            raise UsageError(
                f"the credentials file {path} is not an INI file",
                hint=f"write [{target.profile}] and a line {key} = ... in it",
            ) from None
        if parser.has_option(target.profile, key):
            found = parser.get(target.profile, key).strip()
            if found:
                return found
        raise UsageError(
            f"the credentials file {path} has no {key} in section [{target.profile}]",
            hint=f"add [{target.profile}] with {key} = ... (a personal access token of "
            f"{target.url})",
        )
    raise UsageError(
        f"no token for {target.label}",
        hint=f"set {target.token_variable} (a personal access token of {target.url} with the "
        "deposit scopes), or name a credentials file: --credentials FILE or "
        f"credentials_file in [publish.{target.name}]",
    )


# -- metadata ---------------------------------------------------------------------------


def invenio_metadata(doc: dict[str, Any], *, publication_date: str | None = None) -> dict[str, Any]:
    """InvenioRDM's record metadata for a DataCite 4.5 document (what ``POST
    /api/records`` takes under ``metadata``)."""
    types = doc.get("types", {})
    meta: dict[str, Any] = {
        "resource_type": {"id": RESOURCE_TYPES.get(types.get("resourceTypeGeneral"), "other")},
        "title": doc["titles"][0]["title"],
        "publication_date": publication_date or utcnow().date().isoformat(),
        "creators": [_creator(c) for c in doc.get("creators", [])],
        "publisher": doc.get("publisher", {}).get("name", ""),
    }
    descriptions = [
        d["description"]
        for d in doc.get("descriptions", [])
        if d.get("descriptionType", "Abstract") == "Abstract"
    ]
    if descriptions:
        meta["description"] = _html(descriptions[0])
    if doc.get("contributors"):
        meta["contributors"] = [
            {**_creator(c), "role": {"id": str(c.get("contributorType", "Other")).lower()}}
            for c in doc["contributors"]
        ]
    rights = [
        {"id": r["rightsIdentifier"].lower()}
        for r in doc.get("rightsList", [])
        if r.get("rightsIdentifierScheme") == "SPDX" and r.get("rightsIdentifier")
    ]
    if rights:
        meta["rights"] = rights
    if doc.get("subjects"):
        meta["subjects"] = [{"subject": s["subject"]} for s in doc["subjects"]]
    if doc.get("fundingReferences"):
        meta["funding"] = [_funding(f) for f in doc["fundingReferences"]]
    related = []
    for r in doc.get("relatedIdentifiers", []):
        related.append(
            {
                "identifier": r["relatedIdentifier"],
                "scheme": str(r.get("relatedIdentifierType", "URL")).lower(),
                "relation_type": {"id": str(r.get("relationType", "References")).lower()},
            }
        )
    if doc.get("url"):  # the landing page in labkeep: the same files, checked
        related.append(
            {
                "identifier": doc["url"],
                "scheme": "url",
                "relation_type": {"id": "isidenticalto"},
                "resource_type": {"id": "dataset"},
            }
        )
    if related:
        meta["related_identifiers"] = related
    if doc.get("dates"):
        meta["dates"] = [
            {"date": d["date"], "type": {"id": str(d.get("dateType", "Other")).lower()}}
            for d in doc["dates"]
        ]
    if doc.get("version"):
        meta["version"] = str(doc["version"])
    language = str(doc.get("language") or "")
    if len(language) == 3 and language.isalpha():
        meta["languages"] = [{"id": language.lower()}]
    return meta


def _creator(c: dict[str, Any]) -> dict[str, Any]:
    if c.get("nameType") == "Organizational":
        person: dict[str, Any] = {"type": "organizational", "name": c["name"]}
    else:
        family = c.get("familyName")
        given = c.get("givenName")
        if family is None:
            family, _, rest = str(c["name"]).partition(",")
            given = given or rest.strip() or None
        person = {"type": "personal", "family_name": family.strip()}
        if given:
            person["given_name"] = given
    identifiers = [
        {"scheme": "orcid", "identifier": n["nameIdentifier"].rsplit("/", 1)[-1]}
        for n in c.get("nameIdentifiers", [])
        if n.get("nameIdentifierScheme") == "ORCID"
    ]
    if identifiers:
        person["identifiers"] = identifiers
    creator: dict[str, Any] = {"person_or_org": person}
    affiliations = []
    for a in c.get("affiliation", []):
        if a.get("affiliationIdentifierScheme") == "ROR" and a.get("affiliationIdentifier"):
            affiliations.append({"id": str(a["affiliationIdentifier"]).rsplit("/", 1)[-1]})
        else:
            affiliations.append({"name": a["name"]})
    if affiliations:
        creator["affiliations"] = affiliations
    return creator


def _funding(f: dict[str, Any]) -> dict[str, Any]:
    funder: dict[str, Any]
    if f.get("funderIdentifierType") == "ROR" and f.get("funderIdentifier"):
        funder = {"id": str(f["funderIdentifier"]).rsplit("/", 1)[-1]}
    else:
        funder = {"name": f["funderName"]}
    out: dict[str, Any] = {"funder": funder}
    if f.get("awardNumber") or f.get("awardTitle"):
        award: dict[str, Any] = {}
        if f.get("awardNumber"):
            award["number"] = f["awardNumber"]
        if f.get("awardTitle"):
            award["title"] = {"en": f["awardTitle"]}
        out["award"] = award
    return out


def _html(text: str) -> str:
    """InvenioRDM's description is HTML: plain text is escaped (a ``<script>`` in a
    description is shown as written, never run), paragraphs kept."""
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    return "".join("<p>" + html.escape(p).replace("\n", "<br>") + "</p>" for p in paragraphs)


def metadata_problems(doc: dict[str, Any]) -> list[str]:
    problems = []
    if not doc.get("creators") or any(c.get("name") == ":unav" for c in doc["creators"]):
        problems.append("creators: a published record needs its creators (people or groups)")
    return problems


@dataclass
class Source:
    project: str
    dataset: str
    dataset_id: int
    version: int
    release: bool

    @property
    def address(self) -> str:
        return address_text(self.project, self.dataset, version=self.version)


# -- the plan -------------------------------------------------------------------------


@dataclass
class PlannedFile:
    """One file key of the record: a dataset file, or a zip of a top folder."""

    key: str
    kind: str  # file | zip
    source: str
    size: int | None = None
    sha256: str | None = None
    members: int = 1

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {"key": self.key, "kind": self.kind}
        if self.kind == "zip":
            record.update(folder=self.source or ".", files=self.members)
        if self.size is not None:
            record["size"] = self.size
        if self.sha256:
            record["sha256"] = self.sha256
        return record


@dataclass
class Plan:
    files: list[PlannedFile]
    packaged: bool
    source_files: int
    bytes: int


ROOT_ZIP = "root-files.zip"


def key_of(path: str, release: bool) -> str:
    return path[len(RELEASE_PREFIX) :] if release and path.startswith(RELEASE_PREFIX) else path


def make_plan(keep: Keep, address: str, *, release: bool, max_files: int) -> Plan:
    """The record's files: the version's files when they fit the limit, else one zip per
    top folder (below the folders every file is in, such as a session's ``raw/``), and the
    files beside those folders as they are (or as one more zip if that still does not
    fit)."""
    count, size = 0, 0
    common: list[str] | None = None
    for entry in keep.stream_entries(address).entries:
        count += 1
        size += int(entry["size"])
        parts = key_of(str(entry["path"]), release).split("/")[:-1]
        if common is None:
            common = parts
        else:
            n = 0
            while n < min(len(common), len(parts)) and common[n] == parts[n]:
                n += 1
            del common[n:]
    if count <= max_files:
        files = [
            PlannedFile(
                key_of(str(e["path"]), release),
                "file",
                str(e["path"]),
                int(e["size"]),
                str(e["sha256"]),
            )
            for e in keep.stream_entries(address).entries
        ]
        return Plan(files, False, count, size)
    base = "/".join(common or [])
    depth = len(common or [])
    folders: dict[str, int] = {}
    roots = 0
    for entry in keep.stream_entries(address).entries:
        parts = key_of(str(entry["path"]), release).split("/")
        if len(parts) - 1 > depth:
            folders[parts[depth]] = folders.get(parts[depth], 0) + 1
        else:
            roots += 1
    planned = [
        PlannedFile(f"{top}.zip", "zip", f"{base}/{top}" if base else top, members=n)
        for top, n in sorted(folders.items())
    ]
    if roots and len(planned) + roots <= max_files:
        for entry in keep.stream_entries(address).entries:
            key = key_of(str(entry["path"]), release)
            if key.count("/") == depth:
                planned.append(
                    PlannedFile(
                        key, "file", str(entry["path"]), int(entry["size"]), str(entry["sha256"])
                    )
                )
    elif roots:
        planned.append(PlannedFile(ROOT_ZIP, "zip", base, members=roots))
    keys = [p.key for p in planned]
    if len(set(keys)) != len(keys):
        raise UsageError(
            f"{address}: a top folder's zip would have the same name as a file",
            hint="rename the file or the folder in a new version, then publish that",
        )
    if len(planned) > max_files:
        raise UsageError(
            f"{address} has {count} files in {len(folders)} top folders: even packed as one "
            f"zip per top folder that is more than the {max_files} files a record takes",
            hint="group the files into fewer top folders in a new version (or raise "
            "max_files for this target), then publish that",
        )
    return Plan(sorted(planned, key=lambda p: p.key), True, count, size)


def staging_dir(keep: Keep, deposit_id: int) -> Path:
    return keep.config.runs_path / f"publish-{deposit_id}"


def remove_staging(keep: Keep, deposit_id: int) -> None:
    with contextlib.suppress(OSError):
        shutil.rmtree(staging_dir(keep, deposit_id))


class _Sink:
    """A write-only file for zipfile (not seekable: members get data descriptors)."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle
        self._pos = 0

    def write(self, data: bytes) -> int:
        self._handle.write(data)
        self._pos += len(data)
        return len(data)

    def tell(self) -> int:
        return self._pos

    def flush(self) -> None:
        self._handle.flush()


def zip_folder(keep: Keep, source: Source, deposit_id: int, key: str, folder: str) -> Path:
    """Pack the version's files under *folder* (a path as in the record; for
    :data:`ROOT_ZIP`, only the files directly in it) into a stored ZIP64 file in the
    staging folder, each member checked against its SHA-256. The same version always
    gives the same bytes (a re-sent zip has the same MD5)."""
    staging = staging_dir(keep, deposit_id)
    staging.mkdir(parents=True, exist_ok=True)
    target = staging / key.replace("/", "_")
    tmp = target.with_name(f".{target.name}.part")
    prefix = (RELEASE_PREFIX if source.release else "") + (f"{folder}/" if folder else "")
    where = address_text(source.project, source.dataset, prefix.rstrip("/") or None, source.version)
    entries = keep.stream_entries(where).entries
    with (
        open(tmp, "wb") as raw,
        zipfile.ZipFile(
            cast("IO[bytes]", _Sink(raw)),
            "w",
            compression=zipfile.ZIP_STORED,
            allowZip64=True,
        ) as archive,
    ):
        for entry in entries:
            path = str(entry["path"])
            name = key_of(path, source.release)
            if key == ROOT_ZIP and "/" in (name[len(folder) + 1 :] if folder else name):
                continue  # the files directly in the folder only
            when = datetime.fromtimestamp(int(entry["mtime_ns"]) / 1e9, UTC)
            info = zipfile.ZipInfo(name, date_time=_zip_time(when))
            info.file_size = int(entry["size"])
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_STORED
            digest = hashlib.sha256()
            _, handle = keep.open_file(
                address_text(source.project, source.dataset, path, source.version)
            )
            with handle, archive.open(info, "w", force_zip64=info.file_size > 0x7FFFFFFF) as out:
                while chunk := handle.read(CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != entry["sha256"]:
                raise IntegrityError(
                    f"{source.address}/{path} does not match its SHA-256 in the catalog: "
                    "nothing of it was sent",
                    hint=f"run 'labkeep verify {source.project}/{source.dataset} --repair', "
                    "then the same publish command again",
                )
    os.replace(tmp, target)
    return target


def _zip_time(when: datetime) -> tuple[int, int, int, int, int, int]:
    if when.year < 1980:
        return (1980, 1, 1, 0, 0, 0)
    return (when.year, when.month, when.day, when.hour, when.minute, when.second)
