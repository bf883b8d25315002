#!/bin/sh
# Carry the password hashes of regular accounts over from orion.
#
# orion's /etc/shadow is not copied over the local one: system accounts and
# root must keep this host's own entries. Only accounts that exist here with a
# uid in the regular range get orion's hash; locked entries ("!", "*") are
# skipped. chpasswd -e takes the shadow lock and writes the file safely.
set -eu

src=${1:?usage: merge-shadow SHADOW-FILE-FROM-ORION}
marker=${2:-}

getent passwd |
    awk -F: '$3 >= 1000 && $3 < 60000 { print $1 }' |
    awk -F: 'NR == FNR { regular[$1] = 1; next }
             ($1 in regular) && $2 != "" && $2 !~ /^[!*]/ { print $1 ":" $2 }' - "$src" |
    chpasswd -e

if [ -n "$marker" ]; then
    touch "$marker"
fi
