#!/usr/bin/env bash
# Benchmark of `ferry webhook`: the server pinned to one core (taskset -c 0) answers the
# redis-0 StatefulSet AdmissionReview over HTTPS, driven by crates/control/examples/webhook_load.rs
# on another core. Two runs: open loop at a fixed rate (latency percentiles), then closed
# loop (maximum throughput).
#
# A third, network-free run times the injection engine alone on the server's core, so the
# server's own overhead (TLS, HTTP, metrics) is the difference.
#
# Usage: bench/webhook/run.sh
# Knobs (environment): RATE (1000), DURATION (20 s), CONNECTIONS (4), STREAMS (4),
#   PROTO (h2|h1), CLOSED_DURATION (10 s), SERVER_CPU (0), CLIENT_CPU (1), PORT (25017),
#   NICE (unset; e.g. -19 as root to keep other work on the machine from preempting the
#   server and the load generator).
# Needs: cargo, openssl, taskset, curl.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
RATE="${RATE:-1000}"
DURATION="${DURATION:-20}"
CLOSED_DURATION="${CLOSED_DURATION:-10}"
CONNECTIONS="${CONNECTIONS:-4}"
STREAMS="${STREAMS:-4}"
PROTO="${PROTO:-h2}"
SERVER_CPU="${SERVER_CPU:-0}"
CLIENT_CPU="${CLIENT_CPU:-1}"
PORT="${PORT:-25017}"
METRICS_PORT="$((PORT + 1))"
PRIO=()
if [[ -n "${NICE:-}" ]]; then PRIO=(nice -n "$NICE"); fi
BODY="$ROOT/crates/control/tests/fixtures/admission/statefulset-redis-0.json"

for tool in cargo openssl taskset curl; do
  command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 1; }
done

echo "== building (release)" >&2
cargo build --quiet --release --manifest-path "$ROOT/Cargo.toml" -p ferry-cli
cargo build --quiet --release --manifest-path "$ROOT/Cargo.toml" -p ferry-control --example webhook_load
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}/release"

WORK="$(mktemp -d)"
SERVER_PID=""
cleanup() {
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "== certificates (throwaway CA, server cert for localhost)" >&2
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
  -keyout "$WORK/ca.key" -out "$WORK/ca.crt" -subj "/CN=ferry bench CA" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout "$WORK/tls.key" -out "$WORK/tls.csr" -subj "/CN=ferry-control.ferry-system.svc" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$WORK/ext.cnf"
openssl x509 -req -in "$WORK/tls.csr" -CA "$WORK/ca.crt" -CAkey "$WORK/ca.key" -CAcreateserial \
  -days 1 -extfile "$WORK/ext.cnf" -out "$WORK/tls.crt" 2>/dev/null

echo "== starting ferry webhook on CPU $SERVER_CPU" >&2
RUST_LOG=warn "${PRIO[@]}" taskset -c "$SERVER_CPU" "$TARGET/ferry" webhook \
  --listen "127.0.0.1:$PORT" --metrics-listen "127.0.0.1:$METRICS_PORT" \
  --tls-cert "$WORK/tls.crt" --tls-key "$WORK/tls.key" &
SERVER_PID=$!
for _ in $(seq 1 100); do
  if curl -sf --cacert "$WORK/ca.crt" "https://localhost:$PORT/ready" >/dev/null; then break; fi
  sleep 0.1
done
curl -sf --cacert "$WORK/ca.crt" "https://localhost:$PORT/ready" >/dev/null \
  || { echo "webhook did not become ready" >&2; exit 1; }

# Sanity: the review must be injected, not skipped or refused.
curl -sf --cacert "$WORK/ca.crt" -H 'Content-Type: application/json' --data-binary "@$BODY" \
  "https://localhost:$PORT/inject" | grep -q '"patch"' \
  || { echo "the benchmark review was not injected" >&2; exit 1; }

LOAD=("${PRIO[@]}" taskset -c "$CLIENT_CPU" "$TARGET/examples/webhook_load"
  --addr "127.0.0.1:$PORT" --ca "$WORK/ca.crt" --body "$BODY" --proto "$PROTO"
  --connections "$CONNECTIONS" --streams "$STREAMS")

# Server CPU (user + system, all threads) per request over a phase, from /proc: unlike
# latency, this barely moves when other work shares the machine.
server_cpu_ticks() { awk '{print $14 + $15}' "/proc/$SERVER_PID/stat"; }
served() { curl -sf "http://127.0.0.1:$METRICS_PORT/metrics" | awk '/^ferry_webhook_requests_total /{print $2}'; }
phase() {
  local t0 n0 t1 n1
  t0="$(server_cpu_ticks)"; n0="$(served)"
  "${LOAD[@]}" "$@"
  t1="$(server_cpu_ticks)"; n1="$(served)"
  awk -v t="$((t1 - t0))" -v n="$((n1 - n0))" -v hz="$(getconf CLK_TCK)" \
    'BEGIN { printf "server CPU %.0f us per request (%d requests incl. warm-up, %.2f s CPU)\n", t / hz * 1e6 / n, n, t / hz }'
}

echo "date $(date -u '+%F %H:%M UTC')  ferry $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?')  load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "== open loop: $RATE req/s for $DURATION s" >&2
phase --rate "$RATE" --duration "$DURATION"
echo
echo "== closed loop: as fast as possible for $CLOSED_DURATION s" >&2
phase --rate 0 --duration "$CLOSED_DURATION"
echo
echo "== the injection engine alone on CPU $SERVER_CPU (no TLS, no HTTP)" >&2
"${PRIO[@]}" taskset -c "$SERVER_CPU" "$TARGET/examples/webhook_load" --engine-only --body "$BODY" --ca "$WORK/ca.crt" --duration 5
echo
echo "server-side: $(curl -sf "http://127.0.0.1:$METRICS_PORT/metrics" | grep -E '^ferry_webhook_(injections_total|request_duration_seconds_count) ' | tr '\n' ' ')"
echo "load average at end $(cut -d' ' -f1-3 /proc/loadavg)"
