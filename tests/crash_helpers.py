"""What the crash/resume tests share: reading a study record as it is being written, and the
ways a driver is stopped (alone or with its process group, inline or with worker processes)."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest


def events(record: Path) -> list[dict[str, Any]]:
    if not record.exists():
        return []
    out = []
    for line in record.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line being written, or cut short by SIGKILL
    return out


def finished_numbers(record: Path) -> set[int]:
    return {ev["trial"]["number"] for ev in events(record) if ev.get("event") == "finish"}


def started_numbers(record: Path) -> set[int]:
    return {ev["number"] for ev in events(record) if ev.get("event") == "start"}


#: (signal, optimizer, workers, to the whole process group): inline (1 worker) and worker pools.
DRIVER_STOPS = pytest.mark.parametrize(("sig", "optimizer", "workers", "group"), [
    (signal.SIGKILL, "tpe", 1, False),
    (signal.SIGKILL, "random", 2, False),
    (signal.SIGINT, "random", 1, False),
    (signal.SIGTERM, "tpe", 2, False),
    (signal.SIGTERM, "random", 2, True),  # Slurm/Kubernetes signal every process of the job
    (signal.SIGINT, "tpe", 2, True),  # Ctrl-C in a terminal reaches the whole foreground group
], ids=["kill-inline-tpe", "kill-pool-random", "int-inline-random", "term-pool-tpe", "term-group-random",
        "int-group-tpe"])
