"""The Ray Tune backend: hposdk studies on a local Ray runtime or on a Ray cluster.

Install with ``pip install hposdk[ray]`` (``hposdk[ray,bohb]`` for ``optimizer='bohb'``).

What runs where:

* **optimizers** -- ``grid`` and ``random`` points come from the hposdk space model (a small Ray
  ``Searcher`` proposes them), so the same seed gives the same trials as on the local backend;
  ``tpe`` is Ray's ``OptunaSearch`` over hposdk's exact Optuna distributions with a seeded
  ``TPESampler`` (``optimizer_options`` are the sampler's); ``bohb`` is Ray's ``TuneBOHB``
  (``optimizer_options`` are BOHB's model options) scheduled by synchronous Hyperband over the
  study's ``budget``: Ray's ``HyperBandForBOHB`` with hpbandster's brackets, each filled once
  (``_driver.SyncHyperBand``). Its model hears every rung result and draws from a numpy stream
  seeded as the local backend's, so the same seed proposes and promotes the same configurations
  as ``optimizer='bohb'`` on the local backend.
* **pruners** (Ray schedulers, driven by ``trial.report``) -- ``asha``, ``hyperband``,
  ``median``; ``pruner_options`` are the scheduler's arguments. Progress is counted in reports
  (Ray's ``training_iteration``); with a study ``budget`` ASHA's ``max_t``, ``grace_period`` and
  ``reduction_factor`` default to ``max_budget``, ``min_budget`` and ``eta`` (HyperBand's
  ``max_t`` and ``reduction_factor`` likewise; ``hyperband`` runs BOHB's synchronous
  Hyperband, since Ray's ``HyperBandScheduler`` stops nothing when trials come one at a
  time). A Ray scheduler
  stops the objective at the report it decided on (``should_prune()`` stays False on Ray); the
  trial is recorded as PRUNED with that report's metrics. Schedulers never stop a trial merely
  for reaching ``max_t`` (``stop_last_trials`` is fixed to False): the objective decides when it
  is done, as on every backend.
* **resources** -- ``backend_options``: see :class:`RayOptions`.

Every Ray trial becomes an hposdk :class:`~hposdk.result.TrialResult` in the study record, so
``result.best``, exports, ``hposdk show`` and resume work as on the local backend; each trial's
``info`` names its Ray trial id and the Ray experiment directory (kept under the study's
directory unless ``storage_path`` says otherwise).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, PositiveFloat

from ..._imports import require
from ...exceptions import ConfigError, MissingExtraError, UnsupportedError
from .. import _optuna
from .._base import Backend, Capabilities, RunSession, StudySpec, check_options
from ._space import decode, encode, to_configspace, to_ray

if importlib.util.find_spec("ray") is None:
    # A cheap check (Ray itself is imported only when a study runs): `hposdk backends` then
    # shows the install hint instead of claiming the backend works.
    raise MissingExtraError(
        "Using backend='ray', but the 'ray' package is not installed. "
        "Make sure to install hposdk using `pip install hposdk[ray]`."
    )

__all__ = ["RayBackend", "RayOptions", "decode", "encode", "to_configspace", "to_ray"]

logger = logging.getLogger("hposdk.backends.ray")

#: hposdk pruner name -> Ray scheduler class (in ``ray.tune.schedulers``).
SCHEDULERS = {
    "asha": "AsyncHyperBandScheduler",
    "hyperband": "HyperBandScheduler",
    "median": "MedianStoppingRule",
}
# Set by the backend, not by pruner_options: metric/mode come from the study, and
# stop_last_trials=False keeps "the objective decides when it is done" on every backend.
_SCHEDULER_FIXED = {"metric", "mode", "stop_last_trials"}
# Ray's HyperBand (and so BOHB) reads result[time_attr] from every live trial (hyperband.py
# _Bracket._get_result_time): only keys present in every hposdk report are safe.
_ALWAYS_REPORTED = {"training_iteration", "time_total_s"}


def _bohb_model_options(
    min_points_in_model: int | None = None,
    top_n_percent: int = 15,
    num_samples: int = 64,
    random_fraction: float = 1 / 3,
    bandwidth_factor: float = 3,
    min_bandwidth: float = 1e-3,
) -> None:
    """The options of hpbandster's BOHB model (its ``__init__`` takes ``**kwargs``, so it cannot
    be inspected)."""


class RayOptions(BaseModel):
    """Options of the Ray backend (``backend_options``).

    Attributes:
        address: ``None`` starts a local Ray runtime sized to this machine (and stops it at the
            end), unless ``$RAY_ADDRESS`` names a cluster (as in the script ``hposdk slurm``
            writes); ``"auto"`` or ``"host:port"`` connects to a running cluster. If Ray is
            already initialised in this process, that runtime is used as it is. A cluster with
            token authentication needs ``RAY_AUTH_MODE=token`` exported (Ray does not send its
            token to an explicit address otherwise).
        cpus: CPUs each trial reserves.
        gpus: GPUs each trial reserves; fractions share a GPU (``0.5``: two trials per GPU).
        reuse_actors: run successive trials in the same Ray worker process (a trivial trial
            then costs tens of milliseconds instead of about two seconds). Turn it off for
            objectives that leave global state behind (module caches, CUDA contexts...).
        storage_path: where Ray keeps its experiment directory (results, checkpoints, error
            files); default ``<study dir>/ray``. On a multi-node cluster it must be a shared
            filesystem or a cloud URI, as Ray requires.
        data: large constant objects (datasets, arrays) the objective reads from
            ``trial.params`` like ``fixed`` values. They are put into Ray's object store once
            (``tune.with_parameters``) instead of being serialised into every trial, and are not
            written to the study record.
        checkpoints_to_keep: how many checkpoints (``trial.save_checkpoint``) Ray keeps per trial.
        verbose: Ray's console output: 0 silent (hposdk shows progress), 1 status, 2 results.
        tensorboard: also write Ray's TensorBoard event files per trial. Off by default: Ray's
            TensorBoard logger imports tensorboardX, and with it torch, into the driver (about
            1.4 s of every study's start here), and the study record already holds every report.
            Ray's CSV and JSON result files are written either way.

    Example:
        >>> RayOptions(cpus=2, gpus=0.5).gpus
        0.5
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    address: str | None = None
    cpus: PositiveFloat = 1.0
    gpus: NonNegativeFloat = 0.0
    reuse_actors: bool = True
    storage_path: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    checkpoints_to_keep: int = Field(1, ge=1)
    verbose: Literal[0, 1, 2] = 0
    tensorboard: bool = False


class RayBackend(Backend):
    """Runs studies with Ray Tune (grid, random, TPE, BOHB; ASHA, HyperBand, median stopping)."""

    name = "ray"
    extra = "ray"
    capabilities = Capabilities(
        optimizers=("grid", "random", "tpe", "bohb"),
        pruners=tuple(SCHEDULERS),
        parallel=True,
        resume=True,
        multi_objective=("grid", "random", "tpe"),
        # bohb is not a budget optimizer here: a Ray trial is one configuration that
        # HyperBandForBOHB pauses and resumes at budgets counted in reports, so trial.budget is
        # max_budget and TrialResult.budget is the budget the trial reached.
        notes="local Ray runtime or a Ray cluster (backend_options address); trials are Ray actors",
    )
    options_model = RayOptions

    @classmethod
    def check(cls, spec: StudySpec) -> None:
        super().check(spec)
        require("ray.tune", "ray", "backend='ray'")
        from ._trainable import RESERVED

        to_ray(spec.space)  # refuses what Ray cannot hold exactly, naming the parameter
        data = getattr(spec.backend_options, "data", {}) or {}
        clash = sorted(k for k in data if k in spec.space or k in spec.fixed)
        if clash:
            raise ConfigError(f"backend_options data: {clash} are also search-space or fixed keys; "
                              "a key of trial.params comes from one place only")
        if getattr(spec.backend_options, "tensorboard", False) and importlib.util.find_spec("tensorboardX") is None:
            raise ConfigError("backend_options tensorboard=True writes Ray's TensorBoard files, which needs "
                              "tensorboardX: pip install tensorboardX (or leave tensorboard off)")
        for name in {*spec.objectives, spec.pruning_metric}:
            if name in RESERVED:
                raise UnsupportedError(
                    f"backend 'ray': the study metric {name!r} is a key Ray fills in itself; "
                    "return and report the objective's metric under another name"
                )
        if spec.optimizer == "grid":
            spec.space.grid()
        if spec.optimizer == "tpe":
            import optuna

            _optuna.to_optuna(spec.space)
            check_options("optimizer_options (tpe)", spec.optimizer_options, optuna.samplers.TPESampler, {"seed"})
        elif spec.optimizer == "bohb":
            require("hpbandster", "bohb", "optimizer='bohb' on backend='ray'")
            check_options("optimizer_options (bohb)", spec.optimizer_options, _bohb_model_options, set())
            _check_bohb(spec)
        elif spec.optimizer_options:
            raise ConfigError(
                f"optimizer {spec.optimizer!r} takes no optimizer_options, but got {dict(spec.optimizer_options)}"
            )
        if spec.pruner is not None:
            from ray.tune import schedulers

            check_options(f"pruner_options ({spec.pruner})", _ray_pruner_options(spec),
                          getattr(schedulers, SCHEDULERS[spec.pruner]), _SCHEDULER_FIXED)
            if spec.pruner == "hyperband":
                _check_time_attr(spec.pruner_options)
            _scheduler(spec)  # Ray validates its arguments with assert; fail here, clearly
        elif spec.pruner_options:
            raise ConfigError(f"pruner_options given without a pruner: {dict(spec.pruner_options)}")
        try:
            import ray.cloudpickle

            ray.cloudpickle.dumps(spec.objective)
        except Exception as exc:  # noqa: BLE001 - any pickling failure means the same fix
            raise ConfigError(
                f"backend 'ray' sends the objective to Ray workers, but {spec.objective!r} cannot be "
                f"serialised ({exc}). Fix: make it a module-level function of an importable module."
            ) from None

    def run(self, spec: StudySpec, session: RunSession) -> None:
        ray = require("ray", "ray", "backend='ray'")
        opts = spec.backend_options
        if not isinstance(opts, RayOptions):
            opts = RayOptions.model_validate(opts.model_dump())
        started = _init_ray(ray, opts)
        try:
            _run(spec, session, opts)
        finally:
            if started:
                ray.shutdown()


# --- building the Ray objects ---------------------------------------------------------------------


def _check_bohb(spec: StudySpec) -> None:
    if spec.pruner is not None or spec.pruner_options:
        raise ConfigError(
            "optimizer 'bohb' brings its own scheduler (Ray's HyperBandForBOHB over the study budget); "
            f"leave pruner unset (got pruner={spec.pruner!r})"
        )
    budget = spec.budget
    if budget is None:
        raise ConfigError(
            "optimizer 'bohb' needs a budget, e.g. budget={'min_budget': 1, 'max_budget': 9, 'eta': 3}: "
            "on Ray it is counted in reports (trial.report calls), at which HyperBandForBOHB "
            "pauses and stops trials"
        )
    if budget.max_budget != int(budget.max_budget):
        raise ConfigError(
            f"optimizer 'bohb' on Ray counts the budget in reports, so max_budget must be a whole "
            f"number, but got {budget.max_budget}"
        )
    smallest = _bohb_min_budget(budget.max_budget, budget.eta)
    if not math.isclose(budget.min_budget, smallest):
        raise ConfigError(
            f"Ray's HyperBandForBOHB derives the smallest budget from max_budget and eta "
            f"(max_budget / eta**round(log_eta(max_budget)) = {smallest}); it cannot use "
            f"min_budget={budget.min_budget}. Fix: set min_budget={smallest}, or change max_budget/eta"
        )


def _bohb_min_budget(max_budget: float, eta: float) -> int:
    # Mirrors HyperBandScheduler.__init__: s_max_1 = round(log(max_t)/log(eta)) + 1 and
    # r0(s) = int(max_t * eta**-s), for the largest bracket whose r0 is not 0.
    s_max = round(math.log(max_budget) / math.log(eta))
    for s in range(s_max, -1, -1):
        r0 = int(max_budget * eta ** (-s))
        if r0 > 0:
            return r0
    return int(max_budget)


def _check_time_attr(options: Any) -> None:
    attr = options.get("time_attr", "training_iteration")
    if attr not in _ALWAYS_REPORTED:
        raise ConfigError(
            f"pruner 'hyperband' on Ray reads time_attr={attr!r} from every report, which hposdk "
            f"reports do not always carry; use one of {sorted(_ALWAYS_REPORTED)}"
        )


def _scheduler(spec: StudySpec) -> Any:
    """The Ray scheduler of the study (None for FIFO)."""
    from ray.tune import schedulers

    # Ray's own Hyperband schedulers misplace trials proposed one at a time (see SyncHyperBand).
    from ._driver import SyncHyperBand

    if spec.optimizer == "bohb":
        assert spec.budget is not None
        return SyncHyperBand(
            time_attr="training_iteration", metric=spec.pruning_metric, mode=spec.goals.pruning_mode,
            max_t=int(spec.budget.max_budget), reduction_factor=spec.budget.eta, stop_last_trials=False,
        )
    if spec.pruner is None:
        return None
    options: dict[str, Any] = {"time_attr": "training_iteration"}
    if spec.pruner == "asha" and spec.budget is not None:
        options.update(max_t=spec.budget.max_budget, grace_period=spec.budget.min_budget,
                       reduction_factor=spec.budget.eta)
    if spec.pruner == "hyperband" and spec.budget is not None:
        options.update(max_t=spec.budget.max_budget, reduction_factor=spec.budget.eta)
    if spec.pruner == "median":
        # Ray's defaults (time_total_s, a 60 s grace period) assume long trials; count reports
        # instead. min_time_slice=inf: never PAUSE a trial to let others catch up, since an
        # objective without checkpoints would restart from scratch.
        options.update(grace_period=1, min_time_slice=math.inf)
    options.update(_ray_pruner_options(spec))
    if spec.pruner in ("asha", "hyperband"):
        options["stop_last_trials"] = False
    try:
        # With several objectives the scheduler watches the declared pruning metric.
        # Ray's HyperBandScheduler stops nothing when trials are proposed one at a time;
        # SyncHyperBand takes the same options.
        cls = SyncHyperBand if spec.pruner == "hyperband" else getattr(schedulers, SCHEDULERS[spec.pruner])
        return cls(metric=spec.pruning_metric, mode=spec.goals.pruning_mode, **options)
    except (AssertionError, ValueError, TypeError) as exc:
        # Ray validates scheduler arguments with `assert` (async_hyperband.py __init__).
        raise ConfigError(f"pruner_options ({spec.pruner}) {dict(spec.pruner_options)}: {exc or 'invalid'}") from None


def _ray_pruner_options(spec: StudySpec) -> dict[str, Any]:
    """``pruner_options`` in Ray's terms.

    The median pruner's portable options (the ones the local and ClearML backends take, with
    Optuna's names) keep their meaning here, so one study file runs on every backend:
    ``n_startup_trials`` (trials that must finish before any pruning) is Ray's
    ``min_samples_required``; ``n_warmup_steps`` (steps 0..n-1 are never pruned; steps are 0-based)
    is Ray's ``grace_period`` in reports, which count from 1.
    """
    options = dict(spec.pruner_options)
    if spec.pruner == "median":
        if "n_startup_trials" in options:
            options["min_samples_required"] = options.pop("n_startup_trials")
        if "n_warmup_steps" in options:
            options["grace_period"] = options.pop("n_warmup_steps") + 1
    return options


def _searcher(spec: StudySpec, bohb_seed: int | None = None) -> Any:
    """The wrapped Ray searcher for tpe/bohb (grid and random need none).

    ``bohb_seed``: BOHB's seed for this run (``hpbandster.run_seed``); the study seed when None.
    """
    if spec.optimizer == "tpe":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        # The sampler is passed built and seeded: OptunaSearch ignores `seed` when a sampler is
        # given, and metric/mode must reach the searcher itself (it ignores TuneConfig's).
        sampler = optuna.samplers.TPESampler(seed=spec.seed, **dict(spec.optimizer_options))
        # Several objectives: OptunaSearch takes lists and Optuna's TPE becomes MOTPE.
        metric: Any = list(spec.objectives) if spec.goals.multi else spec.metric
        mode: Any = list(spec.objectives.values()) if spec.goals.multi else spec.mode
        return OptunaSearch(space=_optuna.to_optuna(spec.space), metric=metric, mode=mode, sampler=sampler)
    if spec.optimizer == "bohb":
        from ray.tune.search.bohb import TuneBOHB

        seed = spec.seed if bohb_seed is None else bohb_seed
        return TuneBOHB(space=to_configspace(spec.space, seed=seed), metric=spec.metric, mode=spec.mode,
                        seed=seed, bohb_config=dict(spec.optimizer_options) or None)
    return None


def _init_ray(ray: Any, opts: RayOptions) -> bool:
    """Start or connect to Ray unless this process already has a runtime; True if we did."""
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING}
    # Ray itself connects to $RAY_ADDRESS when no address is given (the Slurm script sets it).
    address = opts.address or os.environ.get("RAY_ADDRESS") or None
    if address is None:
        ray.init(include_dashboard=False, **kwargs)
        return True
    try:
        ray.init(address=address, **kwargs)
    except ConnectionError as exc:
        hint = ""
        if _caused_by_authentication(exc):
            # Ray only sends its token (~/.ray/auth_token) to an explicit address when asked
            # to (ray/_private/worker.py: "an explicit address ... never does").
            hint = (" The cluster uses token authentication: export RAY_AUTH_MODE=token (with the "
                    "cluster's token in ~/.ray/auth_token or RAY_AUTH_TOKEN) and run again.")
        raise ConfigError(f"backend 'ray': cannot connect to the Ray cluster at {address!r} ({exc}).{hint}") from exc
    return True


def _caused_by_authentication(exc: BaseException) -> bool:
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen:
        if type(cur).__name__ == "AuthenticationError" or "InvalidAuthToken" in str(cur):
            return True
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return False


@contextlib.contextmanager
def _environ(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _run(spec: StudySpec, session: RunSession, opts: RayOptions) -> None:
    from ray import tune

    from ._driver import (
        Coordinator,
        HposdkSearcher,
        RecordCallback,
        SchedulerProxy,
        SyncHyperBand,
        trial_dirname,
        trial_name,
    )
    from ._trainable import StudyPayload, run_trial

    to_run = spec.n_trials - len(session.finished)
    if to_run <= 0:
        return
    storage = Path(opts.storage_path) if opts.storage_path else spec.workdir / "ray"
    storage_path = str(storage if "://" in str(storage) else storage.resolve())
    experiment = f"{spec.name}_{time.strftime('%Y%m%d-%H%M%S')}"
    experiment_dir = f"{storage_path.rstrip('/')}/{experiment}"

    import ray

    bohb_seed = None
    if spec.optimizer == "bohb":
        from ..hpbandster import run_seed

        bohb_seed = run_seed(spec.seed, len(session.finished) + len(session.rerun))  # as the local backend's BOHB
    scheduler = _scheduler(spec)
    coordinator = Coordinator(spec, session, _searcher(spec, bohb_seed), experiment_dir,
                              cluster=ray.get_runtime_context().gcs_address, numpy_seed=bohb_seed,
                              resumes=isinstance(scheduler, SyncHyperBand))
    coordinator.restore_inner()
    if scheduler is not None:
        scheduler = SchedulerProxy(scheduler, coordinator)

    payload = StudyPayload(name=spec.name, objective=spec.objective, metric=spec.goals.portable(),
                           fixed=dict(spec.fixed),
                           data=dict(opts.data), cwd=os.getcwd(), trial_timeout=spec.trial_timeout,
                           quiet=opts.verbose == 0)
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, study=payload),
        {"cpu": opts.cpus, "gpu": opts.gpus},
    )
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=HposdkSearcher(coordinator),
            scheduler=scheduler,
            num_samples=to_run + 1 if coordinator.resumes else to_run,  # see Coordinator.suggest
            reuse_actors=opts.reuse_actors,
            trial_name_creator=trial_name,
            trial_dirname_creator=trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=experiment,
            storage_path=storage_path,
            callbacks=[RecordCallback(coordinator), *_loggers(opts)],
            failure_config=tune.FailureConfig(max_failures=spec.retries),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=opts.checkpoints_to_keep),
            verbose=opts.verbose,
        ),
    )
    # Ctrl-C (and the SIGTERM a Study turns into one) must reach the Study as KeyboardInterrupt
    # so the record notes the interruption; Ray's own handler would swallow the first one.
    env = {
        "TUNE_DISABLE_SIGINT_HANDLER": "1",
        # Ray lets a custom searcher have 1 pending trial at a time (tune_controller.py
        # _get_max_pending_trials), so max_concurrent trials would start one after the other,
        # each waiting for the previous one's worker; the searcher enforces the limit itself.
        "TUNE_MAX_PENDING_TRIALS_PG": str(spec.max_concurrent),
        # The loggers are chosen in _loggers (Ray would add TensorBoard's whenever it imports).
        "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    }
    if opts.verbose == 0:
        # Ray's new console output prints its experiment header and every trial error even
        # at verbose=0 (ray/tune/experimental/output.py); hposdk records and shows those itself.
        env["RAY_AIR_NEW_OUTPUT"] = "0"
    with _environ(**env), _quiet(opts.verbose == 0):
        tuner.fit()


def _loggers(opts: RayOptions) -> list[Any]:
    """Ray's per-trial result files: CSV and JSON always, TensorBoard when asked for."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    loggers: list[Any] = [CSVLoggerCallback(), JsonLoggerCallback()]
    if opts.tensorboard:
        from ray.tune.logger import TBXLoggerCallback

        loggers.append(TBXLoggerCallback())  # check() made sure tensorboardX is installed
    return loggers


@contextlib.contextmanager
def _quiet(enabled: bool) -> Iterator[None]:
    # "Trials did not complete" and per-trial error logs repeat what the hposdk record holds.
    log = logging.getLogger("ray.tune")
    level = log.level
    if enabled:
        log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)
