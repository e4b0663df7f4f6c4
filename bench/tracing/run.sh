#!/usr/bin/env bash
# The tracing benchmark: HTTP/1.1 keep-alive requests through a whole Ferry proxy (forward
# mode, one traffic thread) to an in-process app, with tracing off, at 1% and at 100%
# sampling (OTLP/gRPC to an in-process collector), in the same run: one proxy per mode, and
# rounds that load the modes one after the other for a short window each, in rotating order.
# Prints throughput and the proxy's CPU per request against tracing off, as Markdown tables,
# and keeps the output in bench/tracing/results-<date>.md.
#
#   TRACE_BENCH_MS=1000 TRACE_BENCH_ROUNDS=20 TRACE_BENCH_CONNS=32 bench/tracing/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
out="bench/tracing/results-$(date -u +%Y-%m-%d-%H%M%S).md"
{
  echo "# Tracing benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "Machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs), load average $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "Ferry: $(git rev-parse --short HEAD)$(git diff --quiet || echo +dirty)"
  echo "Settings: ${TRACE_BENCH_MS:-1000} ms per window, ${TRACE_BENCH_ROUNDS:-20} rounds, ${TRACE_BENCH_CONNS:-32} connections"
  echo
  cargo test --release -q -p ferry-proxy --test trace_bench -- --ignored --nocapture 2>&1 \
    | grep -E '^(round|\||spans|$)'
} | tee "$out"
echo "(kept in $out)"
