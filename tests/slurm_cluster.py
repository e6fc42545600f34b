"""A throwaway one-node Slurm cluster (Debian's slurm-wlm + munge) in a temp dir, for tests and benches.

No systemd, no cgroups, all as root: munged (own key, socket and log under `root`), slurmctld and slurmd
run in the foreground as children of this process, with proctrack/linuxproc and task/none so nothing
needs a cgroup hierarchy, on free ports so a second cluster on the same host does not collide. Client
commands (sbatch, squeue, srun) find it through SLURM_CONF, which `start` returns in the env to use.

    python tests/slurm_cluster.py   # start, smoke-check (srun hostname, an sbatch array), stop
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "srun")
PARTITION = "debug"


class ClusterError(RuntimeError):
    """The cluster did not come up; the message carries the daemon logs' tails."""


def missing() -> list[str]:
    """The Slurm/munge binaries not on PATH (apt-get install slurmctld slurmd slurm-client munge)."""
    return [b for b in BINARIES if shutil.which(b) is None]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _conf(root: Path, host: str, cpus: int, mem_mb: int) -> str:
    return f"""ClusterName=gptrepro
SlurmctldHost={host}
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge.socket
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/builtin
MpiDefault=none
ReturnToService=2
MailProg=/bin/true
SlurmdParameters=config_overrides
NodeName={host} CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN
PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def _die_with_parent() -> None:
    """In the daemon, before exec: SIGTERM when this process dies, even by SIGKILL, so none is orphaned."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG (linux/prctl.h)


def _tail(path: Path, n: int = 15) -> str:
    lines = path.read_text(errors="replace").splitlines()[-n:] if path.exists() else ["(no log)"]
    return f"--- {path.name}\n" + "\n".join(lines)


@contextlib.contextmanager
def start(root: str | Path, timeout_s: float = 60.0):
    """Start munged, slurmctld and slurmd under `root` (a fresh dir); yield the env for the client commands.

    Raises ClusterError (with log tails) when the node is not idle in `sinfo` within `timeout_s`.
    Everything started here is stopped on exit, by pid; nothing else is touched.
    """
    root = Path(root).resolve()
    for d in ("state", "spool", "munge"):
        (root / d).mkdir(parents=True, exist_ok=True)
    host = socket.gethostname().split(".")[0]
    mem_mb = min(4096, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20)
    (root / "slurm.conf").write_text(_conf(root, host, os.cpu_count() or 1, mem_mb))
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    env = {**os.environ, "SLURM_CONF": str(root / "slurm.conf")}
    procs = []
    quiet = {"env": env, "stdout": subprocess.DEVNULL, "stderr": subprocess.STDOUT, "preexec_fn": _die_with_parent}
    try:
        # --force: without it munged exits on a private temp dir: "Socket is inaccessible: execute
        # permissions for all required on <dir>" (mkdtemp makes 0700 dirs; pytest's tmp_path too)
        procs.append(subprocess.Popen(
            ["munged", "-F", "--force", f"--key-file={key}", f"--socket={root}/munge.socket",
             f"--pid-file={root}/munge/munged.pid", f"--log-file={root}/munge/munged.log",
             f"--seed-file={root}/munge/munged.seed"], **quiet))
        procs.append(subprocess.Popen(["slurmctld", "-D", "-i"], **quiet))
        procs.append(subprocess.Popen(["slurmd", "-D"], **quiet))
        deadline = time.monotonic() + timeout_s
        state, dead = "", []
        while time.monotonic() < deadline:
            dead = [p.args[0] for p in procs if p.poll() is not None]
            if dead:
                break
            out = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env=env, capture_output=True, text=True)
            state = out.stdout.strip() or out.stderr.strip()
            if state == "idle":
                yield env
                return
            time.sleep(0.5)
        logs = "\n".join(_tail(p) for p in (root / "munge" / "munged.log", root / "slurmctld.log", root / "slurmd.log"))
        raise ClusterError(f"slurm did not come up in {timeout_s:.0f}s (exited: {dead or 'none'}; "
                           f"sinfo: {state!r}) under {root}\n{logs}")
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
        for p in reversed(procs):
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def smoke(env: dict, root: Path) -> None:
    """`srun hostname`, then a 2-task sbatch array whose tasks each write a file; raise if either fails."""
    subprocess.run(["srun", "-N1", "-n1", "hostname"], env=env, check=True, timeout=60)
    script = root / "array.sh"
    script.write_text(f"#!/bin/bash\necho task $SLURM_ARRAY_TASK_ID > {root}/array_$SLURM_ARRAY_TASK_ID.txt\n")
    subprocess.run(["sbatch", "--wait", "--array=0-1", f"--output={root}/%A_%a.out", str(script)],
                   env=env, check=True, timeout=120)
    for i in range(2):
        assert (root / f"array_{i}.txt").read_text() == f"task {i}\n"


if __name__ == "__main__":
    if missing():
        sys.exit(f"missing {missing()}: apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge")
    with tempfile.TemporaryDirectory(prefix="slurm-") as tmp:
        t0 = time.monotonic()
        with start(tmp) as cluster_env:
            print(f"cluster up in {time.monotonic() - t0:.1f}s")
            smoke(cluster_env, Path(tmp))
            print(f"srun + sbatch array ok after {time.monotonic() - t0:.1f}s")
