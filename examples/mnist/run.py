"""The MNIST demo study from Python: the same study as ``study.yaml``, without the YAML.

Run from the repository root::

    python examples/mnist/run.py            # sklearn's 8x8 digits, about 10 s on 2 cores
    HPOSDK_MNIST_DIR=/data/mnist python examples/mnist/run.py   # the real MNIST IDX files
"""

from __future__ import annotations

from hposdk import Discrete, Integer, LogUniform, SearchSpace, Study, Uniform
from hposdk.objectives.mnist import describe_data, objective

SPACE = SearchSpace(
    {
        "lr": LogUniform(low=1e-4, high=1e-1),
        "batch_size": Discrete(choices=[32, 64, 128]),
        "optimizer": Discrete(choices=["sgd", "adam"]),
        "dropout": Uniform(low=0.0, high=0.5, step=0.1),
        "hidden": Integer(low=16, high=128, step=16),
    }
)
FIXED = {"epochs": 4, "num_threads": 1}  # one torch thread per trial: 2 concurrent trials, 2 cores


def main() -> None:
    """Run the study (or resume it: the record is kept under ./hposdk-studies/mnist-demo)."""
    print(f"data: {describe_data(FIXED)}")
    study = Study(
        objective,
        SPACE,
        name="mnist-demo",
        metric="val_loss",
        mode="min",
        backend="local",
        optimizer="tpe",
        optimizer_options={"n_startup_trials": 4},
        pruner="median",
        pruner_options={"n_startup_trials": 2, "n_warmup_steps": 1},
        n_trials=12,
        max_concurrent=2,
        seed=0,
        fixed=FIXED,
    )
    result = study.optimize()
    print(result.summary())


if __name__ == "__main__":  # required: the local backend starts worker processes with spawn
    main()
