"""The conformance suites every backend passes (pytest classes shipped in the package).

A backend's test module subclasses them::

    from hposdk.testing import BackendConformance, SpaceConformance

    class TestRaySpace(SpaceConformance):
        def sample(self, space, n, seed):
            ...  # draw n points through the backend's own translation, decoded back

    class TestRayBackend(BackendConformance):
        backend = "ray"

A capability the backend lacks is a named, visible skip, never a silent pass.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import pytest

from ..exceptions import ObjectiveError
from ..result import StudyResult, TrialState
from ..spaces import Discrete, Integer, LogUniform, SearchSpace, Uniform
from ..study import Study
from . import objectives

__all__ = ["SPACE_CASES", "BackendConformance", "SpaceConformance"]

#: Parameters where engines disagree; every backend must give exactly the hposdk meaning.
SPACE_CASES: dict[str, Any] = {
    "uniform": Uniform(-2.0, 3.0),
    "uniform_step": Uniform(0.1, 0.7, step=0.2),  # ClearML's random never returns 0.7; grid drops 0.5
    "uniform_step_drift": Uniform(0.0, 0.3, step=0.1),  # 0.1 + 0.2 must be 0.3
    "loguniform": LogUniform(1e-4, 1e-1),
    "loguniform_base2_step": LogUniform(512, 2048, base=2, step=1),  # exactly {512, 1024, 2048}
    "loguniform_base10_step": LogUniform(1e-4, 1e-1, step=1),
    "integer": Integer(1, 4),  # Ray's randint excludes 4
    "integer_step": Integer(0, 10, step=5),
    "integer_log": Integer(1, 1000, log=True),
    "discrete_mixed": Discrete([True, 1, "1", None, 2.5]),
}


def _type_ok(param: Any, value: Any) -> bool:
    if isinstance(param, Integer):
        return type(value) is int
    if isinstance(param, LogUniform) and param.is_int:
        return type(value) is int
    if isinstance(param, (Uniform, LogUniform)):
        return type(value) is float
    return value is None or type(value) in (bool, int, float, str)


class SpaceConformance:
    """Checks a backend's space translation against the hposdk semantics.

    Subclasses implement :meth:`sample` (and :meth:`grid` if the backend enumerates grids itself).
    """

    n_samples: ClassVar[int] = 300

    def sample(self, space: SearchSpace, n: int, seed: int) -> list[dict[str, Any]]:
        """Draw ``n`` points through the backend's translation, decoded to hposdk values."""
        raise NotImplementedError

    def grid(self, space: SearchSpace) -> list[dict[str, Any]] | None:
        """The backend's enumeration of a finite space (None: the backend has no grid of its own)."""
        return None

    @pytest.mark.parametrize("case", sorted(SPACE_CASES))
    def test_samples_in_support_with_exact_types(self, case: str) -> None:
        param = SPACE_CASES[case]
        space = SearchSpace({"p": param})
        points = self.sample(space, self.n_samples, seed=0)
        assert len(points) == self.n_samples
        for point in points:
            assert set(point) == {"p"}
            value = point["p"]
            assert param.contains(value), f"{case}: {value!r} is outside the support of {param!r}"
            assert _type_ok(param, value), f"{case}: {value!r} has type {type(value).__name__}"
            assert param.canonicalize(value) == value and type(param.canonicalize(value)) is type(value), (
                f"{case}: {value!r} is not the exact hposdk value (float drift?)"
            )

    @pytest.mark.parametrize("case", sorted(c for c, p in SPACE_CASES.items() if p.is_finite and p.cardinality <= 12))
    def test_every_grid_value_reachable(self, case: str) -> None:
        param = SPACE_CASES[case]
        points = self.sample(SearchSpace({"p": param}), self.n_samples, seed=1)
        seen = Counter(repr(p["p"]) for p in points)
        missing = [v for v in param.grid() if repr(v) not in seen]
        assert not missing, f"{case}: never sampled {missing} in {self.n_samples} draws (upper bound dropped?)"

    @pytest.mark.parametrize("case", ["uniform", "loguniform", "integer_log"])
    def test_continuous_covers_the_range(self, case: str) -> None:
        param = SPACE_CASES[case]
        values = sorted(float(p["p"]) for p in self.sample(SearchSpace({"p": param}), self.n_samples, seed=2))
        lo, hi = float(param.low), float(param.high)
        if isinstance(param, (LogUniform, Integer)):
            lo, hi, values = math.log(lo), math.log(hi), [math.log(v) for v in values]
        width = hi - lo
        assert values[0] - lo < 0.1 * width and hi - values[-1] < 0.1 * width, f"{case}: range not covered"
        # Log-scaled parameters must be uniform on the log scale: the median sits mid-range.
        assert abs(values[len(values) // 2] - (lo + hi) / 2) < 0.15 * width, f"{case}: wrong scale"

    def test_same_seed_same_points(self) -> None:
        space = SearchSpace({k: SPACE_CASES[k] for k in ("uniform", "integer", "discrete_mixed")})
        assert self.sample(space, 20, seed=7) == self.sample(space, 20, seed=7)

    @pytest.mark.parametrize("case", sorted(c for c, p in SPACE_CASES.items() if p.is_finite))
    def test_grid_matches_hposdk(self, case: str) -> None:
        space = SearchSpace({"p": SPACE_CASES[case], "q": Discrete(["a", "b"])})
        grid = self.grid(space)
        if grid is None:
            pytest.skip(f"{type(self).__name__}: the backend has no grid enumeration of its own")
        assert sorted(map(repr, grid)) == sorted(map(repr, space.grid()))


class BackendConformance:
    """Behaviour every backend must show through ``Study`` (n_trials, direction, failures, ...).

    Set :attr:`backend` (and :attr:`backend_options`). Tests of capabilities the backend lacks
    are skipped with the reason shown.
    """

    backend: ClassVar[str]
    backend_options: ClassVar[dict[str, Any]] = {}
    #: The pruner or scheduler to test early stopping with (None: the backend cannot prune).
    pruner: ClassVar[str | None] = None
    pruner_options: ClassVar[dict[str, Any]] = {}
    max_concurrent: ClassVar[int] = 1

    def study(self, tmp_path: Path, objective: Any, space: SearchSpace, **kwargs: Any) -> Study:
        kwargs.setdefault("metric", "loss")
        kwargs.setdefault("max_concurrent", self.max_concurrent)
        return Study(
            objective, space, backend=self.backend, backend_options=dict(self.backend_options),
            storage=str(tmp_path / "studies"), progress=False, **kwargs,
        )

    def _capable(self, optimizer: str) -> None:
        from ..backends import get_backend

        caps = get_backend(self.backend).capabilities
        if optimizer not in caps.optimizers:
            pytest.skip(f"backend {self.backend!r} has no optimizer {optimizer!r}")

    @pytest.mark.parametrize("optimizer", ["random", "tpe"])
    def test_n_trials_honoured_and_params_native(self, tmp_path: Path, optimizer: str) -> None:
        self._capable(optimizer)
        space = SearchSpace({"x": Uniform(0.0, 1.0), "y": Integer(1, 4), "z": Discrete([True, "a", 2.5])})
        result = self.study(tmp_path, objectives.echo_types, space, optimizer=optimizer, n_trials=6,
                            seed=0).optimize()
        assert len(result.trials) == 6
        assert sorted(t.number for t in result.trials) == list(range(6))
        assert all(t.state is TrialState.COMPLETE for t in result.trials), [t.error for t in result.trials]
        for t in result.trials:
            assert space.contains(t.params)
            assert all(v is None or type(v) in (bool, int, float, str) for v in t.params.values())

    def test_grid_enumerates_the_hposdk_grid(self, tmp_path: Path) -> None:
        self._capable("grid")
        space = SearchSpace({"x": Uniform(0.1, 0.7, step=0.2), "y": LogUniform(512, 2048, base=2, step=1)})
        result = self.study(tmp_path, objectives.quadratic, space, optimizer="grid", seed=0).optimize()
        assert sorted(map(repr, (t.params for t in result.trials))) == sorted(map(repr, space.grid()))

    @pytest.mark.parametrize("mode", ["min", "max"])
    def test_direction_respected(self, tmp_path: Path, mode: str) -> None:
        self._capable("grid")
        space = SearchSpace({"x": Uniform(0.0, 1.0, step=0.1)})
        metric = "loss" if mode == "min" else "neg_loss"
        result = self.study(tmp_path, objectives.quadratic, space, optimizer="grid", metric=metric,
                            mode=mode, fixed={"target": 0.7}).optimize()
        assert result.best.params == {"x": 0.7}
        values = [t.value for t in result.completed if t.value is not None]
        assert result.best.value == (min(values) if mode == "min" else max(values))

    def test_same_seed_same_random_trials(self, tmp_path: Path) -> None:
        self._capable("random")
        space = SearchSpace({"x": Uniform(0.0, 1.0), "y": Integer(1, 100)})
        a = self.study(tmp_path / "a", objectives.quadratic, space, optimizer="random", n_trials=5, seed=3).optimize()
        b = self.study(tmp_path / "b", objectives.quadratic, space, optimizer="random", n_trials=5, seed=3).optimize()
        assert [t.params for t in _by_number(a)] == [t.params for t in _by_number(b)]

    def test_failed_trials_recorded_and_study_goes_on(self, tmp_path: Path) -> None:
        self._capable("grid")
        space = SearchSpace({"x": Uniform(0.0, 1.0, step=0.25)})
        result = self.study(tmp_path, objectives.quadratic, space, optimizer="grid",
                            fixed={"fail_above": 0.6, "nan_above": 0.4}).optimize()
        states = {t.params["x"]: t.state for t in result.trials}
        assert states == {0.0: TrialState.COMPLETE, 0.25: TrialState.COMPLETE, 0.5: TrialState.FAILED,
                          0.75: TrialState.FAILED, 1.0: TrialState.FAILED}
        errors = {t.params["x"]: t.error or "" for t in result.trials}
        assert "deliberate failure at x=0.75" in errors[0.75]
        assert "nan" in errors[0.5].lower()
        assert result.best.params == {"x": 0.25}

    def test_reports_recorded(self, tmp_path: Path) -> None:
        self._capable("random")
        space = SearchSpace({"x": Uniform(0.0, 1.0)})
        result = self.study(tmp_path, objectives.quadratic, space, optimizer="random", n_trials=2, seed=0).optimize()
        for t in result.trials:
            assert [r.step for r in t.reports] == [0, 1, 2]
            assert t.reports[-1].metrics["loss"] == pytest.approx(t.value)

    def test_pruning_stops_bad_trials(self, tmp_path: Path) -> None:
        if self.pruner is None:
            pytest.skip(f"backend {self.backend!r}: no pruner configured for the conformance suite")
        self._capable("grid")
        space = SearchSpace({"x": Uniform(0.0, 3.0, step=0.25)})
        result = self.study(tmp_path, objectives.learning_curve, space, optimizer="grid", pruner=self.pruner,
                            pruner_options=dict(self.pruner_options), fixed={"steps": 8}, max_concurrent=1).optimize()
        pruned = result.by_state(TrialState.PRUNED)
        assert pruned, "no trial was pruned"
        assert all(len(t.reports) < 8 for t in pruned)
        assert result.best.params["x"] == pytest.approx(0.25)

    def test_resume_runs_only_missing_trials(self, tmp_path: Path) -> None:
        self._capable("random")
        space = SearchSpace({"x": Uniform(0.0, 1.0)})
        log = tmp_path / "calls.txt"
        kw = dict(optimizer="random", seed=5, name="resumable", fixed={"log_path": str(log)})
        first = self.study(tmp_path, objectives.quadratic, space, n_trials=3, **kw).optimize()
        second = self.study(tmp_path, objectives.quadratic, space, n_trials=6, **kw).optimize()
        assert len(second.trials) == 6
        calls = Counter(int(n) for n in log.read_text().split())
        assert all(c == 1 for c in calls.values()), f"a trial ran twice: {calls}"
        assert [t.params for t in _by_number(second)][:3] == [t.params for t in _by_number(first)]

    def test_a_callback_can_stop_the_study_and_a_rerun_continues_it(self, tmp_path: Path) -> None:
        self._capable("random")
        space = SearchSpace({"x": Uniform(0.0, 1.0)})
        seen: list[int] = []

        def stop_after_three(study: Study, trial: Any) -> None:
            assert trial.state is TrialState.COMPLETE and trial.value is not None  # recorded, scored
            seen.append(trial.number)
            if len(seen) == 3:
                study.stop()

        kw = dict(optimizer="random", seed=2, name="stoppable", n_trials=12)
        first = self.study(tmp_path, objectives.quadratic, space, **kw).optimize(callbacks=[stop_after_three])
        # The trials already running when stop() is called finish (and are reported too).
        assert 3 <= len(first.trials) < 3 + self.max_concurrent, len(first.trials)
        assert sorted(seen) == sorted(t.number for t in first.trials)
        second = self.study(tmp_path, objectives.quadratic, space, **kw).optimize()
        assert len(second.trials) == 12
        assert [t.params for t in _by_number(second)][:len(first.trials)] == [t.params for t in _by_number(first)]

    def test_a_failing_callback_stops_the_study_with_its_own_error(self, tmp_path: Path) -> None:
        self._capable("random")
        space = SearchSpace({"x": Uniform(0.0, 1.0)})
        calls: list[int] = []

        def broken(study: Study, trial: Any) -> None:
            calls.append(trial.number)
            raise LookupError(f"callback failed on trial {trial.number}")

        study = self.study(tmp_path, objectives.quadratic, space, optimizer="random", seed=0, n_trials=10)
        with pytest.raises(LookupError, match="callback failed on trial"):
            study.optimize(callbacks=[broken])
        assert len(calls) == 1  # not called again once it failed
        recorded = study.result()
        assert 1 <= len(recorded.trials) < 1 + self.max_concurrent  # the trial it saw is recorded

    def test_missing_metric_stops_the_study(self, tmp_path: Path) -> None:
        self._capable("random")
        space = SearchSpace({"x": Uniform(0.0, 1.0)})
        with pytest.raises(ObjectiveError, match="accuracy"):
            self.study(tmp_path, objectives.wrong_metric, space, optimizer="random", n_trials=4, seed=0).optimize()


def _by_number(result: StudyResult) -> list[Any]:
    return sorted(result.trials, key=lambda t: t.number)
