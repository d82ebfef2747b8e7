"""The prepared-dataset directory both wings write: its error type."""

from __future__ import annotations


class DatasetError(ValueError):
    """A prepared dataset or a corpus that is missing or inconsistent."""
