"""Search: projects, datasets, files and samples the caller may see, ranked.

    keep.search("mouse-42 objective:63x date:2026-03")

Query syntax (docs/search.md): free words (each must match a name, path, title,
description, key-value or extracted value, or sample id; quotes keep words together)
and ``key:value`` filters: ``project:``, ``kind:`` (project, dataset, file, sample, or a
dataset kind: session, analysis, release), ``date:`` (``2026``, ``2026-03``,
``2026-03-01..2026-03-15``), ``sealed:yes|no``, and any key-value or extracted field
(``instrument:lsm-980``, ``objective:63x``, ``sample:mouse-42``; ``*`` at the end of a
value matches its beginning). A file also matches the filters and words of its dataset
when the query has filters: ``mouse-42 objective:63x`` finds the 63x files of the
datasets of mouse 42.

Access is decided inside the query, with the rules of ``access/policy.py`` written as
SQL (grants, group roles, private projects, public datasets, share-link scopes), so
neither a page nor a count includes anything the caller may not see.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, text

from labkeep.errors import UsageError
from labkeep.names import address_text

if TYPE_CHECKING:
    from labkeep.access import Principal
    from labkeep.keep import Keep

DOC_KINDS = ("project", "dataset", "file", "sample")
DATASET_KINDS = ("session", "analysis", "release")
MAX_LIMIT = 100
#: pages go this deep at most (refine the query rather than page further)
MAX_OFFSET = 1000
#: counts stop here ("1000+")
COUNT_CAP = 1000
MAX_QUERY = 500
MAX_TERMS = 12
_DATE = re.compile(r"[0-9]{4}(-[0-9]{2}(-[0-9]{2})?)?\Z")
_TRUE = ("yes", "true", "1")
_FALSE = ("no", "false", "0")


@dataclass
class Query:
    """A parsed query: free words and filters."""

    words: list[str] = field(default_factory=list)
    project: str | None = None
    kind: str | None = None
    date: tuple[str, str] | None = None
    sealed: bool | None = None
    fields: list[tuple[str, str]] = field(default_factory=list)

    @property
    def has_filters(self) -> bool:
        return bool(self.fields or self.date)


def _date_range(value: str) -> tuple[str, str]:
    lo, sep, hi = value.partition("..")
    hi = hi if sep else lo
    for part in (lo, hi):
        if not _DATE.match(part) or not _real_date(part):
            raise UsageError(
                f"date:{value} is not a date",
                hint="write date:2026, date:2026-03, date:2026-03-01 or "
                "date:2026-03-01..2026-03-15",
            )
    return lo, hi + "~"  # "~" sorts after digits and "-": the end of the prefix


def _real_date(text: str) -> bool:
    """2026, 2026-03 or 2026-03-01 naming a day, month or year that exists."""
    import datetime

    year, month, day = [*text.split("-"), "01", "01"][:3]
    try:
        datetime.date(int(year), int(month), int(day))
    except ValueError:
        return False
    return True


def parse_query(
    query: str = "",
    *,
    project: str | None = None,
    kind: str | None = None,
    instrument: str | None = None,
    date: str | None = None,
    sealed: bool | None = None,
) -> Query:
    if len(query) > MAX_QUERY:
        raise UsageError(f"the query is longer than {MAX_QUERY} characters")
    try:
        tokens = shlex.split(query)
    except ValueError:
        tokens = query.replace('"', " ").replace("'", " ").split()
    q = Query()
    filters: list[tuple[str, str]] = []
    for token in tokens:
        key, sep, value = token.partition(":")
        if sep and re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]{0,63}", key) and value:
            filters.append((key.lower(), value))
        elif token.strip():
            q.words.append(token.strip())
    options: tuple[tuple[str, str | None], ...] = (
        ("project", project),
        ("kind", kind),
        ("instrument", instrument),
        ("date", date),
    )
    for name, given in options:
        if given:
            filters.append((name, given))
    if sealed is not None:
        q.sealed = sealed
    for key, value in filters:
        if key == "project":
            q.project = value
        elif key == "kind" or (key == "type" and value.lower() in DOC_KINDS):
            if value.lower() not in DOC_KINDS + DATASET_KINDS:
                raise UsageError(
                    f"kind:{value} is not a kind",
                    hint=f"use one of {', '.join(DOC_KINDS + DATASET_KINDS)}",
                )
            q.kind = value.lower()
        elif key == "date":
            q.date = _date_range(value)
        elif key == "sealed":
            if value.lower() not in _TRUE + _FALSE:
                raise UsageError(f"sealed:{value}: use sealed:yes or sealed:no")
            q.sealed = value.lower() in _TRUE
        else:
            q.fields.append((key[:64], value.lower()))
    if len(q.words) + len(q.fields) > MAX_TERMS:
        raise UsageError(f"at most {MAX_TERMS} words and filters in one query")
    return q


# -- who may see what, as SQL -----------------------------------------------------------
def _visible_dataset(ds: str, p: str) -> str:
    """SQL: the principal may read dataset *ds* of project *p* (non-admin user)."""
    return (
        f"({ds}.public = :true OR {p}.group_id IN :admin_groups"
        f" OR ({p}.group_id IN :member_groups AND {p}.private = :false)"
        f" OR EXISTS (SELECT 1 FROM grants g WHERE g.project_id = {ds}.project_id"
        f" AND (g.dataset_id IS NULL OR g.dataset_id = {ds}.id)"
        f" AND (g.user_id = :uid OR g.group_id IN :all_groups)))"
    )


#: the datasets a (non-admin) user may read, computed once per query (see _visibility)
VISIBLE_CTE = "vis"


def _visible_datasets_cte() -> str:
    return (
        f"{VISIBLE_CTE} AS MATERIALIZED (SELECT ds.id AS id, ds.project_id AS project_id"
        f" FROM datasets ds JOIN projects p ON p.id = ds.project_id"
        f" WHERE {_visible_dataset('ds', 'p')})"
    )


def _visibility(principal: Principal, params: dict[str, Any], *, cte: bool = False) -> str:
    """SQL over ``d`` (search_docs), ``p`` (projects), ``ds`` (datasets), ``s``
    (samples): the principal may see the document.

    With *cte* (PostgreSQL), a user's readable datasets come from the ``vis`` CTE
    (:func:`_visible_datasets_cte`, which the query must define): computed once, a few
    thousand ids at most, instead of an access check per candidate row. PostgreSQL ran
    those checks as correlated subplans (0.8 s for 4,000 candidates at 10^6 entries);
    SQLite runs them in-process at a few microseconds each, so it keeps them."""
    if principal.disabled:
        return "1 = 0"
    if principal.kind == "user" and principal.site_admin:
        return "1 = 1"
    params.update(
        true=True,
        false=False,
        uid=principal.user_id if principal.kind == "user" else -1,
        admin_groups=[g for g, r in principal.groups.items() if r == "admin"]
        if principal.kind == "user"
        else [],
        member_groups=[g for g, r in principal.groups.items() if r == "member"]
        if principal.kind == "user"
        else [],
        all_groups=list(principal.groups) if principal.kind == "user" else [],
        actor=principal.name if principal.kind == "user" else "",
    )
    if principal.kind == "share":
        scope = principal.share
        if scope is None:
            return "1 = 0"
        params.update(sp=scope.project_id, sd=scope.dataset_id or -1)
        in_scope = "{0}.project_id = :sp" + (
            " AND {0}.id = :sd" if scope.dataset_id is not None else ""
        )
        ds_ok = in_scope.format("ds")
        file_ok = ds_ok
        if scope.version is not None:
            file_ok = "1 = 0"  # a link to one version: its files are not the current ones
        elif scope.path:
            params.update(spath=scope.path, sprefix=scope.path + "/", splen=len(scope.path) + 1)
            file_ok += " AND (d.path = :spath OR substr(d.path, 1, :splen) = :sprefix)"
        sample_ok = (
            "EXISTS (SELECT 1 FROM sample_links l JOIN datasets ds2 ON ds2.id = l.dataset_id"
            f" WHERE l.sample_id = s.id AND {in_scope.format('ds2')})"
        )
        return (
            f"((d.kind = 'dataset' AND {ds_ok}) OR (d.kind = 'file' AND {file_ok})"
            f" OR (d.kind = 'project' AND p.id = :sp) OR (d.kind = 'sample' AND {sample_ok}))"
        )
    if cte:
        dataset_ok = f"d.dataset_id IN (SELECT id FROM {VISIBLE_CTE})"
        a_dataset_of_p = f"p.id IN (SELECT project_id FROM {VISIBLE_CTE})"
        a_linked_dataset = (
            "EXISTS (SELECT 1 FROM sample_links l WHERE l.sample_id = s.id"
            f" AND l.dataset_id IN (SELECT id FROM {VISIBLE_CTE}))"
        )
    else:
        dataset_ok = _visible_dataset("ds", "p")
        a_dataset_of_p = (
            "EXISTS (SELECT 1 FROM datasets ds2 WHERE ds2.project_id = p.id AND "
            + _visible_dataset("ds2", "p")
            + ")"
        )
        a_linked_dataset = (
            "EXISTS (SELECT 1 FROM sample_links l JOIN datasets ds2 ON ds2.id = l.dataset_id"
            " JOIN projects p2 ON p2.id = ds2.project_id WHERE l.sample_id = s.id AND "
            + _visible_dataset("ds2", "p2")
            + ")"
        )
    project_ok = (
        "(p.group_id IN :admin_groups OR (p.group_id IN :member_groups AND p.private = :false)"
        " OR EXISTS (SELECT 1 FROM grants g WHERE g.project_id = p.id AND g.dataset_id IS NULL"
        f" AND (g.user_id = :uid OR g.group_id IN :all_groups)) OR {a_dataset_of_p})"
    )
    sample_ok = f"(s.created_by = :actor OR s.group_id IN :all_groups OR {a_linked_dataset})"
    return (
        f"((d.kind IN ('dataset', 'file') AND {dataset_ok})"
        f" OR (d.kind = 'project' AND {project_ok}) OR (d.kind = 'sample' AND {sample_ok}))"
    )


def _filters(q: Query, params: dict[str, Any]) -> list[str]:
    """SQL conditions over ``d`` (and ``dd``: the dataset document of a file, or ``d``)."""
    where = []
    if q.project:
        params["project"] = q.project
        where.append("p.name = :project")
    if q.kind in DOC_KINDS:
        params["kind"] = q.kind
        where.append("d.kind = :kind")
    elif q.kind in DATASET_KINDS:
        params["dkind"] = q.kind
        where.append("d.kind IN ('dataset', 'file') AND ds.kind = :dkind")
    if q.sealed is not None:
        params["sealed"] = q.sealed
        where.append("d.kind IN ('dataset', 'file') AND ds.sealed = :sealed")
    if q.date is not None:
        params["date_lo"], params["date_hi"] = q.date
        where.append(
            "((d.day >= :date_lo AND d.day < :date_hi) OR EXISTS (SELECT 1 FROM search_fields f"
            " WHERE f.doc_id IN (d.id, dd.id) AND f.key IN ('date', 'acquired', 'acquisition_date')"
            " AND f.value >= :date_lo AND f.value < :date_hi))"
        )
    for i, (key, value) in enumerate(q.fields):
        params[f"fk{i}"] = key
        if value.endswith("*") and len(value) > 1:
            params[f"fv{i}"] = value[:-1]
            params[f"fe{i}"] = value[:-1] + "\uffff"
            test = f"f.value >= :fv{i} AND f.value < :fe{i}"
        else:
            params[f"fv{i}"] = value
            test = f"f.value = :fv{i}"
        where.append(
            f"EXISTS (SELECT 1 FROM search_fields f WHERE f.doc_id IN (d.id, dd.id)"
            f" AND f.key = :fk{i} AND {test})"
        )
    return where


def _fts_terms(words: list[str], dialect: str, params: dict[str, Any]) -> str:
    """SQL selecting (id, r) of the documents matching every word (r: lower is better)."""
    if dialect == "sqlite":
        params["match"] = " ".join('"' + w.replace('"', '""') + '"*' for w in words)
        return (
            "SELECT rowid AS id, bm25(search_fts, 10.0, 4.0, 2.0) AS r FROM search_fts"
            " WHERE search_fts MATCH :match"
        )
    conditions, queries = [], []
    for i, word in enumerate(words):
        params[f"w{i}"] = word.translate(str.maketrans("/._", "   "))
        params[f"l{i}"] = (
            "%" + word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        )
        queries.append(f"phraseto_tsquery('simple', :w{i})")
        conditions.append(f"(tsv @@ phraseto_tsquery('simple', :w{i}) OR path ILIKE :l{i})")
    return (
        f"SELECT id, -ts_rank(tsv, {' && '.join(queries)}) AS r FROM search_docs"
        f" WHERE {' AND '.join(conditions)}"
    )


_COLUMNS = (
    "d.id AS id, d.kind AS kind, d.path AS path, d.name AS name, d.text AS text,"
    " d.day AS day, p.name AS project, ds.name AS dataset, ds.kind AS dataset_kind,"
    " ds.sealed AS sealed, s.name AS sample, s.type AS sample_type"
)
_JOINS = (
    " LEFT JOIN projects p ON p.id = d.project_id"
    " LEFT JOIN datasets ds ON ds.id = d.dataset_id"
    " LEFT JOIN samples s ON s.id = d.sample_id"
)


#: the dataset document of a file (``dd``), found through the unique index
_DATASET_DOC = (
    "dd.kind = 'dataset' AND dd.project_id = d.project_id AND dd.dataset_id = d.dataset_id"
    " AND dd.sample_id = 0 AND dd.path = ''"
)
#: the files (``d``) of a dataset document ``dd``, through the same index
_FILES_OF = "d.kind = 'file' AND d.project_id = dd.project_id AND d.dataset_id = dd.dataset_id"


def _sql(q: Query, principal: Principal, dialect: str, params: dict[str, Any]) -> str:
    """The query: (columns, r) of every visible matching document.

    It starts from what narrows most: the full-text matches of the words, else the
    documents holding the first field filter, else every document. Files also match
    through their dataset (its words, its fields) when the query has filters."""
    cte = (
        dialect == "postgresql"
        and principal.kind == "user"
        and not principal.site_admin
        and not principal.disabled
    )
    visible = _visibility(principal, params, cte=cte)
    with_cte = f"WITH {_visible_datasets_cte()} " if cte else ""
    return with_cte + _select(q, dialect, params, visible)


def _select(q: Query, dialect: str, params: dict[str, Any], visible: str) -> str:
    filters = _filters(q, params)
    # the filters first: they are cheaper than the access check and usually narrower
    where = " AND ".join([*filters, visible])
    with_dataset = f" LEFT JOIN search_docs dd ON d.kind = 'file' AND {_DATASET_DOC}"
    inherit = q.has_filters and q.kind not in ("project", "dataset", "sample")
    if q.words:
        matches = _fts_terms(q.words, dialect, params)
        direct = (
            f"SELECT {_COLUMNS}, m.r AS r FROM ({matches}) m JOIN search_docs d ON d.id = m.id"
            f"{with_dataset}{_JOINS} WHERE {where}"
        )
        if not inherit:
            return direct
        # files of the datasets that match the words, by the filters
        # (SQLite's CROSS JOIN keeps this order: matches, their datasets, their files)
        join = "CROSS JOIN" if dialect == "sqlite" else "JOIN"
        inherited = (
            f"SELECT {_COLUMNS}, m.r AS r FROM ({matches}) m {join} search_docs dd"
            f" ON dd.id = m.id AND dd.kind = 'dataset' {join} search_docs d ON {_FILES_OF}"
            f"{_JOINS} WHERE {where} AND d.id NOT IN (SELECT id FROM ({matches}) m2)"
        )
        return f"{direct} UNION ALL {inherited}"
    if q.fields:
        test = "f0.key = :fk0 AND " + (
            "f0.value >= :fv0 AND f0.value < :fe0" if "fe0" in params else "f0.value = :fv0"
        )
        direct = (
            f"SELECT DISTINCT {_COLUMNS}, 0 AS r FROM search_fields f0 JOIN search_docs d"
            f" ON d.id = f0.doc_id{with_dataset}{_JOINS} WHERE {test} AND {where}"
        )
        if not inherit:
            return direct
        join = "CROSS JOIN" if dialect == "sqlite" else "JOIN"
        inherited = (
            f"SELECT DISTINCT {_COLUMNS}, 0 AS r FROM search_fields f0 {join} search_docs dd"
            f" ON dd.id = f0.doc_id AND dd.kind = 'dataset' {join} search_docs d ON {_FILES_OF}"
            f"{_JOINS} WHERE {test} AND {where} AND NOT EXISTS (SELECT 1 FROM search_fields f0"
            f" WHERE f0.doc_id = d.id AND {test})"
        )
        return f"{direct} UNION ALL {inherited}"
    return f"SELECT {_COLUMNS}, 0 AS r FROM search_docs d{with_dataset}{_JOINS} WHERE {where}"


_EXPANDING = ("admin_groups", "member_groups", "all_groups")


def _statement(sql: str, params: dict[str, Any]) -> Any:
    stmt = text(sql)
    used = [n for n in _EXPANDING if n in params and f":{n}" in sql]
    return stmt.bindparams(*(bindparam(n, expanding=True) for n in used))


@dataclass
class SearchResult:
    query: str
    total: int
    #: True when there are more than ``total`` (counts stop at COUNT_CAP)
    more: bool
    items: list[dict[str, Any]]
    offset: int
    next_offset: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "total": self.total,
            "more": self.more,
            "offset": self.offset,
            "next_offset": self.next_offset,
            "items": self.items,
        }


def _hit(row: Any) -> dict[str, Any]:
    kind = row.kind
    if kind == "project":
        address = str(row.project)
    elif kind == "dataset":
        address = f"{row.project}/{row.dataset}"
    elif kind == "file":
        address = address_text(row.project, row.dataset, row.path)
    else:
        address = f"sample:{row.sample}"
    hit: dict[str, Any] = {
        "kind": kind,
        "address": address,
        "name": row.name,
        "project": row.project,
        "dataset": row.dataset,
        "path": row.path or None,
        "summary": (row.text or "")[:200] if kind != "file" else "",
        "date": row.day or None,
    }
    if kind in ("dataset", "file"):
        hit["dataset_kind"] = row.dataset_kind
        hit["sealed"] = bool(row.sealed)
    if kind == "sample":
        hit["sample"] = row.sample
        hit["type"] = row.sample_type
    return hit


def search(
    keep: Keep,
    query: str = "",
    *,
    project: str | None = None,
    kind: str | None = None,
    instrument: str | None = None,
    date: str | None = None,
    sealed: bool | None = None,
    limit: int = 20,
    offset: int = 0,
) -> SearchResult:
    """Projects, datasets, files and samples matching *query* that the caller may see,
    best first; *limit* (at most 100) of them from *offset* (at most 1000), and how many
    there are (counted up to 1000)."""
    q = parse_query(
        query, project=project, kind=kind, instrument=instrument, date=date, sealed=sealed
    )
    if not (1 <= limit <= MAX_LIMIT):
        raise UsageError(f"limit must be between 1 and {MAX_LIMIT}")
    if not (0 <= offset <= MAX_OFFSET):
        raise UsageError(
            f"results go {MAX_OFFSET} deep at most", hint="add words or filters to the query"
        )
    if not q.words and not q.fields and not q.project and not q.date:
        raise UsageError(
            "search for something", hint="give words or filters, e.g. mouse-42 objective:63x"
        )
    dialect = keep.catalog.dialect
    with keep.catalog.read() as session:
        params: dict[str, Any] = {}
        sql = _sql(q, keep.principal, dialect, params)
        order = " ORDER BY r, CASE kind WHEN 'sample' THEN 0 WHEN 'project' THEN 1"
        order += " WHEN 'dataset' THEN 2 ELSE 3 END, id"
        # ranking evaluates every match anyway: the count comes with the page (a window
        # over the same rows), not from a second run of the query
        page_params = dict(params, limit=limit, offset=offset)
        page_sql = (
            f"SELECT hits.*, count(*) OVER () AS n FROM ({sql}) hits{order}"
            " LIMIT :limit OFFSET :offset"
        )
        rows = session.execute(_statement(page_sql, page_params), page_params).all()
        if rows:
            total = int(rows[0].n)
        elif offset == 0:
            total = 0
        else:  # a page past the end: how many there are
            count_params = dict(params, cap=COUNT_CAP + 1)
            count_sql = f"SELECT count(*) FROM (SELECT 1 AS one FROM ({sql}) hits LIMIT :cap) c"
            total = int(
                session.execute(_statement(count_sql, count_params), count_params).scalar() or 0
            )
    items = [_hit(r) for r in rows]
    more = total > COUNT_CAP
    total = min(total, COUNT_CAP)
    following = offset + len(items)
    next_offset = following if following < total and following <= MAX_OFFSET else None
    return SearchResult(query, total, more, items, offset, next_offset)


def reindex(keep: Keep) -> dict[str, int]:
    """Rebuild the search index from the catalog (site admins): for repair, or after
    restoring a catalog from an older backup."""
    from labkeep.access import check
    from labkeep.ops.audit import append_event
    from labkeep.ops.search_index import reindex as rebuild

    with keep.catalog.write() as session:
        check(keep.principal, "keep.admin")
        counts = rebuild(session)
        append_event(session, keep.actor, "search-reindex", "keep", counts)
        return counts
