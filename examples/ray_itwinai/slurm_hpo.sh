#!/bin/bash
# Written by `hposdk slurm`: a Ray cluster over the job's nodes, then the study on it.
#SBATCH --job-name=hposdk-hpo
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=4
#SBATCH --time=01:00:00
#SBATCH --output=%x-%j.out
#SBATCH --gpus-per-node=1

set -eo pipefail  # no -u: environment modules often read unset variables
source .venv/bin/activate
export PYTHONPATH="$SLURM_SUBMIT_DIR:$PYTHONPATH"

# One token authenticates the head, the workers and the driver (Ray's default for new clusters).
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"
if [ "$RAY_AUTH_MODE" = "token" ] && [ -z "${RAY_AUTH_TOKEN:-}" ]; then
    ray get-auth-token --generate > /dev/null
fi

# The first node of the allocation runs the Ray head.
nodes=$(scontrol show hostnames "$SLURM_JOB_NODELIST")
nodes_array=($nodes)
head_node=${nodes_array[0]}
head_node_ip=$(srun --nodes=1 --ntasks=1 -w "$head_node" hostname --ip-address | awk '{print $1}')
port=6379
export RAY_ADDRESS="$head_node_ip:$port"

# Stop the Ray processes this job started when the script ends (Slurm also ends its steps).
trap 'kill $(jobs -p) 2> /dev/null || true' EXIT

echo "Starting the Ray head on $head_node ($RAY_ADDRESS)"
srun --nodes=1 --ntasks=1 -w "$head_node" \
    ray start --head --node-ip-address="$head_node_ip" --port=$port --num-cpus=4 --num-gpus=1 \
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
    srun --nodes=$worker_num --ntasks=$worker_num --exclude="$head_node" \
        ray start --address="$RAY_ADDRESS" --num-cpus=4 --num-gpus=1 --disable-usage-stats --block &
    sleep 5
fi

# The study: backend_options of the study file apply; RAY_ADDRESS makes it use this cluster.
hposdk run study.yaml --backend ray
