"""WebDAV at ``/dav/PROJECT/DATASET/...``: the keep as a network drive for laptops.

WsgiDAV (the maintained Python WebDAV server: class 1 and 2, locking, ranges, tested
against Windows, macOS, davfs2, rclone and cadaver) speaks the protocol; a2wsgi runs it
inside the ASGI application, streaming request and response bodies. This module only
adapts: a DAV provider whose folders and files are :mod:`labkeep.ops.drive`'s (every
listing, read and write through the Keep's use cases and the access policy), and a
domain controller that signs people in as the web does:

- ``Authorization: Basic`` with a labkeep account's password (local or LDAP), checked by
  the same throttled check as the sign-in page (slowed down after failures, each failure
  an event); a password that worked is remembered for :data:`PASSWORD_CACHE_SECONDS` per
  process (clients send it on every request; Argon2 costs tens of milliseconds), and the
  account is re-read each time (a disabled account stops at once);
- ``Basic`` with an API token as the password (any user name), or
  ``Authorization: Bearer TOKEN``: the token's user, capped at read when it is read-only.

Nothing is served anonymously. What the caller may not see answers 404, like the rest of
the server. Request bodies are bounded by ``[web] max_upload_bytes`` (PUT) and
``max_json_bytes`` (PROPFIND, LOCK, PROPPATCH) by the server's BodyLimit.
"""

from __future__ import annotations

import hashlib
import mimetypes
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, BinaryIO

from wsgidav.dav_error import (
    HTTP_FORBIDDEN,
    DAVError,
)
from wsgidav.dav_provider import DAVCollection, DAVNonCollection, DAVProvider
from wsgidav.dc.base_dc import BaseDomainController
from wsgidav.wsgidav_app import WsgiDAVApp

from labkeep.access.secrets import TOKEN_PREFIX
from labkeep.errors import AuthenticationFailed, LabkeepError, TooManyAttempts
from labkeep.ops.drive import DriveNode, DriveWrite

if TYPE_CHECKING:
    from labkeep.access import Principal
    from labkeep.keep import Keep

PREFIX = "/dav"
REALM = "labkeep"
PRINCIPAL = "labkeep.principal"
#: seconds a password that worked is taken again without Argon2 (per process)
PASSWORD_CACHE_SECONDS = 60.0
#: bytes read from a file per response chunk
BLOCK = 1 << 16


def _dav_error(exc: LabkeepError) -> DAVError:
    """A labkeep error as WebDAV's: its status and its message (never a traceback)."""
    headers = [("Retry-After", str(exc.retry_after))] if isinstance(exc, TooManyAttempts) else None
    message = exc.message + (f" ({exc.hint})" if exc.hint else "")
    return DAVError(exc.http_status, context_info=message, add_headers=headers)


def _call(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return func(*args, **kwargs)
    except LabkeepError as exc:
        raise _dav_error(exc) from None


# -- signing in ------------------------------------------------------------------------------
class _SignIn(BaseDomainController):  # type: ignore[misc]
    """Basic auth against labkeep accounts and API tokens (see the module doc)."""

    def __init__(self, wsgidav_app: Any, config: dict[str, Any]) -> None:
        super().__init__(wsgidav_app, config)
        self.keep: Keep = config["labkeep"]["keep"]
        self._remembered: dict[bytes, float] = {}
        self._lock = threading.Lock()

    def get_domain_realm(self, path_info: str, environ: dict[str, Any] | None) -> str:
        return REALM

    def require_authentication(self, realm: str, environ: dict[str, Any] | None) -> bool:
        # (a bearer token was settled before WsgiDAV saw the request)
        return environ is None or PRINCIPAL not in environ

    def supports_http_digest_auth(self) -> bool:
        return False  # digest needs the password in clear (or an MD5 of it) on the server

    def basic_auth_user(
        self, realm: str, user_name: str, password: str, environ: dict[str, Any]
    ) -> bool:
        try:
            if password.startswith(TOKEN_PREFIX):
                principal = self.keep.authenticate_token(password)
            else:
                principal = self._password(user_name, password, environ.get("REMOTE_ADDR", ""))
        except TooManyAttempts as exc:
            raise _dav_error(exc) from None
        except AuthenticationFailed:
            return False
        environ[PRINCIPAL] = principal
        return True

    def _password(self, name: str, password: str, client: str) -> Principal:
        key = hashlib.sha256(f"{name}\x00{password}".encode()).digest()
        now = time.monotonic()
        with self._lock:
            until = self._remembered.get(key, 0.0)
        if until > now:
            principal: Principal = self.keep.principal_for(name)  # re-read: disabled stops
            return principal
        from labkeep.ops.sessions import check_password

        principal = check_password(self.keep, name, password, client=client)
        with self._lock:
            for old in [k for k, t in self._remembered.items() if t <= now]:
                del self._remembered[old]
            self._remembered[key] = now + PASSWORD_CACHE_SECONDS
        return principal


# -- the provider ------------------------------------------------------------------------------
class _Provider(DAVProvider):  # type: ignore[misc]
    def __init__(self, keep: Keep) -> None:
        super().__init__()
        self.keep = keep

    def is_readonly(self) -> bool:
        return False  # (each folder and file says whether the caller may write it)

    def acting(self, environ: dict[str, Any]) -> Keep:
        return self.keep.acting_as(environ[PRINCIPAL])

    def get_resource_inst(self, path: str, environ: dict[str, Any]) -> Any:
        keep = self.acting(environ)
        node: DriveNode | None = _call(keep.drive_node, path)
        if node is None:
            return None
        return _resource(path, environ, node)


def _resource(path: str, environ: dict[str, Any], node: DriveNode) -> Any:
    return _Folder(path, environ, node) if node.folder else _File(path, environ, node)


def _join(folder: str, name: str) -> str:
    return folder.rstrip("/") + "/" + name


class _Folder(DAVCollection):  # type: ignore[misc]
    def __init__(self, path: str, environ: dict[str, Any], node: DriveNode) -> None:
        super().__init__(path, environ)
        self.node = node

    def _keep(self) -> Keep:
        keep: Keep = self.provider.acting(self.environ)
        return keep

    def get_display_info(self) -> dict[str, str]:
        return {"type": "Directory"}

    def get_member_names(self) -> list[str]:
        return [child.name for child in self.get_member_list()]

    def get_member_list(self) -> list[Any]:
        children = _call(lambda: list(self._keep().drive_children(self.path)))
        return [_resource(_join(self.path, c.name), self.environ, c) for c in children]

    def get_member(self, name: str) -> Any:
        return self.provider.get_resource_inst(_join(self.path, name), self.environ)

    def create_empty_resource(self, name: str) -> Any:
        if not self.node.writable:
            raise DAVError(HTTP_FORBIDDEN, context_info="this folder is read-only for you")
        return _File(_join(self.path, name), self.environ, DriveNode(name, False, writable=True))

    def create_collection(self, name: str) -> Any:
        _call(self._keep().make_drive_folder, _join(self.path, name))
        return self.get_member(name)

    def delete(self) -> None:
        raise DAVError(HTTP_FORBIDDEN, context_info="folders are removed with their files")

    def support_recursive_delete(self) -> bool:
        return False

    def copy_move_single(self, dest_path: str, *, is_move: bool) -> None:
        raise DAVError(HTTP_FORBIDDEN, context_info="copy and move are not supported here")

    def support_recursive_move(self, dest_path: str) -> bool:
        return False

    def get_etag(self) -> None:
        return None

    def support_etag(self) -> bool:
        return False

    def get_last_modified(self) -> None:
        return None


class _File(DAVNonCollection):  # type: ignore[misc]
    def __init__(self, path: str, environ: dict[str, Any], node: DriveNode) -> None:
        super().__init__(path, environ)
        self.node = node
        self._writer: DriveWrite | None = None

    def _keep(self) -> Keep:
        keep: Keep = self.provider.acting(self.environ)
        return keep

    def get_content_length(self) -> int:
        return self.node.size

    def get_content_type(self) -> str:
        return mimetypes.guess_type(self.node.name)[0] or "application/octet-stream"

    def get_etag(self) -> str:
        return self.node.sha256

    def support_etag(self) -> bool:
        return bool(self.node.sha256)

    def get_last_modified(self) -> float:
        return self.node.mtime_ns / 1e9

    def support_ranges(self) -> bool:
        return True

    def get_content(self) -> BinaryIO:
        handle: BinaryIO = _call(self._keep().open_drive_file, self.path)
        return handle if handle.seekable() else _ForwardSeek(handle)  # type: ignore[return-value]

    def begin_write(self, *, content_type: str | None = None) -> Any:
        if not self.node.writable:
            raise DAVError(HTTP_FORBIDDEN, context_info="this file is read-only for you")
        declared = self.environ.get("CONTENT_LENGTH") or ""
        size = int(declared) if declared.isascii() and declared.isdigit() else None
        self._writer = _call(self._keep().begin_drive_write, self.path, declared_size=size)
        return _Sink(self._writer)

    def end_write(self, *, with_errors: bool) -> None:
        writer, self._writer = self._writer, None
        if writer is None:
            return
        if with_errors:
            writer.abort()
            return
        _call(writer.finish)

    def delete(self) -> None:
        if not self.node.writable:
            raise DAVError(HTTP_FORBIDDEN, context_info="this file is read-only for you")
        _call(self._keep().remove_drive_file, self.path)

    def copy_move_single(self, dest_path: str, *, is_move: bool) -> None:
        raise DAVError(HTTP_FORBIDDEN, context_info="copy and move are not supported here")

    def support_recursive_move(self, dest_path: str) -> bool:
        return False


class _Sink:
    """What WsgiDAV writes a PUT's body into (a2wsgi hands it over as it arrives)."""

    def __init__(self, writer: DriveWrite) -> None:
        self.writer = writer

    def write(self, data: bytes) -> None:
        _call(self.writer.write, data)

    def close(self) -> None:
        pass


class _ForwardSeek:
    """A stream from a content store, seekable forward only (ranges of cold files)."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.position = 0

    def read(self, n: int = -1) -> bytes:
        data = self.handle.read(n)
        self.position += len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence != 0 or offset < self.position:
            raise OSError("this stream can only move forward")
        while self.position < offset:
            if not self.read(min(BLOCK, offset - self.position)):
                break
        return self.position

    def close(self) -> None:
        self.handle.close()


# -- the application ---------------------------------------------------------------------------
def dav_app(keep: Keep) -> Callable[..., Iterable[bytes]]:
    """The WSGI application serving *keep* over WebDAV (mounted at ``/dav``)."""
    from wsgidav.error_printer import ErrorPrinter
    from wsgidav.http_authenticator import HTTPAuthenticator
    from wsgidav.request_resolver import RequestResolver

    config = {
        # (hrefs in answers are absolute: the server's root path, then /dav)
        "mount_path": keep.config.web.root_path.rstrip("/") + PREFIX,
        "provider_mapping": {"/": _Provider(keep)},
        "http_authenticator": {
            "domain_controller": _SignIn,
            "accept_basic": True,
            "accept_digest": False,
            "default_to_digest": False,
            "trusted_auth_header": None,
        },
        "middleware_stack": [ErrorPrinter, HTTPAuthenticator, RequestResolver],
        "labkeep": {"keep": keep},
        "lock_storage": True,
        "property_manager": None,
        "block_size": BLOCK,
        "verbose": 1,
        "logging": {"enable": False},
        "dir_browser": {"enable": False},
        "add_header_MS_Author_Via": True,
    }
    dav = WsgiDAVApp(config)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        # '.' and '..' never name anything here: refused before WsgiDAV would resolve them
        # (it answers a path above its root with a body it then fails to send)
        parts = environ.get("PATH_INFO", "").split("/")
        if any(part in (".", "..") or "\x00" in part for part in parts):
            start_response(
                "400 Bad Request",
                [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", "41")],
            )
            return [b"the path has a '.' or '..' component: no\n"]
        # a body above the limit is refused before anything else is looked at (WsgiDAV
        # would first answer 409 for a missing folder, or start reading it)
        declared = environ.get("CONTENT_LENGTH") or ""
        limit = keep.config.web.max_upload_bytes
        if (
            environ.get("REQUEST_METHOD") == "PUT"
            and declared.isascii()
            and declared.isdigit()
            and int(declared) > limit
        ):
            text = (
                f"the file is larger than this server accepts ({limit:,} bytes): large data "
                "goes in with 'labkeep ingest' on the keep's machine\n"
            ).encode()
            start_response(
                "413 Content Too Large",
                [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(text)))],
            )
            return [text]
        scheme, _, secret = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() == "bearer":
            try:
                environ[PRINCIPAL] = keep.authenticate_token(secret.strip())
            except LabkeepError as exc:
                start_response(
                    f"{exc.http_status} {'Unauthorized' if exc.http_status == 401 else 'Error'}",
                    [
                        ("Content-Type", "text/plain; charset=utf-8"),
                        ("WWW-Authenticate", f'Basic realm="{REALM}"'),
                    ],
                )
                return [exc.message.encode()]
            del environ["HTTP_AUTHORIZATION"]
            environ["wsgidav.auth.user_name"] = environ[PRINCIPAL].name
        result: Iterable[bytes] = dav(environ, start_response)
        return result

    return app


def mount(app: Any, keep: Keep) -> None:
    """Serve WebDAV at ``/dav`` of the FastAPI *app* (through a2wsgi: bodies stream)."""
    from a2wsgi import WSGIMiddleware

    app.mount(PREFIX, WSGIMiddleware(dav_app(keep), workers=8))
