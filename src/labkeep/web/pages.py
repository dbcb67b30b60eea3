"""Rendering HTML: the Jinja2 environment and the page helpers the UI routes use.

Nothing here decides access: pages show what the Keep returned, and the few optional
parts of a page (the grants of a project, the events of the keep) are shown when the
Keep answered them rather than raising Forbidden.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from datetime import datetime
from fnmatch import fnmatch
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from markupsafe import Markup, escape

from labkeep.errors import (
    AuthenticationFailed,
    Forbidden,
    LabkeepError,
    NotFound,
    TooLarge,
    TooManyAttempts,
)
from labkeep.web.app import HERE

if TYPE_CHECKING:
    from labkeep.keep import Keep
    from labkeep.ops.projects import DatasetInfo, ProjectInfo

T = TypeVar("T")
templates = Jinja2Templates(directory=HERE / "templates")
#: rows per page of a file table
PAGE_SIZE = 100

#: the fixed notices a redirect may ask for with ``?done=KEY`` (never free text)
NOTICES = {
    "edited": "Saved.",
    "sealed": "Sealed: raw/ is now write-once.",
    "granted": "Access granted.",
    "revoked": "Access revoked.",
    "share-revoked": "The share link was revoked: it no longer opens anything.",
    "token-revoked": "The API token was revoked.",
    "user-added": "The account was created.",
    "user-disabled": "The account was disabled: its sessions and tokens no longer work.",
    "user-enabled": "The account was enabled.",
    "member-added": "Membership saved.",
    "member-removed": "The member was removed from the group.",
    "group-created": "The group was created.",
    "project-created": "The project was created.",
    "dataset-created": "The dataset was created.",
    "password-changed": "Your password was changed: sign in again with the new one.",
    "signed-out": "You are signed out.",
    "import-queued": "The import was queued: a worker runs it, and this page shows how far it is.",
    "job-queued": "The job was queued: a worker runs it.",
    "job-cancelled": "Cancelled (a running job stops at its next step).",
    "job-retried": "The job was queued again.",
    "run-cancelled": "Cancelled: the run stops (a SLURM job when SLURM ends it).",
    "metadata-saved": "The metadata was saved.",
    "released": "Released: this dataset is sealed and never changes.",
}


# -- formatting ---------------------------------------------------------------------------
def human_size(size: int | None) -> str:
    """1234567 -> '1.2 MB' (decimal units, as file managers show them)."""
    if size is None:
        return ""
    value = float(size)
    for unit in ("bytes", "kB", "MB", "GB", "TB", "PB"):
        if value < 1000 or unit == "PB":
            if unit == "bytes":
                return f"{int(value)} byte" + ("" if int(value) == 1 else "s")
            return f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def _size_markup(size: int | None) -> Markup:
    if size is None:
        return Markup("")
    return Markup(f'<span class="size" title="{size:,} bytes">{escape(human_size(size))}</span>')  # noqa: S704 (escaped)


def iso(value: datetime | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds") + ("" if value.tzinfo else "Z")
    return value


def _time_markup(value: datetime | str | None) -> Markup:
    text = iso(value)
    if not text:
        return Markup('<span class="muted">never</span>')
    safe = escape(text)
    return Markup(f'<time datetime="{safe}">{safe}</time>')  # noqa: S704 (escaped)


def _sha_markup(digest: str | None) -> Markup:
    if not digest:
        return Markup("")
    safe = escape(digest)
    return Markup(f'<code class="sha" title="SHA-256 {safe}">{safe[:12]}…</code>')  # noqa: S704


def _verify_cell(status: str | None, at: datetime | str | None) -> str:
    if not status:
        return '<span class="state state-never">never verified</span>'
    when = _esc(iso(at))
    stamp = f'<time datetime="{when}">{when}</time>' if when else '<span class="muted">never</span>'
    if status == "ok":
        return f'<span class="state state-ok">OK</span> {stamp}'
    return f'<span class="state state-bad">{_esc(status.upper())}</span> {stamp}'


def file_rows(
    items: list[dict[str, Any]],
    links: Links,
    project: str,
    dataset: str,
    version: int | None = None,
    token: str | None = None,
    strip: str = "",
) -> Markup:
    """The rows of a file table, built here rather than in the template: a page holds
    hundreds of them, and plain string formatting with ``html.escape`` costs a tenth of
    the template's macro calls and ``Markup.format`` per cell."""
    if token:
        page_base = links.share(token, "browse", project, dataset) + "/"
        file_base = links.share(token, "file", project, dataset) + "/"
        query = ""
    else:
        page_base = links.dataset(project, dataset, version) + "/-/"
        file_base = links.download(project, dataset, "", None)
        query = f"?version={version}" if version is not None else ""
    rows = []
    for item in items:
        path = item["path"]
        quoted = _qp(path)
        shown = path[len(strip) :] if strip and path.startswith(strip) else path
        size, digest = item["size"], item["sha256"]
        rows.append(
            f'<tr><td class="path"><a href="{_esc(page_base + quoted)}">{_esc(shown)}</a></td>'
            f'<td class="num"><span class="size" title="{size:,} bytes">{human_size(size)}'
            f'</span></td><td><code class="sha" title="SHA-256 {digest}">{digest[:12]}…</code>'
            f"</td><td>{_mtime(item['mtime_ns'])}</td>"
            f"<td>{_verify_cell(item['verify_status'], item['verified_at'])}</td>"
            f'<td><a class="download-link" href="{_esc(file_base + quoted + query)}" download '
            f'aria-label="Download {_esc(path)}">Download</a></td></tr>'
        )
    return Markup("\n".join(rows))  # noqa: S704 (every value escaped above)


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _json_ld(data: dict[str, Any]) -> Markup:
    """JSON for a ``<script type="application/ld+json">`` block (no way to close it early)."""
    text = json.dumps(data, ensure_ascii=False, indent=1)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return Markup(text)  # noqa: S704 (escaped above for the script context)


def _mtime(mtime_ns: int | None) -> str:
    if mtime_ns is None:
        return ""
    from datetime import UTC

    return datetime.fromtimestamp(mtime_ns / 1e9, UTC).isoformat(timespec="seconds")[:-6] + "Z"


templates.env.filters["size"] = _size_markup
templates.env.filters["human_size"] = human_size
templates.env.filters["iso"] = iso
templates.env.filters["time"] = _time_markup
templates.env.filters["sha"] = _sha_markup
templates.env.filters["json_ld"] = _json_ld
templates.env.filters["mtime"] = _mtime
templates.env.globals["file_rows"] = file_rows


# -- URLs ---------------------------------------------------------------------------------
def _q(text: str) -> str:
    return quote(text, safe="")


def _qp(path: str) -> str:
    return quote(path, safe="/")


class Links:
    """The URL of every page and download, relative to the server (with its root path)."""

    def __init__(self, request: Request, base_url: str = "") -> None:
        self.root = (request.scope.get("root_path") or "").rstrip("/")
        self.request = request
        self.base_url = base_url.rstrip("/")

    def _query(self, **params: Any) -> str:
        kept = {k: v for k, v in params.items() if v is not None and v != ""}
        return ("?" + urlencode(kept)) if kept else ""

    def home(self) -> str:
        return self.root + "/"

    def static(self, name: str) -> str:
        return f"{self.root}/static/{name}"

    def login(self, next: str | None = None) -> str:
        return f"{self.root}/login" + self._query(next=next)

    def page(self, path: str, **params: Any) -> str:
        """Any UI path (``/me``, ``/admin/users``...) with optional query parameters."""
        return self.root + path + self._query(**params)

    def project(self, project: str) -> str:
        return f"{self.root}/p/{_q(project)}"

    def dataset(self, project: str, dataset: str, version: int | None = None) -> str:
        url = f"{self.root}/p/{_q(project)}/{_q(dataset)}"
        return url + (f"/@{version}" if version is not None else "")

    def file(self, project: str, dataset: str, path: str, version: int | None = None) -> str:
        return self.dataset(project, dataset, version) + "/-/" + _qp(path)

    def download(self, project: str, dataset: str, path: str, version: int | None = None) -> str:
        url = f"{self.root}/api/v1/files/{_q(project)}/{_q(dataset)}/{_qp(path)}"
        return url + self._query(version=version)

    def preview(self, project: str, dataset: str, path: str, version: int | None = None) -> str:
        url = f"{self.root}/api/v1/previews/{_q(project)}/{_q(dataset)}/{_qp(path)}"
        return url + self._query(version=version)

    def zip(
        self, project: str, dataset: str, version: int | None = None, path: str | None = None
    ) -> str:
        url = f"{self.root}/api/v1/datasets/{_q(project)}/{_q(dataset)}/zip"
        return url + self._query(path=path, version=version)

    def manifest(self, project: str, dataset: str) -> str:
        return f"{self.root}/api/v1/datasets/{_q(project)}/{_q(dataset)}/manifest"

    def share(self, token: str, *parts: str, **params: Any) -> str:
        """A share link's landing page, or a page/download below it."""
        url = f"{self.root}/s/{_q(token)}"
        for part in parts:
            url += "/" + _qp(part)
        return url + self._query(**params)

    def absolute(self, url: str) -> str:
        """The public URL of a server-relative *url* (web.base_url when configured)."""
        if self.base_url:
            return self.base_url + url[len(self.root) :]
        origin = f"{self.request.url.scheme}://{self.request.url.netloc}"
        return origin + url


def crumbs_for(
    links: Links,
    project: str | None = None,
    dataset: str | None = None,
    path: str | None = None,
    version: int | None = None,
) -> list[tuple[str, str]]:
    """Breadcrumbs: Home > project > dataset[@version] > folder > ... (label, href)."""
    crumbs = [("Home", links.home())]
    if project:
        crumbs.append((project, links.project(project)))
    if project and dataset:
        label = dataset + (f" @{version}" if version is not None else "")
        crumbs.append((label, links.dataset(project, dataset, version)))
        if path:
            parts = path.split("/")
            for i in range(len(parts)):
                sub = "/".join(parts[: i + 1])
                crumbs.append((parts[i], links.file(project, dataset, sub, version)))
    return crumbs


def link_outs(
    keep: Keep, links: Links, project: str, dataset: str, path: str, version: int | None
) -> list[tuple[str, str]]:
    """The configured 'open in...' buttons whose glob matches the file's name."""
    name = path.rsplit("/", 1)[-1]
    download = links.absolute(links.download(project, dataset, path, version))
    found = []
    for link in keep.config.web.links:
        if link.on != "file" or not fnmatch(name, link.pattern):
            continue
        url = link.url
        for key, value in (
            ("{project}", _q(project)),
            ("{dataset}", _q(dataset)),
            ("{path}", _qp(path)),
            ("{url}", _q(download)),
        ):
            url = url.replace(key, value)
        if url.startswith(("https://", "http://", "/")):
            found.append((link.name, url))
    return found


# -- page data ----------------------------------------------------------------------------
def if_allowed(call: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """*call*'s answer, or None when the Keep says the caller may not (an optional part)."""
    try:
        return call(*args, **kwargs)
    except Forbidden:
        return None


def recent_datasets(keep: Keep, projects: list[ProjectInfo], limit: int = 10) -> list[DatasetInfo]:
    """The newest datasets the caller may see, over the first 50 projects they may see."""
    found: list[DatasetInfo] = []
    for project in projects[:50]:
        found.extend(keep.list_datasets(project.name))
    found.sort(key=lambda d: d.created_at, reverse=True)
    return found[:limit]


def next_after(items: list[dict[str, Any]], limit: int = PAGE_SIZE) -> str | None:
    """The ``after`` value of the next page of a keyset-paginated listing, if there is one."""
    return str(items[-1]["path"]) if len(items) == limit else None


def whole_number(text: str, limit: int = 2**31) -> int | None:
    """*text* as a number from 1 to *limit* - 1, written in ASCII digits (``²`` or a
    20-digit id are not numbers a catalog holds); None for anything else."""
    text = text.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        return None
    number = int(text)
    return number if 0 < number < limit else None


def version_number(text: str) -> int:
    """The number in ``/@3`` or a form's version field; anything else does not exist."""
    number = whole_number(text)
    if number is None:
        raise NotFound(f"no version {text!r}")
    return number


def notice(request: Request) -> str | None:
    return NOTICES.get(request.query_params.get("done", ""))


def local_path(target: str | None) -> str | None:
    """*target* if it is a path on this server (safe to redirect to), else None."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return None
    if any(ord(c) < 32 or c == "\\" for c in target):
        return None
    return target


def redirect(url: str, done: str | None = None) -> RedirectResponse:
    """303 See Other to *url* (after a form POST), with a fixed notice key."""
    base, mark, fragment = url.partition("#")
    if done:
        base += ("&" if "?" in base else "?") + urlencode({"done": done})
    return RedirectResponse(base + mark + fragment, status_code=303)


# -- rendering ----------------------------------------------------------------------------
def render(
    request: Request,
    name: str,
    context: dict[str, Any],
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    keep = getattr(request.state, "keep", None)
    base_url = keep.config.web.base_url if keep is not None else ""
    base = {
        "me": keep.principal if keep is not None else None,
        "csrf": getattr(request.state, "csrf", None),
        "links": Links(request, base_url),
        "notice": notice(request),
        "here": _here(request),
    }
    return templates.TemplateResponse(
        request, name, {**base, **context}, status_code=status, headers=headers
    )


def _here(request: Request) -> str:
    """This page's path and query (without a notice), to come back to after a form."""
    query = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "done"])
    return request.url.path + (f"?{query}" if query else "")


def error_page(request: Request, exc: LabkeepError, headers: dict[str, str]) -> Response:
    root = (request.scope.get("root_path") or "").rstrip("/")
    on_share = request.url.path[len(root) :].startswith("/s/")
    # hints written for the command line ("see 'labkeep ls'") do not help on a web page
    hint = exc.hint if exc.hint and "labkeep " not in exc.hint else None
    context = {
        "error": exc,
        "hint": hint,
        "status": exc.http_status,
        "on_share": on_share,
        "not_found": isinstance(exc, NotFound),
        "forbidden": isinstance(exc, Forbidden),
        "unauthenticated": isinstance(exc, AuthenticationFailed),
        "slowed": isinstance(exc, TooManyAttempts),
        "title": _error_title(exc, on_share),
    }
    return render(request, "error.html", context, status=exc.http_status, headers=headers)


def _error_title(exc: LabkeepError, on_share: bool) -> str:
    if isinstance(exc, AuthenticationFailed) and on_share:
        return "This share link no longer works"
    if isinstance(exc, NotFound):
        return "Not found"
    if isinstance(exc, Forbidden):
        return "Not allowed"
    if isinstance(exc, AuthenticationFailed):
        return "Not signed in"
    if isinstance(exc, TooManyAttempts):
        return "Too many attempts"
    if isinstance(exc, TooLarge):
        return "Too large"
    if exc.http_status >= 500:
        return "Something went wrong on the server"
    return "That did not work"
