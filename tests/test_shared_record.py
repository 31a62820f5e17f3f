"""Several drivers sharing one study record (SQLite; PostgreSQL from Debian's packages on 127.0.0.1).

Each scenario starts real driver processes (``python -m hposdk run``) against one database and
checks the record: exactly ``n_trials`` finished, trial numbers 0..n-1 once each, every completed
trial run exactly once (the objective logs its calls), and the work really split between drivers.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hposdk import Study, UnsupportedError, load_study
from hposdk._sqlrecord import SqlRecord
from hposdk.spaces import Uniform

STUDY = """\
name: shared
objective: hposdk.testing.objectives:sleepy
metric: loss
optimizer: {optimizer}
n_trials: {n}
max_concurrent: {workers}
seed: 3
fixed: {{sleep: {sleep}, log_path: {log}}}
space:
  x: {space}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A PostgreSQL server of its own on 127.0.0.1 (Debian's packages), stopped by PID afterwards."""
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        pytest.skip("PostgreSQL is not installed (scripts/test.sh installs it from Debian's packages as root)")
    pytest.importorskip("psycopg")
    bindir = Path(bins[-1]).parent
    # Not under pytest's tmp_path: that is private to root, and the server must not run as root.
    home = Path(tempfile.mkdtemp(prefix="hposdk-pg-"))
    data = home / "data"
    run_as: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root: drop to the packages' postgres user
        user = pwd.getpwnam("postgres")
        home.chmod(0o777)
        run_as = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups"]
    subprocess.run([*run_as, str(bindir / "initdb"), "-D", str(data), "-U", "hposdk", "--auth=trust",
                    "-E", "UTF8", "--no-sync"], check=True, capture_output=True)
    port = _free_port()
    log = open(data.parent / "server.log", "w")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [*run_as, str(bindir / "postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(port),
         "-k", str(data), "-c", "fsync=off"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None, (data.parent / "server.log").read_text()
                assert time.monotonic() < deadline, "PostgreSQL did not start"
                time.sleep(0.2)
        time.sleep(0.5)  # accepting TCP a moment before it accepts logins
        yield f"postgresql://hposdk@127.0.0.1:{port}/postgres"
    finally:
        server.send_signal(signal.SIGINT)  # "fast" shutdown
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()
        shutil.rmtree(home, ignore_errors=True)


def drivers(tmp_path: Path, url: str, *, n: int, count: int = 2, workers: int = 1, optimizer: str = "tpe",
            sleep: float = 0.15, space: str = "{type: uniform, low: 0.0, high: 1.0}",
            env: dict[str, str] | None = None) -> tuple[list[subprocess.Popen[bytes]], Path, Path]:
    log = tmp_path / "calls.txt"
    path = tmp_path / "study.yaml"
    path.write_text(STUDY.format(optimizer=optimizer, n=n, workers=workers, sleep=sleep, log=log, space=space))
    cmd = [sys.executable, "-m", "hposdk", "run", str(path), "--storage", url, "--no-progress"]
    procs = []
    for i in range(count):
        out = open(tmp_path / f"driver{i}.log", "wb")  # noqa: SIM115 - handed to the child
        procs.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                      cwd=tmp_path, env={**os.environ, **(env or {})}))
        out.close()
    return procs, log, tmp_path


def wait_all(procs: list[subprocess.Popen[bytes]], tmp_path: Path, timeout: float = 240) -> None:
    try:
        for i, p in enumerate(procs):
            rc = p.wait(timeout=timeout)
            assert rc == 0, (tmp_path / f"driver{i}.log").read_text()[-3000:]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def check_record(url: str, log: Path, n: int) -> Counter[int]:
    result = load_study("shared", storage=url)
    numbers = sorted(t.number for t in result.trials)
    assert numbers == list(range(n)), f"trial numbers {numbers}"
    calls = Counter(int(line) for line in log.read_text().split())
    ran_twice = {k: v for k, v in calls.items() if v > 1}
    assert not ran_twice, f"trials run more than once: {ran_twice}"
    assert set(calls) == set(range(n))
    best = min((t for t in result.completed), key=lambda t: t.value)  # type: ignore[arg-type, return-value]
    assert result.best.number == best.number
    return calls


def owners(url: str) -> Counter[str]:
    record = SqlRecord(url, "shared")
    try:
        with record.engine.connect() as c:
            rows = c.execute(record.sa.select(record.trials.c.owner).where(record.trials.c.study == "shared")).all()
    finally:
        record.close()
    return Counter(r[0].rsplit(":", 2)[1] for r in rows)  # by driver pid


@pytest.mark.parametrize("optimizer", ["tpe", "random"])
def test_two_drivers_share_a_sqlite_record(tmp_path: Path, optimizer: str) -> None:
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    procs, log, _ = drivers(tmp_path, url, n=24, optimizer=optimizer)
    wait_all(procs, tmp_path)
    check_record(url, log, 24)
    split = owners(url)
    assert len(split) == 2 and min(split.values()) >= 4, f"the drivers did not share the work: {split}"


def test_two_drivers_split_a_grid_without_repeating_a_point(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    procs, log, _ = drivers(tmp_path, url, n=100, optimizer="grid",
                            space="{type: uniform, low: 0.0, high: 1.0, step: 0.05}")
    wait_all(procs, tmp_path)
    check_record(url, log, 21)  # n_trials is capped at the grid's 21 points
    result = load_study("shared", storage=url)
    assert sorted(t.params["x"] for t in result.trials) == [round(i * 0.05, 2) for i in range(21)]


@pytest.mark.server
def test_drivers_with_worker_pools_share_a_postgres_record(tmp_path: Path, postgres: str) -> None:
    procs, log, _ = drivers(tmp_path, postgres, n=30, count=3, workers=2, optimizer="tpe")
    wait_all(procs, tmp_path)
    check_record(postgres, log, 30)
    assert len(owners(postgres)) == 3


@pytest.mark.server
def test_a_killed_driver_loses_nothing(tmp_path: Path, postgres: str) -> None:
    # One driver is killed (SIGKILL) mid-study while another goes on; a driver started afterwards
    # adopts the killed one's unfinished trials once its heartbeat is stale, and the record ends exact.
    env = {"HPOSDK_STALE_AFTER_S": "3"}
    url = postgres.rsplit("/", 1)[0] + "/postgres"
    record = SqlRecord(url, "shared")
    try:
        if record.header() is not None:
            record.move_aside()  # an earlier test's study of the same name, in the same server
    finally:
        record.close()
    procs, log, _ = drivers(tmp_path, url, n=16, optimizer="random", sleep=0.6, env=env)
    deadline = time.monotonic() + 120
    while not log.exists() or len(log.read_text().split()) < 4:
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.1)
    os.killpg(procs[0].pid, signal.SIGKILL)
    procs[0].wait()
    wait_all(procs[1:], tmp_path)
    done_before = {t.number for t in load_study("shared", storage=url).trials}
    assert len(done_before) < 16  # the killed driver's running trial is unfinished
    time.sleep(3.5)  # its heartbeat goes stale
    again, _, _ = drivers(tmp_path, url, n=16, optimizer="random", sleep=0.6, count=1, env=env)
    wait_all(again, tmp_path)
    result = load_study("shared", storage=url)
    assert sorted(t.number for t in result.trials) == list(range(16))
    calls = Counter(int(line) for line in log.read_text().split())
    assert all(calls[k] == 1 for k in done_before), "a completed trial was run again"
    rerun = set(range(16)) - done_before
    assert all(calls[k] <= 2 for k in rerun) and any(calls[k] == 2 for k in rerun)  # the lost one re-ran


def test_backends_without_a_shared_record_refuse_a_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    with pytest.raises(UnsupportedError, match=r"shared by several drivers.*optimizers: grid, random, tpe"):
        Study("hposdk.testing.objectives:quadratic", {"x": Uniform(0, 1)}, metric="loss", optimizer="bohb",
              budget={"min_budget": 1, "max_budget": 9}, n_trials=3, storage=url, progress=False)
    pytest.importorskip("ray.tune")
    with pytest.raises(UnsupportedError, match="backend 'ray' supports with the optimizers: none"):
        Study("hposdk.testing.objectives:quadratic", {"x": Uniform(0, 1)}, metric="loss", backend="ray",
              optimizer="random", n_trials=3, storage=url, progress=False)


def test_in_process_study_on_sqlite_resumes_and_moves_aside(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    kw: dict[str, object] = dict(metric="loss", optimizer="tpe", name="q", storage=url, progress=False, seed=1)
    space = {"x": Uniform(0, 1)}
    Study("hposdk.testing.objectives:quadratic", space, n_trials=5, **kw).optimize()  # type: ignore[arg-type]
    r = Study("hposdk.testing.objectives:quadratic", space, n_trials=8, **kw).optimize()  # type: ignore[arg-type]
    assert [t.number for t in r.trials] == list(range(8)) and r.record_path == f"{url}#q"
    r = Study("hposdk.testing.objectives:quadratic", space, n_trials=2, resume=False,  # type: ignore[arg-type]
              **kw).optimize()
    assert len(r.trials) == 2
    record = SqlRecord(url, "q")
    try:
        with record.engine.connect() as c:
            names = {row[0] for row in c.execute(record.sa.select(record.studies.c.name))}
    finally:
        record.close()
    assert len(names) == 2 and "q" in names  # the old study is kept under a dated name


def test_an_unreachable_database_is_a_clear_error(tmp_path: Path) -> None:
    bad = "sqlite:////nonexistent-dir/x/y.db"
    with pytest.raises(Exception, match="cannot open the study database"):
        Study("hposdk.testing.objectives:quadratic", {"x": Uniform(0, 1)}, metric="loss", n_trials=1, storage=bad,
              progress=False).optimize()


@pytest.mark.server
def test_a_driver_that_loses_the_race_to_create_the_tables_opens_the_record(
        postgres: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Drivers starting together: another one commits the tables between this driver's existence
    # check and its CREATE TABLE, which PostgreSQL answers with "relation ... already exists".
    import sqlalchemy as sa

    real = sa.MetaData.create_all
    calls: list[bool] = []

    def racing(self: sa.MetaData, bind: Any, tables: Any = None, checkfirst: bool = True) -> None:
        calls.append(checkfirst)
        if len(calls) == 1:
            real(self, bind, checkfirst=True)  # the other driver
            real(self, bind, checkfirst=False)  # ours, planned before it committed
        else:
            real(self, bind, tables=tables, checkfirst=checkfirst)

    monkeypatch.setattr(sa.MetaData, "create_all", racing)
    record = SqlRecord(postgres, "race")
    try:
        assert len(calls) == 2 and record.count() == 0
    finally:
        record.close()
