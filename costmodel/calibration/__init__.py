"""Measured device profiles (`CalibrationProfile`), constants fitted or derived from them, the fit itself,
the measuring code (`calibration.profile`, torch) and validation against published runs (`calibration.published`)."""

from .profile_spec import CalibrationProfile, load_profile, save_profile

__all__ = ["CalibrationProfile", "load_profile", "save_profile"]
