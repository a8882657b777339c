"""The one error type users see.

A `CaviarError` is a problem the user can fix (a bad spec, a bad data file, a sweep that is
already running). The CLI prints its message as one line and exits with code 2; anything else
is a bug and keeps its traceback.
"""


class CaviarError(Exception):
    """A user-fixable problem; the message names the file, the field and what was expected."""


class DataError(CaviarError):
    """A data source that cannot be built or read."""
