"""Extraction plugins that misbehave, for the isolation tests: one raises, one crashes
its process (SIGSEGV, as a native reader does), one hangs, one prints to stdout."""

from __future__ import annotations

import os
import signal
import time
from typing import Any


class _Base:
    version = "1"
    suffix = ""

    def accepts(self, name: str, head: bytes) -> int:
        return 100 if name.endswith(self.suffix) else 0


class RaisingExtractor(_Base):
    name = "raising"
    suffix = ".raise"

    def extract(self, path: str, name: str) -> dict[str, Any]:
        raise RuntimeError("this reader cannot read this file")


class CrashingExtractor(_Base):
    name = "crashing"
    suffix = ".crash"

    def extract(self, path: str, name: str) -> dict[str, Any]:
        os.kill(os.getpid(), signal.SIGSEGV)
        return {}


class HangingExtractor(_Base):
    name = "hanging"
    suffix = ".hang"

    def extract(self, path: str, name: str) -> dict[str, Any]:
        time.sleep(3600)
        return {}


class ChattyExtractor(_Base):
    """Prints to stdout (as some native libraries do): the protocol must survive it."""

    name = "chatty"
    suffix = ".chatty"

    def extract(self, path: str, name: str) -> dict[str, Any]:
        print("hello from a reader\n{not json")
        os.write(1, b"and from C code\n")
        return {"format": "chatty", "instrument": "Talker 3000"}


ALL = tuple(
    f"tests.extract_plugins:{c}"
    for c in ("RaisingExtractor", "CrashingExtractor", "HangingExtractor", "ChattyExtractor")
)
