"""Evaluation planning (backend choice, task checks: all before compute) and running lm-eval.

Evaluation runs in this process, or with ``eval_python`` in another interpreter through the
self-contained ``_eval_worker.py`` script: vLLM pins its own torch, so it often lives in an
environment of its own, which needs lm-eval and vLLM but not hposdk.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...exceptions import ConfigError, MissingExtraError
from ._params import GPTQParams
from ._suites import Suite, combine_scores

__all__ = ["EvalPlan", "plan_evaluation", "run_evaluation"]

WORKER = Path(__file__).with_name("_eval_worker.py")
#: lm-eval reseeds the global RNGs and HF/vLLM hold big models: one in-process evaluation at a time.
_EVAL_LOCK = threading.Lock()
_PROBE_TIMEOUT_S = 900


@dataclass(frozen=True)
class EvalPlan:
    """How a trial will be evaluated: decided and checked before any quantization."""

    backend: str  # "hf" or "vllm"
    python: str | None  # None: this process
    suites: tuple[Suite, ...]
    batches: list[list[dict[str, Any]]]
    batch_of: dict[tuple[str, int | None], int]
    include_paths: list[str]
    probe: dict[str, Any] = field(default_factory=dict)


def _batches(
    suites: tuple[Suite, ...],
) -> tuple[list[list[dict[str, Any]]], dict[tuple[str, int | None], int]]:
    # One simple_evaluate call evaluates each task once; a task asked with two few-shot counts
    # (by two suites) needs a second call.
    batches: list[list[dict[str, Any]]] = []
    batch_of: dict[tuple[str, int | None], int] = {}
    for suite in suites:
        for t in suite.tasks:
            key = (t.task, t.num_fewshot)
            if key in batch_of:
                continue
            for i, batch in enumerate(batches):
                if all(spec["task"] != t.task for spec in batch):
                    batch.append({"task": t.task, "num_fewshot": t.num_fewshot})
                    batch_of[key] = i
                    break
            else:
                batches.append([{"task": t.task, "num_fewshot": t.num_fewshot}])
                batch_of[key] = len(batches) - 1
    return batches, batch_of


def _call_worker(python: str, command: str, request: dict[str, Any], workdir: Path,
                 timeout: float | None = None) -> dict[str, Any]:
    """Run ``_eval_worker.py`` with another interpreter; its output goes to ``workdir/eval.log``."""
    workdir.mkdir(parents=True, exist_ok=True)
    req = workdir / f"eval_{command}_request.json"
    resp = workdir / f"eval_{command}_response.json"
    log = workdir / "eval.log"
    req.write_text(json.dumps(request, indent=1))
    resp.unlink(missing_ok=True)
    env = {**os.environ, "TOKENIZERS_PARALLELISM": os.environ.get("TOKENIZERS_PARALLELISM", "false")}
    if request.get("num_threads"):
        env["OMP_NUM_THREADS"] = str(request["num_threads"])
    try:
        with open(log, "a") as fh:
            proc = subprocess.run(
                [python, str(WORKER), command, str(req), str(resp)],
                stdout=fh, stderr=subprocess.STDOUT, env=env, timeout=timeout, check=False,
            )
    except FileNotFoundError:
        raise ConfigError(
            f"eval_python: {python!r} cannot be executed. Fix: give the path of a python executable."
        ) from None
    if proc.returncode != 0 or not resp.is_file():
        tail = log.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"evaluation with {python} ({command}) failed with exit code {proc.returncode}; "
                           f"log {log}:\n{tail}")
    return json.loads(resp.read_text())  # type: ignore[no-any-return]


def plan_evaluation(params: GPTQParams, suites: tuple[Suite, ...], workdir: Path) -> EvalPlan:
    """Choose the backend and check the evaluation environment and task names, before compute.

    Raises:
        ConfigError: vLLM requested but not importable or no GPU; unknown tasks; a broken eval_python.
        MissingExtraError: in-process evaluation without lm-eval installed.
    """
    include = sorted({p for s in suites for p in s.include_path})
    for p in include:
        if not Path(p).exists():
            raise ConfigError(
                f"suites: include_path {p!r} does not exist (relative paths are read from {Path.cwd()})"
            )
    tasks = sorted({t.task for s in suites for t in s.tasks})
    request = {"tasks": tasks, "include_paths": include}
    python = params.eval_python
    if python is None:
        if importlib.util.find_spec("lm_eval") is None:
            raise MissingExtraError(
                "Using the gptq objective's evaluation, but the 'lm_eval' package is not installed. "
                "Make sure to install hposdk using `pip install hposdk[gptq]`, or set eval_python to "
                "an interpreter that has it."
            )
        from . import _eval_worker

        answer = _eval_worker.probe(request)
        where = "this Python environment"
    else:
        answer = _call_worker(python, "probe", request, workdir, timeout=_PROBE_TIMEOUT_S)
        where = f"eval_python={python}"
        if answer.get("lm_eval") is None:
            raise ConfigError(f"{where} has no lm_eval. Fix: `{python} -m pip install lm-eval` (and vllm).")
    backend = params.eval_backend
    if backend == "auto":
        backend = "vllm" if answer.get("vllm") and answer.get("cuda") else "hf"
    elif backend == "vllm":
        if not answer.get("vllm"):
            raise ConfigError(
                f"eval_backend='vllm', but vLLM is not importable in {where}. Fix: install vllm there, point "
                "eval_python at an environment that has it, or use eval_backend: hf (or auto)."
            )
        if not answer.get("cuda"):
            raise ConfigError(
                f"eval_backend='vllm' needs a CUDA GPU, but torch in {where} sees none. "
                "Fix: run on a GPU machine or use eval_backend: hf (or auto)."
            )
    if answer.get("unknown_tasks"):
        raise ConfigError(
            f"suites: lm-eval in {where} does not know the tasks {answer['unknown_tasks']}. Fix: check "
            "the names (`lm-eval ls tasks`), or give custom task YAML directories as the suite's "
            "include_path."
        )
    batches, batch_of = _batches(suites)
    return EvalPlan(backend, python, suites, batches, batch_of, include, answer)


def run_evaluation(plan: EvalPlan, params: GPTQParams, model_path: Path, workdir: Path) -> dict[str, float]:
    """Evaluate ``model_path`` as planned and return the suite metrics and the combined ``score``."""
    batch_size = params.eval_batch_size
    if batch_size is None:
        batch_size = "auto" if plan.backend == "vllm" else 8
    request = {
        "model_path": str(model_path),
        "backend": plan.backend,
        "model_args": {"trust_remote_code": params.trust_remote_code, **params.eval_model_args},
        "batch_size": batch_size,
        "device": params.eval_device,
        "batches": plan.batches,
        "include_paths": plan.include_paths,
        "limit": params.limit,
        "seed": params.seed,
        "apply_chat_template": params.apply_chat_template,
        "results_file": str(workdir / "lm_eval_results.json"),
        "num_threads": params.num_threads,
    }
    workdir.mkdir(parents=True, exist_ok=True)
    if plan.python is None:
        from . import _eval_worker
        from ._quantize import quiet_known_warnings

        with _EVAL_LOCK, quiet_known_warnings():
            answer = _eval_worker.run(request)
    else:
        answer = _call_worker(plan.python, "run", request, workdir)
    results: dict[str, dict[str, dict[str, float]]] = {}
    higher: dict[str, dict[str, dict[str, bool]]] = {}
    for suite in plan.suites:
        for t in suite.tasks:
            batch = answer["batches"][plan.batch_of[(t.task, t.num_fewshot)]]
            if t.task in batch["results"]:
                results.setdefault(suite.name, {})[t.task] = batch["results"][t.task]
            if t.task in batch["higher_is_better"]:
                higher.setdefault(suite.name, {})[t.task] = batch["higher_is_better"][t.task]
    return combine_scores(plan.suites, results, higher)

