#!/usr/bin/env bash
# The chaos tests: starts the local fleet (fleet.sh up), runs chaos.py on its client host, and
# always takes the fleet down again, whatever happened; then the same on a fleet whose clicks go
# through the click stream (KURZ_FLEET_CLICKS=kinesis) for its scenario, a consumer's kill -9.
# Exits non-zero when a check failed (the second pass runs whatever the first found).
#
# Writes the report to $KURZ_CHAOS_REPORT (default: target/chaos-report.md in this checkout);
# when a pass fails (or KURZ_CHAOS_KEEP_LOGS is set), its fleet's logs are copied next to it
# (chaos-logs/, and chaos-logs/stream/ for the second pass) before the fleet is removed. Needs root (network namespaces). KURZ_BIN picks the kurz binary, as for fleet.sh.
#
# Usage: infra/local/chaos.sh [--only NAME]...
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
fleet="$here/fleet.sh"
state="${KURZ_FLEET_DIR:-/tmp/kurz-fleet}"
report="${KURZ_CHAOS_REPORT:-$repo/target/chaos-report.md}"
logs="$(dirname "$report")/chaos-logs"

# Appends HAProxy's log lines for requests that did not end normally (termination state other
# than ----: the instance closed or reset the connection, a timeout...) to the report.
lb_excerpt() {
    local log="$state/logs/haproxy.log" lines
    [[ -f "$report" && -f "$log" ]] || return 0
    lines="$(awk '$1 ~ /^[0-9]/ && $10 != "----"' "$log" | tail -n 40)"
    {
        printf '\n## HAProxy: requests that did not end normally\n\n'
        if [[ -n "$lines" ]]; then
            # shellcheck disable=SC2016 # Markdown fences, not expansions
            printf '```text\n%s\n```\n' "$lines"
        else
            printf 'None.\n'
        fi
    } | tee -a "$report"
}

# Keeps the fleet's logs in $1 when the pass failed ($2 non-zero) or they are asked for.
keep_logs() {
    local into="$1" rc="$2"
    if [[ (rc -ne 0 || -n "${KURZ_CHAOS_KEEP_LOGS:-}") && -d "$state/logs" ]]; then
        rm -rf "$into"
        mkdir -p "$into"
        cp -r "$state/logs/." "$into/" || true
        echo "chaos: the fleet's logs are in $into" >&2
    fi
}

pass_logs="$logs"
cleanup() {
    local rc=$?
    lb_excerpt || true
    keep_logs "$pass_logs" "$rc"
    "$fleet" down || true
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$(dirname "$report")"
rm -f "$report"
rm -rf "$logs"
"$fleet" down >/dev/null # what a crashed run may have left
"$fleet" up
# The scenarios take about three minutes; this bounds a run that hangs.
rc=0
"$fleet" exec client timeout --kill-after=10 360 python3 "$here/chaos.py" --report "$report" "$@" ||
    rc=$?
lb_excerpt || true
keep_logs "$logs" "$rc"
"$fleet" down

# The click stream: two consumers of a Kinesis emulator; one is killed while clicks flow.
pass_logs="$logs/stream"
stream_report="${report%.md}-stream.md"
KURZ_FLEET_CLICKS=kinesis "$fleet" up
stream_rc=0
"$fleet" exec client timeout --kill-after=10 240 python3 "$here/chaos.py" \
    --report "$stream_report" "$@" || stream_rc=$?
{
    printf '\n# The click stream (KURZ_FLEET_CLICKS=kinesis)\n\n'
    cat "$stream_report" 2>/dev/null || echo "(no report)"
} >>"$report"
((rc == 0)) && rc=$stream_rc
exit "$rc"
