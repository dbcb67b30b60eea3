"""What every command shares: --root/--json options, output, errors, progress."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from labkeep.errors import EXIT_INTERRUPTED, LabkeepError

#: exceptions that already carry their exit: Typer's own
_PASS_THROUGH = (typer.Exit, typer.Abort, typer.TyperException)
#: what a process killed by SIGPIPE reports (as coreutils do when ``| head`` stops reading)
EXIT_BROKEN_PIPE = 141

if TYPE_CHECKING:
    from labkeep.keep import Keep
    from labkeep.results import Result

P = ParamSpec("P")
R = TypeVar("R")

RootOpt = Annotated[
    str | None,
    typer.Option(
        "--root",
        help="The keep's folder (default: $LABKEEP_ROOT, then the nearest folder upwards "
        "holding labkeep.toml).",
        show_default=False,
    ),
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print machine-readable JSON records (one per line).")
]

# Piped output is never wrapped (a path cut at column 80 is a different path): tables get
# as wide as their rows; on a terminal long names overflow rather than fold.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 1 << 16)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def open_keep(root: str | None) -> Keep:
    """The local keep (commands that do not work against a server say so plainly)."""
    from labkeep.errors import KeepNotFound, UsageError
    from labkeep.keep import Keep

    try:
        return Keep.open(root)
    except KeepNotFound:
        if root is None:
            from labkeep.client import saved_login

            login = saved_login()
            if login is not None:
                raise UsageError(
                    "this command needs a local keep: it does not work against the server "
                    f"{login['url']} you signed in to",
                    hint="run it on the keep's machine (or pass --root PATH); against a "
                    "server work: ls, versions, download, verify, whoami, share "
                    "create/list/revoke",
                ) from None
        raise


def open_keep_or_remote(root: str | None) -> Any:
    """A local keep, or the server of ``labkeep login`` when there is no local keep here
    (or LABKEEP_URL is set): for the commands that also work against a server."""
    import os

    from labkeep.client import RemoteKeep, saved_login
    from labkeep.config import find_root
    from labkeep.errors import KeepNotFound

    if root is None:
        login = saved_login()
        if login is not None:
            local = None
            if not os.environ.get("LABKEEP_URL"):
                try:
                    local = find_root(None)
                except KeepNotFound:
                    local = None
            if local is None:
                return RemoteKeep(login["url"], login["token"])
    return open_keep(root)


def emit_json(record: Any) -> None:
    sys.stdout.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """The CLI's edge: every exception becomes a message on stderr (and, with --json, a
    last JSON record on stdout) and its documented exit code; never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except _PASS_THROUGH:
            raise
        except BrokenPipeError:
            _stdout_closed()
        except KeyboardInterrupt:
            err.print("[yellow]interrupted[/]: run the same command again to resume")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except Exception as exc:  # noqa: BLE001 (the edge: everything becomes a typed error)
            report_error(exc, json_out=bool(kwargs.get("json_out")))
        raise AssertionError("unreachable")

    return wrapper


def report_error(exc: BaseException, *, json_out: bool) -> NoReturn:
    """Print *exc* for people (stderr) and scripts (a JSON record); exit with its code."""
    error = as_labkeep_error(exc)
    if json_out:
        with contextlib.suppress(BrokenPipeError):
            emit_json(error.as_record())
    err.print(f"[bold red]error:[/] {_escape(error.message)}", markup=True, highlight=False)
    if error.hint:
        err.print(f"[dim]hint:[/] {_escape(error.hint)}")
    raise typer.Exit(error.exit_code) from None


def as_labkeep_error(exc: BaseException) -> LabkeepError:
    """The typed error for any exception; unexpected ones are logged as incidents."""
    from labkeep.errors import InternalError, from_os_error

    if isinstance(exc, LabkeepError):
        return exc
    if isinstance(exc, OSError):
        return from_os_error(exc)
    from labkeep import incidents

    reference = incidents.new_reference()
    where = incidents.record_to_file(exc, reference)
    if incidents.debug_enabled() or where is None:
        err.print(incidents.format_incident(exc, reference), markup=False, highlight=False)
    return InternalError(reference, where=str(where) if where else "the output above")


def _stdout_closed() -> NoReturn:
    """The reader of our output went away (``labkeep ls | head``): stop quietly."""
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    raise typer.Exit(EXIT_BROKEN_PIPE)


def table(*columns: str, title: str | None = None, paths: tuple[str, ...] = ()) -> Table:
    """A borderless table; *paths* name columns that are never wrapped (names, targets)."""
    grid = Table(title=title, box=None, header_style="bold", pad_edge=False)
    for column in columns:
        if column in paths:
            grid.add_column(column, no_wrap=True, overflow="ignore")
        else:
            grid.add_column(column, overflow="fold")
    return grid


def human_size(n: int | None) -> str:
    if n is None:
        return ""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


STATUS_STYLE = {
    "ok": "green",
    "notneeded": "dim",
    "impossible": "yellow",
    "error": "red",
    "modified": "red",
    "missing": "red",
    "extra": "yellow",
    "unsaved": "cyan",
}


def print_result(result: Result, *, json_out: bool, show_ok: bool) -> None:
    """One record of a report (stdout): always in JSON mode, else only problems (and ok
    lines if asked)."""
    if json_out:
        emit_json(result.to_dict())
        return
    if result.status in ("ok", "notneeded") and not show_ok and result.state != "unsaved":
        return
    style = STATUS_STYLE.get(result.state or result.status, "bold")
    label = (result.state or result.status).upper()
    where = f"{result.dataset}/{result.path}" if result.path else (result.dataset or "")
    message = f"  [dim]{_escape(result.message)}[/]" if result.message else ""
    out.print(f"[{style}]{label:10}[/] {_escape(where)}{message}")


#: characters shown as C escapes in names: the backslash itself and whitespace controls
_NAMED_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def shown(text: str) -> str:
    r"""*text* as printed in tables: one escaping for every name (paths, targets, labels).

    The backslash, tab, newline and carriage return become ``\\``, ``\t``, ``\n`` and
    ``\r``; other control and invisible formatting characters (bidirectional overrides,
    zero-width spaces) and bytes that are not UTF-8 become ``\xNN``/``\uNNNN``. So a name
    always prints on one line, and two different names never print the same.
    """
    if text.isprintable() and "\\" not in text:
        return text
    import unicodedata

    parts: list[str] = []
    for ch in text:
        code = ord(ch)
        if ch in _NAMED_ESCAPES:
            parts.append(_NAMED_ESCAPES[ch])
        elif 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
            parts.append(f"\\x{code - 0xDC00:02x}")
        elif ch == " " or unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Zl", "Zp", "Zs"):
            parts.append(ch)
        elif code < 0x100:
            parts.append(f"\\x{code:02x}")
        else:
            parts.append(f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return "".join(parts)


def _escape(text: str) -> str:
    """*text* for a Rich markup string: shown() plus markup escaping."""
    from rich.markup import escape

    return escape(shown(text))


def print_summary(action: str, counts: dict[str, int], extra: str = "") -> None:
    parts = [f"[{STATUS_STYLE.get(k.lower(), 'bold')}]{k} {v}[/]" for k, v in counts.items()]
    out.print(f"[bold]{action}[/]: " + (", ".join(parts) or "nothing to do") + extra)


class RichProgress:
    """Files, bytes, rate and ETA on the terminal (stderr); silent when not a TTY."""

    def __init__(self, description: str) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=err,
            transient=False,
        )
        self._description = description
        self._files = self._progress.add_task(description, total=None, start=False)
        self._total_files = 0
        self._done_files = 0
        self._lock = threading.Lock()  # workers advance bytes while the main thread files

    def start(self, total_files: int, total_bytes: int) -> None:
        # the bar counts bytes (rate, ETA); files are shown in the description
        self._total_files = total_files
        self._done_files = 0
        self._progress.update(self._files, total=total_bytes or None)
        self._progress.start_task(self._files)

    def advance(self, files: int, nbytes: int) -> None:
        """*files* more done and *nbytes* more read (called from worker threads too)."""
        with self._lock:
            self._done_files += files
            description = f"{self._description} {self._done_files}/{self._total_files}"
        self._progress.update(self._files, advance=nbytes, description=description)

    @contextmanager
    def running(self) -> Iterator[RichProgress]:
        with self._progress:
            yield self


@contextmanager
def progress_for(description: str, json_out: bool) -> Iterator[RichProgress | None]:
    if json_out or not err.is_terminal:
        yield None
        return
    with RichProgress(description).running() as bar:
        yield bar
