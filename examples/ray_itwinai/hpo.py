"""The itwinai Ray Tune HPO tutorial, written with hposdk.

The tutorial's ``hpo.py`` builds a Ray Tune search space, a ``run_trial(config, data)`` that parses
the pipeline's ``config.yaml`` with ``override_keys`` from Ray's config, a ``TuneConfig``, a
``RunConfig``, resources, ``tune.with_parameters`` and a ``Tuner``; the trainer calls
``train.report({"loss": ...})`` every epoch. Here:

* the search space, optimizer, scheduler (ASHA), trial count, concurrency and resources live in
  ``study.yaml`` -- the same file runs on the local backend (``--backend local``) or on Ray;
* :func:`objective` is the tutorial's ``run_trial``: it reads ``config.yaml``, overrides the
  searched keys, and trains, reporting the validation loss after every epoch through
  ``trial.report`` (hposdk's MNIST trainer does, so ASHA can stop poor trials early);
* a search-space key that is not a key of the trainer's configuration (the tutorial tunes
  ``learning_rate`` while its trainer reads ``optim_lr``...) is refused before any training.

Run it from this directory::

    python hpo.py                        # a local Ray runtime on this machine
    hposdk slurm study.yaml --nodes 2 --cpus-per-node 4 -o slurm_hpo.sh   # a Slurm cluster
    sbatch slurm_hpo.sh
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict

import hposdk
from hposdk.trial import Trial

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "config.yaml"
PIPELINE = "training_pipeline"


def load_trainer_config(path: Path = CONFIG, override_keys: dict[str, Any] | None = None) -> dict[str, Any]:
    """The trainer section of the pipeline configuration, with ``override_keys`` applied.

    Raises:
        KeyError: an override names a key the trainer does not have (it would be silently ignored).
    """
    with open(path) as fh:
        trainer = dict(yaml.safe_load(fh)[PIPELINE]["trainer"])
    for key, value in (override_keys or {}).items():
        if key not in trainer:
            raise KeyError(f"{key!r} is not a key of the trainer in {path} ({', '.join(trainer)})")
        trainer[key] = value
    return trainer


class TrainerKeys(BaseModel):
    """The keys a trial may override: exactly those of the trainer in ``config.yaml``.

    Declared with ``@hposdk.objective(params=...)``, this makes a study refuse a search-space key
    the trainer does not read, before the first trial.
    """

    model_config = ConfigDict(extra="forbid")
    batch_size: int | None = None
    optim_lr: float | None = None
    optimizer: str | None = None
    epochs: int | None = None
    dropout: float | None = None
    hidden: int | None = None
    seed: int | None = None
    num_threads: int | None = None
    max_train_samples: int | None = None
    data_dir: str | None = None


@hposdk.objective(params=TrainerKeys, metrics=["val_loss", "val_acc", "train_loss", "epochs_trained"])
def objective(trial: Trial) -> dict[str, float]:
    """One trial: the pipeline of ``config.yaml`` with the trial's keys overridden, trained.

    The MNIST trainer reports ``val_loss``, ``val_acc`` and ``train_loss`` after every epoch and
    checkpoints, so Ray's schedulers can stop (ASHA) or pause and resume (BOHB) it.
    """
    from hposdk.objectives.mnist import objective as train_mnist

    trainer = load_trainer_config(override_keys=dict(trial.params.items()))
    # The trainer's own names -> the MNIST objective's parameters (itwinai's optim_lr is lr).
    params = {
        "lr": trainer["optim_lr"],
        "batch_size": trainer["batch_size"],
        "optimizer": trainer["optimizer"],
        "dropout": trainer["dropout"],
        "hidden": trainer["hidden"],
        "epochs": trainer["epochs"],
        "seed": trainer["seed"],
        "num_threads": trainer["num_threads"],
        "max_train_samples": trainer["max_train_samples"],
        "data_dir": trainer["data_dir"],
    }
    return train_mnist(_Renamed(trial, params))  # type: ignore[no-any-return]


class _Renamed(Trial):
    """The study's trial seen with the trainer's parameter names: reports, pruning and
    checkpoints go to the study's trial unchanged."""

    def __init__(self, trial: Trial, params: dict[str, Any]) -> None:
        super().__init__(trial.number, params, budget=trial.budget, study_name=trial.study_name)
        self._outer = trial

    def report(self, step: int, /, **metrics: float) -> None:
        self._outer.report(step, **metrics)
        self.reports = self._outer.reports

    def should_prune(self) -> bool:
        return self._outer.should_prune()

    @property
    def workdir(self) -> Path:  # type: ignore[override]
        return self._outer.workdir

    def save_checkpoint(self, state: Any) -> None:
        self._outer.save_checkpoint(state)

    def load_checkpoint(self) -> Any | None:
        return self._outer.load_checkpoint()


def main(**overrides: Any) -> hposdk.StudyResult:
    """Run (or resume) the study of ``study.yaml``; ``overrides`` replace its keys."""
    study = hposdk.Study.from_yaml(HERE / "study.yaml", **overrides)
    result = study.optimize()
    print(result.table(limit=10))
    print(result.summary())
    return result


if __name__ == "__main__":
    main()
