"""Lazy optional imports with an install hint (the core never imports an engine at import time)."""

from __future__ import annotations

import importlib
from types import ModuleType

from .exceptions import MissingExtraError


def require(module: str, extra: str, feature: str) -> ModuleType:
    """Import ``module`` or raise MissingExtraError naming the extra to install.

    Example:
        ``require("ray.tune", "ray", "backend='ray'")`` raises, when Ray is missing,
        "Using backend='ray', but the 'ray' package is not installed. Make sure to install hposdk
        using `pip install hposdk[ray]`."
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        top = module.split(".")[0]
        if exc.name is not None and exc.name.split(".")[0] != top:
            raise  # a dependency of the engine is broken: show the real error
        raise MissingExtraError(
            f"Using {feature}, but the '{top}' package is not installed. "
            f"Make sure to install hposdk using `pip install hposdk[{extra}]`."
        ) from exc
