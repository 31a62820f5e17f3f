"""ClearML's ``OptimizerBOHB``, repaired (fleet executor only).

Defects of ``clearml/automation/hpbandster/bandster.py`` (2.1.12) handled here:

* ``_convert_hyper_parameters_to_cs`` passes ``q=`` to ConfigSpace, which 1.x refuses
  (``TypeError: ... unexpected keyword argument 'q'``), and maps a ``LogUniformParameterRange`` (a
  ``UniformParameterRange`` subclass) to a linear float over its *exponent bounds*, whose sampled
  exponent is then sent to the task as the value. Here the space comes from
  :func:`~._translate.to_configspace` and each config is decoded to exact hposdk values before it
  becomes a ``parameter_override``.
* ConfigSpace 1.x returns ``numpy.str_``/``numpy.int64`` for categoricals, which Pyro4's serpent
  serializer refuses between hpbandster's master and workers (``don't know how to serialize class
  numpy.str_``); numpy scalars are registered to travel as Python natives.
* The nameserver port is fixed (``local_port=9090``), the master is not told the port, and the
  nameserver is never shut down: two studies on one machine collide. Here port 0 picks a free port,
  the master and workers are given it, and ``stop()`` shuts the nameserver down.
* ``stop()`` fails before ``start()`` (``self._bohb`` is None) and after a run without results
  (``all_runs[-1]``); here it only shuts things down.
* hpbandster counts the budget rungs with a float truncation, so some ranges lose their smallest
  rung (``min_budget=1, max_budget=243, eta=3`` starts at 3; ``1..1000, eta=10`` at 10), and its
  budgets times ``max_iteration_per_job`` are not the rounded ones local BOHB records. Here the
  rungs are :func:`hposdk.backends.hpbandster.budgets`, as on the local backend, and the budget a
  task receives is exactly one of them: ``trial.budget`` and ``TrialResult.budget`` are the same
  numbers on both backends.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from typing import Any

from clearml.automation.hpbandster import OptimizerBOHB
from clearml.automation.hpbandster import bandster as _bandster
from clearml.automation.hpbandster.bandster import _TrainsBandsterWorker

from ..hpbandster import budgets
from ._strategies import HposdkStrategy
from ._translate import decode_configspace, to_configspace

__all__ = ["HposdkBOHB", "register_numpy_for_pyro"]

_registered = False


def register_numpy_for_pyro() -> None:
    """Let numpy scalars cross Pyro4 (serpent) as the Python natives they hold (idempotent)."""
    global _registered
    if _registered:
        return
    import numpy as np
    from Pyro4.util import SerpentSerializer

    for t in (np.str_, np.bytes_, np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16,
              np.uint32, np.uint64, np.float16, np.float32, np.float64):
        SerpentSerializer.register_type_replacement(t, lambda obj: obj.item())
    _registered = True


class _HposdkBandsterWorker(_TrainsBandsterWorker):  # type: ignore[misc]
    """ClearML's BOHB worker (launch, poll, abort at the budget), fed exact hposdk values."""

    optimizer: HposdkBOHB

    def compute(self, config: dict[str, Any], budget: float, **kwargs: Any) -> dict[str, Any]:
        opt = self.optimizer
        params = decode_configspace(opt.hposdk_space, config)
        override = opt.hposdk_override(params)
        if opt.hposdk_budget_param:
            # hposdk objectives read trial.budget; ClearML only aborts a job at budget * scale iterations.
            override[opt.hposdk_budget_param] = opt.hposdk_iterations(budget)
        me = threading.get_ident()
        _WAKERS[me] = opt.hposdk_stopping
        try:
            result: dict[str, Any] = super().compute(override, budget, **kwargs)
        finally:
            _WAKERS.pop(me, None)
        return result


# ClearML's BOHB worker polls its job with time.sleep(pool period) -- minutes on a real fleet -- in a
# Pyro thread, so a stopped run would leave that thread sleeping. The module's sleep is replaced
# with one that a stopping run interrupts (the compute then ends with _Stopped, which nobody awaits).
_WAKERS: dict[int, threading.Event] = {}


class _Stopped(Exception):
    """The BOHB run was stopped while this worker polled its job."""


def _interruptible_sleep(seconds: float) -> None:
    event = _WAKERS.get(threading.get_ident())
    if event is None:
        time.sleep(seconds)
    elif event.wait(seconds):
        raise _Stopped("the BOHB run was stopped")


_bandster.sleep = _interruptible_sleep  # type: ignore[assignment]


class HposdkBOHB(HposdkStrategy, OptimizerBOHB):  # type: ignore[misc]
    """``OptimizerBOHB`` that works with ConfigSpace 1.x, sends exact values, and cleans up.

    Extra keyword args: ``hposdk_budget_param`` (a ClearML parameter name such as
    ``hposdk/budget`` that receives each job's budget in iterations, or None).
    Pass ``local_port=0`` for a free nameserver port.
    """

    _namespace: Any
    _bohb: Any
    _objective_metric: Any

    def __init__(self, *args: Any, hposdk_budget_param: str | None = None, **kwargs: Any) -> None:
        self.hposdk_budget_param = hposdk_budget_param
        super().__init__(*args, **kwargs)
        self._hposdk_workers: list[Any] = []
        self.hposdk_stopping = threading.Event()

    def hposdk_iterations(self, budget: float) -> float:
        """A BOHB budget (a fraction of ``max_iteration_per_job``) in iterations: the rung of
        :func:`~hposdk.backends.hpbandster.budgets` it stands for, free of float error."""
        iterations = float(budget) * float(self._max_iteration_per_job)
        rungs = self._hposdk_rungs()
        return min(rungs, key=lambda r: abs(r - iterations))

    def _hposdk_rungs(self) -> list[float]:
        eta = float(self._bohb_kwargs.get("eta", 3))
        return budgets(float(self._min_iteration_per_job), float(self._max_iteration_per_job), eta)

    def _convert_hyper_parameters_to_cs(self) -> Any:
        return to_configspace(self.hposdk_space, seed=self.hposdk_seed)

    def start(self) -> None:
        """Start a nameserver, the workers and BOHB; return when BOHB is done or stopped."""
        import hpbandster.core.nameserver as hpns
        from hpbandster.optimizers import BOHB

        register_numpy_for_pyro()
        run_id = f"hposdk_{uuid.uuid4().hex[:12]}"
        self._namespace = hpns.NameServer(run_id=run_id, host="127.0.0.1", port=self._nameserver_port)
        host, port = self._namespace.start()
        try:
            for i in range(self._num_concurrent_workers):
                w = _HposdkBandsterWorker(
                    optimizer=self,
                    sleep_interval=int(self.pool_period_minutes * 60),
                    budget_iteration_scale=self._max_iteration_per_job,
                    base_task_id=self._base_task_id,
                    objective=self._objective_metric.objectives[0],
                    queue_name=self._execution_queue,
                    nameserver=host,
                    nameserver_port=port,
                    run_id=run_id,
                    id=i,
                )
                w.run(background=True)
                self._hposdk_workers.append(w)
            self._bohb = BOHB(
                configspace=self._convert_hyper_parameters_to_cs(),
                run_id=run_id,
                nameserver=host,
                nameserver_port=port,
                min_budget=float(self._min_iteration_per_job) / float(self._max_iteration_per_job),
                **self._bohb_kwargs,
            )
            # The rungs of local BOHB (see the module docstring), as fractions of max_iteration_per_job.
            rungs = [r / float(self._max_iteration_per_job) for r in self._hposdk_rungs()]
            self._bohb.budgets = rungs
            self._bohb.max_SH_iter = len(rungs)
            self._bohb.config.update(budgets=rungs, max_SH_iter=len(rungs))
            if self.budget.jobs.limit:
                self.budget.jobs.limit *= len(self._bohb.budgets)
            if self.budget.iterations.limit:
                self.budget.iterations.limit *= len(self._bohb.budgets)
            self._res = self._bohb.run(n_iterations=self.total_max_jobs, min_n_workers=self._num_concurrent_workers)
        finally:
            self.stop()

    def stop(self) -> None:
        """Shut down BOHB, its workers and the nameserver (safe to call more than once)."""
        self.hposdk_stopping.set()  # wakes workers polling a job (see _interruptible_sleep)
        bohb, self._bohb = self._bohb, None
        if bohb is not None:
            bohb.shutdown(shutdown_workers=True)
            # The dispatcher keeps a Pyro proxy per worker; each open connection holds a thread of the
            # worker's daemon in recv() until the proxy lets go of it.
            dispatcher = getattr(bohb, "dispatcher", None)
            for w in list(getattr(dispatcher, "worker_pool", {}).values()):
                with contextlib.suppress(Exception):
                    w.proxy._pyroRelease()
        # The workers' own Pyro daemons (and their thread pools) outlive BOHB's shutdown message:
        # stop them and wait for their threads, so nothing of this run keeps running.
        workers, self._hposdk_workers = self._hposdk_workers, []
        for w in workers:
            daemon = getattr(w, "pyro_daemon", None)
            if daemon is not None:
                with contextlib.suppress(Exception):
                    daemon.shutdown()
            thread = getattr(w, "thread", None)
            if thread is not None:
                thread.join(timeout=10)
        deadline = time.monotonic() + 10  # computes end at their next poll (interrupted above)
        while any(e is self.hposdk_stopping for e in list(_WAKERS.values())) and time.monotonic() < deadline:
            time.sleep(0.02)
        ns, self._namespace = self._namespace, None
        if ns is not None:
            ns.shutdown()
        self._stop_event.set()
