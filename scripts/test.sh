#!/usr/bin/env bash
# Set up .venv with hposdk, every extra and the dev tools (exact versions from constraints.txt),
# then run the linter, the type checker and the whole test suite (pass pytest options through).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade "pip>=25.1"
.venv/bin/python -m pip install -q -c constraints.txt -e ".[all]" --group dev
# Servers some tests start for real on 127.0.0.1 (a one-node Slurm cluster for the Ray-on-Slurm
# script, PostgreSQL for drivers sharing a study record). Installed from Debian's packages where
# this script may (root with apt); elsewhere those tests say plainly that they are skipped and why.
missing=""
command -v slurmctld >/dev/null || missing="$missing slurmctld slurmd slurm-client munge"
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$missing postgresql"
if [ -n "$missing" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && [ -z "${HPOSDK_NO_APT:-}" ]; then
    echo "== apt-get install$missing"
    # shellcheck disable=SC2086 # one word per package
    (apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        $missing >/dev/null) || echo "(could not install$missing: the tests that need them will be skipped)"
fi
echo "== ruff"; .venv/bin/ruff check .
echo "== mypy"; .venv/bin/mypy hposdk
echo "== pytest"; exec .venv/bin/python -m pytest "$@"
