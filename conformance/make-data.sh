#!/usr/bin/env bash
# Creates the ONNX backend conformance data in conformance/data (or $1) from
# the pinned onnx release, installed into a local virtualenv.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
out="${1:-$here/data}"
venv="$root/.venv"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q -r "$here/requirements.txt"
rm -rf "$out"
"$venv/bin/python" -W ignore "$here/make_data.py" "$out"
