"""Every code block of the docs runs, unless marked ``<!-- skip: reason -->``; the site builds strictly.

Per page, the ```python blocks run as one script (in order, one namespace, as a reader pasting them
would) in a fresh temporary directory with ``HPOSDK_STORAGE`` set, then the ```bash blocks run
there with ``set -e`` and the venv's ``hposdk`` on PATH (``examples/`` is linked in, so commands
copied from the docs work as written). The README is one of the pages.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [*sorted(DOCS.rglob("*.md")), ROOT / "README.md"]
BLOCK = re.compile(r"(?:^<!-- skip: (?P<skip>.+?) -->\n)?^```(?P<lang>python|bash)\n(?P<code>.*?)^```", re.M | re.S)


def blocks(page: Path) -> list[tuple[str, str, str | None]]:
    """(language, code, skip reason or None) of every python/bash block of ``page``."""
    return [(m["lang"], m["code"], m["skip"]) for m in BLOCK.finditer(page.read_text())]


def run_page(page: Path, tmp_path: Path) -> None:
    env = {**os.environ, "HPOSDK_STORAGE": str(tmp_path / "studies"), "PYTHONPATH": str(tmp_path),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}", "MPLBACKEND": "Agg",
           "CLEARML_OFFLINE_MODE": "1"}
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    runnable = [(lang, code) for lang, code, skip in blocks(page) if skip is None]
    python = "\n".join(code for lang, code in runnable if lang == "python")
    if python:
        script = tmp_path / f"docs_{page.stem.replace('-', '_')}.py"
        script.write_text(python)
        out = subprocess.run([sys.executable, script.name], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, f"{page.relative_to(ROOT)} python blocks failed:\n{out.stderr[-3000:]}"
    for lang, code in runnable:
        if lang == "bash":
            out = subprocess.run(["bash", "-e", "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                                 timeout=120)
            assert out.returncode == 0, f"{page.relative_to(ROOT)} bash block failed:\n{code}\n{out.stderr[-3000:]}"


def test_docs_have_pages_and_runnable_blocks() -> None:
    assert len(PAGES) >= 12
    assert sum(skip is None for p in PAGES for _, _, skip in blocks(p)) >= 12


def test_skipped_blocks_give_a_reason() -> None:
    for page in PAGES:
        for _, code, skip in blocks(page):
            assert skip is None or len(skip) > 10, (page, code[:60])


@pytest.mark.parametrize("page", [p for p in PAGES if any(s is None for _, _, s in blocks(p))],
                         ids=lambda p: str(p.relative_to(DOCS if p.is_relative_to(DOCS) else ROOT)))
def test_page_code_blocks_run(page: Path, tmp_path: Path) -> None:
    run_page(page, tmp_path)


def test_backends_table_is_generated() -> None:
    """The committed backends table equals ``hposdk backends --markdown`` (run docs/gen_backends.py to fix)."""
    from hposdk.backends._registry import available_backends
    from hposdk.cli import backend_rows

    rows = backend_rows()
    missing = [r["backend"] for r in rows if not r["installed"] and r["backend"] in ("local", "ray", "clearml")]
    if missing:
        pytest.skip(f"the table lists every built-in backend; not installed here: {missing}")
    assert set(available_backends()) >= {"local", "ray", "clearml"}
    out = subprocess.run([sys.executable, str(DOCS / "gen_backends.py"), "--check"], capture_output=True, text=True,
                         cwd=ROOT)
    assert out.returncode == 0, f"{out.stdout}{out.stderr}\nFix: .venv/bin/python docs/gen_backends.py"


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    mkdocs = Path(sys.executable).parent / "mkdocs"
    if not mkdocs.exists():
        pytest.skip("mkdocs is not installed (it is in the dev dependency group)")
    out = subprocess.run([str(mkdocs), "build", "--strict", "-d", str(tmp_path / "site")], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "index.html").read_text().count("hposdk.Study") > 0
    assert "Not run by the docs tests" in (tmp_path / "site" / "backends" / "clearml" / "index.html").read_text()
