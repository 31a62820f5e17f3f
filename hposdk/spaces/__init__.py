"""The search-space model: four parameter types and SearchSpace (pydantic and stdlib only)."""

from ._params import Discrete, Integer, LogUniform, Parameter, Uniform, Value
from ._space import GridCursor, SearchSpace, point_key

__all__ = [
    "Discrete", "GridCursor", "Integer", "LogUniform", "Parameter", "SearchSpace", "Uniform", "Value", "point_key",
]
