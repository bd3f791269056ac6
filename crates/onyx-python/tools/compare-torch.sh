#!/usr/bin/env bash
# The drop-in check for the Python package: a fresh virtualenv, `pip install`
# of the package from this repository, the pinned torch, torchvision,
# transformers and onnxruntime, then compare_ort.py exports a torchvision
# ResNet-18 and a Hugging Face BERT with random weights and runs both through
# onnxruntime and through onyx with the same code (only the module differs).
#
#     crates/onyx-python/tools/compare-torch.sh [VENV_DIR]   (default: a temporary folder)
#
# Not part of ./test.sh: torch and its dependencies are several GB.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
venv="${1:-$(mktemp -d)/venv}"
python3 -m venv "$venv"
"$venv/bin/pip" install -q "$root/crates/onyx-python"
"$venv/bin/pip" install -q onnxruntime==1.31.1 onnx==1.23.2 -r "$root/bench/requirements-torch.txt"
models="$(mktemp -d)"
"$venv/bin/python" "$here/compare_ort.py" --export "$models"
