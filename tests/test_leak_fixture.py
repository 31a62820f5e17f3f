"""The leak check of tests/conftest.py finds what a test leaves running, names it and cleans it up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil

LEAKY = '''
import socket, subprocess, sys, threading, time
import pytest

def test_leaves_a_process():
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)  # LEAKED-CHILD"])

def test_leaves_a_listening_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    test_leaves_a_listening_port.s = s

def test_leaves_a_thread():
    threading.Thread(target=time.sleep, args=(3.0,), name="leaky-thread").start()

def test_a_straggler_that_exits_in_the_grace_period_is_fine():
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3)"])

def test_clean():
    subprocess.run([sys.executable, "-c", "pass"], check=True)

@pytest.mark.allow_leaks("this test says so")
def test_allowed():
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1)"])
'''


def test_the_leak_check_fails_the_test_that_leaked_and_kills_what_it_left(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text((Path(__file__).parent / "conftest.py").read_text())
    (tmp_path / "test_leaky.py").write_text(LEAKY)
    env = {**os.environ, "HPOSDK_TEST_LEAK_GRACE_S": "1"}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                          str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    report = out.stdout + out.stderr
    assert "6 passed, 3 errors" in report, report  # the calls pass; each leak errors at teardown
    assert "test_leaves_a_process left running what it started:\n  process " in report
    assert "LEAKED-CHILD" in report
    assert "test_leaves_a_listening_port left running what it started:\n  listening TCP port 127.0.0.1:" in report
    assert "thread 'leaky-thread' (non-daemon" in report
    # The leaked process was killed, not left to later tests.
    assert not [p for p in psutil.process_iter(["cmdline"]) if "LEAKED-CHILD" in " ".join(p.info["cmdline"] or [])]


CLOCK_STEP = '''
import subprocess, sys
import psutil, pytest

@pytest.fixture(scope="module")
def server():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)  # MODULE-SERVER"])
    yield proc
    proc.kill()
    proc.wait()

def test_starts_the_server(server):
    assert server.poll() is None

def test_the_clock_steps_while_the_server_runs(server):
    # What NTP does to a VM's clock: psutil adds /proc/stat's boot time, which moves with it, to
    # every process's create_time(). Not undone: it must still hold at the leak check's teardown.
    boot = psutil._pslinux.boot_time()
    psutil._pslinux.boot_time = lambda: boot + 1.0

def test_the_server_is_still_there(server):
    assert server.poll() is None
'''


def test_a_clock_step_does_not_make_a_module_fixtures_server_a_leak(tmp_path: Path) -> None:
    """Regression (CI, 2026-12-03): a module-scoped PostgreSQL server, started by an earlier test,
    was reported as left running by a later one and killed, and the next test found no server."""
    (tmp_path / "conftest.py").write_text((Path(__file__).parent / "conftest.py").read_text())
    (tmp_path / "test_clock.py").write_text(CLOCK_STEP)
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                          str(tmp_path)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    report = out.stdout + out.stderr
    assert "3 passed" in report and "error" not in report, report


# --- leaks the fixture found -------------------------------------------------------------------------


def test_regression_a_failing_hpbandster_optimizer_leaves_no_dispatcher(tmp_path: Path, monkeypatch) -> None:
    """hpbandster's Master starts its dispatcher (3 threads, a Pyro daemon on a port) first in its
    __init__; an error later in BOHB.__init__ (an infinite budget made its rung count overflow) left
    them running for the rest of the process."""
    import threading

    import pytest

    optimizers = pytest.importorskip("hpbandster.optimizers")
    from hposdk import SearchSpace, Study, Uniform
    from hposdk.testing import objectives

    class FailingBOHB(optimizers.BOHB):  # type: ignore[misc, name-defined]
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            raise OverflowError("cannot convert float infinity to integer")

    monkeypatch.setattr(optimizers, "BOHB", FailingBOHB)
    with pytest.raises(OverflowError):
        Study(objectives.quadratic, SearchSpace({"x": Uniform(0.0, 1.0)}), metric="loss", optimizer="bohb",
              n_trials=2, seed=0, storage=tmp_path, progress=False,
              budget={"min_budget": 1, "max_budget": 9}).optimize()
    left = [t.name for t in threading.enumerate() if t.name in ("discover_workers", "job_runner")
            or t.name.startswith(("Pyro", "housekeeper"))]
    assert not left, left
