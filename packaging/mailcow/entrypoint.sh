#!/bin/sh
# Entrypoint of the mailcow-ldap-auth container (packaging/Dockerfile).
#
# 1. Unless a configuration file is mounted at $MAILCOW_LDAP_AUTH_CONFIG, writes
#    one from the environment: mailcow's database (host "mysql") with the LDAP
#    settings of mailcow's UI (settings_from_database), log lines to mailcow's
#    Redis (CRON_LOG, the UI's "Crontasks" log), and the [sync] switches.
# 2. "sync-loop" (the default command) runs `mailcow-ldap-auth sync` every
#    SYNC_EVERY_SECONDS (60); the sync itself decides, from the interval, whether
#    a sync is due. Any other command is passed to the binary:
#    `connection-test`, `test USER`, `sync`, ...
#
# Environment (names from mailcow.conf where mailcow has them):
#   DBNAME, DBUSER, DBPASS    mailcow's database (required to generate the config)
#   DB_HOST (mysql), DB_PORT (3306)
#   REDISPASS                 mailcow's Redis password (empty: no password)
#   REDIS_HOST (redis-mailcow), REDIS_PORT (6379); REDIS_HOST=none: no Redis log
#   LDAP_CA_FILE              CA certificate for the LDAP servers (or LDAPTLS_CACERT)
#   LDAP_BIND_PASSWORD_FILE   overrides the bind password from mailcow's UI
#   SYNC_IMPORT_USERS, SYNC_PERIODIC_FULL_SYNC, SYNC_INTERVAL_MINUTES,
#   SYNC_PAGE_SIZE, SYNC_DEACTIVATE_MISSING, SYNC_MISSING_GRACE_HOURS,
#   SYNC_MAX_DEACTIVATE_PERCENT
#                             [sync] keys; when set they override mailcow's UI
#   SYNC_EVERY_SECONDS        how often sync-loop starts the sync (60)
set -eu

BIN=${MAILCOW_LDAP_AUTH_BIN:-/usr/bin/mailcow-ldap-auth}
CONFIG=${MAILCOW_LDAP_AUTH_CONFIG:-/etc/mailcow-ldap-auth/config.toml}
CONF_DIR=$(dirname "$CONFIG")
STATE_DIR=${MAILCOW_LDAP_AUTH_STATE_DIR:-/run/mailcow-ldap-auth}
# Marks a file written here, so that it is rewritten at every start.
MARK="# Written by mailcow-ldap-auth-entrypoint from the container's environment."

say() { echo "mailcow-ldap-auth-entrypoint: $*" >&2; }

# A TOML basic string.
toml_str() {
    printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"
}

# A TOML boolean from true/false/yes/no/1/0.
toml_bool() {
    case "$1" in
        true | yes | 1 | on) echo true ;;
        false | no | 0 | off | "") echo false ;;
        *)
            say "$2=\"$1\" is not a boolean (true or false)"
            exit 2
            ;;
    esac
}

toml_int() {
    case "$1" in
        "" | *[!0-9]*)
            say "$2=\"$1\" is not a number"
            exit 2
            ;;
        *) echo "$1" ;;
    esac
}

generate_config() {
    : "${DBNAME:?DBNAME is not set (from mailcow.conf)}"
    : "${DBUSER:?DBUSER is not set (from mailcow.conf)}"
    : "${DBPASS:?DBPASS is not set (from mailcow.conf)}"
    # Every value is checked before anything is written (a bad one stops the start).
    db_port=$(toml_int "${DB_PORT:-3306}" DB_PORT)
    sync_keys=""
    sync_key() { # KEY TYPE VARIABLE
        eval "v=\${$3:-}"
        [ -n "$v" ] || return 0
        v=$("toml_$2" "$v" "$3")
        sync_keys="$sync_keys$1 = $v
"
    }
    sync_key import_users bool SYNC_IMPORT_USERS
    sync_key periodic_full_sync bool SYNC_PERIODIC_FULL_SYNC
    sync_key interval_minutes int SYNC_INTERVAL_MINUTES
    sync_key page_size int SYNC_PAGE_SIZE
    sync_key deactivate_missing bool SYNC_DEACTIVATE_MISSING
    sync_key missing_grace_hours int SYNC_MISSING_GRACE_HOURS
    sync_key max_deactivate_percent int SYNC_MAX_DEACTIVATE_PERCENT
    umask 077
    mkdir -p "$CONF_DIR"
    # The password in a file of its own: the config then needs no escaping for it.
    printf '%s\n' "$DBPASS" >"$CONF_DIR/db-password"
    tmp="$CONFIG.tmp.$$"
    {
        echo "$MARK"
        echo "# Edits are lost at the next start: mount your own file at $CONFIG instead."
        echo "state_dir = $(toml_str "$STATE_DIR")"
        echo 'log_target = "stderr"'
        echo
        echo "# Everything else about the directory comes from mailcow's UI (settings_from_database)."
        echo "[ldap]"
        if [ -n "${LDAP_CA_FILE:-}" ]; then
            echo "ca_file = $(toml_str "$LDAP_CA_FILE")"
        fi
        if [ -n "${LDAP_BIND_PASSWORD_FILE:-}" ]; then
            echo "bind_password_file = $(toml_str "$LDAP_BIND_PASSWORD_FILE")"
        fi
        echo
        echo "[database]"
        echo "host = $(toml_str "${DB_HOST:-mysql}")"
        echo "port = $db_port"
        echo "name = $(toml_str "$DBNAME")"
        echo "user = $(toml_str "$DBUSER")"
        echo "password_file = $(toml_str "$CONF_DIR/db-password")"
        echo
        echo "[mailcow]"
        echo "settings_from_database = true"
        if [ "${REDIS_HOST:-redis-mailcow}" != none ]; then
            auth=""
            if [ -n "${REDISPASS:-}" ]; then
                # As written: mailcow-ldap-auth splits the URL at the last "@".
                auth=":$REDISPASS@"
            fi
            echo "redis_url = $(toml_str "redis://$auth${REDIS_HOST:-redis-mailcow}:${REDIS_PORT:-6379}/0")"
        fi
        echo
        echo "# Keys set here override mailcow's UI (so its own PHP sync can stay switched off there)."
        echo "[sync]"
        printf '%s' "$sync_keys"
    } >"$tmp"
    mv "$tmp" "$CONFIG"
    umask 022
    say "wrote $CONFIG from the environment"
}

if [ ! -e "$CONFIG" ] || head -n 1 "$CONFIG" | grep -qxF "$MARK"; then
    generate_config
else
    say "using the mounted $CONFIG"
fi

if [ "${1:-sync-loop}" != sync-loop ]; then
    exec "$BIN" -c "$CONFIG" "$@"
fi

every=$(toml_int "${SYNC_EVERY_SECONDS:-60}" SYNC_EVERY_SECONDS)
trap 'exit 0' TERM INT
say "running the sync every $every s"
while :; do
    "$BIN" -c "$CONFIG" sync || say "sync exited with status $?"
    sleep "$every" &
    wait $! || true
done
