"""Real sample files made with the writers of the readers' own libraries (tifffile,
pylibCZIrw), plus corrupt and truncated versions: for the extraction, preview and
conversion tests."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

OME_XML = """<?xml version="1.0" encoding="UTF-8"?>
<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06">
  <Instrument ID="Instrument:0">
    <Microscope Manufacturer="Zeiss" Model="LSM 980"/>
    <Objective ID="Objective:0" Model="Plan-Apochromat 63x/1.40 Oil" NominalMagnification="63"
      LensNA="1.4" Immersion="Oil"/>
  </Instrument>
  <Image ID="Image:0" Name="cell-01">
    <AcquisitionDate>2026-03-14T10:21:07</AcquisitionDate>
    <InstrumentRef ID="Instrument:0"/>
    <ObjectiveSettings ID="Objective:0"/>
    <Pixels ID="Pixels:0" DimensionOrder="XYZCT" Type="uint16" SizeX="{x}" SizeY="{y}"
      SizeZ="{z}" SizeC="2" SizeT="1" PhysicalSizeX="0.065" PhysicalSizeXUnit="µm"
      PhysicalSizeY="0.065" PhysicalSizeYUnit="µm" PhysicalSizeZ="0.3"
      PhysicalSizeZUnit="µm">
      <Channel ID="Channel:0:0" Name="DAPI" ExcitationWavelength="405"
        EmissionWavelength="461" EmissionWavelengthUnit="nm" SamplesPerPixel="1"/>
      <Channel ID="Channel:0:1" Name="GFP" ExcitationWavelength="488"
        EmissionWavelength="509" SamplesPerPixel="1"/>
      <TiffData IFD="0" PlaneCount="{planes}"/>
    </Pixels>
  </Image>
</OME>"""


def image_data(z: int = 3, y: int = 64, x: int = 80, seed: int = 0) -> np.ndarray:
    """A (C=2, Z, Y, X) uint16 stack with structure (a gradient plus noise)."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 3000, x, dtype=np.float64)[None, None, None, :]
    noise = rng.integers(0, 500, (2, z, y, x))
    return (ramp + noise).astype(np.uint16)


def ome_tiff(path: Path, *, z: int = 3, y: int = 64, x: int = 80, seed: int = 0) -> np.ndarray:
    """An OME-TIFF whose OME-XML names the instrument, objective, channels and date.
    Planes in XYZCT order (Z fastest, then C), as the OME-XML says."""
    import tifffile

    data = image_data(z, y, x, seed)
    xml = OME_XML.format(x=x, y=y, z=z, planes=2 * z)
    tifffile.imwrite(path, data.reshape(2 * z, y, x), description=xml.encode(), metadata=None,
                     photometric="minisblack")  # fmt: skip
    return data


def ome_tiff_by_metadata(path: Path) -> np.ndarray:
    """An OME-TIFF as tifffile writes it from a metadata dict."""
    import tifffile

    data = image_data(2, 32, 40)
    tifffile.imwrite(path, data, ome=True, photometric="minisblack", metadata={
        "axes": "CZYX", "PhysicalSizeX": 0.2, "PhysicalSizeXUnit": "µm",
        "PhysicalSizeY": 0.2, "PhysicalSizeYUnit": "µm",
        "Channel": {"Name": ["Hoechst", "mCherry"]}, "AcquisitionDate": "2026-02-01T08:00:00",
    })  # fmt: skip
    return data


def imagej_tiff(path: Path) -> np.ndarray:
    import tifffile

    data = image_data(4, 32, 32)[0]
    tifffile.imwrite(path, data, imagej=True, resolution=(1 / 0.5, 1 / 0.5),
                     metadata={"spacing": 2.0, "unit": "um", "axes": "ZYX"})  # fmt: skip
    return data


def czi(path: Path) -> np.ndarray:
    """A 2-channel CZI written by Zeiss's libCZI (pylibCZIrw)."""
    from pylibCZIrw import czi as pyczi

    data = image_data(1, 48, 64)[:, 0]
    with pyczi.create_czi(str(path), exist_ok=True) as writer:
        for c in range(2):
            writer.write(data=data[c], plane={"C": c, "Z": 0, "T": 0})
        writer.write_metadata(document_name="cell-02", channel_names={0: "DAPI", 1: "GFP"},
                              scale_x=0.1e-6, scale_y=0.1e-6)  # fmt: skip
    return data


def fastq(path: Path, reads: int = 20) -> None:
    lines = []
    for i in range(reads):
        seq = "ACGT" * 10
        lines += [f"@A00123:8:HXYZ:2:1101:{1000 + i}:1000 1:N:0:ACGT", seq, "+", "F" * len(seq)]
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def bam(path: Path) -> None:
    """A BAM header (no reads) in gzip framing (BGZF is gzip; the reader needs no more)."""
    text = (
        b"@HD\tVN:1.6\tSO:coordinate\n@SQ\tSN:chr1\tLN:1000\n@SQ\tSN:chr2\tLN:500\n"
        b"@RG\tID:rg1\tSM:mouse-42\tPL:ILLUMINA\n@PG\tID:bwa\tPN:bwa\n"
    )
    body = b"BAM\x01" + struct.pack("<i", len(text)) + text + struct.pack("<i", 2)
    for name, length in ((b"chr1\0", 1000), (b"chr2\0", 500)):
        body += struct.pack("<i", len(name)) + name + struct.pack("<i", length)
    path.write_bytes(gzip.compress(body))


def png(path: Path) -> None:
    from PIL import Image

    Image.fromarray((image_data(1, 40, 60)[0, 0] // 16).astype(np.uint8)).save(path)


def truncated(source: Path, target: Path, keep: float = 0.5) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: max(16, int(len(data) * keep))])
    return target


def corrupt(source: Path, target: Path) -> Path:
    """The file's signature kept, everything after the first 16 bytes scrambled."""
    data = bytearray(source.read_bytes())
    for i in range(16, len(data)):
        data[i] = (data[i] * 7 + 13) % 256
    target.write_bytes(bytes(data))
    return target
