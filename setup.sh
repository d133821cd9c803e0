#!/usr/bin/env bash
# One command set-up on a fresh Python 3.11 machine: a virtualenv in .venv with the pinned requirements and the
# shared `animeml` package installed in editable mode.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --upgrade pip
.venv/bin/python -m pip install -r requirements.txt -e .
