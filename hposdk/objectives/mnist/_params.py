"""MnistParams: the parameters the MNIST objective reads (pydantic only, no torch)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class MnistParams(BaseModel):
    """Everything the MNIST objective reads from ``trial.params`` (search space plus fixed values).

    Frozen, and unknown keys are refused, so a misspelt key (``learning_rate`` for ``lr``) fails
    before any training instead of being silently ignored.

    Example:
        >>> p = MnistParams(lr=1e-3, batch_size=64, optimizer="adam", dropout=0.1, hidden=64, epochs=2)
        >>> p.device, p.seed, p.num_threads
        ('cpu', 0, 1)
        >>> from pydantic import ValidationError
        >>> try:
        ...     MnistParams(lr=1e-3, batch_size=64, optimizer="adam", dropout=0.1, hidden=64, epochs=2, lr_=1)
        ... except ValidationError as exc:
        ...     print(exc.errors()[0]["loc"], exc.errors()[0]["msg"])
        ('lr_',) Extra inputs are not permitted
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    lr: float = Field(gt=0, description="learning rate")
    batch_size: int = Field(ge=1, description="training mini-batch size")
    optimizer: Literal["sgd", "adam", "adamw"] = Field(description="sgd uses momentum 0.9")
    dropout: float = Field(ge=0.0, lt=1.0, description="dropout probability before the output layer")
    hidden: int = Field(ge=1, description="width of the hidden fully connected layer")
    epochs: int = Field(ge=1, description="epochs to train; a trial's budget, when set, overrides it")
    weight_decay: float | None = Field(
        default=None, ge=0.0, description="L2 (adamw: decoupled) weight decay; None: the optimizer's default"
    )
    seed: int = Field(default=0, ge=0, lt=2**32, description="seeds initialisation, shuffling and dropout")
    data_dir: str | None = Field(
        default=None,
        description="folder of the MNIST IDX files; None: $HPOSDK_MNIST_DIR, else sklearn digits",
    )
    device: Literal["cpu", "cuda", "auto"] = Field(default="cpu", description="auto: cuda when available")
    max_train_samples: int | None = Field(
        default=None, ge=1, description="use at most this many training images"
    )
    max_val_samples: int | None = Field(
        default=None, ge=1, description="use at most this many validation images"
    )
    num_threads: int = Field(
        default=1, ge=1, description="torch CPU threads (keep concurrent trials from oversubscribing)"
    )
