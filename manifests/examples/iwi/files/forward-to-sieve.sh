#!/bin/sh
# Turn the ~/.forward files copied from iwi200 into Sieve scripts on the
# central server, one per IWI mailbox.
#
#   user@elsewhere   ->  redirect "user@elsewhere";
#   \user            ->  keep;   (also deliver to the user's own mailbox)
#   "|procmail ..."  ->  not converted: procmail recipes need a person. The
#                        user is listed in $report, next to whose copied
#                        .procmailrc someone writes the Sieve by hand.
#
# An existing .dovecot.sieve is never overwritten. Exits 0 when every file
# was handled (converted or listed).
set -eu

import=/var/lib/iwi-import/home
mailboxes=/var/vmail/iwi.example.org
report=/var/lib/iwi-import/needs-manual-sieve.txt
marker=${1:-}

: > "$report"
for forward in "$import"/*/.forward; do
    [ -f "$forward" ] || continue
    user=${forward%/.forward}
    user=${user##*/}
    home=$mailboxes/$user
    if [ ! -d "$home" ]; then
        echo "$user: has a .forward but no mailbox on this server" >> "$report"
        continue
    fi
    if grep -q '|' "$forward"; then
        echo "$user: pipes mail to a program (procmail?); see $import/$user" >> "$report"
        continue
    fi
    if [ -e "$home/.dovecot.sieve" ]; then
        echo "$user: already has a Sieve script; .forward left unconverted" >> "$report"
        continue
    fi
    # Entries are separated by commas or newlines; quotes and blanks around
    # them do not matter, and lines starting with # are comments.
    sed -e '/^[[:space:]]*#/d' "$forward" | tr ',' '\n' |
        sed -e 's/^[[:space:]"]*//' -e 's/[[:space:]"]*$//' -e '/^$/d' |
        awk -v user="$user" '
            $0 == "\\" user { keep = 1; next }
            { to[++n] = $0 }
            END {
                print "# Converted from iwi200:~" user "/.forward"
                for (i = 1; i <= n; i++) printf "redirect \"%s\";\n", to[i]
                if (keep || n == 0) print "keep;"
            }' > "$home/.dovecot.sieve.new"
    chown --reference="$home" "$home/.dovecot.sieve.new"
    mv "$home/.dovecot.sieve.new" "$home/.dovecot.sieve"
done

if [ -n "$marker" ]; then
    touch "$marker"
fi
