#!/usr/bin/env bash
# Runs the tests that share state across threads under ThreadSanitizer:
# the Session API tests (one session run from 8 threads at once) and the
# kernels' tests (work split across a session's thread pool). Needs the
# nightly toolchain with rust-src (`rustup component add --toolchain
# nightly rust-src`); builds into target/tsan.
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTFLAGS="-Zsanitizer=thread" RUSTDOCFLAGS="-Zsanitizer=thread"
export CARGO_TARGET_DIR=target/tsan TSAN_OPTIONS="halt_on_error=1"
target=$(rustc -vV | sed -n 's/^host: //p')
cargo +nightly test -Zbuild-std --target "$target" -p onyx-core --test session
cargo +nightly test -Zbuild-std --target "$target" -p onyx-kernels --lib
