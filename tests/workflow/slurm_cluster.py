"""A throw-away single-node Slurm cluster for the workflow tests (Debian packages, no accounting).

The cluster runs directly on the test machine: munged, slurmctld and slurmd are started in the
foreground as child processes, so they are stopped by PID and nothing else on the machine is
touched. Its config must live at Slurm's standard path (/etc/slurm/slurm.conf) because the
SLURM executor plugin's job-step wrapper does not pass SLURM_CONF on to `srun`. A config that
this module did not write is never overwritten: the cluster is reported unavailable instead.

Placeholder GPUs (plain files declared in gres.conf, AutoDetect=off) let Slurm accept and
schedule `--gpus=N` / `--gres=gpu:N` requests; they test submission, not CUDA.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
CONF_DIR = Path("/etc/slurm")
SLURM_CONF = CONF_DIR / "slurm.conf"
GRES_CONF = CONF_DIR / "gres.conf"
# First line of every file this module writes; only files carrying it may be replaced or removed.
MARKER = "# diracbench test cluster: written by tests/workflow/slurm_cluster.py; safe to delete"
# PIDs of the daemons of a running test cluster, so a run killed before its cleanup
# (SIGKILL, power loss of the CI job) can be cleaned up by the next one.
PID_FILE = Path(tempfile.gettempdir()) / "diracbench-slurm-test.pids.json"
# Held (flock) for the cluster's whole life: concurrent test runs on one machine take turns,
# and the kernel drops the lock when its holder dies, which is what makes PID_FILE stale.
LOCK_FILE = Path(tempfile.gettempdir()) / "diracbench-slurm-test.lock"
LOCK_TIMEOUT_S = float(os.environ.get("DIRACBENCH_SLURM_LOCK_TIMEOUT", "1800"))
MUNGE_SOCKET = Path("/run/munge/munge.socket.2")
PARTITION = "debug"
PLACEHOLDER_GPUS = 2
START_TIMEOUT_S = 60.0


class SlurmUnavailable(Exception):
    """This machine cannot host the test cluster; the message says why."""


def _run(cmd: list[str], timeout: float = 60.0, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)


def missing_packages() -> list[str]:
    missing = []
    for pkg in PACKAGES:
        try:
            out = _run(["dpkg-query", "-W", "-f=${Status}", pkg])
        except FileNotFoundError:
            raise SlurmUnavailable("no dpkg on this machine; the test cluster needs Debian/Ubuntu packages") from None
        if out.returncode != 0 or "install ok installed" not in out.stdout:
            missing.append(pkg)
    return missing


def install_packages() -> float:
    """Install the Slurm/munge packages that are missing; returns the seconds spent (0 if none)."""
    missing = missing_packages()
    if not missing:
        return 0.0
    if os.geteuid() != 0:
        raise SlurmUnavailable(f"packages {' '.join(missing)} are missing and installing them needs root")
    if shutil.which("apt-get") is None:
        raise SlurmUnavailable(f"packages {' '.join(missing)} are missing and there is no apt-get")
    start = time.monotonic()
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (
        ["apt-get", "update"],
        ["apt-get", "install", "-y", "--no-install-recommends", *missing],
    ):
        out = _run(cmd, timeout=900, env=env)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    still = missing_packages()
    if still:
        raise RuntimeError(f"apt-get reported success but {' '.join(still)} are still not installed")
    return time.monotonic() - start


def _ours(path: Path) -> bool:
    try:
        with path.open() as fh:
            return fh.readline().rstrip("\n") == MARKER
    except FileNotFoundError:
        return False


def _process_name(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def _pids_named(name: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _process_name(int(entry.name)) == name:
            pids.append(int(entry.name))
    return pids


def _terminate(pid: int, name: str, timeout: float = 15.0) -> None:
    """SIGTERM the process `pid` if it is still `name`, then SIGKILL after `timeout`."""
    if _process_name(pid) != name:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _process_name(pid) != name:
            return
        time.sleep(0.2)
    if _process_name(pid) == name:
        os.kill(pid, signal.SIGKILL)


@contextmanager
def exclusive_lock(timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    with LOCK_FILE.open("a") as fh:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise SlurmUnavailable(f"another test run held {LOCK_FILE} for over {timeout:.0f} s") from None
                time.sleep(1.0)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def clean_up_stale_cluster() -> None:
    """Stop daemons left by an earlier test run that died before its own cleanup.

    Only called while holding LOCK_FILE, so a PID_FILE found here belongs to a dead run.
    """
    try:
        stale = json.loads(PID_FILE.read_text())
    except (OSError, ValueError):
        return
    for name, pid in stale.get("pids", {}).items():
        _terminate(int(pid), name)
    if stale.get("root"):
        shutil.rmtree(stale["root"], ignore_errors=True)
    for path in (SLURM_CONF, GRES_CONF):
        if _ours(path):
            path.unlink()
    PID_FILE.unlink(missing_ok=True)


def check_not_foreign() -> None:
    """Refuse to run next to a Slurm installation this module did not set up."""
    for path in (SLURM_CONF, GRES_CONF):
        if path.exists() and not _ours(path):
            raise SlurmUnavailable(
                f"Slurm is already configured on this machine ({path} was not written by this test); "
                "not overwriting it"
            )
    for name in ("slurmctld", "slurmd", "slurmdbd"):
        pids = _pids_named(name)
        if pids:
            raise SlurmUnavailable(f"a {name} not started by this test is running (pid {pids[0]}); not starting a second cluster")


def munge_works() -> bool:
    if shutil.which("munge") is None or shutil.which("unmunge") is None:
        return False
    cred = _run(["munge", "-n"], timeout=10)
    if cred.returncode != 0:
        return False
    return _run(["unmunge"], input=cred.stdout, timeout=10).returncode == 0


def _mem_total_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("no MemTotal in /proc/meminfo")


@dataclass
class SlurmCluster:
    """One node (this machine), one partition, placeholder GPUs; state and logs under `root`."""

    root: Path
    node: str = field(default_factory=lambda: socket.gethostname().split(".")[0])
    cpus: int = field(default_factory=lambda: len(os.sched_getaffinity(0)))  # what `nproc` says
    memory_mb: int = field(default_factory=_mem_total_mb)
    partition: str = PARTITION
    gpus: int = PLACEHOLDER_GPUS
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    install_seconds: float = 0.0
    start_seconds: float = 0.0

    @property
    def log_files(self) -> dict[str, Path]:
        return {name: self.root / f"{name}.log" for name in ("munged", "slurmctld", "slurmd")}

    def slurm_conf(self) -> str:
        r = self.root
        return f"""{MARKER}
ClusterName=diracbench-test
# Addresses given explicitly: a CI container's hostname need not resolve.
SlurmctldHost={self.node}(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
StateSaveLocation={r}/slurmctld-state
SlurmdSpoolDir={r}/slurmd-spool
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
# No cgroups in a CI container: plain process tracking, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# No slurmdbd: the executor plugin polls job states with squeue, which needs finished jobs
# to stay visible for a while (MinJobAge seconds).
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=600
ReturnToService=2
GresTypes=gpu
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory_mb} Gres=gpu:{self.gpus} State=UNKNOWN
PartitionName={self.partition} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
"""

    def gres_conf(self) -> str:
        return f"""{MARKER}
# Placeholder GPU "devices" (plain files): Slurm schedules --gpus/--gres requests on them.
AutoDetect=off
NodeName={self.node} Name=gpu File={self.root}/gpu[0-{self.gpus - 1}]
"""

    def _write_config(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)  # slurmctld runs as the slurm user and must reach its state dir
        for sub in ("slurmctld-state", "slurmd-spool"):
            (self.root / sub).mkdir(exist_ok=True)
        shutil.chown(self.root / "slurmctld-state", user="slurm", group="slurm")
        shutil.chown(self.root, user="slurm", group="slurm")
        for i in range(self.gpus):
            (self.root / f"gpu{i}").touch()
        CONF_DIR.mkdir(parents=True, exist_ok=True)
        for path, text in ((SLURM_CONF, self.slurm_conf()), (GRES_CONF, self.gres_conf())):
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(text)
            os.chmod(tmp, 0o644)
            tmp.replace(path)

    def _spawn(self, name: str, cmd: list[str], **kwargs) -> None:
        # Daemons run in the foreground (-D / --foreground) and log to stderr, captured here.
        log = self.log_files[name].open("ab")
        # A new session keeps a Ctrl-C in the test's terminal from reaching the daemons before
        # the cleanup does; cleanup stops them by PID.
        self.processes[name] = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, **kwargs
        )
        log.close()
        PID_FILE.write_text(json.dumps({"root": str(self.root), "pids": {n: p.pid for n, p in self.processes.items()}}))

    def _wait(self, what: str, ready, daemon: str | None = None) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if ready():
                return
            if daemon is not None and self.processes[daemon].poll() is not None:
                raise RuntimeError(f"{daemon} exited with {self.processes[daemon].returncode} while waiting for {what}\n{self.diagnostics()}")
            time.sleep(0.25)
        raise RuntimeError(f"timed out after {START_TIMEOUT_S:.0f} s waiting for {what}\n{self.diagnostics()}")

    def _start_munged(self) -> None:
        if munge_works():
            return  # a working munged (the system's) is fine to share: it only signs credentials
        run_dir = MUNGE_SOCKET.parent
        run_dir.mkdir(parents=True, exist_ok=True)
        shutil.chown(run_dir, user="munge", group="munge")
        os.chmod(run_dir, 0o755)
        # --force: a socket left by a munged that died is stale (munge_works() just failed on it).
        self._spawn("munged", ["munged", "--foreground", "--force"], user="munge", group="munge")
        self._wait("munged to answer", munge_works, "munged")

    def node_state(self) -> str:
        out = _run(["sinfo", "--noheader", "--Node", "--nodes", self.node, "--format=%T"], timeout=10)
        return out.stdout.strip() if out.returncode == 0 else ""

    def start(self) -> None:
        t0 = time.monotonic()
        self._write_config()
        self._start_munged()
        self._spawn("slurmctld", ["slurmctld", "-D", "-i"])
        self._wait("slurmctld to answer", lambda: "UP" in _run(["scontrol", "ping"], timeout=10).stdout, "slurmctld")
        self._spawn("slurmd", ["slurmd", "-D", "-N", self.node])
        self._wait(f"node {self.node} to become idle", lambda: self.node_state() == "idle", "slurmd")
        self.start_seconds = time.monotonic() - t0

    def stop(self) -> None:
        if "slurmctld" in self.processes and self.processes["slurmctld"].poll() is None:
            # Jobs still queued or running after a failed test would otherwise outlive the cluster.
            _run(["scancel", f"--partition={self.partition}"], timeout=20)
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.processes.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for path in (SLURM_CONF, GRES_CONF):
            if _ours(path):
                path.unlink()
        PID_FILE.unlink(missing_ok=True)

    def diagnostics(self, lines: int = 40) -> str:
        parts = []
        for name, path in self.log_files.items():
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {path} (last {len(tail)} lines)\n" + "\n".join(tail))
        return "\n".join(parts)


@contextmanager
def single_node_cluster(root: Path) -> Iterator[SlurmCluster]:
    """Install (if needed), configure and start a one-node cluster; always stop it afterwards.

    Raises SlurmUnavailable when the machine cannot host it (not root, no apt, or a Slurm that
    this module did not set up is configured or running).
    """
    if os.geteuid() != 0:
        raise SlurmUnavailable("the test cluster must run as root (it writes /etc/slurm and starts daemons)")
    with exclusive_lock():
        install_seconds = install_packages()
        clean_up_stale_cluster()
        check_not_foreign()
        cluster = SlurmCluster(root=root, install_seconds=install_seconds)
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.stop()
