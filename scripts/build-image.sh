#!/usr/bin/env bash
# Builds the `ferry` binary exactly as the Dockerfile's builder stage does, then smoke-tests it.
# The Dockerfile runs this script; CI runs it too (no container engine there), so the image's
# build steps are proven on every run.
#
#   scripts/build-image.sh [OUT_DIR]        # default OUT_DIR: target/image
#
# Environment:
#   FERRY_PROFILE   cargo profile, `release` (the image) or `dev` (CI: reuses the debug
#                   build `cargo test` already made instead of a second full build)
#   CARGO_TARGET_DIR  honoured as usual
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-target/image}
profile=${FERRY_PROFILE:-release}
target_dir=${CARGO_TARGET_DIR:-target}
case "$profile" in
  release) built="$target_dir/release/ferry" ;;
  dev) built="$target_dir/debug/ferry" ;;
  *) echo "FERRY_PROFILE must be release or dev, not $profile" >&2; exit 2 ;;
esac

echo "== cargo build --profile $profile --locked -p ferry-cli"
# --locked: exactly the dependency versions of Cargo.lock (a stale lock file fails the build).
cargo build --profile "$profile" --locked -p ferry-cli

mkdir -p "$out"
install -m 0755 "$built" "$out/ferry"

echo "== smoke test $out/ferry"
"$out/ferry" version --client
"$out/ferry" --help >/dev/null
"$out/ferry" proxy-init --help >/dev/null
"$out/ferry" proxy --help >/dev/null
"$out/ferry" control-plane --help >/dev/null
# The installation renders, and the injector works on the seed example.
"$out/ferry" install >/dev/null
"$out/ferry" inject --quiet -f examples/redis-statefulset/redis.yaml | grep -q 'name: ferry-proxy'
echo "ok: $out/ferry"
