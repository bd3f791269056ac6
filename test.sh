#!/usr/bin/env bash
# Runs every test: formatting and lints, unit tests, the command-line tests,
# the ONNX conformance suite through the API and through the command line
# (its data is created on first use), the sweep over every operator version,
# and the Python package's tests (built into .venv-py).
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -d conformance/data/node ]; then
    conformance/make-data.sh
fi
cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace
# the conformance suite again with the graph optimisations off
target/debug/onyx-conformance --opt-level disabled
# the conformance suite again, every case through the `onyx` command line
target/debug/onyx-conformance --cli target/debug/onyx
# every schema version of every ai.onnx operator (conformance/OPSETS.md)
.venv/bin/python conformance/opset_sweep.py --runner target/debug/onyx-conformance
crates/onyx-python/test.sh
