#!/usr/bin/env bash
# Set up .venv with hposdk and the MNIST objective, then tune a real CNN on the local backend
# (scikit-learn's bundled digits unless HPOSDK_MNIST_DIR points at the MNIST IDX files).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade "pip>=25.1"
.venv/bin/python -m pip install -q -c constraints.txt -e ".[mnist,plot]"
exec .venv/bin/hposdk run examples/mnist/study.yaml --plot hposdk-studies/mnist-demo/history.png "$@"
