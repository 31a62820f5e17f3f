"""MkDocs hook: show ``<!-- skip: reason -->`` markers as a visible note above the block they mark.

The docs tests (``tests/test_docs.py``) run every code block except those with this marker; the
reader should see the same thing the test does, so the reason becomes an admonition.
"""

from __future__ import annotations

import re
from typing import Any

SKIP = re.compile(r"^<!-- skip: (.+?) -->$", flags=re.M)


def on_page_markdown(markdown: str, **_: Any) -> str:
    """Replace each skip marker with a ``!!! note`` saying why the next block is not run in tests."""
    return SKIP.sub(lambda m: f'!!! note "Not run by the docs tests"\n    {m.group(1)}.\n', markdown)
