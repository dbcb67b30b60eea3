"""Sequencer output headers: FASTQ (plain or gzipped) and BAM, with the standard library.

FASTQ: the first reads (at most ``SAMPLE_READS``): instrument, run, flow cell and lane of
Illumina read names, read lengths, the quality encoding. BAM: the SAM header (``@HD``
sort order, ``@SQ`` references, ``@RG`` samples and platforms, ``@PG`` programs); BAM is
BGZF, which Python's gzip reads. POD5 (Arrow IPC) would need ``pod5``/pyarrow, which are
heavy: the generic plugin recognises POD5 by its signature and records its size only.
"""

from __future__ import annotations

import gzip
import io
import struct
from typing import Any

SAMPLE_READS = 1000


def _open(path: str) -> io.BufferedIOBase:
    with open(path, "rb") as probe:
        magic = probe.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


class FastqExtractor:
    name = "fastq"
    version = "1"
    SUFFIXES = (".fastq", ".fq", ".fastq.gz", ".fq.gz")

    def accepts(self, name: str, head: bytes) -> int:
        lower = name.lower()
        if lower.endswith(self.SUFFIXES) and (head[:1] == b"@" or head[:2] == b"\x1f\x8b"):
            return 20
        return 0

    def extract(self, path: str, name: str) -> dict[str, Any]:
        lengths: list[int] = []
        low_quality = 255
        first_name = ""
        with _open(path) as handle:
            while len(lengths) < SAMPLE_READS:
                header = handle.readline()
                if not header:
                    break
                seq, plus, qual = handle.readline(), handle.readline(), handle.readline()
                if not header.startswith(b"@") or not plus.startswith(b"+"):
                    raise ValueError(f"not FASTQ: record {len(lengths) + 1} is malformed")
                seq, qual = seq.rstrip(b"\r\n"), qual.rstrip(b"\r\n")
                if len(seq) != len(qual):
                    raise ValueError(
                        f"not FASTQ (or truncated): read {len(lengths) + 1} has "
                        f"{len(seq)} bases and {len(qual)} qualities"
                    )
                if not first_name:
                    first_name = header[1:].decode("ascii", "replace").strip()
                lengths.append(len(seq))
                if qual:
                    low_quality = min(low_quality, min(qual))
        if not lengths:
            raise ValueError("not FASTQ: no reads")
        fields: dict[str, Any] = {
            "format": "FASTQ",
            "first_read": first_name,
            "reads_sampled": len(lengths),
            "read_length_min": min(lengths),
            "read_length_max": max(lengths),
            "quality_encoding": "phred+64" if low_quality >= 64 else "phred+33",
        }
        parts = first_name.split(" ", 1)[0].split(":")
        if len(parts) >= 7:  # Illumina: instrument:run:flowcell:lane:tile:x:y
            fields.update(instrument=parts[0], run=parts[1], flowcell=parts[2], lane=parts[3])
        return fields


class BamExtractor:
    name = "bam"
    version = "1"

    def accepts(self, name: str, head: bytes) -> int:
        return 20 if head[:2] == b"\x1f\x8b" and name.lower().endswith(".bam") else 0

    def extract(self, path: str, name: str) -> dict[str, Any]:
        with gzip.open(path, "rb") as handle:
            if handle.read(4) != b"BAM\x01":
                raise ValueError("not BAM: no BAM signature after decompression")
            (l_text,) = struct.unpack("<i", _exact(handle, 4))
            text = _exact(handle, l_text).rstrip(b"\0").decode("utf-8", "replace")
            (n_ref,) = struct.unpack("<i", _exact(handle, 4))
            total = 0
            for _ in range(n_ref):
                (l_name,) = struct.unpack("<i", _exact(handle, 4))
                _exact(handle, l_name)
                (l_ref,) = struct.unpack("<i", _exact(handle, 4))
                total += l_ref
        fields: dict[str, Any] = {"format": "BAM", "references": n_ref, "reference_length": total}
        samples, platforms, programs = [], [], []
        for line in text.splitlines():
            tags = dict(t.split(":", 1) for t in line.split("\t")[1:] if ":" in t)
            if line.startswith("@HD"):
                fields["sort_order"] = tags.get("SO", "unknown")
            elif line.startswith("@RG"):
                samples.append(tags.get("SM", ""))
                platforms.append(tags.get("PL", ""))
            elif line.startswith("@PG"):
                programs.append(tags.get("ID", ""))
        for key, values in (("samples", samples), ("platforms", platforms), ("programs", programs)):
            unique = sorted({v for v in values if v})
            if unique:
                fields[key] = ",".join(unique)
        return fields


def _exact(handle: io.BufferedIOBase, n: int) -> bytes:
    if n < 0 or n > 1 << 28:
        raise ValueError("not BAM: implausible header length")
    data = handle.read(n)
    if len(data) != n:
        raise ValueError("truncated BAM header")
    return data
