"""The extraction child process: ``python -m labkeep.extract._child [PLUGIN ...]``.

Reads one JSON request per line on stdin (``path``, ``name``, ``thumb``: where to write
a thumbnail or null, ``max_side``), answers one JSON line per request on stdout. It runs
every plugin of :mod:`labkeep.extract`; anything a plugin raises becomes an ``error``
answer. A plugin that crashes or hangs this process is the parent's business
(:mod:`labkeep.extract.runner`).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from labkeep.extract import HEAD_BYTES, Extractor, choose, load_errors, load_extractors
from labkeep.extract.generic import GenericExtractor


def _error(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:2000]


def handle(plugins: dict[str, Extractor], request: dict[str, Any]) -> dict[str, Any]:
    path, name = str(request["path"]), str(request["name"])
    answer: dict[str, Any] = {"status": "ok", "extractor": "generic", "version": "1"}
    generic = plugins.get("generic") or GenericExtractor()
    try:
        fields = generic.extract(path, name)
        with open(path, "rb") as handle_:
            head = handle_.read(HEAD_BYTES)
    except Exception as exc:  # noqa: BLE001 (the answer carries it)
        return {**answer, "status": "error", "error": _error(exc), "fields": {}}
    answer["version"] = generic.version
    plugin = choose(plugins, name, head)
    if plugin is not None:
        answer["extractor"], answer["version"] = plugin.name, str(plugin.version)
        try:
            fields.update(plugin.extract(path, name))
        except Exception as exc:  # noqa: BLE001
            answer.update(status="error", error=_error(exc))
    answer["fields"] = fields
    thumb = request.get("thumb")
    plane = getattr(plugin, "plane", None)
    if thumb and plane is not None and answer["status"] == "ok":
        from labkeep.extract.preview import thumbnail_png, write_atomically

        try:
            max_side = int(request.get("max_side", 256))
            write_atomically(str(thumb), thumbnail_png(plane(path, name, max_side), max_side))
            answer["preview"] = "ok"
        except Exception as exc:  # noqa: BLE001
            answer["preview"] = "error"
            answer["preview_error"] = _error(exc)
    else:
        answer["preview"] = "none"
    return answer


def main(argv: list[str]) -> int:
    # answers go to the original stdout; anything a plugin or a native library prints
    # (to sys.stdout or to fd 1) goes to stderr and cannot garble them
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    plugins = load_extractors(tuple(argv))
    out.write(
        json.dumps(
            {
                "ready": {p.name: str(p.version) for p in plugins.values()},
                "broken": load_errors(),
            }
        )
        + "\n"
    )
    out.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            answer = handle(plugins, json.loads(line))
        except Exception as exc:  # noqa: BLE001 (a bad request must not end the child)
            answer = {"status": "error", "error": _error(exc), "fields": {}}
        out.write(json.dumps(answer, default=str) + "\n")
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
