"""A study survives its driver being killed (SIGKILL) or stopped (SIGINT, SIGTERM), and resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from crash_helpers import DRIVER_STOPS, finished_numbers

from hposdk import load_study

STUDY = """\
name: crashy
objective: hposdk.testing.objectives:sleepy
metric: loss
optimizer: {optimizer}
n_trials: 10
max_concurrent: {workers}
seed: 3
fixed: {{sleep: 0.25, log_path: {log}}}
space:
  x: {{type: uniform, low: 0.0, high: 1.0}}
"""


def start(tmp_path: Path, optimizer: str, workers: int) -> tuple[subprocess.Popen[bytes], Path, Path, list[str]]:
    log = tmp_path / "calls.txt"
    path = tmp_path / "study.yaml"
    path.write_text(STUDY.format(optimizer=optimizer, workers=workers, log=log))
    cmd = [sys.executable, "-m", "hposdk", "run", str(path), "--storage", str(tmp_path / "st"), "--no-progress"]
    # A session of its own, so a signal can go to the whole process group as a batch scheduler's would.
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    return proc, tmp_path / "st" / "crashy" / "study.jsonl", log, cmd


def wait_for(record: Path, n: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while len(finished_numbers(record)) < n:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "driver exited early"
        assert time.monotonic() < deadline, "study made no progress"
        time.sleep(0.05)


@pytest.mark.slow
@DRIVER_STOPS
def test_killed_or_stopped_driver_resumes_without_repeating_completed_trials(
    tmp_path: Path, sig: signal.Signals, optimizer: str, workers: int, group: bool
) -> None:
    proc, record, log, cmd = start(tmp_path, optimizer, workers)
    wait_for(record, 4, proc)
    if group:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    code = proc.wait(timeout=30)
    done_before = finished_numbers(record)
    if sig == signal.SIGKILL:
        assert code == -signal.SIGKILL
    else:
        assert code == 130, proc.stderr.read().decode() if proc.stderr else ""
        assert '"kind":"interrupted"' in record.read_text()
    assert 4 <= len(done_before) < 10

    subprocess.run(cmd, check=True, capture_output=True, timeout=120)  # resume
    result = load_study(record)
    assert len(result.trials) == 10 and sorted(t.number for t in result.trials) == list(range(10))
    calls = Counter(int(n) for n in log.read_text().split())
    repeated = {n for n, c in calls.items() if c > 1}
    assert not repeated & done_before, f"completed trials ran again: {repeated & done_before}"
    # Trials interrupted by the signal were re-run, not recorded as failures.
    assert not result.by_state("FAILED"), [t.error for t in result.by_state("FAILED")]
    values = [t.value for t in result.trials if t.value is not None]
    assert result.best.value == min(values)
    if os.name == "posix":  # no worker left behind by the killed driver
        time.sleep(0.5)
        ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        assert str(tmp_path) not in ps
