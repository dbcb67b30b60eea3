"""``labkeep serve``: the web server (UI + JSON API) on this keep."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from labkeep.cli._common import RootOpt, err, handle_errors


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


@handle_errors
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
    create: Annotated[
        bool, typer.Option("--create", help="Create the keep at --root if there is none.")
    ] = False,
    worker: Annotated[
        bool,
        typer.Option(
            help="Also run a job worker (with the buffer watchers) beside the server, so "
            "verify, copy and import jobs queued from the web run. A facility runs its "
            "workers as separate services and passes --no-worker."
        ),
    ] = True,
    worker_concurrency: Annotated[
        int, typer.Option(min=1, max=64, help="Jobs the embedded worker runs at once.")
    ] = 2,
    root: RootOpt = None,
) -> None:
    """Serve the web UI and the JSON API (/api/v1) of the keep."""
    import uvicorn

    from labkeep.config import CONFIG_NAME, find_root
    from labkeep.keep import Keep

    if create and root and not os.path.exists(os.path.join(root, CONFIG_NAME)):
        Keep.init(root).close()
        err.print(f"created a new keep at {os.path.abspath(root)}")
    keep_root = find_root(root)
    _check_port_free(host, port)
    with Keep.open(keep_root) as keep:
        password = keep.ensure_admin_password()
        web = keep.config.web
        admin = keep.actor
    shown_host = "localhost" if host in ("127.0.0.1", "0.0.0.0", "::") else host  # noqa: S104
    url = web.base_url or f"http://{shown_host}:{port}{web.root_path}"
    err.print(f"[bold]labkeep[/] serving {keep_root} at [bold]{url}/[/]")
    if password:
        err.print(
            f"sign in as [bold]{admin}[/] with password [bold]{password}[/] "
            "(shown once: change it on your account page, or with 'labkeep user passwd')"
        )
        err.print(
            f"lost it? on this machine, 'labkeep user passwd {admin} --root {keep_root}' "
            "sets a new one (you act as the site admin who created the keep)"
        )
    else:
        err.print("sign in with your labkeep account (site admins: 'labkeep user add' for others)")
    os.environ["LABKEEP_ROOT"] = str(keep_root)
    from labkeep.web.logs import log_config

    if worker:
        _start_worker(str(keep_root), worker_concurrency)

    uvicorn.run(
        "labkeep.web:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        proxy_headers=True,
        forwarded_allow_ips=web.forwarded_allow_ips,
        log_level="info",
        log_config=log_config(),  # share tokens are redacted from the access log
    )


def _start_worker(root: str, concurrency: int) -> None:
    """``labkeep worker --watch`` as a child process that stops with the server (SIGTERM
    at exit, and the kernel's parent-death signal if the server is killed)."""
    import atexit
    import signal
    import subprocess
    import sys

    def die_with_parent() -> None:
        import contextlib
        import ctypes

        with contextlib.suppress(OSError):  # PR_SET_PDEATHSIG (Linux)
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)

    child = subprocess.Popen(
        [sys.executable, "-m", "labkeep", "worker", "--watch", "--root", root,
         "--concurrency", str(concurrency), "--grace", "10"],
        preexec_fn=die_with_parent,
    )  # fmt: skip
    err.print(
        f"job worker started (pid {child.pid}, {concurrency} at once): "
        "'labkeep jobs' lists its work"
    )

    def stop() -> None:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(15)
            except subprocess.TimeoutExpired:
                child.kill()

    atexit.register(stop)


def _check_port_free(host: str, port: int) -> None:
    """Refuse at once, with what to do, when the address is taken (not a raw Errno 98)."""
    import errno
    import socket

    from labkeep.errors import UsageError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UsageError(
                    f"port {port} on {host} is already in use (another labkeep serve, or "
                    "another program)",
                    hint=f"stop that program, or choose another port: --port {port + 1} "
                    f"(./dev serve --port {port + 1})",
                ) from None
            if exc.errno in (errno.EACCES, errno.EPERM):
                raise UsageError(
                    f"not allowed to listen on port {port}",
                    hint="ports below 1024 need root: use --port 8000 behind a reverse proxy",
                ) from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise UsageError(
                    f"{host} is not an address of this machine",
                    hint="use --host 127.0.0.1 (this machine only) or --host 0.0.0.0 (all)",
                ) from None
            raise
