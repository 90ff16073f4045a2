#!/usr/bin/env bash
# perf/flood.sh: a flood of distinct rate-limit keys against Dispatch (issue 9): what it does to
# Dispatch's memory, and to the latency of a steady client on the same route.
#
# What it does:
#   1. starts the upstream of perf/compare.sh (perf/peers/nginx-upstream.conf, 127.0.0.1:18000)
#      and Dispatch on 127.0.0.1:18081 with perf/peers/dispatch-flood.toml: one route, a token
#      bucket of 100/s, burst 100, keyed on the `x-key` header, `max_keys` at its default
#      (MAX_KEYS=n sets it);
#   2. warms Dispatch with the control load (below) for WARMUP;
#   3. runs four phases, each with the same steady client: wrk -t1 -c4 with perf/flood.lua
#      "fixed": one key ("steady"), a pause before each request so it stays at about 80% of the
#      limit (never a 429), latency measured by wrk from the moment each request is sent:
#        alone    the steady client alone, STEADY long;
#        control  beside it, wrk -t1 -c64 sending the flood's load over only CONTROL_KEYS (1,000)
#                 keys in turn, STEADY long: the same CPU competition as the flood, few keys;
#        flood    beside it, wrk -t1 -c64 sending FLOOD_KEYS (1,000,000) distinct keys, one
#                 request each ("flood-<thread>-<n>", a counter): the phase lasts until the
#                 FLOOD_KEYS-th answer is back (the steady client is stopped first);
#        after    the steady client alone again, STEADY long;
#   4. samples Dispatch's VmRSS and VmHWM (/proc/PID/status) every 200 ms throughout and prints,
#      per phase, the largest VmRSS seen, and at the end VmHWM (the peak over the process's life);
#   5. prints the steady client's p50/p90/p99 and request count per phase, Dispatch's CPU time
#      over each phase per answer it gave (load and steady client together), the loads' req/s, and
#      every non-200 answer (the steady client must see none; a flood key that finds its table
#      window full gets a 429, which is counted and shown), and Dispatch's
#      dispatch_ratelimit_rejected_total from its admin API.
# The control phase is what tells a change in latency caused by the number of keys from one
# caused by two wrk processes, the upstream and Dispatch sharing the cores.
#
# Environment:
#   FLOOD_KEYS=1000000   distinct keys in the flood phase
#   CONTROL_KEYS=1000    keys the control load cycles through
#   STEADY=20s           length of the alone, control and after phases
#   WARMUP=3s            warm-up with the control load
#   MAX_KEYS=            max_keys of the limit (empty: the default)
#   CONNECTIONS=64       connections of the flood and control loads
#   DISPATCH_BIN=path    use this binary; otherwise `cargo build --profile perf` (BUILD=0: do not
#                        build, use target/perf/dispatch)
#   KEEP_TMP=1           keep the temp dir (logs, raw wrk output, rss.tsv)
#
# Smoke test: FLOOD_KEYS=100000 STEADY=3s WARMUP=1s perf/flood.sh
set -euo pipefail

PERF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$PERF_DIR")
PEERS=$PERF_DIR/peers

FLOOD_KEYS=${FLOOD_KEYS:-1000000}
CONTROL_KEYS=${CONTROL_KEYS:-1000}
STEADY=${STEADY:-20s}
WARMUP=${WARMUP:-3s}
MAX_KEYS=${MAX_KEYS:-}
CONNECTIONS=${CONNECTIONS:-64}
BUILD=${BUILD:-1}
KEEP_TMP=${KEEP_TMP:-0}
REQUEST_PATH=/users/1

# The limit (perf/peers/dispatch-flood.toml) and the steady client that stays under it.
LIMIT_RATE=100
STEADY_CONNECTIONS=4
# Each of the steady client's connections waits this long before each request: 4 connections at
# one request per 50 ms at most is 80 per second, 80% of the limit's 100.
STEADY_PAUSE_MS=$((STEADY_CONNECTIONS * 1000 * 10 / (LIMIT_RATE * 8)))

UPSTREAM_PORT=18000
DISPATCH_PORT=18081
ADMIN_PORT=18091
export PATH="$PATH:/usr/sbin:/sbin"

log() { printf '%s\n' "$*" >&2; }
die() { log "flood.sh: error: $*"; exit 1; }

[[ $FLOOD_KEYS =~ ^[1-9][0-9]*$ ]] || die "FLOOD_KEYS must be a positive number"
[[ $CONTROL_KEYS =~ ^[1-9][0-9]*$ ]] || die "CONTROL_KEYS must be a positive number"
[[ -z $MAX_KEYS || $MAX_KEYS =~ ^[1-9][0-9]*$ ]] || die "MAX_KEYS must be a positive number"

# --- tools ------------------------------------------------------------------------------------
missing=()
command -v nginx >/dev/null || missing+=(nginx)
command -v wrk >/dev/null || missing+=(wrk)
command -v curl >/dev/null || missing+=(curl)
command -v ss >/dev/null || missing+=(iproute2)
if ((${#missing[@]})); then
    log "installing: ${missing[*]}"
    sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# --- Dispatch ---------------------------------------------------------------------------------
DISPATCH_REV="DISPATCH_BIN=${DISPATCH_BIN:-}"
if [[ -z ${DISPATCH_BIN:-} ]]; then
    if [[ $BUILD != 0 ]]; then
        log "building Dispatch: cargo build --profile perf"
        (cd "$REPO" && cargo build --profile perf)
    fi
    DISPATCH_BIN=$REPO/target/perf/dispatch
    DISPATCH_REV=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
fi
[[ -x $DISPATCH_BIN ]] || die "$DISPATCH_BIN is not an executable file (build it or set DISPATCH_BIN)"

# --- processes --------------------------------------------------------------------------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/dispatch-flood.XXXXXX")
CHILDREN=()
cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    for pid in "${CHILDREN[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${CHILDREN[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ $KEEP_TMP == 1 || $rc -ne 0 ]]; then
        log "logs and raw wrk output kept in $TMP"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for p in $UPSTREAM_PORT $DISPATCH_PORT $ADMIN_PORT; do
    ! ss -Htln "sport = :$p" | grep -q . || die "port 127.0.0.1:$p is in use (stop whatever holds it)"
done
# Every server inherits this: take the whole hard limit on open files.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

wait_ready() { # wait_ready NAME PID PORT
    for _ in $(seq 100); do
        kill -0 "$2" 2>/dev/null || { tail -n 30 "$TMP/$1.log" >&2 || true; die "$1 exited during start-up"; }
        curl -fsS --max-time 1 -o /dev/null "http://127.0.0.1:$3$REQUEST_PATH" 2>/dev/null && return 0
        sleep 0.1
    done
    die "$1 did not answer on 127.0.0.1:$3 within 10 s"
}

mkdir -p "$TMP/upstream/logs" "$TMP/upstream/temp"
nginx -p "$TMP/upstream/" -c "$PEERS/nginx-upstream.conf" -e "$TMP/upstream/logs/startup.log" >"$TMP/upstream.log" 2>&1 &
UPSTREAM_PID=$!
CHILDREN+=("$UPSTREAM_PID")
wait_ready upstream "$UPSTREAM_PID" "$UPSTREAM_PORT"

CONFIG=$TMP/dispatch-flood.toml
if [[ -n $MAX_KEYS ]]; then
    sed "s/^#@MAX_KEYS@\$/max_keys = $MAX_KEYS/" "$PEERS/dispatch-flood.toml" >"$CONFIG"
else
    sed '/^#@MAX_KEYS@$/d' "$PEERS/dispatch-flood.toml" >"$CONFIG"
fi
"$DISPATCH_BIN" check --config "$CONFIG" >"$TMP/check.log" 2>&1 || { cat "$TMP/check.log" >&2; die "dispatch check rejected $CONFIG"; }
"$DISPATCH_BIN" run --config "$CONFIG" >"$TMP/dispatch.log" 2>&1 &
DISPATCH_PID=$!
CHILDREN+=("$DISPATCH_PID")
wait_ready dispatch "$DISPATCH_PID" "$DISPATCH_PORT"
headers=$(curl -s -D - -o /dev/null -H 'x-key: probe' "http://127.0.0.1:$DISPATCH_PORT$REQUEST_PATH")
grep -qi '^ratelimit-limit: *100' <<<"$headers" || die "Dispatch's answer has no 'RateLimit-Limit: 100': the limit is not on the route: $headers"

# --- memory -----------------------------------------------------------------------------------
# kib FIELD: FIELD (VmRSS, VmHWM) of Dispatch's process in KiB; its workers are threads of it.
kib() { awk -v f="$1:" '$1 == f { print $2 }' "/proc/$DISPATCH_PID/status"; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
# ticks: Dispatch's utime + stime (fields 14 and 15 of /proc/PID/stat, all threads), in clock
# ticks; the command name (field 2) may hold spaces, so split after its closing parenthesis.
ticks() { awk '{ sub(/^.*\) /, ""); split($0, f, " "); print f[12] + f[13] }' "/proc/$DISPATCH_PID/stat"; }
CLK_TCK=$(getconf CLK_TCK)
declare -A CPU0=() CPU1=()
[[ -z $(pgrep -P "$DISPATCH_PID" || true) ]] || die "Dispatch has child processes: RSS of one process would not be all of it"

echo idle >"$TMP/phase"
RSS=$TMP/rss.tsv
: >"$RSS"
(
    while kill -0 "$DISPATCH_PID" 2>/dev/null; do
        printf '%s\t%s\t%s\n' "$(<"$TMP/phase")" "$(kib VmRSS)" "$(kib VmHWM)" >>"$RSS"
        sleep 0.2
    done
) &
CHILDREN+=($!)

# --- load -------------------------------------------------------------------------------------
URL=http://127.0.0.1:$DISPATCH_PORT$REQUEST_PATH
LUA=$PERF_DIR/flood.lua
WRK_PIDS=()

steady() { # steady OUT DURATION: the steady client, in the background
    wrk -t1 -c"$STEADY_CONNECTIONS" -d"$2" --latency -s "$LUA" "$URL" -- fixed steady "$STEADY_PAUSE_MS" >"$1" 2>&1 &
    WRK_PIDS+=($!)
    CHILDREN+=($!)
}

# stop_wrk PID: end a wrk run early; SIGINT makes it print its report as at the end of a run.
stop_wrk() {
    kill -INT "$1" 2>/dev/null || true
    wait "$1" || true
}

# field FILE: "p50 p90 p99 requests" from a wrk --latency report, latencies in ms.
latency() {
    awk '
        function ms(v) {
            if (v ~ /us$/) { sub(/us$/, "", v); return v / 1000 }
            if (v ~ /ms$/) { sub(/ms$/, "", v); return v + 0 }
            if (v ~ /s$/) { sub(/s$/, "", v); return v * 1000 }
            return -1
        }
        $1 == "50%" { p50 = ms($2) } $1 == "90%" { p90 = ms($2) } $1 == "99%" { p99 = ms($2) }
        / requests in / { n = $1 }
        END { printf "%.3f %.3f %.3f %d", p50, p90, p99, n }' "$1"
}
rps() { awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$1"; }
# non200 FILE: what flood.lua counted, "0 of 123" form, or "?" when it printed nothing.
non200() {
    awk '/^flood.lua: .*non-200 responses:/ { sub(/.*non-200 responses: /, ""); print; found = 1 }
         END { if (!found) print "?" }' "$1"
}
# answers FILE: how many answers flood.lua counted.
answers() { awk '/^flood.lua: .*non-200 responses:/ { print $NF }' "$1"; }
statuses() { grep '^flood.lua: status' "$1" | sed 's/^flood.lua: //' | paste -sd ' ' || true; }
keys_sent() { awk '/^flood.lua: .*keys sent:/ { sub(/.*keys sent: /, ""); sub(/,.*/, ""); print }' "$1"; }
dur_s() { awk -v d="$1" 'BEGIN { if (d ~ /m$/) { sub(/m$/, "", d); d *= 60 } else sub(/s$/, "", d); print d + 0 }'; }

rss_idle=$(kib VmRSS)
echo warmup >"$TMP/phase"
wrk -t1 -c"$CONNECTIONS" -d"$WARMUP" -s "$LUA" "$URL" -- cycle "$CONTROL_KEYS" >"$TMP/wrk-warmup.txt" 2>&1
rss_before=$(kib VmRSS)

log "phase alone: the steady client alone for $STEADY"
echo alone >"$TMP/phase"
CPU0[alone]=$(ticks)
steady "$TMP/steady-alone.txt" "$STEADY"
wait "${WRK_PIDS[-1]}"
CPU1[alone]=$(ticks)

log "phase control: the steady client beside $CONTROL_KEYS keys in turn for $STEADY"
echo control >"$TMP/phase"
CPU0[control]=$(ticks)
wrk -t1 -c"$CONNECTIONS" -d"$(($(dur_s "$STEADY") + 60))s" -s "$LUA" "$URL" -- cycle "$CONTROL_KEYS" >"$TMP/load-control.txt" 2>&1 &
control=$!
CHILDREN+=("$control")
sleep 1
steady "$TMP/steady-control.txt" "$STEADY"
wait "${WRK_PIDS[-1]}"
stop_wrk "$control"
CPU1[control]=$(ticks)

log "phase flood: the steady client beside $FLOOD_KEYS distinct keys"
echo flood >"$TMP/phase"
rss_flood_start=$(kib VmRSS)
DONE=$TMP/flood.done
t0=$(date +%s%N)
CPU0[flood]=$(ticks)
wrk -t1 -c"$CONNECTIONS" -d3600s -s "$LUA" "$URL" -- distinct "$FLOOD_KEYS" "$DONE" >"$TMP/load-flood.txt" 2>&1 &
flood=$!
CHILDREN+=("$flood")
sleep 1
steady "$TMP/steady-flood.txt" 3600s
steady_flood=${WRK_PIDS[-1]}
while [[ ! -e $DONE ]]; do
    kill -0 "$flood" 2>/dev/null || { cat "$TMP/load-flood.txt" >&2; die "the flood's wrk ended before $FLOOD_KEYS answers"; }
    sleep 0.2
done
t1=$(date +%s%N)
# The steady client stops first, so all of its run had the flood beside it.
stop_wrk "$steady_flood"
stop_wrk "$flood"
CPU1[flood]=$(ticks)
rss_flood_end=$(kib VmRSS)

log "phase after: the steady client alone again for $STEADY"
echo after >"$TMP/phase"
CPU0[after]=$(ticks)
steady "$TMP/steady-after.txt" "$STEADY"
wait "${WRK_PIDS[-1]}"
CPU1[after]=$(ticks)
rss_after=$(kib VmRSS)
hwm=$(kib VmHWM)
echo done >"$TMP/phase"
rejected=$(curl -s --max-time 2 "http://127.0.0.1:$ADMIN_PORT/metrics" | grep '^dispatch_ratelimit_rejected_total' | paste -sd ' ' || true)

# --- report -----------------------------------------------------------------------------------
max_rss() { awk -F'\t' -v p="$1" '$1 == p && $2 > m { m = $2 } END { print m + 0 }' "$RSS"; }

echo "## perf/flood.sh run"
echo
echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "- command: FLOOD_KEYS=$FLOOD_KEYS CONTROL_KEYS=$CONTROL_KEYS STEADY=$STEADY WARMUP=$WARMUP MAX_KEYS=${MAX_KEYS:-(default)} perf/flood.sh"
echo "- machine: $(nproc) cores ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), kernel $(uname -r), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)"
echo "- dispatch: $DISPATCH_BIN ($DISPATCH_REV), config perf/peers/dispatch-flood.toml (token bucket 100/s, burst 100, key header:x-key, max_keys ${MAX_KEYS:-default}), 2 workers"
echo "- steady client: wrk -t1 -c$STEADY_CONNECTIONS --latency -s perf/flood.lua -- fixed steady $STEADY_PAUSE_MS (one key, at most $((STEADY_CONNECTIONS * 1000 / STEADY_PAUSE_MS)) req/s)"
echo "- loads: wrk -t1 -c$CONNECTIONS -s perf/flood.lua -- cycle $CONTROL_KEYS (control) / -- distinct $FLOOD_KEYS DONE (flood)"
echo "- flood: $(keys_sent "$TMP/load-flood.txt") distinct keys sent in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", (b - a) / 1e9 }') s, $(rps "$TMP/load-flood.txt") req/s (wrk's rate over its whole run); non-200: $(non200 "$TMP/load-flood.txt") $(statuses "$TMP/load-flood.txt")"
echo "- control: $(rps "$TMP/load-control.txt") req/s over $CONTROL_KEYS keys; non-200: $(non200 "$TMP/load-control.txt") $(statuses "$TMP/load-control.txt")"
echo "- Dispatch's ${rejected:-dispatch_ratelimit_rejected_total: (not reported)}"
echo
echo "### The steady client"
echo
echo "| phase   | beside it                     | requests | non-200 | p50 ms | p90 ms | p99 ms | Dispatch VmRSS max (MiB) | Dispatch CPU us/req |"
echo "| ------- | ----------------------------- | -------: | ------: | -----: | -----: | -----: | -----------------------: | ------------------: |"
for phase in alone control flood after; do
    case $phase in
        alone | after) beside="nothing" ;;
        control) beside="$CONTROL_KEYS keys in turn, -c$CONNECTIONS" ;;
        flood) beside="$FLOOD_KEYS distinct keys, -c$CONNECTIONS" ;;
    esac
    read -r p50 p90 p99 n <<<"$(latency "$TMP/steady-$phase.txt")"
    bad=$(non200 "$TMP/steady-$phase.txt")
    # Dispatch's CPU over the phase, per answer it gave to anyone (the load's and the steady
    # client's): what a request costs it beside many keys, against beside few.
    served=$(answers "$TMP/steady-$phase.txt")
    [[ ! -f $TMP/load-$phase.txt ]] || served=$((served + $(answers "$TMP/load-$phase.txt")))
    cpu=$(awk -v d=$((CPU1[$phase] - CPU0[$phase])) -v hz="$CLK_TCK" -v n="$served" 'BEGIN { printf "%.2f", n ? d * 1e6 / hz / n : 0 }')
    printf '| %-7s | %-29s | %8s | %7s | %6s | %6s | %6s | %24s | %19s |\n' \
        "$phase" "$beside" "$n" "${bad%% of*}" "$p50" "$p90" "$p99" "$(mib "$(max_rss "$phase")")" "$cpu"
done
echo
echo "### Dispatch's memory (/proc/PID/status)"
echo
echo "| when                                  | VmRSS MiB |"
echo "| ------------------------------------- | --------: |"
printf '| %-37s | %9s |\n' "started, no request yet" "$(mib "$rss_idle")"
printf '| %-37s | %9s |\n' "after the warm-up" "$(mib "$rss_before")"
printf '| %-37s | %9s |\n' "flood: start" "$(mib "$rss_flood_start")"
printf '| %-37s | %9s |\n' "flood: largest sample (every 200 ms)" "$(mib "$(max_rss flood)")"
printf '| %-37s | %9s |\n' "flood: end" "$(mib "$rss_flood_end")"
printf '| %-37s | %9s |\n' "after the after phase" "$(mib "$rss_after")"
printf '| %-37s | %9s |\n' "VmHWM (peak over the process's life)" "$(mib "$hwm")"

bad_steady=0
for phase in alone control flood after; do
    b=$(non200 "$TMP/steady-$phase.txt")
    [[ ${b%% of*} == 0 ]] || bad_steady=1
done
if ((bad_steady)); then
    log "*** INVALID: the steady client got answers other than 200 (see the table): its latency is not a well-behaved client's"
    exit 2
fi
