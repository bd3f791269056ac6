#!/usr/bin/env bash
# Builds the onyx Python package into a virtualenv (.venv-py at the
# repository root) and runs its tests: the onnxruntime-style API, and onnx's
# backend test suite through onyx.backend.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$root/.venv-py"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q -r "$here/requirements-test.txt"
VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH" \
    "$venv/bin/maturin" develop --release -m "$here/Cargo.toml"
cd "$root"
"$venv/bin/python" -m pytest -q -p no:cacheprovider "$here/tests" -k "not _cuda"
