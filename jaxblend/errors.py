"""Exception types. Every error a user can cause derives from :class:`JaxblendError`.

The CLI prints ``str(error)`` as one line and exits with status 2, so messages say what is
wrong and how to fix it, in one sentence.
"""

from __future__ import annotations


class JaxblendError(Exception):
    """Base class of all errors caused by bad input, files or settings."""


class InputError(JaxblendError, ValueError):
    """An image, mask, placement or setting is invalid."""


class WeightError(JaxblendError, ValueError):
    """A weight file is missing, corrupt, or does not fit the architecture."""


class OutputError(JaxblendError, OSError):
    """An output cannot be written: a folder in the way, no permission, a full disk."""


class RunError(JaxblendError, RuntimeError):
    """A job could not be computed (out of memory, a device failure, an internal error)."""
