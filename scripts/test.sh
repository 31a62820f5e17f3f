#!/usr/bin/env bash
# Set up .venv with hposdk, every extra and the dev tools (exact versions from constraints.txt),
# then run the linter, the type checker and the whole test suite (pass pytest options through).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade "pip>=25.1"
.venv/bin/python -m pip install -q -c constraints.txt -e ".[all]" --group dev
echo "== ruff"; .venv/bin/ruff check .
echo "== mypy"; .venv/bin/mypy hposdk
echo "== pytest"; exec .venv/bin/python -m pytest "$@"
