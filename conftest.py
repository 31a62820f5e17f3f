"""Repository-wide pytest configuration."""

from importlib.util import find_spec

collect_ignore = ["hposdk/__main__.py"]

# The doctests of optional parts are collected only where their extra is installed (the test
# files of those parts say so themselves, visibly).
for _module, _path in [
    ("llmcompressor", "hposdk/objectives/gptq"),
    ("torch", "hposdk/objectives/mnist"),
    ("ray", "hposdk/backends/ray"),
    ("clearml", "hposdk/backends/clearml"),
    ("hpbandster", "hposdk/backends/hpbandster.py"),
]:
    if find_spec(_module) is None:
        collect_ignore.append(_path)
