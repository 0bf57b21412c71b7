"""Processes that end with their parent: `paraplan run` -> torchrun -> workers. torchrun starts each
worker in a session of its own, so signals sent to the launcher's process group do not reach the workers;
if the launcher or the agent is killed outright (SIGKILL, the OOM killer), the workers would run on as
orphans, writing into a run directory whose lock is gone. Linux's parent-death signal
(prctl(PR_SET_PDEATHSIG), prctl(2)) ends them with their parent instead."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

__all__ = ["die_with_parent"]

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
