#!/usr/bin/env bash
# Creates bench/.venv with the pinned onnx, numpy and onnxruntime from PyPI
# (the comparison's reference runtime).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q -r "$here/requirements.txt"
echo "bench venv ready: $venv"
