"""Backends: one module per engine, reached only through the registry (imported lazily)."""

from ._base import Backend, Budget, Capabilities, NoOptions, RunSession, StudySpec, run_objective
from ._registry import BackendEntry, available_backends, get_backend, register_backend

__all__ = [
    "Backend",
    "BackendEntry",
    "Budget",
    "Capabilities",
    "NoOptions",
    "RunSession",
    "StudySpec",
    "available_backends",
    "get_backend",
    "register_backend",
    "run_objective",
]
