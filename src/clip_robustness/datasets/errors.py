"""Errors of the datasets stage. Each message names the file, key, dataset, URL or image at fault and
says what to do; :class:`DatasetError` is their common base so a rule script can catch them as one."""

from __future__ import annotations


class DatasetError(Exception):
    """Base class of every error raised by :mod:`clip_robustness.datasets`."""


class RegistryError(DatasetError):
    """The dataset registry file is malformed (names the file and the key)."""


class UnknownDatasetError(RegistryError, KeyError):
    """A dataset id (or archive name) is not in the registry (names it and the known ones)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class DownloadError(DatasetError):
    """An archive could not be fetched after the allowed retries (names the dataset, archive and URL)."""


class ChecksumMismatchError(DownloadError):
    """An archive's bytes do not match the pinned checksum; the file was moved aside, never used."""


class MissingUserArchiveError(DatasetError):
    """An archive the pipeline must never fetch itself (ImageNet val) is not where it was expected."""


class ExtractionError(DatasetError):
    """An archive could not be extracted (truncated, corrupt, or unsafe member paths)."""


class UnsafeArchiveError(ExtractionError):
    """An archive member would be written outside its folder (path traversal, absolute path, link, device)."""


class ManifestError(DatasetError):
    """A dataset folder does not have the layout its registry entry says (names folder and layout)."""


class CorruptImageError(ManifestError):
    """One or more images inside a dataset cannot be read (names them; see ``skip_corrupt_images``)."""
