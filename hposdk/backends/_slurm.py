"""A Slurm batch script that starts a Ray cluster on the allocation and runs a study on it.

This is the itwinai ``slurm_hpo.sh`` pattern, written for hposdk: the first node of the job runs
the Ray head (``ray start --head --block &``), the other nodes join it as workers
(``srun ... ray start --address <head>:<port> --block &``), and the batch step runs
``hposdk run study.yaml --backend ray`` with ``RAY_ADDRESS`` pointing at the head, so the study's
trials spread over every node. ``hposdk slurm`` writes it::

    hposdk slurm study.yaml --nodes 2 --cpus-per-node 4 --gpus-per-node 1 \\
        --time 01:00:00 --partition gpu -o slurm_hpo.sh
    sbatch slurm_hpo.sh

The script uses token authentication (Ray's default for new clusters since 2.5x): the token in
``~/.ray/auth_token`` is created if missing; on clusters whose home directory is not shared by
the compute nodes, distribute it (or set ``RAY_AUTH_TOKEN``) before submitting.
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from ..exceptions import ConfigError

__all__ = ["slurm_script", "write_slurm_script"]

_TIME = re.compile(r"^(\d+-)?\d+(:\d{2}){0,2}$|^\d+-\d+$")
_NAME = re.compile(r"^[A-Za-z0-9_.,\-]+$")


def _default_setup() -> list[str]:
    # The job runs the same Python environment as the command that wrote the script.
    if sys.prefix != sys.base_prefix:
        return [f"source {shlex.quote(str(Path(sys.prefix) / 'bin' / 'activate'))}"]
    return []


def slurm_script(
    study: str,
    *,
    nodes: int = 1,
    cpus_per_node: int = 1,
    gpus_per_node: int = 0,
    time: str = "01:00:00",
    partition: str | None = None,
    account: str | None = None,
    job_name: str = "hposdk-hpo",
    port: int = 6379,
    setup: Sequence[str] | None = None,
    run_args: Sequence[str] = (),
) -> str:
    """The text of a Slurm batch script running ``study`` on a Ray cluster over ``nodes`` nodes.

    Args:
        study: the study YAML file (as the job will see it, relative to the submit directory).
        nodes: nodes to allocate; the first runs the Ray head, all of them run trials.
        cpus_per_node: CPUs per node, given to Slurm and to Ray.
        gpus_per_node: GPUs per node (0: none requested).
        time: the wall-time limit, Slurm syntax (``HH:MM:SS``, ``D-HH:MM``...).
        partition: the Slurm partition, if any.
        account: the Slurm account to charge, if any.
        job_name: the Slurm job name.
        port: the Ray head's port.
        setup: shell lines run first on every node (``module load ...``, activating an
            environment); default: activate the virtual environment this runs in, if any.
        run_args: extra arguments for ``hposdk run`` (e.g. ``["--n-trials", "50"]``).

    Raises:
        ConfigError: a value Slurm or the shell would misread.

    Example:
        >>> "ray start --head" in slurm_script("study.yaml", nodes=2, setup=[])
        True
    """
    if nodes < 1:
        raise ConfigError(f"slurm: `nodes >= 1` must hold, but got nodes={nodes}")
    if cpus_per_node < 1:
        raise ConfigError(f"slurm: `cpus_per_node >= 1` must hold, but got {cpus_per_node}")
    if gpus_per_node < 0:
        raise ConfigError(f"slurm: `gpus_per_node >= 0` must hold, but got {gpus_per_node}")
    if not _TIME.match(time):
        raise ConfigError(f"slurm: time={time!r} is not a Slurm time limit; use HH:MM:SS or D-HH:MM:SS")
    for what, value in (("partition", partition), ("account", account), ("job_name", job_name)):
        if value is not None and not _NAME.match(value):
            raise ConfigError(f"slurm: {what}={value!r} may only use letters, digits, '_', '.', ',' and '-'")
    if not 1024 <= port <= 65535:
        raise ConfigError(f"slurm: port must be in 1024..65535, but got {port}")
    setup_lines = list(_default_setup() if setup is None else setup)

    sbatch = [
        f"#SBATCH --job-name={job_name}",
        f"#SBATCH --nodes={nodes}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --cpus-per-task={cpus_per_node}",
        f"#SBATCH --time={time}",
        "#SBATCH --output=%x-%j.out",
    ]
    if gpus_per_node:
        sbatch.append(f"#SBATCH --gpus-per-node={gpus_per_node}")
    if partition:
        sbatch.append(f"#SBATCH --partition={partition}")
    if account:
        sbatch.append(f"#SBATCH --account={account}")
    run = " ".join(["hposdk", "run", shlex.quote(study), "--backend", "ray", *map(shlex.quote, run_args)])
    resources = f"--num-cpus={cpus_per_node} --num-gpus={gpus_per_node}"
    return f"""#!/bin/bash
# Written by `hposdk slurm`: a Ray cluster over the job's nodes, then the study on it.
{chr(10).join(sbatch)}

set -eo pipefail  # no -u: environment modules often read unset variables
{chr(10).join(setup_lines)}

# One token authenticates the head, the workers and the driver (Ray's default for new clusters).
export RAY_AUTH_MODE="${{RAY_AUTH_MODE:-token}}"
if [ "$RAY_AUTH_MODE" = "token" ] && [ -z "${{RAY_AUTH_TOKEN:-}}" ]; then
    ray get-auth-token --generate > /dev/null
fi

# The first node of the allocation runs the Ray head.
nodes=$(scontrol show hostnames "$SLURM_JOB_NODELIST")
nodes_array=($nodes)
head_node=${{nodes_array[0]}}
head_node_ip=$(srun --nodes=1 --ntasks=1 -w "$head_node" hostname --ip-address | awk '{{print $1}}')
port={port}
export RAY_ADDRESS="$head_node_ip:$port"

# Stop the Ray processes this job started when the script ends (Slurm also ends its steps).
trap 'kill $(jobs -p) 2> /dev/null || true' EXIT

echo "Starting the Ray head on $head_node ($RAY_ADDRESS)"
srun --nodes=1 --ntasks=1 -w "$head_node" \\
    ray start --head --node-ip-address="$head_node_ip" --port=$port {resources} \\
    --include-dashboard=false --disable-usage-stats --block &

# Wait for the head to answer (up to 2 minutes).
for _ in $(seq 1 60); do
    if ray status --address="$RAY_ADDRESS" > /dev/null 2>&1; then
        break
    fi
    sleep 2
done
ray status --address="$RAY_ADDRESS" > /dev/null

worker_num=$((SLURM_JOB_NUM_NODES - 1))
if [ "$worker_num" -gt 0 ]; then
    echo "Starting $worker_num Ray worker node(s)"
    srun --nodes=$worker_num --ntasks=$worker_num --exclude="$head_node" \\
        ray start --address="$RAY_ADDRESS" {resources} --disable-usage-stats --block &
    sleep 5
fi

# The study: backend_options of the study file apply; RAY_ADDRESS makes it use this cluster.
{run}
"""


def write_slurm_script(path: str | Path, study: str, **kwargs: object) -> Path:
    """Write :func:`slurm_script` to ``path`` (executable) after checking that ``study`` parses.

    Raises:
        ConfigError: the study file is invalid, or an option is (see :func:`slurm_script`).
    """
    from ..study import StudyConfig

    StudyConfig.from_yaml(study)  # refuse a broken study now, not after waiting in the queue
    text = slurm_script(study, **kwargs)  # type: ignore[arg-type]
    out = Path(path)
    out.write_text(text)
    out.chmod(0o755)
    return out
