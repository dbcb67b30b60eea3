"""Runs as an RO-Crate: the Process Run Crate 0.5 profile (https://w3id.org/ro/wfrun/process/0.5).

An RO-Crate 1.1 (the version the profile builds on) that describes one dataset version
(its folder is the crate's root) and the runs that made it. For each run record:

- the program (``argv[0]``) is a ``SoftwareApplication``, one per distinct program and
  version; the version is known for ``python*`` (from the run's environment) and for a
  program named like an installed distribution;
- the run is a ``CreateAction`` listed in the root's ``mentions``: ``instrument`` = the
  application, ``object`` = the input dataset versions, ``result`` = the output files,
  ``startTime``/``endTime``, ``agent`` = a ``Person`` for the user, ``actionStatus``
  (Completed, Failed — cancelled runs too, their ``error`` says so — or Active while
  running), ``description`` = the command line; labkeep's own facts (run id, exit code,
  executor, SLURM job, working folder, environment) are ``PropertyValue`` entities under
  ``additionalProperty``, as Galaxy's exporter does;
- a container is a ``ContainerImage`` (``containerImage`` of the action) with its
  ``sha256``, ``additionalType`` DockerImage or SIFImage, and registry/tag when the image
  reference has them.

Inputs are datasets of the keep: a ``Dataset`` whose ``@id`` is the version's URL when
the record has one — a web-based data entity, listed in the root's ``hasPart`` as
RO-Crate 1.1 requires — else the local identifier ``#input-PROJECT/DATASET@N``, a
contextual entity (``rocrate`` warns when it reads a Dataset outside ``hasPart``; the
validator accepts it). Outputs are
``File`` entities at their path in the version, with ``contentSize`` and ``sha256``.

Attached or detached: without *base_url* the output files keep relative ``@id`` s and the
crate is an attached one whose payload is the version folder: ``ro-crate-metadata.json``
belongs next to those files (a validator given only the metadata must be told so:
``metadata_only``). With *base_url* (where the version's files are served, ending in
``/``), every output's ``@id`` is the URL of its file and the root's ``url`` is
*base_url*: the crate is complete without any file beside it (as RO-Crate 1.2 asks of a
detached crate: every data entity web-based). The root's ``@id`` stays ``./``, which
RO-Crate 1.1 and the profile's validator require.

Terms of the workflow-run vocabulary (``ContainerImage``, ``containerImage``, ``sha256``,
...) are declared inline in ``@context`` with the IRIs of
https://w3id.org/ro/terms/workflow-run/context, so that the crate needs no context but
RO-Crate's own to be read offline; as in that context, ``sha256`` is
``wfrun:sha256`` for files and images alike.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from labkeep.errors import UsageError

if TYPE_CHECKING:
    from rocrate.model.entity import Entity
    from rocrate.rocrate import ROCrate

__all__ = ["PROFILE", "write_ro_crate"]

PROFILE = "https://w3id.org/ro/wfrun/process/0.5"
#: the RO-Crate version Process Run Crate 0.5 builds on; its validator requires the
#: metadata descriptor to conform to exactly this one (``rocrate`` writes 1.3 by default)
RO_CRATE_VERSION = "1.1"
WFRUN = "https://w3id.org/ro/terms/workflow-run#"
#: the workflow-run terms this crate uses, with the IRIs of the workflow-run context
WFRUN_TERMS = {
    term: WFRUN + term
    for term in ("ContainerImage", "DockerImage", "SIFImage", "containerImage", "registry",
                 "tag", "sha256")
}  # fmt: skip
SCHEMA = "http://schema.org/"
STATUS = {
    "done": "CompletedActionStatus",
    "failed": "FailedActionStatus",
    "cancelled": "FailedActionStatus",
    "running": "ActiveActionStatus",
}
#: what the root says when the caller names no licence (RO-Crate requires one)
NO_LICENSE = "#license-not-stated"


def write_ro_crate(
    records: list[dict[str, Any]],
    dest: Path,
    *,
    name: str,
    description: str = "",
    base_url: str | None = None,
    license: str | None = None,
) -> Path:
    """Write ``dest/ro-crate-metadata.json`` describing *records* (runs) and return its path.

    *records* are run records (see the module docstring and issue 10 for their keys); the
    outputs of every record are the crate's files. *license* is a URL (for instance
    ``https://spdx.org/licenses/CC-BY-4.0``); without one the root points to an entity
    saying that none was stated, as RO-Crate requires a licence. Needs the ``provenance``
    extra (``rocrate``).

    Memory: the ``rocrate`` library keeps every entity of the crate as a dict until the
    document is written (it is then encoded to the file piece by piece, not as one
    string), so memory grows linearly with the number of output files: measured here
    ~1.5 KB per file, 150 MB and 6.4 s for 100,000 files (a 29 MB document). The work is
    linear: entities shared between runs are found in a dict, never by a scan. The file
    is written under a temporary name and renamed, so a crate is never half-written.
    """
    from rocrate.rocrate import ROCrate

    if base_url is not None and not (base_url.startswith(("http://", "https://"))
                                     and base_url.endswith("/")):  # fmt: skip
        raise UsageError(
            f"base URL {base_url!r} is not an http(s) URL of a folder",
            hint="give the URL under which the version's files are served, ending in '/'",
        )
    crate = ROCrate(version=RO_CRATE_VERSION)
    crate.metadata.extra_terms.update(WFRUN_TERMS)
    root = crate.root_dataset
    root["name"] = name
    if base_url:
        root["url"] = base_url
    root["description"] = description or _default_description(records)
    root["datePublished"] = datetime.now(UTC).isoformat(timespec="seconds")
    root["license"] = _license(crate, license)
    profile = crate.add_jsonld(
        {"@id": PROFILE, "@type": "CreativeWork", "name": "Process Run Crate", "version": "0.5"}
    )
    root["conformsTo"] = profile

    builder = _Builder(crate, base_url)
    actions = [builder.action(record) for record in records]
    root["mentions"] = _one_or_many(actions)
    if isinstance(root.get("hasPart"), list) and len(root["hasPart"]) == 1:
        root["hasPart"] = root["hasPart"][0]

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / "ro-crate-metadata.json"
    partial = dest / ".ro-crate-metadata.json.partial"
    with open(partial, "w", encoding="utf-8") as out:
        json.dump(crate.metadata.generate(), out, indent=1, ensure_ascii=False)
    partial.replace(target)
    return target


def _one_or_many(entities: list[Entity]) -> Entity | list[Entity] | None:
    """RO-Crate 1.1 recommends a single value over a one-element list."""
    if not entities:
        return None
    return entities[0] if len(entities) == 1 else entities


def _default_description(records: list[dict[str, Any]]) -> str:
    outputs = sorted({f"{r['output_dataset']}@{r['version']}" for r in records
                      if r.get("output_dataset")})  # fmt: skip
    made = f" that made {', '.join(outputs)}" if outputs else ""
    return f"{len(records)} run(s) recorded by labkeep{made}."


def _license(crate: ROCrate, license: str | None) -> Entity:
    if license:
        return crate.add_jsonld({"@id": license, "@type": "CreativeWork", "name": license})
    return crate.add_jsonld(
        {
            "@id": NO_LICENSE,
            "@type": "CreativeWork",
            "name": "No licence stated",
            "description": "No licence was given when this crate was exported; "
            "ask the dataset's owners before reusing it.",
        }
    )


def _timestamp(value: str | None) -> str | None:
    """ISO 8601 with a numeric offset (``+00:00``, not ``Z``) and at most milliseconds,
    the form the profile's validator expects."""
    if not value:
        return None
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    spec = "milliseconds" if moment.microsecond else "seconds"
    return moment.isoformat(timespec=spec)


def _image_parts(image: str) -> dict[str, str]:
    """registry, name and tag of an image reference such as ``ghcr.io/org/tool:1.2``."""
    ref = image.split("://", 1)[-1].split("@", 1)[0]
    first, slash, rest = ref.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, rest
    else:
        registry, path = "docker.io", ref
    tail = path.rsplit("/", 1)[-1]
    parts = {"registry": registry, "name": path}
    if ":" in tail:
        parts["name"], parts["tag"] = path.rsplit(":", 1)
    return parts


class _Builder:
    """Adds the entities of run records to one crate, sharing applications, people,
    images and input datasets between runs (dicts keyed by identifier: no scans)."""

    def __init__(self, crate: ROCrate, base_url: str | None) -> None:
        self.crate = crate
        self.base_url = base_url
        self.known: dict[str, Entity] = {}

    def _once(self, jsonld: dict[str, Any]) -> Entity:
        """The entity with this ``@id``, added the first time it is met."""
        key = jsonld["@id"]
        if key not in self.known:
            self.known[key] = self.crate.add_jsonld(dict(jsonld))
        return self.known[key]

    def action(self, record: dict[str, Any]) -> Entity:
        run = f"#run-{record['id']}"
        argv = record.get("argv") or record.get("command") or []
        props: dict[str, Any] = {
            "@type": "CreateAction",
            "name": record.get("message") or f"labkeep run {record['id']}",
            "description": shlex.join(argv) if argv else "",
            # a plain string, as in the profile's examples and its validator's shapes
            "actionStatus": SCHEMA + STATUS.get(record.get("state") or "", "FailedActionStatus"),
        }
        start, end = _timestamp(record.get("started_at")), _timestamp(record.get("finished_at"))
        if start:
            props["startTime"] = start
        if end:
            props["endTime"] = end
        if record.get("state") in ("failed", "cancelled"):
            props["error"] = record.get("error") or (
                "cancelled" if record["state"] == "cancelled" else
                f"exit code {record.get('exit_code')}"
            )  # fmt: skip
        action = self.crate.add_action(
            self.application(argv, record.get("environment") or {}),
            identifier=run,
            object=_one_or_many([self.input(item) for item in record.get("inputs") or []]),
            result=_one_or_many(self.outputs(record.get("outputs") or [])),
            properties=props,
        )
        if record.get("user"):
            action["agent"] = self._once(
                {
                    "@id": f"#person-{quote(record['user'], safe='')}",
                    "@type": "Person",
                    "name": record["user"],
                }
            )
        container = record.get("container")
        if container and container.get("image"):
            action["containerImage"] = self.image(container)
        action["additionalProperty"] = self.facts(run, record)
        return action

    def application(self, argv: list[str], environment: dict[str, Any]) -> Entity:
        program = PurePosixPath(argv[0]).name if argv else "unknown"
        version: str | None = None
        packages = environment.get("packages") or {}
        if program.startswith("python"):
            version = (environment.get("python") or {}).get("version")
        elif program in packages:
            version = packages[program]
        key = f"#software-{quote(program, safe='')}" + (f"-{quote(version)}" if version else "")
        jsonld: dict[str, Any] = {"@id": key, "@type": "SoftwareApplication", "name": program}
        if version:
            jsonld["softwareVersion"] = version
        if program.startswith("python"):
            jsonld["url"] = "https://www.python.org/"
        return self._once(jsonld)

    def image(self, container: dict[str, Any]) -> Entity:
        image = str(container["image"])
        digest = str(container.get("digest") or "")
        sif = container.get("engine") in ("apptainer", "singularity")
        jsonld: dict[str, Any] = {
            "@id": f"#container-{quote(image, safe='')}",
            "@type": "ContainerImage",
            "additionalType": {"@id": WFRUN + ("SIFImage" if sif else "DockerImage")},
            "identifier": image,
        }
        if sif and image.endswith(".sif"):
            jsonld["name"] = PurePosixPath(image).name
        else:
            jsonld.update(_image_parts(image))
        if digest.startswith("sha256:"):
            jsonld["sha256"] = digest.removeprefix("sha256:")
            jsonld["@id"] = f"#container-{jsonld['sha256']}"
        if container.get("engine"):
            jsonld["description"] = f"run with {container['engine']}"
        return self._once(jsonld)

    def input(self, item: dict[str, Any]) -> Entity:
        address = item.get("address") or f"{item['dataset']}@{item['version']}"
        url = item.get("url")
        key = url if url and "://" in url else f"#input-{quote(address, safe='/@')}"
        jsonld: dict[str, Any] = {"@id": key, "@type": "Dataset", "name": address,
                                  "identifier": address}  # fmt: skip
        if item.get("version") is not None:
            jsonld["version"] = str(item["version"])
        if item.get("manifest_sha256"):
            jsonld["description"] = (
                f"version {item.get('version')} of {item.get('dataset')}; "
                f"SHA-256 of its MANIFEST.sha256: {item['manifest_sha256']}"
            )
        if url:
            jsonld["url"] = url
        if key in self.known:
            return self.known[key]
        entity = self._once(jsonld)
        if key == url:
            # a web-based data entity: RO-Crate 1.1 wants every File/Dataset with a URL
            # linked from the root (the validator's REQUIRED "directly referenced" rule)
            self.crate.root_dataset.append_to("hasPart", entity)
        return entity

    def outputs(self, files: Iterable[dict[str, Any]]) -> list[Entity]:
        from rocrate.model.file import File

        made = []
        for item in files:
            path = str(item["path"])
            ident = (self.base_url or "") + quote(path)
            entity = self.known.get(ident)
            if entity is None:
                props: dict[str, Any] = {"name": PurePosixPath(path).name}
                if item.get("size") is not None:
                    props["contentSize"] = str(item["size"])
                if item.get("sha256"):
                    props["sha256"] = item["sha256"]
                file = (
                    File(self.crate, source=ident, properties=props)
                    if self.base_url
                    else File(self.crate, dest_path=path, properties=props)
                )
                entity = self.known[ident] = self.crate.add(file)
            made.append(entity)
        return made

    def facts(self, run: str, record: dict[str, Any]) -> list[Entity]:
        """labkeep's own facts about a run, each a PropertyValue."""
        slurm = record.get("slurm") or {}
        environment = record.get("environment")
        values: dict[str, Any] = {
            "labkeep-run-id": record.get("id"),
            "state": record.get("state"),
            "exit-code": record.get("exit_code"),
            "duration-seconds": record.get("duration_seconds"),
            "executor": record.get("executor"),
            "labkeep-job-id": record.get("job_id"),
            "slurm-job-id": slurm.get("job_id"),
            "slurm-nodes": slurm.get("nodes"),
            "slurm-resources": slurm.get("resources"),
            "working-directory": record.get("cwd"),
            "command-template": shlex.join(record["command"]) if record.get("command") else None,
            "rerun-of": record.get("rerun_of"),
            "environment": json.dumps(environment, sort_keys=True) if environment else None,
        }
        return [
            self.crate.add_jsonld(
                {"@id": f"{run}-{key}", "@type": "PropertyValue", "name": key, "value": value}
            )
            for key, value in values.items()
            if value is not None
        ]
