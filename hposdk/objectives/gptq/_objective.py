"""The GPTQ objective: check everything, quantize (cached), evaluate, score."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ...exceptions import ConfigError
from ...spaces._errors import format_validation_error
from ...trial import Trial
from ...trial import objective as declare_objective
from ._calibration import load_calibration_records, select_calibration_texts
from ._evaluate import EvalPlan, plan_evaluation, run_evaluation
from ._params import GPTQParams
from ._quantize import (
    ModelInfo,
    cache_key,
    check_actorder,
    check_model_fit,
    inspect_model,
    quantize_cached,
    run_oneshot,
    seeded,
    torch_threads,
)
from ._suites import resolve_suites

__all__ = ["Prepared", "check_params", "evaluate_model", "objective", "parse_params", "prepare",
           "quantize_model"]


def parse_params(params: Mapping[str, Any] | GPTQParams) -> GPTQParams:
    """Validate a mapping of parameters into :class:`GPTQParams` (a :class:`ConfigError` otherwise)."""
    if isinstance(params, GPTQParams):
        return params
    try:
        return GPTQParams.model_validate(dict(params.items()))
    except ValidationError as exc:
        raise ConfigError(
            "gptq objective: invalid parameters\n" + format_validation_error(exc, prefix="")
        ) from None


@dataclass(frozen=True)
class Prepared:
    """Everything decided before compute: the checked model, calibration samples, evaluation plan."""

    params: GPTQParams
    model: ModelInfo
    calibration: dict[str, list[Any]]
    calibration_identity: dict[str, Any]
    plan: EvalPlan
    key: str


def prepare(params: GPTQParams, workdir: Path) -> Prepared:
    """Run every check that can fail on configuration, cheapest first, before any quantization.

    Raises:
        ConfigError: the rule broken, the value and the fix (unsupported actorder, group_size not
            dividing a layer's width, too few calibration samples, vLLM unavailable, unknown tasks...).
    """
    suites = resolve_suites(params.suites)
    check_actorder(params)
    info = inspect_model(params)
    check_model_fit(params, info)
    calib = load_calibration_records(params)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(params.model, trust_remote_code=params.trust_remote_code)
    tokens = select_calibration_texts(calib, params, tokenizer)
    plan = plan_evaluation(params, suites, workdir)
    return Prepared(params, info, tokens, calib.identity, plan, cache_key(params, info, calib))


def check_params(params: Mapping[str, Any] | GPTQParams, workdir: str | Path | None = None) -> None:
    """Run all of the objective's checks for ``params`` without quantizing or evaluating.

    Use it to validate a study's fixed values and the corners of its space before launching it.

    Example:
        >>> check_params({"model": "meta-llama/Llama-3.2-1B-Instruct", "group_size": 100,
        ...               "calibration_dataset": "HuggingFaceH4/ultrachat_200k"})  # doctest: +SKIP
        Traceback (most recent call last):
        hposdk.exceptions.ConfigError: group_size=100 must divide the input features of every ...
    """
    import tempfile

    p = parse_params(params)
    with tempfile.TemporaryDirectory(prefix="hposdk-gptq-check-") as tmp:
        prepare(p, Path(workdir) if workdir is not None else Path(tmp))


def _cache_root(params: GPTQParams, workdir: Path) -> Path:
    if params.output_dir:
        return Path(params.output_dir).expanduser().resolve()
    return (workdir / "models").resolve()


def run_trial(params: GPTQParams, workdir: Path) -> dict[str, float]:
    """Check, quantize (or reuse the cached model), evaluate, and return the metrics."""
    with torch_threads(params.num_threads):
        return _run_trial(params, workdir.resolve())


def _run_trial(params: GPTQParams, workdir: Path) -> dict[str, float]:
    start = time.monotonic()
    prep = prepare(params, workdir)
    checked = time.monotonic()

    def build(path: Path) -> None:
        run_oneshot(params, prep.calibration, path)

    meta = {"params": params.quantization_fields(), "model": prep.model.identity,
            "calibration": prep.calibration_identity}
    with quantize_cached(params, _cache_root(params, workdir), prep.key, build, meta) as cached:
        eval_start = time.monotonic()
        with seeded(params.seed):
            metrics = run_evaluation(prep.plan, params, cached.path, workdir)
        eval_s = time.monotonic() - eval_start
        model_path = str(cached.path)
    metrics.update({
        "quantize/cache_hit": float(cached.hit),
        "time/check_s": checked - start,
        "time/quantize_s": cached.seconds,
        "time/eval_s": eval_s,
    })
    summary = {
        "params": params.model_dump(mode="json"),
        "metrics": metrics,
        "eval_backend": prep.plan.backend,
        "model_path": model_path if params.keep_model else None,
        "cache_key": prep.key,
    }
    (workdir / "gptq_trial.json").write_text(json.dumps(summary, indent=1))
    return metrics


@declare_objective(params=GPTQParams, metrics=["score"])
def objective(trial: Trial) -> dict[str, float]:
    """Quantize a model with GPTQ (W4A16 by default) and score it on lm-eval suites.

    ``trial.params`` are the fields of :class:`GPTQParams` (search space plus ``fixed``). Every
    configuration check runs before any compute; the quantized model is cached under
    ``output_dir`` by a hash of the quantization parameters and deleted after the trial unless
    ``keep_model``.

    Returns:
        ``score`` (the weighted mean over suites, higher is better; a ``direction: min`` suite
        enters negated), ``<suite>/score``, ``<suite>/<task>/<metric>`` for every task, and
        ``quantize/cache_hit``, ``time/check_s``, ``time/quantize_s``, ``time/eval_s``.

    Example:
        >>> from hposdk import FixedTrial
        >>> trial = FixedTrial({"model": "tiny/model", "calibration_dataset": "tiny/calibration.txt",
        ...                     "suites": ["tiny/suites/tiny_ppl.yaml"], "group_size": 32})
        >>> objective(trial)["score"]  # doctest: +SKIP
        -7.93
    """
    return run_trial(parse_params(trial.params), trial.workdir)


def quantize_model(params: Mapping[str, Any] | GPTQParams, output_dir: str | Path) -> Path:
    """Quantize once (no evaluation) and keep the model; returns its directory under ``output_dir``.

    The evaluation environment is still checked first, so a model is never built for nothing.
    """
    p = parse_params(params).model_copy(update={"output_dir": str(output_dir), "keep_model": True})
    root = Path(output_dir).expanduser().resolve()
    prep = prepare(p, root)
    meta = {"params": p.quantization_fields(), "model": prep.model.identity,
            "calibration": prep.calibration_identity}

    def build(path: Path) -> None:
        run_oneshot(p, prep.calibration, path)

    with quantize_cached(p, root, prep.key, build, meta) as cached:
        return cached.path


def evaluate_model(model: str | Path, params: Mapping[str, Any] | GPTQParams,
                   workdir: str | Path | None = None) -> dict[str, float]:
    """Score any model (e.g. the unquantized baseline) on ``params``' suites, as a trial would.

    ``params`` needs ``model`` and ``calibration_dataset`` only to be valid GPTQParams; they are
    not used here.
    """
    import tempfile

    p = parse_params(params)
    suites = resolve_suites(p.suites)
    with tempfile.TemporaryDirectory(prefix="hposdk-gptq-eval-") as tmp:
        wd = Path(workdir) if workdir is not None else Path(tmp)
        plan = plan_evaluation(p, suites, wd)
        with seeded(p.seed):
            return run_evaluation(plan, p, Path(model).resolve() if Path(model).exists() else Path(model), wd)
