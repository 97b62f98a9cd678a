#!/usr/bin/env bash
# The chaos tests: starts the local fleet (fleet.sh up), runs chaos.py on its client host, and
# always takes the fleet down again, whatever happened. Exits non-zero when a check failed.
#
# Writes the report to $KURZ_CHAOS_REPORT (default: target/chaos-report.md in this checkout);
# when the run fails (or KURZ_CHAOS_KEEP_LOGS is set), the fleet's logs are copied next to it
# (chaos-logs/) before the fleet is removed. Needs root (network namespaces). KURZ_BIN picks the kurz binary, as for fleet.sh.
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

cleanup() {
    local rc=$?
    lb_excerpt || true
    if [[ (rc -ne 0 || -n "${KURZ_CHAOS_KEEP_LOGS:-}") && -d "$state/logs" ]]; then
        rm -rf "$logs"
        mkdir -p "$logs"
        cp -r "$state/logs/." "$logs/" || true
        echo "chaos: the fleet's logs are in $logs" >&2
    fi
    "$fleet" down || true
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$(dirname "$report")"
rm -f "$report"
"$fleet" down >/dev/null # what a crashed run may have left
"$fleet" up
# The scenarios take about three minutes; this bounds a run that hangs.
"$fleet" exec client timeout --kill-after=10 360 python3 "$here/chaos.py" --report "$report" "$@"
