"""Errors the annotators raise, each with a message a person can act on.

`AnnotatorInputError` is a `ValueError`, so the UI shows its message as a `gr.Error` and the
API returns it verbatim. Weight problems are `AnnotatorError`s too, and also `ValueError`s for
the same reason: the user (or whoever set the sources) is the one who can fix them.
"""

from __future__ import annotations


class AnnotatorError(Exception):
    """Base class of every error raised on purpose by `annotators`."""


class AnnotatorInputError(AnnotatorError, ValueError):
    """Bad input: unknown annotator, empty or oversized image, malformed clicks or keypoints."""


class MissingWeightsError(AnnotatorError, FileNotFoundError, ValueError):
    """The weights an annotator needs are neither local nor downloadable (offline, no cache)."""


class WeightsFormatError(AnnotatorError, ValueError):
    """A weights file exists but is not what the annotator expects, or is unsafe to load."""
