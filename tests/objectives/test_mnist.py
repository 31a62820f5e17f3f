"""The MNIST objective: params model, IDX reader, training loop, pruning, budgets and checkpoints.

Everything runs for real (torch on CPU, one thread) on tiny data: the sklearn digits bundled with
scikit-learn, or IDX files written by the tests themselves.
"""

from __future__ import annotations

import gzip
import importlib
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

import hposdk.objectives.mnist as mnist
from hposdk.exceptions import MissingExtraError
from hposdk.objectives.mnist import (
    ENV_VAR,
    METRICS,
    IdxFormatError,
    MnistParams,
    describe_data,
    load_mnist_split,
    objective,
    read_idx,
)
from hposdk.objectives.mnist._data import load_splits
from hposdk.trial import FixedTrial, Report

# Small enough for ~0.1 s per epoch on one CPU thread, big enough to learn the digits.
BASE: dict[str, Any] = {
    "lr": 1e-2,
    "batch_size": 32,
    "optimizer": "adam",
    "dropout": 0.2,
    "hidden": 32,
    "epochs": 3,
    "max_train_samples": 600,
    "max_val_samples": 150,
    "num_threads": 1,
}

_IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i2"): 0x0B, np.dtype(">i4"): 0x0C}
_IDX_CODES |= {np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}


@pytest.fixture(autouse=True)
def _no_mnist_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's own $HPOSDK_MNIST_DIR must not change which data these tests use.
    monkeypatch.delenv(ENV_VAR, raising=False)


def run(
    params: dict[str, Any], tmp_path: Path | None = None, **trial_kwargs: Any
) -> tuple[dict[str, float], FixedTrial]:
    trial = FixedTrial(params, workdir=tmp_path, **trial_kwargs)
    return objective(trial), trial


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write ``array`` in the IDX format (big-endian), gzipped when the name ends in .gz."""
    big = array.astype(array.dtype.newbyteorder(">"))
    header = bytes([0, 0, _IDX_CODES[big.dtype], array.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + big.tobytes()
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)


def write_mnist(folder: Path, images: np.ndarray, labels: np.ndarray, *, gz: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    write_idx(folder / f"train-images-idx3-ubyte{suffix}", images)
    # Mixed on purpose: the labels are gzipped exactly when the images are not.
    write_idx(folder / f"train-labels-idx1-ubyte{'' if gz else '.gz'}", labels)


def learnable_28x28(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """28x28 uint8 images whose label is where a bright 7x7 block sits (plus noise): easy to learn."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    images = rng.integers(0, 60, size=(n, 28, 28)).astype(np.uint8)
    for img, label in zip(images, labels):
        r, c = divmod(int(label), 4)
        img[r * 7 : r * 7 + 7, c * 7 : c * 7 + 7] = 255
    return images, labels


# --- params -------------------------------------------------------------------------------------
def test_unknown_key_fails_validation_naming_the_key() -> None:
    with pytest.raises(ValidationError) as info:
        MnistParams(**{**BASE, "learning_rate": 1e-3})
    assert [e["loc"] for e in info.value.errors()] == [("learning_rate",)]
    assert info.value.errors()[0]["type"] == "extra_forbidden"
    with pytest.raises(ValidationError, match="learning_rate"):
        objective(FixedTrial({**BASE, "learning_rate": 1e-3}))


def test_params_are_frozen_with_documented_defaults_and_bounds() -> None:
    p = MnistParams(**BASE)
    assert (p.seed, p.data_dir, p.device, p.weight_decay) == (0, None, "cpu", None)
    with pytest.raises(ValidationError):
        p.lr = 0.5  # type: ignore[misc]
    for bad in ({"optimizer": "rmsprop"}, {"dropout": 1.0}, {"lr": 0.0}, {"device": "tpu"}, {"epochs": 0}):
        with pytest.raises(ValidationError) as info:
            MnistParams(**{**BASE, **bad})
        assert info.value.errors()[0]["loc"] == (next(iter(bad)),)


def test_objective_declares_params_and_metrics_for_the_binding_check() -> None:
    assert objective.__hposdk_params__ is MnistParams  # type: ignore[attr-defined]
    assert objective.__hposdk_metrics__ == METRICS == ("val_loss", "val_acc", "train_loss", "epochs_trained")  # type: ignore[attr-defined]


# --- the training loop ------------------------------------------------------------------------
def test_fixed_trial_reports_every_epoch_and_returns_the_last(tmp_path: Path) -> None:
    metrics, trial = run(BASE, tmp_path)
    assert [r.step for r in trial.reports] == [0, 1, 2]
    assert all(set(r.metrics) == {"val_loss", "val_acc", "train_loss"} for r in trial.reports)
    last = trial.reports[-1].metrics
    assert metrics == {**last, "epochs_trained": 3.0}
    assert all(isinstance(v, float) for v in metrics.values())
    # It learns: the training loss falls and the digits are mostly recognised after 3 epochs.
    losses = [r.metrics["train_loss"] for r in trial.reports]
    assert losses[0] > losses[1] > losses[2]
    assert metrics["val_acc"] > 0.8
    # Every given key is read (none silently ignored), and a checkpoint was written.
    assert trial.accessed_params == set(BASE)
    assert (trial.checkpoint_dir / "state.pkl").is_file()


def test_same_params_and_seed_give_identical_metrics(tmp_path: Path) -> None:
    a, trial_a = run(BASE, tmp_path / "a")
    b, trial_b = run(BASE, tmp_path / "b")
    assert a == b
    assert [r.metrics for r in trial_a.reports] == [r.metrics for r in trial_b.reports]
    c, _ = run({**BASE, "seed": 1}, tmp_path / "c")
    assert c != a  # the seed does reach initialisation, shuffling and dropout


def test_budget_overrides_epochs(tmp_path: Path) -> None:
    metrics, trial = run({**BASE, "epochs": 5}, tmp_path / "a", budget=2.4)
    assert [r.step for r in trial.reports] == [0, 1]
    assert metrics["epochs_trained"] == 2
    metrics, trial = run({**BASE, "epochs": 1}, tmp_path / "b", budget=3)
    assert [r.step for r in trial.reports] == [0, 1, 2]
    with pytest.raises(ValueError, match=r"budget=0\.3"):
        run(BASE, tmp_path / "c", budget=0.3)


def test_prune_stops_training_and_returns_latest_metrics(tmp_path: Path) -> None:
    metrics, trial = run({**BASE, "epochs": 4}, tmp_path, prune_at_step=1)
    assert [r.step for r in trial.reports] == [0, 1]
    assert trial.pruned
    assert metrics == {**trial.reports[-1].metrics, "epochs_trained": 2.0}


def test_divergence_stops_after_the_first_non_finite_epoch(tmp_path: Path) -> None:
    metrics, trial = run({**BASE, "optimizer": "sgd", "lr": 1e6, "epochs": 3}, tmp_path)
    assert len(trial.reports) == 1
    assert not math.isfinite(metrics["train_loss"])


def test_sane_config_beats_absurd_config(tmp_path: Path) -> None:
    full = {"max_train_samples": None, "max_val_samples": None}
    absurd, _ = run({**BASE, **full, "optimizer": "sgd", "lr": 1e-6, "epochs": 1}, tmp_path / "a")
    sane, _ = run({**BASE, **full, "optimizer": "adam", "lr": 1e-2, "epochs": 3}, tmp_path / "b")
    assert sane["val_acc"] > 0.9
    assert absurd["val_acc"] < 0.5
    assert sane["val_loss"] < absurd["val_loss"]


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_every_optimizer_trains(tmp_path: Path, optimizer: str) -> None:
    metrics, _ = run({**BASE, "optimizer": optimizer, "lr": 5e-2 if optimizer == "sgd" else 1e-2}, tmp_path)
    assert metrics["val_acc"] > 0.75


# --- checkpoints -------------------------------------------------------------------------------
class PreemptedTrial(FixedTrial):
    """A trial whose process dies right after the report of ``crash_at`` (the checkpoint is saved)."""

    def __init__(self, *args: Any, crash_at: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.crash_at = crash_at

    def _on_report(self, report: Report) -> None:
        if report.step == self.crash_at:
            raise KeyboardInterrupt("preempted")


def test_resumed_trial_continues_and_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    params = {**BASE, "epochs": 4, "optimizer": "sgd", "lr": 5e-2}  # sgd: momentum buffers must resume too
    uninterrupted, full_trial = run(params, tmp_path / "full")

    with pytest.raises(KeyboardInterrupt):
        objective(PreemptedTrial(params, workdir=tmp_path / "resumed", crash_at=1))  # after 2 epochs
    resumed, trial = run(params, tmp_path / "resumed")

    assert [r.step for r in trial.reports] == [2, 3]  # it did not start over
    assert resumed == uninterrupted
    assert [r.metrics for r in trial.reports] == [r.metrics for r in full_trial.reports[2:]]


def test_finished_trial_resumes_without_training(tmp_path: Path) -> None:
    first, _ = run(BASE, tmp_path)
    again, trial = run(BASE, tmp_path)
    assert trial.reports == []
    assert again == first


def test_budget_promotion_continues_from_the_smaller_budget(tmp_path: Path) -> None:
    # Successive halving promotes a trial from budget 1 to budget 3: epochs 2..3 only.
    direct, _ = run(BASE, tmp_path / "direct", budget=3)
    run(BASE, tmp_path / "promoted", budget=1)
    promoted, trial = run(BASE, tmp_path / "promoted", budget=3)
    assert [r.step for r in trial.reports] == [1, 2]
    assert promoted == direct


def test_checkpoint_of_another_architecture_is_refused(tmp_path: Path) -> None:
    run({**BASE, "epochs": 1}, tmp_path)
    with pytest.raises(ValueError, match=r"hidden: checkpoint 32 vs trial 64"):
        run({**BASE, "hidden": 64}, tmp_path)


# --- data --------------------------------------------------------------------------------------
@pytest.mark.parametrize("gz", [False, True])
def test_idx_files_are_read_exactly(tmp_path: Path, gz: bool) -> None:
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(7, 28, 28)).astype(np.uint8)
    labels = rng.integers(0, 10, size=7).astype(np.uint8)
    write_mnist(tmp_path, images, labels, gz=gz)
    got_images, got_labels = load_mnist_split(tmp_path, "train")
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)
    assert got_images.dtype == np.uint8 and got_images.shape == (7, 28, 28)


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_reader_handles_every_idx_type(tmp_path: Path, dtype: type) -> None:
    array: np.ndarray = (np.arange(24).reshape(2, 3, 4) - 10).astype(dtype)
    write_idx(tmp_path / "x.idx", array)
    got = read_idx(tmp_path / "x.idx")
    np.testing.assert_array_equal(got, array)
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative


def test_bad_magic_number_names_the_file(tmp_path: Path) -> None:
    write_mnist(tmp_path, *learnable_28x28(5), gz=False)
    bad = tmp_path / "train-images-idx3-ubyte"
    bad.write_bytes(b"\x12\x34\x08\x03" + bad.read_bytes()[4:])
    with pytest.raises(IdxFormatError, match=r"train-images-idx3-ubyte: not an IDX file.*0x12340803"):
        load_mnist_split(tmp_path)
    with pytest.raises(IdxFormatError, match="train-images-idx3-ubyte"):
        objective(FixedTrial({**BASE, "data_dir": str(tmp_path)}))


def test_truncated_file_and_mismatched_counts_name_the_files(tmp_path: Path) -> None:
    images, labels = learnable_28x28(5)
    write_mnist(tmp_path, images, labels, gz=True)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-10]))
    with pytest.raises(IdxFormatError, match=r"train-images-idx3-ubyte\.gz: .*\(truncated\)"):
        load_mnist_split(tmp_path)
    write_mnist(tmp_path, images, labels[:4], gz=True)
    with pytest.raises(IdxFormatError, match=r"has 5 images but .*train-labels-idx1-ubyte has 4 labels"):
        load_mnist_split(tmp_path)
    write_mnist(tmp_path, images[:, :, :, None], labels, gz=True)  # 4-d "images"
    with pytest.raises(IdxFormatError, match=r"train-images-idx3-ubyte\.gz: MNIST images must be a 3-d"):
        load_mnist_split(tmp_path)


def test_missing_directory_or_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        describe_data({"data_dir": str(tmp_path / "nope")})
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"lacks train-labels-idx1-ubyte\[\.gz\]"):
        describe_data({"data_dir": str(tmp_path)})


def test_objective_trains_on_idx_files_from_data_dir_or_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_mnist(tmp_path / "MNIST" / "raw", *learnable_28x28(360), gz=True)  # torchvision's layout
    params = {**BASE, "data_dir": str(tmp_path), "max_train_samples": None, "max_val_samples": None}
    assert describe_data(params) == "mnist-idx"
    splits = load_splits(str(tmp_path))
    assert splits.x_train.shape == (300, 1, 28, 28) and len(splits.y_val) == 60
    metrics, _ = run(params, tmp_path / "w1")
    assert metrics["val_acc"] > 0.9  # the block position is learnt: these images, not the digits, were used

    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    del params["data_dir"]
    assert describe_data(params) == describe_data(MnistParams(**params)) == "mnist-idx"
    from_env, _ = run(params, tmp_path / "w2")
    assert from_env == metrics


def test_without_a_directory_the_sklearn_digits_are_used() -> None:
    assert describe_data(BASE) == describe_data(MnistParams(**BASE)) == "sklearn-digits"
    splits = load_splits(None)
    assert splits.image_size == 8
    assert len(splits.y_train) + len(splits.y_val) == 1797 and len(splits.y_val) == 300
    # The split is fixed (independent of any trial seed) and the two parts are disjoint.
    again = load_splits(None, max_val_samples=10)
    np.testing.assert_array_equal(again.x_val, splits.x_val[:10])
    train_rows = {row.tobytes() for row in splits.x_train}
    assert sum(row.tobytes() in train_rows for row in splits.x_val) < 10  # only genuine duplicate digits


# --- devices and dependencies ------------------------------------------------------------------
def test_unavailable_cuda_is_a_clear_error(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here: the unavailable-CUDA error cannot be observed")
    with pytest.raises(
        RuntimeError, match=r"device='cuda' was requested but CUDA is not available.*device='auto'"
    ):
        run({**BASE, "device": "cuda"}, tmp_path / "a")
    auto, _ = run({**BASE, "device": "auto", "epochs": 1}, tmp_path / "b")
    cpu, _ = run({**BASE, "device": "cpu", "epochs": 1}, tmp_path / "c")
    assert auto == cpu


def test_missing_torch_raises_missing_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # makes torch unimportable and unfindable
    for name in [m for m in sys.modules if m.startswith("hposdk.objectives.mnist")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(MissingExtraError, match=r"pip install hposdk\[mnist\]"):
        importlib.import_module("hposdk.objectives.mnist")


def test_importing_the_objective_does_not_import_torch() -> None:
    # A study imports the objective to check its params; that must stay cheap.
    code = (
        "import sys, hposdk.objectives.mnist as m; m.MnistParams(lr=1e-3, batch_size=8, optimizer='sgd', "
        "dropout=0.0, hidden=8, epochs=1); print(sorted(k for k in ('torch', 'sklearn') if k in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_module_surface() -> None:
    assert sorted(mnist.__all__) == sorted(
        [
            "ENV_VAR",
            "METRICS",
            "IdxFormatError",
            "MnistParams",
            "describe_data",
            "load_mnist_split",
            "objective",
            "read_idx",
        ]
    )
    assert all(hasattr(mnist, name) for name in mnist.__all__)


def test_checkpoint_past_the_budget_is_not_reused(tmp_path: Path) -> None:
    # A smaller budget than the checkpoint's epochs must give the smaller budget's own result.
    direct, _ = run(BASE, tmp_path / "direct", budget=1)
    run(BASE, tmp_path / "longer", budget=3)
    shorter, trial = run(BASE, tmp_path / "longer", budget=1)
    assert [r.step for r in trial.reports] == [0]
    assert shorter == direct
