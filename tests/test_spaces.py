"""The search-space model: semantics, validation messages, serialisation."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hposdk import Discrete, Integer, LogUniform, SearchSpace, SpaceError, Uniform
from hposdk.testing import SPACE_CASES

ISSUE_SPACE = SearchSpace(
    {
        "dampening_frac": Uniform(0.01, 0.1, step=0.01),
        "num_samples": LogUniform(512, 2048, base=2, step=1),
        "lr": LogUniform(1e-5, 1e-3),
        "layers": Integer(1, 4),
        "batch_size": Discrete([3, 4, 5, 6]),
    }
)


# --- semantics ---------------------------------------------------------------------------------


def test_stepped_uniform_grid_is_exact_decimal_values() -> None:
    assert Uniform(0.01, 0.1, step=0.01).grid() == (0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09, 0.1)
    # No float drift: 0.1 + 0.2 comes back as 0.3, and the upper bound is reached.
    assert Uniform(0.0, 0.3, step=0.1).grid() == (0.0, 0.1, 0.2, 0.3)


def test_log_step_applies_to_the_exponent() -> None:
    assert LogUniform(512, 2048, base=2, step=1).grid() == (512, 1024, 2048)
    assert all(type(v) is int for v in LogUniform(512, 2048, base=2, step=1).grid())
    assert LogUniform(1e-4, 1e-1, step=1).grid() == (1e-4, 1e-3, 1e-2, 1e-1)
    assert LogUniform(1.0, 16.0, base=2, step=2).grid() == (1.0, 4.0, 16.0)


def test_integer_bounds_inclusive_and_steps_anchor_at_low() -> None:
    assert Integer(1, 4).grid() == (1, 2, 3, 4)
    assert Integer(3, 13, step=5).grid() == (3, 8, 13)


def test_discrete_keeps_json_scalar_types_and_distinguishes_true_from_1() -> None:
    d = Discrete([True, 1, 1.0, "1", None])
    assert d.grid() == (True, 1, 1.0, "1", None)
    assert [type(v) for v in d.grid()] == [bool, int, float, str, type(None)]
    assert d.canonicalize(True) is True and type(d.canonicalize(1)) is int


def test_grid_enumerates_finite_spaces_in_declared_order() -> None:
    space = SearchSpace({"a": Integer(1, 2), "b": Discrete(["x", "y"])})
    assert space.grid() == [{"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 2, "b": "x"}, {"a": 2, "b": "y"}]
    assert space.size == 4
    assert ISSUE_SPACE.size is None


def test_grid_refuses_continuous_spaces_naming_the_parameter() -> None:
    with pytest.raises(SpaceError, match=r"'lr' is continuous.*step"):
        ISSUE_SPACE.grid()


@pytest.mark.parametrize("case", sorted(SPACE_CASES))
def test_sample_and_contains_agree(case: str) -> None:
    param = SPACE_CASES[case]
    rng = random.Random(0)
    for _ in range(200):
        assert param.contains(param.sample(rng))


@pytest.mark.parametrize(
    ("param", "value"),
    [
        (Uniform(0.0, 1.0), 1.5),
        (Uniform(0.1, 0.7, step=0.2), 0.2),
        (LogUniform(512, 2048, base=2, step=1), 700),
        (LogUniform(1e-4, 1e-1), 0.0),
        (Integer(1, 4), 5),
        (Integer(1, 4), 2.5),
        (Integer(1, 4), True),
        (Discrete([1, 2]), True),
        (Discrete(["a"]), "b"),
        (Uniform(0.0, 1.0), "0.5"),
    ],
)
def test_contains_refuses_values_outside_the_support(param: object, value: object) -> None:
    assert not param.contains(value)  # type: ignore[attr-defined]


def test_space_contains_checks_keys_too() -> None:
    point = ISSUE_SPACE.sample(1)
    assert ISSUE_SPACE.contains(point)
    assert not ISSUE_SPACE.contains({**point, "extra": 1})
    assert not ISSUE_SPACE.contains({k: v for k, v in point.items() if k != "lr"})
    with pytest.raises(SpaceError, match=r"layers=9"):
        ISSUE_SPACE.validate_params({**point, "layers": 9})


def test_canonicalize_snaps_engine_drift_to_exact_values() -> None:
    assert Uniform(0.0, 0.3, step=0.1).canonicalize(0.30000000000000004) == 0.3
    assert LogUniform(512, 2048, base=2, step=1).canonicalize(1023.9999999) == 1024


def test_sample_for_trial_is_a_pure_function_of_seed_and_number() -> None:
    assert ISSUE_SPACE.sample_for_trial(3, 7) == ISSUE_SPACE.sample_for_trial(3, 7)
    assert ISSUE_SPACE.sample_for_trial(3, 7) != ISSUE_SPACE.sample_for_trial(3, 8)


@settings(max_examples=200, deadline=None)
@given(
    low=st.integers(-1000, 1000),
    n=st.integers(1, 50),
    step_milli=st.integers(1, 2000),
)
def test_any_fitting_step_grid_ends_exactly_at_high(low: int, n: int, step_milli: int) -> None:
    step = step_milli / 1000
    lo = low / 100
    high = float(__import__("decimal").Decimal(repr(lo)) + n * __import__("decimal").Decimal(repr(step)))
    grid = Uniform(lo, high, step=step).grid()
    assert len(grid) == n + 1 and grid[0] == lo and grid[-1] == high
    assert all(Uniform(lo, high, step=step).contains(v) for v in grid)


# --- validation messages -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "pattern"),
    [
        (lambda: Uniform(0.5, 0.1), r"`low < high` must hold, but got \(low=0.5, high=0.1\).*Fix"),
        (lambda: LogUniform(0.0, 1.0), r"`low > 0` must hold.*low=0.0.*Fix"),
        (lambda: LogUniform(-1.0, 1.0), r"`low > 0` must hold"),
        (lambda: Uniform(0.0, 1.0, step=2.0), r"`step <= high - low` must hold.*step=2.0.*Fix"),
        (lambda: Uniform(0.1, 0.7, step=0.25), r"must divide.*Fix: use high=0.6"),
        (lambda: LogUniform(500, 2048, base=2, step=1), r"exponent.*Fix"),
        (lambda: Integer(1, 10, step=2), r"must divide.*Fix: use high=9"),
        (lambda: Integer(1, 101, step=2, log=True), r"`step` must be 1 when log=True"),
        (lambda: Integer(0, 100, log=True), r"`low >= 1` must hold when log=True"),
        (lambda: Integer(1.5, 3), r"low"),
        (lambda: Discrete([]), r"`choices` must not be empty"),
        (lambda: Discrete([1, 2, 1]), r"choices must be unique, but 1 appears twice"),
        (lambda: Discrete([[1, 2]]), r"choices"),
        (lambda: Uniform(0.0, 1.0, stepp=0.1), r"stepp.*unknown field"),
        (lambda: Uniform(0.0, float("inf")), r"`high` must be finite"),
    ],
)
def test_invalid_parameters_fail_at_construction_with_rule_value_and_fix(build, pattern: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SpaceError, match=pattern):
        build()


def test_space_errors_name_the_parameter() -> None:
    with pytest.raises(SpaceError, match=r"space\.lr.*`low < high`"):
        SearchSpace.from_dict({"lr": {"type": "loguniform", "low": 1.0, "high": 0.1}})
    with pytest.raises(SpaceError, match=r"space\.x"):
        SearchSpace.from_dict({"x": {"type": "gaussian", "mu": 0}})
    with pytest.raises(SpaceError, match=r"not allowed"):
        SearchSpace({"Args/x": Uniform(0.0, 1.0)})
    with pytest.raises(SpaceError, match="at least one parameter"):
        SearchSpace({})


def test_parameters_are_frozen() -> None:
    u = Uniform(0.0, 1.0)
    with pytest.raises(Exception, match="frozen"):
        u.low = 0.5  # type: ignore[misc]


# --- serialisation -----------------------------------------------------------------------------


def test_yaml_and_json_round_trip_losslessly() -> None:
    space = SearchSpace({**ISSUE_SPACE.root, "flags": Discrete([True, 1, 1.0, "1", None])})
    for again in (SearchSpace.from_yaml(space.to_yaml()), SearchSpace.from_json(space.to_json())):
        assert again == space
        assert [type(v) for v in again["flags"].grid()] == [bool, int, float, str, type(None)]
        assert type(again["num_samples"].low) is int
        assert again.grid if False else again["dampening_frac"].grid() == space["dampening_frac"].grid()


def test_yaml_reads_exponent_floats_without_a_dot() -> None:
    # PyYAML (YAML 1.1) would read 1e-4 as a string; hposdk reads it as the float users mean.
    space = SearchSpace.from_yaml("lr: {type: loguniform, low: 1e-4, high: 1e-1}\n")
    assert space["lr"].low == 1e-4 and type(space["lr"].low) is float


def test_json_schema_is_a_tagged_union() -> None:
    schema = json.dumps(SearchSpace.model_json_schema())
    assert '"discriminator"' in schema and '"loguniform"' in schema
