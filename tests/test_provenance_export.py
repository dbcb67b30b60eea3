"""Runs exported as a Process Run Crate 0.5: the entities a user looks for, and the crate
checked by ``rocrate-validator`` against the profile's REQUIRED rules, offline.

Offline: the validator resolves the crate's ``@context`` (https://w3id.org/ro/crate/1.1/context)
through its HTTP cache; the session fixture puts the RO-Crate 1.1 context into a private
cache (``tests/data/ro-crate-1.1-context.jsonld``: the copy shipped in ``rocrate`` 0.9.0,
Apache-2.0) and the validator runs with ``offline=True``, so it never touches the network.
Without that context the data graph is empty and every shape passes vacuously: the last
test proves the checks bite.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from rocrate.rocrate import ROCrate
from rocrate_validator import services
from rocrate_validator.models import ValidationSettings

from labkeep.ops.environment import capture
from labkeep.ops.provenance_export import PROFILE, write_ro_crate

#: pyshacl 0.40 (under rocrate-validator) still uses rdflib's ConjunctiveGraph
pytestmark = pytest.mark.filterwarnings("ignore:ConjunctiveGraph is deprecated:DeprecationWarning")

CONTEXT_URL = "https://w3id.org/ro/crate/1.1/context"
CONTEXT_FILE = Path(__file__).parent / "data" / "ro-crate-1.1-context.jsonld"
SCHEMA = "http://schema.org/"


def required_issues(crate: Path, cache: Path, *, metadata_only: bool = False) -> list[str]:
    """What the validator finds against the REQUIRED rules of process-run-crate-0.5."""
    settings = ValidationSettings(
        rocrate_uri=str(crate),
        profile_identifier="process-run-crate-0.5",
        requirement_severity="REQUIRED",
        offline=True,
        cache_path=cache,
        metadata_only=metadata_only,
    )
    result = services.validate(settings)
    issues = [f"{i.check.identifier} {i.check.name}: {i.message}" for i in result.get_issues()]
    assert result.passed() == (not issues)
    return issues


ENVIRONMENT = capture()


def record(run_id: int, **changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": run_id,
        "state": "done",
        "message": "U-Net v2 masks",
        "command": ["python", "segment.py", "{inputs}", "{outputs}"],
        "argv": ["python", "segment.py", "/keep/in/s017", "/keep/out"],
        "cwd": "/home/alice/analysis",
        "output_dataset": "imaging-2026/seg-unet",
        "version": 2,
        "inputs": [
            {
                "address": "imaging-2026/s017@3",
                "dataset": "imaging-2026/s017",
                "version": 3,
                "manifest_sha256": "a" * 64,
                "url": "https://keep.example.org/p/imaging-2026/s017/v/3/",
            }
        ],
        "outputs": [
            {"path": "masks/cell-01.png", "size": 5, "sha256": "1" * 64},
            {"path": "masks/cell 02.png", "size": 6, "sha256": "2" * 64},
        ],
        "environment": ENVIRONMENT,
        "container": None,
        "exit_code": 0,
        "started_at": "2026-11-29T10:00:00Z",
        "finished_at": "2026-11-29T10:00:12.5Z",
        "duration_seconds": 12.5,
        "user": "alice",
        "executor": "local",
        "job_id": 7,
        "slurm": None,
        "error": "",
        "rerun_of": None,
    }
    return {**base, **changes}


RECORDS = [
    record(
        12,
        container={
            "image": "ghcr.io/lab/unet:2.1",
            "engine": "docker",
            "digest": "sha256:" + "e" * 64,
        },
    ),
    record(
        13,
        state="failed",
        message="U-Net v3 (out of memory)",
        argv=["cellpose", "--dir", "/keep/in"],
        command=["cellpose", "--dir", "{inputs}"],
        outputs=[],
        exit_code=137,
        error="killed: out of memory",
        executor="slurm",
        job_id=None,
        slurm={"job_id": "4711", "nodes": "gpu01", "resources": "--partition=gpu --mem=8G"},
        container={
            "image": "/images/cellpose.sif",
            "engine": "apptainer",
            "digest": "sha256:" + "f" * 64,
        },
        environment={**ENVIRONMENT, "packages": {"cellpose": "3.1.0"}},
    ),
    record(
        14,
        inputs=[
            {
                "address": "imaging-2026/s017@3",
                "dataset": "imaging-2026/s017",
                "version": 3,
                "manifest_sha256": "a" * 64,
                "url": None,
            },
            {
                "address": "imaging-2026/s018@1",
                "dataset": "imaging-2026/s018",
                "version": 1,
                "manifest_sha256": "b" * 64,
                "url": None,
            },
            {
                "address": "imaging-2026/s019@2",
                "dataset": "imaging-2026/s019",
                "version": 2,
                "manifest_sha256": "c" * 64,
                "url": None,
            },
        ],
        outputs=[{"path": "summary.csv", "size": 7, "sha256": "3" * 64}],
        rerun_of=12,
    ),
]


def materialise(folder: Path, records: list[dict[str, Any]]) -> None:
    """The output files, as they are in the version folder the crate sits in."""
    for rec in records:
        for item in rec["outputs"]:
            target = folder / item["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(b"x" * item["size"])


@pytest.fixture(scope="module")
def attached(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("seg-unet-v2")
    materialise(folder, RECORDS)
    write_ro_crate(RECORDS, folder, name="imaging-2026/seg-unet@2", description="masks")
    return folder


#: the input datasets are Dataset entities outside the crate's hasPart (they are other
#: versions in the keep, not part of this one): RO-Crate 1.1 allows it, rocrate warns
EXTERNAL_INPUTS = pytest.mark.filterwarnings("ignore:.*looks like a data entity:UserWarning")


@EXTERNAL_INPUTS
def test_the_crate_has_what_a_user_looks_for(attached: Path) -> None:
    crate = ROCrate(attached)
    root = crate.root_dataset
    assert root["conformsTo"].id == PROFILE
    assert root["name"] == "imaging-2026/seg-unet@2"
    assert crate.metadata["conformsTo"] == "https://w3id.org/ro/crate/1.1"
    assert {a.id for a in root["mentions"]} == {"#run-12", "#run-13", "#run-14"}

    done = crate.get("#run-12")
    assert done.type == "CreateAction"
    assert done["actionStatus"] == SCHEMA + "CompletedActionStatus"
    assert done["description"] == "python segment.py /keep/in/s017 /keep/out"
    assert done["startTime"] == "2026-11-29T10:00:00+00:00"
    assert done["endTime"] == "2026-11-29T10:00:12.500+00:00"
    assert "error" not in done
    assert done["agent"].type == "Person" and done["agent"]["name"] == "alice"
    app = done["instrument"]
    assert app.type == "SoftwareApplication" and app["name"] == "python"
    assert app["softwareVersion"] == ENVIRONMENT["python"]["version"]
    image = done["containerImage"]
    assert image.type == "ContainerImage"
    assert image["sha256"] == "e" * 64
    assert (image["registry"], image["name"], image["tag"]) == ("ghcr.io", "lab/unet", "2.1")
    assert image["additionalType"].endswith("#DockerImage")
    source = done["object"]
    assert source.id == "https://keep.example.org/p/imaging-2026/s017/v/3/"
    assert source.type == "Dataset" and source["version"] == "3"
    outputs = {f.id: f for f in done["result"]}
    assert set(outputs) == {"masks/cell-01.png", "masks/cell%2002.png"}
    assert outputs["masks/cell-01.png"]["sha256"] == "1" * 64
    assert outputs["masks/cell-01.png"]["contentSize"] == "5"
    facts = {p["name"]: p["value"] for p in done["additionalProperty"]}
    assert facts["exit-code"] == 0 and facts["executor"] == "local"
    assert facts["labkeep-job-id"] == 7
    assert json.loads(facts["environment"])["python"] == ENVIRONMENT["python"]

    failed = crate.get("#run-13")
    assert failed["actionStatus"] == SCHEMA + "FailedActionStatus"
    assert failed["error"] == "killed: out of memory"
    assert "result" not in failed
    assert failed["instrument"]["name"] == "cellpose"
    assert failed["instrument"]["softwareVersion"] == "3.1.0"
    assert failed["containerImage"]["additionalType"].endswith("#SIFImage")
    facts = {p["name"]: p["value"] for p in failed["additionalProperty"]}
    assert facts["exit-code"] == 137 and facts["slurm-job-id"] == "4711"
    assert facts["slurm-resources"] == "--partition=gpu --mem=8G"

    several = crate.get("#run-14")
    assert [d.id for d in several["object"]] == [
        "#input-imaging-2026/s017@3", "#input-imaging-2026/s018@1", "#input-imaging-2026/s019@2"
    ]  # fmt: skip
    assert several["instrument"] is done["instrument"]  # one application per tool
    assert several["agent"] is done["agent"]
    assert {p["name"]: p["value"] for p in several["additionalProperty"]}["rerun-of"] == 12
    # every output is part of the root, once, and so is the input with a URL
    parts = [p.id for p in root["hasPart"]]
    assert sorted(parts) == [
        "https://keep.example.org/p/imaging-2026/s017/v/3/",
        "masks/cell%2002.png", "masks/cell-01.png", "summary.csv",
    ]  # fmt: skip


def test_the_attached_crate_meets_every_required_rule(
    attached: Path, validator_cache: Path
) -> None:
    assert required_issues(attached, validator_cache) == []


@EXTERNAL_INPUTS
def test_a_detached_crate_needs_no_files(tmp_path: Path, validator_cache: Path) -> None:
    base = "https://keep.example.org/p/imaging-2026/seg-unet/v/2/files/"
    write_ro_crate(RECORDS[:1], tmp_path, name="seg-unet@2", base_url=base)
    crate = ROCrate(tmp_path)
    assert crate.root_dataset["url"] == base
    assert {f.id for f in crate.get("#run-12")["result"]} == {
        base + "masks/cell-01.png", base + "masks/cell%2002.png"
    }  # fmt: skip
    assert required_issues(tmp_path, validator_cache) == []


def test_the_validator_catches_a_broken_crate(attached: Path, tmp_path: Path,
                                              validator_cache: Path) -> None:  # fmt: skip
    """Without an instrument an action breaks a REQUIRED rule of the profile: the
    validation above is not vacuous."""
    document = json.loads((attached / "ro-crate-metadata.json").read_text())
    for entity in document["@graph"]:
        if entity["@id"] == "#run-13":
            del entity["instrument"]
    (tmp_path / "ro-crate-metadata.json").write_text(json.dumps(document))
    issues = required_issues(tmp_path, validator_cache, metadata_only=True)
    assert any("instrument" in issue for issue in issues), issues
