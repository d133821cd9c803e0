#!/usr/bin/env bash
# One command set-up on a fresh Python 3.11 machine: a virtualenv in .venv with the pinned requirements, the
# TensorFlow build that fits this machine, and the `animeml` package installed in editable mode.
#   ANIMEML_DEVICE=cpu|gpu bash setup.sh   forces the CPU or the CUDA build of TensorFlow.
# The three TensorFlow builds are separate packages that would overwrite each other's files, so only one is
# installed; a .venv made for the other build is rebuilt from scratch.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3

if [ "$(uname -s)" = Darwin ]; then
    BUILD=macos
elif [ "${ANIMEML_DEVICE:-}" = gpu ] || { [ -z "${ANIMEML_DEVICE:-}" ] && command -v nvidia-smi >/dev/null \
        && nvidia-smi -L 2>/dev/null | grep -q GPU; }; then
    BUILD=gpu
elif [ -z "${ANIMEML_DEVICE:-}" ] || [ "${ANIMEML_DEVICE}" = cpu ]; then
    BUILD=cpu
else
    echo "error: ANIMEML_DEVICE must be cpu or gpu, not '${ANIMEML_DEVICE}'" >&2
    exit 2
fi

if [ -f .venv/animeml-build ] && [ "$(cat .venv/animeml-build)" != "$BUILD" ]; then
    echo "the .venv holds the $(cat .venv/animeml-build) build of TensorFlow; rebuilding it for $BUILD"
    rm -rf .venv
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --upgrade pip
.venv/bin/python -m pip install -r requirements.txt -r "requirements-$BUILD.txt" -e .
echo "$BUILD" > .venv/animeml-build
echo "installed the $BUILD build of TensorFlow; check its devices with:"
echo "  .venv/bin/python -c \"import tensorflow as tf; print(tf.config.list_physical_devices())\""
