"""Errors that carry a message a person can act on (what is wrong, and where)."""


class FerError(Exception):
    """Base class of every error fer_core raises on bad input."""


class DataError(FerError, ValueError):
    """A dataset (CSV, folder or zip) that cannot be used, with the place of each problem."""


class ImageError(FerError, ValueError):
    """An image or video that cannot be read."""


class ModelNotFoundError(FerError, LookupError):
    """A model name or path that the store does not hold."""
