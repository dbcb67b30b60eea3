"""Converting a dataset's images to OME-Zarr as a recorded run (docs/metadata.md).

``convert("imaging-2026/s017", to="ome-zarr")`` is ``labkeep run`` of labkeep's own
converter (``python -m labkeep.convert --to ome-zarr {input} {outputs}``) with the
dataset pinned at its version as the input, into an ``analysis`` dataset
(``imaging-2026/s017.ome-zarr`` unless named): the version it saves points to the run
record, which lists the input, the environment and every output's SHA-256, and can be
re-executed with ``labkeep rerun``. Queued as a ``convert`` job by default from the CLI
and the web; the job runs it in a worker.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from labkeep.errors import NotFound, UsageError
from labkeep.names import parse_address
from labkeep.ops.jobs import JobContext, handler

if TYPE_CHECKING:
    from labkeep.keep import Keep

FORMATS = ("ome-zarr",)


def default_output(address: str) -> str:
    addr = parse_address(address, need_dataset=True)
    assert addr.dataset is not None
    suffix = ".ome-zarr"
    return f"{addr.project}/{addr.dataset[: 64 - len(suffix)]}{suffix}"


def command(to: str) -> list[str]:
    return [sys.executable, "-m", "labkeep.convert", "--to", to, "{input}", "{outputs}"]


def _check(keep: Keep, address: str, to: str, output: str | None) -> tuple[str, str]:
    if to not in FORMATS:
        raise UsageError(f"cannot convert to {to!r}", hint=f"formats: {', '.join(FORMATS)}")
    addr = parse_address(address, need_dataset=True)
    assert addr.dataset is not None
    out = output or default_output(address)
    target = parse_address(out, need_dataset=True)
    if target.path or target.version is not None:
        raise UsageError(f"the output is a dataset, not {out!r}", hint="-o PROJECT/DATASET")
    if target.dataset_address == addr.dataset_address:
        raise UsageError("the output must be another dataset than the input")
    keep.get_dataset(addr.dataset_address)  # NotFound for what the caller may not see
    return address, target.dataset_address


def convert(
    keep: Keep, address: str, *, to: str = "ome-zarr", output: str | None = None
) -> dict[str, Any]:
    """Convert the images of ``P/D[/PATH][@VERSION]`` into an analysis dataset as a
    recorded run; the run's record (its ``version`` is the one it saved)."""
    from labkeep.ops.runs import RunRequest

    source, target = _check(keep, address, to, output)
    try:
        info = keep.get_dataset(target)
    except NotFound:
        keep.create_dataset(target, kind="analysis")
    else:
        if info.kind != "analysis":
            raise UsageError(
                f"{target} is a {info.kind} dataset: conversions go into analysis datasets",
                hint="name another output with -o PROJECT/DATASET",
            )
    request = RunRequest(
        command=command(to),
        inputs=[source],
        output=target,
        message=f"convert {source} to {to}",
    )
    record: dict[str, Any] = keep.run(request, echo=False)
    if record["state"] != "done":
        from labkeep.ops.runs import RunFailed

        raise RunFailed(
            f"the conversion (run {record['id']}) failed: {record.get('error') or ''}".strip(),
            hint=f"'labkeep runs show {record['id']}' shows what the converter said",
        )
    return record


def _authorize(keep: Keep, args: dict[str, Any]) -> str:
    if not isinstance(args.get("dataset"), str):
        raise UsageError("a convert job needs 'dataset' (P/D) and 'to'")
    _source, target = _check(keep, args["dataset"], str(args.get("to", "ome-zarr")),
                             args.get("output"))  # fmt: skip
    return target


@handler(
    "convert",
    authorize=_authorize,
    max_attempts=1,  # a failed conversion is recorded as a failed run: say so, not retry
    describe=lambda a: f"{a.get('dataset')} -> {a.get('to', 'ome-zarr')}",
)
def convert_job(ctx: JobContext) -> dict[str, Any]:
    a = ctx.args
    record = ctx.keep.convert(str(a["dataset"]), to=str(a.get("to", "ome-zarr")),
                              output=a.get("output"))  # fmt: skip
    return {"run": record["id"], "state": record["state"], "version": record.get("version"),
            "output": record.get("output_dataset")}  # fmt: skip
