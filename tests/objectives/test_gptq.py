"""The GPTQ objective, for real and offline: llmcompressor quantizes a tiny Llama, lm-eval scores it.

A 2-layer Llama (hidden 64) with a byte-level BPE tokenizer is built and briefly trained once per
session on a toy grammar (``make_tiny_model``); the lm-eval tasks are YAML files over local JSONL
(a perplexity task and a multiple-choice group). Nothing is mocked and nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# No network here (and none needed): fail fast instead of waiting for the Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest

pytest.importorskip("llmcompressor", reason="the gptq extra is not installed (pip install hposdk[gptq])")
pytest.importorskip("lm_eval", reason="the gptq extra is not installed (pip install hposdk[gptq])")

from hposdk.exceptions import ConfigError, MissingExtraError
from hposdk.objectives.gptq import (
    OPENLLM_V1,
    GPTQParams,
    Suite,
    check_params,
    combine_scores,
    evaluate_model,
    objective,
)
from hposdk.objectives.gptq._calibration import CalibrationSet, select_calibration_texts
from hposdk.objectives.gptq._suites import resolve_suites
from hposdk.objectives.gptq.make_tiny_model import TinyAssets, build_tiny_assets, main
from hposdk.trial import FixedTrial

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "gptq"
pytestmark = [
    # transformers' notices about llmcompressor's CPU offloading and compressed-tensors loading
    pytest.mark.filterwarnings("ignore:Attempting to save a model with offloaded modules:UserWarning"),
    pytest.mark.filterwarnings("ignore:You passed `quantization_config`:UserWarning"),
]
THREADS = 2  # the machine is shared: never more than two torch threads


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TinyAssets]:
    """The tiny model, calibration text, tasks and suites, built once for the session."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(min(THREADS, before))
    try:
        yield build_tiny_assets(tmp_path_factory.mktemp("tiny-gptq"), train_steps=150, seed=0)
    finally:
        torch.set_num_threads(before)


def base(tiny: TinyAssets, **overrides: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "model": str(tiny.model),
        "calibration_dataset": str(tiny.calibration),
        "num_calibration_samples": 64,
        "max_seq_length": 32,
        "group_size": 32,
        "dampening_frac": 0.01,
        "actorder": None,
        "suites": [str(tiny.ppl_suite), str(tiny.choice_suite)],
        "eval_backend": "auto",
        "num_threads": THREADS,
        "seed": 0,
    }
    params.update(overrides)
    return params


def run_trial(params: dict[str, Any], workdir: Path) -> dict[str, float]:
    return objective(FixedTrial(params, workdir=workdir))


def models_in(output_dir: Path) -> list[Path]:
    """The quantized models cached in an output_dir (its lock files live in .locks/)."""
    return [p for p in output_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]


# --- import hygiene ---------------------------------------------------------------------------


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )


def test_import_without_llmcompressor_raises_missing_extra() -> None:
    proc = _python(
        "import sys; sys.modules['llmcompressor'] = None\n"
        "from hposdk.exceptions import MissingExtraError\n"
        "try:\n"
        "    import hposdk.objectives.gptq\n"
        "except MissingExtraError as exc:\n"
        "    print('MISSING', exc)\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert "MISSING" in proc.stdout
    assert "pip install hposdk[gptq]" in proc.stdout
    assert issubclass(MissingExtraError, ImportError)


def test_import_loads_no_heavy_library() -> None:
    proc = _python(
        "import sys, hposdk, hposdk.objectives.gptq\n"
        "names = ('torch', 'llmcompressor', 'lm_eval', 'transformers', 'datasets', 'compressed_tensors')\n"
        "heavy = [m for m in names if m in sys.modules]\n"
        "print(heavy)\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# --- parameters and suites (pure data) ----------------------------------------------------------


@pytest.mark.parametrize(
    ("update", "match"),
    [
        ({"dampening_frac": 0.0}, r"dampening_frac > 0"),
        ({"dampening_frac": -0.1}, r"dampening_frac > 0"),
        ({"group_size": 0}, r"group_size > 0"),
        ({"observer": "percentile"}, r"observer"),
        ({"actorder": "random"}, r"actorder"),
        ({"limit": 1.5}, r"fraction"),
        ({"limit": 0}, r">= 1"),
        ({"suites": ["openllm", "nope"]}, r"unknown suite 'nope'"),
        ({"damping": 0.1}, r"damping"),
        ({"eval_backend": "tensorrt"}, r"eval_backend"),
    ],
)
def test_params_refuse_bad_values(update: dict[str, Any], match: str) -> None:
    good = {"model": "m", "calibration_dataset": "c.txt"}
    with pytest.raises(ValueError, match=match):
        GPTQParams.model_validate({**good, **update})


def test_params_are_frozen_with_defaults() -> None:
    p = GPTQParams(model="m", calibration_dataset="c.txt")
    assert (p.num_bits, p.group_size, p.symmetric, p.observer, p.eval_backend) == (
        4,
        128,
        True,
        "minmax",
        "auto",
    )
    assert p.suites == ("openllm",)
    with pytest.raises(ValueError, match="frozen"):
        p.dampening_frac = 0.5  # type: ignore[misc]
    # aliases share one cache key
    assert (
        GPTQParams(model="m", calibration_dataset="c", actorder="static").quantization_fields()
        == GPTQParams(model="m", calibration_dataset="c", actorder="weight").quantization_fields()
    )


def test_openllm_v1_suite() -> None:
    table = {(t.task, t.metric, t.filter, t.num_fewshot, t.weight) for t in OPENLLM_V1.tasks}
    assert table == {
        ("arc_challenge", "acc_norm", "none", 25, 1.0),
        ("hellaswag", "acc_norm", "none", 10, 1.0),
        ("mmlu", "acc", "none", 5, 1.0),
        ("truthfulqa_mc2", "acc", "none", 0, 1.0),
        ("winogrande", "acc", "none", 5, 1.0),
        ("gsm8k", "exact_match", "strict-match", 5, 1.0),
    }
    assert OPENLLM_V1.direction == "max"
    assert resolve_suites(["openllm"]) == (OPENLLM_V1,)


def test_combine_scores_weights_and_directions() -> None:
    acc = Suite(
        name="acc",
        weight=3,
        tasks=[{"task": "a", "metric": "acc"}, {"task": "b", "metric": "acc_norm", "weight": 3}],
    )
    ppl = Suite(name="ppl", direction="min", tasks=[{"task": "w", "metric": "word_perplexity"}])
    results = {
        "acc": {"a": {"acc,none": 0.2}, "b": {"acc_norm,none": 0.6}},
        "ppl": {"w": {"word_perplexity,none": 4.0}},
    }
    out = combine_scores([acc, ppl], results)
    assert out["acc/score"] == pytest.approx(0.5)
    assert out["acc/b/acc_norm"] == 0.6
    assert out["ppl/score"] == 4.0
    assert out["score"] == pytest.approx((3 * 0.5 - 4.0) / 4)  # a min suite enters negated

    with pytest.raises(ConfigError, match=r"no metric 'acc,none'.*acc_norm,none"):
        combine_scores([Suite(name="x", tasks=[{"task": "b", "metric": "acc"}])], {"x": results["acc"]})
    with pytest.raises(ConfigError, match=r"direction 'max'.*lower-is-better.*direction: min"):
        combine_scores(
            [Suite(name="x", tasks=[{"task": "w", "metric": "word_perplexity"}])],
            {"x": results["ppl"]},
            {"x": {"w": {"word_perplexity": False}}},
        )


def test_suite_definitions_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="twice"):
        Suite(name="s", tasks=[{"task": "a", "metric": "acc"}, {"task": "a", "metric": "acc"}])
    with pytest.raises(ValueError, match="two few-shot counts"):
        Suite(
            name="s",
            tasks=[
                {"task": "a", "metric": "acc", "num_fewshot": 0},
                {"task": "a", "metric": "acc_norm", "num_fewshot": 5},
            ],
        )
    (tmp_path / "tasks").mkdir()
    (tmp_path / "s.yaml").write_text(
        "direction: min\ninclude_path: tasks\ntasks:\n  - {task: t, metric: ppl}\n"
    )
    suite = Suite.from_yaml(tmp_path / "s.yaml")
    assert suite.name == "s" and suite.include_path == (str((tmp_path / "tasks").resolve()),)
    (tmp_path / "bad.yaml").write_text("name: b\ntasks:\n  - {task: t, metrik: acc}\n")
    with pytest.raises(ConfigError, match=r"line 3.*metrik"):
        Suite.from_yaml(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="two suites are named"):
        resolve_suites([str(tmp_path / "s.yaml"), {"name": "s", "tasks": [{"task": "t", "metric": "acc"}]}])


def test_chat_calibration_records_use_the_template_without_a_second_bos(tiny: TinyAssets) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny.model)
    records = [{"messages": [{"role": "user", "content": "the red fox"}]}, "", {"text": "a big dog"}]
    params = GPTQParams(model=str(tiny.model), calibration_dataset="x.jsonl", num_calibration_samples=2)
    out = select_calibration_texts(CalibrationSet(records, {}), params, tok)
    ids = sorted(out["input_ids"], key=len)
    assert len(ids) == 2  # the blank record is skipped
    assert all(seq.count(tok.bos_token_id) == 1 for seq in ids)
    with pytest.raises(ConfigError, match="num_calibration_samples=3 exceeds the 2 usable samples"):
        select_calibration_texts(
            CalibrationSet(records, {}), params.model_copy(update={"num_calibration_samples": 3}), tok
        )


# --- checks before compute ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("update", "match"),
    [
        (
            {"group_size": 48},
            r"group_size=48 must divide .*in_features=64.*Fix: choose group_size from \[16, 32, 64\]",
        ),
        ({"group_size": 256}, r"group_size=256 must divide"),
        ({"num_calibration_samples": 300}, r"num_calibration_samples=300 exceeds the 256 usable samples"),
        ({"actorder": "group"}, r"actorder='group' is not supported by the installed compressed-tensors"),
        ({"eval_backend": "vllm"}, r"eval_backend='vllm'.*(not importable|needs a CUDA GPU)"),
        ({"max_seq_length": 4096}, r"max_seq_length=4096 exceeds the model's max_position_embeddings=128"),
        ({"calibration_dataset": "missing.txt"}, r"calibration_dataset: file 'missing.txt' not found"),
        (
            {"suites": [{"name": "x", "tasks": [{"task": "no_such_task_xyz", "metric": "acc"}]}]},
            r"does not know the tasks \['no_such_task_xyz'\]",
        ),
    ],
)
def test_configuration_errors_come_before_any_compute(
    tiny: TinyAssets, tmp_path: Path, update: dict[str, Any], match: str
) -> None:
    models = tmp_path / "models"
    with pytest.raises(ConfigError, match=match):
        run_trial(base(tiny, output_dir=str(models), **update), tmp_path / "trial")
    assert not models.exists() or not any(models.iterdir())  # nothing was quantized


# --- real quantization and evaluation --------------------------------------------------------


@pytest.mark.slow
def test_trial_saves_a_4bit_compressed_checkpoint_and_scores_it(tiny: TinyAssets, tmp_path: Path) -> None:
    from safetensors import safe_open

    out = tmp_path / "models"
    metrics = run_trial(base(tiny, output_dir=str(out), keep_model=True), tmp_path / "trial")

    assert set(metrics) >= {
        "score",
        "tiny_ppl/score",
        "tiny_ppl/tiny_ppl/word_perplexity",
        "tiny_choice/score",
        "tiny_choice/tiny_choice/acc",
        "quantize/cache_hit",
        "time/quantize_s",
        "time/eval_s",
    }
    assert all(isinstance(v, float) for v in metrics.values())
    assert metrics["score"] == pytest.approx((metrics["tiny_choice/score"] - metrics["tiny_ppl/score"]) / 2)
    assert metrics["quantize/cache_hit"] == 0.0
    assert 1.0 < metrics["tiny_ppl/tiny_ppl/word_perplexity"] < 1000  # a trained model, not uniform noise

    (model_dir,) = models_in(out)
    qcfg = json.loads((model_dir / "config.json").read_text())["quantization_config"]
    assert qcfg["quant_method"] == "compressed-tensors"
    assert qcfg["format"] == "pack-quantized" and qcfg["quantization_status"] == "compressed"
    weights = qcfg["config_groups"]["group_0"]["weights"]
    assert (weights["num_bits"], weights["group_size"], weights["strategy"], weights["symmetric"]) == (
        4,
        32,
        "group",
        True,
    )
    assert weights["actorder"] is None and qcfg["ignore"] == ["lm_head"]
    with safe_open(str(model_dir / "model.safetensors"), "pt") as fh:
        keys = set(fh.keys())
        packed = sorted(k for k in keys if k.endswith(".weight_packed"))
        assert len(packed) == 2 * 7  # q, k, v, o, gate, up, down in each of the 2 layers
        for key in packed:
            layer = key.removesuffix(".weight_packed")
            tensor = fh.get_tensor(key)
            rows, cols = (int(x) for x in fh.get_tensor(f"{layer}.weight_shape"))
            assert str(tensor.dtype) == "torch.int32" and tuple(tensor.shape) == (
                rows,
                cols // 8,
            )  # 8 x 4 bits
            assert tuple(fh.get_tensor(f"{layer}.weight_scale").shape) == (rows, cols // 32)
            assert f"{layer}.weight" not in keys
        assert "lm_head.weight" in keys  # ignored, stays in full precision
    summary = json.loads((tmp_path / "trial" / "gptq_trial.json").read_text())
    assert summary["model_path"] == str(model_dir) and summary["eval_backend"] == "hf"

    # the unquantized baseline, scored the same way
    baseline = evaluate_model(tiny.model, base(tiny))
    assert set(baseline) == {k for k in metrics if not k.startswith(("quantize/", "time/"))}


@pytest.mark.slow
def test_equal_params_give_equal_scores_and_the_cache_is_reused(tiny: TinyAssets, tmp_path: Path) -> None:
    params = base(tiny, observer="mse", actorder="weight", num_calibration_samples=32)
    first = run_trial({**params, "output_dir": str(tmp_path / "a")}, tmp_path / "t1")
    second = run_trial({**params, "output_dir": str(tmp_path / "b")}, tmp_path / "t2")  # quantized again
    assert second["quantize/cache_hit"] == 0.0
    scores = [k for k in first if not k.startswith(("time/", "quantize/"))]
    assert {k: first[k] for k in scores} == {k: second[k] for k in scores}  # exactly equal

    # keep_model=False: the model is deleted once the trial is done...
    assert not models_in(tmp_path / "a")
    # ...keep_model=True keeps it, and the next trial with the same quantization params reuses it
    kept = run_trial({**params, "output_dir": str(tmp_path / "c"), "keep_model": True}, tmp_path / "t3")
    reused = run_trial({**params, "output_dir": str(tmp_path / "c"), "limit": 8}, tmp_path / "t4")
    assert kept["quantize/cache_hit"] == 0.0 and reused["quantize/cache_hit"] == 1.0
    assert kept["score"] == first["score"]
    assert models_in(tmp_path / "c")  # still kept: it was asked for


@pytest.mark.slow
def test_different_params_change_the_perplexity(tiny: TinyAssets, tmp_path: Path) -> None:
    ppl = "tiny_ppl/tiny_ppl/word_perplexity"
    updates: dict[str, dict[str, Any]] = {
        "damp_0.01": {"dampening_frac": 0.01},
        "damp_0.5": {"dampening_frac": 0.5},
        "group_64": {"group_size": 64},
        "per_channel": {"group_size": -1},
        "asymmetric": {"symmetric": False},
    }
    runs = {name: run_trial(base(tiny, **update), tmp_path / name)[ppl] for name, update in updates.items()}
    assert len(set(runs.values())) == len(runs), runs  # every change moves the perplexity


def test_concurrent_trials_build_a_shared_model_once(tmp_path: Path) -> None:
    import threading
    import time

    from hposdk.objectives.gptq._quantize import quantize_cached

    builds: list[Path] = []
    seen: list[tuple[bool, bool]] = []

    def build(path: Path) -> None:
        time.sleep(0.3)  # long enough for the other trial to arrive and wait
        path.mkdir(parents=True)
        (path / "model.safetensors").write_text("weights")
        builds.append(path)

    def trial(keep: bool) -> None:
        params = GPTQParams(model="m", calibration_dataset="c.txt", keep_model=keep)
        with quantize_cached(params, tmp_path, "k", build, {}) as cached:
            time.sleep(0.2)
            seen.append((cached.hit, (cached.path / "model.safetensors").is_file()))

    threads = [threading.Thread(target=trial, args=(False,)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1
    assert sorted(seen) == [(False, True), (True, True)]
    assert not (tmp_path / "k").exists()  # nobody asked to keep it: the last user removed it
    trial(True)
    trial(False)  # a later trial that does not ask to keep it does not delete a kept model
    assert (tmp_path / "k" / "model.safetensors").is_file() and len(builds) == 2


@pytest.mark.slow
def test_evaluation_in_another_interpreter_matches_in_process(tiny: TinyAssets, tmp_path: Path) -> None:
    params = base(tiny, output_dir=str(tmp_path / "models"), keep_model=True)
    here = run_trial(params, tmp_path / "here")
    there = run_trial({**params, "eval_python": sys.executable}, tmp_path / "there")
    assert there["quantize/cache_hit"] == 1.0
    scores = [k for k in here if not k.startswith(("time/", "quantize/"))]
    assert {k: here[k] for k in scores} == {k: there[k] for k in scores}
    assert (tmp_path / "there" / "eval.log").is_file()
    assert (
        json.loads((tmp_path / "there" / "eval_probe_response.json").read_text())["python"] == sys.executable
    )


def test_a_broken_eval_python_is_a_config_error(tiny: TinyAssets, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="eval_python"):
        check_params(base(tiny, eval_python=str(tmp_path / "no-python")), tmp_path)


# --- studies ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_three_trial_study(tiny: TinyAssets, tmp_path: Path) -> None:
    from hposdk import Discrete, LogUniform, SearchSpace, Study, Uniform

    space = SearchSpace(
        {
            "dampening_frac": Uniform(0.01, 0.1, step=0.01),
            "num_calibration_samples": LogUniform(32, 128, base=2, step=1),
            "observer": Discrete(["mse", "minmax"]),
            "actorder": Discrete(["weight", None]),
        }
    )
    fixed = {k: v for k, v in base(tiny, output_dir=str(tmp_path / "models")).items() if k not in space}
    result = Study(
        objective,
        space,
        metric="score",
        mode="max",
        backend="local",
        optimizer="random",
        n_trials=3,
        seed=0,
        fixed=fixed,
        storage=str(tmp_path / "studies"),
        progress=False,
    ).optimize()
    assert len(result.trials) == 3
    assert all(t.state.name == "COMPLETE" for t in result.trials), [
        getattr(t, "error", None) for t in result.trials
    ]
    assert result.best.value == max(t.value for t in result.trials if t.value is not None)
    assert result.best.params["num_calibration_samples"] in (32, 64, 128)


def test_the_example_studies_are_valid() -> None:
    from hposdk.study import StudyConfig, check_binding

    for name in ("study.yaml", "study_cpu.yaml"):
        cfg = StudyConfig.from_yaml(EXAMPLES / name)
        assert cfg.objective == "hposdk.objectives.gptq:objective"
        assert (cfg.metric, cfg.mode) == ("score", "max")
        check_binding(objective, cfg.space, cfg.fixed, seed=0)
    gpu = StudyConfig.from_yaml(EXAMPLES / "study.yaml")
    assert gpu.space["num_calibration_samples"].grid() == (512, 1024, 2048)
    assert len(gpu.space["dampening_frac"].grid()) == 10
    assert (gpu.optimizer, gpu.optimizer_options, gpu.n_trials, gpu.max_concurrent) == (
        "tpe",
        {"n_startup_trials": 2},
        10,
        2,
    )
    assert gpu.fixed["model"] == "meta-llama/Llama-3.2-1B-Instruct" and gpu.fixed["suites"] == ["openllm"]
    assert gpu.fixed["eval_backend"] == "vllm"


@pytest.mark.slow
def test_the_cpu_example_study_runs(
    tiny: TinyAssets, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hposdk import Study

    (tmp_path / "tiny-gptq").symlink_to(
        tiny.root, target_is_directory=True
    )  # the layout make_tiny_model writes
    monkeypatch.chdir(tmp_path)
    study = Study.from_yaml(
        EXAMPLES / "study_cpu.yaml", progress=False, n_trials=2, storage=str(tmp_path / "s")
    )
    result = study.optimize()
    assert [t.state.name for t in result.trials] == ["COMPLETE", "COMPLETE"]


def test_make_tiny_model_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    threads = torch.get_num_threads()
    try:
        assert main([str(tmp_path / "t"), "--train-steps", "0"]) == 0
    finally:
        torch.set_num_threads(threads)  # the command caps torch threads for its process
    assert "model: " in capsys.readouterr().out
    assert (tmp_path / "t" / "model" / "tokenizer.json").is_file()
    assert (tmp_path / "t" / "suites" / "tiny_ppl.yaml").is_file()
