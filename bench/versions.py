"""Versions benchmark (issue 10): ``labkeep save`` against ``datalad save``; a no-change save.

Setup: DataLad and git-annex go into a venv of their own, not the project's (PyPI's
``git-annex`` wheel carries the git-annex binary)::

    python3 -m venv /tmp/bench-datalad
    /tmp/bench-datalad/bin/pip install datalad git-annex

Run (from the repository, with the project's venv)::

    .venv/bin/python bench/versions.py --datalad /tmp/bench-datalad/bin/datalad \\
        --workdir /tmp/labkeep-bench-versions                   # full size
    .venv/bin/python bench/versions.py --quick --datalad /tmp/bench-datalad/bin/datalad \\
        --workdir /tmp/labkeep-bench-versions                   # smoke run, ~1 min

The full run takes 6-7 minutes on 2 cores once the source and the two DataLad templates
exist in the work folder (making them: 2-3 minutes more, once), of which 1.5-5 minutes
are the final clean-up (deleting some 25 GB in 600,000 files is slow on this disk); it
needs about 30 GB free at its peak. ``--keep-run`` leaves the run's folders in place.

git and git-annex need an identity: the script writes a ``.gitconfig`` (user.name/email)
into ``WORKDIR/home`` and runs DataLad with ``HOME`` there, ``GIT_CONFIG_NOSYSTEM=1`` and
the venv's ``bin/`` first on ``PATH`` (for ``git-annex``); git itself is the system's.

``change``: an analysis dataset of 10,000 files of 16-256 KiB (uniform; 1.39 GB, the
"small" set of BENCHMARKING.md and bench/ingest.py, in folders of 500); then 1 % of the
files are replaced by new content of a new size (unlink + write, as a script rewriting its
outputs does; with DataLad this also replaces the annex symlink by a plain file) and 1 %
are added (16-256 KiB each, spread over the folders). The same change, byte for byte, in
every repetition. Methods, each repetition on a fresh copy of the same starting state:

- ``labkeep``          ``Keep.save("bench/analysis")`` in this process (keep opened
                       untimed): quick check by size+mtime, changed files copied into the
                       keep's versions store while hashed (SHA-256), durable, one catalog
                       transaction; the starting state is a fresh keep whose dataset
                       (kind analysis) got the 10,000 files and one ``save``;
- ``labkeep-cli``      ``python -m labkeep save bench/analysis -m ... --root R --json``:
                       the same plus process start-up and imports;
- ``datalad-md5e``     ``datalad save -m ...`` in a DataLad dataset (``datalad create``
                       defaults: annex backend MD5E, every file annexed, i.e. moved into
                       ``.git/annex/objects`` and replaced by a symlink: no copy); the
                       starting state is ``cp -a`` of a template dataset that got the same
                       10,000 files and one ``datalad save``, then ``git update-index
                       --refresh`` (untimed: the copy changed every inode);
- ``datalad-sha256e``  the same with ``* annex.backend=SHA256E`` in .gitattributes: the
                       same hash as labkeep (like for like);
- ``reference``        plain Python, the floor of a quick-check save: walk + lstat against
                       an in-memory manifest (no catalog), SHA-256 of the changed files on
                       all cores, no copy, no writes (a hard-linked copy of the source).

Each method is also timed saving with nothing changed, on the same state just before the
change is written ("no-change" column).

``nochange``: 100,000 files of 1-4 KiB (a no-change save never reads content, so the
count matters, not the size) generated in a keep's analysis dataset and saved once; then
``labkeep`` (API), ``labkeep-cli`` and ``reference`` save it with nothing changed.

Following /work/shared/BENCHMARKING.md: methods alternate within a repetition and the
order rotates between repetitions; medians and ratios are reported; ``sync`` before every
timed run, and the ``sync`` right after a method is timed too and reported as "+sync"
(labkeep makes stored content durable inside its run, git and git-annex leave dirty pages);
nothing is deleted before the end of the run; the 1-minute load average before every
timed run is recorded. Data is in the page cache (just written or copied).

The CLI runs use labkeep's bytecode (``compileall`` first, untimed), as an installed
package would: these shells set PYTHONDONTWRITEBYTECODE, and every run would otherwise
compile labkeep again (about 0.1 s).

Results are printed as tables and written as JSON to bench/results/versions-*.json.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO / "src")]

from labkeep import Keep  # noqa: E402

KiB, MiB = 1 << 10, 1 << 20
PROJECT, DATASET = "bench", "analysis"
ADDRESS = f"{PROJECT}/{DATASET}"
CHANGE_METHODS = ("labkeep", "labkeep-cli", "datalad-md5e", "datalad-sha256e", "reference")
NOCHANGE_METHODS = ("labkeep", "labkeep-cli", "reference")
BACKENDS = {"datalad-md5e": "MD5E", "datalad-sha256e": "SHA256E"}


def _bench_ingest() -> ModuleType:
    """bench/ingest.py (its data generator and machine info), loaded by path."""
    spec = importlib.util.spec_from_file_location("bench_ingest", HERE / "ingest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_ingest"] = module
    spec.loader.exec_module(module)
    return module


BI = _bench_ingest()


def _sh(*cmd: str | Path, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], check=True, text=True, **kw)


def _rm(path: Path) -> None:
    if path.exists():
        subprocess.run(["chmod", "-R", "u+w", str(path)], capture_output=True)  # annex objects
        shutil.rmtree(path, ignore_errors=True)


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _busiest() -> list[str]:
    """The five processes using the most CPU (other users' work on a shared machine)."""
    out = subprocess.run(
        ["ps", "-eo", "pcpu,etime,comm", "--sort=-pcpu", "--no-headers"],
        capture_output=True,
        text=True,
    ).stdout
    return [" ".join(line.split()) for line in out.splitlines()[:5]]


# -- DataLad ---------------------------------------------------------------------------
class DataLad:
    def __init__(self, exe: Path, home: Path) -> None:
        if not exe.is_file():
            raise SystemExit(f"{exe}: no such file (see the setup in --help)")
        self.exe = exe
        home.mkdir(parents=True, exist_ok=True)
        (home / ".gitconfig").write_text(
            "[user]\n\tname = labkeep bench\n\temail = bench@labkeep.invalid\n"
        )
        self.env = {
            **os.environ,
            "HOME": str(home),
            "GIT_CONFIG_NOSYSTEM": "1",
            "PATH": f"{exe.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    def run(self, *args: str | Path, cwd: Path) -> None:
        _sh(self.exe, *args, cwd=cwd, env=self.env, stdout=subprocess.DEVNULL)

    def git(self, repo: Path, *args: str) -> str:
        return _sh("git", "-C", repo, *args, env=self.env, capture_output=True).stdout

    def versions(self) -> dict[str, str]:
        def first(*cmd: str | Path) -> str:
            out = _sh(*cmd, env=self.env, capture_output=True).stdout
            return out.splitlines()[0].strip()

        return {
            "datalad": first(self.exe, "--version"),
            "git_annex": first(self.exe.parent / "git-annex", "version", "--raw"),
            "git": first("git", "--version"),
        }

    def template(self, path: Path, src: Path, backend: str, params: dict[str, Any]) -> float:
        """A dataset holding *src*, saved once; reused if made with the same parameters.

        Returns the seconds ``create`` + copy + ``save`` took (when it was made).
        """
        stamp = path.with_name(path.name + ".params.json")
        if stamp.is_file() and path.is_dir():
            made = json.loads(stamp.read_text())
            if made.pop("seconds", None) is not None and made == params:
                print(f"  reusing {path}")
                return float(json.loads(stamp.read_text())["seconds"])
        _rm(path)
        stamp.unlink(missing_ok=True)
        t0 = time.perf_counter()
        self.run("create", path, cwd=path.parent)
        if backend != "MD5E":
            attrs = path / ".gitattributes"
            text = attrs.read_text()
            assert "annex.backend=MD5E" in text, text
            attrs.write_text(text.replace("annex.backend=MD5E", f"annex.backend={backend}"))
            self.run("save", "-m", f"annex backend {backend}", cwd=path)
        self.git(path, "config", "gc.auto", "0")
        _sh("cp", "-a", f"{src}/.", path)
        self.run("save", "-m", "initial", cwd=path)
        seconds = time.perf_counter() - t0
        # git's automatic gc would run detached after this commit of 10,000 files and
        # repack .git/objects while the template is copied: off while the template is
        # made, then one gc, so that every copy starts from the same settled repository
        self.git(path, "gc", "--quiet")
        self.git(path, "config", "--unset", "gc.auto")
        os.sync()
        stamp.write_text(json.dumps(params | {"seconds": seconds}))
        print(f"  made {path} ({backend}): create + copy + save {seconds:.1f} s", flush=True)
        return seconds


# -- the change ------------------------------------------------------------------------
def relpaths(root: Path) -> list[str]:
    return sorted(os.path.relpath(p, root) for p, _ in BI.list_files(root))


def plan_change(
    rels: list[str], n_mod: int, n_add: int, min_kib: int, max_kib: int, seed: int = 10
) -> list[tuple[str, int, str]]:
    """(relative path, new size, "modified" | "added"): the same change in every repetition."""
    rng = random.Random(seed)
    folders = sorted({r.rsplit("/", 1)[0] for r in rels})
    plan = [
        (r, rng.randint(min_kib * KiB, max_kib * KiB), "modified") for r in rng.sample(rels, n_mod)
    ]
    for i in range(n_add):
        rel = f"{folders[i % len(folders)]}/new{i:06d}.bin"
        plan.append((rel, rng.randint(min_kib * KiB, max_kib * KiB), "added"))
    return plan


def apply_change(root: Path, plan: list[tuple[str, int, str]], pool: bytes) -> int:
    """Write the change into *root*: unlink + write for a modified file. Returns bytes."""
    written = 0
    for i, (rel, size, kind) in enumerate(plan):
        path = root / rel
        if kind == "modified":
            path.unlink()  # a plain file, or DataLad's symlink into the annex
        header = b"changed!" + i.to_bytes(8, "little")  # unlike any file of the set
        start = (i * 1_000_003) % (len(pool) - size)
        with open(path, "wb") as handle:
            handle.write(header + pool[start + len(header) : start + size])
        written += size
    return written


# -- the reference: the floor of a quick-check save -------------------------------------
def stat_walk(root: Path) -> dict[str, tuple[int, int]]:
    """relative path -> (size, mtime_ns) of every file below *root* (scandir, lstat)."""
    out: dict[str, tuple[int, int]] = {}
    stack = [(str(root), "")]
    while stack:
        folder, prefix = stack.pop()
        with os.scandir(folder) as it:
            for entry in it:
                rel = prefix + entry.name
                if entry.is_dir(follow_symlinks=False):
                    stack.append((entry.path, rel + "/"))
                else:
                    st = entry.stat(follow_symlinks=False)
                    out[rel] = (st.st_size, st.st_mtime_ns)
    return out


def _sha256(path: str) -> bytes:
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as handle:
        while chunk := handle.read(MiB):
            digest.update(chunk)
    return digest.digest()


def reference_save(root: Path, manifest: dict[str, tuple[int, int]]) -> dict[str, int]:
    """Walk + lstat against *manifest*, SHA-256 of what differs on all cores; no writes."""
    now = stat_walk(root)
    added = [r for r in now if r not in manifest]
    modified = [r for r, v in now.items() if r in manifest and manifest[r] != v]
    removed = sum(1 for r in manifest if r not in now)
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        list(pool.map(_sha256, [str(root / r) for r in added + modified]))
    return {"added": len(added), "modified": len(modified), "removed": removed}


# -- labkeep ---------------------------------------------------------------------------
def labkeep_keep(root: Path) -> Path:
    """A fresh keep with an empty analysis dataset; returns the dataset's working tree."""
    with Keep.init(root) as keep:
        keep.create_project(PROJECT)
        keep.create_dataset(ADDRESS, kind="analysis")
        return keep.tree.dataset_dir(PROJECT, DATASET)


def labkeep_save_api(root: Path, message: str) -> tuple[float, dict[str, Any]]:
    """``Keep.save`` in this process; the keep is opened (and closed) outside the timing."""
    with Keep.open(root) as keep:
        t0 = time.perf_counter()
        report = keep.save(ADDRESS, message=message, keep_results=False)
        seconds = time.perf_counter() - t0
    if report.failed:
        raise SystemExit(f"labkeep save failed: {report.counts()} {report.results[:3]}")
    return seconds, dict(report.info)


def labkeep_save_cli(root: Path, message: str) -> tuple[float, dict[str, Any]]:
    cmd = [sys.executable, "-m", "labkeep", "save", ADDRESS, "-m", message]
    cmd += ["--root", str(root), "--json"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"labkeep save (CLI) failed: {done.returncode}\n{done.stderr[-2000:]}")
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return seconds, (lines[-1] if lines else {})


def labkeep_head(root: Path) -> dict[str, Any]:
    with Keep.open(root) as keep:
        rows = keep.versions(ADDRESS)
    return {"versions": len(rows), "files": rows[-1]["files"] if rows else 0}


# -- part 1: the change ----------------------------------------------------------------
def _timed_sync() -> float:
    t0 = time.perf_counter()
    os.sync()
    return time.perf_counter() - t0


Saver = Callable[[str], tuple[float, dict[str, Any]]]


def prepare_state(
    method: str,
    state: Path,
    src: Path,
    templates: dict[str, Path],
    datalad: DataLad | None,
    n_files: int,
) -> tuple[Path, Saver]:
    """The starting state of one repetition (untimed): its working tree and its save."""
    if method.startswith("labkeep"):
        tree = labkeep_keep(state)
        _sh("cp", "-a", f"{src}/.", tree)
        _, info = labkeep_save_api(state, "initial")
        if info.get("added") != n_files:
            raise SystemExit(f"{method}: initial save {info}, expected {n_files} added")
        if method == "labkeep":
            return tree, lambda m: labkeep_save_api(state, m)
        return tree, lambda m: labkeep_save_cli(state, m)
    if method in BACKENDS:
        assert datalad is not None
        _sh("cp", "-a", templates[method], state)
        datalad.git(state, "update-index", "-q", "--refresh")

        def datalad_save(m: str) -> tuple[float, dict[str, Any]]:
            assert datalad is not None
            t = time.perf_counter()
            datalad.run("save", "-m", m, cwd=state)
            return time.perf_counter() - t, {}

        return state, datalad_save
    _sh("cp", "-al", src, state)  # hard links: the reference writes nothing
    manifest = stat_walk(state)

    def ref_save(m: str) -> tuple[float, dict[str, Any]]:
        t = time.perf_counter()
        info = reference_save(state, manifest)
        return time.perf_counter() - t, info

    return state, ref_save


def bench_change(
    src: Path,
    run_dir: Path,
    templates: dict[str, Path],
    datalad: DataLad | None,
    methods: list[str],
    args: argparse.Namespace,
) -> dict[str, Any]:
    rels = relpaths(src)
    n_files = len(rels)
    n_bytes = sum(s for _, s in BI.list_files(src))
    n_mod = n_add = max(1, round(n_files * args.change_percent / 100))
    plan = plan_change(rels, n_mod, n_add, args.min_kib, args.max_kib)
    pool = BI._pool(11)
    expect = {"added": n_add, "modified": n_mod, "removed": 0}
    print(
        f"\n== change: {n_files} files, {n_bytes / 1e9:.2f} GB; then {n_mod} modified + "
        f"{n_add} added ({sum(s for _, s, _ in plan) / 1e6:.1f} MB); {args.reps} repetitions",
        flush=True,
    )
    run_dir.mkdir(parents=True)
    res: dict[str, dict[str, list[Any]]] = {
        m: {"seconds": [], "nochange": [], "sync_after": [], "prepare": [], "load": [], "info": []}
        for m in methods
    }
    for rep in range(args.reps):
        shift = rep % len(methods)
        for method in methods[shift:] + methods[:shift]:
            state = run_dir / f"{method}-r{rep}"
            t0 = time.perf_counter()
            tree, save = prepare_state(method, state, src, templates, datalad, n_files)
            prepare = time.perf_counter() - t0
            # -- nothing changed
            os.sync()
            nochange, _ = save(f"nothing changed, r{rep}")
            # -- the change
            apply_change(tree, plan, pool)
            os.sync()
            load = os.getloadavg()[0]
            seconds, info = save(f"1 % changed, 1 % added, r{rep}")
            sync_after = _timed_sync()
            # -- did it record what changed? (untimed)
            if method in BACKENDS:
                assert datalad is not None
                status = datalad.git(state, "status", "--porcelain")
                names = datalad.git(state, "diff", "--name-status", "HEAD~1", "HEAD").split("\n")
                got = {"added": 0, "modified": 0, "removed": 0}
                for line in filter(None, names):
                    got[{"A": "added", "M": "modified", "D": "removed"}[line[0]]] += 1
                target = os.readlink(tree / plan[-1][0])
                if status.strip() or got != expect or f"/{BACKENDS[method]}-" not in target:
                    raise SystemExit(f"{method}: {got} {status[:200]!r} {target}")
                info = got | {"backend": BACKENDS[method]}
            elif method.startswith("labkeep"):
                head = labkeep_head(state)
                if head != {"versions": 2, "files": n_files + n_add}:
                    raise SystemExit(f"{method}: head {head}, info {info}")
                info = {k: info.get(k) for k in ("version", "added", "modified", "removed")}
                if any(info[k] != v for k, v in expect.items()):
                    raise SystemExit(f"{method}: {info}, expected {expect}")
            elif info != expect:
                raise SystemExit(f"{method}: {info}, expected {expect}")
            r = res[method]
            r["seconds"].append(seconds)
            r["nochange"].append(nochange)
            r["sync_after"].append(sync_after)
            r["prepare"].append(prepare)
            r["load"].append(load)
            r["info"].append(info)
            print(
                f"  rep {rep} {method:<16} save {seconds:7.3f} s (+sync {sync_after:5.2f} s)"
                f"  no-change {nochange:7.3f} s  load {load:4.1f}  (prepared in {prepare:.0f} s)",
                flush=True,
            )
    summary = {
        m: r
        | {
            "median_s": _median(r["seconds"]),
            "median_nochange_s": _median(r["nochange"]),
            "median_sync_after_s": _median(r["sync_after"]),
        }
        for m, r in res.items()
    }
    ratios: dict[str, dict[str, float]] = {}
    for slow in BACKENDS:
        for fast in ("labkeep", "labkeep-cli"):
            if slow in res and fast in res:
                paired = [
                    a / b for a, b in zip(res[slow]["seconds"], res[fast]["seconds"], strict=True)
                ]
                ratios[f"{slow} / {fast}"] = {
                    "of_medians": summary[slow]["median_s"] / summary[fast]["median_s"],
                    "median_paired": _median(paired),
                    "nochange_of_medians": summary[slow]["median_nochange_s"]
                    / summary[fast]["median_nochange_s"],
                }
    if "labkeep" in res and "reference" in res:
        ratios["labkeep / reference"] = {
            "of_medians": summary["labkeep"]["median_s"] / summary["reference"]["median_s"],
            "median_paired": _median(
                [
                    a / b
                    for a, b in zip(
                        res["labkeep"]["seconds"], res["reference"]["seconds"], strict=True
                    )
                ]
            ),
            "nochange_of_medians": summary["labkeep"]["median_nochange_s"]
            / summary["reference"]["median_nochange_s"],
        }
    return {
        "files": n_files,
        "bytes": n_bytes,
        "modified": n_mod,
        "added": n_add,
        "change_bytes": sum(s for _, s, _ in plan),
        "methods": summary,
        "ratios": ratios,
    }


# -- part 2: nothing changed, many files -----------------------------------------------
def bench_nochange(run_dir: Path, n: int, methods: list[str], reps: int) -> dict[str, Any]:
    print(f"\n== no change: {n} files of 1-4 KiB; {reps} repetitions", flush=True)
    root = run_dir / "nochange-keep"
    tree = labkeep_keep(root)
    t0 = time.perf_counter()
    BI.generate_small(tree, n, 1, 4, seed=3)
    os.sync()
    generated = time.perf_counter() - t0
    os.sync()
    initial, info = labkeep_save_api(root, "initial")
    if info.get("added") != n:
        raise SystemExit(f"initial save: {info}, expected {n} added")
    print(f"  generated in {generated:.1f} s; first save (all {n} files new) {initial:.1f} s")
    manifest = stat_walk(tree)
    res: dict[str, dict[str, list[Any]]] = {
        m: {"seconds": [], "load": [], "info": []} for m in methods
    }
    for rep in range(reps):
        shift = rep % len(methods)
        for method in methods[shift:] + methods[:shift]:
            os.sync()
            load = os.getloadavg()[0]
            if method == "labkeep":
                seconds, info = labkeep_save_api(root, f"no change r{rep}")
            elif method == "labkeep-cli":
                seconds, info = labkeep_save_cli(root, f"no change r{rep}")
            else:
                t = time.perf_counter()
                info = reference_save(tree, manifest)
                seconds = time.perf_counter() - t
            changed = {k: info.get(k) for k in ("added", "modified", "removed")}
            if any(changed.values()):
                raise SystemExit(f"{method}: {info}: nothing changed")
            res[method]["seconds"].append(seconds)
            res[method]["load"].append(load)
            res[method]["info"].append({k: info.get(k) for k in ("version", *changed)})
            print(f"  rep {rep} {method:<12} {seconds:7.3f} s  load {load:4.1f}", flush=True)
    head = labkeep_head(root)
    return {
        "files": n,
        "generate_s": generated,
        "first_save_s": initial,
        "head_after": head,
        "methods": {m: r | {"median_s": _median(r["seconds"])} for m, r in res.items()},
    }


# -- report ----------------------------------------------------------------------------
def print_change(res: dict[str, Any], target: float) -> None:
    print(
        f"\nchange: {res['files']} files ({res['bytes'] / 1e9:.2f} GB), {res['modified']} "
        f"modified + {res['added']} added ({res['change_bytes'] / 1e6:.1f} MB); medians"
    )
    print(f"  {'method':<17}{'save s':>9}{'+sync s':>9}{'no-change s':>13}  load  runs (s)")
    for m, r in res["methods"].items():
        runs = " ".join(f"{s:.3f}" for s in r["seconds"])
        print(
            f"  {m:<17}{r['median_s']:9.3f}{r['median_sync_after_s']:9.2f}"
            f"{r['median_nochange_s']:13.3f}  {_median(r['load']):4.1f}  {runs}"
        )
    print(f"  {'ratio':<34}{'of medians':>11}{'paired':>9}{'no-change':>11}")
    for name, q in res["ratios"].items():
        print(
            f"  {name:<34}{q['of_medians']:10.1f}x{q['median_paired']:8.1f}x"
            f"{q['nochange_of_medians']:10.1f}x"
        )
    key = "datalad-md5e / labkeep"
    if key in res["ratios"]:
        got = res["ratios"][key]["of_medians"]
        verdict = "met" if got >= target else "MISSED"
        print(
            f"  target: labkeep save >= {target:.0f}x faster than datalad save (MD5E): "
            f"{got:.1f}x, {verdict}"
        )


def print_nochange(res: dict[str, Any], target: float) -> None:
    print(f"\nno change: {res['files']} files (first save {res['first_save_s']:.1f} s); medians")
    for m, r in res["methods"].items():
        runs = " ".join(f"{s:.3f}" for s in r["seconds"])
        print(f"  {m:<17}{r['median_s']:9.3f} s  load {_median(r['load']):4.1f}  {runs}")
    if "labkeep" in res["methods"]:
        got = res["methods"]["labkeep"]["median_s"]
        verdict = "met" if got < target else "MISSED"
        print(
            f"  target: no-change save of {res['files']} files < {target:.0f} s: "
            f"{got:.2f} s, {verdict}"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--datalad", type=Path, help="the datalad executable of its own venv")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/labkeep-bench-versions"))
    p.add_argument("--files", type=int, default=10_000, help="files in the changed dataset")
    p.add_argument("--min-kib", type=int, default=16)
    p.add_argument("--max-kib", type=int, default=256)
    p.add_argument("--change-percent", type=float, default=1.0, help="modified, and as many added")
    p.add_argument("--nochange-files", type=int, default=100_000)
    p.add_argument("--reps", type=int, default=3, help="repetitions of the change")
    p.add_argument("--nochange-reps", type=int, default=5)
    p.add_argument("--parts", default="change,nochange")
    p.add_argument("--methods", default=",".join(CHANGE_METHODS))
    p.add_argument("--quick", action="store_true", help="1,000 files changed, 10,000 unchanged")
    p.add_argument("--keep-run", action="store_true", help="do not delete the run's folders")
    p.add_argument("--force", action="store_true", help="run even if disk space looks short")
    args = p.parse_args()
    if args.quick:
        args.files, args.nochange_files, args.reps, args.nochange_reps = 1000, 10_000, 2, 3
    parts = [x for x in args.parts.split(",") if x]
    methods = [m for m in args.methods.split(",") if m]
    if unknown := (set(parts) - {"change", "nochange"}) | (set(methods) - set(CHANGE_METHODS)):
        p.error(f"unknown: {sorted(unknown)}")
    if "change" in parts and any(m in BACKENDS for m in methods) and args.datalad is None:
        p.error("--datalad PATH is needed (or --methods without datalad-*)")

    workdir: Path = args.workdir.absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    info = BI.machine_info(workdir)
    datalad = DataLad(args.datalad.absolute(), workdir / "home") if args.datalad else None
    if datalad is not None:
        info |= datalad.versions()
    info["load_at_start"] = os.getloadavg()
    info["busiest_at_start"] = _busiest()
    print("machine:", json.dumps(info, indent=2), flush=True)

    avg = (args.min_kib + args.max_kib) / 2 * KiB * args.files
    states = sum(2 if m.startswith("labkeep") else 1 for m in methods if m != "reference")
    need = avg * (1 + len(BACKENDS) + states * args.reps) if "change" in parts else 0
    need += args.nochange_files * 2.5 * KiB * 3 if "nochange" in parts else 0
    free = shutil.disk_usage(workdir).free
    print(f"disk: needs about {need / 1e9:.1f} GB, {free / 1e9:.1f} GB free in {workdir}")
    if need > free - 5e9 and not args.force:
        raise SystemExit("not enough free space (keep 5 GB spare); use --force to run anyway")

    # the CLI runs read labkeep's bytecode as an installed package would (this shell may
    # have PYTHONDONTWRITEBYTECODE set, and then every run would compile labkeep again)
    _sh(sys.executable, "-m", "compileall", "-q", REPO / "src" / "labkeep")
    run_dir = workdir / f"run-{time.strftime('%Y%m%d-%H%M%S')}"
    results: dict[str, Any] = {}
    wall0 = time.perf_counter()
    try:
        if "change" in parts:
            print("sources:", flush=True)
            src = workdir / f"src-{args.files}"
            params = {"n": args.files, "min": args.min_kib, "max": args.max_kib}
            BI.prepare_source(
                src, params, lambda: BI.generate_small(src, args.files, args.min_kib, args.max_kib)
            )
            templates: dict[str, Path] = {}
            made: dict[str, float] = {}
            for m in methods:
                if m in BACKENDS:
                    assert datalad is not None
                    templates[m] = workdir / f"datalad-{BACKENDS[m].lower()}-{args.files}"
                    made[m] = datalad.template(
                        templates[m], src, BACKENDS[m], params | datalad.versions() | {"gc": True}
                    )
            results["change"] = bench_change(
                src, run_dir / "change", templates, datalad, methods, args
            )
            results["change"]["datalad_template_s"] = made
        if "nochange" in parts:
            nochange = [m for m in NOCHANGE_METHODS if m in methods]
            results["nochange"] = bench_nochange(
                run_dir, args.nochange_files, nochange, args.nochange_reps
            )
    finally:
        info["load_at_end"] = os.getloadavg()
        info["busiest_at_end"] = _busiest()
        info["wall_s"] = time.perf_counter() - wall0
        if not args.keep_run:
            t0 = time.perf_counter()
            _rm(run_dir)
            print(f"\ncleaned up {run_dir} in {time.perf_counter() - t0:.1f} s")

    print(f"\ncommand: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}, "
          f"{info['filesystem']} ({info['mount_options']})")  # fmt: skip
    if datalad is not None:
        print(f"{info['datalad']}, git-annex {info['git_annex']}, {info['git']}")
    print(
        f"load average (1, 5, 15 min): start {info['load_at_start']}, end "
        f"{tuple(round(x, 2) for x in info['load_at_end'])}; run took {info['wall_s']:.0f} s"
    )
    print("+sync: the `sync` right after the save (not in 's'); load: median 1-min load before")
    if "change" in results:
        print_change(results["change"], 20.0)
    if "nochange" in results:
        print_nochange(results["nochange"], 2.0)

    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    out = (
        out_dir / f"versions-{time.strftime('%Y%m%d-%H%M%S')}{'-quick' if args.quick else ''}.json"
    )
    payload = {"machine": info, "argv": sys.argv, "args": vars(args) | {"workdir": str(workdir)}}
    out.write_text(json.dumps(payload | {"results": results}, indent=2, default=str))
    print(f"\nresults written to {out}")


if __name__ == "__main__":
    main()
