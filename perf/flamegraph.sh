#!/usr/bin/env bash
# perf/flamegraph.sh: a CPU flamegraph of Dispatch under wrk load.
#
#   perf/flamegraph.sh                  # scenario "proxy": perf/peers/dispatch.toml
#   SCENARIO=foo perf/flamegraph.sh     # perf/peers/dispatch-foo.toml
#
# Starts the same upstream as perf/compare.sh (perf/peers/nginx-upstream.conf, one nginx
# worker on 127.0.0.1:18000) and Dispatch on 127.0.0.1:18081, warms it, then samples every
# Dispatch process with `perf record -g` while wrk drives it, and folds the stacks into
# flamegraphs/<date>-<scenario>.svg (inferno; the FlameGraph perl scripts if those are on PATH
# instead). Link the SVG from perf/RESULTS.md next to the run it explains.
#
# Environment:
#   DURATION=15s        how long to sample (wrk runs 2 s longer, so the profile is all load)
#   WARMUP=3s           warm-up before sampling
#   CONNECTIONS=64      wrk -c;  THREADS=1: wrk -t
#   FREQ=499            samples per second per CPU
#   CALL_GRAPH=dwarf    perf's unwinder: "dwarf" works on any release build; "fp" is cheaper
#                       but needs RUSTFLAGS="-C force-frame-pointers=yes" to give whole stacks
#   DISPATCH_BIN=path   profile this binary, do not build (default: cargo build --profile perf)
#   OUT=path            where to write the SVG (default flamegraphs/<date>-<scenario>.svg)
#   KEEP_TMP=1          keep perf.data, the folded stacks and the logs
#
# On a machine without hardware counters (most VMs) perf falls back to the cpu-clock software
# event, which is what this script asks for there: sampling works, only PMU events do not.
set -euo pipefail

PERF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$PERF_DIR")
PEERS=$PERF_DIR/peers

SCENARIO=${SCENARIO:-proxy}
DURATION=${DURATION:-15s}
WARMUP=${WARMUP:-3s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-1}
FREQ=${FREQ:-499}
CALL_GRAPH=${CALL_GRAPH:-dwarf}
KEEP_TMP=${KEEP_TMP:-0}
REQUEST_PATH=${REQUEST_PATH:-/users/1}
UPSTREAM_PORT=18000
DISPATCH_PORT=18081
export PATH="$PATH:/usr/sbin:/sbin:$HOME/.cargo/bin"

log() { printf '%s\n' "$*" >&2; }
die() { log "flamegraph.sh: error: $*"; exit 1; }

# --- tools ------------------------------------------------------------------------------------
missing=()
command -v perf >/dev/null || missing+=(linux-perf)
command -v nginx >/dev/null || missing+=(nginx)
command -v wrk >/dev/null || missing+=(wrk)
command -v curl >/dev/null || missing+=(curl)
if ((${#missing[@]})); then
    log "installing: ${missing[*]}"
    sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if command -v inferno-collapse-perf >/dev/null && command -v inferno-flamegraph >/dev/null; then
    COLLAPSE=(inferno-collapse-perf)
    RENDER=(inferno-flamegraph)
elif command -v stackcollapse-perf.pl >/dev/null && command -v flamegraph.pl >/dev/null; then
    COLLAPSE=(stackcollapse-perf.pl)
    RENDER=(flamegraph.pl)
elif command -v cargo >/dev/null; then
    log "installing inferno: cargo install inferno"
    cargo install --locked inferno
    COLLAPSE=(inferno-collapse-perf)
    RENDER=(inferno-flamegraph)
else
    die "need inferno (cargo install inferno) or the FlameGraph scripts on PATH"
fi

# perf must be allowed to sample: kernel.perf_event_paranoid <= 1 for a non-root user.
perf stat -e task-clock true >/dev/null 2>&1 \
    || die "perf cannot count here (as root, or: sysctl kernel.perf_event_paranoid=1)"
EVENT=(-e cycles)
if perf stat -x, -e cycles true 2>&1 | grep -q 'not supported'; then
    log "no hardware cycle counter (VM?): sampling the cpu-clock software event instead"
    EVENT=(-e cpu-clock)
fi

# --- Dispatch -----------------------------------------------------------------------------------
if [[ $SCENARIO == proxy ]]; then
    CONFIG=${DISPATCH_CONFIG:-$PEERS/dispatch.toml}
else
    CONFIG=${DISPATCH_CONFIG:-$PEERS/dispatch-$SCENARIO.toml}
fi
[[ -f $CONFIG ]] || die "no Dispatch config for scenario '$SCENARIO': $CONFIG"
if [[ -z ${DISPATCH_BIN:-} ]]; then
    command -v cargo >/dev/null || die "cargo not found: build Dispatch or set DISPATCH_BIN"
    log "building Dispatch: cargo build --profile perf"
    (cd "$REPO" && cargo build --profile perf)
    DISPATCH_BIN=$REPO/target/perf/dispatch
fi
[[ -x $DISPATCH_BIN ]] || die "not an executable: $DISPATCH_BIN"

DATE=$(date -u +%Y-%m-%d)
OUT=${OUT:-$REPO/flamegraphs/$DATE-$SCENARIO.svg}
mkdir -p "$(dirname "$OUT")"

# --- processes ----------------------------------------------------------------------------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/dispatch-flame.XXXXXX")
CHILDREN=()
cleanup() {
    local rc=$? pid
    trap - EXIT
    for pid in "${CHILDREN[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${CHILDREN[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ $KEEP_TMP == 1 || $rc -ne 0 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for port in $UPSTREAM_PORT $DISPATCH_PORT; do
    ! ss -Htln "sport = :$port" | grep -q . || die "port 127.0.0.1:$port is in use"
done
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

mkdir -p "$TMP/upstream/logs" "$TMP/upstream/temp"
nginx -p "$TMP/upstream/" -c "$PEERS/nginx-upstream.conf" -e "$TMP/upstream/logs/startup.log" \
    >"$TMP/upstream/logs/stdout.log" 2>&1 &
CHILDREN+=($!)
"$DISPATCH_BIN" run --config "$CONFIG" >"$TMP/dispatch.log" 2>&1 &
DISPATCH_PID=$!
CHILDREN+=("$DISPATCH_PID")

ready=0
for _ in $(seq 100); do
    kill -0 "$DISPATCH_PID" 2>/dev/null || { cat "$TMP/dispatch.log" >&2; die "dispatch exited during start-up"; }
    if curl -fsS --max-time 1 "http://127.0.0.1:$DISPATCH_PORT$REQUEST_PATH" 2>/dev/null | grep -q 'Ada Lovelace'; then
        ready=1
        break
    fi
    sleep 0.1
done
((ready)) || { cat "$TMP/dispatch.log" >&2; die "dispatch did not answer on 127.0.0.1:$DISPATCH_PORT"; }

wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" "http://127.0.0.1:$DISPATCH_PORT$REQUEST_PATH" >/dev/null

# Dispatch and anything it forked (a wrapper script counts as Dispatch too).
descendants() {
    local child
    echo "$1"
    for child in $(pgrep -P "$1" || true); do descendants "$child"; done
}
PIDS=$(descendants "$DISPATCH_PID" | paste -sd, -)

secs=$(awk -v d="$DURATION" 'BEGIN { if (d ~ /m$/) { sub(/m$/, "", d); d *= 60 } else sub(/s$/, "", d); print d + 0 }')
log "sampling pids $PIDS for ${secs}s at ${FREQ} Hz (${EVENT[*]}, call graph $CALL_GRAPH) under wrk -c$CONNECTIONS"
wrk -t"$THREADS" -c"$CONNECTIONS" -d"$((${secs%.*} + 2))s" --latency \
    "http://127.0.0.1:$DISPATCH_PORT$REQUEST_PATH" >"$TMP/wrk.txt" 2>&1 &
WRK_PID=$!
CHILDREN+=("$WRK_PID")
sleep 1
perf record "${EVENT[@]}" -F "$FREQ" -g --call-graph "$CALL_GRAPH" -p "$PIDS" -o "$TMP/perf.data" \
    -- sleep "$secs" 2>"$TMP/perf-record.log" || { cat "$TMP/perf-record.log" >&2; die "perf record failed"; }
wait "$WRK_PID" || true

perf script -i "$TMP/perf.data" 2>/dev/null >"$TMP/perf.script"
"${COLLAPSE[@]}" "$TMP/perf.script" >"$TMP/folded.txt"
[[ -s $TMP/folded.txt ]] || die "perf recorded no stacks (see $TMP/perf-record.log)"
"${RENDER[@]}" --title "Dispatch $SCENARIO, $(date -u '+%Y-%m-%d %H:%M UTC'), wrk -c$CONNECTIONS" \
    "$TMP/folded.txt" >"$OUT"

samples=$(awk 'BEGIN { RS = "" } END { print NR }' "$TMP/perf.script")
log "$(grep -E 'Requests/sec' "$TMP/wrk.txt" | xargs) during sampling; $samples samples"
echo "$OUT"
