"""hposdk: one search space, one Study API, any hyperparameter-optimisation engine.

Example:
    >>> from hposdk import Study, SearchSpace, Uniform
    >>> space = SearchSpace({"x": Uniform(-1.0, 1.0)})

Only the public surface lives here; backends are imported lazily when a study names them.
"""

from ._goals import Composite, Term
from ._version import __version__
from .backends._base import Budget
from .exceptions import (
    BackendNotFoundError,
    BindingError,
    ConfigError,
    HposdkError,
    MissingExtraError,
    NoCompletedTrialsError,
    NoSingleBestError,
    ObjectiveError,
    SpaceError,
    StudyRecordError,
    UnsupportedError,
)
from .result import StudyResult, TrialResult, TrialState
from .spaces import Discrete, Integer, LogUniform, SearchSpace, Uniform
from .study import Study, StudyConfig, load_study
from .trial import FixedTrial, Trial, TrialPruned, objective

__all__ = [
    "BackendNotFoundError",
    "BindingError",
    "Budget",
    "Composite",
    "ConfigError",
    "Discrete",
    "FixedTrial",
    "HposdkError",
    "Integer",
    "LogUniform",
    "MissingExtraError",
    "NoCompletedTrialsError",
    "NoSingleBestError",
    "ObjectiveError",
    "SearchSpace",
    "SpaceError",
    "Study",
    "StudyConfig",
    "StudyRecordError",
    "StudyResult",
    "Term",
    "Trial",
    "TrialPruned",
    "TrialResult",
    "TrialState",
    "Uniform",
    "UnsupportedError",
    "__version__",
    "load_study",
    "objective",
]
