"""Key-values on projects, datasets and files, and a project's optional JSON Schema.

    keep.set_values("imaging-2026/s017", {"sample": "mouse-42", "stain": "DAPI"})
    keep.set_kv_schema("imaging-2026", {"type": "object", "required": ["sample"]})

Reading follows read access to the object; changing needs write on it (``dataset.edit``
for a dataset or one of its files, ``project.annotate`` for a project). A project's
schema (``manage``) applies to the key-values of each of its datasets: an edit that
would leave a dataset failing it is refused as a whole, with one plain sentence per
problem. Every change is an audit event and updates the search index in the same
transaction.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select

from labkeep.catalog import Dataset, Entry, KeyValue, Project
from labkeep.clock import utcnow
from labkeep.errors import MetadataInvalid, NotFound, UsageError
from labkeep.names import check_text, parse_address
from labkeep.ops._access import find_dataset, find_project
from labkeep.ops.audit import append_event
from labkeep.ops.search_index import refresh_doc

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from labkeep.keep import Keep

KEY_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}\Z")
#: names of search filters: a key of that name could never be filtered on
RESERVED_KEYS = frozenset({"project", "kind", "sealed", "type", "in"})
MAX_VALUE = 2000
MAX_KEYS = 200
MAX_SCHEMA_BYTES = 64 << 10


@dataclass
class KeyValues:
    """The key-values of one project, dataset or file."""

    target: str
    kind: str  # project | dataset | file
    values: dict[str, str] = field(default_factory=dict)
    #: for a dataset: the samples linked to it
    samples: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {"target": self.target, "kind": self.kind, "values": self.values}
        if self.kind == "dataset":
            record["samples"] = self.samples
        return record


def parse_pairs(pairs: list[str]) -> dict[str, str]:
    """``["sample=mouse-42", "stain=DAPI"]`` as a dict (the CLI's and forms' syntax)."""
    values: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise UsageError(
                f"{pair!r} is not KEY=VALUE", hint="write e.g. sample=mouse-42 stain=DAPI"
            )
        values[key.strip()] = value.strip()
    return values


def check_key(key: str) -> str:
    if not KEY_PATTERN.match(key):
        raise UsageError(
            f"{key!r} cannot be a key",
            hint="keys start with a letter and hold letters, digits, '_', '.', '-' "
            "(at most 64 characters), e.g. sample, stain, objective",
        )
    if key.lower() in RESERVED_KEYS:
        raise UsageError(
            f"{key!r} cannot be a key: it is a search filter",
            hint=f"choose another name (reserved: {', '.join(sorted(RESERVED_KEYS))})",
        )
    return key


def _resolve(
    keep: Keep, session: Session, address: str, action: str | None
) -> tuple[Project, Dataset | None, str, str]:
    """The project, dataset and path that *address* names, with *action* checked (None:
    read). Returns (project, dataset, path, canonical target)."""
    addr = parse_address(address)
    if addr.version is not None:
        raise UsageError(
            "key-values belong to the current state, not to a version",
            hint=f"leave out '@{addr.version}'",
        )
    if addr.dataset is None:
        project = find_project(keep, session, addr.project, action and "project.annotate")
        return project, None, "", addr.project
    path = addr.path or ""
    project, dataset = find_dataset(
        keep,
        session,
        addr.project,
        addr.dataset,
        "dataset.edit" if action else "dataset.read",
        path=path or None,
    )
    if path:
        exists = session.execute(
            select(Entry.id).where(
                Entry.dataset_id == dataset.id, Entry.path == path, Entry.valid_to.is_(None)
            )
        ).first()
        if exists is None:
            raise NotFound(
                f"no file {addr.dataset_address}/{path}",
                hint=f"see 'labkeep ls {addr.dataset_address}'",
            )
    return project, dataset, path, str(addr)


def _current(
    session: Session, project: Project, dataset: Dataset | None, path: str
) -> dict[str, str]:
    rows = session.execute(
        select(KeyValue.key, KeyValue.value)
        .where(
            KeyValue.project_id == project.id,
            KeyValue.dataset_id == (dataset.id if dataset else 0),
            KeyValue.path == path,
        )
        .order_by(KeyValue.key)
    ).all()
    return {str(k): str(v) for k, v in rows}


def _samples(session: Session, dataset: Dataset | None) -> list[str]:
    if dataset is None:
        return []
    from labkeep.catalog import Sample, SampleLink

    return [
        str(n)
        for n in session.execute(
            select(Sample.name)
            .join(SampleLink, SampleLink.sample_id == Sample.id)
            .where(SampleLink.dataset_id == dataset.id)
            .order_by(Sample.name)
        ).scalars()
    ]


def get_values(keep: Keep, address: str) -> KeyValues:
    """The key-values of a project, dataset or file (and a dataset's samples)."""
    with keep.catalog.read() as session:
        project, dataset, path, target = _resolve(keep, session, address, None)
        kind = "file" if path else ("dataset" if dataset else "project")
        return KeyValues(
            target, kind, _current(session, project, dataset, path), _samples(session, dataset)
        )


def set_values(
    keep: Keep, address: str, values: Mapping[str, str], *, unset: list[str] | tuple[str, ...] = ()
) -> KeyValues:
    """Set (and with *unset*, remove) key-values of a project, dataset or file, all or
    nothing: the result must pass the project's schema (for a dataset)."""
    for key in values:
        check_key(key)
    for key, value in values.items():
        check_text(value, f"the value of {key}", MAX_VALUE)
        if not value:
            raise UsageError(
                f"{key} has an empty value", hint=f"to remove it: labkeep meta unset ... {key}"
            )
    if not values and not unset:
        raise UsageError("nothing to change", hint="give KEY=VALUE pairs or keys to unset")
    with keep.catalog.write() as session:
        project, dataset, path, target = _resolve(keep, session, address, "edit")
        before = _current(session, project, dataset, path)
        after = {k: v for k, v in before.items() if k not in unset}
        missing = [k for k in unset if k not in before]
        if missing:
            raise NotFound(
                f"{target} has no key {missing[0]!r}",
                hint=f"its keys: {', '.join(before) or 'none'}",
            )
        after.update(values)
        if len(after) > MAX_KEYS:
            raise UsageError(f"{target} would have {len(after)} keys: at most {MAX_KEYS}")
        if dataset is not None and not path and project.kv_schema:
            problems = schema_problems(json.loads(project.kv_schema), after)
            if problems:
                error = MetadataInvalid(target, problems)
                error.hint = (
                    f"the project {project.name} asks for these (see 'labkeep meta schema "
                    f"show {project.name}'); set several keys in one command: "
                    f"labkeep meta set {target} key=value key=value"
                )
                raise error
        where = (
            KeyValue.project_id == project.id,
            KeyValue.dataset_id == (dataset.id if dataset else 0),
            KeyValue.path == path,
        )
        changed = sorted(k for k in after if before.get(k) != after[k])
        removed = sorted(k for k in before if k not in after)
        if changed or removed:
            session.execute(delete(KeyValue).where(*where, KeyValue.key.in_(changed + removed)))
            now = utcnow()
            for key in changed:
                session.add(
                    KeyValue(
                        project_id=project.id,
                        dataset_id=dataset.id if dataset else 0,
                        path=path,
                        key=key,
                        value=after[key],
                        updated_at=now,
                        updated_by=keep.actor,
                    )
                )
            session.flush()
            refresh_doc(session, project.id, dataset.id if dataset else 0, path)
            append_event(
                session,
                keep.actor,
                "kv-set",
                target,
                {"set": {k: after[k] for k in changed}, "unset": removed},
            )
        kind = "file" if path else ("dataset" if dataset else "project")
        return KeyValues(target, kind, dict(sorted(after.items())), _samples(session, dataset))


def unset_values(keep: Keep, address: str, keys: list[str]) -> KeyValues:
    return set_values(keep, address, {}, unset=keys)


# -- the project's schema ---------------------------------------------------------------
_TYPE_WORDS = {
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "string": "text",
}


def _coerce(schema: Mapping[str, Any], values: Mapping[str, str]) -> dict[str, Any]:
    """Values are text; where the schema wants a number or a boolean, read them as one
    (left as text when they do not read, so the schema names the problem)."""
    props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
    out: dict[str, Any] = {}
    for key, value in values.items():
        want = (props or {}).get(key, {}).get("type") if isinstance(props, dict) else None
        out[key] = value
        try:
            if want == "integer" and re.fullmatch(r"[+-]?\d+", value):
                out[key] = int(value)
            elif want == "number":
                out[key] = float(value)
            elif want == "boolean" and value.lower() in ("true", "false", "yes", "no"):
                out[key] = value.lower() in ("true", "yes")
        except ValueError:
            pass
    return out


def _sentence(error: Any) -> str:
    """One plain sentence for a jsonschema error, naming the key."""
    key = ".".join(str(p) for p in error.absolute_path) or ""
    v = error.validator
    if v == "required":
        missing = re.findall(r"'([^']*)' is a required property", error.message)
        return f"{missing[0] if missing else 'a key'} is required"
    if v == "additionalProperties":
        extra = re.findall(r"'([^']*)'", error.message)
        allowed = sorted((error.schema.get("properties") or {}).keys())
        return f"{', '.join(extra) or 'a key'} is not one of the keys this project uses" + (
            f" ({', '.join(allowed)})" if allowed else ""
        )
    if v == "enum":
        return f"{key} must be one of: {', '.join(map(str, error.validator_value))}"
    if v == "type":
        want = error.validator_value
        words = _TYPE_WORDS.get(want, str(want)) if isinstance(want, str) else str(want)
        return f"{key} must be {words}, not {error.instance!r}"
    if v == "pattern":
        return (
            f"{key} = {error.instance!r} does not have the expected form ({error.validator_value})"
        )
    if v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        return f"{key} = {error.instance!r}: {error.message}"
    if v in ("minLength", "maxLength"):
        return f"{key} is too {'short' if v == 'minLength' else 'long'}"
    return f"{key}: {error.message}" if key else str(error.message)


def _validator(schema: Mapping[str, Any]) -> Any:
    import jsonschema

    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def schema_problems(schema: Mapping[str, Any], values: Mapping[str, str]) -> list[str]:
    """What is wrong with *values* under *schema*, as sentences (empty: nothing)."""
    errors = _validator(schema).iter_errors(_coerce(schema, values))
    return sorted({_sentence(e) for e in errors})


def set_kv_schema(keep: Keep, project: str, schema: Mapping[str, Any] | None) -> dict[str, Any]:
    """Set (None: remove) the JSON Schema the key-values of *project*'s datasets must
    pass from now on. Datasets that do not pass it yet are listed, not changed."""
    import jsonschema

    if schema is not None:
        if not isinstance(schema, dict):
            raise UsageError("the schema must be a JSON object")
        text = json.dumps(schema, sort_keys=True)
        if len(text) > MAX_SCHEMA_BYTES:
            raise UsageError(f"the schema is larger than {MAX_SCHEMA_BYTES // 1024} KB")
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        try:
            cls.check_schema(schema)
        except jsonschema.SchemaError as exc:
            where = "/".join(str(p) for p in exc.absolute_path)
            raise UsageError(
                f"this is not a valid JSON Schema: {exc.message}"
                + (f" (at {where})" if where else ""),
                hint="see https://json-schema.org/learn/getting-started-step-by-step",
            ) from None
    with keep.catalog.write() as session:
        proj = find_project(keep, session, project, "project.edit")
        proj.kv_schema = None if schema is None else json.dumps(schema, sort_keys=True)
        failing: list[dict[str, Any]] = []
        if schema is not None:
            for d in session.execute(
                select(Dataset).where(Dataset.project_id == proj.id).order_by(Dataset.name)
            ).scalars():
                problems = schema_problems(schema, _current(session, proj, d, ""))
                if problems:
                    failing.append({"dataset": f"{proj.name}/{d.name}", "problems": problems})
        append_event(session, keep.actor, "kv-schema-set", proj.name, {"schema": schema})
        return {"project": proj.name, "schema": schema, "failing": failing}


def get_kv_schema(keep: Keep, project: str) -> dict[str, Any] | None:
    with keep.catalog.read() as session:
        proj = find_project(keep, session, project)
        return json.loads(proj.kv_schema) if proj.kv_schema else None
