#!/usr/bin/env bash
# kurz's whole test suite: formatting, lints, unit and integration tests.
#
# Everything the tests need is installed or started here (the embedded store needs nothing
# beyond the Rust toolchain). Usage: scripts/test.sh [extra cargo test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "test.sh: cargo is missing; install the Rust toolchain (https://rustup.rs)" >&2
    exit 1
fi

# CI runs on a fresh clone each time: share one target directory between runs so that
# dependencies are compiled once per machine rather than once per clone.
if [[ "${CI:-}" == "true" && -z "${CARGO_TARGET_DIR:-}" ]]; then
    export CARGO_TARGET_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/kurz/target"
fi

echo "==> cargo fmt --check"
cargo fmt --all --check

echo "==> cargo clippy --all-targets -- -D warnings"
cargo clippy --locked --all-targets -- -D warnings

echo "==> cargo test"
cargo test --locked "$@"
