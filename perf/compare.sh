#!/usr/bin/env bash
# perf/compare.sh: Dispatch against nginx and HAProxy, same machine, same run, same upstream.
#
# What it does:
#   1. installs nginx, haproxy and wrk (SCENARIO=cache: varnish too) with apt-get when they are
#      missing;
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
# SCENARIO=edge (issue 9: authentication and rate limiting at the edge) measures Dispatch against
# HAProxy doing the same work on every request, nginx being left out (its free edition has no
# JWT verification):
#   - Dispatch: perf/peers/dispatch-edge.toml, a route with `auth = "jwt"` (RS256, exp, iss, aud,
#     sub required, sub forwarded as x-user-id, Authorization stripped) and a token bucket keyed
#     on jwt:sub at 1,000,000/s, burst 1,000,000 (never rejects);
#   - HAProxy: perf/peers/haproxy-edge.cfg, http_auth_bearer + jwt_verify and rules for alg,
#     exp (against date()), iss, aud and sub, and a stick-table keyed on sub tracked with
#     track-sc0 with an http_req_rate deny rule that never fires.
#   At start the script makes an RSA 2048 key pair (openssl CLI) and RS256 tokens
#   (perf/tools/jwt-tokens.py, python3 with the `cryptography` package) in its temp dir, copies
#   both configs there next to the key, and checks that each proxy answers 200 to valid tokens and
#   401 to no token and to each of a forged, expired, wrong-issuer, wrong-audience and HS256
#   (algorithm confusion) token, before measuring anything. wrk drives every run with
#   perf/edge.lua, which counts every non-200 answer: a run with any is flagged INVALID, and
#   the script then exits with status 2 after printing everything (the temp dir is kept).
#   EDGE_TOKENS="1 10000" (default) is two sub-runs in one invocation, each with its own
#   warm-up, rounds, table and summary: "warm", one token on every request (Dispatch's
#   per-worker cache of verified tokens answers all but the first), and "cold", a token picked
#   uniformly at random per request from 10,000 (each worker verifies each token once, then
#   hits its cache, which holds 16,384: the summary estimates how many of the measured
#   requests were misses). EDGE_TOKENS=100000 is a cold run beyond the cache (most requests
#   verify). HAProxy verifies the signature on every request either way. The
#   summary prints Dispatch/HAProxy CPU per request for each, against the issue's bars (warm at
#   most 0.5x, cold at most 1.0x).
#
# SCENARIO=cache (issue 12: the response cache) measures cache hits of one 2 KiB JSON response
# against nginx `proxy_cache` and Varnish (Debian's `varnish` package, installed when missing);
# HAProxy only when PROXIES names it (perf/peers/haproxy-cache.cfg, its `cache` section):
#   - the upstream answers /cache/... with a 2,048-byte JSON body and `Cache-Control:
#     max-age=3600`, and writes one line per request it gets there to its own access log
#     (perf/peers/nginx-upstream.conf), which this script counts;
#   - Dispatch: perf/peers/dispatch-cache.toml, a route with a cache rule, 64 MiB per worker;
#   - nginx: perf/peers/nginx-cache.conf, `proxy_cache` with proxy_cache_lock, 2 workers (its
#     cache manager and loader processes are counted with the workers);
#   - Varnish on 127.0.0.1:18085: `varnishd -F -b 127.0.0.1:18000 -s malloc,256m
#     -p thread_pools=2` with the built-in VCL (every process counted: manager and child).
#   Before measuring, each proxy must answer the second of two requests on one connection (so
#   one Dispatch worker answers both) as a hit: Dispatch `X-Cache: HIT` with `Age`, nginx and
#   HAProxy `X-Cache-Status: HIT`, Varnish two ids in `X-Varnish` with `Age`; both bodies byte for byte
#   the upstream's. Each run's table row shows how many requests reached the upstream during it
#   (0 when every request is a hit); the summary prints, per proxy, the upstream requests at
#   start-up and checks (one per cache: 1 for nginx and Varnish, at most one per worker for
#   Dispatch), during the warm-up and during the measured runs, and Dispatch's CPU per hit
#   against the issue's bars (at most 0.7x nginx's, at most 1.0x Varnish's). A measured run in
#   which more than 1% of requests reached the upstream is flagged INVALID (exit status 2).
#
# SCENARIO=aggregate (issue 11: aggregation) measures one composite request, the reference's
# dashboard (profile, balance, recentTransactions: three upstream calls), made by Dispatch for
# the client, against the client making the same three calls itself, one after another on one
# keep-alive connection, through nginx. wrk times single requests, so every run here is driven by
# perf/tools/seqload (a closed-loop generator built by this script with `cargo build --release
# --manifest-path perf/tools/seqload/Cargo.toml`): C connections, each sending its composite's
# GETs in turn and timing the whole sequence; nothing but 200 with the expected body counts.
#   - the upstream answers /users/u_1 (the ~300-byte profile), /accounts/u_1/balance and
#     /transactions?userId=u_1&limit=5 (five items; any other query is a 400) with fixed JSON
#     (perf/peers/nginx-upstream.conf);
#   - Dispatch: perf/peers/dispatch-aggregate.toml, the reference's [aggregates.dashboard] over
#     the three upstreams `users`, `accounts`, `transactions` (all the one upstream nginx),
#     without its `auth` (what is measured is the composition: planning, three pooled upstream
#     exchanges, JSON parsing, `select`, the composite body; SCENARIO=edge measures JWTs), and
#     plain routes to the same three paths;
#   - nginx: perf/peers/nginx-proxy.conf (it proxies every path).
#   The runs (AGGREGATE_RUNS), interleaved in rounds like the proxies of the other scenarios:
#     composite     Dispatch, one GET /api/v1/dashboard/u_1 per composite
#     nginx-seq     nginx, the three upstream paths in turn per composite (the client doing it)
#     single        Dispatch, one proxied GET /users/u_1 per composite: the baseline, Dispatch's
#                   CPU per single proxied request
#     dispatch-seq  Dispatch, the three paths in turn through its plain routes (for reference)
#   Before measuring: Dispatch's composite answer must be 200 JSON with `profile`, `balance`,
#   `recentTransactions` (an array of the upstream's 5 items) and `_meta.partial` false, and
#   Dispatch (plain routes) and nginx must answer each of the three paths 200 with the
#   upstream's body. During the runs seqload checks every body too (the composite's must say
#   "partial":false: a call that timed out under load gives a 200 with a default, cheaper and
#   wrong); any other answer, failed check or socket error marks the run INVALID (exit status 2).
#   Per run: composites/s, p50 and p99 of the composite's latency, the proxy's CPU per composite
#   (user and system, from /proc/PID/stat as above) and per client request. The summary checks
#   the issue's bars: Dispatch's composite p99 at most nginx-seq's, and Dispatch's CPU per
#   composite at most 2.5x its CPU per single proxied request (the ratio is printed).
#   Latency in a closed loop follows throughput (Little's law: mean latency = connections /
#   composites per second), so at CONNECTIONS=64 on a saturated machine the p99 bar compares
#   capacity as much as the critical path; CONNECTIONS=1 or 4 shows the unloaded latency, where
#   Dispatch's three parallel calls face nginx-seq's three round trips.
#
# SCENARIO=tls (issue 13: TLS termination) measures the plain proxy path over HTTPS: Dispatch,
# nginx and HAProxy terminate TLS with the same ECDSA P-256 certificate (made for the run with
# openssl, SANs localhost and 127.0.0.1), TLS 1.3 only, ALPN http/1.1, and forward in plaintext
# to the same upstream. Two sub-runs (TLS_RUNS): "keepalive" (wrk's connections stay open: the
# cost is record encryption, one handshake per connection for the whole run) and "close" (every
# request carries `Connection: close`, so every request is a new TCP connection and a full TLS
# 1.3 handshake: wrk does not resume sessions; CPU per request is then CPU per new TLS
# connection). Each proxy's readiness check fetches over HTTPS trusting only the run's
# certificate, so a proxy that serves another certificate fails the check. The summary checks
# the issue's bars: Dispatch's CPU per request at most nginx's in both sub-runs.
#
# Everything runs as child processes of this script with pid, log and temp files in one temp
# dir; all of them are stopped on exit. Nothing is pinned to a core.
#
# Environment:
#   ROUNDS=2            measured rounds per proxy
#   DURATION=10s        length of each measured wrk run
#   WARMUP=3s           length of the warm-up run per proxy (not recorded)
#   CONNECTIONS=64      wrk -c (SCENARIO=aggregate: seqload -c);  THREADS=1: wrk -t
#   PROXIES="dispatch nginx haproxy"   which proxies to measure, in round-1 order (SCENARIO=cache:
#                       "dispatch nginx varnish"; SCENARIO=aggregate: set from AGGREGATE_RUNS)
#   SCENARIO=proxy      Dispatch config: perf/peers/dispatch.toml for "proxy", otherwise
#                       perf/peers/dispatch-$SCENARIO.toml (DISPATCH_CONFIG=path overrides both);
#                       HAProxy's: perf/peers/haproxy-$SCENARIO.cfg if there is one, else
#                       perf/peers/haproxy.cfg
#   EDGE_TOKENS="1 10000"   SCENARIO=edge only: the sub-runs, each a number of distinct tokens
#                       (1 = "warm"; more = "cold", one picked at random per request)
#   DISPATCH_BIN=path   use this binary, do not build
#   BUILD=0             do not build; use target/perf/dispatch if it exists, else skip Dispatch
#   REQUEST_PATH=/users/1   the path wrk requests (SCENARIO=cache: /cache/catalog/42)
#   KEEP_TMP=1          keep the temp dir (logs, raw wrk output, results.tsv) after the run
#   RELOAD_EVERY=1      while Dispatch is measured, POST /reload to its admin API every this
#                       many seconds (hot reload under load; the count is printed per run)
#   AGGREGATE_RUNS="composite nginx-seq single dispatch-seq"   SCENARIO=aggregate only: the runs,
#                       in round-1 order (PROXIES is then what they need: dispatch, nginx)
#   SEQLOAD=path        SCENARIO=aggregate: this seqload binary instead of building perf/tools/seqload
#   TLS_RUNS="keepalive close"   SCENARIO=tls only: the sub-runs, in order
#   DISPATCH_B=path     a second Dispatch binary, measured as "dispatch-b" on 127.0.0.1:18084
#                       with the same config (ports rewritten); it is added to PROXIES right
#                       after "dispatch", so rounds alternate A B / B A. Summary: B/A ratios.
#
# ABBA of a change: build both commits with `cargo build --profile perf`, copy the binaries,
#   DISPATCH_BIN=/tmp/before DISPATCH_B=/tmp/after PROXIES=dispatch ROUNDS=6 perf/compare.sh
#
# Smoke test: DURATION=2s ROUNDS=1 WARMUP=1s perf/compare.sh
#   (edge: DURATION=2s ROUNDS=1 WARMUP=1s SCENARIO=edge perf/compare.sh;
#    cache: DURATION=2s ROUNDS=1 WARMUP=1s SCENARIO=cache perf/compare.sh;
#    aggregate: DURATION=2s ROUNDS=1 WARMUP=1s SCENARIO=aggregate perf/compare.sh;
#    tls: DURATION=2s ROUNDS=1 WARMUP=1s SCENARIO=tls perf/compare.sh)
set -euo pipefail

PERF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$PERF_DIR")
PEERS=$PERF_DIR/peers

ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-3s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-1}
SCENARIO=${SCENARIO:-proxy}
PROXIES_GIVEN=${PROXIES:-}
if [[ $SCENARIO == cache ]]; then
    PROXIES=${PROXIES:-dispatch nginx varnish}
    REQUEST_PATH=${REQUEST_PATH:-/cache/catalog/42}
else
    PROXIES=${PROXIES:-dispatch nginx haproxy}
fi
BUILD=${BUILD:-1}
REQUEST_PATH=${REQUEST_PATH:-/users/1}
KEEP_TMP=${KEEP_TMP:-0}
RELOAD_EVERY=${RELOAD_EVERY:-0}
EDGE_TOKENS=${EDGE_TOKENS:-1 10000}
AGGREGATE_RUNS=${AGGREGATE_RUNS:-composite nginx-seq single dispatch-seq}
SEQLOAD=${SEQLOAD:-}
TLS_RUNS=${TLS_RUNS:-keepalive close}
# The scheme the proxies are measured over (the upstream is always plain HTTP).
SCHEME=http
[[ $SCENARIO != tls ]] || SCHEME=https

# Fixed loopback ports: the files in perf/peers/ name them too.
UPSTREAM_PORT=18000
declare -A PORT=([dispatch]=18081 [nginx]=18082 [haproxy]=18083 [dispatch-b]=18084 [varnish]=18085)
DISPATCH_ADMIN_PORT=18091
DISPATCH_B_ADMIN_PORT=18092
# SCENARIO=tls: Dispatch's TLS listener is PORT[dispatch]; its plaintext `server.listen` is here.
DISPATCH_PLAIN_PORT=18093
DISPATCH_B_PLAIN_PORT=18094
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
    if [[ $SCENARIO == edge ]]; then
        command -v openssl >/dev/null || missing+=(openssl)
        pick_python || missing+=(python3-cryptography)
    fi
    if [[ $SCENARIO == cache ]] && want varnish; then
        command -v varnishd >/dev/null || missing+=(varnish)
    fi
    if [[ $SCENARIO == aggregate ]]; then
        command -v jq >/dev/null || missing+=(jq)
    fi
    if ((${#missing[@]})); then
        log "installing: ${missing[*]}"
        local sudo=()
        [[ $(id -u) -eq 0 ]] || sudo=(sudo)
        "${sudo[@]}" apt-get update -qq
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    if [[ $SCENARIO == edge ]]; then
        pick_python || die "no python3 with the 'cryptography' package (perf/tools/jwt-tokens.py needs it)"
    fi
}

# pick_python: PYTHON = the first python3 that can import `cryptography` (the one on PATH, else
# the system's, where apt's python3-cryptography lands).
PYTHON=""
pick_python() {
    local py
    for py in python3 /usr/bin/python3; do
        if command -v "$py" >/dev/null && "$py" -c 'import cryptography' 2>/dev/null; then
            PYTHON=$py
            return 0
        fi
    done
    return 1
}

# --------------------------------------------------------------------------------------------
# Which Dispatch, which config
# --------------------------------------------------------------------------------------------
want() { [[ " $PROXIES " == *" $1 "* ]]; }

# The edge scenario compares Dispatch with HAProxy only: nginx's free edition cannot verify a JWT.
edge_proxies() {
    [[ $SCENARIO == edge ]] || return 0
    if want nginx; then
        log "SCENARIO=edge: nginx is left out (its free edition has no JWT verification)"
        PROXIES=$(tr ' ' '\n' <<<"$PROXIES" | grep -vx nginx | xargs || true)
    fi
    local n
    for n in $EDGE_TOKENS; do
        [[ $n =~ ^[1-9][0-9]*$ ]] || die "EDGE_TOKENS: '$n' is not a positive number of tokens"
    done
    [[ -n $EDGE_TOKENS ]] || die "EDGE_TOKENS is empty"
}

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
# run_load OUT COMMAND ARGS...: the same for any load generator (seqload).
WRK_PID=""
run_wrk() {
    local out=$1
    shift
    run_load "$out" wrk "$@"
}
run_load() {
    local out=$1 rc=0
    shift
    "$@" >"$out" 2>&1 &
    WRK_PID=$!
    wait "$WRK_PID" || rc=$?
    WRK_PID=""
    return "$rc"
}

port_free() { ! ss -Htln "sport = :$1" | grep -q .; }

# Extra curl arguments of every readiness check (edge: a valid token, which the upstream ignores;
# tls: trust only the run's certificate).
CURL_AUTH=()

# wait_ready NAME PORT: the server answers 200 with the upstream's body, or we stop here.
wait_ready() {
    local name=$1 port=$2 pid=${ROOT_PID[$1]} body scheme=$SCHEME
    # The upstream is plain HTTP in every scenario.
    [[ $name != upstream ]] || scheme=http
    for _ in $(seq 100); do
        if ! kill -0 "$pid" 2>/dev/null; then
            log "--- $name exited during start-up; its log:"
            tail -n 30 "$TMP/$name"/logs/*.log >&2 2>/dev/null || true
            die "$name did not start"
        fi
        if body=$(curl -fsS --max-time 1 "${CURL_AUTH[@]}" "$scheme://127.0.0.1:$port$REQUEST_PATH" 2>/dev/null); then
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

# nginx's config: perf/peers/nginx-$SCENARIO.conf if there is one (cache), else the plain proxy.
NGINX_CONFIG=$PEERS/nginx-proxy.conf
[[ ! -f $PEERS/nginx-$SCENARIO.conf ]] || NGINX_CONFIG=$PEERS/nginx-$SCENARIO.conf

HAPROXY_CONFIG=$PEERS/haproxy.cfg
[[ ! -f $PEERS/haproxy-$SCENARIO.cfg ]] || HAPROXY_CONFIG=$PEERS/haproxy-$SCENARIO.cfg

start_haproxy() {
    local prefix=$TMP/haproxy
    mkdir -p "$prefix/logs"
    haproxy -c -q -f "$HAPROXY_CONFIG" || die "haproxy rejected $HAPROXY_CONFIG"
    # -db: stay in the foreground, no daemon, no pid file.
    haproxy -db -f "$HAPROXY_CONFIG" >"$prefix/logs/stdout.log" 2>&1 &
    ROOT_PID[haproxy]=$!
    CHILDREN+=($!)
}

# start_varnish: Varnish in front of the upstream with the built-in VCL (it caches what the
# upstream's Cache-Control allows, GETs without Cookie or Authorization), in the foreground (-F)
# so that it is this script's child; its manager process forks the child that serves, and
# both are counted. thread_pools=2 matches the 2-core budget of the others; -j none: no jail
# (no user switch, the work dir stays in this script's temp dir); -T none: no CLI port.
start_varnish() {
    local prefix=$TMP/varnish
    mkdir -p "$prefix/logs"
    varnishd -F -j none -T none -n "$prefix/work" -a "127.0.0.1:${PORT[varnish]}" \
        -b "127.0.0.1:$UPSTREAM_PORT" -s malloc,256m -p thread_pools=2 \
        >"$prefix/logs/stdout.log" 2>&1 &
    ROOT_PID[varnish]=$!
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
        -e "s/127\.0\.0\.1:$DISPATCH_PLAIN_PORT/127.0.0.1:$DISPATCH_B_PLAIN_PORT/" \
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
        nginx) start_nginx nginx "$NGINX_CONFIG" ;;
        haproxy) start_haproxy ;;
        varnish) start_varnish ;;
        *) die "unknown proxy '$1' in PROXIES (known: dispatch nginx haproxy varnish)" ;;
    esac
}

# --------------------------------------------------------------------------------------------
# SCENARIO=edge: key pair, tokens, configs beside them, and proof that each proxy verifies
# --------------------------------------------------------------------------------------------
EDGE_DIR=""
DISPATCH_CONFIG_SHOWN=""

# prepare_edge: everything the edge scenario needs, made fresh in the temp dir (never committed).
prepare_edge() {
    EDGE_DIR=$TMP/edge
    mkdir -p "$EDGE_DIR"
    local n max=0 t0 t1
    for n in $EDGE_TOKENS; do ((n <= max)) || max=$n; done
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$EDGE_DIR/jwt.key.pem" 2>"$EDGE_DIR/openssl.log" \
        || { cat "$EDGE_DIR/openssl.log" >&2; die "openssl could not make an RSA key"; }
    openssl pkey -in "$EDGE_DIR/jwt.key.pem" -pubout -out "$EDGE_DIR/jwt.pub.pem" 2>"$EDGE_DIR/openssl.log" \
        || { cat "$EDGE_DIR/openssl.log" >&2; die "openssl could not write the public key"; }
    t0=$(date +%s%N)
    "$PYTHON" "$PERF_DIR/tools/jwt-tokens.py" "$EDGE_DIR" "$max" --issuer perf --audience dispatch \
        || die "perf/tools/jwt-tokens.py failed"
    t1=$(date +%s%N)
    log "edge: RSA 2048 key pair and $max RS256 tokens made in $EDGE_DIR ($(((t1 - t0) / 1000000)) ms to sign)"
    # Dispatch's `keys = "edge/jwt.pub.pem"` is relative to its config file's directory, so the
    # config runs from a copy in the temp dir; HAProxy's needs the absolute path in its text.
    if want dispatch; then
        DISPATCH_CONFIG_SHOWN="$DISPATCH_CONFIG (run from a copy beside the generated key)"
        cp "$DISPATCH_CONFIG" "$TMP/dispatch-edge.toml"
        DISPATCH_CONFIG=$TMP/dispatch-edge.toml
    fi
    sed "s#@EDGE_DIR@#$EDGE_DIR#g" "$HAPROXY_CONFIG" >"$TMP/haproxy-edge.cfg"
    HAPROXY_CONFIG=$TMP/haproxy-edge.cfg
    CURL_AUTH=(-H "Authorization: Bearer $(head -n 1 "$EDGE_DIR/tokens.txt")")
}

# edge_get PORT [TOKEN]: "STATUS" of GET REQUEST_PATH (with the bearer token when given); the
# headers go to $TMP/edge/headers and the body to $TMP/edge/body.
edge_get() {
    local port=$1 token=${2:-} auth=()
    [[ -z $token ]] || auth=(-H "Authorization: Bearer $token")
    curl -s --max-time 2 -D "$EDGE_DIR/headers" -o "$EDGE_DIR/body" -w '%{http_code}' \
        "${auth[@]}" "http://127.0.0.1:$port$REQUEST_PATH" || true
}

# check_edge NAME PORT: the proxy really authenticates before it is measured: 401 without a
# token and for each bad token (a different key's signature, expired, wrong iss, wrong aud,
# HS256 keyed with the public key), 200 with the upstream's body for valid tokens (the first,
# the last and 20 at random). Dispatch's answers must carry RateLimit-Limit, or its route's
# limit is not there to measure.
check_edge() {
    local name=$1 port=$2 status bad token checked=0
    status=$(edge_get "$port")
    [[ $status == 401 ]] || die "$name answered $status, not 401, to a request without a token"
    for bad in "$EDGE_DIR"/bad-*.jwt; do
        status=$(edge_get "$port" "$(<"$bad")")
        [[ $status == 401 ]] || die "$name answered $status, not 401, to $(basename "$bad") (it does not verify what it should)"
    done
    while read -r token; do
        status=$(edge_get "$port" "$token")
        [[ $status == 200 ]] && grep -q '"Ada Lovelace"' "$EDGE_DIR/body" \
            || die "$name answered $status to a valid token ($(cut -c1-60 <<<"$token")...): $(head -c 300 "$EDGE_DIR/body")"
        if [[ $name == dispatch* ]] && ! grep -qi '^ratelimit-limit:' "$EDGE_DIR/headers"; then
            die "$name's answer has no RateLimit-Limit header: the route's rate limit is not applied"
        fi
        checked=$((checked + 1))
    done < <(head -n 1 "$EDGE_DIR/tokens.txt"; tail -n 1 "$EDGE_DIR/tokens.txt"; shuf -n 20 "$EDGE_DIR/tokens.txt")
    log "edge: $name answers 200 to $checked valid tokens and 401 without a token and to the $(find "$EDGE_DIR" -name 'bad-*.jwt' | wc -l) bad ones ($(cd "$EDGE_DIR" && echo bad-*.jwt | sed 's/bad-//g; s/\.jwt//g'))"
}

# --------------------------------------------------------------------------------------------
# SCENARIO=tls: one certificate for all three proxies, configs that point at it
# --------------------------------------------------------------------------------------------
TLS_DIR=""

# prepare_tls: an ECDSA P-256 key and a self-signed certificate made for this run (never
# committed), and the three configs rewritten to use them from the temp dir.
prepare_tls() {
    TLS_DIR=$TMP/tls
    mkdir -p "$TLS_DIR"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        -keyout "$TLS_DIR/key.pem" -out "$TLS_DIR/cert.pem" 2>"$TLS_DIR/openssl.log" \
        || { cat "$TLS_DIR/openssl.log" >&2; die "openssl could not make the certificate"; }
    # HAProxy takes the chain and the key in one file.
    cat "$TLS_DIR/cert.pem" "$TLS_DIR/key.pem" >"$TLS_DIR/haproxy.pem"
    log "tls: ECDSA P-256 certificate for localhost/127.0.0.1 in $TLS_DIR"
    # Dispatch's `cert = "tls/cert.pem"` is relative to its config file's directory, so the
    # config runs from a copy in the temp dir; nginx's and HAProxy's name the absolute path.
    if want dispatch; then
        DISPATCH_CONFIG_SHOWN="$DISPATCH_CONFIG (run from a copy beside the generated certificate)"
        cp "$DISPATCH_CONFIG" "$TMP/dispatch-tls.toml"
        DISPATCH_CONFIG=$TMP/dispatch-tls.toml
    fi
    sed "s#@TLS_DIR@#$TLS_DIR#g" "$NGINX_CONFIG" >"$TMP/nginx-tls.conf"
    NGINX_CONFIG=$TMP/nginx-tls.conf
    sed "s#@TLS_DIR@#$TLS_DIR#g" "$HAPROXY_CONFIG" >"$TMP/haproxy-tls.cfg"
    HAPROXY_CONFIG=$TMP/haproxy-tls.cfg
    CURL_AUTH=(--cacert "$TLS_DIR/cert.pem" --tlsv1.3)
}

# check_tls NAME PORT: the proxy serves the run's certificate over TLS 1.3 with ALPN http/1.1.
check_tls() {
    local name=$1 port=$2 info
    info=$(openssl s_client -connect "127.0.0.1:$port" -servername localhost -alpn http/1.1 \
        -CAfile "$TLS_DIR/cert.pem" </dev/null 2>/dev/null) || true
    [[ $info == *"Protocol: TLSv1.3"* || $info == *"New, TLSv1.3"* ]] \
        || die "$name does not speak TLS 1.3 on 127.0.0.1:$port"
    [[ $info == *"ALPN protocol: http/1.1"* ]] || die "$name did not choose ALPN http/1.1"
    [[ $info == *"Verify return code: 0 (ok)"* ]] || die "$name does not serve the run's certificate"
    log "tls: $name serves the run's certificate over TLS 1.3 with ALPN http/1.1"
}

# --------------------------------------------------------------------------------------------
# SCENARIO=cache: proof that each proxy answers from its cache, and the upstream's request count
# --------------------------------------------------------------------------------------------
# The upstream logs every request for /cache/... to this file, one line each (no buffering).
UPSTREAM_CACHE_LOG=""
# Upstream requests per proxy: at start-up and checks, during its warm-up(s).
declare -A UP_SETUP=() UP_WARM=()

upstream_count() {
    [[ $SCENARIO == cache ]] || { echo 0; return 0; }
    [[ -f $UPSTREAM_CACHE_LOG ]] || die "the upstream's cache access log is missing: $UPSTREAM_CACHE_LOG"
    wc -l <"$UPSTREAM_CACHE_LOG"
}

# header_value FILE NAME: the value of the last NAME header in a curl -D dump (case-insensitive).
header_value() {
    awk -v n="$2" 'BEGIN { n = tolower(n) } { sub(/\r$/, "") }
        tolower(substr($0, 1, length(n) + 1)) == n ":" { v = substr($0, length(n) + 2); sub(/^[ \t]+/, "", v) }
        END { print v }' "$1"
}

# prepare_cache: the upstream's own answer, which every proxy's must equal byte for byte.
prepare_cache() {
    local dir=$TMP/cache-check cc
    mkdir -p "$dir"
    UPSTREAM_CACHE_LOG=$TMP/upstream/logs/cache-access.log
    curl -fsS --max-time 3 -D "$dir/upstream.headers" -o "$dir/upstream.body" "http://127.0.0.1:$UPSTREAM_PORT$REQUEST_PATH" \
        || die "the upstream does not answer $REQUEST_PATH"
    cc=$(header_value "$dir/upstream.headers" cache-control)
    [[ $cc == "max-age=3600" ]] || die "the upstream's $REQUEST_PATH has Cache-Control '$cc', not max-age=3600 (REQUEST_PATH must be under /cache/)"
    [[ $(wc -c <"$dir/upstream.body") == 2048 ]] || die "the upstream's $REQUEST_PATH body is not 2,048 bytes"
    upstream_count >/dev/null
}

# check_cache NAME PORT: before anything is measured, two GETs of REQUEST_PATH on one connection
# (curl reuses it; one connection stays on one Dispatch worker, whose cache shard is its own):
# both 200 with the upstream's exact body, the second a hit by the proxy's own account.
check_cache() {
    local name=$1 port=$2 dir=$TMP/cache-check/$1 status first second ids age
    mkdir -p "$dir"
    status=$(curl -s --max-time 3 -D "$dir/h1" -o "$dir/b1" -w '%{http_code} ' "http://127.0.0.1:$port$REQUEST_PATH" \
        --next -s --max-time 3 -D "$dir/h2" -o "$dir/b2" -w '%{http_code}' "http://127.0.0.1:$port$REQUEST_PATH") || true
    [[ $status == "200 200" ]] || die "$name answered '$status', not '200 200', to two GETs of $REQUEST_PATH"
    cmp -s "$dir/b1" "$TMP/cache-check/upstream.body" \
        || die "$name's first answer is not the upstream's body byte for byte (see $dir/b1)"
    cmp -s "$dir/b2" "$TMP/cache-check/upstream.body" \
        || die "$name's second answer (the hit) is not the upstream's body byte for byte (see $dir/b2)"
    age=$(header_value "$dir/h2" age)
    case $name in
        dispatch*)
            first=$(header_value "$dir/h1" x-cache)
            second=$(header_value "$dir/h2" x-cache)
            [[ $first == HIT || $first == MISS ]] || die "$name's first answer has X-Cache '$first', not MISS or HIT (is the route's cache on?)"
            [[ $second == HIT ]] || die "$name's second answer has X-Cache '$second', not HIT"
            [[ $age =~ ^[0-9]+$ ]] || die "$name's hit has no Age header"
            first="X-Cache $first" second="X-Cache $second, Age $age"
            ;;
        nginx | haproxy)
            first=$(header_value "$dir/h1" x-cache-status)
            second=$(header_value "$dir/h2" x-cache-status)
            [[ $second == HIT ]] || die "$name's second answer has X-Cache-Status '$second', not HIT"
            first="X-Cache-Status $first" second="X-Cache-Status $second"
            ;;
        varnish)
            # X-Varnish holds this request's id and, on a hit, the id of the request that stored it.
            first="X-Varnish '$(header_value "$dir/h1" x-varnish)'"
            ids=$(header_value "$dir/h2" x-varnish)
            second="X-Varnish '$ids', Age $age"
            [[ $ids =~ ^[0-9]+\ [0-9]+$ ]] || die "varnish's second answer has X-Varnish '$ids', not two ids (not a hit)"
            [[ $age =~ ^[0-9]+$ ]] || die "varnish's hit has no Age header"
            ;;
        *) die "no cache check for '$name'" ;;
    esac
    log "cache: $name answers the upstream's 2 KiB body; first answer: $first; second: $second"
}

# --------------------------------------------------------------------------------------------
# SCENARIO=aggregate: the runs, seqload, and proof that every answer is the whole composite
# --------------------------------------------------------------------------------------------
AGG_COMPOSITE_PATH=/api/v1/dashboard/u_1
# The dashboard's three calls as a client makes them itself, and what each of the upstream's
# answers (perf/peers/nginx-upstream.conf) contains, which every body of that step is checked for.
AGG_PATHS=(/users/u_1 /accounts/u_1/balance "/transactions?userId=u_1&limit=5")
AGG_EXPECT=('"Ada Lovelace"' '"available":1250.5' '"t_101"')
# The composite's body must hold the three results and say that none took its default.
AGG_COMPOSITE_EXPECT=('"partial":false' '"Ada Lovelace"' '"available":1250.5' '"t_101"')
# Which proxy serves each run (and whose CPU it is charged).
declare -A RUN_PROXY=([composite]=dispatch [nginx-seq]=nginx [single]=dispatch [dispatch-seq]=dispatch)
AGG_INVALID=0

want_run() { [[ " $AGGREGATE_RUNS " == *" $1 "* ]]; }

# aggregate_proxies: PROXIES = the proxies the runs need, in the order the runs first name them.
aggregate_proxies() {
    [[ $SCENARIO == aggregate ]] || return 0
    [[ -z $DISPATCH_B ]] || die "DISPATCH_B is not supported with SCENARIO=aggregate"
    [[ $RELOAD_EVERY == 0 ]] || die "RELOAD_EVERY is not supported with SCENARIO=aggregate"
    [[ -n ${AGGREGATE_RUNS// /} ]] || die "AGGREGATE_RUNS is empty"
    local run proxies=""
    for run in $AGGREGATE_RUNS; do
        [[ -n ${RUN_PROXY[$run]:-} ]] || die "AGGREGATE_RUNS: unknown run '$run' (known: composite nginx-seq single dispatch-seq)"
        [[ " $proxies " == *" ${RUN_PROXY[$run]} "* ]] || proxies="$proxies ${RUN_PROXY[$run]}"
    done
    proxies=$(xargs <<<"$proxies")
    if [[ -n $PROXIES_GIVEN && $PROXIES_GIVEN != "$proxies" ]]; then
        log "SCENARIO=aggregate: PROXIES=\"$PROXIES_GIVEN\" is ignored; AGGREGATE_RUNS needs \"$proxies\""
    fi
    PROXIES=$proxies
}

# aggregate_runs: after pick_dispatch, leave out the runs of a proxy that is not measured (no
# Dispatch binary), and build seqload.
aggregate_runs() {
    [[ $SCENARIO == aggregate ]] || return 0
    local run kept=""
    for run in $AGGREGATE_RUNS; do
        if want "${RUN_PROXY[$run]}"; then
            kept="$kept $run"
        else
            log "*** SCENARIO=aggregate: run '$run' left out (${RUN_PROXY[$run]} is not measured)"
        fi
    done
    AGGREGATE_RUNS=$(xargs <<<"$kept")
    [[ -n $AGGREGATE_RUNS ]] || die "nothing to measure"
    if [[ -n $SEQLOAD ]]; then
        [[ -x $SEQLOAD ]] || die "SEQLOAD=$SEQLOAD is not an executable file"
        return 0
    fi
    command -v cargo >/dev/null \
        || die "SCENARIO=aggregate builds perf/tools/seqload with cargo, which is not on PATH (or set SEQLOAD=/path/to/seqload)"
    log "building perf/tools/seqload: cargo build --release"
    cargo build --release --quiet --manifest-path "$PERF_DIR/tools/seqload/Cargo.toml" \
        --target-dir "$PERF_DIR/tools/seqload/target" || die "perf/tools/seqload did not build"
    SEQLOAD=$PERF_DIR/tools/seqload/target/release/seqload
}

# check_aggregate: before anything is measured, Dispatch's composite is the whole dashboard, and
# every proxy answers each of the three paths 200 with the upstream's body.
check_aggregate() {
    local dir=$TMP/aggregate-check status ctype meta text proxy i
    mkdir -p "$dir"
    if want_run composite; then
        status=$(curl -s --max-time 5 -D "$dir/composite.headers" -o "$dir/composite.body" -w '%{http_code}' \
            "http://127.0.0.1:${PORT[dispatch]}$AGG_COMPOSITE_PATH") || true
        [[ $status == 200 ]] || die "dispatch answered $status, not 200, to GET $AGG_COMPOSITE_PATH (does $DISPATCH_BIN have aggregates?): $(head -c 400 "$dir/composite.body" 2>/dev/null)"
        ctype=$(header_value "$dir/composite.headers" content-type)
        [[ ${ctype,,} == application/json* ]] || die "dispatch's composite answer has Content-Type '$ctype', not application/json"
        jq -e '(.profile | type) == "object" and .profile.name == "Ada Lovelace"
               and (.balance | type) == "object" and .balance.available == 1250.5
               and (.recentTransactions | type) == "array" and (.recentTransactions | length) == 5
               and .recentTransactions[4].id == "t_101"
               and (._meta | type) == "object" and ._meta.partial == false' "$dir/composite.body" >/dev/null \
            || die "dispatch's composite answer is not the whole dashboard (profile, balance, 5 recentTransactions, _meta.partial false): $(head -c 600 "$dir/composite.body")"
        for text in "${AGG_COMPOSITE_EXPECT[@]}"; do
            grep -qF -- "$text" "$dir/composite.body" \
                || die "dispatch's composite answer is right but does not contain $text, which seqload looks for in every answer (AGG_COMPOSITE_EXPECT in perf/compare.sh): $(head -c 600 "$dir/composite.body")"
        done
        meta=$(jq -c '._meta' "$dir/composite.body")
        log "aggregate: dispatch's composite is 200 JSON with profile, balance and 5 recentTransactions; _meta $meta"
    fi
    for proxy in $PROXIES; do
        for i in 0 1 2; do
            status=$(curl -s --max-time 3 -o "$dir/$proxy-$i.body" -w '%{http_code}' \
                "http://127.0.0.1:${PORT[$proxy]}${AGG_PATHS[i]}") || true
            [[ $status == 200 ]] || die "$proxy answered $status, not 200, to GET ${AGG_PATHS[i]}: $(head -c 300 "$dir/$proxy-$i.body" 2>/dev/null)"
            grep -qF -- "${AGG_EXPECT[i]}" "$dir/$proxy-$i.body" \
                || die "$proxy's answer to GET ${AGG_PATHS[i]} is not the upstream's (no ${AGG_EXPECT[i]}): $(head -c 300 "$dir/$proxy-$i.body")"
        done
        log "aggregate: $proxy answers 200 with the upstream's body to each of ${AGG_PATHS[*]}"
    done
}

# seqload_args RUN: SEQ_ARGS = RUN's URLs and the body checks of each step.
SEQ_ARGS=()
seqload_args() {
    local run=$1 base=http://127.0.0.1:${PORT[${RUN_PROXY[$1]}]} text i
    SEQ_ARGS=()
    case $run in
        composite)
            for text in "${AGG_COMPOSITE_EXPECT[@]}"; do SEQ_ARGS+=(--expect "1:$text"); done
            SEQ_ARGS+=("$base$AGG_COMPOSITE_PATH")
            ;;
        single)
            SEQ_ARGS=(--expect "1:${AGG_EXPECT[0]}" "$base${AGG_PATHS[0]}")
            ;;
        nginx-seq | dispatch-seq)
            for i in 0 1 2; do SEQ_ARGS+=(--expect "$((i + 1)):${AGG_EXPECT[i]}"); done
            SEQ_ARGS+=("$base${AGG_PATHS[0]}" "${AGG_PATHS[1]}" "${AGG_PATHS[2]}")
            ;;
        *) die "no seqload arguments for run '$run'" ;;
    esac
}

# seqload_field FILE KEY: one value of seqload's summary line.
seqload_field() {
    awk -v k="$2" '$1 == "seqload:" && $2 ~ /^connections=/ {
        for (i = 2; i <= NF; i++) { j = index($i, "="); if (j && substr($i, 1, j - 1) == k) print substr($i, j + 1) } }' "$1"
}

# describe_run RUN: what one composite of RUN is.
describe_run() {
    case $1 in
        composite) echo "Dispatch: GET $AGG_COMPOSITE_PATH (the dashboard aggregate: 3 upstream calls)" ;;
        nginx-seq) echo "nginx: GET ${AGG_PATHS[*]}, one after another on one connection" ;;
        single) echo "Dispatch: GET ${AGG_PATHS[0]} (one proxied request: the baseline)" ;;
        dispatch-seq) echo "Dispatch: GET ${AGG_PATHS[*]}, one after another on one connection" ;;
    esac
}

# measure_seq ROUND RUN: one seqload run, one row in results.tsv, one line of the table.
# results.tsv columns as measure's, rate = composites/s and CPU per composite; then
# 16 requests and 17 CPU us per client request.
measure_seq() {
    local round=$1 run=$2 proxy=${RUN_PROXY[$2]}
    local out=$TMP/seqload-$round-$run.txt
    local u_before s_before u_after s_after up_before up_after before after
    seqload_args "$run"
    read -r u_before s_before <<<"$(cpu_ticks "${ROOT_PID[$proxy]}")"
    up_before=$(cpu_ticks "${ROOT_PID[upstream]}" | awk '{ print $1 + $2 }')
    # `times` must run in this shell, not in a $(...) subshell, to see seqload as its child.
    times >"$TMP/times.before"
    run_load "$out" "$SEQLOAD" -c "$CONNECTIONS" -d "$DURATION" "${SEQ_ARGS[@]}" \
        || { cat "$out" >&2; die "seqload failed against $run"; }
    times >"$TMP/times.after"
    read -r u_after s_after <<<"$(cpu_ticks "${ROOT_PID[$proxy]}")"
    up_after=$(cpu_ticks "${ROOT_PID[upstream]}" | awk '{ print $1 + $2 }')
    before=$((u_before + s_before))
    after=$((u_after + s_after))

    local composites requests rate p50 p99 errors secs
    composites=$(seqload_field "$out" composites)
    requests=$(seqload_field "$out" requests)
    rate=$(seqload_field "$out" composites_per_s)
    p50=$(awk -v v="$(seqload_field "$out" p50_us)" 'BEGIN { printf "%.3f", v / 1000 }')
    p99=$(awk -v v="$(seqload_field "$out" p99_us)" 'BEGIN { printf "%.3f", v / 1000 }')
    secs=$(seqload_field "$out" duration_s)
    [[ -n $composites && $composites -gt 0 && -n $secs ]] || { cat "$out" >&2; die "seqload completed no composite against $run"; }
    # Answers other than 200, bodies without what they must hold, socket errors: all invalid.
    errors=$(($(seqload_field "$out" non200) + $(seqload_field "$out" check_failures) + $(seqload_field "$out" errors)))

    local cpu_us user_us sys_us req_us cpu_pct up_pct load_pct
    load_pct=$(awk -v s="$secs" 'FNR == 2 { t = 0; for (i = 1; i <= 2; i++) { split($i, a, "m"); sub(/s$/, "", a[2]); t += a[1] * 60 + a[2] }
                                   if (NR == FNR) b = t; else e = t }
                       END { printf "%.0f", (e - b) / s * 100 }' "$TMP/times.before" "$TMP/times.after")
    cpu_us=$(awk -v d=$((after - before)) -v hz="$CLK_TCK" -v n="$composites" 'BEGIN { printf "%.2f", d * 1e6 / hz / n }')
    user_us=$(awk -v d=$((u_after - u_before)) -v hz="$CLK_TCK" -v n="$composites" 'BEGIN { printf "%.2f", d * 1e6 / hz / n }')
    sys_us=$(awk -v d=$((s_after - s_before)) -v hz="$CLK_TCK" -v n="$composites" 'BEGIN { printf "%.2f", d * 1e6 / hz / n }')
    req_us=$(awk -v d=$((after - before)) -v hz="$CLK_TCK" -v n="$requests" 'BEGIN { printf "%.2f", d * 1e6 / hz / n }')
    cpu_pct=$(awk -v d=$((after - before)) -v hz="$CLK_TCK" -v s="$secs" 'BEGIN { printf "%.0f", d / hz / s * 100 }')
    up_pct=$(awk -v d=$((up_after - up_before)) -v hz="$CLK_TCK" -v s="$secs" 'BEGIN { printf "%.0f", d / hz / s * 100 }')

    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
        "$round" "$run" "$rate" "$p50" "$p99" "$cpu_us" "$cpu_pct" "$up_pct" "$load_pct" "$errors" "$user_us" "$sys_us" \
        "$LOAD" "$composites" 0 "$requests" "$req_us" >>"$RESULTS"
    printf '| %5s | %-12s | %-8s | %12s | %7s | %7s | %10s | %7s | %6s | %10s | %8s%% | %11s%% | %10s%% | %6s |\n' \
        "$round" "$run" "$proxy" "$rate" "$p50" "$p99" "$cpu_us" "$user_us" "$sys_us" "$req_us" "$cpu_pct" "$up_pct" "$load_pct" "$errors"
    if ((errors != 0)); then
        AGG_INVALID=1
        log "*** INVALID RUN: $run (round $round): $(seqload_field "$out" non200) answers not 200, $(seqload_field "$out" check_failures) bodies without what they must hold, $(seqload_field "$out" errors) socket errors; $(grep '^seqload: step=' "$out" | sed 's/^seqload: //' | paste -sd ';' -); see $out"
    fi
    if ((up_pct >= 90)); then
        log "WARNING: the upstream nginx worker used ${up_pct}% of a core during this run: it may be the bottleneck"
    fi
}

# verdict RATIO BAR: "met (N% under the bar)" or "NOT met: N% over the bar".
verdict() {
    awk -v r="$1" -v b="$2" 'BEGIN {
        if (r == "n/a") print "no ratio"
        else if (r + 0 <= b + 0) printf "met (%.0f%% under the bar)", (1 - r / b) * 100
        else printf "NOT met: %.0f%% over the bar", (r / b - 1) * 100 }'
}

# aggregate_rounds: warm-up per run, the interleaved rounds, the summary with issue 11's bars.
aggregate_rounds() {
    local run out round order
    for run in $AGGREGATE_RUNS; do
        seqload_args "$run"
        out=$TMP/seqload-warmup-$run.txt
        run_load "$out" "$SEQLOAD" -c "$CONNECTIONS" -d "$WARMUP" "${SEQ_ARGS[@]}" \
            || { cat "$out" >&2; die "seqload failed against $run during the warm-up"; }
        if (($(seqload_field "$out" non200) + $(seqload_field "$out" check_failures) + $(seqload_field "$out" errors))); then
            log "WARNING: the warm-up of $run had failures: $(head -n 1 "$out")"
        fi
    done
    echo "- warmed: $AGGREGATE_RUNS ($WARMUP each)"
    echo
    echo "### Runs"
    echo
    echo "| round | run          | proxy    | composites/s |  p50 ms |  p99 ms | CPU us/cmp | user us | sys us | CPU us/req | proxy CPU | upstream CPU | seqload CPU | errors |"
    echo "| ----: | ------------ | -------- | -----------: | ------: | ------: | ---------: | ------: | -----: | ---------: | --------: | -----------: | ----------: | -----: |"
    for round in $(seq "$ROUNDS"); do
        if ((round % 2)); then order=$AGGREGATE_RUNS; else order=$(tr ' ' '\n' <<<"$AGGREGATE_RUNS" | tac | xargs); fi
        for run in $order; do
            measure_seq "$round" "$run"
        done
    done
    aggregate_summary
}

aggregate_summary() {
    local run
    declare -A rate p50 p99 cpu usr sys req
    echo
    echo "### Summary: median of $ROUNDS round(s), $DURATION each, $CONNECTIONS connections"
    echo
    echo "| run          | proxy    | composites/s |  p50 ms |  p99 ms | CPU us/cmp | user us | sys us | CPU us/req |"
    echo "| ------------ | -------- | -----------: | ------: | ------: | ---------: | ------: | -----: | ---------: |"
    for run in $AGGREGATE_RUNS; do
        rate[$run]=$(median 3 "$run")
        p50[$run]=$(median 4 "$run")
        p99[$run]=$(median 5 "$run")
        cpu[$run]=$(median 6 "$run")
        usr[$run]=$(median 11 "$run")
        sys[$run]=$(median 12 "$run")
        req[$run]=$(median 17 "$run")
        printf '| %-12s | %-8s | %12.0f | %7.3f | %7.3f | %10.2f | %7.2f | %6.2f | %10.2f |\n' \
            "$run" "${RUN_PROXY[$run]}" "${rate[$run]}" "${p50[$run]}" "${p99[$run]}" "${cpu[$run]}" "${usr[$run]}" "${sys[$run]}" "${req[$run]}"
    done
    echo
    echo "Issue 11's bars (medians):"
    echo
    local r
    if want_run composite && want_run nginx-seq; then
        r=$(ratio "${p99[composite]}" "${p99[nginx-seq]}")
        printf -- '- p99: Dispatch composite %s ms / nginx sequential %s ms = %s; bar: at most 1.00x: %s\n' \
            "${p99[composite]}" "${p99[nginx-seq]}" "$r" "$(verdict "$r" 1.00)"
    else
        echo "- p99: not measured (needs the runs composite and nginx-seq)"
    fi
    if want_run composite && want_run single; then
        r=$(ratio "${cpu[composite]}" "${cpu[single]}")
        printf -- '- CPU: Dispatch per composite %s us / per single proxied request %s us = %s (user %s, system %s); bar: at most 2.50x: %s\n' \
            "${cpu[composite]}" "${cpu[single]}" "$r" \
            "$(ratio "${usr[composite]}" "${usr[single]}")" "$(ratio "${sys[composite]}" "${sys[single]}")" \
            "$(verdict "$r" 2.50)"
    else
        echo "- CPU: not measured (needs the runs composite and single)"
    fi
    echo
    echo "Other ratios (per composite):"
    echo
    local any=0
    if want_run composite && want_run nginx-seq; then
        printf -- '- Dispatch composite / nginx sequential: CPU %s (user %s, system %s), composites/s %s\n' \
            "$(ratio "${cpu[composite]}" "${cpu[nginx-seq]}")" "$(ratio "${usr[composite]}" "${usr[nginx-seq]}")" \
            "$(ratio "${sys[composite]}" "${sys[nginx-seq]}")" "$(ratio "${rate[composite]}" "${rate[nginx-seq]}")"
        any=1
    fi
    if want_run composite && want_run dispatch-seq; then
        printf -- '- Dispatch composite / Dispatch sequential: CPU %s (user %s, system %s), p99 %s, composites/s %s\n' \
            "$(ratio "${cpu[composite]}" "${cpu[dispatch-seq]}")" "$(ratio "${usr[composite]}" "${usr[dispatch-seq]}")" \
            "$(ratio "${sys[composite]}" "${sys[dispatch-seq]}")" "$(ratio "${p99[composite]}" "${p99[dispatch-seq]}")" \
            "$(ratio "${rate[composite]}" "${rate[dispatch-seq]}")"
        any=1
    fi
    if want_run dispatch-seq && want_run nginx-seq; then
        printf -- '- Dispatch sequential / nginx sequential: CPU %s (user %s, system %s), p99 %s\n' \
            "$(ratio "${cpu[dispatch-seq]}" "${cpu[nginx-seq]}")" "$(ratio "${usr[dispatch-seq]}" "${usr[nginx-seq]}")" \
            "$(ratio "${sys[dispatch-seq]}" "${sys[nginx-seq]}")" "$(ratio "${p99[dispatch-seq]}" "${p99[nginx-seq]}")"
        any=1
    fi
    ((any)) || echo "- (none for these runs)"
    if ((AGG_INVALID)); then
        echo
        echo "**INVALID: some run had answers other than 200, bodies without what they must hold (a partial composite) or socket errors; see the log.**"
    fi
}

# The load of a sub-run: "-" (plain: wrk's own request), or a number of edge tokens.
LOAD="-"
WRK_SCRIPT=()
WRK_SCRIPT_ARGS=()
set_load() {
    LOAD=$1
    if [[ $SCENARIO == tls ]]; then
        WRK_SCRIPT=()
        WRK_SCRIPT_ARGS=()
        # Headers go before the URL, so they ride in WRK_SCRIPT (wrk's options).
        [[ $LOAD != close ]] || WRK_SCRIPT=(-H "Connection: close")
    elif [[ $LOAD == - ]]; then
        WRK_SCRIPT=()
        WRK_SCRIPT_ARGS=()
    else
        WRK_SCRIPT=(-s "$PERF_DIR/edge.lua")
        WRK_SCRIPT_ARGS=(-- "$EDGE_DIR/tokens.txt" "$LOAD")
    fi
}

load_title() {
    if [[ $1 == keepalive ]]; then
        echo "tls, keep-alive: TLS 1.3, one handshake per connection for the whole run"
    elif [[ $1 == close ]]; then
        echo "tls, handshake-heavy: Connection: close on every request, so one full TLS 1.3 handshake per request"
    elif [[ $1 == 1 ]]; then
        echo "edge, warm: 1 token on every request"
    else
        echo "edge, cold: $1 tokens, one picked uniformly at random per request"
    fi
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

RESULTS=""     # results.tsv: round proxy rps p50_ms p99_ms cpu_us_per_req proxy_cpu_pct upstream_cpu_pct wrk_cpu_pct errors user_us_per_req sys_us_per_req load requests upstream_requests (cache: for /cache/...; else 0)
dur_seconds() { # 10s / 1m / 2 -> seconds (for CPU %)
    awk -v d="$1" 'BEGIN { if (d ~ /m$/) { sub(/m$/, "", d); d *= 60 } else if (d ~ /h$/) { sub(/h$/, "", d); d *= 3600 } else sub(/s$/, "", d); print d + 0 }'
}

# measure ROUND NAME DURATION: one wrk run, one row in results.tsv, one line of the table.
measure() {
    local round=$1 name=$2 duration=$3 port=${PORT[$2]}
    local out=$TMP/wrk-$round-$name.txt
    [[ $LOAD == - ]] || out=$TMP/wrk-tokens$LOAD-$round-$name.txt
    local before after up_before up_after u_before s_before u_after s_after
    read -r u_before s_before <<<"$(cpu_ticks "${ROOT_PID[$name]}")"
    up_before=$(cpu_ticks "${ROOT_PID[upstream]}" | awk '{ print $1 + $2 }')
    local up_req_before up_req
    up_req_before=$(upstream_count)
    local reloader=""
    if [[ $name == dispatch && $RELOAD_EVERY != 0 ]]; then
        : >"$TMP/reloads-$round"
        reload_loop "$TMP/reloads-$round" &
        reloader=$!
    fi
    # `times` must run in this shell, not in a $(...) subshell, to see wrk as its child.
    times >"$TMP/times.before"
    run_wrk "$out" -t"$THREADS" -c"$CONNECTIONS" -d"$duration" --latency "${WRK_SCRIPT[@]}" \
        "$SCHEME://127.0.0.1:$port$REQUEST_PATH" "${WRK_SCRIPT_ARGS[@]}" \
        || { cat "$out" >&2; die "wrk failed against $name"; }
    times >"$TMP/times.after"
    if [[ -n $reloader ]]; then
        kill "$reloader" 2>/dev/null || true
        wait "$reloader" 2>/dev/null || true
        log "round $round: $(grep -c '"reloaded"' "$TMP/reloads-$round" || true) reloads during the run ($(grep -vc '"reloaded"' "$TMP/reloads-$round" || true) failed)"
    fi
    read -r u_after s_after <<<"$(cpu_ticks "${ROOT_PID[$name]}")"
    up_after=$(cpu_ticks "${ROOT_PID[upstream]}" | awk '{ print $1 + $2 }')
    up_req=$(($(upstream_count) - up_req_before))
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
    if [[ $SCENARIO == edge ]]; then
        # edge.lua counts every answer that is not a 200 (a 3xx too); with socket errors, that
        # is the count here (wrk's own non-2xx count would count the same answers twice).
        local non200
        non200=$(awk '/^edge.lua: non-200 responses:/ { print $4 }' "$out")
        [[ -n $non200 ]] || { cat "$out" >&2; die "perf/edge.lua printed no count against $name"; }
        errors=$(awk -v b="$non200" '/Socket errors:/ { gsub(/,/, ""); n += $4 + $6 + $8 + $10 }
                                     END { print n + b }' "$out")
    fi
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

    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
        "$round" "$name" "$rps" "$p50" "$p99" "$cpu_us" "$cpu_pct" "$up_pct" "$wrk_pct" "$errors" "$user_us" "$sys_us" \
        "$LOAD" "$total" "$up_req" >>"$RESULTS"
    printf '| %5s | %-10s | %10s | %7s | %7s | %10s | %7s | %7s | %8s%% | %11s%% | %6s%% | %6s |' \
        "$round" "$name" "$rps" "$p50" "$p99" "$cpu_us" "$user_us" "$sys_us" "$cpu_pct" "$up_pct" "$wrk_pct" "$errors"
    if [[ $SCENARIO == cache ]]; then printf ' %13s |\n' "$up_req"; else printf '\n'; fi
    if [[ $SCENARIO == cache ]] && ((up_req * 100 > total)); then
        log "*** INVALID RUN: $up_req of $name's $total requests reached the upstream in round $round: these are not cache hits"
        CACHE_INVALID=1
    fi
    if ((errors != 0)); then
        if [[ $SCENARIO == edge || $SCENARIO == tls ]]; then
            [[ $SCENARIO != tls ]] || TLS_INVALID=1
            log "*** INVALID RUN: $name answered $errors requests with something other than 200 (or with a socket error) in round $round ($(grep '^edge.lua: status' "$out" | sed 's/^edge.lua: //' | xargs)); see $out"
        else
            log "WARNING: $name had $errors errors in round $round (see $out)"
        fi
    fi
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
# median COLUMN PROXY: median over the rounds of one column of results.tsv (rows of this LOAD).
median() {
    awk -F'\t' -v c="$1" -v p="$2" -v l="$LOAD" '$2 == p && $13 == l { print $c }' "$RESULTS" | sort -g | awk '
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
    if [[ $LOAD == - ]]; then
        echo "### Summary: median of $ROUNDS round(s), $DURATION each"
    else
        echo "### Summary ($(load_title "$LOAD")): median of $ROUNDS round(s), $DURATION each"
    fi
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
        for other in nginx haproxy varnish; do
            want "$other" || continue
            case $other in nginx) label=nginx ;; haproxy) label=HAProxy ;; varnish) label=Varnish ;; esac
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
    if want nginx && want varnish; then
        printf -- '- Varnish/nginx    CPU per request %s (user %s, system %s), p99 %s, req/s %s\n' \
            "$(ratio "${cpu[varnish]}" "${cpu[nginx]}")" \
            "$(ratio "${usr[varnish]}" "${usr[nginx]}")" \
            "$(ratio "${sys[varnish]}" "${sys[nginx]}")" \
            "$(ratio "${p99[varnish]}" "${p99[nginx]}")" \
            "$(ratio "${rps[varnish]}" "${rps[nginx]}")"
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
    [[ $SCENARIO != edge ]] || edge_summary "${cpu[dispatch]:-}" "${cpu[haproxy]:-}"
    [[ $SCENARIO != tls ]] || tls_summary "${cpu[dispatch]:-}" "${cpu[nginx]:-}"
    [[ $SCENARIO != cache ]] || cache_summary "${cpu[dispatch]:-}" "${cpu[nginx]:-}" "${cpu[varnish]:-}"
}

# cache_summary DISPATCH_CPU NGINX_CPU VARNISH_CPU: how many requests of each proxy reached the
# upstream (so that the CPU per request above is read as CPU per hit), and issue 12's bars.
CACHE_INVALID=0
cache_summary() {
    local cpu_d=$1 cpu_n=$2 cpu_v=$3 name measured total
    echo
    echo "Upstream requests for $REQUEST_PATH (counted in the upstream's access log):"
    echo
    for name in $PROXIES; do
        measured=$(awk -F'\t' -v p="$name" '$2 == p { n += $15 } END { print n + 0 }' "$RESULTS")
        total=$(awk -F'\t' -v p="$name" '$2 == p { n += $14 } END { print n + 0 }' "$RESULTS")
        printf -- '- %-10s %s at start-up and checks, %s during the warm-up, %s during the measured runs (%s requests)\n' \
            "$name" "${UP_SETUP[$name]:-?}" "${UP_WARM[$name]:-?}" "$measured" "$total"
    done
    want dispatch || return 0
    echo
    echo "Issue 12's bars for Dispatch's CPU per hit (median, user + system):"
    echo
    local other cpu_o bar label r verdict
    for other in nginx varnish; do
        want "$other" || continue
        if [[ $other == nginx ]]; then cpu_o=$cpu_n bar=0.70 label=nginx; else cpu_o=$cpu_v bar=1.00 label=Varnish; fi
        r=$(ratio "$cpu_d" "$cpu_o")
        verdict=$(awk -v r="$r" -v b="$bar" 'BEGIN {
            if (r == "n/a") print "no ratio"
            else if (r + 0 <= b + 0) printf "met (%.0f%% under the bar)", (1 - r / b) * 100
            else printf "NOT met: %.0f%% over the bar", (r / b - 1) * 100 }')
        printf -- '- Dispatch/%s %s us / %s us = %s; bar: at most %sx: %s\n' "$label" "$cpu_d" "$cpu_o" "$r" "$bar" "$verdict"
    done
    if ((CACHE_INVALID)); then
        echo
        echo "**INVALID: in some run more than 1% of the requests reached the upstream; those are not cache hits.**"
    fi
}

# edge_summary DISPATCH_CPU HAPROXY_CPU: for the edge sub-run of this LOAD, the issue's bar, an
# estimate of Dispatch's token-cache misses, and a loud flag when any answer was not a 200.
TLS_VERDICT=()
TLS_INVALID=0
# tls_summary DISPATCH_CPU NGINX_CPU: issue 13's bar for this sub-run: Dispatch's CPU per
# request (keep-alive) or per new TLS connection (close) at most nginx's.
tls_summary() {
    local r verdict line bad
    want dispatch && want nginx || return 0
    bad=$(awk -F'\t' -v l="$LOAD" '$13 == l { n += $10 } END { print n + 0 }' "$RESULTS")
    r=$(ratio "$1" "$2")
    verdict=$(awk -v r="$r" 'BEGIN {
        if (r == "n/a") print "no ratio"
        else if (r + 0 <= 1) printf "met (%.0f%% under the bar)", (1 - r) * 100
        else printf "NOT met: %.0f%% over the bar", (r - 1) * 100 }')
    if [[ $LOAD == close ]]; then
        line="handshake-heavy: Dispatch/nginx CPU per new TLS connection $r; bar (issue 13): at most 1.00x: $verdict"
    else
        line="keep-alive: Dispatch/nginx CPU per request over TLS $r; bar (issue 13): at most 1.00x: $verdict"
    fi
    ((bad == 0)) || line="$line; INVALID: $bad errors"
    echo
    echo "- $line"
    TLS_VERDICT+=("$line")
}

EDGE_VERDICT=()
EDGE_INVALID=0
edge_summary() {
    local cpu_d=$1 cpu_h=$2 bar label r verdict bad line
    if [[ $LOAD == 1 ]]; then bar=0.50 label=warm; else bar=1.00 label=cold; fi
    bad=$(awk -F'\t' -v l="$LOAD" '$13 == l { n += $10 } END { print n + 0 }' "$RESULTS")
    echo
    if want dispatch && want haproxy; then
        r=$(ratio "$cpu_d" "$cpu_h")
        verdict=$(awk -v r="$r" -v b="$bar" 'BEGIN {
            if (r == "n/a") print "no ratio"
            else if (r + 0 <= b + 0) printf "met (%.0f%% under the bar)", (1 - r / b) * 100
            else printf "NOT met: %.0f%% over the bar", (r / b - 1) * 100 }')
        line="$label ($LOAD token(s)): Dispatch/HAProxy CPU per request $r; bar (issue 9): at most ${bar}x: $verdict"
        ((bad == 0)) || line="$line; INVALID: $bad answers were not 200"
        echo "- $line"
        EDGE_VERDICT+=("$line")
    fi
    if want dispatch && ((LOAD > 1)); then
        edge_miss_estimate
    fi
    if ((bad != 0)); then
        EDGE_INVALID=1
        echo
        echo "**INVALID SUB-RUN: $bad answers were not 200 (or were socket errors); these numbers do not measure the edge work.**"
        log "*** INVALID: $label sub-run had $bad answers that were not 200"
    fi
}

# edge_miss_estimate: how many of Dispatch's measured requests in this cold sub-run had to verify
# a signature. When the tokens fit in a worker's cache, each worker keeps every token it
# verified, so it verifies each token once: with picks uniform over N tokens and
# requests spread evenly over W workers, after k requests a worker has verified
# N * (1 - (1 - 1/N)^(k/W)) of them. An estimate (the real split between workers follows the
# connections), printed so nobody reads the cold ratio as "every request verifies".
# A worker's verified-token cache holds this many tokens per policy (TOKEN_CACHE_CAPACITY in
# src/state/worker.rs); with more tokens than that, uniform picks mostly miss.
TOKEN_CACHE_PER_WORKER=16384
edge_miss_estimate() {
    local workers warm measured
    if ((LOAD > TOKEN_CACHE_PER_WORKER)); then
        awk -v n="$LOAD" -v c="$TOKEN_CACHE_PER_WORKER" 'BEGIN {
            printf "- Dispatch token cache (estimate): %d tokens are more than a worker'"'"'s cache holds (%d), so with uniform picks about %.0f%% of requests verify a signature at steady state.\n", n, c, (1 - c / n) * 100 }'
        return 0
    fi
    workers=$(awk -F'=' '/^[[:space:]]*workers[[:space:]]*=/ { gsub(/[^0-9]/, "", $2); print $2; exit }' "$DISPATCH_CONFIG")
    [[ -n $workers ]] || workers=$(nproc)
    warm=$(awk '/ requests in / { print $1 }' "$TMP/wrk-warmup-tokens$LOAD-dispatch.txt")
    measured=$(awk -F'\t' -v l="$LOAD" '$13 == l && $2 == "dispatch" { n += $14 } END { print n + 0 }' "$RESULTS")
    awk -v n="$LOAD" -v w="$workers" -v k0="${warm:-0}" -v k="$measured" 'BEGIN {
        q = 1 - 1 / n
        before = n * w * (1 - q ^ (k0 / w))
        after = n * w * (1 - q ^ ((k0 + k) / w))
        m = after - before
        printf "- Dispatch token cache (estimate: uniform picks over %d tokens, requests even over %d workers, each worker verifies a token once): the warm-up'"'"'s %d requests verified about %.0f tokens; the %d measured requests about %.0f more, %.1f%% of them; the rest were cache hits.\n", n, w, k0, before, k, m, (k ? m / k * 100 : 0)
    }'
}

# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------
main() {
    edge_proxies
    aggregate_proxies
    ensure_tools
    pick_dispatch
    aggregate_runs
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
    for p in "$UPSTREAM_PORT" "${PORT[dispatch]}" "${PORT[nginx]}" "${PORT[haproxy]}" "${PORT[dispatch-b]}" "${PORT[varnish]}" "$DISPATCH_ADMIN_PORT" "$DISPATCH_B_ADMIN_PORT" "$DISPATCH_PLAIN_PORT" "$DISPATCH_B_PLAIN_PORT"; do
        port_free "$p" || die "port 127.0.0.1:$p is in use (stop whatever holds it)"
    done
    [[ $SCENARIO != edge ]] || prepare_edge
    [[ $SCENARIO != tls ]] || prepare_tls
    # nginx started as root runs its workers as `nobody`, and they open the proxy_cache files
    # under $TMP/nginx/temp/cache (which the master creates for them): let them through $TMP.
    [[ $SCENARIO != cache ]] || chmod 0711 "$TMP"

    local cores model
    cores=$(nproc)
    model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
    echo "## perf/compare.sh run"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    if [[ $SCENARIO == edge ]]; then
        echo "- command: ROUNDS=$ROUNDS DURATION=$DURATION WARMUP=$WARMUP SCENARIO=$SCENARIO EDGE_TOKENS=\"$EDGE_TOKENS\" PROXIES=\"$PROXIES\" perf/compare.sh"
    elif [[ $SCENARIO == tls ]]; then
        echo "- command: ROUNDS=$ROUNDS DURATION=$DURATION WARMUP=$WARMUP CONNECTIONS=$CONNECTIONS SCENARIO=$SCENARIO TLS_RUNS=\"$TLS_RUNS\" PROXIES=\"$PROXIES\" perf/compare.sh"
    elif [[ $SCENARIO == aggregate ]]; then
        echo "- command: ROUNDS=$ROUNDS DURATION=$DURATION WARMUP=$WARMUP CONNECTIONS=$CONNECTIONS SCENARIO=$SCENARIO AGGREGATE_RUNS=\"$AGGREGATE_RUNS\" perf/compare.sh"
    else
        echo "- command: ROUNDS=$ROUNDS DURATION=$DURATION WARMUP=$WARMUP SCENARIO=$SCENARIO PROXIES=\"$PROXIES\" RELOAD_EVERY=$RELOAD_EVERY perf/compare.sh"
    fi
    echo "- machine: $cores cores (${model:-unknown cpu}), kernel $(uname -r), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)"
    if [[ $SCENARIO == aggregate ]]; then
        echo "- load: perf/tools/seqload -c$CONNECTIONS -d$DURATION, closed loop: each connection sends its composite's GETs one after another on one keep-alive connection and times the whole; every body checked"
    elif [[ $SCENARIO == edge ]]; then
        echo "- load: wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency -s perf/edge.lua http://127.0.0.1:PORT$REQUEST_PATH -- tokens.txt N, N in: $EDGE_TOKENS"
    elif [[ $SCENARIO == tls ]]; then
        echo "- load: wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency [-H 'Connection: close'] https://127.0.0.1:PORT$REQUEST_PATH, sub-runs: $TLS_RUNS"
        echo "- tls: one ECDSA P-256 self-signed certificate made for the run, TLS 1.3 only, ALPN http/1.1, for all three (perf/peers/*-tls.*); $(openssl version)"
    else
        echo "- load: wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency http://127.0.0.1:PORT$REQUEST_PATH"
    fi
    if [[ $SCENARIO == aggregate ]]; then
        echo "- peers: $(nginx -v 2>&1 | sed 's/.*version: //'), seqload $(git -C "$REPO" log -1 --format=%h -- perf/tools/seqload 2>/dev/null || echo "(uncommitted)")"
    elif [[ $SCENARIO == cache ]]; then
        echo "- peers: $(nginx -v 2>&1 | sed 's/.*version: //'), $(if want varnish; then varnishd -V 2>&1 | awk 'NR == 1 { gsub(/[()]/, ""); print $2 }'; else echo "no Varnish"; fi),$(! want haproxy || haproxy -v | awk 'NR == 1 { print " HAProxy", $3 "," }') $(wrk -v 2>&1 | awk 'NR == 1 { print $1, $2 }')"
    else
        echo "- peers: $(nginx -v 2>&1 | sed 's/.*version: //'), HAProxy $(haproxy -v | awk 'NR == 1 { print $3 }'), $(wrk -v 2>&1 | awk 'NR == 1 { print $1, $2 }')"
    fi
    if want dispatch; then
        echo "- dispatch: $DISPATCH_BIN ($DISPATCH_REV), config ${DISPATCH_CONFIG_SHOWN:-$DISPATCH_CONFIG}"
    fi
    if [[ $SCENARIO == edge ]]; then
        echo "- haproxy: perf/peers/haproxy-edge.cfg (jwt_verify + alg/exp/iss/aud/sub rules, stick-table http_req_rate on sub)"
        echo "- nginx: not in this scenario (its free edition has no JWT verification)"
        echo "- tokens: RS256, RSA 2048 key made for this run, sub user-<i>, iss perf, aud dispatch, exp now + 1 day"
    fi
    if [[ $SCENARIO == cache ]]; then
        echo "- upstream: $REQUEST_PATH answers a 2,048-byte JSON body with Cache-Control: max-age=3600 (perf/peers/nginx-upstream.conf)"
        echo "- nginx: perf/peers/nginx-cache.conf (proxy_cache, proxy_cache_lock on, open_file_cache, 2 workers)"
        echo "- varnish: varnishd -F -b 127.0.0.1:$UPSTREAM_PORT -s malloc,256m -p thread_pools=2, built-in VCL"
        if want haproxy; then
            echo "- haproxy: perf/peers/haproxy-cache.cfg (its cache section, 256 MB, nbthread 2)"
        else
            echo "- haproxy: not measured (name it in PROXIES to add it: perf/peers/haproxy-cache.cfg)"
        fi
    fi
    if [[ $SCENARIO == aggregate ]]; then
        echo "- upstream: /users/u_1, /accounts/u_1/balance and /transactions?userId=u_1&limit=5 answer fixed JSON (perf/peers/nginx-upstream.conf)"
        echo "- nginx: $NGINX_CONFIG (2 workers, upstream keepalive 256), proxying the three paths"
        if want_run composite; then
            echo "- dispatch aggregate: the reference's [aggregates.dashboard] without auth (composition is what is measured; SCENARIO=edge measures JWTs)"
        fi
        echo "- runs (one composite each):"
        local run
        for run in $AGGREGATE_RUNS; do echo "  - $run: $(describe_run "$run")"; done
        echo "- note: nothing is pinned. seqload ($CONNECTIONS threads), the upstream (1 nginx worker) and the proxy"
        echo "  (2 workers) share these $cores cores, so absolute numbers understate every proxy; compare the ratios,"
        echo "  which come from one run on one machine. CPU us/cmp counts only the proxy's own processes per"
        echo "  composite (CPU us/req: per client request, 3 per composite for the sequential runs). In a closed"
        echo "  loop latency follows throughput (mean latency = connections / composites per second)."
        echo
    fi
    if want dispatch-b; then
        echo "- dispatch-b: $DISPATCH_B, same config on port ${PORT[dispatch-b]}"
    fi
    if [[ $SCENARIO != aggregate ]]; then
    echo "- note: nothing is pinned. wrk (1 thread), the upstream (1 nginx worker) and the proxy under"
    echo "  test (2 workers/threads) share these $cores cores, so absolute numbers understate every proxy;"
    echo "  compare the ratios, which come from one run on one machine. CPU us/req counts only the"
    echo "  proxy's own processes; the upstream's CPU % is shown to prove it is not the bottleneck, and"
    echo "  wrk's CPU % shows when the load generator itself is the limit (near 100%: req/s is wrk's"
    echo "  ceiling, not the proxy's; CPU per request and latency stay comparable)."
    echo
    fi

    start_nginx upstream "$PEERS/nginx-upstream.conf"
    wait_ready upstream "$UPSTREAM_PORT"
    PORT[upstream]=$UPSTREAM_PORT
    [[ $SCENARIO != cache ]] || prepare_cache
    local up0
    for p in $PROXIES; do
        up0=$(upstream_count)
        start_proxy "$p"
        wait_ready "$p" "${PORT[$p]}"
        [[ $SCENARIO != edge ]] || check_edge "$p" "${PORT[$p]}"
        [[ $SCENARIO != tls ]] || check_tls "$p" "${PORT[$p]}"
        [[ $SCENARIO != cache ]] || check_cache "$p" "${PORT[$p]}"
        UP_SETUP[$p]=$(($(upstream_count) - up0))
    done
    if [[ $SCENARIO == aggregate ]]; then
        check_aggregate
        # The upstream alone, driven by the same seqload: its ceiling must sit well above any run's.
        seqload_args nginx-seq
        local base=http://127.0.0.1:${PORT[nginx]}
        run_load "$TMP/seqload-upstream.txt" "$SEQLOAD" -c "$CONNECTIONS" -d "$WARMUP" \
            "${SEQ_ARGS[@]/#$base/http://127.0.0.1:$UPSTREAM_PORT}" \
            || { cat "$TMP/seqload-upstream.txt" >&2; die "seqload failed against the upstream"; }
        echo "- upstream alone (nginx, 1 worker, no proxy, the three GETs in turn): $(seqload_field "$TMP/seqload-upstream.txt" composites_per_s) composites/s"
        aggregate_rounds
        if ((AGG_INVALID)); then
            log "compare.sh: some aggregate run had answers other than 200, failed body checks or socket errors: the run is INVALID (exit status 2)"
            exit 2
        fi
        return 0
    fi

    # The upstream alone, driven by the same wrk: its ceiling must sit well above any proxy's rate.
    run_wrk "$TMP/wrk-upstream.txt" -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" "http://127.0.0.1:$UPSTREAM_PORT$REQUEST_PATH"
    echo "- upstream alone (nginx, 1 worker, no proxy): $(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$TMP/wrk-upstream.txt") req/s"

    # One sub-run per load: plain requests, or (edge) each EDGE_TOKENS count in turn, each with
    # its own warm-up, rounds and summary.
    local loads=- load warmup_out
    [[ $SCENARIO != edge ]] || loads=$EDGE_TOKENS
    [[ $SCENARIO != tls ]] || loads=$TLS_RUNS
    for load in $loads; do
        set_load "$load"
        if [[ $LOAD != - ]]; then
            echo
            echo "## $(load_title "$LOAD")"
            echo
        fi
        for p in $PROXIES; do
            warmup_out=$TMP/wrk-warmup-$p.txt
            [[ $LOAD == - ]] || warmup_out=$TMP/wrk-warmup-tokens$LOAD-$p.txt
            up0=$(upstream_count)
            run_wrk "$warmup_out" -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" "${WRK_SCRIPT[@]}" \
                "$SCHEME://127.0.0.1:${PORT[$p]}$REQUEST_PATH" "${WRK_SCRIPT_ARGS[@]}"
            UP_WARM[$p]=$(($(upstream_count) - up0))
        done
        echo "- warmed: $PROXIES ($WARMUP each)"
        echo
        echo "### Runs"
        echo
        if [[ $SCENARIO == cache ]]; then
            echo "| round | proxy      |      req/s |  p50 ms |  p99 ms | CPU us/req | user us | sys us | proxy CPU | upstream CPU | wrk CPU | errors | upstream reqs |"
            echo "| ----: | ---------- | ---------: | ------: | ------: | ---------: | ------: | -----: | --------: | -----------: | ------: | -----: | ------------: |"
        else
            echo "| round | proxy      |      req/s |  p50 ms |  p99 ms | CPU us/req | user us | sys us | proxy CPU | upstream CPU | wrk CPU | errors |"
            echo "| ----: | ---------- | ---------: | ------: | ------: | ---------: | ------: | -----: | --------: | -----------: | ------: | -----: |"
        fi

        local round order
        for round in $(seq "$ROUNDS"); do
            # Odd rounds in the given order, even rounds reversed: A B C, C B A, A B C ...
            if ((round % 2)); then order=$PROXIES; else order=$(tr ' ' '\n' <<<"$PROXIES" | tac | xargs); fi
            for p in $order; do
                measure "$round" "$p" "$DURATION"
            done
        done

        summary
    done

    if ((${#EDGE_VERDICT[@]})); then
        echo
        echo "### Edge: Dispatch against HAProxy (issue 9)"
        echo
        local line
        for line in "${EDGE_VERDICT[@]}"; do echo "- $line"; done
    fi
    if ((${#TLS_VERDICT[@]})); then
        echo
        echo "### TLS: Dispatch against nginx (issue 13)"
        echo
        local line
        for line in "${TLS_VERDICT[@]}"; do echo "- $line"; done
    fi
    if ((TLS_INVALID)); then
        log "compare.sh: some tls sub-run had errors: the run is INVALID (exit status 2)"
        exit 2
    fi
    if ((EDGE_INVALID)); then
        log "compare.sh: some edge sub-run had answers other than 200: the run is INVALID (exit status 2)"
        exit 2
    fi
    if ((CACHE_INVALID)); then
        log "compare.sh: in some cache run more than 1% of the requests reached the upstream: the run is INVALID (exit status 2)"
        exit 2
    fi
}

main "$@"
