"""Exceptions raised by edgevl; the CLI prints them as one readable line and exits with their `exit_code`."""

from __future__ import annotations


class EdgevlError(Exception):
    """Base class of every error edgevl raises on bad input or configuration."""

    exit_code = 2


class ImageLoadError(EdgevlError):
    """An image file is missing, corrupt, truncated or in an unsupported format."""

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"cannot read image {source!r}: {reason}")


class CheckpointError(EdgevlError):
    """A checkpoint cannot be found, parsed, or does not match the model."""


class ConfigError(EdgevlError):
    """A model/data/training configuration is unknown or inconsistent."""


class DataError(EdgevlError):
    """A dataset sample or file is malformed (raised only when skipping is disabled)."""


class NoUsableInputError(DataError):
    """Every input of a command was bad (each one skipped and counted), so there is no result to give."""

    exit_code = 3


class FolderLockedError(EdgevlError):
    """Another live process is writing to the same output folder."""

    exit_code = 4
