"""hposdk's benchmark suite: overhead against the raw engines, regret, parallel efficiency.

Run everything with ``python -m benchmarks`` (``--quick`` for a smoke run of a few seconds); see
``docs/benchmarks.md``.
"""
