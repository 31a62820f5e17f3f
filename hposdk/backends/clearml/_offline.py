"""Background recorder: ``python -m hposdk.backends.clearml._offline`` (started by the local executor).

Reads JSON lines on stdin (a header, then one ``{"trial": TrialResult}`` per finished trial) and
writes each trial as a ClearML offline session (``CLEARML_OFFLINE_MODE=1``): its values under
``<section>/<name>``, its reports and final metrics as scalars, its result as the configuration
object ``hposdk_outcome``. Prints ``session <folder>`` per trial written.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from ._agent import OUTCOME_CONFIG, init_task, report_metrics
from ._translate import clearml_name


def record(header: dict[str, Any], trial: dict[str, Any]) -> str:
    """Write one trial as an offline session; returns the session folder."""
    task = init_task(f"{header['project']}/{header['study']}", f"trial {trial['number']}")
    task.add_tags(["hposdk", str(trial["state"])])
    groups: dict[str, dict[str, Any]] = {}
    for name, value in trial["params"].items():
        sec, _, key = clearml_name(name, header.get("section"), header.get("names")).rpartition("/")
        groups.setdefault(sec or "General", {})[key] = "" if value is None else value
    for sec, values in groups.items():
        task.connect(values, name=sec)
    logger = task.get_logger()
    for rep in trial.get("reports", ()):
        report_metrics(logger, rep["metrics"], rep["step"], header)
    if trial.get("metrics") and trial["state"] != "FAILED":
        last = trial["reports"][-1]["step"] if trial.get("reports") else 0
        report_metrics(logger, trial["metrics"], last, header)
    task.set_configuration_object(OUTCOME_CONFIG, config_text=json.dumps(trial), config_type="json")
    folder = str(task.get_offline_mode_folder())
    task.close()
    return folder


def main() -> int:
    """Record trials read from stdin until it closes."""
    from clearml import Task

    Task.set_offline(True)
    header: dict[str, Any] | None = None
    for line in sys.stdin:
        if not line.strip():
            continue
        msg = json.loads(line)
        if header is None:
            header = msg
            continue
        try:
            folder = record(header, msg["trial"])
        except Exception as exc:  # noqa: BLE001 - a recording failure must not stop the next ones
            print(f"error {msg.get('trial', {}).get('number')}: {exc}", flush=True)
            continue
        print(f"session {folder}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
