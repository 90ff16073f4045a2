#!/usr/bin/env bash
# perf/compare.sh: Dispatch against nginx and HAProxy, same machine, same run, same upstream.
#
# What it does:
#   1. installs nginx, haproxy and wrk with apt-get when they are missing;
#   2. builds Dispatch with `cargo build --profile perf` (unless DISPATCH_BIN names a binary);
#   3. starts one upstream nginx worker (perf/peers/nginx-upstream.conf, 127.0.0.1:18000) that
#      answers every request with a fixed ~300-byte JSON body over keep-alive;
#   4. starts the proxies in front of it, each with a 2-core budget:
#        dispatch  127.0.0.1:18081  perf/peers/dispatch.toml     (workers = 2)
#        nginx     127.0.0.1:18082  perf/peers/nginx-proxy.conf  (2 workers, upstream keepalive 256)
#        haproxy   127.0.0.1:18083  perf/peers/haproxy.cfg       (nbthread 2, http-reuse always)
#   5. warms each one, then runs `wrk -t1 -c64 -d10s --latency` against each in interleaved
#      rounds (round 1: A B C, round 2: C B A, ...) so slow drift of the machine hits all alike;
#   6. per run records req/s, p50, p99 and the proxy's CPU time per request, user and system
#      separately: utime and stime of all its processes (master and workers) from
#      /proc/PID/stat before and after the run, divided by the number of requests wrk completed
#      (user time is what the proxy's own code costs; system time is the kernel's work for it:
#      sockets, io_uring or epoll, copies);
#   7. prints a table per run and a summary: the median of each proxy over the rounds and the
#      ratios Dispatch/nginx and Dispatch/HAProxy for CPU per request (total, user, system)
#      and p99. With DISPATCH_B set, a second Dispatch binary ("dispatch-b") is measured in the
#      same run, interleaved with the first (A B, B A, ...): the ABBA comparison of a change.
#
# Everything runs as child processes of this script with pid, log and temp files in one temp
# dir; all of them are stopped on exit. Nothing is pinned to a core.
#
# Environment:
#   ROUNDS=2            measured rounds per proxy
#   DURATION=10s        length of each measured wrk run
#   WARMUP=3s           length of the warm-up run per proxy (not recorded)
#   CONNECTIONS=64      wrk -c;  THREADS=1: wrk -t
#   PROXIES="dispatch nginx haproxy"   which proxies to measure, in round-1 order
#   SCENARIO=proxy      Dispatch config: perf/peers/dispatch.toml for "proxy", otherwise
#                       perf/peers/dispatch-$SCENARIO.toml (DISPATCH_CONFIG=path overrides both)
#   DISPATCH_BIN=path   use this binary, do not build
#   BUILD=0             do not build; use target/perf/dispatch if it exists, else skip Dispatch
#   REQUEST_PATH=/users/1   the path wrk requests
#   KEEP_TMP=1          keep the temp dir (logs, raw wrk output, results.tsv) after the run
#   RELOAD_EVERY=1      while Dispatch is measured, POST /reload to its admin API every this
#                       many seconds (hot reload under load; the count is printed per run)
#   DISPATCH_B=path     a second Dispatch binary, measured as "dispatch-b" on 127.0.0.1:18084
#                       with the same config (ports rewritten); it is added to PROXIES right
#                       after "dispatch", so rounds alternate A B / B A. Summary: B/A ratios.
#
# ABBA of a change: build both commits with `cargo build --profile perf`, copy the binaries,
#   DISPATCH_BIN=/tmp/before DISPATCH_B=/tmp/after PROXIES=dispatch ROUNDS=6 perf/compare.sh
#
# Smoke test: DURATION=2s ROUNDS=1 WARMUP=1s perf/compare.sh
set -euo pipefail

PERF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$PERF_DIR")
PEERS=$PERF_DIR/peers

ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-3s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-1}
PROXIES=${PROXIES:-dispatch nginx haproxy}
SCENARIO=${SCENARIO:-proxy}
BUILD=${BUILD:-1}
REQUEST_PATH=${REQUEST_PATH:-/users/1}
KEEP_TMP=${KEEP_TMP:-0}
RELOAD_EVERY=${RELOAD_EVERY:-0}

# Fixed loopback ports: the files in perf/peers/ name them too.
UPSTREAM_PORT=18000
declare -A PORT=([dispatch]=18081 [nginx]=18082 [haproxy]=18083 [dispatch-b]=18084)
DISPATCH_ADMIN_PORT=18091
DISPATCH_B_ADMIN_PORT=18092
DISPATCH_B=${DISPATCH_B:-}

# nginx and haproxy live in /usr/sbin, which a non-login shell may not have on PATH.
export PATH="$PATH:/usr/sbin:/sbin"

log() { printf '%s\n' "$*" >&2; }
die() { log "compare.sh: error: $*"; exit 1; }

# --------------------------------------------------------------------------------------------
# Tools
# --------------------------------------------------------------------------------------------
ensure_tools() {
    local missing=()
    command -v nginx >/dev/null || missing+=(nginx)
    command -v haproxy >/dev/null || missing+=(haproxy)
    command -v wrk >/dev/null || missing+=(wrk)
    command -v curl >/dev/null || missing+=(curl)
    command -v pgrep >/dev/null || missing+=(procps)
    command -v ss >/dev/null || missing+=(iproute2)
    if ((${#missing[@]})); then
        log "installing: ${missing[*]}"
        local sudo=()
        [[ $(id -u) -eq 0 ]] || sudo=(sudo)
        "${sudo[@]}" apt-get update -qq
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

# --------------------------------------------------------------------------------------------
# Which Dispatch, which config
# --------------------------------------------------------------------------------------------
want() { [[ " $PROXIES " == *" $1 "* ]]; }

DISPATCH_REV="n/a"
pick_dispatch() {
    want dispatch || return 0
    if [[ -z ${DISPATCH_CONFIG:-} ]]; then
        if [[ $SCENARIO == proxy ]]; then
            DISPATCH_CONFIG=$PEERS/dispatch.toml
        else
            DISPATCH_CONFIG=$PEERS/dispatch-$SCENARIO.toml
        fi
    fi
    [[ -f $DISPATCH_CONFIG ]] || die "no Dispatch config for scenario '$SCENARIO': $DISPATCH_CONFIG"

    if [[ -n $DISPATCH_B ]]; then
        [[ -x $DISPATCH_B ]] || die "DISPATCH_B=$DISPATCH_B is not an executable file"
        # B runs right after A in every round's order, so the two alternate A B / B A.
        PROXIES=$(tr ' ' '\n' <<<"$PROXIES" | grep -vx dispatch-b \
            | awk '{ print } $0 == "dispatch" { print "dispatch-b" }' | xargs)
        want dispatch-b || die "DISPATCH_B needs \"dispatch\" in PROXIES"
    fi
    if [[ -n ${DISPATCH_BIN:-} ]]; then
        [[ -x $DISPATCH_BIN ]] || die "DISPATCH_BIN=$DISPATCH_BIN is not an executable file"
        DISPATCH_REV="DISPATCH_BIN=$DISPATCH_BIN"
        return 0
    fi
    if [[ $BUILD != 0 ]] && command -v cargo >/dev/null; then
        log "building Dispatch: cargo build --profile perf"
        (cd "$REPO" && cargo build --profile perf)
    fi
    DISPATCH_BIN=$REPO/target/perf/dispatch
    if [[ ! -x $DISPATCH_BIN ]]; then
        log "*** SKIPPING Dispatch: $DISPATCH_BIN does not exist and DISPATCH_BIN is unset."
        log "*** Build it with 'cargo build --profile perf' or set DISPATCH_BIN=/path/to/dispatch."
        PROXIES=$(tr ' ' '\n' <<<"$PROXIES" | grep -vx dispatch | xargs || true)
        DISPATCH_BIN=""
        return 0
    fi
    DISPATCH_REV=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo "unknown")
}

# --------------------------------------------------------------------------------------------
# Processes: every server is a child of this script; the trap stops them all.
# --------------------------------------------------------------------------------------------
TMP=""
B_CONFIG=""
declare -A ROOT_PID=()
CHILDREN=()

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local pid
    [[ -z $WRK_PID ]] || kill -TERM "$WRK_PID" 2>/dev/null || true
    for pid in "${CHILDREN[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${CHILDREN[@]}"; do
        # nginx masters stop their workers on TERM; give everyone 5 s before KILL.
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    [[ -z $B_CONFIG ]] || rm -f "$B_CONFIG"
    if [[ -n $TMP && -d $TMP ]]; then
        if [[ $KEEP_TMP == 1 || $rc -ne 0 ]]; then
            log "logs and raw wrk output kept in $TMP"
        else
            rm -rf "$TMP"
        fi
    fi
    exit "$rc"
}

# run_wrk OUT ARGS...: wrk in the background and `wait` for it, so a signal to this script is
# handled at once instead of after the run; it is still this shell's child for `times`.
WRK_PID=""
run_wrk() {
    local out=$1 rc=0
    shift
    wrk "$@" >"$out" 2>&1 &
    WRK_PID=$!
    wait "$WRK_PID" || rc=$?
    WRK_PID=""
    return "$rc"
}

port_free() { ! ss -Htln "sport = :$1" | grep -q .; }

# wait_ready NAME PORT: the server answers 200 with the upstream's body, or we stop here.
wait_ready() {
    local name=$1 port=$2 pid=${ROOT_PID[$1]} body
    for _ in $(seq 100); do
        if ! kill -0 "$pid" 2>/dev/null; then
            log "--- $name exited during start-up; its log:"
            tail -n 30 "$TMP/$name"/logs/*.log >&2 2>/dev/null || true
            die "$name did not start"
        fi
        if body=$(curl -fsS --max-time 1 "http://127.0.0.1:$port$REQUEST_PATH" 2>/dev/null); then
            [[ $body == *'"Ada Lovelace"'* ]] || die "$name answered 200 but not with the upstream's body: $body"
            return 0
        fi
        sleep 0.1
    done
    tail -n 30 "$TMP/$name"/logs/*.log >&2 2>/dev/null || true
    die "$name did not answer on 127.0.0.1:$port within 10 s"
}

start_nginx() { # start_nginx NAME CONF
    local name=$1 conf=$2 prefix=$TMP/$1
    mkdir -p "$prefix/logs" "$prefix/temp"
    nginx -t -q -p "$prefix/" -c "$conf" -e "$prefix/logs/startup.log" \
        || die "nginx rejected $conf (see $prefix/logs/startup.log)"
    nginx -p "$prefix/" -c "$conf" -e "$prefix/logs/startup.log" >"$prefix/logs/stdout.log" 2>&1 &
    ROOT_PID[$name]=$!
    CHILDREN+=($!)
}

start_haproxy() {
    local prefix=$TMP/haproxy
    mkdir -p "$prefix/logs"
    haproxy -c -q -f "$PEERS/haproxy.cfg" || die "haproxy rejected $PEERS/haproxy.cfg"
    # -db: stay in the foreground, no daemon, no pid file.
    haproxy -db -f "$PEERS/haproxy.cfg" >"$prefix/logs/stdout.log" 2>&1 &
    ROOT_PID[haproxy]=$!
    CHILDREN+=($!)
}

start_dispatch() { # start_dispatch NAME BINARY CONFIG
    local name=$1 bin=$2 config=$3 prefix=$TMP/$1
    mkdir -p "$prefix/logs"
    "$bin" check --config "$config" >"$prefix/logs/check.log" 2>&1 \
        || { cat "$prefix/logs/check.log" >&2; die "$name: dispatch check rejected $config"; }
    "$bin" run --config "$config" >"$prefix/logs/stdout.log" 2>&1 &
    ROOT_PID[$name]=$!
    CHILDREN+=($!)
}

# The B binary serves the same config on its own ports; the copy sits beside the original so
# relative paths inside it still resolve.
start_dispatch_b() {
    local config
    config=$(dirname "$DISPATCH_CONFIG")/.compare-b-$$.toml
    B_CONFIG=$config
    sed -e "s/127\.0\.0\.1:${PORT[dispatch]}/127.0.0.1:${PORT[dispatch-b]}/" \
        -e "s/127\.0\.0\.1:$DISPATCH_ADMIN_PORT/127.0.0.1:$DISPATCH_B_ADMIN_PORT/" \
        "$DISPATCH_CONFIG" >"$config"
    start_dispatch dispatch-b "$DISPATCH_B" "$config"
    # The binary has read it by the time it answers; remove it at once so no copy is left.
    wait_ready dispatch-b "${PORT[dispatch-b]}"
    rm -f "$config"
}

start_proxy() {
    case $1 in
        dispatch) start_dispatch dispatch "$DISPATCH_BIN" "$DISPATCH_CONFIG" ;;
        dispatch-b) start_dispatch_b ;;
        nginx) start_nginx nginx "$PEERS/nginx-proxy.conf" ;;
        haproxy) start_haproxy ;;
        *) die "unknown proxy '$1' in PROXIES (known: dispatch nginx haproxy)" ;;
    esac
}

# --------------------------------------------------------------------------------------------
# CPU accounting
# --------------------------------------------------------------------------------------------
CLK_TCK=$(getconf CLK_TCK)

# descendants PID: PID and every process below it (nginx master -> workers).
descendants() {
    local pid=$1 child
    echo "$pid"
    for child in $(pgrep -P "$pid" || true); do descendants "$child"; done
}

# cpu_ticks PID: "utime stime" (fields 14, 15 of /proc/PID/stat; all threads included), each
# summed over PID and its descendants, in clock ticks.
cpu_ticks() {
    local user=0 sys=0 pid line
    local -a f
    for pid in $(descendants "$1"); do
        line=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        # The command name (field 2) may hold spaces: split after its closing parenthesis,
        # where field 3 (state) is f[0], so utime (14) is f[11] and stime (15) is f[12].
        read -r -a f <<<"${line##*) }"
        user=$((user + f[11]))
        sys=$((sys + f[12]))
    done
    echo "$user $sys"
}

# --------------------------------------------------------------------------------------------
# wrk
# --------------------------------------------------------------------------------------------
# to_ms VALUE: wrk's "812.00us" / "1.23ms" / "1.02s" / "1.50m" in milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
        else if (v ~ /m$/) { sub(/m$/, "", v); printf "%.3f", v * 60000 }
        else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
        else { printf "nan" }
    }'
}

RESULTS=""     # results.tsv: round proxy rps p50_ms p99_ms cpu_us_per_req proxy_cpu_pct upstream_cpu_pct wrk_cpu_pct errors user_us_per_req sys_us_per_req
dur_seconds() { # 10s / 1m / 2 -> seconds (for CPU %)
    awk -v d="$1" 'BEGIN { if (d ~ /m$/) { sub(/m$/, "", d); d *= 60 } else if (d ~ /h$/) { sub(/h$/, "", d); d *= 3600 } else sub(/s$/, "", d); print d + 0 }'
}

# measure ROUND NAME DURATION: one wrk run, one row in results.tsv, one line of the table.
measure() {
    local round=$1 name=$2 duration=$3 port=${PORT[$2]}
    local out=$TMP/wrk-$round-$name.txt
    local before after up_before up_after u_before s_before u_after s_after
    read -r u_before s_before <<<"$(cpu_ticks "${ROOT_PID[$name]}")"
    up_before=$(cpu_ticks "${ROOT_PID[upstream]}" | awk '{ print $1 + $2 }')
    local reloader=""
    if [[ $name == dispatch && $RELOAD_EVERY != 0 ]]; then
        : >"$TMP/reloads-$round"
        reload_loop "$TMP/reloads-$round" &
        reloader=$!
    fi
    # `times` must run in this shell, not in a $(...) subshell, to see wrk as its child.
    times >"$TMP/times.before"
    run_wrk "$out" -t"$THREADS" -c"$CONNECTIONS" -d"$duration" --latency "http://127.0.0.1:$port$REQUEST_PATH" \
        || { cat "$out" >&2; die "wrk failed against $name"; }
    times >"$TMP/times.after"
    if [[ -n $reloader ]]; then
        kill "$reloader" 2>/dev/null || true
        wait "$reloader" 2>/dev/null || true
        log "round $round: $(grep -c '"reloaded"' "$TMP/reloads-$round" || true) reloads during the run ($(grep -vc '"reloaded"' "$TMP/reloads-$round" || true) failed)"
    fi
    read -r u_after s_after <<<"$(cpu_ticks "${ROOT_PID[$name]}")"
    up_after=$(cpu_ticks "${ROOT_PID[upstream]}" | awk '{ print $1 + $2 }')
    before=$((u_before + s_before))
    after=$((u_after + s_after))

    local total rps p50 p99 errors secs
    total=$(awk '/ requests in / { print $1 }' "$out")
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
    p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")
    p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")
    # Socket errors and non-2xx answers, summed; a clean run shows 0.
    errors=$(awk '/Socket errors:/ { gsub(/,/, ""); n += $4 + $6 + $8 + $10 }
                  /Non-2xx or 3xx responses:/ { n += $5 }
                  END { print n + 0 }' "$out")
    [[ -n $total && $total -gt 0 ]] || { cat "$out" >&2; die "wrk completed no request against $name"; }
    secs=$(dur_seconds "$duration")

    local cpu_us user_us sys_us cpu_pct up_pct wrk_pct
    wrk_pct=$(awk -v s="$secs" 'FNR == 2 { t = 0; for (i = 1; i <= 2; i++) { split($i, a, "m"); sub(/s$/, "", a[2]); t += a[1] * 60 + a[2] }
                                   if (NR == FNR) b = t; else e = t }
                       END { printf "%.0f", (e - b) / s * 100 }' "$TMP/times.before" "$TMP/times.after")
    cpu_us=$(awk -v d=$((after - before)) -v hz="$CLK_TCK" -v n="$total" 'BEGIN { printf "%.2f", d * 1e6 / hz / n }')
    user_us=$(awk -v d=$((u_after - u_before)) -v hz="$CLK_TCK" -v n="$total" 'BEGIN { printf "%.2f", d * 1e6 / hz / n }')
    sys_us=$(awk -v d=$((s_after - s_before)) -v hz="$CLK_TCK" -v n="$total" 'BEGIN { printf "%.2f", d * 1e6 / hz / n }')
    cpu_pct=$(awk -v d=$((after - before)) -v hz="$CLK_TCK" -v s="$secs" 'BEGIN { printf "%.0f", d / hz / s * 100 }')
    up_pct=$(awk -v d=$((up_after - up_before)) -v hz="$CLK_TCK" -v s="$secs" 'BEGIN { printf "%.0f", d / hz / s * 100 }')

    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
        "$round" "$name" "$rps" "$p50" "$p99" "$cpu_us" "$cpu_pct" "$up_pct" "$wrk_pct" "$errors" "$user_us" "$sys_us" >>"$RESULTS"
    printf '| %5s | %-10s | %10s | %7s | %7s | %10s | %7s | %7s | %8s%% | %11s%% | %6s%% | %6s |\n' \
        "$round" "$name" "$rps" "$p50" "$p99" "$cpu_us" "$user_us" "$sys_us" "$cpu_pct" "$up_pct" "$wrk_pct" "$errors"
    ((errors == 0)) || log "WARNING: $name had $errors errors in round $round (see $out)"
    if ((up_pct >= 90)); then
        log "WARNING: the upstream nginx worker used ${up_pct}% of a core during this run: it may be the bottleneck"
    fi
}

# reload_loop FILE: POST /reload to Dispatch's admin API every RELOAD_EVERY seconds, one answer
# per line in FILE (the reload work happens in the gateway while wrk measures it).
reload_loop() {
    while :; do
        sleep "$RELOAD_EVERY"
        curl -s -m 5 -X POST "http://127.0.0.1:$DISPATCH_ADMIN_PORT/reload" >>"$1" || true
        echo >>"$1"
    done
}

# --------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------
# median COLUMN PROXY: median over the rounds of one column of results.tsv.
median() {
    awk -F'\t' -v c="$1" -v p="$2" '$2 == p { print $c }' "$RESULTS" | sort -g | awk '
        { v[NR] = $1 }
        END {
            if (NR == 0) { print "nan"; exit }
            if (NR % 2) printf "%.3f", v[(NR + 1) / 2]
            else printf "%.3f", (v[NR / 2] + v[NR / 2 + 1]) / 2
        }'
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "n/a"; else printf "%.2f", a / b }'; }

summary() {
    local name
    declare -A rps p50 p99 cpu usr sys
    echo
    echo "### Summary: median of $ROUNDS round(s), $DURATION each"
    echo
    echo "| proxy      |      req/s |  p50 ms |  p99 ms | CPU us/req | user us | sys us |"
    echo "| ---------- | ---------: | ------: | ------: | ---------: | ------: | -----: |"
    for name in $PROXIES; do
        rps[$name]=$(median 3 "$name")
        p50[$name]=$(median 4 "$name")
        p99[$name]=$(median 5 "$name")
        cpu[$name]=$(median 6 "$name")
        usr[$name]=$(median 11 "$name")
        sys[$name]=$(median 12 "$name")
        printf '| %-10s | %10.0f | %7.3f | %7.3f | %10.2f | %7.2f | %6.2f |\n' \
            "$name" "${rps[$name]}" "${p50[$name]}" "${p99[$name]}" "${cpu[$name]}" "${usr[$name]}" "${sys[$name]}"
    done
    echo
    echo "Ratios (lower is better for Dispatch):"
    echo
    local any=0 other label
    if want dispatch; then
        for other in nginx haproxy; do
            want "$other" || continue
            label=$([[ $other == nginx ]] && echo nginx || echo HAProxy)
            printf -- '- Dispatch/%-7s CPU per request %s (user %s, system %s), p99 %s, req/s %s\n' "$label" \
                "$(ratio "${cpu[dispatch]}" "${cpu[$other]}")" \
                "$(ratio "${usr[dispatch]}" "${usr[$other]}")" \
                "$(ratio "${sys[dispatch]}" "${sys[$other]}")" \
                "$(ratio "${p99[dispatch]}" "${p99[$other]}")" \
                "$(ratio "${rps[dispatch]}" "${rps[$other]}")"
            any=1
        done
    fi
    if want nginx && want haproxy; then
        printf -- '- HAProxy/nginx    CPU per request %s (user %s, system %s), p99 %s, req/s %s\n' \
            "$(ratio "${cpu[haproxy]}" "${cpu[nginx]}")" \
            "$(ratio "${usr[haproxy]}" "${usr[nginx]}")" \
            "$(ratio "${sys[haproxy]}" "${sys[nginx]}")" \
            "$(ratio "${p99[haproxy]}" "${p99[nginx]}")" \
            "$(ratio "${rps[haproxy]}" "${rps[nginx]}")"
        any=1
    fi
    if want dispatch-b; then
        printf -- '- B/A (dispatch-b/dispatch) CPU per request %s (user %s, system %s), p99 %s, req/s %s\n' \
            "$(ratio "${cpu[dispatch-b]}" "${cpu[dispatch]}")" \
            "$(ratio "${usr[dispatch-b]}" "${usr[dispatch]}")" \
            "$(ratio "${sys[dispatch-b]}" "${sys[dispatch]}")" \
            "$(ratio "${p99[dispatch-b]}" "${p99[dispatch]}")" \
            "$(ratio "${rps[dispatch-b]}" "${rps[dispatch]}")"
        any=1
    fi
    ((any)) || echo "- (need at least two proxies for a ratio)"
    if ! want dispatch; then
        echo
        echo "NOTE: Dispatch was not measured in this run (see the SKIPPING message above)."
    fi
}

# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------
main() {
    ensure_tools
    pick_dispatch
    # Every server inherits this: take the whole hard limit on open files.
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    [[ -n $PROXIES ]] || die "nothing to measure"

    TMP=$(mktemp -d "${TMPDIR:-/tmp}/dispatch-perf.XXXXXX")
    RESULTS=$TMP/results.tsv
    : >"$RESULTS"
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    local p
    for p in "$UPSTREAM_PORT" "${PORT[dispatch]}" "${PORT[nginx]}" "${PORT[haproxy]}" "${PORT[dispatch-b]}" "$DISPATCH_ADMIN_PORT" "$DISPATCH_B_ADMIN_PORT"; do
        port_free "$p" || die "port 127.0.0.1:$p is in use (stop whatever holds it)"
    done

    local cores model
    cores=$(nproc)
    model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
    echo "## perf/compare.sh run"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- command: ROUNDS=$ROUNDS DURATION=$DURATION WARMUP=$WARMUP SCENARIO=$SCENARIO PROXIES=\"$PROXIES\" RELOAD_EVERY=$RELOAD_EVERY perf/compare.sh"
    echo "- machine: $cores cores (${model:-unknown cpu}), kernel $(uname -r), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)"
    echo "- load: wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency http://127.0.0.1:PORT$REQUEST_PATH"
    echo "- peers: $(nginx -v 2>&1 | sed 's/.*version: //'), HAProxy $(haproxy -v | awk 'NR == 1 { print $3 }'), $(wrk -v 2>&1 | awk 'NR == 1 { print $1, $2 }')"
    if want dispatch; then
        echo "- dispatch: $DISPATCH_BIN ($DISPATCH_REV), config $DISPATCH_CONFIG"
    fi
    if want dispatch-b; then
        echo "- dispatch-b: $DISPATCH_B, same config on port ${PORT[dispatch-b]}"
    fi
    echo "- note: nothing is pinned. wrk (1 thread), the upstream (1 nginx worker) and the proxy under"
    echo "  test (2 workers/threads) share these $cores cores, so absolute numbers understate every proxy;"
    echo "  compare the ratios, which come from one run on one machine. CPU us/req counts only the"
    echo "  proxy's own processes; the upstream's CPU % is shown to prove it is not the bottleneck, and"
    echo "  wrk's CPU % shows when the load generator itself is the limit (near 100%: req/s is wrk's"
    echo "  ceiling, not the proxy's; CPU per request and latency stay comparable)."
    echo

    start_nginx upstream "$PEERS/nginx-upstream.conf"
    wait_ready upstream "$UPSTREAM_PORT"
    PORT[upstream]=$UPSTREAM_PORT
    for p in $PROXIES; do
        start_proxy "$p"
        wait_ready "$p" "${PORT[$p]}"
    done

    # The upstream alone, driven by the same wrk: its ceiling must sit well above any proxy's rate.
    run_wrk "$TMP/wrk-upstream.txt" -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" "http://127.0.0.1:$UPSTREAM_PORT$REQUEST_PATH"
    echo "- upstream alone (nginx, 1 worker, no proxy): $(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$TMP/wrk-upstream.txt") req/s"
    for p in $PROXIES; do
        run_wrk "$TMP/wrk-warmup-$p.txt" -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" "http://127.0.0.1:${PORT[$p]}$REQUEST_PATH"
    done
    echo "- warmed: $PROXIES ($WARMUP each)"
    echo
    echo "### Runs"
    echo
    echo "| round | proxy      |      req/s |  p50 ms |  p99 ms | CPU us/req | user us | sys us | proxy CPU | upstream CPU | wrk CPU | errors |"
    echo "| ----: | ---------- | ---------: | ------: | ------: | ---------: | ------: | -----: | --------: | -----------: | ------: | -----: |"

    local round order
    for round in $(seq "$ROUNDS"); do
        # Odd rounds in the given order, even rounds reversed: A B C, C B A, A B C ...
        if ((round % 2)); then order=$PROXIES; else order=$(tr ' ' '\n' <<<"$PROXIES" | tac | xargs); fi
        for p in $order; do
            measure "$round" "$p" "$DURATION"
        done
    done

    summary
}

main "$@"
