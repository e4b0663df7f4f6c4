#!/usr/bin/env bash
# Control-plane benchmark: 1,000 services x 10 pods, 1,000 proxies over real gRPC on
# 127.0.0.1, through what `ferry control-plane` runs (store, registry, compile cache,
# distribution). See README.md. Usage: bench/control-plane/run.sh [extra bench arguments]
#   MODES="light real"  which runs to make, in order:
#     light       proxies that ACK each snapshot once reassembled (the control plane's side)
#     real        ferry_proxy's discovery client, which validates and applies every snapshot
#                 (control plane on CPU 0, proxies on CPU 1)
#     in-process  no proxies and no gRPC: the control plane's work per change, broken down
#   CARGO_TARGET_DIR    where cargo builds (default: target)
set -euo pipefail
cd "$(dirname "$0")/../.."
MODES=${MODES:-"light real"}
cargo build --release -q -p ferry-control --example control_plane_bench
BIN=${CARGO_TARGET_DIR:-target}/release/examples/control_plane_bench
# 1,000 HTTP/2 connections: two descriptors each (both ends live on this machine).
ulimit -n "$(ulimit -Hn)"
OUT=bench/control-plane/results-$(date -u +%Y-%m-%d-%H%M%S).txt
{
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -sr)"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "ferry: $(git rev-parse --short HEAD)$(git diff --quiet || echo +dirty)"
  for mode in $MODES; do
    echo
    echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
    case $mode in
      light)
        echo "== light proxies, both processes share both CPUs: $BIN --light $*"
        "$BIN" --light "$@" ;;
      real)
        echo "== real proxies (ferry_proxy::discovery::run); control plane on CPU 0, proxies on CPU 1: taskset -c 0 $BIN --clients-cpus 1 $*"
        taskset -c 0 "$BIN" --clients-cpus 1 "$@" ;;
      in-process)
        echo "== the control plane's work alone, no gRPC: $BIN --in-process $*"
        "$BIN" --in-process "$@" ;;
      *) echo "unknown mode $mode" >&2; exit 2 ;;
    esac
  done
  echo
  echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
} 2>&1 | tee "$OUT"
echo "results: $OUT"
