#!/usr/bin/env bash
# The project's test command (README: "Run the tests"). Installs what the tests
# drive for real — iproute2 and nftables for the network-namespace tests — then
# runs every test of the workspace. Run as root: the agent tests create network
# namespaces and nftables tables, and fail loudly when they cannot.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(iproute2 nftables iputils-arping)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/test.sh: missing packages ${missing[*]}; run as root or install them" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

cargo test --workspace --locked
