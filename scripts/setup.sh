#!/usr/bin/env bash
# Create .venv and install the studio with its test extras (idempotent; safe to re-run).
# PYTHON picks the interpreter (default python3, 3.10+). Torch comes from your pip settings:
# on a CUDA machine install the torch build you want first, or let pip pick the default.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'
echo "studio installed in .venv"
