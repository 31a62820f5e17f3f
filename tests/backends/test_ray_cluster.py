"""The Ray backend against real clusters: a Ray head started here (by address), and a one-node
Slurm cluster running the script ``hposdk slurm`` writes. Plus the script's content and syntax.

Every process these tests start is stopped by its own PID (or found by the private temporary
directory it was started with); ``ray stop`` is never used, since it stops every Ray process of
the machine.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from hposdk.backends._slurm import slurm_script
from hposdk.cli import main
from hposdk.exceptions import ConfigError
from hposdk.result import TrialState
from hposdk.study import load_study

BIN = Path(sys.executable).parent
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ray_itwinai"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pids_using(marker: str) -> list[int]:
    """PIDs of live processes whose command line mentions ``marker`` (our private temp dir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().split(") ")[-1][:1]
        except OSError:
            continue
        if marker in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def _stop(proc: subprocess.Popen[bytes] | None, marker: str, timeout: float = 30) -> None:
    """SIGTERM our process, wait, then SIGKILL whatever still runs from our temp dir."""
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
    deadline = time.time() + 10
    while (pids := _pids_using(marker)) and time.time() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait(5)


def _wait_for_port(port: int, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.25)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def _write_study(path: Path, storage: Path, **extra: object) -> Path:
    study = {
        "name": "on-cluster",
        "objective": "hposdk.testing.objectives:quadratic",
        "metric": "loss",
        "backend": "ray",
        "optimizer": "random",
        "n_trials": 3,
        "seed": 0,
        "storage": str(storage),
        "space": {"x": {"type": "uniform", "low": 0.0, "high": 1.0}},
        **extra,
    }
    path.write_text(yaml.safe_dump(study))
    return path


# --- the Slurm script (pure) ---------------------------------------------------------------------


def test_slurm_script_follows_the_ray_on_slurm_pattern(tmp_path):
    text = slurm_script("study.yaml", nodes=2, cpus_per_node=4, gpus_per_node=1, time="02:30:00",
                        partition="gpu", account="proj1", port=6380, setup=["module load Python"])
    lines = text.splitlines()
    assert lines[0] == "#!/bin/bash"
    for directive in ("--nodes=2", "--ntasks-per-node=1", "--cpus-per-task=4", "--gpus-per-node=1",
                      "--time=02:30:00", "--partition=gpu", "--account=proj1"):
        assert f"#SBATCH {directive}" in lines
    assert lines.index("module load Python") < next(i for i, ln in enumerate(lines) if "ray start --head" in ln)
    assert "head_node=${nodes_array[0]}" in text  # the head runs on the first node
    assert 'ray start --head --node-ip-address="$head_node_ip" --port=$port --num-cpus=4 --num-gpus=1' in text
    assert "--block &" in text and 'srun --nodes=$worker_num --ntasks=$worker_num --exclude="$head_node"' in text
    assert 'ray start --address="$RAY_ADDRESS" --num-cpus=4 --num-gpus=1' in text
    assert "port=6380" in text and 'export RAY_ADDRESS="$head_node_ip:$port"' in text
    assert lines[-1] == "hposdk run study.yaml --backend ray"
    script = tmp_path / "s.sh"
    script.write_text(text)
    check = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_slurm_script_without_gpus_requests_none():
    text = slurm_script("my study.yaml", setup=[])
    assert "--gpus-per-node" not in text and "--num-gpus=0" in text
    assert text.splitlines()[-1] == "hposdk run 'my study.yaml' --backend ray"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"nodes": 0}, "nodes >= 1"), ({"time": "1 hour"}, "time limit"), ({"partition": "gpu; rm -rf"}, "partition"),
     ({"port": 80}, "port")],
)
def test_slurm_script_refuses_what_slurm_or_bash_would_misread(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        slurm_script("study.yaml", **kwargs)


def test_hposdk_slurm_command(tmp_path, capsys):
    study = _write_study(tmp_path / "study.yaml", tmp_path / "studies")
    out = tmp_path / "slurm_hpo.sh"
    assert main(["slurm", str(study), "--nodes", "2", "--cpus-per-node", "4", "--gpus-per-node", "1",
                 "--time", "01:00:00", "--partition", "X", "-o", str(out)]) == 0
    assert os.access(out, os.X_OK) and "#SBATCH --partition=X" in out.read_text()
    assert "sbatch" in capsys.readouterr().err
    assert subprocess.run(["bash", "-n", str(out)]).returncode == 0
    (tmp_path / "bad.yaml").write_text("metric: loss\nspace: {}\n")
    assert main(["slurm", str(tmp_path / "bad.yaml"), "-o", str(tmp_path / "x.sh")]) == 2
    assert not (tmp_path / "x.sh").exists()


def test_example_slurm_script_is_what_hposdk_slurm_writes():
    committed = (EXAMPLE / "slurm_hpo.sh").read_text()
    assert committed == slurm_script("study.yaml", nodes=2, cpus_per_node=4, gpus_per_node=1, time="01:00:00",
                                     setup=["source .venv/bin/activate",
                                            'export PYTHONPATH="$SLURM_SUBMIT_DIR:$PYTHONPATH"'])


# --- a real Ray head, by address -------------------------------------------------------------------


@contextlib.contextmanager
def _ray_head(env: dict[str, str]) -> Iterator[int]:
    port = _free_port()
    temp_dir = tempfile.mkdtemp(prefix="hposdk-rayhead-")  # short: Ray's socket paths must fit
    proc = None
    try:
        proc = subprocess.Popen(
            [str(BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
             "--include-dashboard=false", f"--temp-dir={temp_dir}", "--disable-usage-stats", "--block"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True,
        )
        _wait_for_port(port)
        yield port
    finally:
        _stop(proc, temp_dir)
        leftovers = _pids_using(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not leftovers, f"Ray processes left behind: {leftovers}"


@pytest.mark.server
@pytest.mark.slow
def test_study_on_a_ray_head_by_address(tmp_path):
    # Token authentication, with a token of this test only (no ~/.ray/auth_token involved).
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env.pop("RAY_ADDRESS", None)
    with _ray_head(env) as port:
        study = _write_study(tmp_path / "study.yaml", tmp_path / "studies",
                             backend_options={"address": f"127.0.0.1:{port}", "cpus": 1})
        run = subprocess.run([str(BIN / "hposdk"), "run", str(study), "--no-progress"], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-3000:]
        result = load_study(tmp_path / "studies" / "on-cluster")
        assert [t.state for t in result.trials] == [TrialState.COMPLETE] * 3
        assert all(t.info["ray_cluster"].endswith(f":{port}") for t in result.trials)
        # Without RAY_AUTH_MODE=token, Ray does not send its token to an explicit address:
        # the run stops with the fix in the message.
        plain = {k: v for k, v in env.items() if not k.startswith("RAY_AUTH")}
        refused = subprocess.run([str(BIN / "hposdk"), "run", str(study), "--no-progress", "--name", "other"],
                                 env=plain, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert refused.returncode == 2, refused.stderr[-3000:]
        assert "RAY_AUTH_MODE=token" in refused.stderr


# --- a real one-node Slurm cluster running the generated script ---------------------------------------


def _slurm_missing() -> str | None:
    for tool in ("munged", "slurmctld", "slurmd", "sbatch", "squeue"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            return f"{tool} is not installed (apt-get install slurmctld slurmd slurm-client munge)"
    if os.geteuid() != 0:
        return "slurmd must run as root to launch jobs"
    return None


def _tool(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


@contextlib.contextmanager
def _slurm_cluster() -> Iterator[dict[str, str]]:
    """munged + slurmctld + slurmd on localhost, all state in a private temp dir, own ports."""
    d = Path(tempfile.mkdtemp(prefix="hposdk-slurm-"))
    d.chmod(0o755)  # munge checks that its socket's directory is reachable by everyone
    procs: list[subprocess.Popen[bytes]] = []
    try:
        (d / "state").mkdir()
        (d / "spool").mkdir()
        key = d / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o400)
        sock = d / "munge.sock"
        conf = d / "slurm.conf"
        conf.write_text("\n".join([
            "ClusterName=hposdk",
            f"SlurmctldHost={socket.gethostname()}(127.0.0.1)",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            "AuthType=auth/munge",
            f"AuthInfo=socket={sock}",
            "CredType=cred/munge",
            "SlurmUser=root", "SlurmdUser=root",
            f"StateSaveLocation={d / 'state'}", f"SlurmdSpoolDir={d / 'spool'}",
            f"SlurmctldPidFile={d / 'slurmctld.pid'}", f"SlurmdPidFile={d / 'slurmd.pid'}",
            f"SlurmctldLogFile={d / 'slurmctld.log'}", f"SlurmdLogFile={d / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
            "SchedulerType=sched/builtin", "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU",
            "MpiDefault=none", "ReturnToService=2",
            f"NodeName={socket.gethostname()} NodeAddr=127.0.0.1 CPUs=2 RealMemory=4000 State=UNKNOWN",
            f"PartitionName=debug Nodes={socket.gethostname()} Default=YES MaxTime=INFINITE State=UP",
        ]) + "\n")
        env = {**os.environ, "SLURM_CONF": str(conf)}
        log = open(d / "daemons.out", "wb")  # noqa: SIM115 - closed with the daemons below
        procs.append(subprocess.Popen(
            [_tool("munged"), "-F", "-f", f"--socket={sock}", f"--key-file={key}", f"--pid-file={d / 'munged.pid'}",
             f"--seed-file={d / 'munge.seed'}", f"--log-file={d / 'munged.log'}"], stdout=log, stderr=log))
        for _ in range(100):
            if sock.exists():
                break
            time.sleep(0.1)
        procs.append(subprocess.Popen([_tool("slurmctld"), "-D", "-i"], env=env, stdout=log, stderr=log))
        time.sleep(1)
        procs.append(subprocess.Popen([_tool("slurmd"), "-D"], env=env, stdout=log, stderr=log))
        deadline = time.time() + 60
        while time.time() < deadline:
            out = subprocess.run([_tool("sinfo"), "-h", "-o", "%T"], env=env, capture_output=True, text=True)
            if out.stdout.strip() == "idle":
                break
            time.sleep(0.5)
        else:
            raise RuntimeError("the Slurm node never became idle:\n" + (d / "daemons.out").read_text()[-2000:])
        yield env
    finally:
        for proc in reversed(procs):
            _stop(proc, str(d), timeout=15)
        with contextlib.suppress(Exception):
            log.close()
        leftovers = _pids_using(str(d))
        shutil.rmtree(d, ignore_errors=True)
        assert not leftovers, f"Slurm processes left behind: {leftovers}"


@pytest.mark.server
@pytest.mark.slow
def test_generated_script_runs_a_study_on_slurm(tmp_path):
    missing = _slurm_missing()
    if missing:
        pytest.skip(f"no one-node Slurm cluster here: {missing}")
    ray_temp = tempfile.mkdtemp(prefix="hposdk-slurmray-")
    study = _write_study(tmp_path / "study.yaml", tmp_path / "studies", backend_options={"cpus": 1})
    port = _free_port()
    assert main(["slurm", str(study), "--nodes", "1", "--cpus-per-node", "2", "--time", "00:10:00",
                 "--port", str(port), "-o", str(tmp_path / "slurm_hpo.sh")]) == 0
    script = (tmp_path / "slurm_hpo.sh").read_text()
    # Keep this job's Ray session files in a private dir, so that cleanup can find its processes.
    script = script.replace("--disable-usage-stats --block", f"--disable-usage-stats --temp-dir={ray_temp} --block")
    (tmp_path / "slurm_hpo.sh").write_text(script)
    try:
        with _slurm_cluster() as env:
            env = {**env, "RAY_AUTH_TOKEN": secrets.token_hex(32)}
            env.pop("RAY_ADDRESS", None)
            sub = subprocess.run([_tool("sbatch"), "--parsable", "slurm_hpo.sh"], cwd=tmp_path, env=env,
                                 capture_output=True, text=True, timeout=60)
            assert sub.returncode == 0, sub.stderr
            job = sub.stdout.strip().split(";")[0]
            deadline = time.time() + 300
            while time.time() < deadline:
                q = subprocess.run([_tool("squeue"), "-h", "-j", job], env=env, capture_output=True, text=True)
                if not q.stdout.strip():
                    break
                time.sleep(2)
            output = (tmp_path / f"hposdk-hpo-{job}.out").read_text()
            assert "Starting the Ray head" in output, output[-3000:]
            result = load_study(tmp_path / "studies" / "on-cluster")
            assert [t.state for t in result.trials] == [TrialState.COMPLETE] * 3, output[-3000:]
            # The trials ran on the Ray head the job started, not on a runtime of the driver's own.
            assert all(t.info["ray_cluster"].endswith(f":{port}") for t in result.trials)
    finally:
        _stop(None, ray_temp)
        leftovers = _pids_using(ray_temp)
        shutil.rmtree(ray_temp, ignore_errors=True)
        assert not leftovers, f"Ray processes left behind: {leftovers}"
