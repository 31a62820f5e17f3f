"""Evaluation suites as data: which lm-eval tasks, which metric of each, few-shot count and weight.

A suite is scored as the weighted mean of its tasks' metrics; suites are combined into one
``score`` that is always *higher is better*: a suite declares its direction once
(``direction: min`` for perplexities) and a ``min`` suite enters the combined score negated.
This module imports pydantic and the standard library only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ...exceptions import ConfigError
from ...spaces._errors import format_validation_error

__all__ = ["BUILTIN_SUITES", "OPENLLM_V1", "Suite", "SuiteTask", "combine_scores", "resolve_suites"]

_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


class SuiteTask(BaseModel):
    """One lm-eval task (or group with an aggregate) of a suite and the metric read from it.

    Attributes:
        task: an lm-eval task or group name (``arc_challenge``, ``mmlu``) or a task defined in the
            suite's ``include_path`` YAML files.
        metric: the metric name as lm-eval reports it (``acc``, ``acc_norm``, ``exact_match``,
            ``word_perplexity``).
        filter: the lm-eval filter the metric was computed under (``none`` for most tasks;
            ``strict-match`` / ``flexible-extract`` for gsm8k).
        num_fewshot: few-shot examples; None keeps the task's own default (0 when it has none).
        weight: the task's weight inside its suite.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    task: str = Field(min_length=1)
    metric: str = Field(min_length=1)
    filter: str = "none"
    num_fewshot: int | None = Field(None, ge=0)
    weight: float = Field(1.0, gt=0, allow_inf_nan=False)

    @property
    def key(self) -> str:
        """The metric's name in lm-eval's results (``acc_norm,none``)."""
        return f"{self.metric},{self.filter}"

    @property
    def label(self) -> str:
        """The ``<task>/<metric>`` part of the names the objective returns."""
        metric = self.metric if self.filter == "none" else f"{self.metric},{self.filter}"
        return f"{self.task}/{metric}"


class Suite(BaseModel):
    """A named set of lm-eval tasks scored together, in one direction.

    Attributes:
        name: the suite's name; it prefixes every metric the objective returns (``openllm/score``).
        tasks: the tasks and the metric read from each.
        direction: ``max`` when higher metrics are better (accuracies), ``min`` when lower are
            (perplexities). Declared once for the whole suite; every metric lm-eval marks with the
            other direction is refused after evaluation.
        weight: the suite's weight in the combined score.
        include_path: directories (or YAML files) of custom lm-eval tasks, relative to the suite
            file when the suite is read from YAML.
        description: free text.

    Example:
        >>> suite = Suite(name="ppl", direction="min",
        ...               tasks=[{"task": "wikitext", "metric": "word_perplexity"}])
        >>> suite.tasks[0].label
        'wikitext/word_perplexity'
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    tasks: tuple[SuiteTask, ...] = Field(min_length=1)
    direction: Literal["max", "min"] = "max"
    weight: float = Field(1.0, gt=0, allow_inf_nan=False)
    include_path: tuple[str, ...] = ()
    description: str = ""

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                f"a suite name may only use letters, digits, '_', '.' and '-', but got {value!r}"
            )
        return value

    @model_validator(mode="after")
    def _check_unique(self) -> Suite:
        seen: set[str] = set()
        for task in self.tasks:
            if task.label in seen:
                raise ValueError(f"suite {self.name!r} lists {task.label} twice; list each metric once")
            seen.add(task.label)
        shots: dict[str, int | None] = {}
        for task in self.tasks:
            if task.task in shots and shots[task.task] != task.num_fewshot:
                raise ValueError(
                    f"suite {self.name!r} gives task {task.task!r} two few-shot counts "
                    f"({shots[task.task]} and {task.num_fewshot}); a task is evaluated once per suite"
                )
            shots[task.task] = task.num_fewshot
        return self

    @classmethod
    def from_yaml(cls, path: str | Path) -> Suite:
        """Read a suite file; ``include_path`` entries are relative to the file's directory.

        Example file::

            name: tiny
            direction: min
            include_path: [tasks]
            tasks:
              - {task: tiny_ppl, metric: word_perplexity}
        """
        from ..._yaml import line_lookup, load_yaml

        path = Path(path)
        data, lines = load_yaml(path)
        if not isinstance(data, Mapping):
            raise ConfigError(f"{path}: a suite file must be a mapping with name, tasks, direction, ...")
        data = dict(data)
        data.setdefault("name", path.stem)
        inc = data.get("include_path", ())
        if isinstance(inc, str):
            inc = [inc]
        if isinstance(inc, list):
            data["include_path"] = [str((path.parent / p).resolve()) for p in inc]
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(
                f"{path}: invalid suite\n" + format_validation_error(exc, line_of=line_lookup(lines))
            ) from None


#: The Open LLM Leaderboard (v1) average: six benchmarks, the leaderboard's metric and few-shot
#: count for each, equal weights. lm-eval's own ``openllm`` group declares no aggregate (and, in
#: lm-eval 0.4.13, collapses its ``mmlu`` and ``truthfulqa`` members into one subtask each), so the
#: tasks are listed here one by one. MMLU is lm-eval's ``mmlu`` group aggregate (weighted by
#: subject size); the v1 leaderboard averaged the 57 subjects unweighted, a difference of a fraction
#: of a point.
OPENLLM_V1 = Suite(
    name="openllm",
    description="Open LLM Leaderboard v1: ARC-c 25-shot, HellaSwag 10-shot, MMLU 5-shot, "
    "TruthfulQA-mc2 0-shot, Winogrande 5-shot, GSM8K 5-shot (strict match)",
    direction="max",
    tasks=(
        SuiteTask(task="arc_challenge", metric="acc_norm", num_fewshot=25),
        SuiteTask(task="hellaswag", metric="acc_norm", num_fewshot=10),
        SuiteTask(task="mmlu", metric="acc", num_fewshot=5),
        SuiteTask(task="truthfulqa_mc2", metric="acc", num_fewshot=0),
        SuiteTask(task="winogrande", metric="acc", num_fewshot=5),
        SuiteTask(task="gsm8k", metric="exact_match", filter="strict-match", num_fewshot=5),
    ),
)

#: Suites known by name (``suites: [openllm]``).
BUILTIN_SUITES: dict[str, Suite] = {"openllm": OPENLLM_V1, "openllm_v1": OPENLLM_V1}


def resolve_suites(refs: Sequence[str | Suite | Mapping[str, Any]]) -> tuple[Suite, ...]:
    """Turn suite references (built-in names, YAML paths, inline definitions) into suites.

    Raises:
        ConfigError: an unknown name, a missing file, or two suites with the same name.
    """
    suites: list[Suite] = []
    for ref in refs:
        if isinstance(ref, Suite):
            suites.append(ref)
        elif isinstance(ref, Mapping):
            try:
                suites.append(Suite.model_validate(dict(ref)))
            except ValidationError as exc:
                raise ConfigError("suites: invalid inline suite\n" + format_validation_error(exc)) from None
        elif ref in BUILTIN_SUITES:
            suites.append(BUILTIN_SUITES[ref])
        elif ref.endswith((".yaml", ".yml")) or "/" in ref or "\\" in ref:
            if not Path(ref).is_file():
                raise ConfigError(
                    f"suites: suite file {ref!r} not found (relative paths are read from {Path.cwd()})"
                )
            suites.append(Suite.from_yaml(ref))
        else:
            raise ConfigError(
                f"suites: unknown suite {ref!r}. Fix: use a built-in suite "
                f"({', '.join(sorted(BUILTIN_SUITES))}), the path of a suite YAML file, or an inline "
                "{name, tasks, direction} mapping."
            )
    names = [s.name for s in suites]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(
            f"suites: two suites are named {dupes}; suite names prefix the metrics and must differ"
        )
    return tuple(suites)


def combine_scores(
    suites: Iterable[Suite],
    results: Mapping[str, Mapping[str, Mapping[str, float]]],
    higher_is_better: Mapping[str, Mapping[str, Mapping[str, bool]]] | None = None,
) -> dict[str, float]:
    """Score each suite and combine the suites into ``score`` (higher is better).

    Args:
        suites: the suites evaluated.
        results: per suite name, lm-eval's numbers: ``{task: {"acc_norm,none": 0.5, ...}}`` is
            looked up as ``results[suite.name][task][metric_key]``.
        higher_is_better: lm-eval's direction of each metric, per suite name and task
            (``{suite: {task: {"acc": True}}}``), checked against each suite's direction when given.

    Returns:
        ``score``, ``<suite>/score`` and ``<suite>/<task>/<metric>`` for every task.

    Raises:
        ConfigError: a metric is missing from the results (wrong metric or filter name), is not a
            finite number, or goes the other way than its suite's direction.

    Example:
        >>> s = Suite(name="s", tasks=[{"task": "a", "metric": "acc"},
        ...                            {"task": "b", "metric": "acc", "weight": 3}])
        >>> combine_scores([s], {"s": {"a": {"acc,none": 0.25}, "b": {"acc,none": 0.75}}})["score"]
        0.625
    """
    out: dict[str, float] = {}
    total_weight = 0.0
    total = 0.0
    for suite in suites:
        suite_results = results.get(suite.name, {})
        acc = 0.0
        weights = 0.0
        for task in suite.tasks:
            task_results = suite_results.get(task.task)
            if task_results is None:
                raise ConfigError(
                    f"suite {suite.name!r}: lm-eval returned no results for task {task.task!r} "
                    f"(it returned {sorted(suite_results)}). Fix: a group needs an aggregate_metric_list "
                    "to report a value of its own; list its subtasks instead."
                )
            if task.key not in task_results:
                known = sorted(k for k in task_results if "," in k and "_stderr" not in k)
                raise ConfigError(
                    f"suite {suite.name!r}: task {task.task!r} has no metric {task.key!r}; lm-eval reported "
                    f"{known}. Fix: set `metric`/`filter` of the task to one of these."
                )
            value = float(task_results[task.key])
            if not math.isfinite(value):
                raise ConfigError(f"suite {suite.name!r}: {task.label} is {value}, not a finite number")
            hib = (higher_is_better or {}).get(suite.name, {}).get(task.task, {}).get(task.metric)
            if hib is not None and hib != (suite.direction == "max"):
                other = "max" if hib else "min"
                raise ConfigError(
                    f"suite {suite.name!r} has direction {suite.direction!r}, but lm-eval says "
                    f"{task.label} is {'higher' if hib else 'lower'}-is-better. Fix: move it to a suite "
                    f"with direction: {other}."
                )
            out[f"{suite.name}/{task.label}"] = value
            acc += task.weight * value
            weights += task.weight
        suite_score = acc / weights
        out[f"{suite.name}/score"] = suite_score
        total += suite.weight * (suite_score if suite.direction == "max" else -suite_score)
        total_weight += suite.weight
    out["score"] = total / total_weight
    return out
