"""The profiler (`paraplan profile`): measures GEMMs, attention, memory bandwidth and collectives on
this machine with torch and returns a `CalibrationProfile`. The only part of costmodel that imports
torch; import it explicitly (`from costmodel.calibration.profile import run_profile`)."""

from .runner import DEFAULT_SIZES_BYTES, ProfileConfig, catalog_gpu_name, run_profile

__all__ = ["DEFAULT_SIZES_BYTES", "ProfileConfig", "catalog_gpu_name", "run_profile"]
