"""Crash and resume on the Ray and ClearML (executor='local') backends (issue 11, point 1).

The same matrix as ``test_crash_resume.py`` (the local backend): a study runs in a subprocess,
its driver is killed (SIGKILL) or stopped (SIGINT, SIGTERM; to the driver alone, or to its whole
process group as a terminal's Ctrl-C or a batch scheduler's SIGTERM would), the study is resumed,
and the record must then hold exactly ``n_trials`` finished trials, numbered ``0..n-1`` and each
finished once, no trial that had completed may have run again, a trial that was running is re-run
with its number and params, and ``best`` is the true best of the record.

On Ray the driver starts its own Ray runtime; every process of that runtime carries a marker in
its environment, so a test can tell that nothing of it survives the driver (and stop, by PID,
whatever does).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from crash_helpers import DRIVER_STOPS, events, finished_numbers, started_numbers

from hposdk import load_study
from hposdk.result import TrialState

N_TRIALS = 8
#: Finished trials to wait for before the signal (leaves trials running and trials to come).
KILL_AFTER = 3
MARK = "HPOSDK_CRASH_TEST_MARK"

STUDY = """\
name: crashy
objective: hposdk.testing.objectives:sleepy
metric: loss
backend: {backend}
backend_options: {options}
optimizer: {optimizer}
n_trials: {n}
max_concurrent: {workers}
seed: 3
fixed: {{sleep: {sleep}, log_path: {log}}}
space:
  x: {{type: uniform, low: 0.0, high: 1.0}}
"""


# --- processes -----------------------------------------------------------------------------------------


def marked_processes(mark: str) -> dict[int, str]:
    """Live processes whose environment carries ``MARK=mark`` (pid -> name), zombies excluded."""
    found: dict[int, str] = {}
    needle = f"{MARK}={mark}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            stat = (entry / "stat").read_text()
            if stat[stat.rindex(")") + 2] == "Z":
                continue
            found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace").strip()[:120]
        except (OSError, ValueError):
            continue  # gone meanwhile, or not ours to read
    return found


def kill_pids(pids: Iterator[int] | list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def wait_gone(mark: str, timeout: float, ignore: tuple[str, ...] = ()) -> dict[int, str]:
    """Wait until no marked process (other than those named in ``ignore``) is alive; the rest."""
    deadline = time.monotonic() + timeout
    while True:
        alive = marked_processes(mark)
        if not {p: a for p, a in alive.items() if not any(n in a for n in ignore)} or time.monotonic() > deadline:
            return alive
        time.sleep(0.25)


@dataclass
class Driver:
    """``hposdk run`` of one study file, in a session of its own."""

    cmd: list[str]
    env: dict[str, str]
    cwd: Path
    log: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    runs: int = 0

    def start(self) -> subprocess.Popen[bytes]:
        self.runs += 1
        out = open(self.cwd / f"driver{self.runs}.log", "wb")  # noqa: SIM115 - closed by the child's exit
        # Output goes to a file: a pipe nobody reads would block a chatty driver (Ray logs a lot).
        proc = subprocess.Popen(self.cmd, env=self.env, cwd=self.cwd, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        out.close()
        self.procs.append(proc)
        return proc

    def output(self) -> str:
        return (self.cwd / f"driver{self.runs}.log").read_text(errors="replace")[-4000:]

    def stop_all(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)


@contextlib.contextmanager
def driver_for(tmp_path: Path, backend: str, options: str, optimizer: str, workers: int, sleep: float,
               env: dict[str, str]) -> Iterator[Driver]:
    log = tmp_path / "calls.txt"
    study = tmp_path / "study.yaml"
    study.write_text(STUDY.format(backend=backend, options=options, optimizer=optimizer, n=N_TRIALS,
                                  workers=workers, sleep=sleep, log=log))
    cmd = [sys.executable, "-m", "hposdk", "run", str(study), "--storage", str(tmp_path / "st"), "--no-progress"]
    driver = Driver(cmd, env, tmp_path, log)
    try:
        yield driver
    finally:
        driver.stop_all()  # every process group this test started, whatever happened
        kill_pids(list(marked_processes(env[MARK])))


def wait_for_progress(driver: Driver, proc: subprocess.Popen[bytes], record: Path, n: int,
                      timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while len(finished_numbers(record)) < n:
        assert proc.poll() is None, f"driver exited early ({proc.returncode}):\n{driver.output()}"
        assert time.monotonic() < deadline, f"no {n} finished trials after {timeout} s:\n{driver.output()}"
        time.sleep(0.1)


def send(proc: subprocess.Popen[bytes], sig: signal.Signals, group: bool) -> None:
    if group:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)


# --- the scenario, shared by both backends ------------------------------------------------------------


def crash_and_resume(driver: Driver, sig: signal.Signals, group: bool, after_stop: Any = None,
                     may_crash: bool = False) -> dict[str, Any]:
    """Run, signal, check the stop, resume, check the record.

    ``after_stop(abrupt)`` checks what is left after the first run (``abrupt``: the driver did not
    stop cleanly); ``may_crash``: a clean stop may turn into a crash (exit code 1, no note), which
    the record must survive as well.
    """
    record = driver.cwd / "st" / "crashy" / "study.jsonl"
    first = driver.start()
    wait_for_progress(driver, first, record, KILL_AFTER)
    running_at_signal = started_numbers(record) - finished_numbers(record)
    send(first, sig, group)
    try:
        code = first.wait(timeout=90)  # a clean stop must not hang (SIGTERM included)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the driver did not exit within 90 s of {sig.name}:\n{driver.output()}")
    done_before = finished_numbers(record)
    started_before = started_numbers(record)
    notes = [ev for ev in events(record) if ev.get("event") == "note"]
    crashed = False
    if sig == signal.SIGKILL:
        assert code == -signal.SIGKILL
    elif may_crash and code == 1 and not any(n["kind"] == "interrupted" for n in notes):
        crashed = True
        warnings.warn(f"{sig.name} to the process group: the driver exited with code 1 before it could record the "
                      "interruption (Ray's core worker ends the driver when the raylet, stopped by the same "
                      "signal, goes away); resuming it as after a crash", stacklevel=2)
    else:
        assert code == 130, driver.output()
        assert notes and notes[-1]["kind"] == "interrupted", notes
        # The record names the trials that were running; they are exactly those without a finish.
        assert set(notes[-1]["running"]) == started_before - done_before, (notes[-1], started_before, done_before)
    assert KILL_AFTER <= len(done_before) < N_TRIALS, done_before
    if after_stop is not None:
        after_stop(sig == signal.SIGKILL or crashed)

    second = driver.start()  # resume
    try:
        second.wait(timeout=300)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the resumed study did not finish within 300 s:\n{driver.output()}")
    assert second.returncode == 0, driver.output()

    evs = events(record)
    finishes = Counter(ev["trial"]["number"] for ev in evs if ev.get("event") == "finish")
    assert sorted(finishes) == list(range(N_TRIALS)), f"trial numbers have gaps or extras: {sorted(finishes)}"
    assert set(finishes.values()) == {1}, f"trials finished more than once: {finishes}"
    result = load_study(record)
    assert len(result.trials) == N_TRIALS
    assert sorted(t.number for t in result.trials) == list(range(N_TRIALS))
    assert not result.info.get("running_or_lost"), result.info
    # Trials cut short by the signal were re-run, not recorded as failures.
    assert all(t.state is TrialState.COMPLETE for t in result.trials), [t.error for t in result.trials]

    # A trial number always stands for the same params: a re-run trial keeps them.
    params: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for ev in evs:
        if ev.get("event") == "start":
            params[ev["number"]].append(ev["params"])
    for t in result.trials:
        assert all(p == t.params for p in params[t.number]), (t.number, params[t.number], t.params)
    unfinished = started_before - done_before
    for n in unfinished:
        assert len(params[n]) >= 2, f"trial {n} was running at the signal but was not re-run"

    # No completed trial ran twice; only trials that were running at the signal may have.
    calls = Counter(int(n) for n in driver.log.read_text().split())
    assert sorted(calls) == list(range(N_TRIALS)), calls
    repeated = {n for n, c in calls.items() if c > 1}
    assert not repeated & done_before, f"completed trials ran again: {sorted(repeated & done_before)}"
    assert repeated <= unfinished, (repeated, unfinished)
    assert all(c <= 2 for c in calls.values()), calls

    values = {t.number: t.value for t in result.trials if t.value is not None}
    true_best = min(values, key=lambda n: (values[n], n))
    assert result.best.value == values[true_best]
    assert values[result.best.number] == values[true_best]
    return {"done_before": done_before, "running_at_signal": running_at_signal, "repeated": repeated,
            "calls": sum(calls.values()), "crashed": crashed}


# --- Ray ------------------------------------------------------------------------------------------------

#: Ray's per-node agents. When the driver dies abruptly (SIGKILL to it alone, or a crash) they
#: notice that the raylet died, then block up to 60 s trying to tell the (also dead) GCS before
#: they exit (ray/_private/process_watcher.py: report_raylet_error_logs -> publish_error(..., 60)).
RAY_AGENTS = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")


@pytest.fixture
def ray_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    pytest.importorskip("ray")
    if not Path("/proc/self/environ").exists():
        pytest.skip("finding the Ray runtime's processes needs /proc (Linux)")
    ray_tmp = tempfile.mkdtemp(prefix="hpk-")  # short: Ray's socket paths must fit in 107 bytes
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, MARK: uuid.uuid4().hex}
    env.pop("RAY_ADDRESS", None)
    try:
        yield env
    finally:
        kill_pids(list(marked_processes(env[MARK])))
        shutil.rmtree(ray_tmp, ignore_errors=True)


def check_ray_runtime_gone(mark: str, killed: bool) -> list[str]:
    """Nothing of the driver's Ray runtime survives it; returns leftovers that were killed."""
    # raylet and gcs_server share the driver's fate (Ray starts them with PR_SET_PDEATHSIG);
    # workers exit when their raylet goes.
    alive = wait_gone(mark, 60, ignore=RAY_AGENTS if killed else ())
    core = {p: a for p, a in alive.items() if not any(n in a for n in RAY_AGENTS)}
    assert not core, f"Ray processes outlived the driver: {core}"
    if not killed:
        assert not alive, f"Ray processes outlived a clean stop: {alive}"
    leftovers = [f"{pid} {name}" for pid, name in alive.items()]
    if leftovers:
        kill_pids(list(alive))
        warnings.warn(f"killed Ray agents left behind by a driver that did not stop cleanly: {leftovers}",
                      stacklevel=2)
    return leftovers


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize(("sig", "group", "optimizer"), [
    (signal.SIGKILL, False, "random"),
    (signal.SIGKILL, True, "tpe"),  # the whole job killed (OOM killer of a cgroup, scancel -s KILL)
    (signal.SIGINT, True, "random"),  # Ctrl-C in a terminal reaches the whole foreground group
    (signal.SIGTERM, False, "random"),  # a supervisor stopping the driver
    (signal.SIGTERM, True, "tpe"),  # Slurm signals every process of the job
], ids=["kill-driver-random", "kill-group-tpe", "int-group-random", "term-driver-random", "term-group-tpe"])
def test_ray_driver_killed_or_stopped_resumes(
    tmp_path: Path, ray_env: dict[str, str], sig: signal.Signals, group: bool, optimizer: str
) -> None:
    mark = ray_env[MARK]
    with driver_for(tmp_path, "ray", "{}", optimizer, 2, 0.5, ray_env) as driver:
        # The raylet and GCS get a group's SIGTERM too and exit at once; when the driver's core
        # worker notices before the driver has handled its KeyboardInterrupt, it ends the driver
        # (exit code 1, "connection to the plasma store is failed"): a crash, not a clean stop.
        stats = crash_and_resume(
            driver, sig, group, after_stop=lambda abrupt: check_ray_runtime_gone(mark, killed=abrupt),
            may_crash=group and sig == signal.SIGTERM)
        assert not wait_gone(mark, 60), "the resumed run left Ray processes behind"
    print(f"ray {sig.name} group={group} {optimizer}: {stats}")


# --- ClearML, executor='local' ---------------------------------------------------------------------------


@pytest.fixture
def clearml_env(tmp_path: Path) -> dict[str, str]:
    pytest.importorskip("clearml")
    home = tmp_path / "clearml-home"
    home.mkdir()
    # Nothing may reach a server or write to the real home (as in tests/backends/test_clearml.py).
    env = {**os.environ, "CLEARML_OFFLINE_MODE": "1", "CLEARML_CACHE_DIR": str(home / "cache"), "HOME": str(home),
           MARK: uuid.uuid4().hex}
    env.pop("CLEARML_API_HOST", None)
    return env


@pytest.mark.slow
@DRIVER_STOPS
def test_clearml_local_driver_killed_or_stopped_resumes(
    tmp_path: Path, clearml_env: dict[str, str], sig: signal.Signals, optimizer: str, workers: int, group: bool
) -> None:
    mark = clearml_env[MARK]
    with driver_for(tmp_path, "clearml", "{executor: local}", optimizer, workers, 0.25, clearml_env) as driver:
        # A worker process of a SIGKILLed driver finds its pipe closed and exits.
        stats = crash_and_resume(driver, sig, group, after_stop=lambda abrupt: _no_survivors(mark))
        _no_survivors(mark)
    print(f"clearml {sig.name} group={group} {optimizer} workers={workers}: {stats}")


def _no_survivors(mark: str) -> None:
    alive = wait_gone(mark, 30)
    assert not alive, f"processes outlived the driver: {alive}"
