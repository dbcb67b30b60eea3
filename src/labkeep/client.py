"""The CLI against a labkeep server: the subset of the Keep's API that a scientist's
laptop needs (list, download, verification status, share links), over the JSON API.

Credentials come from ``labkeep login URL`` (stored in ``~/.config/labkeep/login.json``,
readable only by you) or from ``LABKEEP_URL`` and ``LABKEEP_TOKEN``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from labkeep.errors import (
    AuthenticationFailed,
    EnvironmentFailure,
    Forbidden,
    IntegrityError,
    LabkeepError,
    NotFound,
    ServerUnreachable,
    UsageError,
)
from labkeep.names import parse_address, part_name
from labkeep.results import EntryStream, Listing, Report, Result

_ERRORS: dict[int, type[LabkeepError]] = {401: AuthenticationFailed, 403: Forbidden, 404: NotFound}


def login_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "labkeep" / "login.json"


def save_login(url: str, token: str, user: str) -> Path:
    path = login_file()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"url": url.rstrip("/"), "token": token, "user": user}, handle)
    os.replace(tmp, path)
    return path


def saved_login() -> dict[str, str] | None:
    url, token = os.environ.get("LABKEEP_URL"), os.environ.get("LABKEEP_TOKEN")
    if url and token:
        return {"url": url.rstrip("/"), "token": token, "user": ""}
    try:
        data = json.loads(login_file().read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("url") and data.get("token") else None


def forget_login() -> bool:
    try:
        login_file().unlink()
    except FileNotFoundError:
        return False
    return True


def token_for_password(url: str, name: str, password: str, token_name: str) -> dict[str, Any]:
    import httpx

    with httpx.Client(base_url=url.rstrip("/"), timeout=30) as http:
        response = http.post(
            "/api/v1/auth/token",
            json={"name": name, "password": password, "token_name": token_name},
        )
        _raise_for(response)
        result: dict[str, Any] = response.json()
        return result


def _raise_for(response: Any) -> None:
    if response.status_code < 400:
        return
    try:
        body = response.json()
        message, hint = body.get("message") or str(body), body.get("hint")
    except ValueError:
        message, hint = response.text[:200] or response.reason_phrase, None
    cls = _ERRORS.get(
        response.status_code, UsageError if response.status_code < 500 else LabkeepError
    )
    raise cls(f"server: {message}", hint=hint)


@dataclass
class _ShareInfo:
    """A share link as the server describes it (same fields as ShareInfo.to_dict())."""

    record: dict[str, Any]

    def __getattr__(self, name: str) -> Any:
        try:
            return self.record[name]
        except KeyError:
            raise AttributeError(name) from None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.record.items() if k != "token"}


class RemoteKeep:
    """A keep on a server, used through its JSON API with an API token."""

    def __init__(self, url: str, token: str) -> None:
        import httpx

        self.url = url.rstrip("/")
        self.http = httpx.Client(
            base_url=self.url + "/api/v1",
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> RemoteKeep:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RemoteKeep({self.url!r})"

    def __getattr__(self, name: str) -> Any:
        raise UsageError(
            f"'{name.replace('_', ' ')}' is not available against a server",
            hint="run it on the keep's machine, or use the web UI",
        )

    def _get(self, url: str, **params: Any) -> Any:
        return self._send("GET", url, params={k: v for k, v in params.items() if v is not None})

    def ls(
        self, address: str | None = None, *, limit: int | None = None, after: str | None = None
    ) -> Listing:
        if not address:
            return Listing("projects", None, self._get("/projects"))
        addr = parse_address(address)
        if addr.dataset is None:
            return Listing(
                "datasets", addr.project, self._get(f"/projects/{addr.project}/datasets")
            )
        items: list[dict[str, Any]] = []
        version = None
        cursor = after
        while True:
            page = self._get(
                f"/datasets/{addr.project}/{addr.dataset}/entries",
                path=addr.path,
                version=addr.version,
                after=cursor,
                limit=min(limit - len(items), 5000) if limit else 5000,
            )
            items.extend(page["items"])
            version = page["version"]
            cursor = page["next_after"]
            if not cursor or (limit and len(items) >= limit):
                break
        return Listing("entries", str(addr), items, version)

    def stream_entries(self, address: str, *, after: str | None = None) -> EntryStream:
        """The files below *address*, fetched from the server a page at a time."""
        addr = parse_address(address, need_dataset=True)
        url = f"/datasets/{addr.project}/{addr.dataset}/entries"

        def page(cursor: str | None) -> dict[str, Any]:
            result: dict[str, Any] = self._get(
                url, path=addr.path, version=addr.version, after=cursor, limit=5000
            )
            return result

        first = page(after)

        def entries() -> Iterator[dict[str, Any]]:
            current = first
            while True:
                yield from current["items"]
                if not current["next_after"]:
                    return
                current = page(current["next_after"])

        return EntryStream(str(addr), first["version"], entries())

    def versions(self, address: str) -> list[dict[str, Any]]:
        addr = parse_address(address, need_dataset=True)
        result: list[dict[str, Any]] = self._get(
            f"/datasets/{addr.project}/{addr.dataset}/versions"
        )
        return result

    def verification(self, address: str) -> dict[str, Any]:
        addr = parse_address(address, need_dataset=True)
        result: dict[str, Any] = self._get(f"/datasets/{addr.project}/{addr.dataset}/verification")
        return result

    def whoami(self) -> dict[str, Any]:
        result: dict[str, Any] = self._get("/whoami")
        return result

    def create_share(
        self,
        address: str,
        *,
        expires: str = "7d",
        max_downloads: int | None = None,
        label: str = "",
    ) -> tuple[str, _ShareInfo]:
        record = self._send(
            "POST",
            "/shares",
            json={
                "target": address,
                "expires": expires,
                "max_downloads": max_downloads,
                "label": label,
            },
        )
        return record["token"], _ShareInfo(record)

    def export_file(self, address: str, dest: str | os.PathLike[str]) -> dict[str, Any]:
        """Download one file to *dest*, checking the SHA-256 the server announces."""
        addr = parse_address(address, need_dataset=True)
        if not addr.path:
            raise UsageError("download a file: PROJECT/DATASET/PATH")
        target = Path(dest)
        if target.is_dir():
            target = target / addr.path.rsplit("/", 1)[-1]
        digest = self._download(addr.dataset_address, addr.path, addr.version, target)
        return {
            "dataset": addr.dataset_address,
            "path": addr.path,
            "sha256": digest,
            "size": target.stat().st_size,
            "saved_to": str(target),
        }

    def export(
        self,
        address: str,
        dest: str | os.PathLike[str] = ".",
        *,
        on_result: Callable[[Result], None] | None = None,
    ) -> Report:
        """Download a file, folder or dataset (see :func:`labkeep.ops.export.export`)."""
        from labkeep.ops.export import export_entries

        stream = self.stream_entries(address)

        def copy_one(dataset: str, entry: dict[str, Any], version: int | None, target: Path) -> str:
            return self._download(dataset, str(entry["path"]), version, target)

        return export_entries(address, stream.version, stream.entries, dest, copy_one, on_result)

    def _download(self, dataset: str, path: str, version: int | None, target: Path) -> str:
        """Stream one file to a temporary name; rename it to *target* only when its
        SHA-256 is the one the server announced. Returns the SHA-256."""
        project, name = dataset.split("/", 1)
        url = f"/files/{quote(project)}/{quote(name)}/{quote(path)}"
        params = {"version": version} if version is not None else {}
        tmp = target.with_name(part_name(target.name))
        digest = hashlib.sha256()
        try:
            with self._request_stream(url, params) as response:
                expected = response.headers.get("x-content-sha256", "")
                with open(tmp, "wb") as out:
                    for chunk in response.iter_bytes(1 << 20):
                        digest.update(chunk)
                        out.write(chunk)
            if not expected or digest.hexdigest() != expected:
                raise IntegrityError(
                    f"download of {dataset}/{path} does not match its SHA-256; "
                    "the copy was not kept",
                    hint="run the same command again; if it persists, ask for a verify",
                )
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                tmp.unlink()
        return digest.hexdigest()

    @contextmanager
    def _request_stream(self, url: str, params: dict[str, Any]) -> Iterator[Any]:
        with self._reaching(), self.http.stream("GET", url, params=params) as response:
            if response.status_code >= 400:
                response.read()
                _raise_for(response)
            yield response

    # -- share links ------------------------------------------------------------------------
    def list_shares(self, target: str | None = None) -> list[_ShareInfo]:
        return [_ShareInfo(record) for record in self._get("/shares", target=target)]

    def revoke_share(self, link_id: int) -> _ShareInfo:
        return _ShareInfo(self._send("DELETE", f"/shares/{int(link_id)}"))

    # -- verification ---------------------------------------------------------------------
    def verify(
        self,
        target: str | None = None,
        *,
        on_result: Callable[[Result], None] | None = None,
        **_local_only: Any,
    ) -> Report:
        """Ask the server to re-hash a dataset (or each dataset of a project) now."""
        if not target:
            raise UsageError(
                "verifying the whole keep needs the keep's own machine",
                hint="give a PROJECT or PROJECT/DATASET, or run it where the keep is",
            )
        addr = parse_address(target)
        if addr.dataset:
            names = [addr.dataset_address]
        else:
            names = [d["dataset"] for d in self._get(f"/projects/{quote(addr.project)}/datasets")]
        report = Report("verify", info={"target": target, "datasets": len(names)}, keep_all=False)
        states: dict[str, int] = {}
        # the server queues one verify job per dataset; its workers run them
        queued = []
        for name in names:
            project, dataset = name.split("/", 1)
            job = self._send("POST", f"/datasets/{quote(project)}/{quote(dataset)}/verify")
            queued.append((name, job))
        for name, job in queued:
            answer = self._wait_for_job(job)
            result = answer.get("result") or {}
            if "states" not in result:
                raise LabkeepError(
                    f"server: verify job {answer['id']} of {name} {answer['state']}: "
                    f"{answer.get('last_error') or 'no result'}",
                    hint=f"see {self.url}/jobs/{answer['id']}",
                )
            for state, count in (result.get("states") or {}).items():
                states[state] = states.get(state, 0) + int(count)
            for record in result.get("problems", []):
                found = Result(
                    "verify",
                    record.get("status", "error"),
                    path=record.get("path"),
                    dataset=record.get("dataset", name),
                    state=record.get("state"),
                    message=record.get("message"),
                )
                report.add(found)
                if on_result is not None:
                    on_result(found)
            report.tally("ok", int((result.get("states") or {}).get("ok", 0)))
        report.info["states"] = states
        report.info["log"] = "on the server"
        return report

    def _wait_for_job(self, job: dict[str, Any], *, no_worker_grace: float = 10.0) -> Any:
        """Poll a queued job until it ended. When the server said no worker runs and the
        job is still waiting after *no_worker_grace* seconds, stop waiting (it stays
        queued and runs once a worker starts)."""
        import time

        started = time.monotonic()
        delay = 0.2
        while job["state"] in ("queued", "running"):
            waited = time.monotonic() - started
            if job["state"] == "queued" and not job.get("workers", 1) and waited > no_worker_grace:
                raise EnvironmentFailure(
                    f"the server queued job {job['id']} but runs no worker to do it",
                    hint="it runs once someone starts 'labkeep worker' on the server; "
                    f"follow it at {self.url}/jobs/{job['id']}",
                )
            time.sleep(delay)
            delay = min(2.0, delay * 1.5)
            workers = job.get("workers", 1)
            job = {**self._get(f"/jobs/{int(job['id'])}"), "workers": workers}
        return job

    # -- transport ----------------------------------------------------------------------------
    def _send(self, method: str, url: str, **kwargs: Any) -> Any:
        with self._reaching():
            response = self.http.request(method, url, **kwargs)
        _raise_for(response)
        return response.json()

    @contextmanager
    def _reaching(self) -> Iterator[None]:
        """Network failures as a typed error (exit 3), naming the server."""
        import httpx

        try:
            yield
        except httpx.TransportError as exc:
            raise ServerUnreachable(
                f"cannot reach the labkeep server {self.url}: {exc or type(exc).__name__}",
                hint="check the address and your network, then run the same command again",
            ) from exc
