"""Repository-wide pytest configuration."""

import signal
from importlib.util import find_spec

# A harness that starts pytest in the background without job control (``cmd &`` in a script,
# nohup) hands it SIGINT ignored, and every process it starts inherits that: Python installs its
# KeyboardInterrupt handler only where SIGINT is not ignored at start-up, so the Ctrl-C tests'
# drivers would never see their SIGINT. A handled signal is reset to its default at exec, so
# restoring Python's handler here gives the children what a terminal gives them.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

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
