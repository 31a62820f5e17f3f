"""The one exception hierarchy of hposdk.

Every error a user can trigger by configuration is a subclass of :class:`HposdkError`, and the
value errors are also ``ValueError`` so that ``except ValueError`` keeps working.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BackendNotFoundError",
    "BindingError",
    "ConfigError",
    "HposdkError",
    "MissingExtraError",
    "NoCompletedTrialsError",
    "NoSingleBestError",
    "ObjectiveError",
    "SpaceError",
    "StudyRecordError",
    "UnsupportedError",
]


class HposdkError(Exception):
    """Base class of every error raised by hposdk."""


class SpaceError(HposdkError, ValueError):
    """A search space or parameter is invalid (raised at construction).

    ``details`` holds (location, message, type, input) per problem, so that a study file's
    error can point at the exact field and line even through nested models.
    """

    def __init__(self, message: str, details: list[tuple[Any, ...]] | None = None) -> None:
        super().__init__(message)
        self.details = details or []


class UnsupportedError(HposdkError, ValueError):
    """A backend cannot express what the study asks for (a parameter, optimizer, pruner...).

    Raised before any trial runs: hposdk refuses instead of silently degrading.
    """


class ConfigError(HposdkError, ValueError):
    """A study option is invalid: unknown name, wrong type, missing value."""


class BackendNotFoundError(ConfigError):
    """No backend is registered under the requested name."""


class BindingError(ConfigError):
    """A search-space key does not reach the objective (or the objective needs one that is missing)."""


class MissingExtraError(HposdkError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


class ObjectiveError(HposdkError):
    """The objective's output cannot be used (for example the study metric is missing)."""


class NoCompletedTrialsError(HposdkError):
    """A result was asked for the best trial but no trial completed."""


class NoSingleBestError(HposdkError, ValueError):
    """A multi-objective result was asked for its single best trial (use the Pareto front)."""


class StudyRecordError(HposdkError):
    """The durable study record is unreadable or belongs to a different study."""
