"""The options of ``backend='clearml'`` (``backend_options``), validated before anything runs."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveFloat, PositiveInt

from ...exceptions import ConfigError

__all__ = ["ClearMLOptions", "create_module_task", "objective_scalars", "resolve_executor", "server_configured"]


class ClearMLOptions(BaseModel):
    """Options of the ClearML backend.

    Where trials run:
        executor: ``local`` runs ClearML's search strategies on this machine with no server (trials
            run in this process, or in worker processes for ``max_concurrent > 1``); ``remote`` sends
            each trial to a ClearML fleet (needs a server); ``auto`` (default) is ``remote`` when a
            ClearML server is configured (``CLEARML_API_HOST`` or an ``api_server`` in clearml.conf)
            and offline mode is off, else ``local``.
        section: the ClearML hyperparameter section of the searched names (``Args/<name>``).
        param_names: full ClearML names of single parameters, when a task calls them differently
            (``{"num_calibration_samples": "Args/num_samples"}``).

    The fleet (``executor='remote'``):
        base_task_id: an existing task or pipeline to clone per trial (the search-space names must
            be its parameters under ``section``; it must report the objective scalar). Without it,
            hposdk creates a base task that runs the study's objective on an agent
            (``python -m hposdk.backends.clearml._agent``).
        objective_title / objective_series: the scalar ClearML optimizes (default: the study metric
            for both); the sign comes from the study's ``mode``. With several objectives, a list
            of one title (series) per objective, in the order of ``objectives`` (default: each
            objective's name); see :func:`objective_scalars`.
        objective_extremum: compare the best value ever reported (``min_global``/``max_global``)
            instead of the last one.
        project: project of the optimizer task and of a created base task.
        spawn_project: project the trial tasks are created in (default: the base task's).
        queue: the agents' queue trials are enqueued in (``execution_queue``).
        controller: ``local`` runs ClearML's optimizer in this process; ``remote`` enqueues it as a
            task in ``controller_queue`` (``services``) and, with ``wait``, follows it from here.
        time_limit_min: ``optimization_time_limit`` (minutes) of the whole study.
        compute_time_limit_min: ``compute_time_limit`` (minutes of trial time, summed).
        max_iteration_per_job / min_iteration_per_job: ClearML's iteration budget of a trial (its
            objective scalar's reported iteration); BOHB's budgets come from the study ``budget``.
        pool_period_min / report_period_min: how often ClearML polls trials and reports progress.
        save_top_k_tasks_only: archive all but the best k trial tasks.
        packages, requirements_file, docker, docker_args, repo, branch, commit, working_dir: how
            agents set up a base task that hposdk creates (hposdk and the objective's module must be
            importable there).
        server_check_timeout_s: seconds for the connection check before anything is sent (ClearML
            itself retries for minutes against an unreachable server).

    On this machine (``executor='local'``):
        record_offline: also record every finished trial as a ClearML offline session, written by a
            background process to ClearML's cache (``CLEARML_CACHE_DIR``, default
            ``~/.clearml/cache``, under ``offline/``); ``Task.import_offline_session`` uploads one later.
        isolate / start_method: as for ``backend='local'`` (worker processes).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    executor: Literal["auto", "local", "remote"] = "auto"
    section: str = Field("Args", pattern=r"^[A-Za-z0-9_.\- ]*$")
    param_names: dict[str, str] = Field(default_factory=dict)

    base_task_id: str | None = None
    objective_title: str | list[str] | None = None
    objective_series: str | list[str] | None = None
    objective_extremum: bool = False
    project: str = "hposdk"
    spawn_project: str | None = None
    queue: str = "default"
    controller: Literal["local", "remote"] = "local"
    controller_queue: str = "services"
    wait: bool = True
    time_limit_min: PositiveFloat | None = None
    compute_time_limit_min: PositiveFloat | None = None
    max_iteration_per_job: PositiveInt | None = None
    min_iteration_per_job: PositiveInt | None = None
    pool_period_min: PositiveFloat = 2.0
    report_period_min: PositiveFloat = 5.0
    save_top_k_tasks_only: PositiveInt | None = None
    packages: list[str] | None = None
    requirements_file: str | None = None
    docker: str | None = None
    docker_args: str | None = None
    repo: str | None = None
    branch: str | None = None
    commit: str | None = None
    working_dir: str | None = None
    bohb_port: NonNegativeInt = 0
    server_check_timeout_s: PositiveFloat = 5.0

    record_offline: bool = False
    isolate: bool = False
    start_method: Literal["spawn", "forkserver", "fork"] = "spawn"


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on", "y")


def server_configured() -> bool:
    """Whether a ClearML server is configured here (and offline mode is off).

    Reads the environment and clearml.conf only; nothing is contacted.
    """
    if _truthy(os.environ.get("CLEARML_OFFLINE_MODE") or os.environ.get("TRAINS_OFFLINE_MODE")):
        return False
    if os.environ.get("CLEARML_API_HOST") or os.environ.get("TRAINS_API_HOST"):
        return True
    conf = os.environ.get("CLEARML_CONFIG_FILE") or os.environ.get("TRAINS_CONFIG_FILE")
    candidates = [Path(conf)] if conf else [Path.home() / "clearml.conf", Path.home() / "trains.conf"]
    for path in candidates:
        try:
            if path.is_file() and "api_server" in path.read_text(errors="replace"):
                return True
        except OSError:
            continue
    return False


def resolve_executor(options: ClearMLOptions) -> Literal["local", "remote"]:
    """``local`` or ``remote`` for ``options.executor`` (``auto``: remote when a server is configured)."""
    if options.executor == "auto":
        return "remote" if server_configured() else "local"
    return options.executor


def objective_scalars(objectives: Sequence[str], options: ClearMLOptions) -> dict[str, tuple[str, str]]:
    """The ClearML scalar (title, series) of each objective, in order.

    An objective is the scalar ``<name>``/``<name>`` unless ``objective_title``/``objective_series``
    say otherwise: a string for a single objective, or a list with one entry per objective.

    Example:
        >>> objective_scalars(["acc", "size_mb"], ClearMLOptions(objective_title=["eval", "model"]))
        {'acc': ('eval', 'acc'), 'size_mb': ('model', 'size_mb')}

    Raises:
        ConfigError: a single title/series for several objectives, a list of the wrong length, or
            two objectives on the same scalar.
    """
    names = list(objectives)

    def per_objective(field: str, given: str | list[str] | None) -> list[str]:
        if given is None:
            return names
        if isinstance(given, str):
            if len(names) == 1:
                return [given]
            raise ConfigError(
                f"backend_options.{field}={given!r} names the scalar of one objective, but the study has "
                f"{len(names)} ({', '.join(names)}). Fix: give a list with one entry per objective, in order "
                f"(e.g. {field}={[given, *names[1:]]!r}), or leave it out (each objective is then the scalar "
                "<name>/<name>, as hposdk's agent reports it)"
            )
        if len(given) != len(names):
            raise ConfigError(
                f"backend_options.{field}: {len(given)} entries {given!r} for {len(names)} objective(s) "
                f"({', '.join(names)}); give exactly one per objective, in order"
            )
        return list(given)

    pairs = list(zip(per_objective("objective_title", options.objective_title),
                     per_objective("objective_series", options.objective_series)))
    seen: dict[tuple[str, str], str] = {}
    for name, pair in zip(names, pairs):
        if pair in seen:
            raise ConfigError(f"backend_options.objective_title/objective_series: the objectives {seen[pair]!r} "
                              f"and {name!r} would both be the ClearML scalar {pair[0]!r}/{pair[1]!r}")
        seen[pair] = name
    return dict(zip(names, pairs))


def create_module_task(task_cls: Any, opts: ClearMLOptions, name: str, task_type: str, module: str) -> Any:
    """A ClearML task that runs ``python -m module`` from ``opts``' repository, packages and docker."""
    packages = opts.packages
    if packages is None and opts.requirements_file is None and opts.repo is None:
        packages = ["hposdk[clearml]"]
    return task_cls.create(
        project_name=opts.project, task_name=name, task_type=task_type,
        repo=opts.repo, branch=opts.branch, commit=opts.commit, working_directory=opts.working_dir,
        module=module, packages=packages, requirements_file=opts.requirements_file,
        docker=opts.docker, docker_args=opts.docker_args, add_task_init_call=False,
        detect_repository=opts.repo is not None,
    )
