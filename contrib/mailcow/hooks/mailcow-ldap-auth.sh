#!/bin/sh
# mailcow-ldap-auth: keeps serve's passdb in front of mailcow's in mailcow's Dovecot.
#
# Installed by contrib/mailcow/install.sh as data/hooks/dovecot/mailcow-ldap-auth.sh
# in the mailcow-dockerized folder. mailcow's Dovecot container mounts that folder at
# /hooks and runs every executable file in it at each start, before Dovecot starts
# (data/Dockerfiles/dovecot/docker-entrypoint.sh, "Run hooks").
#
# data/conf/dovecot/dovecot.conf is tracked by mailcow's git: update.sh resets it
# (`git checkout -f`, or a merge that takes upstream's side), which drops the line
# below. This hook puts it back, just before the first `passdb {` block, at every
# start; when it is already there it changes nothing. It never fails the
# container's start (the entrypoint runs with `set -e`): a problem is printed and
# Dovecot starts with mailcow's own passdbs only.
dir=${MAILCOW_LDAP_AUTH_DOVECOT_DIR:-/etc/dovecot}
conf="$dir/dovecot.conf"
# The path as Dovecot sees it in its container, whatever $dir is.
line='!include_try /etc/dovecot/mailcow-ldap-auth/passdb.conf'

say() { echo "mailcow-ldap-auth hook: $*"; }

if [ ! -f "$conf" ]; then
    say "$conf not found: nothing done"
    exit 0
fi
tmp="$conf.mailcow-ldap-auth.$$"
# A copy first, so that the new file keeps the old one's owner and mode.
if ! cp -p "$conf" "$tmp" 2>/dev/null; then
    say "cannot write beside $conf: nothing done"
    exit 0
fi
# Every copy of the line is dropped, then one is put before the first passdb.
awk -v line="$line" '
    $0 == line { next }
    !done && /^[ \t]*passdb[ \t]*\{/ { print line; done = 1 }
    { print }
    END { if (!done) exit 3 }
' "$conf" >"$tmp"
rc=$?
if [ "$rc" -ne 0 ]; then
    rm -f "$tmp"
    if [ "$rc" -eq 3 ]; then
        say "no 'passdb {' block in $conf: serve's passdb not included"
    else
        say "could not rewrite $conf (awk exited $rc): nothing done"
    fi
    exit 0
fi
if cmp -s "$conf" "$tmp"; then
    rm -f "$tmp"
    say "serve's passdb is included before mailcow's"
    exit 0
fi
if mv -f "$tmp" "$conf"; then
    say "included serve's passdb before mailcow's in $conf"
else
    rm -f "$tmp"
    say "could not replace $conf: nothing done"
fi
exit 0
