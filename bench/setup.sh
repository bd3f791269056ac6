#!/usr/bin/env bash
# Creates bench/.venv with the pinned onnx, numpy and onnxruntime from PyPI
# (the comparison's reference runtime). With --torch it also installs the
# pinned torch, torchvision and transformers and exports the reference
# models into bench/models (bench/export_models.py).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q -r "$here/requirements.txt"
if [ "${1:-}" = "--torch" ]; then
    "$venv/bin/pip" install -q -r "$here/requirements-torch.txt"
    "$venv/bin/python" "$here/export_models.py" --out "$here/models"
fi
echo "bench venv ready: $venv"
