#!/bin/sh
# Exit 0 when no SMTP client has handed this Postfix a message during the
# last HOURS hours (default 24); exit 1 otherwise.
#
# It reads the syslog mail log and the previous rotation of it. Syslog lines
# carry no year ("Mar  5 10:11:12 iwi200 postfix/smtpd[123]: 4F1A2B3C:
# client=..."), so a time that would lie in the future belongs to last year.
set -eu

hours=${1:-24}
log=${2:-/var/log/mail.log}
now=$(date +%s)
since=$(date -d "$hours hours ago" +%s)
year=$(date +%Y)

cat "$log" "$log.1" 2>/dev/null |
    grep -E 'postfix/smtpd\[[0-9]+\]: [0-9A-F]+: client=' |
    while read -r month day clock _; do
        t=$(date -d "$month $day $year $clock" +%s)
        if [ "$t" -gt "$now" ]; then
            t=$(date -d "$month $day $((year - 1)) $clock" +%s)
        fi
        if [ "$t" -ge "$since" ]; then
            exit 1
        fi
    done
