"""The web server's last edge: no exception reaches a client as a traceback or a bare 500.

A pure ASGI middleware (it does not buffer bodies) just inside Starlette's own error
middleware: an exception that no handler turned into a response is logged once with a
reference id (logger ``labkeep.internal``, in the server's log) and answered with the
documented error shape (or the HTML error page) naming that reference. Database and
disk failures that escaped as raw exceptions become their typed errors (503/507).
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from labkeep.errors import InternalError, LabkeepError, from_os_error

log = logging.getLogger("labkeep.internal")


def typed(exc: BaseException, app: Any) -> LabkeepError:
    """The LabkeepError for *exc*; unexpected ones are logged with a new reference."""
    if isinstance(exc, LabkeepError):
        return exc
    if isinstance(exc, OSError):
        return from_os_error(exc)
    keep = getattr(getattr(app, "state", None), "keep", None)
    if keep is not None:
        from sqlalchemy.exc import SQLAlchemyError

        if isinstance(exc, SQLAlchemyError):
            error: LabkeepError | None = keep.catalog.translate(exc)
            if error is not None:
                return error
    from labkeep import incidents

    reference = incidents.new_reference()
    log.error("internal error, reference %s", reference, exc_info=exc)
    return InternalError(reference)


class CatchAll:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except ClientDisconnect:
            return  # the client went away: nobody to answer
        except Exception as exc:  # noqa: BLE001 (the edge: everything becomes a typed error)
            error = typed(exc, scope.get("app"))
            if started:
                # the answer is half sent (a streamed download): all we can do is stop
                if not isinstance(error, InternalError):
                    log.warning("response stopped: %s", error.message)
                return
            from labkeep.web.app import error_response

            response = error_response(Request(scope, receive), error)
            await response(scope, receive, send)
