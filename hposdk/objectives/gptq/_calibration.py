"""Calibration data: read local text/JSON or a Hugging Face dataset, draw a seeded subset, tokenize.

Sampling happens here, not in llmcompressor: its ``RandomSampler`` draws from the global torch
generator and clips ``num_calibration_samples`` to the dataset size with only a log warning
(llmcompressor/datasets/utils.py ``_make_sampler``). Drawing the subset with our own seeded RNG
makes the choice explicit, reproducible, and checkable before any compute.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...exceptions import ConfigError
from ._params import GPTQParams

__all__ = ["CalibrationSet", "load_calibration_records", "select_calibration_texts"]

_LOCAL_SUFFIXES = (".txt", ".json", ".jsonl")


@dataclass(frozen=True)
class CalibrationSet:
    """The raw calibration records and where they came from (for the cache key)."""

    records: Sequence[Any]
    identity: dict[str, Any]


def _is_local(ref: str) -> bool:
    return Path(ref).exists() or ref.endswith(_LOCAL_SUFFIXES) or ref.startswith((".", "/", "~"))


def load_calibration_records(params: GPTQParams) -> CalibrationSet:
    """Read the calibration records (not yet tokenized) named by ``params.calibration_dataset``.

    Raises:
        ConfigError: a missing or unreadable local file, or a record without text.
    """
    ref = params.calibration_dataset
    if _is_local(ref):
        path = Path(ref).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"calibration_dataset: file {ref!r} not found (relative paths are read from {Path.cwd()}). "
                "Fix: give an existing .txt/.json/.jsonl file or a Hugging Face dataset id."
            )
        records = _read_local(path, params.calibration_text_column)
        stat = path.stat()
        identity = {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        return CalibrationSet(records, identity)
    from ..._imports import require

    datasets = require("datasets", "gptq", "a Hugging Face calibration dataset")
    try:
        ds = datasets.load_dataset(ref, params.calibration_config, split=params.calibration_split)
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigError(
            f"calibration_dataset: cannot load {ref!r} (config={params.calibration_config!r}, "
            f"split={params.calibration_split!r}): {exc}"
        ) from None
    cols = set(ds.column_names)
    if params.calibration_text_column not in cols and "messages" not in cols:
        raise ConfigError(
            f"calibration_text_column: {ref!r} has columns {sorted(cols)}, neither "
            f"{params.calibration_text_column!r} nor 'messages'. Fix: set calibration_text_column."
        )
    identity = {"hf": ref, "config": params.calibration_config, "split": params.calibration_split,
                "fingerprint": getattr(ds, "_fingerprint", None)}
    return CalibrationSet(ds, identity)


def _read_local(path: Path, column: str) -> list[Any]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".txt":
        return [line for line in text.splitlines() if line.strip()]
    try:
        if path.suffix == ".jsonl":
            records: Any = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            data = json.loads(text)
            records = data if isinstance(data, list) else data.get("data") if isinstance(data, dict) else None
            if not isinstance(records, list):
                raise ConfigError(
                    f"calibration_dataset: {path} must hold a JSON list of records (or {{'data': [...]}})"
                )
    except json.JSONDecodeError as exc:
        raise ConfigError(f"calibration_dataset: {path} is not valid JSON: {exc}") from None
    for i, rec in enumerate(records[:1]):
        if not isinstance(rec, str) and not (isinstance(rec, dict) and (column in rec or "messages" in rec)):
            raise ConfigError(
                f"calibration_dataset: record {i} of {path} has no {column!r} (or 'messages') field. "
                "Fix: set calibration_text_column to the field holding the text."
            )
    return records


def _render(record: Any, column: str, tokenizer: Any) -> tuple[str, bool]:
    """(text, add_special_tokens): chat records are rendered with the chat template, which already
    contains the BOS token, so the tokenizer must not add a second one."""
    if isinstance(record, str):
        return record, True
    value = record.get(column) if isinstance(record, dict) else None
    if isinstance(value, str):
        return value, True
    messages = record.get("messages") if isinstance(record, dict) else None
    if isinstance(messages, list):
        if getattr(tokenizer, "chat_template", None) is None:
            raise ConfigError(
                "calibration_dataset: the records are chat `messages` but the model's tokenizer has no chat "
                f"template. Fix: provide plain text in a {column!r} field."
            )
        return tokenizer.apply_chat_template(messages, tokenize=False), False
    return "", True


def select_calibration_texts(
    calib: CalibrationSet, params: GPTQParams, tokenizer: Any
) -> dict[str, list[Any]]:
    """Draw ``num_calibration_samples`` non-empty records (seeded) and tokenize them.

    Returns:
        ``{"input_ids": [...], "attention_mask": [...]}``, ready for ``datasets.Dataset.from_dict``.

    Raises:
        ConfigError: the calibration set has fewer usable samples than requested.
    """
    n_wanted = params.num_calibration_samples
    n_total = len(calib.records)
    too_few = (
        f"num_calibration_samples={n_wanted} exceeds the {{n}} usable samples of calibration_dataset="
        f"{params.calibration_dataset!r}; llmcompressor would silently calibrate on fewer. Fix: lower "
        "num_calibration_samples (or the upper bound of its search range) or use a larger calibration set."
    )
    if n_wanted > n_total:
        raise ConfigError(too_few.format(n=n_total))
    order = list(range(n_total))
    random.Random(params.seed).shuffle(order)
    input_ids: list[list[int]] = []
    masks: list[list[int]] = []
    for idx in order:
        text, special = _render(calib.records[idx], params.calibration_text_column, tokenizer)
        if not text.strip():
            continue
        enc = tokenizer(text, add_special_tokens=special, truncation=True, max_length=params.max_seq_length)
        if not enc["input_ids"]:
            continue
        input_ids.append(list(enc["input_ids"]))
        masks.append(list(enc["attention_mask"]))
        if len(input_ids) == n_wanted:
            break
    if len(input_ids) < n_wanted:
        raise ConfigError(too_few.format(n=len(input_ids)))
    return {"input_ids": input_ids, "attention_mask": masks}

