#!/usr/bin/env bash
# Mutual TLS between two sidecars against plaintext, in the one-machine mesh (`ferry up`):
# a client pod (with its sidecar) runs redis-benchmark against redis-0 (with its sidecar), once
# with `ferry up --no-mtls` and once with mutual TLS (the default), in the same run, rounds
# alternating the order. Reported per mode (medians over rounds) and as ratios mTLS / plaintext:
#   - throughput through both sidecars: SET and GET, -P 1, CLIENTS long-lived connections;
#   - connection setup: GET with -k 0 (a new connection per request), so every request pays a
#     TCP connect through both sidecars and, with mTLS, a TLS 1.3 handshake between them.
# Needs root (ferry up), redis-benchmark; see README.md beside this file.
#
# Usage: bench/mtls/run.sh
# Knobs (environment):
#   FERRY_BIN (target/release/ferry)   the ferry binary
#   ROUNDS (3)          rounds; each runs both modes
#   N (100000)          requests per command for the throughput runs
#   CLIENTS (50)        connections for the throughput runs
#   CONN_N (5000)       requests (so connections) for the connection-setup run
#   CONN_CLIENTS (10)   concurrent clients for the connection-setup run
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
FERRY="${FERRY_BIN:-$ROOT/target/release/ferry}"
ROUNDS="${ROUNDS:-3}"
N="${N:-100000}"
CLIENTS="${CLIENTS:-50}"
CONN_N="${CONN_N:-5000}"
CONN_CLIENTS="${CONN_CLIENTS:-10}"
BRIDGE=ferry-bm0
POD_CIDR=198.18.220.0/24
SERVICE_CIDR=198.19.220.0/24

[[ $EUID -eq 0 ]] || { echo "needs root (ferry up)" >&2; exit 1; }
[[ -x "$FERRY" ]] || { echo "no ferry binary at $FERRY (cargo build --release, or FERRY_BIN=...)" >&2; exit 1; }
command -v redis-benchmark >/dev/null || { echo "redis-benchmark is not installed (scripts/install-deps.sh)" >&2; exit 1; }

WORK="$(mktemp -d)"
chmod 755 "$WORK"   # the proxies (UID 1337) read the CA's root and their tokens below it
UP_PID=""
cleanup() {
  if [[ -n "$UP_PID" ]] && kill -0 "$UP_PID" 2>/dev/null; then
    kill -INT "$UP_PID"; wait "$UP_PID" 2>/dev/null || true
  fi
  FERRY_STATE_DIR="$WORK/state" "$FERRY" down >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -p "$WORK/mesh" "$WORK/state"
cat > "$WORK/mesh/mesh.yaml" <<'EOF'
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
    spec:
      serviceAccountName: redis
      containers:
      - name: redis
        image: redis:alpine
        ports:
        - containerPort: 6379
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
    spec:
      serviceAccountName: client
      containers:
      - name: shell
        image: busybox
EOF

# Starts the mesh (extra flags: $@) and waits until every pod is ready.
up() {
  : > "$WORK/up.log"
  "$FERRY" up "$WORK/mesh" --bridge "$BRIDGE" --pod-cidr "$POD_CIDR" --service-cidr "$SERVICE_CIDR" \
    --state-dir "$WORK/state" "$@" > "$WORK/up.log" 2>&1 &
  UP_PID=$!
  for _ in $(seq 300); do
    grep -q "mesh ready" "$WORK/up.log" && return 0
    kill -0 "$UP_PID" 2>/dev/null || break
    sleep 0.1
  done
  cat "$WORK/up.log" >&2
  echo "the mesh did not come up" >&2
  exit 1
}

down() {
  kill -INT "$UP_PID"; wait "$UP_PID" 2>/dev/null || true
  UP_PID=""
}

# redis-benchmark from the client pod against redis-0; prints "<test> <rps>" lines.
bench() {
  FERRY_STATE_DIR="$WORK/state" "$FERRY" exec client -- \
    redis-benchmark -h redis-0.redis --csv "$@" 2>/dev/null |
    awk -F'"' 'NR > 1 && NF > 3 { print $2, $4 }'
}

declare -A RESULTS
for round in $(seq "$ROUNDS"); do
  if (( round % 2 )); then modes="plaintext mtls"; else modes="mtls plaintext"; fi
  for mode in $modes; do
    if [[ $mode == plaintext ]]; then up --no-mtls; else up; fi
    # Warm-up (the first connections, the proxies' caches).
    bench -t get -n 5000 -c "$CLIENTS" >/dev/null
    while read -r test rps; do
      RESULTS["$mode/$test"]+="$rps "
    done < <(bench -t set,get -n "$N" -c "$CLIENTS" -P 1)
    while read -r test rps; do
      RESULTS["$mode/conn-$test"]+="$rps "
    done < <(bench -t get -n "$CONN_N" -c "$CONN_CLIENTS" -k 0)
    down
    echo "round $round: $mode done" >&2
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

STAMP="$(date -u +%Y-%m-%d-%H%M%S)"
OUT="$HERE/results-$STAMP.md"
{
  echo "# mTLS between two sidecars vs plaintext ($STAMP)"
  echo
  echo "\`ROUNDS=$ROUNDS N=$N CLIENTS=$CLIENTS CONN_N=$CONN_N CONN_CLIENTS=$CONN_CLIENTS bench/mtls/run.sh\`, $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
  echo "| measure | plaintext (req/s, median) | mTLS (req/s, median) | mTLS / plaintext |"
  echo "|---|---|---|---|"
  for test in SET GET conn-GET; do
    p="$(echo "${RESULTS[plaintext/$test]:-}" | median)"
    m="$(echo "${RESULTS[mtls/$test]:-}" | median)"
    ratio="$(awk -v m="$m" -v p="$p" 'BEGIN { if (p > 0) printf "%.2f", m / p; else print "nan" }')"
    case $test in
      conn-GET) label="connection setup: GET with a new connection each (-k 0, $CONN_CLIENTS clients)" ;;
      *) label="$test, -P 1, $CLIENTS connections" ;;
    esac
    echo "| $label | $p | $m | $ratio |"
  done
  echo
  echo "Raw (req/s per round):"
  echo
  for k in "${!RESULTS[@]}"; do echo "- $k: ${RESULTS[$k]}"; done | sort
} | tee "$OUT"
