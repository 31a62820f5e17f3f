"""The agent-side trial runner: ``python -m hposdk.backends.clearml._agent [--spec FILE]``.

This is the entry point of a base task that hposdk creates for a Python objective. A ClearML agent
clones the base task per trial (``HyperParameterOptimizer`` sets the trial's values on the clone's
``Args/`` section) and runs this module, which

1. attaches to the task (``Task.init``), reads the study (configuration object ``hposdk_study``:
   objective import path, space, objectives, composites, text constraints, fixed values, section,
   each objective's scalar title/series),
2. reads the trial's values from the task's parameters (``task.connect`` + ``get_parameters``; ClearML
   stores them as strings, so each is decoded with the hposdk parameter: ``'True'`` -> ``True``,
   ``'1024'`` -> ``1024``),
3. runs the objective through :func:`hposdk.backends.run_objective` with the study's goals (so
   composites are computed here, in every report and in the result), reporting every
   ``trial.report(step, ...)`` as ClearML scalars (``Logger.report_scalar``: each objective as its
   scalar, ``objective_title``/``objective_series``, by default ``<name>``/``<name>``; every other
   metric as ``<name>``/``<name>``), then the final metrics at the last step,
4. stores the full outcome (state, metrics, error) as the configuration object ``hposdk_outcome`` and
   exits non-zero when the trial failed, so the task is marked failed.

Run locally (no agent), ``--spec`` gives the study and the trial's values (``params``); with
``CLEARML_OFFLINE_MODE=1`` everything lands in an offline session (how the tests check it).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..._goals import Goals
from ...spaces import SearchSpace
from ...trial import Report, Trial
from ._translate import clearml_name, decode_string

__all__ = ["OUTCOME_CONFIG", "STUDY_CONFIG", "main", "metric_scalar", "report_metrics", "study_goals"]

STUDY_CONFIG = "hposdk_study"
OUTCOME_CONFIG = "hposdk_outcome"
#: The section of hposdk's own per-trial values (trial number, BOHB budget) on a created base task.
HPOSDK_SECTION = "hposdk"


def metric_scalar(name: str, study: Mapping[str, Any]) -> tuple[str, str]:
    """The ClearML (title, series) a metric is reported as (an objective: its scalar)."""
    scalars = study.get("scalars") or {}
    if name in scalars:
        title, series = scalars[name]
        return str(title), str(series)
    if name == study.get("metric"):  # a study document written before "scalars"
        return study.get("title") or name, study.get("series") or name
    return name, name


def study_goals(study: Mapping[str, Any]) -> Goals:
    """The objectives, composites, text constraints and pruning metric of a study document."""
    return Goals.from_dict(study)


def report_metrics(logger: Any, metrics: Mapping[str, Any], step: int, study: Mapping[str, Any]) -> None:
    """Report the numeric ``metrics`` at iteration ``step`` (non-numbers are skipped)."""
    for name, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        title, series = metric_scalar(name, study)
        logger.report_scalar(title=title, series=series, value=float(value), iteration=int(step))


class AgentTrial(Trial):
    """The Trial on an agent: reports become ClearML scalars (pruning is ClearML's: it aborts the task)."""

    def __init__(self, logger: Any, study: Mapping[str, Any], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._logger = logger
        self._study = study

    def _on_report(self, report: Report) -> None:
        report_metrics(self._logger, report.metrics, report.step, self._study)


def read_params(task: Any, study: Mapping[str, Any]) -> dict[str, Any]:
    """The trial's exact hposdk values from the task's ``<section>/<name>`` parameters.

    ``task.connect`` registers the section on a local run and, on an agent, is ClearML's documented
    way to receive the clone's values; they are then read as the strings ClearML stores
    (``get_parameters``) and decoded with the hposdk parameter, because ``connect`` casts to the
    *default's* type (a Discrete of mixed types would come back wrong).
    """
    space = SearchSpace.from_dict(study["space"])
    section = study.get("section") or None
    names = study.get("names") or {}
    groups: dict[str, dict[str, Any]] = {}
    for name, value in (study.get("params") or {}).items():
        sec, _, key = clearml_name(name, section, names).rpartition("/")
        groups.setdefault(sec or "General", {})[key] = _as_task_value(value)
    for sec, defaults in groups.items():
        task.connect(defaults, name=sec)
    raw = task.get_parameters(backwards_compatibility=False) or {}
    params: dict[str, Any] = {}
    missing = []
    for name, p in space.items():
        key = clearml_name(name, section, names)
        if key not in raw:
            missing.append(key)
            continue
        try:
            params[name] = decode_string(p, raw[key])
        except (TypeError, ValueError) as exc:
            raise SystemExit(f"hposdk agent: parameter {key}={raw[key]!r} is not a value of {p!r}: {exc}") from None
    if missing:
        raise SystemExit(f"hposdk agent: the task has no parameter(s) {missing}; it has {sorted(raw)}")
    return params


def _as_task_value(value: Any) -> Any:
    # ClearML stores None as '' (and connect() skips it), so a None default is connected as ''.
    return "" if value is None else value


def _hposdk_value(task: Any, name: str) -> str | None:
    raw = task.get_parameters(backwards_compatibility=False) or {}
    value = raw.get(f"{HPOSDK_SECTION}/{name}")
    return value if value not in (None, "") else None


def _load_study(task: Any, spec_path: str | None) -> dict[str, Any]:
    from clearml.config import running_remotely

    if running_remotely() or spec_path is None:
        text = task.get_configuration_object(STUDY_CONFIG)
        if not text:
            raise SystemExit(f"hposdk agent: the task has no configuration object {STUDY_CONFIG!r} "
                             "(was it created by hposdk?), and no --spec was given")
    else:
        text = Path(spec_path).read_text()
        task.set_configuration_object(STUDY_CONFIG, config_text=text, config_type="json")
    study: dict[str, Any] = json.loads(text)
    return study


def run(task: Any, study: Mapping[str, Any]) -> int:
    """Run one trial in ``task``; returns the process exit code (1 when the trial failed)."""
    from ...study import resolve_objective
    from .._base import run_objective

    params = read_params(task, study)
    number_text = _hposdk_value(task, "number")
    budget_text = _hposdk_value(task, "budget")
    logger = task.get_logger()
    objective = resolve_objective(study["objective"])
    trial = AgentTrial(
        logger, study, int(number_text) if number_text else int(study.get("number", 0)),
        {**(study.get("fixed") or {}), **params},
        budget=float(budget_text) if budget_text else study.get("budget"),
        study_name=study.get("name"),
    )
    outcome = run_objective(objective, trial, study_goals(study))
    final_step = outcome.reports[-1].step if outcome.reports else 0
    if outcome.metrics and outcome.state.value != "FAILED":
        # At the last reported step: ClearML's objective is the last value of its scalar.
        report_metrics(logger, outcome.metrics, final_step, study)
    record = {
        "state": outcome.state.value,
        "value": outcome.value,
        "metrics": _jsonable(outcome.metrics),
        "error": outcome.error,
        "config_error": outcome.config_error,
        "reports": [r.model_dump() for r in outcome.reports],
        "params": params,
        "accessed": sorted(outcome.accessed),
        "duration_s": outcome.duration_s,
    }
    task.set_configuration_object(OUTCOME_CONFIG, config_text=json.dumps(record), config_type="json")
    if outcome.error:
        print(f"hposdk agent: trial failed:\n{outcome.error}", file=sys.stderr)
    task.flush(wait_for_uploads=True)
    return 1 if outcome.state.value == "FAILED" else 0


def _jsonable(metrics: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in metrics.items():
        try:
            json.dumps(v)
            out[k] = v
        except (TypeError, ValueError):
            out[k] = repr(v)
    return out


def init_task(project: str, name: str) -> Any:
    """``Task.init`` with the side effects an objective runner does not want turned off."""
    from clearml import Task
    from clearml.backend_interface.task.task import Task as _BackendTask

    # ClearML's subprocess reporter makes Task.close() wait ~11 s for nothing (2.1.12, offline and
    # online); the thread reporter (its default off Linux) flushes the same events at once.
    _BackendTask._report_subprocess_enabled = False  # type: ignore[assignment]
    return Task.init(project_name=project, task_name=name, reuse_last_task_id=False,
                     auto_connect_arg_parser=False, auto_connect_frameworks=False,
                     auto_resource_monitoring=False)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the agent runner (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m hposdk.backends.clearml._agent",
                                     description="Run one hposdk trial inside a ClearML task.")
    parser.add_argument("--spec", help="study JSON for a local run (on an agent it comes from the task)")
    args = parser.parse_args(argv)
    local = json.loads(Path(args.spec).read_text()) if args.spec else {}
    task = init_task(local.get("project") or "hposdk", local.get("task_name") or f"{local.get('name', 'hposdk')} trial")
    study = _load_study(task, args.spec)
    code = run(task, study)
    print(f"hposdk agent: task {task.id} finished with exit code {code}")
    task.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
