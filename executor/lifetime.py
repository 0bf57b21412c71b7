"""Processes that end with their parent: `paraplan run` -> torchrun -> workers. torchrun starts each
worker in a session of its own, so signals sent to the launcher's process group do not reach the workers;
if the launcher or the agent is killed outright (SIGKILL, the OOM killer), the workers would run on as
orphans, writing into a run directory whose lock is gone. Linux's parent-death signal
(prctl(PR_SET_PDEATHSIG), prctl(2)) ends them with their parent instead."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections import deque
from typing import TextIO

__all__ = ["die_with_parent", "run_child"]

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send `sig` to this process when its parent exits (Linux; False elsewhere). Safe
    as a `subprocess.Popen(preexec_fn=...)`: the setting survives exec."""
    if not sys.platform.startswith("linux"):
        return False
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), sig)
    return True


def run_child(argv: list[str] | tuple[str, ...], *, stream: TextIO | None, log: TextIO | None = None,
              env: dict[str, str] | None = None, tail_lines: int = 400) -> tuple[int, str]:
    """Run `argv` (stdout and stderr merged) until it ends, copying each line to `stream` and `log` as it
    comes; (exit code, its last `tail_lines` lines). It ends with this process (`die_with_parent`), and
    when this process is interrupted (an exception, SIGTERM turned into SystemExit) it is terminated,
    then killed after 30 s, before the exception goes on."""
    tail: deque[str] = deque(maxlen=tail_lines)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, bufsize=1,
                            errors="replace", preexec_fn=die_with_parent)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            tail.append(line)
            for out in (log, stream):
                if out is not None:
                    out.write(line)
            if stream is not None:
                stream.flush()
        code = proc.wait()
    except BaseException:
        proc.terminate()  # torchrun forwards SIGTERM to its workers
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    return code, "".join(tail)
