"""Tune GPTQ weight quantization (W4A16) with llmcompressor and score it with lm-eval.

The objective quantizes ``model`` with ``llmcompressor.oneshot`` and a ``GPTQModifier`` whose
``config_groups`` are built from the trial's parameters (dampening, calibration samples, observer,
group size, symmetry, activation ordering), then evaluates the quantized model with
``lm_eval.simple_evaluate`` on one or more suites (the Open LLM Leaderboard v1 suite is built in)
and returns a combined ``score`` (higher is better).

Example (YAML study, see examples/gptq/)::

    objective: hposdk.objectives.gptq:objective
    metric: score
    mode: max
    space:
      dampening_frac: {type: uniform, low: 0.01, high: 0.1, step: 0.01}
    fixed:
      model: meta-llama/Llama-3.2-1B-Instruct
      calibration_dataset: HuggingFaceH4/ultrachat_200k
      suites: [openllm]

Install with ``pip install hposdk[gptq]``. Importing this package loads neither torch nor
llmcompressor nor lm-eval; they are imported when a trial runs.
"""

from __future__ import annotations

import importlib.util

from ...exceptions import MissingExtraError

if importlib.util.find_spec("llmcompressor") is None:
    raise MissingExtraError(
        "Using hposdk.objectives.gptq, but the 'llmcompressor' package is not installed. "
        "Make sure to install hposdk using `pip install hposdk[gptq]`."
    )

from ._objective import check_params, evaluate_model, objective, quantize_model
from ._params import GPTQParams
from ._suites import BUILTIN_SUITES, OPENLLM_V1, Suite, SuiteTask, combine_scores

__all__ = [
    "BUILTIN_SUITES",
    "GPTQParams",
    "OPENLLM_V1",
    "Suite",
    "SuiteTask",
    "check_params",
    "combine_scores",
    "evaluate_model",
    "objective",
    "quantize_model",
]
