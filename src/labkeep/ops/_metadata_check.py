"""Checking a metadata form field by field, with messages that name the field and say
what a valid value looks like (see :mod:`labkeep.ops.metadata`)."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

from labkeep.ops._datacite_vocab import (
    CONTRIBUTOR_TYPES,
    DATE_TYPES,
    IDENTIFIER_TYPES,
    RELATION_TYPES,
    RESOURCE_TYPES,
)

MAX_TEXT = 10_000
MAX_LINE = 1_000
MAX_ITEMS = 500
FIELDS = (
    "title",
    "description",
    "creators",
    "contributors",
    "license",
    "keywords",
    "subjects",
    "funding",
    "related",
    "dates",
    "resource_type",
    "language",
    "version",
    "publisher",
)

_ORCID = re.compile(r"^(?:https?://orcid\.org/)?(\d{4}-\d{4}-\d{4}-\d{3}[\dX])$")
_ROR = re.compile(r"^(?:https?://ror\.org/)?(0[a-hj-km-np-tv-z0-9]{6}\d{2})$")
_DOI = re.compile(r"^(?:https?://(?:dx\.)?doi\.org/|doi:)?(10\.\d{4,9}/\S+)$", re.IGNORECASE)
_DATE = re.compile(r"^\d{4}(-\d{2}(-\d{2})?)?(/\d{4}(-\d{2}(-\d{2})?)?)?$")
_LANG = re.compile(r"^[a-zA-Z]{2,3}(-[a-zA-Z0-9]{2,8})*$")


class _Checker:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def fail(self, where: str, text: str) -> None:
        # (what was sent may be anything: never echo a character that is not text)
        where = where.encode("utf-8", "backslashreplace").decode("utf-8")
        self.problems.append(f"{where}: {text}")

    def text(self, where: str, value: Any, limit: int = MAX_LINE, *, required: bool = False) -> str:
        if value is None or value == "":
            if required:
                self.fail(where, "is required")
            return ""
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            self.fail(where, "must be text")
            return ""
        text = str(value).strip()
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            self.fail(where, "contains characters that are not text (lone surrogates)")
            return ""
        if len(text) > limit:
            self.fail(where, f"is {len(text):,} characters long; at most {limit:,} are allowed")
        if any(ord(c) < 32 and c not in "\n\t" for c in text):
            self.fail(where, "contains control characters")
        if limit == MAX_LINE and "\n" in text:
            self.fail(where, "must be one line")
        return text

    def items(self, where: str, value: Any) -> list[Any]:
        if value is None:
            return []
        if isinstance(value, str | dict):
            value = [value]
        if not isinstance(value, list):
            self.fail(where, "must be a list")
            return []
        if len(value) > MAX_ITEMS:
            self.fail(where, f"has {len(value):,} items; at most {MAX_ITEMS} are allowed")
            return []
        return value

    def keys(self, where: str, item: Any, allowed: tuple[str, ...], default: str) -> dict[str, Any]:
        """An item as a dict (a bare string fills *default*), unknown keys reported."""
        if isinstance(item, str):
            return {default: item}
        if not isinstance(item, dict):
            self.fail(where, f"must be text or a mapping with {', '.join(allowed)}")
            return {}
        for key in item:
            if key not in allowed:
                self.fail(where, f"unknown field {key!r}; known: {', '.join(allowed)}")
        return item

    def choice(self, where: str, value: str, options: list[str]) -> str:
        if not value:
            return value
        by_lower = {o.lower(): o for o in options}
        if value.lower() in by_lower:
            return by_lower[value.lower()]
        self.fail(where, f"{value!r} is not one of DataCite's values: {', '.join(options)}")
        return value


def _orcid_ok(digits: str) -> bool:
    """ISO 7064 MOD 11-2, the check digit of an ORCID iD."""
    total = 0
    for ch in digits[:-1]:
        total = (total + int(ch)) * 2
    check = (12 - total % 11) % 11
    return digits[-1] == ("X" if check == 10 else str(check))


def _person(c: _Checker, where: str, raw: Any, *, contributor: bool) -> dict[str, Any] | None:
    allowed: tuple[str, ...] = ("name", "given", "family", "orcid", "affiliation", "ror")
    if contributor:
        allowed = (*allowed, "type")
    item = c.keys(where, raw, allowed, "name")
    if not item:
        return None
    out: dict[str, Any] = {}
    name = c.text(f"{where}.name", item.get("name"))
    given = c.text(f"{where}.given", item.get("given"))
    family = c.text(f"{where}.family", item.get("family"))
    if not name and family:
        name = f"{family}, {given}" if given else family
    out["name"] = name
    if given:
        out["given"] = given
    if family:
        out["family"] = family
    orcid = c.text(f"{where}.orcid", item.get("orcid"))
    if orcid:
        m = _ORCID.match(orcid)
        if not m:
            c.fail(f"{where}.orcid", f"{orcid!r} is not an ORCID iD (like 0000-0002-1825-0097)")
        elif not _orcid_ok(m.group(1).replace("-", "")):
            c.fail(f"{where}.orcid", f"{orcid!r} is not a valid ORCID iD: its check digit is wrong")
        else:
            out["orcid"] = m.group(1)
    affiliation = c.text(f"{where}.affiliation", item.get("affiliation"))
    if affiliation:
        out["affiliation"] = affiliation
    ror = c.text(f"{where}.ror", item.get("ror"))
    if ror:
        m = _ROR.match(ror)
        if not m:
            c.fail(f"{where}.ror", f"{ror!r} is not a ROR id (like https://ror.org/05dxps055)")
        else:
            out["ror"] = f"https://ror.org/{m.group(1)}"
            if not affiliation:
                c.fail(f"{where}.affiliation", "give the institution's name with its ROR id")
    if contributor:
        kind = c.text(f"{where}.type", item.get("type")) or "Other"
        out["type"] = c.choice(f"{where}.type", kind, CONTRIBUTOR_TYPES)
    if not name:
        c.fail(f"{where}.name", "is required (e.g. 'Curie, Marie' or a group's name)")
        return None
    return out


def _identifier(c: _Checker, where: str, value: str, kind: str) -> tuple[str, str]:
    """(identifier, type): DOIs recognised in any of their usual spellings."""
    m = _DOI.match(value)
    if m and kind in ("", "DOI"):
        return m.group(1), "DOI"
    if kind == "DOI":
        c.fail(where, f"{value!r} is not a DOI (like 10.5281/zenodo.123456)")
    if not kind:
        if value.startswith(("https://", "http://")):
            return value, "URL"
        c.fail(where, f"{value!r}: give its type (DOI, URL, ...) or a full https:// URL")
        return value, "URL"
    return value, c.choice(f"{where}.type", kind, IDENTIFIER_TYPES)


@functools.cache
def _spdx_ids() -> dict[str, str]:
    """SPDX licence ids (not exceptions, not LicenseRef-), by their lower-case form."""
    from license_expression import get_spdx_licensing

    return {
        key.lower(): key
        for key, symbol in get_spdx_licensing().known_symbols.items()
        if not getattr(symbol, "is_exception", False) and not key.startswith("LicenseRef-")
    }


def _license(c: _Checker, value: str) -> str:
    """One SPDX licence id (DataCite's rightsIdentifier holds one, not an expression)."""
    if not value:
        return ""
    known = _spdx_ids().get(value.lower())
    if known is None:
        c.fail(
            "license",
            f"{value!r} is not an SPDX licence id; for data use e.g. CC-BY-4.0 or CC0-1.0, "
            "for code MIT or Apache-2.0 (see https://spdx.org/licenses/)",
        )
        return value
    return known


def check_form(form: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A form normalised (empty fields dropped), and what is wrong with it."""
    c = _Checker()
    out: dict[str, Any] = {}
    for key in form:
        if key not in FIELDS:
            c.fail(str(key), f"unknown field; known fields are {', '.join(FIELDS)}")
    for key in ("title", "language", "version", "publisher"):
        if value := c.text(key, form.get(key)):
            out[key] = value
    if out.get("language") and not _LANG.match(out["language"]):
        c.fail("language", f"{out['language']!r} is not a language code (like en or de)")
    if value := c.text("description", form.get("description"), MAX_TEXT):
        out["description"] = value
    if rtype := c.text("resource_type", form.get("resource_type")):
        out["resource_type"] = c.choice("resource_type", rtype, RESOURCE_TYPES)
    if lic := _license(c, c.text("license", form.get("license"))):
        out["license"] = lic
    for key, contributor in (("creators", False), ("contributors", True)):
        people = [
            p
            for i, raw in enumerate(c.items(key, form.get(key)))
            if (p := _person(c, f"{key}[{i + 1}]", raw, contributor=contributor))
        ]
        if people:
            out[key] = people
    keywords = [
        w
        for i, raw in enumerate(c.items("keywords", form.get("keywords")))
        if (w := c.text(f"keywords[{i + 1}]", raw))
    ]
    if keywords:
        out["keywords"] = keywords
    subjects = []
    for i, raw in enumerate(c.items("subjects", form.get("subjects"))):
        where = f"subjects[{i + 1}]"
        item = c.keys(where, raw, ("subject", "scheme", "uri"), "subject")
        subject = c.text(f"{where}.subject", item.get("subject"), required=bool(item))
        if subject:
            one = {"subject": subject}
            for k in ("scheme", "uri"):
                if v := c.text(f"{where}.{k}", item.get(k)):
                    one[k] = v
            subjects.append(one)
    if subjects:
        out["subjects"] = subjects
    funding = []
    for i, raw in enumerate(c.items("funding", form.get("funding"))):
        where = f"funding[{i + 1}]"
        item = c.keys(where, raw, ("funder", "funder_id", "award", "award_title"), "funder")
        funder = c.text(f"{where}.funder", item.get("funder"), required=bool(item))
        if not funder:
            continue
        one = {"funder": funder}
        if fid := c.text(f"{where}.funder_id", item.get("funder_id")):
            m = _ROR.match(fid)
            if m:
                one["funder_id"] = f"https://ror.org/{m.group(1)}"
            elif _DOI.match(fid):
                one["funder_id"] = f"https://doi.org/{_DOI.match(fid).group(1)}"  # type: ignore[union-attr]
            else:
                c.fail(f"{where}.funder_id", f"{fid!r}: give the funder's ROR id or Crossref DOI")
        for k in ("award", "award_title"):
            if v := c.text(f"{where}.{k}", item.get(k)):
                one[k] = v
        funding.append(one)
    if funding:
        out["funding"] = funding
    related = []
    for i, raw in enumerate(c.items("related", form.get("related"))):
        where = f"related[{i + 1}]"
        item = c.keys(where, raw, ("identifier", "relation", "type"), "identifier")
        ident = c.text(f"{where}.identifier", item.get("identifier"), required=bool(item))
        if not ident:
            continue
        relation = c.text(f"{where}.relation", item.get("relation")) or "References"
        value, kind = _identifier(c, f"{where}.identifier", ident, c.text("", item.get("type")))
        related.append(
            {
                "identifier": value,
                "type": kind,
                "relation": c.choice(f"{where}.relation", relation, RELATION_TYPES),
            }
        )
    if related:
        out["related"] = related
    dates = []
    for i, raw in enumerate(c.items("dates", form.get("dates"))):
        where = f"dates[{i + 1}]"
        item = c.keys(where, raw, ("date", "type"), "date")
        date = c.text(f"{where}.date", item.get("date"), required=bool(item))
        if not date:
            continue
        if not _DATE.match(date):
            c.fail(f"{where}.date", f"{date!r} is not a date like 2026-03-14 (or a range a/b)")
        kind = c.text(f"{where}.type", item.get("type")) or "Other"
        dates.append({"date": date, "type": c.choice(f"{where}.type", kind, DATE_TYPES)})
    if dates:
        out["dates"] = dates
    return out, c.problems
