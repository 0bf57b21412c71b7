"""A one-node Slurm cluster on 127.0.0.1 for tests: Debian's munged, slurmctld and slurmd in the foreground
as children of the test process, everything (key, sockets, state, logs, slurm.conf) in one private temp
folder, stopped by their pids. Clients find it through SLURM_CONF."""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["missing_slurm", "local_slurm"]

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "srun", "sinfo")
CONF = """ClusterName=paraplantest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser={user}
SlurmdUser={user}
AuthType=auth/munge
AuthInfo=socket={root}/munge.sock
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/pgid
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=test Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


def missing_slurm() -> str | None:
    """Why a local Slurm cluster cannot start here (the reason for a skip), or None."""
    absent = [d for d in DAEMONS if shutil.which(d) is None and not Path("/usr/sbin", d).exists()]
    if absent:
        return f"Slurm/munge not installed ({', '.join(absent)} missing; apt-get install slurm-wlm munge)"
    return None


def _exe(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(predicate, *, timeout_s: float, what: str, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    tails = "\n".join(f"--- {p.name}:\n{p.read_text()[-2000:]}" for p in logs if p.is_file())
    raise RuntimeError(f"local Slurm: {what} within {timeout_s:g} s\n{tails}")


@contextlib.contextmanager
def local_slurm() -> Iterator[dict[str, str]]:
    """Start munged, slurmctld and slurmd; yield the environment for Slurm's clients (SLURM_CONF); stop
    the three daemons by pid on exit."""
    root = Path(tempfile.mkdtemp(prefix="pps-"))  # short: munge's socket path must fit a sockaddr_un
    procs: list[subprocess.Popen[bytes]] = []
    try:
        (root / "state").mkdir()
        (root / "spool").mkdir()
        key = root / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        conf = root / "slurm.conf"
        conf.write_text(CONF.format(root=root, user=getpass.getuser(), ctld_port=_free_port(),
                                    slurmd_port=_free_port(), cpus=os.cpu_count() or 1))
        env = {**os.environ, "SLURM_CONF": str(conf)}
        logs = [root / "munged.log", root / "slurmctld.log", root / "slurmd.log"]
        with open(root / "daemons.out", "wb") as out:
            procs.append(subprocess.Popen(
                [_exe("munged"), "--foreground", "--force", f"--key-file={key}", f"--socket={root}/munge.sock",
                 f"--pid-file={root}/munged.pid", f"--log-file={root}/munged.log", f"--seed-file={root}/munged.seed"],
                stdout=out, stderr=subprocess.STDOUT))
            _wait(lambda: (root / "munge.sock").exists(), timeout_s=20, what="munged did not start", logs=logs)
            procs.append(subprocess.Popen([_exe("slurmctld"), "-D", "-f", str(conf)], env=env, stdout=out,
                                          stderr=subprocess.STDOUT))
            procs.append(subprocess.Popen([_exe("slurmd"), "-D", "-f", str(conf), "-N", "localhost"], env=env,
                                          stdout=out, stderr=subprocess.STDOUT))

        def idle() -> bool:
            done = subprocess.run([_exe("sinfo"), "-h", "-o", "%t"], env=env, capture_output=True, text=True,
                                  check=False)
            return done.returncode == 0 and done.stdout.strip() == "idle"

        _wait(idle, timeout_s=60, what="the node did not become idle", logs=logs + [root / "daemons.out"])
        yield {"SLURM_CONF": str(conf)}
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(procs):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        shutil.rmtree(root, ignore_errors=True)
