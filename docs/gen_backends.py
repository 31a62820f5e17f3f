"""Regenerate the backends table in the docs and the README from ``hposdk backends`` (capabilities as data).

Run ``.venv/bin/python docs/gen_backends.py`` after changing a backend's capabilities or options;
``tests/test_docs.py::test_backends_table_is_generated`` fails while a committed table differs.
The table is written between ``<!-- backends-table:start -->`` and ``<!-- backends-table:end -->``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from hposdk.cli import backend_rows, backends_markdown

ROOT = Path(__file__).resolve().parents[1]
TARGETS = (ROOT / "docs" / "backends" / "index.md", ROOT / "README.md")
START, END = "<!-- backends-table:start -->", "<!-- backends-table:end -->"


def render(text: str, table: str) -> str:
    """``text`` with the block between the markers replaced by ``table``."""
    pattern = re.compile(re.escape(START) + r".*?" + re.escape(END), flags=re.S)
    if not pattern.search(text):
        raise SystemExit(f"markers {START} ... {END} not found")
    return pattern.sub(lambda _: f"{START}\n{table}\n{END}", text)


def main(check: bool = False) -> int:
    """Write the table into every target (or, with ``check``, report the ones that differ)."""
    table = backends_markdown(backend_rows())
    stale = []
    for path in TARGETS:
        text = path.read_text()
        new = render(text, table)
        if new != text:
            stale.append(path)
            if not check:
                path.write_text(new)
    for path in stale:
        print(f"{'stale' if check else 'updated'}: {path.relative_to(ROOT)}")
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main(check="--check" in sys.argv))
