"""DataCite metadata: `labkeep meta edit`, `meta datacite`, the API, and what a scientist
sees when a field is wrong. Every DataCite document is checked with the official schema
(the `datacite` package), independently of labkeep's own check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datacite.schema45 import validator

from labkeep import Keep
from labkeep.errors import MetadataInvalid, NotFound, UsageError
from labkeep.ops.metadata import citation
from tests.test_cli import records, run

CURIE = {
    "name": "Curie, Marie",
    "given": "Marie",
    "family": "Curie",
    "orcid": "https://orcid.org/0000-0002-1825-0097",
    "affiliation": "Institut du Radium",
    "ror": "05dxps055",
}


def valid(doc: dict[str, object]) -> bool:
    errors = list(validator.iter_errors(doc))
    assert not errors, [e.message for e in errors]
    return True


@pytest.fixture
def seg(keep: Keep) -> Keep:
    keep.create_project("imaging-2026", title="Confocal screen")
    keep.create_dataset("imaging-2026/seg", kind="analysis", title="U-Net masks")
    return keep


def test_a_project_s_fields_are_its_datasets_defaults(seg: Keep) -> None:
    seg.set_metadata(
        "imaging-2026",
        {
            "creators": [CURIE, {"name": "Imaging Facility"}],
            "license": "cc-by-4.0",
            "funding": [{"funder": "ERC", "funder_id": "https://ror.org/0472cxd90", "award": "1"}],
        },
    )
    seg.set_metadata(
        "imaging-2026/seg",
        {
            "description": "Masks of nuclei",
            "keywords": ["nuclei", "segmentation"],
            "related": [{"identifier": "doi:10.1234/paper.5", "relation": "IsSupplementTo"}],
            "dates": [{"date": "2026-03-14", "type": "collected"}],
            "contributors": [{"name": "Doe, Jane", "type": "datacurator"}],
        },
    )
    doc = seg.datacite("imaging-2026/seg")
    assert valid(doc)
    assert doc["titles"] == [{"title": "U-Net masks"}]
    assert [c["name"] for c in doc["creators"]] == ["Curie, Marie", "Imaging Facility"]
    curie, facility = doc["creators"]
    assert curie["nameType"] == "Personal" and facility["nameType"] == "Organizational"
    assert curie["nameIdentifiers"][0]["nameIdentifier"] == "https://orcid.org/0000-0002-1825-0097"
    assert curie["affiliation"][0]["affiliationIdentifier"] == "https://ror.org/05dxps055"
    assert doc["rightsList"][0]["rightsIdentifier"] == "CC-BY-4.0"
    assert doc["relatedIdentifiers"] == [
        {
            "relatedIdentifier": "10.1234/paper.5",
            "relatedIdentifierType": "DOI",
            "relationType": "IsSupplementTo",
        }
    ]
    assert doc["dates"] == [{"date": "2026-03-14", "dateType": "Collected"}]
    assert doc["contributors"][0]["contributorType"] == "DataCurator"
    assert doc["fundingReferences"][0]["funderIdentifierType"] == "ROR"
    assert {"subject": "nuclei"} in doc["subjects"]
    assert citation(doc).startswith("Curie, Marie; Imaging Facility (")
    # the project's own document has no dataset fields
    assert "subjects" not in seg.datacite("imaging-2026")
    # a dataset field replaces the project's
    seg.set_metadata("imaging-2026/seg", changes={"license": "CC0-1.0"})
    assert seg.datacite("imaging-2026/seg")["rightsList"][0]["rightsIdentifier"] == "CC0-1.0"
    assert seg.datacite("imaging-2026")["rightsList"][0]["rightsIdentifier"] == "CC-BY-4.0"


def test_every_problem_is_named_and_nothing_is_stored(seg: Keep) -> None:
    seg.set_metadata("imaging-2026/seg", {"keywords": ["kept"]})
    bad = {
        "creators": [{"name": "X", "orcid": "0000-0002-1825-0098"}, {"orcid": "0000"}],
        "license": "CC-BY-4.1",
        "related": ["not an identifier"],
        "dates": ["14.03.2026"],
        "colour": "blue",
        "contributors": [{"name": "Y", "type": "Boss"}],
        "title": "x" * 2000,
        "funding": [{"funder": "ERC", "funder_id": "ERC-123"}],
    }
    with pytest.raises(MetadataInvalid) as caught:
        seg.set_metadata("imaging-2026/seg", bad)
    problems = "\n".join(caught.value.problems)
    for expected in (
        "creators[1].orcid: '0000-0002-1825-0098' is not a valid ORCID iD: its check digit",
        "creators[2].orcid: '0000' is not an ORCID iD",
        "creators[2].name: is required",
        "license: 'CC-BY-4.1' is not an SPDX licence id",
        "related[1].identifier: 'not an identifier'",
        "dates[1].date: '14.03.2026' is not a date like 2026-03-14",
        "colour: unknown field",
        "contributors[1].type: 'Boss' is not one of DataCite's values",
        "title: is 2,000 characters long",
        "funding[1].funder_id: 'ERC-123'",
    ):
        assert expected in problems
    assert caught.value.http_status == 400 and caught.value.exit_code == 2
    assert seg.get_metadata("imaging-2026/seg").own == {"keywords": ["kept"]}


def test_hostile_and_non_latin_text_is_kept_as_written(seg: Keep) -> None:
    title = "<script>alert('x')</script> Ядро & 細胞核 \"quoted\""
    seg.set_metadata(
        "imaging-2026/seg",
        {"title": title, "creators": [{"name": "Łukasiewicz, Jan"}, {"name": "山田 太郎"}]},
    )
    doc = seg.datacite("imaging-2026/seg")
    assert valid(doc) and doc["titles"][0]["title"] == title
    assert [c["name"] for c in doc["creators"]] == ["Łukasiewicz, Jan", "山田 太郎"]
    with pytest.raises(MetadataInvalid, match="control characters"):
        seg.set_metadata("imaging-2026/seg", {"title": "a\x00b"})
    with pytest.raises(MetadataInvalid, match="at most 500 are allowed"):
        seg.set_metadata("imaging-2026/seg", {"keywords": [str(i) for i in range(501)]})


def test_access(seg: Keep) -> None:
    seg.add_user("bob", password="a long enough password")
    bob = seg.acting_as(seg.principal_for("bob"))
    with pytest.raises(NotFound):
        bob.get_metadata("imaging-2026/seg")
    with pytest.raises(NotFound):
        bob.set_metadata("imaging-2026/seg", {"keywords": ["x"]})
    seg.grant("bob", "read", "imaging-2026")
    assert bob.datacite("imaging-2026/seg")["titles"] == [{"title": "U-Net masks"}]
    from labkeep.errors import Forbidden

    with pytest.raises(Forbidden):
        bob.set_metadata("imaging-2026/seg", {"keywords": ["x"]})
    with pytest.raises(UsageError, match=r"not to 'imaging-2026/seg/a\.txt'"):
        seg.set_metadata("imaging-2026/seg/a.txt", {})
    events = [e for e in seg.events(limit=5) if e["action"] == "metadata-edit"]
    assert not events  # nothing was stored, so nothing was recorded


def test_edit_is_recorded_in_the_audit_log(seg: Keep) -> None:
    seg.set_metadata("imaging-2026/seg", {"keywords": ["a"], "license": "MIT"})
    seg.set_metadata("imaging-2026/seg", changes={"license": None})
    edits = [e for e in seg.events(limit=10) if e["action"] == "metadata-edit"]
    assert [e["details"]["fields"] for e in edits][:2] in (
        [["license"], ["keywords", "license"]],
        [["keywords", "license"], ["license"]],
    )
    assert seg.get_metadata("imaging-2026/seg").own == {"keywords": ["a"]}


def test_cli_edit_from_file_set_show_and_editor(tmp_path: Path, catalog_url: str | None) -> None:
    root = tmp_path / "k"
    run("init", str(root), *(["--catalog", catalog_url] if catalog_url else []))
    run("project", "create", "imaging-2026", cwd=root)
    run("dataset", "create", "imaging-2026/seg", "--kind", "analysis", cwd=root)
    form = tmp_path / "meta.yaml"
    form.write_text(
        "title: Nuclei masks\n"
        "creators:\n"
        "  - name: Curie, Marie\n"
        "    orcid: 0000-0002-1825-0097\n"
        "license: CC-BY-4.0\n"
        "keywords: [nuclei, DAPI]\n",
        encoding="utf-8",
    )
    run("meta", "edit", "imaging-2026/seg", "--file", str(form), cwd=root)
    run("meta", "edit", "imaging-2026/seg", "--set", "keywords=[nuclei, Hoechst]", cwd=root)
    shown = records(run("meta", "edit", "imaging-2026/seg", "--show", "--json", cwd=root))[0]
    assert shown["metadata"]["keywords"] == ["nuclei", "Hoechst"]
    assert shown["metadata"]["title"] == "Nuclei masks"
    doc = records(run("meta", "datacite", "imaging-2026/seg", "--json", cwd=root))[0]
    assert valid(doc["datacite"]) and doc["citation"].startswith("Curie, Marie (")
    # a wrong field: exit 2, the field named, nothing changed
    bad = run("meta", "edit", "imaging-2026/seg", "--set", "license=CC-BY-9", cwd=root, check=2)
    assert "license: 'CC-BY-9' is not an SPDX licence id" in bad.stderr
    assert "Traceback" not in bad.stderr
    bad = run("meta", "edit", "imaging-2026/seg", "--set", "license", cwd=root, check=2)
    assert "give FIELD=VALUE" in bad.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("creators:\n  - name: [unclosed\n", encoding="utf-8")
    bad = run("meta", "edit", "imaging-2026/seg", "--file", str(broken), cwd=root, check=2)
    assert "is not valid YAML at line" in bad.stderr
    # $EDITOR: a script that rewrites the text as a person would
    editor = tmp_path / "editor.py"
    editor.write_text(
        "import sys, pathlib\np = pathlib.Path(sys.argv[1])\n"
        "p.write_text(p.read_text().replace('Hoechst', 'SYTO'))\n",
        encoding="utf-8",
    )
    import sys

    run("meta", "edit", "imaging-2026/seg", cwd=root, env={"EDITOR": f"{sys.executable} {editor}"})
    shown = records(run("meta", "edit", "imaging-2026/seg", "--show", "--json", cwd=root))[0]
    assert shown["metadata"]["keywords"] == ["nuclei", "SYTO"]
    none = run("meta", "edit", "imaging-2026/seg", cwd=root, env={"EDITOR": "true"})
    assert "No change" in none.stdout
    assert json.loads(run("meta", "datacite", "imaging-2026", "--json", cwd=root).stdout)[
        "datacite"
    ]["creators"] == [{"name": ":unav", "nameType": "Organizational"}]


def test_inputs_of_the_run_that_made_a_version_are_related(keep: Keep, tmp_path: Path) -> None:
    """The DataCite record of run outputs names the inputs' landing pages (IsDerivedFrom);
    a release names its source version, and through it the same inputs."""
    import sys

    from labkeep.ops.runs import RunRequest

    keep.create_project("imaging-2026")
    src = tmp_path / "buffer"
    src.mkdir()
    (src / "img.tif").write_bytes(b"pixels")
    keep.ingest(src, "imaging-2026/s017", seal=True)
    keep.create_dataset("imaging-2026/seg", kind="analysis")
    script = "import sys, pathlib; pathlib.Path(sys.argv[2], 'mask.txt').write_text('m')"
    record = keep.run(
        RunRequest(
            [sys.executable, "-c", script, "{inputs}", "{outputs}"],
            inputs=["imaging-2026/s017"],
            output="imaging-2026/seg",
        ),
        echo=False,
    )
    assert record["state"] == "done"
    base = "https://keep.example.org"
    doc = keep.datacite("imaging-2026/seg", base_url=base)
    assert valid(doc)
    assert {
        "relatedIdentifier": f"{base}/p/imaging-2026/s017/@2",
        "relatedIdentifierType": "URL",
        "relationType": "IsDerivedFrom",
    } in doc["relatedIdentifiers"]
    assert doc["url"] == f"{base}/p/imaging-2026/seg"
    keep.release("imaging-2026/seg@1", name="seg-v1")
    released = keep.datacite("imaging-2026/seg-v1", base_url=base)
    identifiers = [r["relatedIdentifier"] for r in released["relatedIdentifiers"]]
    assert identifiers == [f"{base}/p/imaging-2026/seg/@1", f"{base}/p/imaging-2026/s017/@2"]
    # an input that was published is named by its DOI
    with keep.catalog.write() as session:
        from sqlalchemy import select

        from labkeep.catalog import Dataset

        row = session.execute(select(Dataset).where(Dataset.name == "s017")).scalar_one()
        row.doi = "10.5281/zenodo.42"
    doc = keep.datacite("imaging-2026/seg")
    assert {
        "relatedIdentifier": "10.5281/zenodo.42",
        "relatedIdentifierType": "DOI",
        "relationType": "IsDerivedFrom",
    } in doc["relatedIdentifiers"]
    assert "url" not in doc  # no base URL configured, none given
