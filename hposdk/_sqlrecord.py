"""A study record in a SQL database, shared by several driver processes (SQLite or PostgreSQL).

``storage="sqlite:///studies.db"`` or ``storage="postgresql://user@host/db"`` selects it; a plain
directory keeps the single-driver JSON-lines journal (``_record.py``), which is faster. With a
shared record several drivers run the same study at once (``hposdk run study.yaml`` started twice,
or on several machines against one PostgreSQL):

* **exact n_trials** -- a driver *claims* each new trial number in a transaction that first counts
  the study's trials (finished, running or claimed by anyone) and refuses past ``n_trials``; the
  transaction takes the study row's lock (``SELECT ... FOR UPDATE`` on PostgreSQL, ``BEGIN
  IMMEDIATE`` on SQLite), so two drivers never get the same number or exceed the budget.
* **no trial run twice** -- numbers are unique; random points are seeded by number, grid points are
  indexed by number, and each driver's sampler sees the others' finished trials before it proposes.
* **nothing lost** -- each driver keeps a heartbeat row; a trial whose driver stopped beating for
  :data:`STALE_AFTER_S` (killed, machine lost) is adopted by the next driver that starts and run
  again with its number and params, exactly like a journal's unfinished trial on resume.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
import warnings
from typing import Any

from ._record import RecordState, Started
from .backends._base import RunSession, StudySpec
from .exceptions import MissingExtraError, StudyRecordError
from .result import ReportRecord, TrialResult, TrialState

__all__ = ["STALE_AFTER_S", "SharedRunSession", "SqlRecord", "is_url"]

#: A driver whose heartbeat is older than this (seconds) is considered gone, and the next driver
#: that starts re-runs its unfinished trials. ``$HPOSDK_STALE_AFTER_S`` changes it.
STALE_AFTER_S = float(os.environ.get("HPOSDK_STALE_AFTER_S", 30.0))
HEARTBEAT_S = min(5.0, STALE_AFTER_S / 3)
_FINISHED = tuple(s.value for s in TrialState)


def is_url(storage: Any) -> bool:
    """Whether a ``storage`` value names a database (``scheme://...``) rather than a directory."""
    return isinstance(storage, str) and "://" in storage


def _engine_url(url: str) -> str:
    # psycopg (3) is what hposdk[postgres] installs; SQLAlchemy's bare "postgresql://" means psycopg2.
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


class SqlRecord:
    """The record of one study in a database, written by one driver (the ``Journal`` interface)."""

    def __init__(self, url: str, name: str) -> None:
        try:
            import sqlalchemy as sa
        except ImportError as exc:  # pragma: no cover - sqlalchemy comes with optuna
            raise MissingExtraError("a database storage needs SQLAlchemy: pip install sqlalchemy") from exc
        self.sa = sa
        self.url, self.name = url, name
        try:
            self.engine = sa.create_engine(_engine_url(url), **_engine_options(url))
        except (ImportError, sa.exc.NoSuchModuleError) as exc:
            raise MissingExtraError(
                f"storage {url!r} needs a database driver ({exc}). Fix: pip install hposdk[postgres]"
            ) from None
        if url.startswith("sqlite"):
            _sqlite_immediate(self.engine)
        meta = sa.MetaData()
        self.studies = sa.Table(
            "hposdk_studies", meta,
            sa.Column("name", sa.String(200), primary_key=True),
            sa.Column("header", sa.Text, nullable=False),
        )
        self.trials = sa.Table(
            "hposdk_trials", meta,
            sa.Column("study", sa.String(200), primary_key=True),
            sa.Column("number", sa.Integer, primary_key=True),
            sa.Column("state", sa.String(16), nullable=False),  # CLAIMED, RUNNING, or a TrialState
            sa.Column("owner", sa.String(100)),
            sa.Column("attempt", sa.Integer, nullable=False, default=1),
            sa.Column("params", sa.Text),
            sa.Column("budget", sa.Float),
            sa.Column("started_at", sa.Float),
            sa.Column("result", sa.Text),
        )
        self.reports = sa.Table(
            "hposdk_reports", meta,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("study", sa.String(200), index=True, nullable=False),
            sa.Column("number", sa.Integer, nullable=False),
            sa.Column("attempt", sa.Integer, nullable=False),
            sa.Column("step", sa.Integer, nullable=False),
            sa.Column("metrics", sa.Text, nullable=False),
            sa.Column("time", sa.Float),
        )
        self.drivers = sa.Table(
            "hposdk_drivers", meta,
            sa.Column("id", sa.String(100), primary_key=True),
            sa.Column("study", sa.String(200), nullable=False),
            sa.Column("last_seen", sa.Float, nullable=False),
        )
        self.notes_t = sa.Table(
            "hposdk_notes", meta,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("study", sa.String(200), index=True, nullable=False),
            sa.Column("body", sa.Text, nullable=False),
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                meta.create_all(self.engine, checkfirst=True)
                break
            except (sa.exc.IntegrityError, sa.exc.ProgrammingError) as exc:
                # Another driver created the tables between our existence check and our CREATE
                # (PostgreSQL: a unique violation in pg_type, or "relation ... already exists"):
                # check again, which now finds its committed tables and creates what is missing.
                raced = isinstance(exc, sa.exc.IntegrityError) or "already exists" in str(exc.orig)
                if raced and time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                raise StudyRecordError(f"cannot create the study tables in {url!r}: {exc.orig}") from None
            except sa.exc.OperationalError as exc:
                # Drivers starting together on a new SQLite file can find it locked for a moment
                # (creating tables, switching to the write-ahead log): wait for the other one.
                if "locked" in str(exc.orig) and time.monotonic() < deadline:
                    time.sleep(0.1)
                    continue
                raise StudyRecordError(f"cannot open the study database {url!r}: {exc.orig}") from None
        self.driver_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._attempts: dict[int, int] = {}
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    # --- the study ---------------------------------------------------------------------------------
    def header(self) -> dict[str, Any] | None:
        """The stored header of the study, or None when it does not exist."""
        with self.engine.connect() as c:
            row = c.execute(self.sa.select(self.studies.c.header).where(self.studies.c.name == self.name)).first()
        return json.loads(row[0]) if row else None

    def open(self, header: dict[str, Any]) -> None:
        """Create the study (or join it) and start this driver's heartbeat."""
        sa = self.sa
        try:
            with self.engine.begin() as c:
                exists = c.execute(sa.select(self.studies.c.name).where(self.studies.c.name == self.name)).first()
                if not exists:
                    c.execute(self.studies.insert().values(name=self.name, header=json.dumps(header, default=str)))
        except sa.exc.IntegrityError:
            pass  # created by another driver in between: join it
        self._heartbeat()
        self._beat = threading.Thread(target=self._beat_loop, name="hposdk-heartbeat", daemon=True)
        self._beat.start()

    def move_aside(self) -> str:
        """Rename the study (``resume=False``): its trials stay in the database under the new name."""
        new = f"{self.name}.{time.strftime('%Y%m%d-%H%M%S')}"
        with self.engine.begin() as c:
            for table, col in ((self.studies, "name"), (self.trials, "study"), (self.reports, "study"),
                               (self.notes_t, "study"), (self.drivers, "study")):
                c.execute(table.update().where(table.c[col] == self.name).values({col: new}))
        return new

    def _heartbeat(self) -> None:
        with self.engine.begin() as c:
            done = c.execute(self.drivers.update().where(self.drivers.c.id == self.driver_id)
                             .values(last_seen=time.time())).rowcount
            if not done:
                c.execute(self.drivers.insert().values(id=self.driver_id, study=self.name, last_seen=time.time()))

    def _beat_loop(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self._heartbeat()
            except Exception as exc:  # noqa: BLE001 - a missed beat is retried; the study goes on
                warnings.warn(f"hposdk: heartbeat to {self.url} failed ({exc}); retrying", stacklevel=1)

    # --- reading -------------------------------------------------------------------------------
    def read(self) -> RecordState:
        """Everything recorded so far (all drivers)."""
        header = self.header()
        if header is None:
            raise StudyRecordError(f"no study named {self.name!r} in {self.url}")
        sa = self.sa
        with self.engine.connect() as c:
            rows = c.execute(sa.select(self.trials).where(self.trials.c.study == self.name)).mappings().all()
            reports = c.execute(sa.select(self.reports).where(self.reports.c.study == self.name)
                                .order_by(self.reports.c.id)).mappings().all()
            notes = [json.loads(r[0]) for r in c.execute(
                sa.select(self.notes_t.c.body).where(self.notes_t.c.study == self.name).order_by(self.notes_t.c.id))]
        finished: dict[int, TrialResult] = {}
        unfinished: dict[int, Started] = {}
        for r in rows:
            if r["state"] in _FINISHED and r["result"]:
                finished[r["number"]] = TrialResult.model_validate_json(r["result"])
            elif r["params"] is not None:
                unfinished[r["number"]] = Started(r["number"], json.loads(r["params"]), r["budget"], r["attempt"],
                                                  r["started_at"] or 0.0)
        for rep in reports:
            run = unfinished.get(rep["number"])
            if run is not None and rep["attempt"] == run.attempt:
                run.reports.append(ReportRecord(step=rep["step"], metrics=json.loads(rep["metrics"]),
                                                time=rep["time"] or 0.0))
        return RecordState(header, finished, unfinished, notes)

    def finished_numbers(self) -> set[int]:
        with self.engine.connect() as c:
            return {r[0] for r in c.execute(self.sa.select(self.trials.c.number).where(
                self.trials.c.study == self.name, self.trials.c.state.in_(_FINISHED)))}

    def results(self, numbers: list[int]) -> list[TrialResult]:
        if not numbers:
            return []
        with self.engine.connect() as c:
            rows = c.execute(self.sa.select(self.trials.c.result).where(
                self.trials.c.study == self.name, self.trials.c.number.in_(numbers))).all()
        return [TrialResult.model_validate_json(r[0]) for r in rows if r[0]]

    def count(self) -> int:
        """Trials that count against n_trials: finished, running or claimed, by any driver."""
        with self.engine.connect() as c:
            return int(c.execute(self.sa.select(self.sa.func.count()).select_from(self.trials)
                                 .where(self.trials.c.study == self.name)).scalar_one())

    # --- coordination ----------------------------------------------------------------------------
    def _lock_study(self, c: Any) -> None:
        # Serialises claims between drivers: a row lock on PostgreSQL; on SQLite the transaction
        # already holds the database's write lock (BEGIN IMMEDIATE).
        c.execute(self.sa.select(self.studies.c.name).where(self.studies.c.name == self.name).with_for_update())

    def claim(self, n_trials: int) -> int | None:
        """A fresh trial number, or None when ``n_trials`` trials exist (by any driver)."""
        sa = self.sa
        with self.engine.begin() as c:
            self._lock_study(c)
            count, top = c.execute(sa.select(sa.func.count(), sa.func.max(self.trials.c.number))
                                   .where(self.trials.c.study == self.name)).one()
            if count >= n_trials:
                return None
            number = 0 if top is None else int(top) + 1
            c.execute(self.trials.insert().values(study=self.name, number=number, state="CLAIMED",
                                                  owner=self.driver_id, attempt=1))
        return number

    def release(self, number: int) -> None:
        """Give back a claimed number that was never started."""
        with self.engine.begin() as c:
            c.execute(self.trials.delete().where(self.trials.c.study == self.name, self.trials.c.number == number,
                                                 self.trials.c.state == "CLAIMED"))

    def adopt_lost(self) -> list[Started]:
        """Take over the unfinished trials of drivers that stopped beating (to run them again)."""
        sa = self.sa
        cutoff = time.time() - float(os.environ.get("HPOSDK_STALE_AFTER_S", STALE_AFTER_S))
        with self.engine.begin() as c:
            self._lock_study(c)
            alive = {r[0] for r in c.execute(sa.select(self.drivers.c.id).where(self.drivers.c.last_seen >= cutoff))}
            alive.add(self.driver_id)
            rows = c.execute(sa.select(self.trials).where(
                self.trials.c.study == self.name, self.trials.c.state.in_(("CLAIMED", "RUNNING")))).mappings().all()
            lost = [r for r in rows if r["owner"] not in alive]
            adopted: list[Started] = []
            for r in lost:
                if r["params"] is None:  # claimed but never started: the number is free again
                    c.execute(self.trials.delete().where(self.trials.c.study == self.name,
                                                         self.trials.c.number == r["number"]))
                    continue
                c.execute(self.trials.update().where(self.trials.c.study == self.name,
                                                     self.trials.c.number == r["number"]).values(owner=self.driver_id))
                adopted.append(Started(r["number"], json.loads(r["params"]), r["budget"], r["attempt"],
                                       r["started_at"] or 0.0))
        return sorted(adopted, key=lambda s: s.number)

    # --- the Journal interface -----------------------------------------------------------------------
    def start(self, number: int, params: dict[str, Any], budget: float | None, attempt: int) -> None:
        """A trial started (its number was claimed or adopted by this driver)."""
        self._attempts[number] = attempt
        with self.engine.begin() as c:
            c.execute(self.trials.update().where(self.trials.c.study == self.name, self.trials.c.number == number)
                      .values(state="RUNNING", owner=self.driver_id, params=json.dumps(params, default=str),
                              budget=budget, attempt=attempt, started_at=time.time()))

    def report(self, number: int, step: int, metrics: dict[str, float], t: float) -> None:
        with self.engine.begin() as c:
            c.execute(self.reports.insert().values(study=self.name, number=number,
                                                   attempt=self._attempts.get(number, 1), step=step,
                                                   metrics=json.dumps(metrics), time=t))

    def finish(self, trial: TrialResult) -> None:
        with self.engine.begin() as c:
            c.execute(self.trials.update().where(self.trials.c.study == self.name, self.trials.c.number == trial.number)
                      .values(state=trial.state.value, result=trial.model_dump_json(), attempt=trial.attempt))

    def note(self, **fields: Any) -> None:
        body = json.dumps({"event": "note", "t": time.time(), "driver": self.driver_id, **fields}, default=str)
        with self.engine.begin() as c:
            c.execute(self.notes_t.insert().values(study=self.name, body=body))

    def close(self) -> None:
        """Stop the heartbeat and leave the study (idempotent)."""
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
            self._beat = None
            # The record is complete either way; a row left behind only ages out.
            with contextlib.suppress(Exception), self.engine.begin() as c:
                c.execute(self.drivers.delete().where(self.drivers.c.id == self.driver_id))
        self.engine.dispose()


class SharedRunSession(RunSession):
    """A :class:`RunSession` whose trial budget and numbers are shared through a :class:`SqlRecord`."""

    shared = True

    def __init__(self, spec: StudySpec, record: SqlRecord, finished: dict[int, TrialResult],
                 unfinished: list[Started], progress: Any) -> None:
        super().__init__(spec, record, finished, unfinished, 0, progress)
        self.record = record
        #: Numbers this driver claimed or adopted and has not finished (they are in the database's
        #: count already, but still need this driver to run them: adopted, or waiting for a retry).
        self._mine: set[int] = {s.number for s in unfinished}

    def remaining(self) -> int:
        if self.stopping:
            return 0
        waiting = len(self._mine - set(self.running))
        return max(0, self.spec.n_trials - self.record.count()) + waiting

    def claim_number(self) -> int | None:
        number = self.record.claim(self.spec.n_trials)
        if number is not None:
            self._mine.add(number)
        return number

    def new_number(self) -> int:
        number = self.claim_number()
        if number is None:
            raise StudyRecordError(f"study {self.spec.name!r}: all {self.spec.n_trials} trials are taken")
        return number

    def release(self, number: int) -> None:
        self.record.release(number)
        self._mine.discard(number)

    def finish(self, result: TrialResult, accessed: set[str] | None = None, config_error: bool = False) -> None:
        super().finish(result, accessed, config_error)
        self._mine.discard(result.number)

    def poll(self) -> list[TrialResult]:
        """Trials other drivers finished since the last poll (added to :attr:`finished`)."""
        new = sorted(self.record.finished_numbers() - set(self.finished) - self._mine)
        results = self.record.results(new)
        for t in results:
            self.finished[t.number] = t
        return sorted(results, key=lambda t: t.number)


def _engine_options(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        # Several processes write one file: wait for the lock rather than fail at once.
        return {"connect_args": {"timeout": 60, "check_same_thread": False}}
    return {"pool_pre_ping": True}


def _sqlite_immediate(engine: Any) -> None:
    """Make every SQLite transaction take the write lock at BEGIN (no lock upgrades, no deadlocks)."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None  # let SQLAlchemy's begin event emit BEGIN itself
        # Write-ahead logging: readers never block the writer, and a commit appends to the log
        # instead of syncing the database file (a crash loses no committed transaction with WAL;
        # synchronous=NORMAL only risks the last commits on a power loss, not on a killed process).
        # The mode is stored in the file: only the first connection converts it, and a conversion
        # that loses a race with another driver's connection is left to that one.
        if str(dbapi_connection.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
            with contextlib.suppress(Exception):
                dbapi_connection.execute("PRAGMA journal_mode=WAL")
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
