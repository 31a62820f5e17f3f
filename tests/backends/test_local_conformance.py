"""The local backend passes the shared conformance suites (in-process and with worker processes)."""

from __future__ import annotations

import random
from typing import Any

import optuna

from hposdk.backends import _optuna
from hposdk.spaces import SearchSpace
from hposdk.testing import BackendConformance, SpaceConformance


class TestOptunaTranslation(SpaceConformance):
    """Sampling through Optuna's own distributions (what TPE samples from), decoded back."""

    def sample(self, space: SearchSpace, n: int, seed: int) -> list[dict[str, Any]]:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        dists = _optuna.to_optuna(space)
        points = []
        for _ in range(n):
            trial = study.ask(dists)
            points.append(_optuna.decode(space, trial.params))
            study.tell(trial, 0.0)
        return points


class TestSpaceModelSampling(SpaceConformance):
    """The space model's own sampler (used by random search on every backend)."""

    def sample(self, space: SearchSpace, n: int, seed: int) -> list[dict[str, Any]]:
        rng = random.Random(seed)
        return [space.sample(rng) for _ in range(n)]

    def grid(self, space: SearchSpace) -> list[dict[str, Any]]:
        return space.grid()


class TestLocalInProcess(BackendConformance):
    backend = "local"
    pruner = "median"
    pruner_options = {"n_startup_trials": 2, "n_warmup_steps": 1}


class TestLocalWorkerProcesses(BackendConformance):
    backend = "local"
    backend_options = {"isolate": True, "start_method": "forkserver"}
    pruner = "successive_halving"
    max_concurrent = 2
