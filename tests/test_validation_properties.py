"""Bad input never gets past validation (issue 11).

Property-based: random and malformed search spaces, study files and options, as they come from
YAML or JSON, are either accepted, and then consistent (they round-trip through YAML and JSON, and
every sampled point is in the space), or refused with an hposdk error whose message names the
field. Never a raw pydantic ValidationError, a KeyError, a TypeError, a yaml error or a traceback.

Each bug these properties found has an example-based regression test at the end of the file.
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from hposdk import ConfigError, SearchSpace, SpaceError, Study
from hposdk._yaml import _loader, dumper
from hposdk.cli import main as cli_main
from hposdk.exceptions import HposdkError
from hposdk.spaces import Discrete, Integer, LogUniform, Uniform
from hposdk.study import StudyConfig, resolve_objective

# Reproducible in CI (derandomize: the same examples on every run) and quick: the module runs in
# well under a minute. `deadline=None`: the first example of a property imports Optuna.
PROPERTY = settings(
    max_examples=300, derandomize=True, database=None, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                           HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
STUDY_PROPERTY = settings(PROPERTY, max_examples=150)

# What a message must never contain: pydantic's own rendering, its URL, a traceback.
RAW = ("validation error for", "errors.pydantic.dev", "[type=", "Traceback (most recent call last)")

# --- strategies ------------------------------------------------------------------------------------

#: Numbers where validation is delicate: zero, signs, subnormals, the float range's ends, ints
#: beyond 2**53 and beyond the float range, and bools (which are ints in Python).
EDGE_NUMBERS = [0, 1, -1, 2, 10, 0.0, -0.0, 0.1, 0.3, 1e-300, 5e-324, 1e308, 1.7976931348623157e308, -1e308,
                2**53, 2**53 + 1, 2**63, 10**400, -(10**400), float("nan"), float("inf"), float("-inf"),
                True, False, 1e7, 1e15, 1e16]
numbers = st.one_of(
    st.integers(-1000, 1000),
    st.floats(-1e6, 1e6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(),
    st.sampled_from(EDGE_NUMBERS),
)
#: Strings that YAML 1.1 (and our loader) would read as something else if written bare.
TRICKY_STRINGS = ["1e5", "1E-3", ".5", "1_0", "yes", "no", "on", "null", "~", "0x1F", "010", "1:20", "+.inf", ".nan",
                  "", " ", "a b", "Args/lr", "é", "true", "-", "!", "&a", "*a", "# x", "x: y", "[1]", "{}"]
texts = st.one_of(st.text(max_size=8), st.sampled_from(TRICKY_STRINGS))
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
#: Anything YAML or JSON could give, plus Python containers a caller might pass (tuples, sets).
junk = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(texts, inner, max_size=3),
        st.tuples(inner, inner),
        st.frozensets(st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=3)), max_size=3),
    ),
    max_leaves=6,
)
TAGS = ["uniform", "loguniform", "integer", "discrete"]
#: Parameter names: distinctive valid ones (so that a message naming one can be told apart),
#: and invalid ones.
_valid_names = st.from_regex(r"p[a-z0-9_]{2,6}", fullmatch=True)
names = st.one_of(_valid_names, _valid_names, _valid_names,
                  st.sampled_from(["", "1x", "a b", "Args/lr", "x;y", "é", "-x", "p.q", "_p"]))


@st.composite
def param_dicts(draw: st.DrawFn) -> Any:
    """A parameter as a YAML/JSON mapping: usually a real type tag with numbers near the edge cases,
    sometimes missing keys, unknown keys, wrong types, an unknown tag."""
    d: dict[Any, Any] = {}
    if draw(st.integers(0, 9)):
        d["type"] = draw(st.sampled_from(TAGS)) if draw(st.integers(0, 5)) else draw(junk)
    for key, values in [("low", numbers), ("high", numbers), ("step", st.one_of(st.none(), numbers)),
                        ("base", numbers), ("log", st.one_of(st.booleans(), scalars))]:
        if draw(st.integers(0, 3)) if key in ("low", "high") else not draw(st.integers(0, 3)):
            d[key] = draw(values) if draw(st.integers(0, 7)) else draw(junk)
    if d.get("type") == "discrete" or not draw(st.integers(0, 5)):
        choices = st.lists(scalars, max_size=4) if draw(st.integers(0, 3)) else junk
        d["choices"] = draw(choices)
    if not draw(st.integers(0, 9)):
        d[draw(st.sampled_from(["lower", "upper", "values", "extra", "q"]))] = draw(scalars)
    return d


@st.composite
def stepped_ranges(draw: st.DrawFn) -> Any:
    """Ranges likely to be accepted: the delicate cases are steps, logs and magnitudes."""
    kind = draw(st.sampled_from(TAGS[:3]))
    if kind == "integer":
        low = draw(st.integers(-(2**54), 2**54))
        high = low + draw(st.integers(1, 10**6))
        step = draw(st.sampled_from([1, 1, 2, 3, 5, high - low]))
        return {"type": kind, "low": low, "high": high, "step": step, "log": draw(st.booleans())}
    low = draw(st.floats(-1e12, 1e12) if kind == "uniform" else st.floats(1e-12, 1e12))
    if draw(st.booleans()):
        low = int(low)
    step = draw(st.one_of(st.none(), st.sampled_from([0.1, 0.25, 0.5, 1, 2, 1e-3, 0.3]), st.floats(1e-9, 10)))
    n = draw(st.integers(1, 50))
    if kind == "uniform" and step is not None:
        high = low + n * step
    else:
        high = low * draw(st.sampled_from([2, 10, 1.5, 1e3]))
    if kind == "uniform" and step is None:
        high = low + draw(st.floats(1e-9, 1e9))
    d = {"type": kind, "low": low, "high": high, "step": step}
    if kind == "loguniform":
        d["base"] = draw(st.sampled_from([2, 10, 2.718281828, 1.5]))
    return d


spaces = st.one_of(
    st.dictionaries(names, st.one_of(param_dicts(), stepped_ranges()), max_size=3),
    st.dictionaries(names, stepped_ranges(), min_size=1, max_size=3),
    junk,
)


# --- the checks ------------------------------------------------------------------------------------


def assert_clear_refusal(exc: BaseException, *fields: str) -> None:
    """An hposdk error, readable, naming at least one of ``fields`` (when given)."""
    assert isinstance(exc, HposdkError), f"{type(exc).__module__}.{type(exc).__name__}: {exc}"
    msg = str(exc)
    assert msg.strip(), "empty error message"
    for raw in RAW:
        assert raw not in msg, f"internal rendering leaked into the message: {msg}"
    if fields:
        assert any(f in msg for f in fields), f"the message names none of {fields}: {msg}"


def assert_consistent(space: SearchSpace) -> None:
    """An accepted space round-trips and contains its own samples and grid points."""
    assert SearchSpace.from_yaml(space.to_yaml()) == space
    assert SearchSpace.from_json(space.to_json()) == space
    assert SearchSpace.model_validate(space.to_dict()) == space
    rng = random.Random(0)
    for _ in range(8):
        point = space.sample(rng)
        canonical = space.validate_params(point)
        assert canonical == point and all(type(canonical[k]) is type(point[k]) for k in point), (point, canonical)
    for name, param in space.items():
        if param.cardinality is not None and param.cardinality <= 200:
            grid = param.grid()
            assert len({(type(v), v) for v in grid}) == len(grid), f"{name}: the grid repeats a value: {grid}"
            assert all(param.contains(v) for v in grid), name
            assert param.contains(grid[-1]) and param.canonicalize(grid[-1]) == grid[-1], "upper bound not reachable"


def failing_names(data: Mapping[Any, Any]) -> list[str]:
    """The parameter names a space refuses on their own (an error must name each of them)."""
    bad = []
    for key, value in data.items():
        try:
            SearchSpace.model_validate({key: value})
        except SpaceError:
            bad.append(str(key))
    return bad


def check_space(data: Any, build: Any) -> None:
    try:
        space = build(data)
    except Exception as exc:
        event(f"refused: {type(exc).__name__}")
        if isinstance(data, Mapping) and data and all(isinstance(k, str) for k in data):
            bad = failing_names(data)
            assert_clear_refusal(exc, *(bad or ["space", "parameter"]))
            for name in bad:
                assert name in str(exc), f"{name!r} is refused but the error does not name it: {exc}"
        else:
            assert_clear_refusal(exc)
        return
    event("accepted")
    assert isinstance(data, Mapping) and data
    assert list(space.names) == list(data)
    assert_consistent(space)


def yaml_text(data: Any) -> str:
    def plain(x: Any) -> Any:  # YAML has lists and mappings, not tuples or sets
        if isinstance(x, (list, tuple, frozenset, set)):
            return [plain(v) for v in x]
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        return x

    try:
        return yaml.dump(plain(data), Dumper=dumper(), sort_keys=False)
    except (yaml.YAMLError, ValueError) as exc:  # e.g. a 400-digit int is fine, 5000 digits is not
        assume(False)
        raise AssertionError from exc


YAML_CHARS = "x: {}[]-,&*!|>'\"\t\n#%@`?~."

# --- properties: search spaces -------------------------------------------------------------------


@PROPERTY
@given(data=spaces)
def test_search_space_model_validate(data: Any) -> None:
    check_space(data, SearchSpace.model_validate)


@PROPERTY
@given(data=spaces)
def test_search_space_from_dict_and_constructor(data: Any) -> None:
    check_space(data, SearchSpace.from_dict)
    check_space(data, SearchSpace)


@PROPERTY
@given(data=spaces)
def test_search_space_from_yaml_and_json_text(data: Any) -> None:
    text = yaml_text(data)
    check_space(yaml.load(text, Loader=_loader()), lambda _: SearchSpace.from_yaml(text))
    try:
        js = json.dumps(data)
    except (TypeError, ValueError):
        return
    check_space(json.loads(js), lambda _: SearchSpace.from_json(js))


@PROPERTY
@given(param=st.one_of(param_dicts(), stepped_ranges()))
def test_each_parameter_type_validates_plain_data(param: dict[str, Any]) -> None:
    cls = {"uniform": Uniform, "loguniform": LogUniform, "integer": Integer, "discrete": Discrete}.get(
        param.get("type") if isinstance(param.get("type"), str) else "", Uniform)
    try:
        p = cls.model_validate(param)
    except Exception as exc:
        event(f"refused: {type(exc).__name__}")
        assert_clear_refusal(exc, cls.__name__)
        return
    event("accepted")
    assert_consistent(SearchSpace({"p": p}))


@PROPERTY
@given(text=st.text(alphabet=st.sampled_from(list(YAML_CHARS + "0123456789eE+_abcdefghijklmnopqrstuvwxyz")),
                    max_size=60))
def test_mangled_yaml_text_is_refused_as_bad_space(text: str) -> None:
    try:
        space = SearchSpace.from_yaml(text)
    except Exception as exc:
        event(f"refused: {type(exc).__name__}")
        assert_clear_refusal(exc)
        return
    event("accepted")
    assert_consistent(space)


# --- properties: study files and options --------------------------------------------------------------

BASE: dict[str, Any] = {
    "name": "prop",
    "objective": "hposdk.testing.objectives:quadratic",
    "metric": "loss",
    "mode": "min",
    "optimizer": "tpe",
    "n_trials": 3,
    "seed": 0,
    "space": {"x": {"type": "uniform", "low": 0.0, "high": 1.0}},
}
OBJECTIVE_REFS = [
    "hposdk.testing.objectives:quadratic", "os:system", "no.such:mod", "a:b:c", "builtins:__import__",
    "builtins:eval", "os:path", "os:sep", "", "x", "hposdk.testing.objectives:quadratic.__globals__",
    "json.decoder:JSONDecodeError", "hposdk.__main__:main", "os; rm -rf /:x", "hposdk.testing.objectives:",
    ":f", "hposdk..testing:quadratic", "hposdk.testing.objectives:quadratic()", "__import__('os').system('x'):y",
    "hposdk.testing.objectives:sleepy x", "subprocess:run", "hposdk.study:load_study", "hposdk:Study",
    "hposdk.testing.objectives:_log_call",
]
OPTION_NAMES = ["n_startup_trials", "gamma", "seed", "n_ei_candidates", "multivariate", "n_warmup_steps", "percentile",
                "min_resource", "reduction_factor", "population_size", "isolate", "start_method", "workers", "foo"]
counts = st.one_of(st.integers(-3, 12), st.sampled_from([0, 2**31, 2**32, 2**63, 10**30, True, False, 1.0, 2.5, "3",
                                                           None, float("nan"), float("inf")]))
option_values = st.one_of(scalars, st.sampled_from(["spawn", "fork"]))
options = st.one_of(st.dictionaries(st.sampled_from(OPTION_NAMES), option_values, max_size=3), junk)
MUTATIONS: dict[str, Any] = {
    "name": st.one_of(texts, junk, st.sampled_from(["..", ".", "a/b", "ok-name", "../../etc"])),
    "objective": st.one_of(st.sampled_from(OBJECTIVE_REFS), texts, junk),
    "metric": st.one_of(texts, junk, st.just("neg_loss")),
    "mode": st.one_of(st.sampled_from(["min", "max", "MIN", "minimize", None, ""]), junk),
    "optimizer": st.one_of(st.sampled_from(["tpe", "random", "grid", "gp", "nsga2", "bohb", "hyperband", "cmaes", "",
                                            "TPE"]), junk),
    "optimizer_options": options,
    "pruner": st.one_of(st.sampled_from(["median", "percentile", "successive_halving", "hyperband", "asha", None, ""]),
                        junk),
    "pruner_options": options,
    "backend": st.one_of(st.sampled_from(["local", "nope", "", "Local", None]), junk),
    "backend_options": options,
    "n_trials": counts,
    "max_concurrent": counts,
    "seed": counts,
    "retries": counts,
    "trial_timeout": st.one_of(numbers, st.just("1")),
    "budget": st.one_of(st.fixed_dictionaries({"min_budget": numbers, "max_budget": numbers},
                                              optional={"eta": numbers, "extra": scalars}), junk),
    "fixed": st.one_of(st.dictionaries(st.one_of(names, st.just("x")), scalars, max_size=2), junk),
    "space": spaces,
    "objectives": st.one_of(st.dictionaries(texts, st.sampled_from(["min", "max", "up"]), max_size=2), junk),
    "constraints": st.one_of(
        st.lists(st.one_of(texts, st.sampled_from(["x <= 1", "loss < 0.5", "loss <"])), max_size=2), junk),
    "composites": junk,
    "pruning_metric": st.one_of(texts, junk),
    "unknown_key": junk,
    "n_trails": counts,  # a typo must be refused, not ignored
}


@st.composite
def study_configs(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A valid study with exactly one key changed (or removed): the error must name that key."""
    key = draw(st.sampled_from(sorted(MUTATIONS)))
    data = dict(BASE)
    if key in data and not draw(st.integers(0, 7)):
        del data[key]
    else:
        data[key] = draw(MUTATIONS[key])
    return key, data


def _expected_names(key: str) -> tuple[str, ...]:
    # The field, or (for options and budgets) what they belong to.
    related = {"optimizer_options": ("optimizer",), "pruner_options": ("pruner",), "budget": ("budget", "optimizer"),
               "objectives": ("metric",), "n_trails": ("n_trails",), "space": ("space", "parameter")}
    return (key, *related.get(key, ()))


def check_study_config(key: str, data: dict[str, Any], build: Any) -> Any:
    try:
        built = build(data)
    except Exception as exc:
        event(f"refused: {type(exc).__name__}")
        assert_clear_refusal(exc, *_expected_names(key))
        return None
    event("accepted")
    return built


@STUDY_PROPERTY
@given(case=study_configs())
def test_study_config_validates_plain_data(case: tuple[str, dict[str, Any]]) -> None:
    key, data = case
    cfg = check_study_config(key, data, StudyConfig.model_validate)
    if cfg is not None:
        assert StudyConfig.model_validate(cfg.model_dump()) == cfg


@STUDY_PROPERTY
@given(case=study_configs())
def test_study_from_config_validates_everything_before_compute(case: tuple[str, dict[str, Any]],
                                                                tmp_path: Path) -> None:
    key, data = case
    data = {**data, "storage": str(tmp_path / "studies")}
    study = check_study_config(key, data, lambda d: Study.from_config(d, progress=False))
    if study is not None:
        assert study.n_trials >= 1
        assert study.spec.space == study.config.space
        assert not (tmp_path / "studies").exists(), "building a study must not write anything"


@STUDY_PROPERTY
@given(case=study_configs())
def test_study_yaml_files(case: tuple[str, dict[str, Any]], tmp_path: Path) -> None:
    key, data = case
    path = tmp_path / "study.yaml"
    path.write_text(yaml_text({**data, "storage": str(tmp_path / "studies")}))
    check_study_config(key, path, lambda p: Study.from_yaml(p, progress=False))


@STUDY_PROPERTY
@given(cut=st.integers(0, 400), length=st.integers(0, 12),
       insert=st.text(alphabet=st.sampled_from(list(YAML_CHARS)), max_size=4))
def test_mangled_study_files_are_refused_cleanly(cut: int, length: int, insert: str, tmp_path: Path) -> None:
    text = yaml_text(BASE)
    cut = min(cut, len(text))
    mangled = text[:cut] + insert + text[cut + length:]
    path = tmp_path / "study.yaml"
    path.write_text(mangled)
    for build in (StudyConfig.from_yaml, lambda p: Study.from_yaml(p, progress=False, storage=str(tmp_path / "s"))):
        try:
            build(path)
        except Exception as exc:
            event(f"refused: {type(exc).__name__}")
            assert_clear_refusal(exc)
        else:
            event("accepted")


# --- the YAML loader is safe; resolving an objective only imports its module -----------------------


PWNED = "!!python/object/apply:os.system ['touch {marker}']"


@pytest.mark.parametrize("where", ["space", "study", "cli"])
def test_python_tags_in_yaml_are_refused_and_nothing_runs(tmp_path: Path, where: str, capsys: Any) -> None:
    marker = tmp_path / "pwned"
    tag = PWNED.format(marker=marker)
    if where == "space":
        with pytest.raises(SpaceError, match=r"could not determine a constructor for the tag.*python/object/apply"):
            SearchSpace.from_yaml(f"x: {tag}")
    else:
        path = tmp_path / "study.yaml"
        path.write_text(yaml_text(BASE) + f"fixed: {{x: {tag}}}\n")
        if where == "study":
            with pytest.raises(ConfigError, match=r"line \d+: not valid YAML: could not determine a constructor"):
                Study.from_yaml(path, progress=False)
        else:
            assert cli_main(["run", str(path), "--storage", str(tmp_path / "s"), "--no-progress"]) == 2
            err = capsys.readouterr().err
            assert "not valid YAML" in err and "Traceback" not in err
    assert not marker.exists(), "the YAML tag ran a command"


@pytest.mark.parametrize(
    ("ref", "pattern"),
    [
        ("os; import shutil:rmtree", r"is not an import path"),
        ("os:system('touch x')", r"is not an import path"),
        ("hposdk.testing.objectives:quadratic sleepy", r"is not an import path"),
        ("builtins:__import__", r"special \(dunder\) names are not objectives"),
        ("hposdk.__main__:main", r"special \(dunder\) names"),
        ("hposdk.testing.objectives:quadratic.__globals__", r"special \(dunder\) names"),
        ("os:system", r"is a built-in function, not an objective"),
        ("builtins:eval", r"is a built-in function"),
        ("json.decoder:JSONDecodeError", r"is a class, not an objective"),
        ("hposdk.testing.objectives:_log_call.__call__", r"special \(dunder\) names"),
        ("hposdk.study:_suggest", r"has the signature \(key: 'str', names: 'list\[str\]'\).*one argument, the trial"),
        ("hposdk..testing:quadratic", r"an empty part between dots"),
        ("no.such:mod", r"cannot import module 'no.such'"),
    ],
)
def test_objective_references_that_are_not_a_function_of_a_trial_are_refused(ref: str, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        resolve_objective(ref)


def test_resolving_an_objective_imports_its_module_and_calls_nothing(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "objpkg_probe"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "mod.py").write_text(
        "from pathlib import Path\n"
        f"Path({str(tmp_path / 'imported')!r}).write_text('1')\n"
        "def objective(trial):\n"
        f"    Path({str(tmp_path / 'called')!r}).write_text('1')\n"
        "    return 0.0\n"
    )
    (pkg / "broken.py").write_text("raise RuntimeError('broken at import')\n")
    (pkg / "exits.py").write_text("import sys\nsys.exit(3)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        fn = resolve_objective("objpkg_probe.mod:objective")
        assert (tmp_path / "imported").exists() and not (tmp_path / "called").exists()
        assert fn.__name__ == "objective"
        # A module that fails (or exits) when imported is a clear configuration error, not a crash.
        with pytest.raises(ConfigError, match=r"importing module 'objpkg_probe.broken' failed: RuntimeError"):
            resolve_objective("objpkg_probe.broken:objective")
        with pytest.raises(ConfigError, match=r"importing module 'objpkg_probe.exits' failed: SystemExit"):
            resolve_objective("objpkg_probe.exits:objective")
    finally:
        for name in [m for m in sys.modules if m.startswith("objpkg_probe")]:
            del sys.modules[name]


# --- regression tests for what the properties found -----------------------------------------------------


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        # pydantic called our __init__ with the input as keywords during validation
        ({1: {"type": "uniform", "low": 0, "high": 1}}, r"space\[1\]: keys must be strings"),
        ({"x": {"type": "uniform", "low": 0}}, r"space\.x\.high: Field required"),
        # model_validate raised pydantic's ValidationError
        ({"x": {"type": "uniform", "low": 1, "high": 0}}, r"space\.x: `low < high` must hold"),
        ({"x": {"type": "discrete", "choices": [(1, 2)]}},
         r"space\.x\.choices\[0\]: a choice must be None, a bool, an int, a float or a str \(got \(1, 2\)\)$"),
        # ints beyond the float range raised OverflowError
        ({"x": {"type": "uniform", "low": 0, "high": 10**400}}, r"`high` must be finite.*an int of about 401 digits"),
        ({"x": {"type": "loguniform", "low": 1, "high": 10**400}}, r"`high` must be finite"),
        ({"x": {"type": "integer", "low": 1, "high": 10**400, "log": True}}, r"`high` must be finite"),
        # a step below float resolution: grid values that are not distinct floats
        ({"x": {"type": "uniform", "low": 1e15, "high": 1e15 + 1, "step": 0.1}}, r"coarser than the float resolution"),
        # Decimal's 28 digits took 1/3e-30 for a whole number of steps
        ({"x": {"type": "uniform", "low": 0, "high": 1, "step": 3e-30}}, r"`step` must divide `high - low`"),
        # a log step so small that 10**step == 1.0: the int check looped over 10**301 points
        ({"x": {"type": "loguniform", "low": 1, "high": 1024, "base": 2, "step": 1e-300}}, r"`step` \(on the "
         r"exponent\) is too small"),
        ({"x": {"type": "loguniform", "low": 10**9, "high": 10**12, "step": 4.4e-10}}, r"cannot all be distinct ints"),
        # a set has no order: the grid and seeded samples changed with PYTHONHASHSEED
        ({"x": {"type": "discrete", "choices": {"a", "b"}}}, r"`choices` must be a list: a set has no order"),
        ({"x": {"type": "discrete", "choices": [2**64]}}, r"int choices must fit in 64 bits"),
    ],
)
def test_regression_spaces_refused_with_a_named_field(data: dict[Any, Any], pattern: str) -> None:
    with pytest.raises(SpaceError, match=pattern):
        SearchSpace.model_validate(data)
    with pytest.raises(ConfigError, match=pattern):
        StudyConfig.model_validate({**BASE, "space": data})


def test_regression_the_widest_ranges_contain_their_samples() -> None:
    rng = random.Random(0)
    # high - low overflows a float: sampling gave inf, and contains() raised OverflowError.
    wide = Uniform(-1e308, 1e308)
    assert all(wide.contains(wide.sample(rng)) for _ in range(200))
    stepped = Uniform(-1e308, 1e308, step=1e306)
    assert all(stepped.contains(v) for v in stepped.grid())
    # Ints beyond 2**53 were compared through float(): 2**70 + 1 came back as 2**70.
    huge = Integer(0, 2**70)
    assert huge.canonicalize(2**70 - 1) == 2**70 - 1 and not huge.contains(2**70 + 1)


def test_regression_stepped_uniform_far_from_zero_contains_its_grid() -> None:
    # (v - low) / step drifted by more than the 1e-9 tolerance: 1e7 + 0.1 was "not on the grid".
    for low in (1e7, 1e8, -1e8, 1e10):
        u = Uniform(low, low + 1, step=0.1)
        assert all(u.contains(v) for v in u.grid()), low
        assert not u.contains(low + 0.05)


def test_regression_to_yaml_quotes_strings_the_loader_reads_as_numbers() -> None:
    space = SearchSpace({"x": Discrete(["1e5", "1E-3", "1_0", "yes", 1e5, 0.001])})
    assert SearchSpace.from_yaml(space.to_yaml()) == space


def test_regression_bad_json_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(SpaceError, match="not valid JSON"):
        SearchSpace.from_json("{'x': 1")
    with pytest.raises(ConfigError, match="cannot read the file"):
        StudyConfig.from_yaml(tmp_path)  # a directory
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00x")
    with pytest.raises(ConfigError, match="cannot read the file"):
        StudyConfig.from_yaml(tmp_path / "bin.yaml")
    with pytest.raises(ConfigError, match="nested too deeply"):
        StudyConfig.from_yaml("[" * 3000 + "]" * 3000)
    with pytest.raises(ConfigError, match="Exceeds the limit"):
        StudyConfig.from_yaml("n_trials: " + "1" * 5000)


def test_regression_yaml_aliases_are_walked_once() -> None:
    # "A billion laughs": 9**8 list items by reference; line numbering walked every one (minutes).
    text = "a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
        f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]\n" for i in range(1, 9))
    with pytest.raises(ConfigError, match=r"a8: unknown field"):
        StudyConfig.from_yaml(text)
    with pytest.raises(ConfigError, match=r"a: unknown field"):
        StudyConfig.from_yaml("a: &a [*a]")  # a recursive document


def test_regression_study_errors_name_text_sources_briefly() -> None:
    with pytest.raises(ConfigError) as info:
        StudyConfig.from_yaml("x: 1\n" * 200)
    assert str(info.value).startswith("<string>: invalid study file")


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        ({"n_trials": True}, r"n_trials: Input should be an integer \(got True\)"),  # YAML `yes`
        ({"n_trials": "3"}, r"n_trials: Input should be an integer"),
        ({"max_concurrent": 2.0}, r"max_concurrent: Input should be an integer"),
        ({"retries": False}, r"retries: Input should be an integer"),
        # numpy's RandomState (Optuna's samplers, Ray) refuses these at run time
        ({"seed": -1}, r"seed: Input should be greater than or equal to 0"),
        ({"seed": 2**32}, r"seed: Input should be less than 4294967296"),
        ({"seed": True}, r"seed: Input should be an integer"),
        # an infinite timeout overflowed the worker pool's wait()
        ({"trial_timeout": float("inf")}, r"trial_timeout: Input should be a finite number"),
        ({"trial_timeout": "1"}, r"trial_timeout: Input should be a number"),
    ],
)
def test_regression_study_numbers_are_strict(overrides: dict[str, Any], pattern: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=pattern):
        StudyConfig(**{**BASE, **overrides})
    with pytest.raises(ConfigError, match=pattern):
        Study.from_config({**BASE, **overrides, "storage": str(tmp_path)})


def test_regression_study_config_raises_config_error_not_pydantics() -> None:
    with pytest.raises(ConfigError, match=r"invalid study configuration\nmode: Input should be 'min' or 'max'"):
        StudyConfig.model_validate({**BASE, "mode": "minimize"})
    with pytest.raises(ConfigError, match=r"space: Field required"):
        StudyConfig(metric="loss")
    with pytest.raises(ConfigError, match=r"expected a StudyConfig or a mapping, got list"):
        Study.from_config([1, 2])  # type: ignore[arg-type]


@pytest.mark.parametrize("kwargs", [
    {"optimizer_options": {"n_startup_trials": "a"}},
    {"pruner": "median", "pruner_options": {"n_startup_trials": -5}},
    {"optimizer": "nsga2", "optimizer_options": {"population_size": 1}},
])
def test_option_values_are_checked_before_compute(kwargs: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        Study("hposdk.testing.objectives:quadratic", BASE["space"], metric="loss", n_trials=1, seed=0,
              storage=tmp_path, progress=False, **kwargs)


@pytest.mark.parametrize("budget", [{"min_budget": 1, "max_budget": float("inf")},
                                    {"min_budget": 1, "max_budget": 9, "eta": float("nan")}])
def test_regression_local_bohb_refuses_infinite_budgets_before_compute(budget: dict[str, float],
                                                                      tmp_path: Path) -> None:
    # hpbandster raised OverflowError/ValueError from BOHB.__init__, after starting its dispatcher.
    pytest.importorskip("hpbandster")
    # Refused by the Budget model itself now (before the hpbandster check), naming the field.
    with pytest.raises(ConfigError, match=r"budget\.(max_budget|eta): Input should be a finite number"):
        Study.from_config({**BASE, "optimizer": "bohb", "budget": budget, "storage": str(tmp_path)})


@pytest.mark.parametrize("budget", [{"min_budget": 1, "max_budget": float("inf")},
                                    {"min_budget": 1, "max_budget": 9, "eta": float("nan")}])
def test_budget_must_be_finite(budget: dict[str, float]) -> None:
    with pytest.raises(ConfigError, match="budget"):
        StudyConfig.model_validate({**BASE, "optimizer": "bohb", "budget": budget})


def test_local_tpe_refuses_a_range_whose_width_overflows(tmp_path: Path) -> None:
    from hposdk import UnsupportedError

    with pytest.raises(UnsupportedError, match="'x'"):
        Study("hposdk.testing.objectives:quadratic", {"x": {"type": "uniform", "low": -1e308, "high": 1e308}},
              metric="loss", n_trials=1, optimizer="tpe", storage=tmp_path, progress=False)
