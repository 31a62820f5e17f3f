"""The training loop of the MNIST objective (imports torch: reached only when a trial runs)."""

from __future__ import annotations

import logging
import math
import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ...trial import Trial
from ._data import Splits, load_splits
from ._model import SmallCNN
from ._params import MnistParams

logger = logging.getLogger("hposdk.objectives.mnist")

#: Bumped when the checkpoint layout changes, so an old checkpoint is refused, not misread.
_CHECKPOINT_FORMAT = 1
_EVAL_BATCH = 1000  # bounds the activation memory of evaluation on MNIST's 10,000 val images


def target_epochs(params: MnistParams, budget: float | None) -> int:
    """Epochs to train: the trial's budget (a multi-fidelity optimizer's) when set, else ``epochs``."""
    if budget is None:
        return params.epochs
    epochs = round(budget)
    if epochs < 1:
        raise ValueError(
            f"MNIST objective: trial.budget is the number of epochs and must round to >= 1, but got "
            f"budget={budget!r}; set the study's minimum budget to at least 1"
        )
    return epochs


def resolve_device(device: str) -> torch.device:
    """``cpu``, ``cuda`` (refused with a clear error when unavailable) or ``auto``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        build = f"torch {torch.__version__}" + ("" if torch.version.cuda else ", a CPU-only build")
        raise RuntimeError(
            f"MNIST objective: device='cuda' was requested but CUDA is not available ({build}); "
            "use device='cpu', or device='auto' to take a GPU only where there is one"
        )
    return torch.device(device)


@contextmanager
def _torch_settings(num_threads: int, device: torch.device) -> Iterator[None]:
    """Thread count and deterministic kernels for one trial; the previous settings come back after.

    Restoring matters when trials run in the caller's process (tests, a thread-based backend).
    """
    saved = (
        torch.get_num_threads(),
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    if device.type == "cuda":
        # cuBLAS is only deterministic with a fixed workspace; it must be set before its first use.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.set_num_threads(num_threads)
    # warn_only: an op without a deterministic kernel (max-pool backward on CUDA) warns, not fails.
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        threads, det, warn_only, cudnn_det, cudnn_bench = saved
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det, warn_only=warn_only)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn_det, cudnn_bench


def _weight_decay(params: MnistParams) -> float:
    if params.weight_decay is not None:
        return params.weight_decay
    return 0.01 if params.optimizer == "adamw" else 0.0  # each optimizer's own torch default


def _make_optimizer(params: MnistParams, model: torch.nn.Module) -> torch.optim.Optimizer:
    wd = _weight_decay(params)
    if params.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=params.lr, momentum=0.9, weight_decay=wd)
    if params.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=params.lr, weight_decay=wd)
    return torch.optim.AdamW(model.parameters(), lr=params.lr, weight_decay=wd)


def _to_cpu(obj: Any) -> Any:
    """A detached CPU copy of every tensor in ``obj`` (so a CUDA checkpoint loads anywhere)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def _fingerprint(params: MnistParams, splits: Splits) -> dict[str, Any]:
    # What must match for a checkpoint's states to be loadable and meaningful. lr, dropout, batch
    # size and weight decay may differ (population-based training changes them between resumes).
    return {
        "data": splits.name,
        "image_size": splits.image_size,
        "n_train": len(splits.y_train),
        "hidden": params.hidden,
        "optimizer": params.optimizer,
    }


def _train_epoch(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    shuffle: torch.Generator,
) -> float:
    model.train()
    # The order comes from the trial's own generator (saved in checkpoints), not the global RNG.
    order = torch.randperm(len(y), generator=shuffle).to(x.device)
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    for start in range(0, len(y), batch_size):
        idx = order[start : start + batch_size]
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        total += loss.detach().double() * len(idx)  # no .item(): avoids a device sync per batch
    return float(total) / len(y)


@torch.no_grad()
def _evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    for start in range(0, len(y), _EVAL_BATCH):
        logits = model(x[start : start + _EVAL_BATCH])
        target = y[start : start + _EVAL_BATCH]
        loss_sum += F.cross_entropy(logits, target, reduction="sum").double()
        correct += (logits.argmax(dim=1) == target).sum()
    return float(loss_sum) / len(y), int(correct) / len(y)


def train(trial: Trial, params: MnistParams) -> dict[str, float]:
    """Run (or resume) one trial; see :func:`hposdk.objectives.mnist.objective`."""
    epochs = target_epochs(params, trial.budget)
    device = resolve_device(params.device)
    with _torch_settings(params.num_threads, device):
        splits = load_splits(params.data_dir, params.max_train_samples, params.max_val_samples)
        random.seed(params.seed)
        np.random.seed(params.seed)
        torch.manual_seed(params.seed)  # also seeds every CUDA device
        model = SmallCNN(splits.image_size, params.hidden, params.dropout).to(device)
        opt = _make_optimizer(params, model)
        shuffle = torch.Generator().manual_seed(params.seed)
        fingerprint = _fingerprint(params, splits)

        done, metrics = 0, None
        state = trial.load_checkpoint()
        if state is not None:
            done, metrics = _restore(state, fingerprint, params, epochs, model, opt, shuffle, device, trial)

        x_train = torch.from_numpy(splits.x_train).to(device)
        y_train = torch.from_numpy(splits.y_train).to(device)
        x_val = torch.from_numpy(splits.x_val).to(device)
        y_val = torch.from_numpy(splits.y_val).to(device)

        # Steps are 0-based epoch indices (as in Optuna, where n_warmup_steps=1 spares the first epoch).
        for epoch in range(done, epochs):
            train_loss = _train_epoch(model, opt, x_train, y_train, params.batch_size, shuffle)
            val_loss, val_acc = _evaluate(model, x_val, y_val)
            metrics = {
                "val_loss": val_loss,
                "val_acc": val_acc,
                "train_loss": train_loss,
                "epochs_trained": epoch + 1,
            }
            # Checkpoint before reporting: a scheduler that pauses the trial at this report (or a
            # crash right after it) resumes from exactly this epoch.
            trial.save_checkpoint(
                {
                    "format": _CHECKPOINT_FORMAT,
                    "epochs_done": epoch + 1,
                    "metrics": metrics,
                    "fingerprint": fingerprint,
                    "model": _to_cpu(model.state_dict()),
                    "optimizer": _to_cpu(opt.state_dict()),
                    "torch_rng": torch.get_rng_state(),
                    "cuda_rng": _to_cpu(torch.cuda.get_rng_state_all()) if device.type == "cuda" else None,
                    "shuffle_rng": shuffle.get_state(),
                    "numpy_rng": np.random.get_state(),
                    "python_rng": random.getstate(),
                }
            )
            trial.report(epoch, val_loss=val_loss, val_acc=val_acc, train_loss=train_loss)
            if not math.isfinite(train_loss):
                logger.warning(
                    "MNIST trial %s diverged in epoch %d (train_loss=%s); stopping",
                    trial.number,
                    epoch + 1,
                    train_loss,
                )
                break
            if trial.should_prune():
                logger.info("MNIST trial %s pruned after epoch %d of %d", trial.number, epoch + 1, epochs)
                break
    if metrics is None:  # cannot happen: epochs >= 1, or the checkpoint supplied the metrics
        raise RuntimeError("MNIST objective: no epoch was trained and no checkpoint gave metrics")
    return {k: float(v) for k, v in metrics.items()}


def _restore(
    state: Any,
    fingerprint: dict[str, Any],
    params: MnistParams,
    epochs: int,
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    shuffle: torch.Generator,
    device: torch.device,
    trial: Trial,
) -> tuple[int, dict[str, float] | None]:
    """Load a checkpoint into the model, optimizer and generators; return (epochs done, their metrics)."""
    where = trial.checkpoint_dir
    if not isinstance(state, dict) or state.get("format") != _CHECKPOINT_FORMAT:
        raise ValueError(
            f"MNIST objective: the checkpoint in {where} is not an MNIST objective checkpoint of format "
            f"{_CHECKPOINT_FORMAT}; delete it (or give the trial a fresh workdir) to train from scratch"
        )
    saved = state["fingerprint"]
    diff = {k: (saved.get(k), v) for k, v in fingerprint.items() if saved.get(k) != v}
    if diff:
        detail = ", ".join(f"{k}: checkpoint {a!r} vs trial {b!r}" for k, (a, b) in diff.items())
        raise ValueError(
            f"MNIST objective: the checkpoint in {where} belongs to a different configuration ({detail}); "
            "delete it (or give the trial a fresh workdir) to train from scratch"
        )
    done = int(state["epochs_done"])
    if done > epochs:
        # Trained past this trial's target (e.g. a smaller budget): its metrics would not be the
        # ones this budget defines, so start over rather than report a longer run.
        logger.warning(
            "MNIST trial %s: its checkpoint has %d epochs, more than the %d asked for; training from scratch",
            trial.number,
            done,
            epochs,
        )
        return 0, None
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    for group in opt.param_groups:
        # The params in force now win over the saved ones (population-based training mutates them).
        group["lr"], group["weight_decay"] = params.lr, _weight_decay(params)
    torch.set_rng_state(state["torch_rng"])
    if device.type == "cuda" and state.get("cuda_rng") is not None:
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    shuffle.set_state(state["shuffle_rng"])
    np.random.set_state(state["numpy_rng"])
    random.setstate(state["python_rng"])
    logger.info(
        "MNIST trial %s resumed from its checkpoint after %d of %d epochs", trial.number, done, epochs
    )
    return done, dict(state["metrics"])
