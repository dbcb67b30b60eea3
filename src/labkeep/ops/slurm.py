"""SLURM: submit a run's command as a batch job, read its state, cancel it.

``labkeep run --slurm "--partition=gpu --gres=gpu:1 --time=02:00:00" -- cmd`` passes the
user's resource options through :func:`parse_sbatch_args` (options labkeep owns are
refused), writes the script of :func:`render_script` into the run's folder and submits it
with :meth:`Slurm.submit`; a watcher then polls :meth:`Slurm.status`.

Files each task writes into the run folder (``KEY`` is the job id, or
``ARRAYJOBID_TASKID`` for a task of a job array; see :func:`task_key`)::

    slurm-KEY.out    the command's stdout   (sbatch --output, %j or %A_%a)
    slurm-KEY.err    the command's stderr   (sbatch --error)
    slurm-KEY.info   key=value lines written when the task starts: host, job_id,
                     array_job_id, array_task_id, nodelist, started (UTC), one gpu=
                     line per GPU that nvidia-smi lists (name, driver version)
    slurm-KEY.exit   the command's exit status, one line, written when it returned

``.info`` and ``.exit`` are written to a temp file and renamed, so a reader sees all of
one or nothing. A task that has ``.info`` and no ``.exit`` was killed before its command
returned (scancel, time limit, node failure): ``.exit`` tells "ran and exited N" apart
from that even after the controller has forgotten the job (``MinJobAge``, 300 s by
default, without accounting). :func:`read_task_records` reads them.

Importing this module needs no SLURM; calling :class:`Slurm` needs its commands
(``sbatch``, ``scontrol``, ``scancel``; ``sacct`` where accounting is on). A missing
command, configuration or controller raises :class:`SchedulerUnavailable`; options sbatch
refuses raise :class:`UsageError` with sbatch's own words.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from labkeep.errors import SchedulerUnavailable, UsageError

State = Literal["pending", "running", "done", "failed", "cancelled", "timeout", "unknown"]
FINISHED: frozenset[State] = frozenset({"done", "failed", "cancelled", "timeout"})
#: seconds a SLURM command may take before the controller counts as unreachable
COMMAND_TIMEOUT = 60.0

# -- the user's sbatch options ---------------------------------------------------------

#: options labkeep sets itself (or that would stop it from submitting and watching)
OWNED: dict[str, str] = {
    "wrap": "give the command after '--' instead",
    "output": "labkeep writes the job's stdout into the run's folder",
    "error": "labkeep writes the job's stderr into the run's folder",
    "chdir": "the command runs in the folder 'labkeep run' was started from",
    "parsable": "labkeep reads the job id itself",
    "wait": "labkeep watches the job itself",
    "test-only": "labkeep must submit the job to record it",
    "job-name": "labkeep names the job after the run",
    "export": "the job gets the environment labkeep records; set variables in the "
    "command instead (env NAME=value cmd ...)",
    "export-file": "the job gets the environment labkeep records; set variables in the "
    "command instead (env NAME=value cmd ...)",
    "uid": "the job runs as the user who started it",
    "gid": "the job runs as the user who started it",
    "clusters": "labkeep follows jobs on the cluster of this host's SLURM configuration",
    "help": "not a resource request",
    "usage": "not a resource request",
    "version": "not a resource request",
}
#: sbatch's long options (22.05) that take no argument or only one written with '='
_LONG_NO_SEPARATE_ARG = frozenset(
    [
        "contiguous", "exclusive", "export", "get-user-env", "help", "hold", "ignore-pbs",
        "nice", "no-kill", "no-requeue", "overcommit", "oversubscribe", "parsable", "propagate",
        "quiet", "reboot", "requeue", "spread-job", "test-only", "usage", "use-min-nodes",
        "verbose", "version", "wait", "wrap"
    ]
)  # fmt: skip
#: sbatch's other long options (22.05), for resolving abbreviations as getopt does
_LONG_WITH_ARG = frozenset(
    [
        "account", "acctg-freq", "array", "batch", "bb", "bbf", "begin", "chdir",
        "cluster-constraint", "clusters", "comment", "constraint", "container", "core-spec",
        "cores-per-socket", "cpu-freq", "cpus-per-gpu", "cpus-per-task", "deadline",
        "delay-boot", "dependency", "distribution", "error", "exclude", "export-file",
        "extra-node-info", "gid", "gpu-bind", "gpu-freq", "gpus", "gpus-per-node",
        "gpus-per-socket", "gpus-per-task", "gres", "gres-flags", "hint", "input", "job-name",
        "kill-on-invalid-dep", "licenses", "mail-type", "mail-user", "mcs-label", "mem",
        "mem-bind", "mem-per-cpu", "mem-per-gpu", "mincpus", "network", "nodefile", "nodelist",
        "nodes", "ntasks", "ntasks-per-core", "ntasks-per-gpu", "ntasks-per-node",
        "ntasks-per-socket", "open-mode", "output", "partition", "power", "prefer", "priority",
        "profile", "qos", "reservation", "signal", "sockets-per-node", "switches",
        "thread-spec", "threads-per-core", "time", "time-min", "tmp", "uid", "wait-all-nodes",
        "wckey"
    ]
)  # fmt: skip
_SHORT_FLAGS = frozenset("HhOQsVvW")  # no argument: may be followed by more flags
_SHORT_OPTIONAL = frozenset("k")  # an argument only when attached (-kfoo)
_SHORT_LONG = {"a": "array", "o": "output", "e": "error", "D": "chdir", "W": "wait",
               "J": "job-name", "h": "help", "V": "version", "M": "clusters"}  # fmt: skip


def _resolve_long(name: str) -> str:
    """The option getopt would take ``--name`` for (sbatch accepts unique prefixes)."""
    known = _LONG_NO_SEPARATE_ARG | _LONG_WITH_ARG
    if name in known:
        return name
    candidates = sorted(option for option in known if option.startswith(name))
    owned = [option for option in candidates if option in OWNED]
    if owned and name:  # ambiguous or not, sbatch would never get it from us
        return owned[0]
    return candidates[0] if len(candidates) == 1 else name


def _options(tokens: list[str]) -> Iterable[tuple[str, str]]:
    """(option name, token) for each option in *tokens*, read as sbatch's getopt does;
    a positional argument is refused (sbatch would take it for the script)."""
    expect_value = False
    for token in tokens:
        if expect_value:
            expect_value = False
            continue
        if token.startswith("--") and len(token) > 2:
            name, eq, _ = token[2:].partition("=")
            resolved = _resolve_long(name)
            yield resolved, token
            expect_value = not eq and resolved not in _LONG_NO_SEPARATE_ARG
        elif token.startswith("-") and not token.startswith("--") and len(token) > 1:
            for index, char in enumerate(token[1:], start=1):
                yield _SHORT_LONG.get(char, f"-{char}"), token
                if char in _SHORT_FLAGS:
                    continue
                if char not in _SHORT_OPTIONAL and index == len(token) - 1:
                    expect_value = True
                break
        else:
            raise UsageError(
                f"unexpected argument {token!r} in the --slurm options",
                hint='--slurm takes sbatch options only (e.g. "--partition=gpu '
                "--time=02:00:00\"); give the command after '--'",
            )


def parse_sbatch_args(text: str) -> list[str]:
    """The user's ``--slurm`` string as sbatch arguments, without the options labkeep
    owns (:data:`OWNED`: refused with a :class:`UsageError` naming the option)."""
    try:
        tokens = shlex.split(text)
    except ValueError as exc:
        raise UsageError(f"cannot read the --slurm options {text!r}: {exc}") from None
    for name, token in _options(tokens):
        if name in OWNED:
            raise UsageError(
                f"the --slurm option {token!r} (--{name}) is set by labkeep", hint=OWNED[name]
            )
    return tokens


def is_array(args: list[str]) -> bool:
    """Whether *args* ask for a job array (``--array``/``-a``)."""
    return any(name == "array" for name, _ in _options(args))


# -- the batch script ------------------------------------------------------------------

_SCRIPT = """\
#!/bin/bash
# written by labkeep (labkeep run --slurm); submitted with sbatch
set -u
run_dir={run_dir}
if [ -n "${{SLURM_ARRAY_JOB_ID:-}}" ]; then
    task="${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}"
else
    task="${{SLURM_JOB_ID:-local}}"
fi
labkeep_write() {{  # stdin to $run_dir/$1, whole or not at all: a temp file, then mv
    cat >"$run_dir/.$1.$$.tmp" && mv -f "$run_dir/.$1.$$.tmp" "$run_dir/$1"
}}
{{
    printf 'host=%s\\n' "$(hostname 2>/dev/null || uname -n)"
    printf 'job_id=%s\\n' "${{SLURM_JOB_ID:-}}"
    printf 'array_job_id=%s\\n' "${{SLURM_ARRAY_JOB_ID:-}}"
    printf 'array_task_id=%s\\n' "${{SLURM_ARRAY_TASK_ID:-}}"
    printf 'nodelist=%s\\n' "${{SLURM_JOB_NODELIST:-}}"
    printf 'started=%s\\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    if command -v nvidia-smi >/dev/null 2>&1; then
        timeout 60 nvidia-smi --query-gpu=name,driver_version --format=csv,noheader \\
            2>/dev/null | sed 's/^/gpu=/'
    fi
}} | labkeep_write "slurm-$task.info"
if cd {workdir}; then
    {command}
    status=$?
else
    echo "labkeep: cannot enter the working folder "{workdir} >&2
    status=1
fi
printf '%s\\n' "$status" | labkeep_write "slurm-$task.exit"
exit "$status"
"""


def render_script(argv: list[str], workdir: Path, run_dir: Path) -> str:
    """The sbatch script that runs *argv* in *workdir* and leaves the task files of the
    module docstring in *run_dir*. Each task of a job array runs the same *argv*, with
    ``SLURM_ARRAY_TASK_ID`` in its environment."""
    if not argv:
        raise UsageError("no command to run", hint="give the command after '--'")
    return _SCRIPT.format(
        run_dir=shlex.quote(str(run_dir)),
        workdir=shlex.quote(str(workdir)),
        command=shlex.join(argv),
    )


def task_key(job_id: str, task_id: int | None = None) -> str:
    """The name part of a task's files: ``JOBID`` or ``ARRAYJOBID_TASKID``."""
    return job_id if task_id is None else f"{job_id}_{task_id}"


@dataclass(frozen=True)
class TaskRecord:
    """What a task wrote into the run folder (``exit_code`` None: the command did not
    return, or has not yet)."""

    key: str
    task_id: int | None
    host: str | None
    gpus: tuple[str, ...]
    started: str | None
    exit_code: int | None


def _task_files(run_dir: Path, job_id: str, suffix: str) -> list[tuple[int | None, Path]]:
    found: list[tuple[int | None, Path]] = []
    single = run_dir / f"slurm-{job_id}{suffix}"
    if single.is_file():
        found.append((None, single))
    for path in run_dir.glob(f"slurm-{job_id}_*{suffix}"):
        task = path.name[len(f"slurm-{job_id}_") : -len(suffix)]
        if task.isdigit():
            found.append((int(task), path))
    return sorted(found, key=lambda item: -1 if item[0] is None else item[0])


def read_task_records(run_dir: Path, job_id: str) -> list[TaskRecord]:
    """The tasks of job *job_id* that started, in task order, from their files."""
    records = []
    for task_id, info in _task_files(run_dir, job_id, ".info"):
        values: dict[str, list[str]] = {}
        for line in info.read_text(errors="replace").splitlines():
            name, _, value = line.partition("=")
            values.setdefault(name, []).append(value)
        key = task_key(job_id, task_id)
        exit_code = None
        with contextlib.suppress(OSError, ValueError):  # not (yet) written
            exit_code = int((run_dir / f"slurm-{key}.exit").read_text().strip())
        records.append(
            TaskRecord(
                key=key,
                task_id=task_id,
                host=values.get("host", [None])[0],
                gpus=tuple(values.get("gpu", [])),
                started=values.get("started", [None])[0],
                exit_code=exit_code,
            )
        )
    return records


def _tail(path: Path, lines: int, block: int = 8192, limit: int = 1 << 20) -> str:
    """The last *lines* lines of *path*, reading backwards from its end (at most *limit*
    bytes)."""
    with path.open("rb") as handle:
        end = handle.seek(0, os.SEEK_END)
        data = b""
        position = end
        while position > 0 and data.count(b"\n") <= lines and end - position < limit:
            step = min(block, position)
            position -= step
            handle.seek(position)
            data = handle.read(step) + data
    kept = data.rstrip(b"\n").split(b"\n")[-lines:] if data.strip() else []
    return b"\n".join(kept).decode(errors="replace")


def stderr_tail(run_dir: Path, job_id: str, lines: int = 20) -> str:
    """The last *lines* lines of the job's stderr file(s), each task's under a
    ``==> task N <==`` header for a job array; '' when there is none."""
    files = _task_files(run_dir, job_id, ".err")
    parts = []
    for task_id, path in files:
        text = _tail(path, lines)
        if task_id is None or len(files) == 1:
            parts.append(text)
        elif text:
            parts.append(f"==> task {task_id} <==\n{text}")
    return "\n".join(part for part in parts if part)


# -- the job's state -------------------------------------------------------------------

_STATES: dict[str, State] = {
    **dict.fromkeys(
        ["PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "CONFIGURING"],
        "pending",
    ),
    **dict.fromkeys(
        ["RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "STAGE_OUT", "SIGNALING", "RESIZING"],
        "running",
    ),
    "COMPLETED": "done",
    **dict.fromkeys(
        ["FAILED", "NODE_FAIL", "BOOT_FAIL", "OUT_OF_MEMORY", "DEADLINE", "PREEMPTED"],
        "failed",
    ),
    **dict.fromkeys(["CANCELLED", "REVOKED"], "cancelled"),
    "TIMEOUT": "timeout",
    "SPECIAL_EXIT": "failed",
}
#: how a job array's finished tasks combine: the first state any task has wins
_FINISHED_ORDER: tuple[State, ...] = ("cancelled", "timeout", "failed", "done")


@dataclass(frozen=True)
class SlurmTask:
    """One job, or one task of a job array."""

    job_id: str  # JOBID or ARRAYJOBID_TASKID
    task_id: int | None
    state: State
    slurm_state: str
    exit_code: int | None  # None until finished, and when a signal ended it
    signal: int | None  # the signal that ended it (SLURM's ExitCode=0:15), if any
    node: str | None  # a SLURM host list ("gpu[01-02]") for multi-node jobs
    reason: str | None
    start: datetime | None  # naive UTC, like labkeep's clock
    end: datetime | None

    @property
    def finished(self) -> bool:
        return self.state in FINISHED


@dataclass(frozen=True)
class SlurmStatus:
    """A job's state in labkeep's words (``state``) and SLURM's (``slurm_state``; the
    distinct states of the tasks, comma-separated, for an array). A job array is
    ``pending`` until a task started, then ``running`` until every task finished; it is
    ``done`` only when every task is; when all finished and one did not complete, the
    first of cancelled, timeout, failed that a task has is the array's state."""

    job_id: str
    state: State
    slurm_state: str
    exit_code: int | None  # the highest of the finished tasks' (not killed by a signal)
    nodes: tuple[str, ...]
    reason: str | None
    start: datetime | None  # the earliest task start
    end: datetime | None  # the last task end, once all finished
    tasks: tuple[SlurmTask, ...]

    @property
    def finished(self) -> bool:
        return self.state in FINISHED


def _combine(job_id: str, tasks: list[SlurmTask], reason: str | None = None) -> SlurmStatus:
    if not tasks:
        return SlurmStatus(job_id, "unknown", "", None, (), reason, None, None, ())
    states = {task.state for task in tasks}
    state: State
    if "unknown" in states:
        state = "unknown"
    elif not states <= FINISHED:  # pending until one task started, then running
        state = "pending" if states == {"pending"} else "running"
    else:
        state = next(s for s in _FINISHED_ORDER if s in states)
    exits = [task.exit_code for task in tasks if task.exit_code is not None]
    starts = [task.start for task in tasks if task.start is not None]
    ends = [task.end for task in tasks if task.end is not None]
    return SlurmStatus(
        job_id=job_id,
        state=state,
        slurm_state=",".join(sorted({task.slurm_state for task in tasks})),
        exit_code=max(exits) if exits else None,
        nodes=tuple(sorted({task.node for task in tasks if task.node})),
        reason=reason or next((task.reason for task in tasks if task.reason), None),
        start=min(starts) if starts else None,
        end=max(ends) if ends and state in FINISHED else None,
        tasks=tuple(sorted(tasks, key=lambda task: (task.task_id or 0, task.job_id))),
    )


def _time(text: str | None) -> datetime | None:
    """SLURM's local time (``2026-01-02T03:04:05``) as naive UTC."""
    if not text or text in ("Unknown", "None", "N/A"):
        return None
    try:
        return datetime.fromisoformat(text).astimezone(UTC).replace(tzinfo=None)
    except ValueError:
        return None


def _task_ids(text: str) -> list[int]:
    """``0``, ``1-3``, ``1,4-9:2``, ``0-99%4`` (a throttle) as task ids."""
    ids: list[int] = []
    for part in text.split("%")[0].strip("[]").split(","):
        span, _, step = part.partition(":")
        first, _, last = span.partition("-")
        if first.isdigit():
            ids.extend(range(int(first), int(last or first) + 1, int(step or 1)))
    return ids


def _task(
    job_id: str, task_ids: list[int | None], raw_state: str, exit_code: str, node: str,
    reason: str, start: str, end: str,
) -> list[SlurmTask]:  # fmt: skip
    slurm_state = raw_state.split()[0] if raw_state.split() else "UNKNOWN"
    slurm_state = slurm_state.rstrip("+")
    state = _STATES.get(slurm_state, "unknown")
    code, _, sig = exit_code.partition(":")
    finished = state in FINISHED
    killed = int(sig) if finished and sig.isdigit() else 0
    return [
        SlurmTask(
            job_id=task_key(job_id, task_id),
            task_id=task_id,
            state=state,
            slurm_state=slurm_state,
            exit_code=int(code) if finished and code.isdigit() and not killed else None,
            signal=killed or None,
            node=node if node and node not in ("(null)", "None assigned") else None,
            reason=reason if reason and reason not in ("None", "(null)") else None,
            start=_time(start) if state != "pending" else None,
            end=_time(end) if finished else None,
        )
        for task_id in task_ids
    ]


_FIELD = re.compile(r"^[A-Za-z][A-Za-z0-9_/:]*=")


def _fields(line: str) -> dict[str, str]:
    """One line of ``scontrol show job -o`` as {name: value} (values may hold spaces)."""
    fields: dict[str, str] = {}
    last = None
    for word in line.split(" "):
        if _FIELD.match(word):
            last, _, value = word.partition("=")
            fields[last] = value
        elif last is not None and word:
            fields[last] += " " + word
    return fields


def parse_scontrol(job_id: str, text: str) -> SlurmStatus:
    """The output of ``scontrol show job -o JOBID`` (one line per job or array task; the
    pending tasks of an array share a line) as a status."""
    tasks: list[SlurmTask] = []
    for line in text.splitlines():
        f = _fields(line.strip())
        if "JobId" not in f:
            continue
        array_id = f.get("ArrayJobId")
        ids: list[int | None] = [None]
        if array_id and f.get("ArrayTaskId"):
            ids = list(_task_ids(f["ArrayTaskId"]))
        tasks += _task(
            array_id if array_id and ids != [None] else f["JobId"], ids,
            f.get("JobState", ""), f.get("ExitCode", ""), f.get("NodeList", ""),
            f.get("Reason", ""), f.get("StartTime", ""), f.get("EndTime", ""),
        )  # fmt: skip
    return _combine(job_id, tasks)


def parse_sacct(job_id: str, text: str) -> SlurmStatus:
    """The output of ``sacct -X -n -P -o JobID,State,ExitCode,NodeList,Reason,Start,End``."""
    tasks: list[SlurmTask] = []
    for line in text.splitlines():
        columns = line.split("|")
        if len(columns) < 7:
            continue
        jobid, state, exit_code, node, reason, start, end = columns[:7]
        base, _, task = jobid.partition("_")
        ids: list[int | None] = list(_task_ids(task)) if task else [None]
        tasks += _task(base, ids, state, exit_code, node, reason, start, end)
    return _combine(job_id, tasks)


# -- the commands ----------------------------------------------------------------------

#: SLURM's words for "the controller, its configuration or munge cannot be reached"
_UNREACHABLE = (
    "unable to contact slurm controller", "could not establish a configuration source",
    "unable to process configuration file", "socket timed out", "connection refused",
    "zero bytes were transmitted", "munge", "authentication", "could not open",
)  # fmt: skip
_GONE = ("invalid job id", "already completing or completed")


def _message(stderr: str) -> str:
    lines = [re.sub(r"^\w+: (error|fatal): ", "", line).strip() for line in stderr.splitlines()]
    return "; ".join(line for line in lines if line) or "no message"


class Slurm:
    """The SLURM commands, run with *env* on top of this process's environment (e.g.
    ``{"SLURM_CONF": ...}``), from *bin_dir* if given, else from PATH."""

    def __init__(self, env: Mapping[str, str] | None = None, bin_dir: Path | None = None) -> None:
        self.env = dict(env or {})
        self.bin_dir = bin_dir

    def _command(self, name: str) -> str:
        env = {**os.environ, **self.env}
        if self.bin_dir is not None:
            found = self.bin_dir / name
            path = str(found) if os.access(found, os.X_OK) and found.is_file() else None
        else:
            path = shutil.which(name, path=env.get("PATH", os.defpath))
        if path is None:
            where = f"in {self.bin_dir}" if self.bin_dir is not None else "on PATH"
            raise SchedulerUnavailable(
                f"SLURM is not installed here: {name} was not found {where}",
                hint="run labkeep on a host with the SLURM client commands (a login node), "
                "or leave out --slurm to run the command here",
            )
        conf = env.get("SLURM_CONF")
        if conf and not Path(conf).is_file():  # sbatch would retry for 60 s
            raise SchedulerUnavailable(
                f"SLURM's configuration {conf} does not exist",
                hint="check the SLURM_CONF environment variable",
            )
        return path

    def _run(
        self, name: str, *args: str, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        command = [self._command(name), *args]
        try:
            return subprocess.run(
                command, env={**os.environ, **self.env}, cwd=cwd, capture_output=True,
                text=True, errors="replace", stdin=subprocess.DEVNULL,
                timeout=COMMAND_TIMEOUT, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise SchedulerUnavailable(
                f"SLURM did not answer within {COMMAND_TIMEOUT:.0f} s ({name})",
                hint="the SLURM controller may be down or overloaded; try again later",
            ) from None
        except OSError as exc:
            raise SchedulerUnavailable(
                f"cannot run {name}: {exc.strerror or exc}",
                hint="check the SLURM installation on this host",
            ) from None

    @staticmethod
    def _unavailable(name: str, result: subprocess.CompletedProcess[str]) -> SchedulerUnavailable:
        return SchedulerUnavailable(
            f"SLURM cannot be reached ({name}: {_message(result.stderr)})",
            hint="the SLURM controller (or munge) may be down; nothing was changed, "
            "try again later",
        )

    def submit(self, script: Path, args: list[str], run_dir: Path, job_name: str) -> str:
        """Submit *script* with the user's *args* (checked again here); its stdout and
        stderr go to the task files in *run_dir*. Returns the job id (of the array, for
        a job array)."""
        parse_sbatch_args(shlex.join(args))
        pattern = "%A_%a" if is_array(args) else "%j"
        result = self._run(
            "sbatch", "--parsable", f"--job-name={job_name}",
            f"--output={run_dir / f'slurm-{pattern}.out'}",
            f"--error={run_dir / f'slurm-{pattern}.err'}",
            f"--chdir={run_dir}", *args, str(script), cwd=run_dir,
        )  # fmt: skip
        message = _message(result.stderr)
        if result.returncode != 0:
            if any(word in message.lower() for word in _UNREACHABLE):
                raise self._unavailable("sbatch", result)
            raise UsageError(
                f"SLURM refused the job: {message}",
                hint="check the --slurm options (partitions and their limits: sinfo, "
                "scontrol show partition)",
            )
        job_id = result.stdout.strip().split(";")[0]
        if not job_id.isdigit():
            raise SchedulerUnavailable(
                f"sbatch answered {result.stdout.strip()!r} instead of a job id ({message})",
                hint="check the SLURM installation on this host",
            )
        return job_id

    def status(self, job_id: str) -> SlurmStatus:
        """The job's state; ``unknown`` (with a reason) when the controller no longer
        knows it and accounting has no record (see :func:`read_task_records`)."""
        result = self._run("scontrol", "show", "job", "-o", job_id)
        if result.returncode == 0:
            return parse_scontrol(job_id, result.stdout)
        if not any(word in result.stderr.lower() for word in _GONE):
            raise self._unavailable("scontrol", result)
        with_sacct = self._sacct(job_id)
        if with_sacct is not None and with_sacct.tasks:
            return with_sacct
        return _combine(
            job_id, [], reason="SLURM no longer knows this job (it finished long ago, or "
            "the id is wrong); its task files in the run folder tell how it ended",
        )  # fmt: skip

    def _sacct(self, job_id: str) -> SlurmStatus | None:
        try:
            result = self._run(
                "sacct", "-j", job_id, "-X", "-n", "-P",
                "--format=JobID,State,ExitCode,NodeList,Reason,Start,End",
            )  # fmt: skip
        except SchedulerUnavailable:
            return None
        if result.returncode != 0:  # accounting is off ("storage is disabled")
            return None
        return parse_sacct(job_id, result.stdout)

    def cancel(self, job_id: str) -> None:
        """Cancel the job (every task of an array). A job that already ended, or that
        SLURM no longer knows, is left as it is."""
        result = self._run("scancel", job_id)
        stderr = result.stderr.lower()
        if result.returncode != 0 and not any(word in stderr for word in _GONE):
            raise self._unavailable("scancel", result)
