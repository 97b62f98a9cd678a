#!/usr/bin/env bash
# The chaos tests: starts the local fleet (fleet.sh up), runs chaos.py on its client host, and
# always takes the fleet down again, whatever happened; then the same on a fleet whose clicks go
# through the click stream (KURZ_FLEET_CLICKS=kinesis) for its scenario, a consumer's kill -9;
# then on a fleet of two regions (KURZ_FLEET_REGIONS=2) for theirs, a region lost and back.
# Exits non-zero when a check failed (each pass runs whatever the ones before found).
#
# Writes the report to $KURZ_CHAOS_REPORT (default: target/chaos-report.md in this checkout);
# when a pass fails (or KURZ_CHAOS_KEEP_LOGS is set), its fleet's logs are copied next to it
# (chaos-logs/, chaos-logs/stream/ and chaos-logs/regions/ for the later passes) before the
# fleet is removed. Needs root (network namespaces). KURZ_BIN picks the kurz binary and
# KURZ_REPLICATOR_BIN the fleet-replicator, as for fleet.sh.
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

# A later pass: a fleet started with SETTING=VALUE ($4), chaos.py under a time limit of $3
# seconds, its report ($1) appended to the main one under the title $2.
later_pass() {
    local name="$1" title="$2" limit="$3" setting="$4" pass_rc=0
    shift 4
    pass_logs="$logs/$name"
    local pass_report="${report%.md}-$name.md"
    env "$setting" "$fleet" up
    "$fleet" exec client timeout --kill-after=10 "$limit" python3 "$here/chaos.py" \
        --report "$pass_report" "$@" || pass_rc=$?
    {
        printf '\n# %s\n\n' "$title"
        cat "$pass_report" 2>/dev/null || echo "(no report)"
    } >>"$report"
    keep_logs "$pass_logs" "$pass_rc"
    "$fleet" down
    if ((rc == 0)); then rc=$pass_rc; fi
}

# The click stream: two consumers of a Kinesis emulator; one is killed while clicks flow.
later_pass stream "The click stream (KURZ_FLEET_CLICKS=kinesis)" 240 KURZ_FLEET_CLICKS=kinesis "$@"
# Two regions: both serving at once, then one lost (every process and its table) and back.
later_pass regions "Two regions (KURZ_FLEET_REGIONS=2)" 300 KURZ_FLEET_REGIONS=2 "$@"
exit "$rc"
