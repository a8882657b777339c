"""Errors of the driver side; all are `CaviarError`s, printed as one line with exit code 2."""

from caviar.models.errors import CaviarError, DataError


class SpecError(CaviarError):
    """A spec file that cannot be loaded or does not validate."""


class SweepBusy(CaviarError):
    """Another driver holds this sweep's lock."""


__all__ = ["CaviarError", "DataError", "SpecError", "SweepBusy"]
