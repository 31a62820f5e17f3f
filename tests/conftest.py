"""Every test leaves nothing behind that it started (issue 11: "no hung process").

An autouse fixture compares the process tree of this pytest process before and after each test:
no child process still alive (after a short grace period), no new listening TCP port owned by this
process or a process the test started, no Ray runtime still initialised in this process, no
hpbandster/Pyro4 thread and no non-daemon thread still running. A leak fails the test (an error at
teardown naming what leaked) and is cleaned up, so that later tests are not affected.

What existed before the test is not the test's: a session-scoped Ray runtime (``ray_runtime`` in
tests/backends/test_ray.py) and whatever its raylet starts, multiprocessing's forkserver and
resource tracker (one per pytest process, by design). A test that must leave something running
says so with ``@pytest.mark.allow_leaks("why")``.

It costs a few milliseconds per test: one walk of this process's children and one read of its
sockets before and after; the grace period is only spent when something is left.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import psutil
import pytest

# How long stragglers get to exit (a worker told to stop, Ray's shutdown).
GRACE_S = float(os.environ.get("HPOSDK_TEST_LEAK_GRACE_S", "3"))

# Long-lived helpers multiprocessing starts once per pytest process, and never stops by design.
_HELPERS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")
# Processes of a Ray runtime; allowed while the runtime that owns them is (see _ray_owned).
_RAY = ("raylet", "gcs_server", "ray::", "default_worker.py", "ray/_private", "ray/dashboard", "ray/autoscaler",
        "log_monitor.py", "monitor.py", "runtime_env/agent", "plasma_store")
_ENGINE_THREADS = ("Pyro4", "hpbandster", "hposdk")

_ME = psutil.Process()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "allow_leaks(reason): the test may leave processes, ports or threads running (say why)"
    )


@dataclass(frozen=True)
class _Proc:
    pid: int
    ppid: int
    created: float
    cmdline: str


def _started(p: psutil.Process) -> float:
    """When ``p`` started, in seconds since boot: with the PID, what tells one process from another.

    Not ``Process.create_time()``: psutil adds the boot time from /proc/stat to it, and that moves
    when the system clock is adjusted (NTP on a VM), so one long-lived process (a module fixture's
    PostgreSQL server) read before and after a test looked like a new one, and was killed as a leak.
    """
    try:
        with open(f"/proc/{p.pid}/stat", "rb") as f:
            # Field 22 (starttime, in clock ticks since boot); the name in field 2 may hold spaces.
            return float(f.read().rsplit(b")", 1)[1].split()[19]) / _TICKS
    except (OSError, IndexError, ValueError):
        return p.create_time()  # no procfs: the wall-clock figure is the best there is


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _tree() -> dict[tuple[int, float], _Proc]:
    out: dict[tuple[int, float], _Proc] = {}
    for p in _ME.children(recursive=True):
        try:
            with p.oneshot():
                proc = _Proc(p.pid, p.ppid(), _started(p), " ".join(p.cmdline()) or p.name())
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            continue
        out[(proc.pid, proc.created)] = proc
    return out


def _is_helper(proc: _Proc) -> bool:
    return any(h in proc.cmdline for h in _HELPERS)


def _is_ray(proc: _Proc) -> bool:
    return any(r in proc.cmdline for r in _RAY)


def _ray_initialised() -> bool:
    ray = sys.modules.get("ray")  # never import ray here: most tests do not use it
    return bool(ray is not None and getattr(ray, "is_initialized", lambda: False)())


def _listening(pids: set[int]) -> set[tuple[int, str, int]]:
    out = set()
    for pid in pids:
        try:
            conns = psutil.Process(pid).net_connections(kind="tcp")
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            continue
        out |= {(pid, c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN}
    return out


def _owner(t: threading.Thread) -> str:
    target = getattr(t, "_target", None)
    module = getattr(target, "__module__", None) or getattr(getattr(target, "__self__", None), "__module__", None)
    return str(module or type(t).__module__)


def _engine_thread(t: threading.Thread) -> bool:
    return _owner(t).startswith(_ENGINE_THREADS) or t.name.startswith(("Pyro", "hposdk"))


@dataclass
class _Snapshot:
    procs: dict[tuple[int, float], _Proc]
    ports: set[tuple[int, str, int]]
    threads: set[threading.Thread]
    ray: bool

    @classmethod
    def take(cls) -> _Snapshot:
        return cls(_tree(), _listening({os.getpid()}), set(threading.enumerate()), _ray_initialised())


def _started_by_test(p: _Proc, now: dict[int, _Proc], new: set[int], ray_up: bool) -> bool:
    """Whether new process ``p`` was started by the test, not by something that outlives it."""
    while p.ppid != _ME.pid:
        parent = now.get(p.ppid)
        if parent is None:
            return False  # not under this pytest process any more
        if "multiprocessing.forkserver" in parent.cmdline:
            return True  # the forkserver forks the test's worker processes: they must be stopped
        if parent.pid not in new or _is_helper(parent) or (ray_up and _is_ray(parent)):
            return False  # under a process that existed before (a session Ray runtime): its owner's
        p = parent
    return True


def _leaks(before: _Snapshot) -> tuple[list[_Proc], set[tuple[int, str, int]], list[threading.Thread]]:
    tree = _tree()
    now = {p.pid: p for p in tree.values()}
    new = {key[0] for key in tree if key not in before.procs}
    ray_up = _ray_initialised()  # Ray's processes belong to a runtime that is still (rightly) up
    procs = [now[pid] for pid in sorted(new)
             if not _is_helper(now[pid]) and not (ray_up and _is_ray(now[pid]))
             and _started_by_test(now[pid], now, new, ray_up)]
    ports = _listening({os.getpid(), *(p.pid for p in procs)}) - before.ports
    threads = [t for t in threading.enumerate()
               if t not in before.threads and t.is_alive() and (not t.daemon or _engine_thread(t))]
    return procs, ports, threads


def _kill(procs: list[_Proc]) -> None:
    live = []
    for p in procs:
        try:
            proc = psutil.Process(p.pid)
            if _started(proc) == p.created:
                live.append(proc)
        except psutil.NoSuchProcess:
            continue
    for proc in live:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(live, timeout=5)


def _describe(procs: list[_Proc], ports: set[tuple[int, str, int]], threads: list[threading.Thread],
              ray_left: bool) -> str:
    lines = []
    lines += [f"process {p.pid} (parent {p.ppid}): {p.cmdline[:200]}" for p in procs]
    lines += [f"listening TCP port {ip}:{port} (pid {pid})" for pid, ip, port in sorted(ports)]
    lines += [f"thread {t.name!r} ({'daemon' if t.daemon else 'non-daemon'}, {_owner(t)})" for t in threads]
    if ray_left:
        lines.append("a Ray runtime is still initialised in this process (ray.init() without ray.shutdown())")
    return "\n  ".join(lines)


@pytest.fixture(autouse=True)
def _leaves_nothing_behind(request: pytest.FixtureRequest) -> Iterator[None]:
    if request.node.get_closest_marker("allow_leaks") is not None:
        yield
        return
    before = _Snapshot.take()
    yield
    ray_left = _ray_initialised() and not before.ray
    if ray_left:
        sys.modules["ray"].shutdown()
    deadline = time.monotonic() + GRACE_S
    procs, ports, threads = _leaks(before)
    while (procs or ports or threads) and time.monotonic() < deadline:
        time.sleep(0.05)
        procs, ports, threads = _leaks(before)
    if not (procs or ports or threads or ray_left):
        return
    _kill(procs)
    pytest.fail(
        f"{request.node.nodeid} left running what it started:\n  {_describe(procs, ports, threads, ray_left)}",
        pytrace=False,
    )
