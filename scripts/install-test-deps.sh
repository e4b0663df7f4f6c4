#!/usr/bin/env bash
# Installs what Ferry's test suite needs on a Debian machine (run as root):
# Debian packages for the real peers the tests talk to (and tcpdump, which the mTLS end-to-end
# test captures the pods' traffic with), and Kubernetes' official schemas.
set -euo pipefail

"$(dirname "$0")/install-deps.sh"

# curl: the tracing end-to-end test calls the example apps with it. python3 and pip: the
# tracing example's apps, kubernetes-validate and the Helm library.
apt_packages=(haproxy openssl tcpdump curl python3 python3-pip)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian marks its Python as externally managed; these test tools go to the system anyway.
export PIP_BREAK_SYSTEM_PACKAGES=1

if ! command -v kubernetes-validate >/dev/null 2>&1; then
  echo "installing kubernetes-validate (Kubernetes' official schemas, from PyPI)"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore kubernetes-validate
fi

if ! python3 -c 'import helm_python, yaml' >/dev/null 2>&1; then
  echo "installing helm-python-sdk (the Helm library, to render and lint deploy/helm/ferry offline)"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "helm-python-sdk==0.2.2" pyyaml
fi

if ! command -v kubectl >/dev/null 2>&1; then
  echo "note: kubectl is not installed; the webhook test that applies patches with kubectl will say so" >&2
fi
