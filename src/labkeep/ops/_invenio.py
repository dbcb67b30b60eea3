"""A small client of InvenioRDM's records REST API (Zenodo runs InvenioRDM), on httpx.

Only what a deposit needs: drafts, their DOI, files (init, content, commit, delete) and
publishing. Requests that the repository answers "busy" (429, 503) or with another 5xx
are retried with backoff, honouring ``Retry-After``; requests that are safe to repeat
(GET, PUT, DELETE, and the file uploads, which the caller re-sends whole) are also
retried after a dropped connection or a timeout. A draft's creation and its publication
are not repeated blindly: the caller decides (see :mod:`labkeep.ops.deposit`).

The token travels only in the ``Authorization: Bearer`` header; no message built here
contains it.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from labkeep.errors import RepositoryRefused, RepositoryUnavailable

#: statuses that mean "try again later"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class Dropped(RepositoryUnavailable):
    """The connection broke (or timed out) before an answer came: the request may or may
    not have taken effect at the repository."""

    code = "repository-dropped"


@dataclass
class RetryPolicy:
    #: attempts of one request (the first included)
    attempts: int = 6
    #: first backoff (seconds), doubled each time
    base: float = 1.0
    #: longest wait, also for a Retry-After that asks for more
    cap: float = 120.0


class InvenioClient:
    """The records API of one InvenioRDM instance (``base_url`` without ``/api``)."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 120.0,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        name: str = "the repository",
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.name = name
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self._http = httpx.Client(
            base_url=self.base_url + "/api",
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            timeout=httpx.Timeout(timeout, connect=min(timeout, 30.0)),
            follow_redirects=False,
        )
        #: requests sent and retries made (shown in results; used by tests)
        self.requests = 0
        self.retries = 0

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> InvenioClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the records API -------------------------------------------------------------
    def create_draft(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /api/records``: never repeated after a dropped connection (it would make
        a second draft); repeated after 429/503, which InvenioRDM answers before acting."""
        return self._json("POST", "/records", json=body, repeat_dropped=False)

    def get_draft(self, record_id: str) -> dict[str, Any] | None:
        return self._json_or_none("GET", f"/records/{_q(record_id)}/draft")

    def get_record(self, record_id: str) -> dict[str, Any] | None:
        """The published record, or None while it is not published."""
        return self._json_or_none("GET", f"/records/{_q(record_id)}")

    def update_draft(self, record_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._json("PUT", f"/records/{_q(record_id)}/draft", json=body)

    def reserve_doi(self, record_id: str) -> dict[str, Any]:
        """``POST .../draft/pids/doi``: reserving again returns the same DOI."""
        return self._json("POST", f"/records/{_q(record_id)}/draft/pids/doi")

    def list_files(self, record_id: str) -> list[dict[str, Any]]:
        body = self._json("GET", f"/records/{_q(record_id)}/draft/files")
        return list(body.get("entries") or [])

    def init_files(self, record_id: str, keys: list[str]) -> list[dict[str, Any]]:
        body = self._json(
            "POST",
            f"/records/{_q(record_id)}/draft/files",
            json=[{"key": key} for key in keys],
            repeat_dropped=False,
        )
        return list(body.get("entries") or [])

    def upload(
        self,
        record_id: str,
        key: str,
        body: Callable[[], Iterable[bytes]],
        size: int,
    ) -> None:
        """``PUT .../files/{key}/content``: *body()* gives a fresh stream of the whole file
        for each attempt (a broken upload is re-sent from its start)."""
        self._send(
            "PUT",
            f"/records/{_q(record_id)}/draft/files/{_q(key)}/content",
            content=body,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            what=f"the upload of {key}",
        )

    def commit(self, record_id: str, key: str) -> dict[str, Any]:
        return self._json("POST", f"/records/{_q(record_id)}/draft/files/{_q(key)}/commit")

    def get_file(self, record_id: str, key: str) -> dict[str, Any] | None:
        return self._json_or_none("GET", f"/records/{_q(record_id)}/draft/files/{_q(key)}")

    def delete_file(self, record_id: str, key: str) -> None:
        response = self._send(
            "DELETE", f"/records/{_q(record_id)}/draft/files/{_q(key)}", allow=(404,)
        )
        del response

    def request_review(self, record_id: str, community: str) -> dict[str, Any]:
        """``PUT .../draft/review``: the community that is to publish the draft."""
        body = {"receiver": {"community": community}, "type": "community-submission"}
        return self._json("PUT", f"/records/{_q(record_id)}/draft/review", json=body)

    def submit_review(self, record_id: str, message: str) -> dict[str, Any]:
        """``POST .../draft/actions/submit-review``: its curators get the request."""
        return self._json(
            "POST",
            f"/records/{_q(record_id)}/draft/actions/submit-review",
            json={"payload": {"content": message, "format": "html"}},
            repeat_dropped=False,
        )

    def publish(self, record_id: str) -> dict[str, Any]:
        """``POST .../draft/actions/publish``: a dropped connection raises :class:`Dropped`
        (the record may have been published: look with :meth:`get_record`)."""
        return self._json(
            "POST", f"/records/{_q(record_id)}/draft/actions/publish", repeat_dropped=False
        )

    # -- plumbing --------------------------------------------------------------------
    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self._send(method, path, **kwargs)
        try:
            body = response.json() if response.content else {}
        except ValueError:
            raise RepositoryUnavailable(
                f"{self.name} answered {method} {path} with something that is not JSON",
                hint="is the URL in labkeep.toml the repository's base URL?",
            ) from None
        return body if isinstance(body, dict) else {"entries": body}

    def _json_or_none(self, method: str, path: str) -> dict[str, Any] | None:
        response = self._send(method, path, allow=(404, 410))
        if response.status_code in (404, 410):
            return None
        body = response.json() if response.content else {}
        return body if isinstance(body, dict) else None

    def _send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: Callable[[], Iterable[bytes]] | None = None,
        headers: dict[str, str] | None = None,
        repeat_dropped: bool | None = None,
        allow: tuple[int, ...] = (),
        what: str | None = None,
    ) -> httpx.Response:
        what = what or f"{method} {path}"
        if repeat_dropped is None:
            repeat_dropped = method in ("GET", "PUT", "DELETE")
        policy = self.retry
        for attempt in range(1, policy.attempts + 1):
            self.requests += 1
            try:
                response = self._http.request(
                    method,
                    path,
                    json=json,
                    content=content() if content is not None else None,
                    headers=headers,
                )
            except (httpx.TransportError, OSError) as exc:
                reason = _reason(exc)
                if not repeat_dropped:
                    raise Dropped(
                        f"{self.name}: the connection broke during {what} ({reason})",
                        hint="run the same command again: it continues where it stopped",
                    ) from None
                if attempt == policy.attempts:
                    raise RepositoryUnavailable(
                        f"{self.name} could not be reached for {what} ({reason}) after "
                        f"{attempt} attempts",
                        hint="check the network and the URL; run the same command again: "
                        "it continues where it stopped",
                    ) from None
                self._wait(attempt, None)
                continue
            status = response.status_code
            if status < 400 or status in allow:
                return response
            if status in RETRY_STATUSES and attempt < policy.attempts:
                self._wait(attempt, response.headers.get("Retry-After"))
                continue
            raise self._error(response, what, attempt)
        raise AssertionError("unreachable")

    def _wait(self, attempt: int, retry_after: str | None) -> None:
        self.retries += 1
        delay = _retry_after(retry_after)
        if delay is None:
            delay = self.retry.base * (2 ** (attempt - 1))
        self._sleep(min(max(delay, 0.0), self.retry.cap))

    def _error(
        self, response: httpx.Response, what: str, attempts: int
    ) -> RepositoryRefused | RepositoryUnavailable:
        status = response.status_code
        detail = _detail(response)
        if status == 413:
            return RepositoryRefused(
                f"{self.name} refused {what}: larger than its size limit (HTTP 413)"
                + (f": {detail}" if detail else ""),
                hint="the repository caps the size of a file or a record (Zenodo: 50 GB per "
                "record); ask its support for more, or publish the large files elsewhere",
            )
        if status in (401, 403):
            return RepositoryRefused(
                f"{self.name} refused the token for {what} (HTTP {status})"
                + (f": {detail}" if detail else ""),
                hint="check the token (its scopes must allow deposits and publishing) and "
                "that it belongs to this repository (the sandbox has its own tokens)",
            )
        if status in RETRY_STATUSES:
            return RepositoryUnavailable(
                f"{self.name} is busy or failing: HTTP {status} for {what} after "
                f"{attempts} attempts" + (f": {detail}" if detail else ""),
                hint="run the same command again later: it continues where it stopped",
            )
        return RepositoryRefused(
            f"{self.name} refused {what} (HTTP {status})" + (f": {detail}" if detail else ""),
            hint="fix what it names (metadata: 'labkeep meta edit'), then run the same "
            "command again",
        )


def _q(part: str) -> str:
    return quote(part, safe="")


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: a number, or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    import datetime as dt

    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return (when - dt.datetime.now(dt.UTC)).total_seconds()


def _detail(response: httpx.Response) -> str:
    """The repository's own words about an error (InvenioRDM: message and field errors)."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:300]
    if not isinstance(body, dict):
        return ""
    parts = [str(body.get("message") or "")]
    for error in body.get("errors") or []:
        if isinstance(error, dict):
            messages = error.get("messages") or error.get("message") or ""
            if isinstance(messages, list):
                messages = "; ".join(str(m) for m in messages)
            parts.append(f"{error.get('field', '')}: {messages}".strip(": "))
    return "; ".join(p for p in parts if p)[:1000]
