#!/usr/bin/env bash
# Regenerates the checked-in ONNX protobuf types from the schema shipped in the
# pinned onnx wheel. Needs python3 with pip; builds tools/protogen.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/target/protogen-venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q onnx==1.23.2
include_dir="$("$venv/bin/python" -c 'import onnx, os; print(os.path.dirname(os.path.dirname(onnx.__file__)))')"
cargo run --release --manifest-path "$root/tools/protogen/Cargo.toml" -- \
    "$include_dir" "$root/crates/onyx-format/src/generated"
echo "regenerated crates/onyx-format/src/generated/onnx.rs"
