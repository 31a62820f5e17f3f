"""GPTQParams: every knob of one GPTQ trial, validated as plain data (pydantic only, no torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
)

from ._suites import BUILTIN_SUITES, Suite

__all__ = ["GPTQParams"]

#: Values the ``actorder`` field accepts as *words*; whether the installed compressed-tensors and
#: llmcompressor still implement each one is checked before any compute (``group``/``dynamic``
#: were removed in compressed-tensors 0.19).
ActOrder = Literal["static", "weight", "group", "dynamic"]


class GPTQParams(BaseModel):
    """The parameters of :func:`~hposdk.objectives.gptq.objective` (search-space or ``fixed`` keys).

    Quantization (W{num_bits}A16, GPTQ via ``llmcompressor.oneshot``):

    Attributes:
        model: a Hugging Face model id or a local model directory.
        calibration_dataset: a local ``.txt`` (one sample per non-empty line), ``.json`` or
            ``.jsonl`` file (records with ``calibration_text_column`` or chat ``messages``), or a
            Hugging Face dataset id.
        calibration_split: the split of a Hugging Face dataset (slices such as ``train[:4096]`` work).
        calibration_config: the configuration name of a Hugging Face dataset.
        calibration_text_column: the text field of the records; records with a ``messages`` list
            instead are rendered with the tokenizer's chat template.
        num_calibration_samples: samples drawn (seeded) from the calibration set; may not exceed it.
        max_seq_length: tokens per calibration sample (longer samples are truncated).
        dampening_frac: GPTQ Hessian dampening, as a fraction of the mean diagonal; must be > 0.
        block_size: GPTQ columns processed per block.
        observer: how scales are chosen: ``minmax`` or ``mse`` (grid search on the clipping range).
        num_bits: weight bits (4 for W4A16).
        group_size: columns sharing one scale; must divide every quantized layer's input
            features. ``-1`` means one scale per output channel.
        symmetric: symmetric (no zero point) or asymmetric quantization.
        actorder: activation ordering: ``static``/``weight`` (equivalent in compressed-tensors
            0.19) or None.
        ignore: modules left unquantized.
        trust_remote_code: allow model repositories with custom code.

    Evaluation (lm-eval):

    Attributes:
        suites: built-in suite names (``openllm``), suite YAML files, or inline suites.
        eval_backend: ``auto`` (vLLM when importable and a GPU is present, else ``hf``), ``hf`` or ``vllm``.
        eval_python: another Python interpreter to run the evaluation in (e.g. a vLLM environment);
            it needs ``lm_eval`` (and ``vllm``) but not hposdk.
        eval_batch_size: lm-eval batch size; None means ``auto`` for vLLM and 8 for hf.
        eval_model_args: extra lm-eval model arguments (``gpu_memory_utilization`` ...).
        eval_device: device of the hf backend; None picks ``cuda`` when available, else ``cpu``.
        apply_chat_template: format prompts with the model's chat template.
        limit: examples per task (an int) or a fraction (0 < limit < 1); None evaluates everything.

    Run:

    Attributes:
        seed: seeds calibration sampling and lm-eval; equal params and seed give equal scores.
        output_dir: where quantized models are cached (by a hash of the quantization parameters);
            defaults to the trial's working directory. Share it between trials to reuse models.
        keep_model: keep the quantized model after the trial (otherwise it is deleted once no
            other trial uses it).
        num_threads: torch CPU threads for the trial (and the evaluation subprocess); None leaves
            the process setting alone.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    # quantization
    model: StrictStr = Field(min_length=1)
    calibration_dataset: StrictStr = Field(min_length=1)
    calibration_split: StrictStr = "train"
    calibration_config: StrictStr | None = None
    calibration_text_column: StrictStr = "text"
    num_calibration_samples: StrictInt = Field(512, ge=1)
    max_seq_length: StrictInt = Field(2048, ge=1)
    dampening_frac: StrictFloat | StrictInt = Field(0.01, allow_inf_nan=False)
    block_size: StrictInt = Field(128, ge=1)
    observer: Literal["minmax", "mse"] = "minmax"
    num_bits: StrictInt = Field(4, ge=2, le=8)
    group_size: StrictInt = 128
    symmetric: StrictBool = True
    actorder: ActOrder | None = "static"
    ignore: tuple[StrictStr, ...] = ("lm_head",)
    trust_remote_code: StrictBool = False

    # evaluation
    suites: tuple[StrictStr | Suite, ...] = Field(("openllm",), min_length=1)
    eval_backend: Literal["auto", "hf", "vllm"] = "auto"
    eval_python: StrictStr | None = None
    eval_batch_size: StrictInt | Literal["auto"] | None = None
    eval_model_args: dict[str, StrictStr | StrictInt | StrictFloat | StrictBool] = Field(default_factory=dict)
    eval_device: StrictStr | None = None
    apply_chat_template: StrictBool = False
    limit: StrictInt | StrictFloat | None = None

    # run
    seed: StrictInt = 0
    output_dir: StrictStr | None = None
    keep_model: StrictBool = False
    num_threads: StrictInt | None = Field(None, ge=1)

    @field_validator("dampening_frac")
    @classmethod
    def _check_dampening(cls, value: float) -> float:
        if not value > 0:
            # llmcompressor accepts 0 and then, when the Hessian is singular, silently quantizes the
            # layer round-to-nearest instead of GPTQ (helpers.factorize_hessian).
            raise ValueError(
                f"`dampening_frac > 0` must hold, but got {value!r}. Fix: use a small positive value "
                "such as 0.01 (llmcompressor would otherwise fall back to round-to-nearest on "
                "singular Hessians)."
            )
        return float(value)

    @field_validator("group_size")
    @classmethod
    def _check_group_size(cls, value: int) -> int:
        if value == 0 or value < -1:
            raise ValueError(
                f"`group_size > 0` (or -1 for per-channel scales) must hold, but got {value}. "
                "Fix: use a divisor of the model's hidden and intermediate sizes, e.g. 128."
            )
        return value

    @field_validator("limit")
    @classmethod
    def _check_limit(cls, value: float | None) -> float | None:
        if value is None:
            return None
        if isinstance(value, int) and value < 1:
            raise ValueError(f"an integer `limit` counts examples and must be >= 1, but got {value}")
        if isinstance(value, float) and not 0 < value < 1:
            raise ValueError(
                f"a float `limit` is a fraction of each task and must lie in (0, 1), but got {value!r}. "
                "Fix: use an int for a number of examples."
            )
        return value

    @field_validator("suites")
    @classmethod
    def _check_suites(cls, value: tuple[str | Suite, ...]) -> tuple[str | Suite, ...]:
        for ref in value:
            if isinstance(ref, str) and ref not in BUILTIN_SUITES and not ref.endswith((".yaml", ".yml")):
                raise ValueError(
                    f"unknown suite {ref!r}. Fix: use a built-in suite "
                    f"({', '.join(sorted(BUILTIN_SUITES))}), a suite YAML file (.yaml), or an inline "
                    "{name, tasks, direction} mapping."
                )
        return value

    @field_validator("eval_python")
    @classmethod
    def _check_python(cls, value: str | None) -> str | None:
        if value is not None and ("/" in value or "\\" in value) and not Path(value).exists():
            raise ValueError(
                f"eval_python {value!r} does not exist. Fix: give the path of a python executable."
            )
        return value

    @property
    def actorder_canonical(self) -> str | None:
        """``static`` and ``weight`` are aliases in compressed-tensors; one cache key for both."""
        return "weight" if self.actorder == "static" else self.actorder

    def quantization_fields(self) -> dict[str, object]:
        """The fields that determine the quantized model (the cache key, minus file identities)."""
        return {
            "model": self.model,
            "calibration_dataset": self.calibration_dataset,
            "calibration_split": self.calibration_split,
            "calibration_config": self.calibration_config,
            "calibration_text_column": self.calibration_text_column,
            "num_calibration_samples": self.num_calibration_samples,
            "max_seq_length": self.max_seq_length,
            "dampening_frac": self.dampening_frac,
            "block_size": self.block_size,
            "observer": self.observer,
            "num_bits": self.num_bits,
            "group_size": self.group_size,
            "symmetric": self.symmetric,
            "actorder": self.actorder_canonical,
            "ignore": list(self.ignore),
            "trust_remote_code": self.trust_remote_code,
            "seed": self.seed,
        }
