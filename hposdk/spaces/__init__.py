"""The search-space model: four parameter types and SearchSpace (pydantic and stdlib only)."""

from ._params import Discrete, Integer, LogUniform, Parameter, Uniform, Value
from ._space import SearchSpace

__all__ = ["Discrete", "Integer", "LogUniform", "Parameter", "SearchSpace", "Uniform", "Value"]
