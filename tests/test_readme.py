"""Every Python block of the README runs (in order, in one namespace, as a script would)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_python_examples() -> None:
    assert len(python_blocks()) >= 2


@pytest.mark.slow
def test_readme_python_blocks_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HPOSDK_STORAGE", str(tmp_path / "studies"))
    # Worker processes import the objective from a real module, as they would from a user's script.
    code = "\n".join(python_blocks())
    script = tmp_path / "readme_example.py"
    script.write_text(code)
    import subprocess
    import sys

    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "dampening_frac" in out.stdout
    assert (tmp_path / "studies").exists()
