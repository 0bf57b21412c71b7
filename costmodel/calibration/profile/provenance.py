"""Where a profile was measured: the CUDA version torch was built with and the GPU driver (nvidia-smi)."""

from __future__ import annotations

import shutil
import subprocess

import torch

__all__ = ["cuda_version", "driver_version"]


def cuda_version(cuda: bool) -> str | None:
    """`torch.version.cuda` when measuring on a GPU, else None."""
    return torch.version.cuda if cuda else None


def driver_version(cuda: bool) -> str | None:
    """The NVIDIA driver version reported by `nvidia-smi --query-gpu=driver_version` (None on CPU, or
    when nvidia-smi is absent or fails)."""
    exe = shutil.which("nvidia-smi") if cuda else None
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    return lines[0] if lines else None
