"""Run lm-eval on a saved model: in this process, or as a script in another Python environment.

This file imports only the standard library at module level and ``lm_eval``/``torch`` inside its
functions, and never imports hposdk: an evaluation environment (for example one with vLLM, which
pins its own torch) needs ``lm_eval`` and its backend, not hposdk. It is run as::

    /path/to/other/python _eval_worker.py probe REQUEST.json RESPONSE.json
    /path/to/other/python _eval_worker.py run REQUEST.json RESPONSE.json

A *probe* request is ``{"tasks": [...], "include_paths": [...]}`` and answers which lm-eval, vLLM
and CUDA the interpreter has and which task names it does not know. A *run* request is::

    {"model_path": str, "backend": "hf" | "vllm", "model_args": {...}, "batch_size": int | "auto",
     "device": str | None, "batches": [[{"task": str, "num_fewshot": int | None}, ...], ...],
     "include_paths": [str], "limit": int | float | None, "seed": int,
     "apply_chat_template": bool, "results_file": str | None, "num_threads": int | None}

and answers ``{"batches": [{"results": {task: {"acc,none": 0.5, ...}}, "higher_is_better": {task:
{metric: bool}}, "n_samples": {...}}, ...], "lm_eval_version": str}``, one entry per batch. Each
batch is one ``lm_eval.simple_evaluate`` call (a task whose few-shot count differs between suites
goes to two batches); the model is loaded once for all batches.
"""

from __future__ import annotations

import importlib.util
import json
import math
import random
import sys
from typing import Any

_TASK_MANAGERS: dict[tuple[str, ...], Any] = {}


def _task_manager(include_paths: list[str]) -> Any:
    # Building lm-eval's task index scans thousands of YAML files (seconds); reuse it per process.
    key = tuple(include_paths)
    if key not in _TASK_MANAGERS:
        from lm_eval.tasks import TaskManager

        _TASK_MANAGERS[key] = TaskManager(include_path=list(include_paths) or None)
    return _TASK_MANAGERS[key]


def _seed_all(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def probe(request: dict[str, Any]) -> dict[str, Any]:
    """Describe this interpreter's evaluation capabilities and check task names."""
    from importlib.metadata import PackageNotFoundError, version

    answer: dict[str, Any] = {"python": sys.executable, "lm_eval": None, "vllm": None, "cuda": False,
                              "unknown_tasks": []}
    for pkg in ("lm_eval", "vllm"):
        if importlib.util.find_spec(pkg) is not None:
            try:
                answer[pkg] = version(pkg.replace("_", "-"))
            except PackageNotFoundError:
                answer[pkg] = "unknown"
    if importlib.util.find_spec("torch") is not None:
        import torch

        answer["cuda"] = bool(torch.cuda.is_available())
    if answer["lm_eval"] is not None and request.get("tasks"):
        tm = _task_manager(list(request.get("include_paths", [])))
        known = set(tm.all_tasks)
        answer["unknown_tasks"] = sorted({t for t in request["tasks"] if t not in known})
    return answer


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue  # "alias", "N/A" stderrs, ...
        if "," in key and math.isfinite(float(value)):
            out[key] = float(value)
    return out


def _load_objects(tm: Any, batch: list[dict[str, Any]]) -> list[Any]:
    """Build the batch's tasks/groups and set each leaf task's few-shot count.

    Tasks are loaded one name at a time and handed to simple_evaluate as objects: wrapping them in
    an inline group to carry per-task ``num_fewshot`` breaks on groups in lm-eval 0.4.13 (the
    parent's ``task`` key leaks into every subtask, see tasks/_factory.py _build_group_members).
    """
    objects: list[Any] = []
    for spec in batch:
        name = spec["task"]
        loaded = tm.load([name])
        if name in loaded.get("groups", {}):
            obj = loaded["groups"][name]
            leaves = list(obj.get_all_tasks())
            objects.append(obj)
        elif name in loaded["tasks"]:
            obj = loaded["tasks"][name]
            leaves = [obj]
            objects.append(obj)
        else:  # a tag: several tasks
            leaves = list(loaded["tasks"].values())
            objects.extend(leaves)
        if spec.get("num_fewshot") is not None:
            for leaf in leaves:
                leaf.set_config(key="num_fewshot", value=int(spec["num_fewshot"]))
    return objects


def run(request: dict[str, Any]) -> dict[str, Any]:
    """Evaluate ``request['model_path']`` on the request's task batches (see the module docstring)."""
    from importlib.metadata import version

    import lm_eval
    from lm_eval.api.registry import get_model

    seed = int(request.get("seed", 0))
    backend = request["backend"]
    if request.get("num_threads"):
        import torch

        torch.set_num_threads(int(request["num_threads"]))
    tm = _task_manager(list(request.get("include_paths", [])))
    model_args: dict[str, Any] = {"pretrained": request["model_path"], **request.get("model_args", {})}
    extra: dict[str, Any] = {"batch_size": request.get("batch_size")}
    if backend == "hf":
        import torch

        device = request.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
        model_args.setdefault("dtype", "auto")
        extra["device"] = device
    elif backend == "vllm":
        model_args.setdefault("seed", seed)
    _seed_all(seed)
    lm = get_model(backend).create_from_arg_obj(model_args, extra)

    answers: list[dict[str, Any]] = []
    raw: list[dict[str, Any]] = []
    for batch in request["batches"]:
        objects = _load_objects(tm, batch)
        out = lm_eval.simple_evaluate(
            model=lm,
            tasks=objects,
            task_manager=tm,
            limit=request.get("limit"),
            bootstrap_iters=0,  # stderr bootstraps cost minutes on big suites and are not scored
            log_samples=False,
            apply_chat_template=bool(request.get("apply_chat_template", False)),
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
        )
        if out is None:  # non-zero rank of a distributed run
            answers.append({"results": {}, "higher_is_better": {}, "n_samples": {}})
            continue
        answers.append({
            "results": {task: _numbers(metrics) for task, metrics in out.get("results", {}).items()},
            "higher_is_better": {
                task: {k: bool(v) for k, v in metrics.items() if v is not None}
                for task, metrics in out.get("higher_is_better", {}).items()
            },
            "n_samples": out.get("n-samples", {}),
        })
        raw.append({k: out.get(k) for k in ("results", "groups", "n-shot", "n-samples", "higher_is_better",
                                             "versions", "config")})
    if request.get("results_file"):
        with open(request["results_file"], "w") as fh:
            json.dump(raw, fh, indent=1, default=str)
    return {"batches": answers, "lm_eval_version": version("lm_eval")}


def main(argv: list[str]) -> int:
    """``python _eval_worker.py probe|run REQUEST.json RESPONSE.json``."""
    if len(argv) != 3 or argv[0] not in ("probe", "run"):
        print("usage: _eval_worker.py probe|run REQUEST.json RESPONSE.json", file=sys.stderr)
        return 2
    command, request_path, response_path = argv
    with open(request_path) as fh:
        request = json.load(fh)
    answer = probe(request) if command == "probe" else run(request)
    with open(response_path, "w") as fh:
        json.dump(answer, fh)
    return 0


if __name__ == "__main__":
    import os

    # Run as a script, this file's folder is sys.path[0]; its private modules must not shadow anything.
    if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
        sys.path.pop(0)
    sys.exit(main(sys.argv[1:]))
