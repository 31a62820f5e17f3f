"""controller='remote': the optimizer itself runs as a ClearML task on a services agent.

``launch_controller`` (this process) creates a task that runs
``python -m hposdk.backends.clearml._controller``, attaches the study (configuration object
``hposdk_controller``: the StudyConfig with ``controller='local'``) and the study record so far
(``hposdk_record_in``, so a resumed study keeps its trials), and enqueues it in
``controller_queue`` (``services``). With ``wait=True`` it then follows the task: the controller
publishes its record (``hposdk_record``) every ``report_period_min`` and at the end, and finished
trials are copied into the local record as they appear.

On the agent, :func:`main` rebuilds the study from the configuration, runs it with the fleet
executor in that process, and publishes the record.
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ..._record import read_record
from .._base import RunSession, StudySpec
from ._options import ClearMLOptions, create_module_task

__all__ = ["CONTROLLER_CONFIG", "RECORD_CONFIG", "RECORD_IN_CONFIG", "controller_document", "launch_controller", "main"]

CONTROLLER_CONFIG = "hposdk_controller"
RECORD_IN_CONFIG = "hposdk_record_in"
RECORD_CONFIG = "hposdk_record"
_FINAL = ("completed", "published", "closed", "failed", "stopped")


def controller_document(spec: StudySpec, opts: ClearMLOptions) -> dict[str, Any]:
    """The StudyConfig the controller task runs (this study, with the controller in that process)."""
    goals = spec.goals
    # One objective as metric/mode (StudyConfig takes either that or objectives, not both).
    aims: dict[str, Any] = (
        {"objectives": dict(goals.objectives)} if goals.multi else {"metric": spec.metric, "mode": spec.mode})
    return {
        "name": spec.name,
        "objective": spec.objective_ref,
        "space": spec.space.to_dict(),
        **aims,
        "composites": {k: v.model_dump() for k, v in goals.composites.items()},
        # Text only: check_remote refuses callable constraints with controller='remote'.
        "constraints": [c.text for c in goals.constraints if c.fn is None],
        "pruning_metric": goals.pruning_metric,
        "backend": "clearml",
        "optimizer": spec.optimizer,
        "optimizer_options": dict(spec.optimizer_options),
        "pruner": spec.pruner,
        "pruner_options": dict(spec.pruner_options),
        "n_trials": spec.n_trials,
        "max_concurrent": spec.max_concurrent,
        "seed": spec.seed,
        "fixed": dict(spec.fixed),
        "trial_timeout": spec.trial_timeout,
        "retries": spec.retries,
        "budget": spec.budget.model_dump() if spec.budget else None,
        "backend_options": {**opts.model_dump(exclude_defaults=True), "executor": "remote", "controller": "local"},
    }


def launch_controller(spec: StudySpec, session: RunSession, opts: ClearMLOptions, io: Any) -> None:
    """Create and enqueue the controller task; with ``opts.wait``, copy its trials into ``session``."""
    from clearml import Task

    io.check(opts)
    task: Any = create_module_task(Task, opts, f"HPO: {spec.name}", "optimizer", "hposdk.backends.clearml._controller")
    task.set_configuration_object(CONTROLLER_CONFIG, config_text=json.dumps(controller_document(spec, opts)),
                                  config_type="json")
    record = spec.workdir / "study.jsonl"
    if record.exists():
        task.set_configuration_object(RECORD_IN_CONFIG, config_text=record.read_text(), config_type="text")
    Task.enqueue(task, queue_name=opts.controller_queue)
    session.journal.note(kind="clearml_controller", task_id=str(task.id), queue=opts.controller_queue)
    if not opts.wait:
        session.stopping = True
        return
    period = opts.report_period_min * 60.0
    while True:
        status = str(task.get_status_message()[0] if hasattr(task, "get_status_message") else task.status)
        _merge(task, session)
        if status in _FINAL:
            if status != "completed":
                raise RuntimeError(f"the ClearML controller task {task.id} ended with status {status!r}; "
                                   "rerun the study to resume it")
            return
        time.sleep(period)


def _merge(task: Any, session: RunSession) -> None:
    text = task.get_configuration_object(RECORD_CONFIG)
    if not text:
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "study.jsonl"
        path.write_text(text)
        state = read_record(path)
    for number in sorted(state.finished):
        if number not in session.finished:
            session.finish(state.finished[number])


def main() -> int:
    """Entry point on the services agent: run the study and publish its record."""
    from ...study import Study, StudyConfig
    from ._agent import init_task

    task = init_task("hposdk", "HPO controller")
    config = json.loads(task.get_configuration_object(CONTROLLER_CONFIG) or "{}")
    storage = Path(tempfile.mkdtemp(prefix="hposdk-controller-"))
    previous = task.get_configuration_object(RECORD_IN_CONFIG)
    record = storage / config["name"] / "study.jsonl"
    if previous:
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(previous)
    study = Study.from_config(StudyConfig.model_validate({**config, "storage": str(storage)}), progress=False)
    done = threading.Event()

    def publish() -> None:
        if record.exists():
            task.set_configuration_object(RECORD_CONFIG, config_text=record.read_text(), config_type="text")

    def publisher() -> None:
        period = float(config.get("backend_options", {}).get("report_period_min", 5.0)) * 60.0
        while not done.wait(period):
            publish()

    threading.Thread(target=publisher, daemon=True).start()
    try:
        study.optimize()
    finally:
        done.set()
        publish()
    task.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
