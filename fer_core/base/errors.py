"""Errors that carry a message a person can act on (what is wrong, and where).

Every failure that bad input can cause (a file, a name or a setting given by a user) is a
:class:`FerError`; the command line prints its message, the app shows it. Any other exception
is a bug and keeps its traceback.
"""


class FerError(Exception):
    """Base class of every error fer_core raises on bad input."""


class DataError(FerError, ValueError):
    """A dataset (CSV, folder or zip) that cannot be used, with the place of each problem."""


class ImageError(FerError, ValueError):
    """An image or video that cannot be read."""


class ModelNotFoundError(FerError, LookupError):
    """A model name or path that the store does not hold."""


class SettingError(FerError, ValueError):
    """A name or setting that is not allowed: a model name the store refuses, an architecture,
    detector or explanation that is not registered, or a training setting out of range."""
