#!/usr/bin/env bash
# Runs one fuzz target for a number of seconds:  fuzz/run.sh TARGET SECONDS
# Targets: decode, session, run. The seed corpus comes from the conformance
# models (conformance/data, made by conformance/make-data.sh) on first use.
# Needs cargo-fuzz (`cargo install cargo-fuzz`); the stable toolchain is
# allowed nightly flags through RUSTC_BOOTSTRAP. Crashes land in
# fuzz/artifacts/TARGET/; replay one with `fuzz/run.sh TARGET 0 FILE`.
# FUZZ_FLAGS adds cargo-fuzz build flags (a separate build); the default
# build already panics on integer overflow.
set -euo pipefail
cd "$(dirname "$0")"
target=${1:?usage: fuzz/run.sh decode|session|run SECONDS [FILE]}
seconds=${2:?usage: fuzz/run.sh TARGET SECONDS [FILE]}
corpus=corpus/$target
if [ ! -d "$corpus" ] || [ -z "$(ls -A "$corpus")" ]; then
    ./seed.sh
fi
export RUSTC_BOOTSTRAP=1
if [ $# -ge 3 ]; then
    exec cargo fuzz run --sanitizer none ${FUZZ_FLAGS:-} "$target" "$3"
fi
# -timeout: a single input running over 5 s counts as a hang;
# -rss_limit_mb: the process staying over 2 GiB counts as a finding.
exec cargo fuzz run --sanitizer none ${FUZZ_FLAGS:-} "$target" "$corpus" -- \
    -max_total_time="$seconds" -timeout=5 -rss_limit_mb=2048 -max_len=1048576 \
    -print_final_stats=1
