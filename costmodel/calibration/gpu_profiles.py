"""Measured GPU profiles by name (`costmodel/data/gpu_profiles/<gpu>.json`) or file, the check that a
profile describes the cluster's GPU, and the catalog default (a shipped profile for the cluster's GPU).

A profile measured on one GPU prices that GPU's kernels only: using it for another is refused with the
GPU it was measured on, so a user never gets an H200's rates for an A100 by mistake."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from ..specs._base import is_file
from ..specs.limits import shown
from .profile_spec import CalibrationProfile, load_profile, profile_provenance

__all__ = ["PROFILES_DIR", "list_gpu_profiles", "load_gpu_profile", "check_profile_gpu", "default_gpu_profile",
           "profile_label"]

PROFILES_DIR = Path(__file__).resolve().parents[1] / "data" / "gpu_profiles"


def list_gpu_profiles(directory: Path | None = None) -> tuple[str, ...]:
    """Names of the shipped GPU profiles (file names without .json), sorted."""
    return tuple(sorted(p.stem for p in (directory or PROFILES_DIR).glob("*.json")))


def load_gpu_profile(name_or_path: str, *, directory: Path | None = None) -> CalibrationProfile:
    """A shipped profile by name, or a profile JSON file; ValueError naming the known ones otherwise."""
    if not isinstance(name_or_path, (str, Path)):
        raise ValueError(f"gpu profile: expected a name or a file, got {type(name_or_path).__name__}")
    path = Path(name_or_path)
    if path.suffix == ".json" or is_file(path):
        return load_profile(path)
    known = list_gpu_profiles(directory)
    if name_or_path not in known:
        names = ", ".join(known) if known else "none shipped yet"
        raise ValueError(f"gpu profile: unknown GPU profile {shown(name_or_path)}; known: {names} (or give a profile "
                         "file measured with `paraplan profile --device cuda --out FILE`)")
    return load_profile((directory or PROFILES_DIR) / f"{name_or_path}.json")


def check_profile_gpu(profile: Any, gpu_name: str) -> None:
    """ValueError when `profile` holds measured kernel rates of a GPU other than `gpu_name` (profiles
    carrying only fitted constants, or measured on an unnamed device, pass)."""
    measured = getattr(profile, "gemm", ()) or getattr(profile, "attention", ()) or getattr(profile, "mem_ops", ())
    if not measured or profile.gpu is None or profile.gpu == gpu_name:
        return
    raise ValueError(f"gpu profile: measured on {profile.device} (catalog GPU {profile.gpu}), but the cluster's GPU is "
                     f"{gpu_name}; use a profile measured on {gpu_name} (`paraplan profile --device cuda` there) "
                     "or leave the profile out")


@cache
def _default(gpu_name: str, directory: str) -> CalibrationProfile | None:
    path = Path(directory) / f"{gpu_name}.json"
    return load_profile(path) if path.is_file() else None


def default_gpu_profile(gpu_name: str, *, directory: Path | None = None) -> CalibrationProfile | None:
    """The shipped profile of catalog GPU `gpu_name`, or None (loaded once)."""
    return _default(gpu_name, str(directory or PROFILES_DIR))


def profile_label(profile: Any) -> str | None:
    """How an estimate names the profile it used: its provenance line, or None without one."""
    if profile is None or not (getattr(profile, "gemm", ()) or getattr(profile, "attention", ())
                               or getattr(profile, "mem_ops", ())):
        return None
    return profile_provenance(profile)
