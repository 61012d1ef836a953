"""One exception family for everything emolens raises on purpose.

The CLI turns any :class:`EmolensError` into one line on stderr and exit code 2;
anything else escaping to the user is a bug.
"""

from __future__ import annotations


class EmolensError(Exception):
    """Base class of every error emolens raises deliberately."""


class ModelLoadError(EmolensError):
    """A model spec could not be resolved or loaded."""


class ArchitectureError(EmolensError):
    """The model's decoder layers (or another needed module) could not be found."""


class LayerError(EmolensError):
    """A requested layer index or fraction is out of range or malformed."""


class CorpusError(EmolensError):
    """A corpus file or directory is missing, malformed or inconsistent."""


class VectorFileError(EmolensError):
    """A vector file is missing, malformed, or belongs to a different model."""


class SteeringError(EmolensError):
    """A steering or monitoring request is malformed (unknown emotion, zero norm, bad span)."""


class FileWriteError(EmolensError):
    """A file cannot be written where asked: not a regular file, a symlink, or an OS error."""
