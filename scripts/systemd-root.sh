#!/usr/bin/env bash
# Build (once) the Debian bookworm root that the systemd driver tests boot with
# their own systemd as PID 1 (see shared LAB.md, "A real systemd per host").
#
#   scripts/systemd-root.sh            # root in $MAILCTL_SYSTEMD_ROOT or the default
#
# The root is cached: debootstrap downloads a few hundred packages, so it runs only
# when the completion marker is missing. A run that was interrupted left no marker
# and is redone from an empty directory. A lock file serialises concurrent callers
# (several test binaries may ask for the root at the same time).
#
# Postfix is preseeded to "No configuration": the root only needs its binaries and
# unit files; the tests write whatever configuration they use.
set -euo pipefail

root="${MAILCTL_SYSTEMD_ROOT:-/var/cache/mailctl/systemd-root}"
marker="$root/.mailctl-root-complete"
# Bump when the contents below change, so cached roots are rebuilt.
version=1
mirror="${MAILCTL_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if [ "$(id -u)" -ne 0 ]; then
  echo "systemd-root.sh: must run as root (debootstrap and chroot need it)" >&2
  exit 1
fi

if [ -f "$marker" ] && [ "$(cat "$marker")" = "$version" ]; then
  exit 0
fi

mkdir -p "$(dirname "$root")"
exec 9>"$root.lock"
flock 9
# Another caller may have finished while we waited for the lock.
if [ -f "$marker" ] && [ "$(cat "$marker")" = "$version" ]; then
  exit 0
fi

if ! command -v debootstrap >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -o DPkg::Lock::Timeout=600 debootstrap
fi

if [ -e "$root" ]; then
  # A test that died may have left its namespace's mounts behind only in that
  # (dead) namespace, but refuse to delete through a mount that is still visible.
  if findmnt -rn -o TARGET | grep -q -F "$root/"; then
    echo "systemd-root.sh: $root has mounts below it; unmount them first" >&2
    exit 1
  fi
  rm -rf --one-file-system "$root"
fi
mkdir -p "$root"

export DEBIAN_FRONTEND=noninteractive
debootstrap --variant=minbase --include=systemd,dbus,iproute2 bookworm "$root" "$mirror"

# Postfix goes in after debootstrap so its debconf question can be answered first.
cp /etc/resolv.conf "$root/etc/resolv.conf"
echo "postfix postfix/main_mailer_type select No configuration" |
  chroot "$root" debconf-set-selections
chroot "$root" apt-get update -qq
chroot "$root" apt-get install -y -qq --no-install-recommends postfix
chroot "$root" apt-get clean

# The unit the systemd driver tests start, reload and stop. Reload leaves a file
# behind, so a test can see that systemd really ran ExecReload.
cat >"$root/etc/systemd/system/mailctl-test.service" <<'EOF'
[Unit]
Description=mailctl test service (driver tests)

[Service]
Type=simple
ExecStart=/bin/sleep infinity
ExecReload=/bin/sh -c 'date +%%s.%%N >> /run/mailctl-test.reloaded'

[Install]
WantedBy=multi-user.target
EOF

# Keep the boot short and quiet: nothing in the tests needs these.
for unit in getty@tty1.service console-getty.service systemd-networkd.service \
  systemd-resolved.service systemd-timesyncd.service apt-daily.timer \
  apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer; do
  ln -sf /dev/null "$root/etc/systemd/system/$unit"
done

echo "$version" >"$marker"
echo "systemd-root.sh: root ready in $root"
