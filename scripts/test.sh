#!/usr/bin/env bash
# The project's test command (README: "Run the tests"). Installs what the tests
# drive for real — iproute2 and nftables for the network-namespace tests, curl
# for the agent API, Postfix for the exec service driver, Dovecot's IMAP server
# for what mail clients see after a maildir sync, debootstrap for the systemd
# root the systemd driver is tested against — then runs every test of
# the workspace. Run as root: the tests create network namespaces, nftables
# tables and a booted systemd, and fail loudly when they cannot.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(iproute2 nftables iputils-arping curl postfix dovecot-imapd debootstrap rsync openssh-server openssh-client)
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
  # Postfix is only driven by the tests with private configurations.
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# --no-fail-fast: one failing test binary must not hide the results of the others.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole run (cargo prints one per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
exit "$status"
