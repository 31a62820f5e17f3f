"""GPTQ with llmcompressor: the checks that need the model, the recipe, the cached oneshot run."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from ...exceptions import ConfigError
from ._calibration import CalibrationSet
from ._params import GPTQParams

__all__ = ["ModelInfo", "check_actorder", "inspect_model", "quantize_cached", "run_oneshot"]

#: llmcompressor keeps one global CompressionSession, so two oneshot calls must not overlap in a
#: process (the local backend runs concurrent trials in separate processes, which is fine).
_ONESHOT_LOCK = threading.Lock()
_MARKER = "hposdk_quantization.json"
# A new release of any of these may quantize differently: part of the cache key.
_VERSIONED = ("llmcompressor", "compressed-tensors", "transformers", "torch")


@dataclass(frozen=True)
class ModelInfo:
    """What the checks need to know about the model to quantize."""

    in_features: dict[int, list[str]]  # input width -> quantized Linear layers with that width
    max_position_embeddings: int | None
    identity: dict[str, Any]


def check_actorder(params: GPTQParams) -> None:
    """Refuse an ``actorder`` the installed compressed-tensors no longer implements.

    compressed-tensors 0.19 removed ``group``/``dynamic`` (quant_args.py ``validate_actorder``);
    asking the installed library keeps this check right across versions.
    """
    if params.actorder is None:
        return
    from compressed_tensors.quantization import QuantizationArgs
    from pydantic import ValidationError

    try:
        QuantizationArgs(num_bits=params.num_bits, strategy="channel", actorder=params.actorder)
    except ValidationError as exc:
        reason = "; ".join(str(e.get("msg", "")).removeprefix("Value error, ") for e in exc.errors())
        raise ConfigError(
            f"actorder={params.actorder!r} is not supported by the installed compressed-tensors "
            f"{_version('compressed-tensors')}: {reason} Fix: use actorder 'weight' (alias 'static') or "
            "null, and drop the others from the search space."
        ) from None


def _version(pkg: str) -> str:
    try:
        return version(pkg)
    except PackageNotFoundError:
        return "unknown"


def inspect_model(params: GPTQParams) -> ModelInfo:
    """Read the model's config and list the input width of every Linear layer GPTQ will quantize.

    The model is instantiated on the meta device (no weights, no memory), so the widths are exact
    for any architecture, and matched with compressed-tensors' own target/ignore matcher.
    """
    import torch
    from compressed_tensors.utils import match_named_modules
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(params.model, trust_remote_code=params.trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"model: cannot read the config of {params.model!r}: {exc}") from None
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=params.trust_remote_code)
    widths: dict[int, list[str]] = {}
    for name, module in match_named_modules(model, ["Linear"], list(params.ignore)):
        widths.setdefault(int(module.in_features), []).append(name)
    if not widths:
        raise ConfigError(
            f"ignore: {list(params.ignore)} leaves no Linear layer of {params.model!r} to quantize"
        )
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    max_pos = getattr(text_config, "max_position_embeddings", None)
    local = Path(params.model)
    if local.is_dir():
        files = sorted(p for p in local.iterdir() if p.is_file())
        identity: dict[str, Any] = {
            "path": str(local.resolve()),
            "files": [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files],
        }
    else:
        identity = {"hub": params.model, "commit": getattr(config, "_commit_hash", None)}
    return ModelInfo(widths, max_pos, identity)


def check_model_fit(params: GPTQParams, info: ModelInfo) -> None:
    """group_size must divide every quantized layer's input width; max_seq_length must fit the model."""
    if params.group_size > 0:
        bad = {w: names for w, names in info.in_features.items() if w % params.group_size}
        if bad:
            widths = sorted(info.in_features)
            ok = [g for g in (16, 32, 64, 128, 256) if all(w % g == 0 for w in widths)]
            example = ", ".join(f"{names[0]} (in_features={w})" for w, names in sorted(bad.items()))
            raise ConfigError(
                f"group_size={params.group_size} must divide the input features of every quantized layer, "
                f"but it does not divide {example}; the layers' widths are {widths}. "
                f"Fix: choose group_size from {ok or 'the common divisors of the widths'} "
                "(or -1 for per-channel scales), or add those layers to `ignore`."
            )
    if info.max_position_embeddings is not None and params.max_seq_length > info.max_position_embeddings:
        raise ConfigError(
            f"max_seq_length={params.max_seq_length} exceeds the model's max_position_embeddings="
            f"{info.max_position_embeddings} (llmcompressor would silently truncate). "
            f"Fix: use max_seq_length <= {info.max_position_embeddings}."
        )


def build_modifier(params: GPTQParams) -> Any:
    """A GPTQModifier with explicit ``config_groups``, so every scheme field is a tunable parameter."""
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from llmcompressor.modifiers.gptq import GPTQModifier

    weights = QuantizationArgs(
        num_bits=params.num_bits,
        type="int",
        symmetric=params.symmetric,
        strategy="group" if params.group_size > 0 else "channel",
        group_size=params.group_size if params.group_size > 0 else None,
        observer=params.observer,
        dynamic=False,
    )
    scheme = QuantizationScheme(targets=["Linear"], weights=weights)
    # actorder is set on the modifier, not in the scheme: GPTQModifier's default is a sentinel
    # "static" that overrides a scheme's actorder=None (gptq/base.py resolve_actorder), so only an
    # explicit modifier-level None really disables activation ordering.
    return GPTQModifier(
        config_groups={"group_0": scheme},
        ignore=list(params.ignore),
        dampening_frac=params.dampening_frac,
        block_size=params.block_size,
        actorder=params.actorder,
    )


@contextlib.contextmanager
def quiet_known_warnings() -> Iterator[None]:
    """Silence transformers' notices that are expected here and say nothing actionable."""
    import warnings

    with warnings.catch_warnings():
        # llmcompressor wraps the model in CPU offloading while it calibrates
        warnings.filterwarnings("ignore", "Attempting to save a model with offloaded modules", UserWarning)
        # a compressed-tensors checkpoint loaded by lm-eval's hf backend
        warnings.filterwarnings("ignore", "You passed `quantization_config`", UserWarning)
        yield


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Use ``n`` torch CPU threads for the block (None: unchanged), then restore the previous count."""
    if n is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed python/numpy/torch global RNGs for the block, then restore the caller's RNG states.

    oneshot and lm-eval both use the global generators; restoring keeps a trial from changing the
    randomness of the process that runs it.
    """
    import numpy as np
    import torch

    state = (random.getstate(), np.random.get_state(), torch.random.get_rng_state())
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(state[0])
        np.random.set_state(state[1])
        torch.random.set_rng_state(state[2])


def run_oneshot(params: GPTQParams, calibration: dict[str, list[Any]], output_dir: Path) -> None:
    """Quantize ``params.model`` with GPTQ on the tokenized calibration samples; save to ``output_dir``."""
    from datasets import Dataset
    from llmcompressor import oneshot

    dataset = Dataset.from_dict(calibration)
    with _ONESHOT_LOCK, seeded(params.seed), quiet_known_warnings():
        oneshot(
            model=params.model,
            dataset=dataset,
            recipe=build_modifier(params),
            num_calibration_samples=len(dataset),
            max_seq_length=params.max_seq_length,
            # the subset is already drawn (seeded); llmcompressor's shuffle would use the global RNG
            shuffle_calibration_samples=False,
            trust_remote_code_model=params.trust_remote_code,
            output_dir=str(output_dir),
            save_compressed=True,
            # the global session would otherwise keep the model (and its GPU memory) alive
            # while the evaluation (vLLM) starts
            clear_sparse_session=True,
        )
    _release_memory()


def _release_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def cache_key(params: GPTQParams, model: ModelInfo, calib: CalibrationSet) -> str:
    """A hash of everything that determines the quantized weights (params, inputs, library versions)."""
    payload = {
        "params": params.quantization_fields(),
        "model": model.identity,
        "calibration": calib.identity,
        "versions": {p: _version(p) for p in _VERSIONED},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[Any]:
    """An open lock file (POSIX flock; a no-op where fcntl is unavailable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a+")  # noqa: SIM115 - closed below, after the locks are released
    try:
        yield fh
    finally:
        fh.close()


def _lock(fh: Any, mode: str, blocking: bool = True) -> bool:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no cross-process locking
        return True
    flag = {"ex": fcntl.LOCK_EX, "sh": fcntl.LOCK_SH, "un": fcntl.LOCK_UN}[mode]
    if not blocking:
        flag |= fcntl.LOCK_NB
    try:
        fcntl.flock(fh.fileno(), flag)
    except BlockingIOError:
        return False
    return True


@dataclass
class CachedModel:
    """A quantized model in the cache, in use for the duration of the ``with`` block."""

    path: Path
    hit: bool
    seconds: float


@contextlib.contextmanager
def quantize_cached(
    params: GPTQParams, root: Path, key: str, build: Any, metadata: dict[str, Any]
) -> Iterator[CachedModel]:
    """Yield the model quantized for ``key`` under ``root``, building it with ``build(path)`` if needed.

    Concurrent trials (processes) with the same key wait for one build instead of repeating it.
    While the block runs the entry is held with a shared lock; afterwards a model nobody asked to
    keep is deleted by its last user.
    """
    target = root / key
    marker = target / _MARKER
    start = time.monotonic()
    # Two lock files per entry (they stay: deleting one another process waits on breaks locking).
    # The "use" lock is held shared for as long as a trial uses the model, *including* while it waits
    # to build, so the last user's cleanup below can never delete a model someone is waiting for.
    # Building takes the separate "build" lock: converting the use lock from shared to exclusive
    # would drop it first (flock is not atomic there) and open exactly that window.
    locks = root / ".locks"
    with _flock(locks / f"{key}.lock") as fh, _flock(locks / f"{key}.build.lock") as build_fh:
        _lock(fh, "sh")
        hit = marker.is_file()
        if not hit:
            _lock(build_fh, "ex")
            hit = marker.is_file()  # someone else may have built it while we waited
            if not hit:
                _build(target, key, build, {**metadata, "key": key, "keep": params.keep_model})
            _lock(build_fh, "un")
        if hit and params.keep_model:
            info = json.loads(marker.read_text())
            if not info.get("keep"):
                # False -> True only, written atomically: safe under the shared lock
                tmp_marker = marker.with_suffix(f".{os.getpid()}-{threading.get_ident()}.tmp")
                tmp_marker.write_text(json.dumps({**info, "keep": True}, indent=1))
                os.replace(tmp_marker, marker)
        seconds = time.monotonic() - start
        try:
            yield CachedModel(target, hit, seconds)
        finally:
            if _lock(fh, "ex", blocking=False):  # nobody else is using the model
                info = json.loads(marker.read_text()) if marker.is_file() else {"keep": True}
                if not info.get("keep", True):
                    shutil.rmtree(target, ignore_errors=True)
            _lock(fh, "un")


def _build(target: Path, key: str, build: Any, marker: dict[str, Any]) -> None:
    tmp = target.with_name(f"{key}.tmp-{os.getpid()}-{threading.get_ident()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        build(tmp)
        (tmp / _MARKER).write_text(json.dumps(marker, indent=1))
        shutil.rmtree(target, ignore_errors=True)  # a half-written leftover of a crashed run
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
