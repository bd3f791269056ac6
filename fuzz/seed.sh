#!/usr/bin/env bash
# Seeds the fuzz corpora from the conformance models: model files for
# decode and session; for run, each model prefixed by its length (u32,
# little-endian) and followed by its first input's bytes.
set -euo pipefail
cd "$(dirname "$0")"
data=../conformance/data
if [ ! -d "$data/node" ]; then
    echo "no conformance data: run conformance/make-data.sh first" >&2
    exit 1
fi
mkdir -p corpus/decode corpus/session corpus/run
python3 - "$data" <<'PY'
import hashlib, os, struct, sys
data = sys.argv[1]
for root, _dirs, files in os.walk(data):
    if "model.onnx" not in files:
        continue
    model = open(os.path.join(root, "model.onnx"), "rb").read()
    if len(model) > 1 << 20:
        continue
    name = hashlib.sha1(model).hexdigest()
    for target in ("decode", "session"):
        with open(os.path.join("corpus", target, name), "wb") as f:
            f.write(model)
    inp = os.path.join(root, "test_data_set_0", "input_0.pb")
    extra = open(inp, "rb").read()[:4096] if os.path.exists(inp) else b""
    with open(os.path.join("corpus", "run", name), "wb") as f:
        f.write(struct.pack("<I", len(model)) + model + extra)
PY
ls corpus/decode | wc -l
