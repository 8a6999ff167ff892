#!/bin/sh
# Installs mailcow-ldap-auth into mailcow-dockerized (see README.md beside this
# file). Run it as root from the mailcow-dockerized folder:
#
#   cd /opt/mailcow-dockerized
#   sh /path/to/mailcow-ldap-auth/contrib/mailcow/install.sh [serve] [sync]
#
#   serve (the default)  serve in the login path: mailcow's Dovecot asks it first
#   sync                 our sync instead of mailcow's (packaging/mailcow/README.md);
#                        alone, it changes nothing of Dovecot: logins stay on mailcow's PHP
#
# It can be run again at any time (after an update of mailcow or of this project):
# what is in place stays as it is, and it never overwrites a file someone changed.
# A file that differs from what it would write is kept and named at the end, with
# the command that would replace it; the exit status is then 3 (0: all in place).
#
# What it writes (paths in the mailcow-dockerized folder):
#   data/conf/mailcow-ldap-auth/                our folder, mounted at /etc/mailcow-ldap-auth
#     serve.toml    (0600, uid 10001)           serve's configuration; DBNAME/DBUSER and
#                                               SOGo's address (IPV4_NETWORK) from mailcow.conf
#     sync.toml     (0600, uid 10001)           the sync's (sync only), with mailcow's Redis
#     db-password   (0600, uid 10001)           DBPASS from mailcow.conf
#   data/conf/dovecot/mailcow-ldap-auth/        /etc/dovecot/mailcow-ldap-auth in both containers
#     (0755: Dovecot's auth process, user dovecot, must reach the script in it)
#     mailcow-ldap-auth.lua, passdb.conf (0644)
#     http-secret   (0600, uid 10001)           the shared secret (Dovecot's auth worker is root)
#   data/conf/dovecot/extra.conf                our import_environment line appended (mailcow's
#                                               git ignores this file)
#   data/hooks/dovecot/mailcow-ldap-auth.sh     puts the passdb include line into dovecot.conf at
#     (0755)                                    every start of mailcow's Dovecot container
#   docker-compose.override.yml                 created with the services ldap-auth-mailcow and/or
#                                               ldap-sync-mailcow when missing; never changed
#   (the Dovecot files and the hook: serve only)
#   .git/info/exclude                           both folders above, so that update.sh's
#                                               `git add -A` never commits the secrets
# uid 10001 is the image's user (packaging/Dockerfile); MAILCOW_LDAP_AUTH_UID changes it.
set -eu

SRC=$(cd "$(dirname "$0")/../.." && pwd)
IMAGE_UID=${MAILCOW_LDAP_AUTH_UID:-10001}
attention=0
want_serve=no
want_sync=no
[ "$#" -gt 0 ] || set -- serve
for a in "$@"; do
    case "$a" in
        serve) want_serve=yes ;;
        sync) want_sync=yes ;;
        *)
            echo "usage: install.sh [serve] [sync]   (default: serve)" >&2
            exit 2
            ;;
    esac
done

say() { echo "mailcow-ldap-auth install: $*"; }
note() {
    attention=$((attention + 1))
    echo "mailcow-ldap-auth install: ATTENTION: $*"
}
die() {
    echo "mailcow-ldap-auth install: $*" >&2
    exit 2
}

# --- Where are we?
[ -f mailcow.conf ] && [ -f data/conf/dovecot/dovecot.conf ] && [ -f docker-compose.yml ] \
    || die "run this from the mailcow-dockerized folder (mailcow.conf, docker-compose.yml and data/conf/dovecot/dovecot.conf not all found in $(pwd))"
for f in contrib/mailcow/serve.toml contrib/mailcow/docker-compose.override.yml \
    packaging/mailcow/sync.toml packaging/mailcow/docker-compose.override.yml \
    contrib/mailcow/dovecot/mailcow-ldap-auth-passdb.conf contrib/mailcow/dovecot/extra.conf \
    contrib/mailcow/hooks/mailcow-ldap-auth.sh contrib/dovecot-lua/mailcow-ldap-auth.lua; do
    [ -f "$SRC/$f" ] || die "$SRC/$f is missing: run the script from a mailcow-ldap-auth source tree"
done
case "$IMAGE_UID" in "" | *[!0-9]*) die "MAILCOW_LDAP_AUTH_UID=\"$IMAGE_UID\" is not a number" ;; esac
[ "$(id -u)" = 0 ] || die "run this as root: it gives files to uid $IMAGE_UID (the image's user) and root"

# A value of mailcow.conf (generate_config.sh writes KEY=value, unquoted).
conf_value() {
    v=$(sed -n "s/^$1=//p" mailcow.conf | tail -n 1)
    v=${v#\"}
    v=${v%\"}
    printf '%s' "$v"
}
DBNAME=$(conf_value DBNAME)
DBUSER=$(conf_value DBUSER)
DBPASS=$(conf_value DBPASS)
for kv in "DBNAME=$DBNAME" "DBUSER=$DBUSER"; do
    case "${kv#*=}" in
        "" | *[!A-Za-z0-9_.-]*) die "mailcow.conf: ${kv%%=*} is empty or not a plain name: \"${kv#*=}\"" ;;
    esac
done
[ -n "$DBPASS" ] || die "mailcow.conf: DBPASS is empty"
# SOGo's address, as mailcow's docker-compose.yml sets it: ${IPV4_NETWORK:-172.22.1}.248.
IPV4_NETWORK=$(conf_value IPV4_NETWORK)
IPV4_NETWORK=${IPV4_NETWORK:-172.22.1}
case "$IPV4_NETWORK" in
    *[!0-9.]* | .* | *. | *..* ) die "mailcow.conf: IPV4_NETWORK is not three numbers with dots: \"$IPV4_NETWORK\"" ;;
esac
[ "$(echo "$IPV4_NETWORK" | tr -cd . | wc -c)" -eq 2 ] ||
    die "mailcow.conf: IPV4_NETWORK is not three numbers with dots: \"$IPV4_NETWORK\""
# Redis as mailcow's containers reach it: redis-mailcow:6379, or the master of a
# replica setup (REDIS_SLAVEOF_IP/PORT, where mailcow's PHP writes). REDIS_PORT in
# mailcow.conf is the host's binding (127.0.0.1:7654), not for containers.
REDISPASS=$(conf_value REDISPASS)
REDIS_SLAVEOF_IP=$(conf_value REDIS_SLAVEOF_IP)
REDIS_SLAVEOF_PORT=$(conf_value REDIS_SLAVEOF_PORT)
case "$REDISPASS" in *[!A-Za-z0-9_.~-]*) die "mailcow.conf: REDISPASS has characters a redis:// URL cannot hold as they are" ;; esac
case "$REDIS_SLAVEOF_IP$REDIS_SLAVEOF_PORT" in *[!A-Za-z0-9.:_-]*) die "mailcow.conf: REDIS_SLAVEOF_IP/PORT are not a host and a port" ;; esac
redis_host=redis-mailcow
redis_port=6379
if [ -n "$REDIS_SLAVEOF_IP" ]; then
    redis_host=$REDIS_SLAVEOF_IP
    redis_port=${REDIS_SLAVEOF_PORT:-6379}
fi
redis_url="redis://${REDISPASS:+:$REDISPASS@}$redis_host:$redis_port/0"

# --- Helpers: every one leaves an existing, different file alone.

# dir PATH MODE [OWNER]: create the folder, or set its mode (these folders are ours).
dir() {
    if [ ! -d "$1" ]; then
        mkdir -p "$1"
        say "created $1/"
    fi
    chmod "$2" "$1"
    if [ -n "${3:-}" ]; then chown "$3" "$1"; fi
}

# put TARGET MODE OWNER: the content on stdin becomes TARGET unless TARGET exists
# with other content (then it is kept, and named).
put() {
    tmp="$1.new.$$"
    cat >"$tmp"
    if [ ! -e "$1" ]; then
        chmod "$2" "$tmp"
        chown "$3" "$tmp"
        mv "$tmp" "$1"
        say "created $1"
    elif cmp -s "$tmp" "$1"; then
        rm -f "$tmp"
        chmod "$2" "$1"
        chown "$3" "$1"
    else
        rm -f "$tmp"
        note "$1 differs from what this script writes: kept as it is (${4:-compare it with the shipped file})"
    fi
}

# --- Our folder: the configurations and mailcow's database password.
dir data/conf/mailcow-ldap-auth 0700 "$IMAGE_UID:$IMAGE_UID"
if [ "$want_serve" = yes ]; then
    sed -e "/^\[database\]/,/^\[/ s/^name = .*/name = \"$DBNAME\"/" \
        -e "/^\[database\]/,/^\[/ s/^user = .*/user = \"$DBUSER\"/" \
        -e "/^\[mailcow\]/,/^\[/ s/^sogo_address = .*/sogo_address = \"$IPV4_NETWORK.248\"/" \
        "$SRC/contrib/mailcow/serve.toml" |
        put data/conf/mailcow-ldap-auth/serve.toml 0600 "$IMAGE_UID:$IMAGE_UID" \
            "yours wins; the shipped one is $SRC/contrib/mailcow/serve.toml"
fi
printf '%s\n' "$DBPASS" |
    put data/conf/mailcow-ldap-auth/db-password 0600 "$IMAGE_UID:$IMAGE_UID" \
        "it is not DBPASS of mailcow.conf: rm it and run this again to take DBPASS"

if [ "$want_sync" = yes ]; then
    sed -e "/^\[database\]/,/^\[/ s/^name = .*/name = \"$DBNAME\"/" \
        -e "/^\[database\]/,/^\[/ s/^user = .*/user = \"$DBUSER\"/" \
        -e "s#^redis_url = .*#redis_url = \"$redis_url\"#" \
        "$SRC/packaging/mailcow/sync.toml" |
        put data/conf/mailcow-ldap-auth/sync.toml 0600 "$IMAGE_UID:$IMAGE_UID" \
            "yours wins; the shipped one is $SRC/packaging/mailcow/sync.toml"
fi

# put_upgrade TARGET MODE OWNER HINT OLD...: like put, and a TARGET that is exactly
# an earlier shipped version (its `cksum` is one of OLD) is replaced.
put_upgrade() {
    target=$1 mode=$2 owner=$3 hint=$4
    shift 4
    if [ -f "$target" ]; then
        sum=$(cksum <"$target")
        for old in "$@"; do
            if [ "$sum" = "$old" ]; then
                rm -f "$target"
                say "replacing $target (an earlier shipped version)"
                break
            fi
        done
    fi
    put "$target" "$mode" "$owner" "$hint"
}

install_dovecot() {
# --- What mailcow's Dovecot reads (data/conf/dovecot is /etc/dovecot in its container).
dir data/conf/dovecot/mailcow-ldap-auth 0755 0:0
# The script and the passdb go together: the passdb's result_failure = return-fail
# needs a script that hands "not ours" on (PASSDB_RESULT_NEXT). The earlier
# versions (result_failure = continue) are replaced; files you changed are kept.
put_upgrade data/conf/dovecot/mailcow-ldap-auth/mailcow-ldap-auth.lua 0644 0:0 \
    "cp $SRC/contrib/dovecot-lua/mailcow-ldap-auth.lua data/conf/dovecot/mailcow-ldap-auth/ takes the shipped one" \
    "3071611739 13334" <"$SRC/contrib/dovecot-lua/mailcow-ldap-auth.lua"
put_upgrade data/conf/dovecot/mailcow-ldap-auth/passdb.conf 0644 0:0 \
    "cp $SRC/contrib/mailcow/dovecot/mailcow-ldap-auth-passdb.conf data/conf/dovecot/mailcow-ldap-auth/passdb.conf takes the shipped one" \
    "1212114237 1286" <"$SRC/contrib/mailcow/dovecot/mailcow-ldap-auth-passdb.conf"
if [ ! -s data/conf/dovecot/mailcow-ldap-auth/http-secret ]; then
    # 32 random bytes, hex: no openssl needed.
    od -An -N32 -tx1 /dev/urandom | tr -d ' \n' |
        { cat; echo; } | put data/conf/dovecot/mailcow-ldap-auth/http-secret 0600 "$IMAGE_UID:$IMAGE_UID"
else
    chmod 0600 data/conf/dovecot/mailcow-ldap-auth/http-secret
    chown "$IMAGE_UID:$IMAGE_UID" data/conf/dovecot/mailcow-ldap-auth/http-secret
fi

# extra.conf: mailcow's file for local Dovecot settings (ignored by its git). Our line
# extends import_environment ($import_environment keeps what earlier lines set).
extra=data/conf/dovecot/extra.conf
if [ -f "$extra" ] && grep -q 'MAILCOW_LDAP_AUTH_NOT_OURS=' "$extra"; then
    :
elif [ -f "$extra" ] && grep -q 'MAILCOW_LDAP_AUTH_URL=' "$extra"; then
    # An earlier install's line: "not ours" must go on to mailcow's passdbs.
    sed 's/\(MAILCOW_LDAP_AUTH_URL=.*\)$/\1 MAILCOW_LDAP_AUTH_NOT_OURS=next/' "$extra" >"$extra.new.$$"
    cat "$extra.new.$$" >"$extra"
    rm -f "$extra.new.$$"
    say "added MAILCOW_LDAP_AUTH_NOT_OURS=next to serve's line in $extra"
else
    if [ -s "$extra" ] && [ -n "$(tail -c 1 "$extra")" ]; then echo >>"$extra"; fi
    cat "$SRC/contrib/mailcow/dovecot/extra.conf" >>"$extra"
    chmod go+r "$extra"
    say "appended serve's URL and secret file to $extra"
fi

# The hook that keeps the include line in dovecot.conf; run once now as well.
dir data/hooks/dovecot 0755
put data/hooks/dovecot/mailcow-ldap-auth.sh 0755 0:0 \
    "cp $SRC/contrib/mailcow/hooks/mailcow-ldap-auth.sh data/hooks/dovecot/ takes the shipped one" \
    <"$SRC/contrib/mailcow/hooks/mailcow-ldap-auth.sh"
MAILCOW_LDAP_AUTH_DOVECOT_DIR=data/conf/dovecot sh "$SRC/contrib/mailcow/hooks/mailcow-ldap-auth.sh" |
    sed 's/^/mailcow-ldap-auth install: /'
}
if [ "$want_serve" = yes ]; then install_dovecot; fi

# --- Keep our files out of mailcow's git (update.sh runs `git add -A` after a conflict).
if [ -d .git ]; then
    mkdir -p .git/info
    touch .git/info/exclude
    for p in /data/conf/mailcow-ldap-auth/ /data/conf/dovecot/mailcow-ldap-auth/; do
        if ! grep -qxF "$p" .git/info/exclude; then
            printf '%s\n' "$p" >>.git/info/exclude
            say "added $p to .git/info/exclude"
        fi
    done
    tracked=$(git ls-files -- data/conf/mailcow-ldap-auth data/conf/dovecot/mailcow-ldap-auth 2>/dev/null || true)
    if [ -n "$tracked" ]; then
        note "mailcow's git already holds these files (committed by an update?): $(echo "$tracked" | tr '\n' ' ')- 'git rm --cached' them; secrets in them are in the history: replace them"
    fi
else
    note "no .git here: not the git checkout mailcow's update.sh works on?"
fi

# --- The containers: a new override file, or the services to merge by hand.
services=""
[ "$want_serve" = yes ] && services="ldap-auth-mailcow=contrib/mailcow/docker-compose.override.yml"
[ "$want_sync" = yes ] && services="$services ldap-sync-mailcow=packaging/mailcow/docker-compose.override.yml"
if [ ! -e docker-compose.override.yml ]; then
    {
        echo "# Written by mailcow-ldap-auth's contrib/mailcow/install.sh from:"
        for s in $services; do echo "#   ${s#*=}"; done
        echo "services:"
        # Each shipped file: comments, "services:", then its service, indented.
        for s in $services; do sed '1,/^services:/d' "$SRC/${s#*=}"; done
    } | put docker-compose.override.yml 0644 0:0
else
    for s in $services; do
        if ! grep -q "^  ${s%%=*}:" docker-compose.override.yml; then
            note "docker-compose.override.yml exists and has no ${s%%=*} service: merge the service from $SRC/${s#*=} into it (it was not changed)"
        fi
    done
    if grep -q '^  ldap-auth-mailcow:' docker-compose.override.yml && ! grep -q '/etc/sogo-sso' docker-compose.override.yml; then
        note "docker-compose.override.yml: the ldap-auth-mailcow service does not mount SOGo's single sign-on secret: add the volume \"./data/conf/phpfpm/sogo-sso:/etc/sogo-sso:ro,z\" from $SRC/contrib/mailcow/docker-compose.override.yml"
    fi
    # The first version's services: single-file mounts (an edited file stays
    # invisible), no pull_policy, an entrypoint that no longer exists.
    if grep -q 'serve.toml:/etc/mailcow-ldap-auth/config.toml\|http-secret:/etc/mailcow-ldap-auth/http-secret' docker-compose.override.yml; then
        note "docker-compose.override.yml has the old ldap-auth-mailcow service (single-file mounts): replace it with the one in $SRC/contrib/mailcow/docker-compose.override.yml"
    fi
    if grep -q '^  ldap-sync-mailcow:' docker-compose.override.yml && ! grep -q 'MAILCOW_LDAP_AUTH_CONFIG=/etc/mailcow-ldap-auth/sync.toml' docker-compose.override.yml; then
        note "docker-compose.override.yml has the old ldap-sync-mailcow service (configuration from the environment): replace it with the one in $SRC/packaging/mailcow/docker-compose.override.yml and run this with 'sync'"
    fi
fi

if [ "$attention" -gt 0 ]; then
    say "$attention thing(s) need your attention (ATTENTION above); everything else is in place"
    exit 3
fi
if [ "$want_serve" = yes ]; then
    say "done. Next: docker compose up -d ldap-auth-mailcow && docker compose restart dovecot-mailcow"
fi
if [ "$want_sync" = yes ]; then
    say "done. Untick \"Import Users\" and \"Periodic Full Sync\" in mailcow's UI, then: docker compose up -d ldap-sync-mailcow"
fi
