"""Test helpers shipped with hposdk: the conformance suites every backend passes.

Importing this package needs pytest (a development dependency).
"""

from .conformance import SPACE_CASES, BackendConformance, SpaceConformance

__all__ = ["SPACE_CASES", "BackendConformance", "SpaceConformance"]
