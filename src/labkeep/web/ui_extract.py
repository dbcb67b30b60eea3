"""What the file and dataset pages show of extracted metadata and previews.

The pages call these to fill their context; the HTML is in ``_extract.html``. Every
value goes through Jinja's autoescaping: metadata is read from files anyone may have
written, so a channel named ``<script>`` is shown as text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from labkeep.extract.model import objective_text, quantity_text
from labkeep.names import address_text

if TYPE_CHECKING:
    from labkeep.keep import Keep
    from labkeep.web.pages import Links

#: thumbnails on a dataset page at most
GALLERY = 24


def file_context(
    keep: Keep, links: Links, project: str, dataset: str, path: str, version: int | None
) -> dict[str, Any]:
    record = keep.file_metadata(address_text(project, dataset, path, version))
    preview = links.preview(project, dataset, path, version) if record.preview == "ok" else None
    return {"metadata": record, "metadata_rows": rows(record.fields), "preview_url": preview}


def dataset_context(
    keep: Keep, links: Links, project: str, dataset: str, version: int | None
) -> dict[str, Any]:
    found = keep.dataset_previews(address_text(project, dataset, None, version), limit=GALLERY + 1)
    paths = sorted(found)[:GALLERY]
    return {
        "thumbnails": [
            {
                "path": p,
                "name": p.rsplit("/", 1)[-1],
                "src": links.preview(project, dataset, p, version),
                "href": links.file(project, dataset, p, version),
            }
            for p in paths
        ],
        "thumbnails_more": len(found) > len(paths),
    }


def rows(fields: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, text) pairs for people, the important ones first."""
    out: list[tuple[str, str]] = []
    if fields.get("format"):
        out.append(("Format", str(fields["format"])))
    if fields.get("size_x"):
        out.append(("Size (XYZCT)", " x ".join(str(fields.get(f"size_{a}", 1)) for a in "xyzct")))
    if fields.get("pixel_type"):
        out.append(("Pixel type", str(fields["pixel_type"])))
    physical = [
        f"{a.upper()} {quantity_text(fields[f'physical_size_{a}'])}"
        for a in "xyz"
        if f"physical_size_{a}" in fields
    ]
    if physical:
        out.append(("Pixel size", ", ".join(physical)))
    channels = []
    for ch in fields.get("channels") or []:
        waves = "/".join(
            quantity_text(ch[k])
            for k in ("excitation_wavelength", "emission_wavelength")
            if ch.get(k)
        )
        channels.append(f"{ch.get('name') or '?'}" + (f" ({waves})" if waves else ""))
    if channels:
        out.append(("Channels", ", ".join(channels)))
    objective = fields.get("objective")
    if isinstance(objective, dict):
        out.append(("Objective", objective_text(objective)))
    if fields.get("instrument"):
        out.append(("Instrument", str(fields["instrument"])))
    if fields.get("acquisition_date"):
        out.append(("Acquired", str(fields["acquisition_date"])))
    skip = {"format", "pixel_type", "channels", "objective", "instrument", "acquisition_date"}
    skip |= {f"size_{a}" for a in "xyzct"} | {f"physical_size_{a}" for a in "xyz"}
    for key, value in fields.items():
        if key not in skip:
            out.append((key.replace("_", " ").capitalize(), quantity_text(value)))
    return out
