#!/usr/bin/env bash
# Installs what `ferry up` needs on a Debian machine (run as root): iproute2 and iptables for
# the pods' network namespaces and redirect rules, util-linux's setpriv to run the proxies as
# UID 1337, and Redis for the seed example's `redis:*` image.
set -euo pipefail

packages=(iproute2 iptables util-linux redis-server redis-tools ca-certificates)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The packaged redis-server service is not needed: ferry up runs Redis inside its pods.
if command -v systemctl >/dev/null 2>&1; then
  systemctl disable --now redis-server >/dev/null 2>&1 || true
fi
