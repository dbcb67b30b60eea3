"""Running the plugins in a child process, so that a reader that crashes or hangs costs
one error record, never the worker.

:class:`Isolated` keeps one child (``python -m labkeep.extract._child``) for many files.
A child that dies (a segfault in a native reader, ``os._exit``, the OOM killer) or does
not answer within the timeout (it is killed) yields an ``error`` answer for that file;
the next file starts a new child. The child sees the parent's ``sys.path``, so it runs
the same labkeep and finds the same plugins.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from types import TracebackType
from typing import IO, Any


class Isolated:
    def __init__(self, plugins: tuple[str, ...] = (), *, timeout: float = 60.0) -> None:
        self.plugins = plugins
        self.timeout = timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._buffer = b""
        self._eof = False
        #: name -> version of the loaded plugins, and plugins that failed to load
        self.ready: dict[str, str] = {}
        self.broken: dict[str, str] = {}
        self.restarts = 0

    # -- the child -------------------------------------------------------------------
    def _start(self) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed in _stop)
        proc = subprocess.Popen(
            [sys.executable, "-m", "labkeep.extract._child", *self.plugins],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
            close_fds=True,
        )
        self._proc, self._buffer, self._eof = proc, b"", False
        line = self._read_line(max(self.timeout, 30.0))
        if line is None:
            reason = self._death_reason()
            self._stop()
            raise RuntimeError(f"the extraction process did not start: {reason}")
        hello = json.loads(line)
        self.ready, self.broken = dict(hello["ready"]), dict(hello.get("broken", {}))
        return proc

    def _read_line(self, timeout: float) -> bytes | None:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        fd = proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:  # the child is gone (its exit status may not be there yet)
                self._eof = True
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def _death_reason(self) -> str:
        proc = self._proc
        if proc is None:
            return "not running"
        try:
            code = proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return "no answer"
        tail = ""
        if self._stderr is not None:
            self._stderr.seek(0, os.SEEK_END)
            size = self._stderr.tell()
            self._stderr.seek(max(0, size - 400))
            text = self._stderr.read().decode("utf-8", "replace").strip().splitlines()
            tail = text[-1] if text else ""
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            what = f"the reader crashed ({name})"
        else:
            what = f"the reader exited with status {code}"
        return f"{what}: {tail}" if tail else what

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    # -- use -------------------------------------------------------------------------
    def extract(
        self, path: str, name: str, *, thumb: str | None = None, max_side: int = 256
    ) -> dict[str, Any]:
        """The child's answer for one file (see :mod:`labkeep.extract._child`); a child
        that dies or hangs gives ``{"status": "error", "error": why}``."""
        if self._proc is None or self._proc.poll() is not None:
            if self._proc is not None:
                self._stop()
                self.restarts += 1
            self._start()
        proc = self._proc
        assert proc is not None and proc.stdin is not None
        request = json.dumps({"path": path, "name": name, "thumb": thumb, "max_side": max_side})
        try:
            proc.stdin.write(request.encode() + b"\n")
            proc.stdin.flush()
        except BrokenPipeError:
            line = None
        else:
            line = self._read_line(self.timeout)
        if line is None:
            if not self._eof and proc.poll() is None:  # alive but silent: hung
                proc.kill()
                proc.wait()
                why = f"the reader did not finish within {self.timeout:g} s and was stopped"
            else:
                why = self._death_reason()
            self._stop()
            self.restarts += 1
            return {"status": "error", "error": why, "fields": {}, "preview": "none"}
        answer: dict[str, Any] = json.loads(line)
        return answer

    def close(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None and proc.stdin is not None:
            try:
                proc.stdin.close()
                proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self._stop()

    def __enter__(self) -> Isolated:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
