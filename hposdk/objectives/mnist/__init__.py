"""A ready objective: a small PyTorch CNN trained on MNIST, for studies, demos and backend tests.

Install with ``pip install hposdk[mnist]`` (torch, numpy, scikit-learn). Point it at the four
standard MNIST IDX files (each optionally ``.gz``) with the ``data_dir`` parameter or the
``HPOSDK_MNIST_DIR`` environment variable; with neither set it trains on scikit-learn's bundled
8x8 digits, so it runs anywhere without a download. Nothing is ever downloaded.

Use it as ``objective: hposdk.objectives.mnist:objective`` in a study file, or call it with a
:class:`~hposdk.trial.FixedTrial`::

    from hposdk.trial import FixedTrial
    from hposdk.objectives.mnist import objective

    metrics = objective(FixedTrial({"lr": 1e-2, "batch_size": 64, "optimizer": "adam",
                                    "dropout": 0.1, "hidden": 64, "epochs": 3}))

Importing this module does not import torch (a study can check its parameters cheaply); the
first trial does. It raises :class:`~hposdk.exceptions.MissingExtraError` at import when torch or
numpy is missing.
"""

from __future__ import annotations

import importlib.util
import logging

from ...exceptions import MissingExtraError


def _check_installed() -> None:
    # find_spec instead of an import: fail at import time with the install hint, without paying
    # for importing torch in processes that only validate a study.
    for module in ("torch", "numpy"):
        if importlib.util.find_spec(module) is None:
            raise MissingExtraError(
                f"Using the MNIST objective (hposdk.objectives.mnist), but the '{module}' package is not "
                "installed. Make sure to install hposdk using `pip install hposdk[mnist]`."
            )


_check_installed()

from ...trial import Trial  # noqa: E402 - after the dependency check, on purpose
from ...trial import objective as _declare  # noqa: E402
from ._data import ENV_VAR, IdxFormatError, describe_data, load_mnist_split, read_idx  # noqa: E402
from ._params import MnistParams  # noqa: E402

__all__ = [
    "ENV_VAR",
    "METRICS",
    "IdxFormatError",
    "MnistParams",
    "describe_data",
    "load_mnist_split",
    "objective",
    "read_idx",
]

logger = logging.getLogger("hposdk.objectives.mnist")

#: The metrics :func:`objective` returns (all numbers).
METRICS = ("val_loss", "val_acc", "train_loss", "epochs_trained")


@_declare(params=MnistParams, metrics=METRICS)
def objective(trial: Trial) -> dict[str, float]:
    """Train the small CNN with ``trial.params`` and return the final validation metrics.

    After every epoch it saves a checkpoint (model, optimizer and RNG states), then calls
    ``trial.report(epoch, val_loss=..., val_acc=..., train_loss=...)`` with the 0-based epoch
    index as the step (as in Optuna: ``n_warmup_steps=1`` spares the first epoch), then stops
    early if ``trial.should_prune()``. A trial that finds a checkpoint continues after its last
    epoch, and ends with the same metrics as an uninterrupted run. ``trial.budget``, when set, is
    the number of epochs (rounded), overriding ``epochs``. Same params (including ``seed``) give
    identical metrics on CPU.

    The validation set is a fixed sixth of the training files (the same for every trial and seed);
    the t10k test files are never used for model selection.

    Args:
        trial: its ``params`` must validate as :class:`MnistParams`.

    Returns:
        ``{"val_loss", "val_acc", "train_loss", "epochs_trained"}`` of the last epoch trained.

    Raises:
        pydantic.ValidationError: a parameter is unknown, missing or out of range.
        FileNotFoundError: the MNIST directory is set but lacks the training IDX files.
        IdxFormatError: an IDX file is malformed (the message names it).
        RuntimeError: ``device="cuda"`` but CUDA is not available.

    Example:
        >>> from hposdk.trial import FixedTrial
        >>> trial = FixedTrial({"lr": 1e-2, "batch_size": 32, "optimizer": "adam", "dropout": 0.0,
        ...                     "hidden": 16, "epochs": 2, "max_train_samples": 200})
        >>> metrics = objective(trial)
        >>> sorted(metrics), [r.step for r in trial.reports]
        (['epochs_trained', 'train_loss', 'val_acc', 'val_loss'], [0, 1])
    """
    params = MnistParams(**trial.params)
    from . import _train  # torch is imported here, by the first trial

    data = describe_data(params)
    logger.info(
        "MNIST trial %s: training on %s with %s", trial.number, data, params.model_dump(exclude_defaults=True)
    )
    return _train.train(trial, params)
