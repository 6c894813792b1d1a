"""The one exception type users see.

Every problem a user can fix (a bad file, a wrong layout, a missing checkpoint) is raised as a
``CaptionerError`` whose message is a single line naming the file and what to do. The CLI prints
that line and no traceback; library users can catch the one type.
"""

from __future__ import annotations


class CaptionerError(Exception):
    """A user-fixable problem, described in one line."""


class BadImageError(CaptionerError):
    """An image file that cannot be read as a picture."""


class DatasetFormatError(CaptionerError):
    """A dataset or annotation file in a layout we cannot read."""


class CheckpointError(CaptionerError):
    """A run directory or checkpoint that is missing, incomplete or does not match its config."""


class ConfigError(CaptionerError):
    """A configuration with unknown fields, wrong types or impossible values."""
