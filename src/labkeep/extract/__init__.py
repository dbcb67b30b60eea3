"""Reading what a file is: metadata extraction plugins (see docs/metadata.md).

An *extractor* is a small object with four members::

    class MyExtractor:
        name = "my-format"          # unique, stored with each record
        version = "1"               # bump it to have records re-extracted
        def accepts(self, name: str, head: bytes) -> int: ...
        def extract(self, path: str, name: str) -> dict[str, Any]: ...
        # optional: a 2-D (or Y, X, 3) numpy array for the preview
        def plane(self, path: str, name: str, max_side: int) -> Any: ...

``accepts`` looks at the file's name and its first 4 KiB and returns a score (0: not
mine; the highest score wins; the generic plugin answers 1 for everything). ``extract``
returns JSON-compatible fields; image plugins return the keys of
:class:`labkeep.extract.model.ImageMetadata`. A plugin may raise anything, hang or
even crash the process: extraction runs in a child process (:mod:`labkeep.extract.runner`)
and such a file gets an error record.

Plugins are found through the ``labkeep.extractors`` entry-point group (each entry point
names a class or an instance) and labkeep's own list, so a facility adds a format by
publishing a package with::

    [project.entry-points."labkeep.extractors"]
    my-format = "my_package.extract:MyExtractor"

This package imports no image library itself: each plugin imports its reader when it
runs.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol, runtime_checkable

from labkeep.extract.model import search_fields

__all__ = ["HEAD_BYTES", "Extractor", "choose", "load_extractors", "search_fields"]

#: how much of a file ``accepts`` sees
HEAD_BYTES = 4096

#: labkeep's own plugins (also registered as entry points in pyproject.toml; listed here
#: so that a source checkout without installed metadata finds them too)
BUILTIN = {
    "generic": "labkeep.extract.generic:GenericExtractor",
    "tiff": "labkeep.extract.tiff:TiffExtractor",
    "image": "labkeep.extract.generic:PillowExtractor",
    "czi": "labkeep.extract.imaging:CziExtractor",
    "nd2": "labkeep.extract.imaging:Nd2Extractor",
    "lif": "labkeep.extract.imaging:LifExtractor",
    "fastq": "labkeep.extract.sequencing:FastqExtractor",
    "bam": "labkeep.extract.sequencing:BamExtractor",
}


@runtime_checkable
class Extractor(Protocol):
    name: str
    version: str

    def accepts(self, name: str, head: bytes) -> int: ...

    def extract(self, path: str, name: str) -> dict[str, Any]: ...


def _load(spec: str) -> Extractor:
    module, _, attr = spec.partition(":")
    obj: Any = getattr(importlib.import_module(module), attr)
    if isinstance(obj, type):
        obj = obj()
    if not isinstance(obj, Extractor):
        raise TypeError(f"{spec} is not an extractor (name, version, accepts, extract)")
    return obj


def load_extractors(extra: tuple[str, ...] = ()) -> dict[str, Extractor]:
    """Every extractor: labkeep's own, the ``labkeep.extractors`` entry points, and *extra*
    (``module:attr`` specs), by name (a later one of the same name replaces an earlier).

    A plugin that fails to load is left out (it must not stop the others); its error
    is kept for :func:`load_errors`.
    """
    from importlib.metadata import entry_points

    specs = dict(BUILTIN)
    for ep in entry_points(group="labkeep.extractors"):
        specs[ep.name] = ep.value
    for spec in extra:
        specs[spec.rsplit(":", 1)[-1]] = spec
    found: dict[str, Extractor] = {}
    _errors.clear()
    for key, spec in specs.items():
        try:
            plugin = _load(spec)
        except Exception as exc:  # noqa: BLE001 (one broken plugin never stops the others)
            _errors[key] = f"{type(exc).__name__}: {exc}"
            continue
        found[plugin.name] = plugin
    return found


_errors: dict[str, str] = {}


def load_errors() -> dict[str, str]:
    """Plugins that could not be loaded by the last :func:`load_extractors`, and why."""
    return dict(_errors)


def choose(plugins: dict[str, Extractor], name: str, head: bytes) -> Extractor | None:
    """The plugin with the highest score for this file (None: none but the generic one)."""
    best: tuple[int, str] | None = None
    for plugin in plugins.values():
        if plugin.name == "generic":
            continue
        try:
            score = int(plugin.accepts(name, head))
        except Exception:  # noqa: BLE001, S112 (a plugin's bug is its own file's problem)
            continue
        if score > 0 and (best is None or score > best[0]):
            best = (score, plugin.name)
    return plugins[best[1]] if best else None
