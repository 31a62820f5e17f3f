"""Build a tiny Llama, its tokenizer, calibration text and lm-eval tasks, all offline.

Nothing here downloads: the tokenizer is a byte-level BPE trained on a toy grammar, the model is a
2-layer Llama trained for a few hundred steps on sentences of that grammar (so quantization
damage is measurable), and the tasks are lm-eval YAML files over local JSONL data. It is what the
CPU example study and the tests run on::

    python -m hposdk.objectives.gptq.make_tiny_model ./tiny-gptq

writes ``./tiny-gptq/model`` (model + tokenizer), ``calibration.txt``, ``tasks/`` (``tiny_ppl``
perplexity, ``tiny_mc`` multiple choice, and the group ``tiny_choice`` with an aggregate) and the
suites ``suites/tiny_ppl.yaml`` (direction min) and ``suites/tiny_choice.yaml`` (direction max).
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TinyAssets", "build_tiny_assets", "main"]

_DETS = ["the", "a"]
_ADJS = ["quick", "lazy", "brown", "small", "big", "old", "red", "happy"]
_NOUNS = ["fox", "dog", "cat", "bird", "horse", "mouse", "fish", "cow"]
_VERBS = ["chases", "sees", "likes", "follows", "finds", "watches"]
_CHAT_TEMPLATE = "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"


@dataclass(frozen=True)
class TinyAssets:
    """Paths of everything :func:`build_tiny_assets` wrote."""

    root: Path
    model: Path
    calibration: Path
    tasks: Path
    ppl_suite: Path
    choice_suite: Path


def _sentence(rng: random.Random) -> str:
    return (f"{rng.choice(_DETS)} {rng.choice(_ADJS)} {rng.choice(_NOUNS)} {rng.choice(_VERBS)} "
            f"{rng.choice(_DETS)} {rng.choice(_ADJS)} {rng.choice(_NOUNS)}")


def _write_tasks(tasks: Path, rng: random.Random, n_eval: int) -> None:
    tasks.mkdir(parents=True, exist_ok=True)
    with open(tasks / "tiny_ppl.jsonl", "w") as fh:
        for _ in range(n_eval):
            fh.write(json.dumps({"text": _sentence(rng)}) + "\n")
    with open(tasks / "tiny_mc.jsonl", "w") as fh:
        for _ in range(n_eval):
            words = _sentence(rng).split()
            # after "<det> <adj>" only a noun is grammatical; a verb or a determiner is not
            choices = [words[-1], rng.choice(_VERBS), rng.choice(_DETS)]
            rng.shuffle(choices)
            fh.write(json.dumps({"prefix": " ".join(words[:-1]), "choices": choices,
                                 "label": choices.index(words[-1])}) + "\n")
    # lm-eval resolves data_files against the working directory, so the YAML holds absolute paths
    (tasks / "tiny_ppl.yaml").write_text(
        "task: tiny_ppl\n"
        "dataset_path: json\n"
        "dataset_kwargs:\n"
        f"  data_files:\n    test: {(tasks / 'tiny_ppl.jsonl').resolve()}\n"
        "test_split: test\n"
        "output_type: loglikelihood_rolling\n"
        'doc_to_text: ""\n'
        'doc_to_target: "{{text}}"\n'
        "metric_list:\n"
        "  - {metric: word_perplexity, aggregation: weighted_perplexity, higher_is_better: false}\n"
        "  - {metric: byte_perplexity, aggregation: weighted_perplexity, higher_is_better: false}\n"
        "  - {metric: bits_per_byte, aggregation: bits_per_byte, higher_is_better: false}\n"
        "metadata:\n  version: 1\n"
    )
    (tasks / "tiny_mc.yaml").write_text(
        "task: tiny_mc\n"
        "dataset_path: json\n"
        "dataset_kwargs:\n"
        f"  data_files:\n    test: {(tasks / 'tiny_mc.jsonl').resolve()}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "{{prefix}}"\n'
        'doc_to_choice: "{{choices}}"\n'
        'doc_to_target: "{{label}}"\n'
        "metric_list:\n"
        "  - {metric: acc, aggregation: mean, higher_is_better: true}\n"
        "  - {metric: acc_norm, aggregation: mean, higher_is_better: true}\n"
        "metadata:\n  version: 1\n"
    )
    (tasks / "tiny_choice.yaml").write_text(
        "group: tiny_choice\n"
        "task:\n  - tiny_mc\n"
        "aggregate_metric_list:\n  - {metric: acc, weight_by_size: true}\n"
        "metadata:\n  version: 1\n"
    )


def _write_suites(root: Path) -> tuple[Path, Path]:
    suites = root / "suites"
    suites.mkdir(parents=True, exist_ok=True)
    ppl = suites / "tiny_ppl.yaml"
    ppl.write_text(
        "name: tiny_ppl\n"
        "description: perplexity of held-out sentences of the toy grammar (lower is better)\n"
        "direction: min\n"
        "include_path: [../tasks]\n"
        "tasks:\n"
        "  - {task: tiny_ppl, metric: word_perplexity}\n"
    )
    choice = suites / "tiny_choice.yaml"
    choice.write_text(
        "name: tiny_choice\n"
        "description: pick the grammatical next word (a group with an aggregate, and few-shot)\n"
        "direction: max\n"
        "include_path: [../tasks]\n"
        "tasks:\n"
        "  - {task: tiny_choice, metric: acc, num_fewshot: 2}\n"
    )
    return ppl, choice


def _train(model: object, tokenizer: object, texts: list[str], steps: int, seed: int) -> None:
    import torch

    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)  # type: ignore[attr-defined]
    model.train()  # type: ignore[attr-defined]
    rng = random.Random(seed)
    for _ in range(steps):
        batch = tokenizer(rng.sample(texts, 16), return_tensors="pt", padding=True)  # type: ignore[operator]
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        loss = model(**batch, labels=labels).loss  # type: ignore[operator]
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()  # type: ignore[attr-defined]


def build_tiny_assets(root: str | Path, *, train_steps: int = 150, seed: int = 0,
                      n_calibration: int = 256, n_eval: int = 32) -> TinyAssets:
    """Write the tiny model, tokenizer, calibration text, tasks and suites under ``root``.

    Args:
        root: output directory (created).
        train_steps: optimizer steps on grammar sentences (0 keeps the random initialisation).
        seed: seeds the grammar, the weights and the training.
        n_calibration: lines of ``calibration.txt``.
        n_eval: examples of each lm-eval task.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    train_texts = [_sentence(rng) for _ in range(1024)]
    calibration = root / "calibration.txt"
    calibration.write_text("\n".join(_sentence(rng) for _ in range(n_calibration)) + "\n")
    _write_tasks(root / "tasks", rng, n_eval)
    ppl_suite, choice_suite = _write_suites(root)

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        train_texts,
        trainers.BpeTrainer(vocab_size=320, special_tokens=["<s>", "</s>"],
                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()),
    )
    # like Llama's tokenizer: prepend <s> to every encoded text
    bos = [("<s>", bpe.token_to_id("<s>"))]
    bpe.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=bos)
    special = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "</s>"}
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, model_max_length=128, **special)
    tokenizer.chat_template = _CHAT_TEMPLATE
    model_dir = root / "model"
    tokenizer.save_pretrained(model_dir)

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=bpe.get_vocab_size(), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    if train_steps:
        _train(model, tokenizer, train_texts, train_steps, seed)
    model.save_pretrained(model_dir)
    return TinyAssets(root, model_dir, calibration, root / "tasks", ppl_suite, choice_suite)


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m hposdk.objectives.gptq.make_tiny_model OUTDIR``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir", help="directory to write model/, calibration.txt, tasks/ and suites/ into")
    parser.add_argument("--train-steps", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(min(2, torch.get_num_threads()))  # a toy model; leave the cores alone
    assets = build_tiny_assets(args.outdir, train_steps=args.train_steps, seed=args.seed)
    for name in ("model", "calibration", "tasks", "ppl_suite", "choice_suite"):
        print(f"{name}: {getattr(assets, name)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
