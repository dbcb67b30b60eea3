"""A throwaway single-node SLURM cluster for the tests: munged, slurmctld and slurmd.

Everything lives in one temp folder (docs: REFERENCE.md, "Single-node SLURM for tests"):
munged runs with its own key and socket, slurmctld and slurmd with their own free ports,
state, spool, pid and log files, so two pytest-xdist workers each run a cluster without
colliding. Accounting is off: job states come from ``scontrol show job``, and
``MinJobAge`` keeps finished jobs visible there for the life of the cluster. ``KillWait``
is short so that a cancelled job is gone within seconds.

The daemons run in the foreground, each in its own session; :meth:`SlurmCluster.stop`
kills their process groups and any job processes still running in the folder, then
checks that none is left. Debian's packages: slurm-wlm and munge (./dev test installs
them as root).

Usage::

    with SlurmCluster(tmp_path) as cluster:
        subprocess.run(["sbatch", ...], env={**clean_environ(), **cluster.env})
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

CLUSTER_NAME = "labkeeptest"


class SlurmClusterUnavailable(RuntimeError):
    """SLURM or munge is not installed or would not start here: the reason, for skip."""


def _bin(name: str) -> str:
    found = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None
    )
    if not found:
        raise SlurmClusterUnavailable(
            f"{name} was not found: install SLURM with 'apt-get install slurm-wlm munge' "
            "(./dev test does this when run as root)"
        )
    return found


def clean_environ() -> dict[str, str]:
    """This process's environment without SLURM's and sbatch's variables (tests run inside
    a SLURM job, or with SBATCH_PARTITION set, must not reach the test cluster with them)."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("SLURM_", "SBATCH_", "SALLOC_", "SRUN_", "SQUEUE_", "SINFO_"))
    }


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class SlurmCluster:
    """``start()`` (or ``with``), then ``env`` for subprocesses, ``conf``, ``bin_dir``."""

    def __init__(self, tmpdir: Path, *, cpus: int = 2) -> None:
        self.dir = Path(tmpdir) / "slurm-cluster"
        self.cpus = cpus
        self.conf = self.dir / "slurm.conf"
        #: sockets live in a short folder of their own: slurmstepd's socket
        #: (SPOOL/NODE_JOBID.STEPID) must fit in 108 bytes, and pytest's temp paths grow
        #: (a job whose socket path is too long is requeued held, and never runs)
        self.short = Path(tempfile.mkdtemp(prefix="lks-"))
        self.munge_socket = self.short / "munge" / "munge.socket"
        self.ports: dict[str, int] = {}
        #: seconds from launch until the node was idle
        self.start_seconds = 0.0
        self._processes: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def env(self) -> dict[str, str]:
        """What a subprocess needs to talk to this cluster (the munge socket is in the
        config's AuthInfo)."""
        return {"SLURM_CONF": str(self.conf)}

    @property
    def bin_dir(self) -> Path:
        return Path(_bin("sbatch")).parent

    def __enter__(self) -> SlurmCluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- start -----------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        binaries = {name: _bin(name) for name in ("munged", "slurmctld", "slurmd", "sinfo")}
        for sub in ("munge", "state", "log"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        for sub in ("munge", "spool"):
            (self.short / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.short, 0o755)
        os.chmod(self.short / "munge", 0o755)
        # munged and the clients must reach the socket's folder; the folder is ours
        os.chmod(self.dir, 0o755)
        os.chmod(self.dir / "munge", 0o755)
        key = self.dir / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        started = time.monotonic()
        deadline = started + timeout
        try:
            self._launch(
                "munged",
                [
                    binaries["munged"], "-F", "--force", f"--socket={self.munge_socket}",
                    f"--key-file={key}", f"--pid-file={self.dir / 'munge' / 'munged.pid'}",
                    f"--log-file={self.dir / 'log' / 'munged.log'}",
                    f"--seed-file={self.dir / 'munge' / 'munged.seed'}", "--num-threads=2",
                ],
            )  # fmt: skip
            self._wait_for(lambda: self.munge_socket.exists(), deadline, "munged")
            self.ports = dict(zip(("slurmctld", "slurmd"), _free_ports(2), strict=True))
            self.conf.write_text(self._config())
            self._launch("slurmctld", [binaries["slurmctld"], "-D", "-i", "-f", str(self.conf)])
            self._launch(
                "slurmd", [binaries["slurmd"], "-D", "-N", "localhost", "-f", str(self.conf)]
            )
            self._wait_for(lambda: self._node_state(binaries["sinfo"]) == "idle", deadline,
                           "the node to be idle")  # fmt: skip
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - started

    def _config(self) -> str:
        d = self.dir
        return "\n".join(
            [
                f"ClusterName={CLUSTER_NAME}",
                f"SlurmctldHost={socket.gethostname().split('.')[0]}(127.0.0.1)",
                "SlurmUser=root",
                "SlurmdUser=root",
                f"SlurmctldPort={self.ports['slurmctld']}",
                f"SlurmdPort={self.ports['slurmd']}",
                "AuthType=auth/munge",
                "CredType=cred/munge",
                f"AuthInfo=socket={self.munge_socket}",
                f"StateSaveLocation={d / 'state'}",
                f"SlurmdSpoolDir={self.short / 'spool' / 'slurmd-%n'}",
                f"SlurmctldPidFile={d / 'slurmctld.pid'}",
                f"SlurmdPidFile={d / 'slurmd-%n.pid'}",
                f"SlurmctldLogFile={d / 'log' / 'slurmctld.log'}",
                f"SlurmdLogFile={d / 'log' / 'slurmd-%n.log'}",
                "SlurmctldDebug=info",
                "SlurmdDebug=info",
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_Core",
                "JobAcctGatherType=jobacct_gather/none",
                "AccountingStorageType=accounting_storage/none",
                "JobCompType=jobcomp/none",
                "MpiDefault=none",
                "SwitchType=switch/none",
                "MailProg=/bin/true",
                "ReturnToService=2",
                # finished jobs stay in `scontrol show job` for the life of the test cluster
                "MinJobAge=3600",
                # a cancelled job gets SIGKILL 1 s after SIGTERM (default 30 s)
                "KillWait=1",
                "InactiveLimit=0",
                # a loaded test machine (the rest of the suite beside it) can take more than
                # the defaults (10 s) to start a batch step; SLURM then requeues the job
                # held ("launch failed requeued held") and it never runs
                "BatchStartTimeout=120",
                "MessageTimeout=60",
                "SchedulerParameters=sched_interval=1",
                f"NodeName=localhost NodeAddr=127.0.0.1 CPUs={self.cpus} State=UNKNOWN",
                "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
                "",
            ]
        )

    def _launch(self, name: str, command: list[str]) -> None:
        log = self.dir / "log" / f"{name}.out"
        with log.open("ab") as out:
            self._processes[name] = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.dir,
                env={**clean_environ(), **self.env},
                start_new_session=True,
            )

    def _wait_for(self, ready: object, deadline: float, what: str) -> None:
        assert callable(ready)
        while time.monotonic() < deadline:
            for name, process in self._processes.items():
                if process.poll() is not None:
                    raise SlurmClusterUnavailable(
                        f"{name} exited with {process.returncode} while waiting for {what}:\n"
                        + self._logs_tail()
                    )
            if ready():
                return
            time.sleep(0.05)
        raise SlurmClusterUnavailable(f"timed out waiting for {what}:\n{self._logs_tail()}")

    def _node_state(self, sinfo: str) -> str:
        result = subprocess.run(
            [sinfo, "-h", "-N", "-o", "%T"],
            env={**clean_environ(), **self.env},
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return result.stdout.strip() if result.returncode == 0 else ""

    def reset(self, timeout: float = 60.0) -> None:
        """Between tests: cancel every job left on the cluster and wait until the node is
        idle again (resuming it if SLURM drained it, e.g. after a slow kill under load)."""
        env = {**clean_environ(), **self.env}
        subprocess.run([_bin("scancel"), "--user", "root"], env=env, capture_output=True,
                       timeout=30, check=False)  # fmt: skip
        sinfo = _bin("sinfo")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self._node_state(sinfo)
            if state == "idle":
                return
            if state.startswith(("drain", "down")):
                subprocess.run([_bin("scontrol"), "update", "nodename=localhost",
                                "state=resume"], env=env, capture_output=True, timeout=30,
                               check=False)  # fmt: skip
            time.sleep(0.2)
        raise SlurmClusterUnavailable(f"the node did not become idle:\n{self.diagnose()}")

    def diagnose(self) -> str:
        """The node's and the jobs' states and the daemons' logs, for a failing test."""
        env = {**clean_environ(), **self.env}
        parts = []
        for command in (["sinfo", "-N", "-l"], ["squeue", "-l"], ["scontrol", "show", "node"]):
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                done = subprocess.run(
                    [_bin(command[0]), *command[1:]],
                    env=env, capture_output=True, text=True, timeout=10, check=False,
                )  # fmt: skip
                parts.append(f"$ {' '.join(command)}\n{done.stdout}{done.stderr}")
        return "\n".join(parts) + "\n" + self._logs_tail()

    def _logs_tail(self) -> str:
        parts = []
        for log in sorted((self.dir / "log").glob("*")):
            with contextlib.suppress(OSError):
                text = log.read_text(errors="replace").strip()
                if text:
                    parts.append(f"--- {log.name}\n{text[-1500:]}")
        return "\n".join(parts)

    # -- stop ------------------------------------------------------------------------

    def stop(self) -> None:
        """Kill the daemons' process groups and every process that ran in this cluster
        (job steps run in slurmstepd's own sessions), then wait until they are gone."""
        processes, self._processes = self._processes, {}
        for process in processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        for process in processes.values():
            process.wait(timeout=10)
        deadline = time.monotonic() + 10
        while leftovers := self.leftover_pids():
            if time.monotonic() > deadline:
                raise RuntimeError(f"processes of the SLURM test cluster survived: {leftovers}")
            for pid in leftovers:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
        shutil.rmtree(self.short, ignore_errors=True)

    def leftover_pids(self) -> list[int]:
        """Processes started for this cluster: its daemons, slurmstepd and the jobs
        (found by the SLURM_CONF in their environment or this folder on their command
        line)."""
        marker = str(self.dir).encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
                environ = (entry / "environ").read_bytes()
                if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
            except (OSError, IndexError):
                continue
            if marker in cmdline or marker in environ:
                found.append(int(entry.name))
        return found
