"""Keeping the search index current (see docs/search.md).

``search_docs`` holds one row per findable thing. Rows of projects, datasets and the
current files of datasets are written by triggers on their tables (migration 0010), so
every write path (ingest, save, restore, runs, renames, deletes) keeps them current in its
own transaction without knowing about search. What triggers cannot see is written here,
by the use cases that change it, in their transaction:

- key-values (``ops/keyvalues.py``) and sample links (``ops/samples.py``) of a project,
  dataset or file: :func:`refresh_doc`;
- flat fields extracted from a file's content (``objective="63x"``):
  :func:`index_file_fields`, called by the extraction job;
- samples themselves: :func:`index_sample`.

``labkeep search --reindex`` (:func:`reindex`) rebuilds all of it from the catalog.
None of these functions commit: the caller owns the transaction.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from sqlalchemy import delete, func, insert, select, text

from labkeep.catalog import (
    Dataset,
    Entry,
    KeyValue,
    Project,
    Sample,
    SampleLink,
    SearchDoc,
    SearchField,
)

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

#: longest value kept for filters (longer ones are still found by their words)
MAX_FIELD_VALUE = 200


def _doc_id(
    session: Session, kind: str, project_id: int, dataset_id: int = 0, path: str = ""
) -> int | None:
    return session.execute(
        select(SearchDoc.id).where(
            SearchDoc.kind == kind,
            SearchDoc.project_id == project_id,
            SearchDoc.dataset_id == dataset_id,
            SearchDoc.sample_id == 0,
            SearchDoc.path == path,
        )
    ).scalar()


def _set_fields(session: Session, doc_id: int, source: str, fields: list[tuple[str, str]]) -> None:
    session.execute(
        delete(SearchField).where(SearchField.doc_id == doc_id, SearchField.source == source)
    )
    if fields:
        session.execute(
            insert(SearchField),
            [
                {
                    "doc_id": doc_id,
                    "source": source,
                    "key": key.lower()[:64],
                    "value": value.strip().lower()[:MAX_FIELD_VALUE],
                }
                for key, value in fields
            ],
        )
    _rebuild_meta(session, doc_id)


def _rebuild_meta(session: Session, doc_id: int) -> None:
    """The doc's ``meta`` text: every field as "key value", so free words find values."""
    rows = session.execute(
        select(SearchField.key, SearchField.value)
        .where(SearchField.doc_id == doc_id)
        .order_by(SearchField.id)
    ).all()
    meta = " ".join(f"{k} {v}" for k, v in rows)
    session.execute(
        SearchDoc.__table__.update().where(SearchDoc.id == doc_id).values(meta=meta)  # type: ignore[attr-defined]
    )


def refresh_doc(session: Session, project_id: int, dataset_id: int = 0, path: str = "") -> None:
    """Re-read the key-values (and, for a dataset, its samples) of one project, dataset or
    file into its search document."""
    kind = "file" if path else ("dataset" if dataset_id else "project")
    doc_id = _doc_id(session, kind, project_id, dataset_id, path)
    if doc_id is None:
        return
    pairs = session.execute(
        select(KeyValue.key, KeyValue.value)
        .where(
            KeyValue.project_id == project_id,
            KeyValue.dataset_id == dataset_id,
            KeyValue.path == path,
        )
        .order_by(KeyValue.key)
    ).all()
    session.execute(
        delete(SearchField).where(SearchField.doc_id == doc_id, SearchField.source == "kv")
    )
    kv = [(str(k), str(v)) for k, v in pairs]
    if kind == "dataset":
        names = session.execute(
            select(Sample.name)
            .join(SampleLink, SampleLink.sample_id == Sample.id)
            .where(SampleLink.dataset_id == dataset_id)
            .order_by(Sample.name)
        ).scalars()
        samples = [("sample", str(n)) for n in names]
        _set_fields(session, doc_id, "sample", samples)
    _set_fields(session, doc_id, "kv", kv)


def index_file_fields(
    session: Session, *, dataset_id: int, path: str, fields: dict[str, str]
) -> bool:
    """Make a current file findable by fields read from its content (``objective`` →
    ``"63x"``, ``instrument`` → ``"LSM 980"``): free words find the values, filters
    ``objective:63x`` match them (case-insensitively). Replaces the file's earlier
    extracted fields. Returns False if the dataset has no current file at *path*.

    Called by metadata extraction in its own transaction; does not commit."""
    dataset = session.get(Dataset, dataset_id)
    if dataset is None:
        return False
    doc_id = _doc_id(session, "file", dataset.project_id, dataset_id, path)
    if doc_id is None:
        return False
    _set_fields(
        session,
        doc_id,
        "extract",
        [(str(k), str(v)) for k, v in sorted(fields.items()) if str(v).strip()],
    )
    return True


def index_sample(session: Session, sample: Sample) -> None:
    """Write (or rewrite) the search document of a sample, and its attributes as fields."""
    session.flush()
    doc_id = session.execute(
        select(SearchDoc.id).where(SearchDoc.kind == "sample", SearchDoc.sample_id == sample.id)
    ).scalar()
    body = " ".join(x for x in (sample.type, sample.description) if x)
    if doc_id is None:
        doc = SearchDoc(
            kind="sample",
            project_id=0,
            dataset_id=0,
            sample_id=sample.id,
            path="",
            name=sample.name,
            text=body,
            meta="",
            day=sample.created_at.strftime("%Y-%m-%d"),
        )
        session.add(doc)
        session.flush()
        doc_id = doc.id
    else:
        session.execute(
            SearchDoc.__table__.update()  # type: ignore[attr-defined]
            .where(SearchDoc.id == doc_id)
            .values(name=sample.name, text=body)
        )
    attrs = json.loads(sample.attrs or "{}")
    fields = [("type", sample.type)] if sample.type else []
    fields += [(str(k), str(v)) for k, v in sorted(attrs.items()) if str(v).strip()]
    _set_fields(session, doc_id, "kv", fields)


def reindex(session: Session, *, batch: int = 5000) -> dict[str, int]:
    """Rebuild the whole index from the catalog: documents of every project, dataset,
    current file and sample, then their key-values and samples, and the fields read from
    current files' content (from their extraction records; no content is read)."""
    session.execute(delete(SearchField))
    session.execute(delete(SearchDoc))
    if session.get_bind().dialect.name == "sqlite":
        session.execute(text("INSERT INTO search_fts(search_fts) VALUES ('rebuild')"))
    counts = {"projects": 0, "datasets": 0, "files": 0, "samples": 0}
    for p in session.execute(select(Project)).scalars():
        session.add(
            SearchDoc(
                kind="project",
                project_id=p.id,
                dataset_id=0,
                sample_id=0,
                path="",
                name=p.name,
                text=f"{p.title} {p.description}".strip(),
                meta="",
                day=p.created_at.strftime("%Y-%m-%d"),
            )
        )
        counts["projects"] += 1
    for d in session.execute(select(Dataset)).scalars():
        session.add(
            SearchDoc(
                kind="dataset",
                project_id=d.project_id,
                dataset_id=d.id,
                sample_id=0,
                path="",
                name=d.name,
                text=f"{d.title} {d.description}".strip(),
                meta="",
                day=d.created_at.strftime("%Y-%m-%d"),
            )
        )
        counts["datasets"] += 1
    session.flush()
    rows = session.execute(
        select(Dataset.project_id, Entry.dataset_id, Entry.path, Entry.mtime_ns)
        .join(Dataset, Dataset.id == Entry.dataset_id)
        .where(Entry.valid_to.is_(None))
        .execution_options(yield_per=batch)
    )
    pending: list[dict[str, object]] = []
    for project_id, dataset_id, path, mtime_ns in rows:
        pending.append(_file_doc(int(project_id), int(dataset_id), str(path), int(mtime_ns)))
        if len(pending) >= batch:
            session.execute(insert(SearchDoc), pending)
            counts["files"] += len(pending)
            pending = []
    if pending:
        session.execute(insert(SearchDoc), pending)
        counts["files"] += len(pending)
    for sample in session.execute(select(Sample)).scalars():
        index_sample(session, sample)
        counts["samples"] += 1
    targets = session.execute(
        select(KeyValue.project_id, KeyValue.dataset_id, KeyValue.path).distinct()
    ).all()
    linked = session.execute(
        select(Dataset.project_id, Dataset.id).where(Dataset.id.in_(select(SampleLink.dataset_id)))
    ).all()
    for project_id, dataset_id, path in {(int(a), int(b), str(c)) for a, b, c in targets} | {
        (int(a), int(b), "") for a, b in linked
    }:
        refresh_doc(session, project_id, dataset_id, path)
    _reindex_extracted(session, batch)
    counts["documents"] = int(
        session.execute(select(func.count()).select_from(SearchDoc)).scalar() or 0
    )
    return counts


def _reindex_extracted(session: Session, batch: int) -> None:
    """The fields read from current files' content, from their extraction records."""
    import json

    from labkeep.catalog import Extraction
    from labkeep.extract.model import search_fields as flat

    last = 0
    while True:  # keyset pages: memory stays flat however many files were read
        rows = session.execute(
            select(Entry.id, Entry.dataset_id, Entry.path, Extraction.fields)
            .join(Extraction, Extraction.entry_id == Entry.id)
            .where(Entry.valid_to.is_(None), Entry.id > last)
            .order_by(Entry.id)
            .limit(batch)
        ).all()
        if not rows:
            return
        for entry_id, dataset_id, path, fields in rows:
            index_file_fields(
                session, dataset_id=int(dataset_id), path=str(path), fields=flat(json.loads(fields))
            )
            last = int(entry_id)


def _file_doc(project_id: int, dataset_id: int, path: str, mtime_ns: int) -> dict[str, object]:
    from datetime import UTC, datetime

    return {
        "kind": "file",
        "project_id": project_id,
        "dataset_id": dataset_id,
        "sample_id": 0,
        "path": path,
        "name": path.rsplit("/", 1)[-1],
        "text": path,
        "meta": "",
        "day": datetime.fromtimestamp(mtime_ns / 1e9, UTC).strftime("%Y-%m-%d"),
    }


__all__ = ["index_file_fields", "index_sample", "refresh_doc", "reindex"]
