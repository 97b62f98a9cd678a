#!/usr/bin/env bash
# kurz's HTTP contract, fuzzed: schemathesis (PyPI) runs every phase of openapi.yaml (examples,
# coverage, fuzzing, stateful) with every check against the real kurz binary on a free port,
# and fails on any failure or on a warning that kurz's validation is stricter than the spec
# (tests/contract/schemathesis.toml says which). scripts/test.sh runs it after cargo test.
#
# Needs the debug binary (cargo build); installs schemathesis into a venv under
# ${XDG_CACHE_HOME:-~/.cache}/kurz/schemathesis when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

version="4.32.5"
venv="${XDG_CACHE_HOME:-$HOME/.cache}/kurz/schemathesis/venv"
if [[ "$("$venv/bin/schemathesis" --version 2>/dev/null)" != *"$version"* ]]; then
    echo "==> installing schemathesis $version (pip, into $venv)"
    rm -rf "$venv"
    python3 -m venv "$venv"
    timeout 900 "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version"
fi

target=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
kurz="$target/debug/kurz"
[[ -x "$kurz" ]] || { echo "api-contract: $kurz is missing: run cargo build first" >&2; exit 1; }

work=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
token="contract-admin-token-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
# A fixed permutation key: the same codes every run, so (with the config's fixed seed) the
# same cases, and a failure reproduces. Failed authentication is not throttled: the run sends
# wrong tokens on purpose, many a minute, to check each operation refuses them.
KURZ__SERVER__BIND="127.0.0.1:$port" KURZ__STORE__PATH="$work/kurz.redb" \
    KURZ__AUTH__ADMIN_TOKEN="$token" KURZ__LOG__LEVEL=warn \
    KURZ__IDS__PERMUTATION_KEY="contract-run-permutation-key" \
    KURZ__LIMITS__RATE__AUTH_FAILURES_PER_MINUTE_PER_IP=0 \
    "$kurz" serve >"$work/kurz.out" 2>"$work/kurz.err" &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do
    grep -q "kurz listening" "$work/kurz.out" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || { cat "$work/kurz.err" >&2; exit 1; }
    sleep 0.1
done

# As the admin: every operation is reachable, and creates are not rate limited.
if ! SCHEMATHESIS_HOOKS=tests.contract.hooks PYTHONPATH=. timeout 600 \
    "$venv/bin/schemathesis" --config-file tests/contract/schemathesis.toml run openapi.yaml \
    --url "http://127.0.0.1:$port" --checks all --max-examples 30 --workers 1 \
    --header "Authorization: Bearer $token" >"$work/report.txt" 2>&1; then
    cat "$work/report.txt"
    echo "api-contract: schemathesis found problems (report above)" >&2
    exit 1
fi
tail -n 3 "$work/report.txt"
