#!/usr/bin/env bash
# mailcow-ldap-auth demo: the whole thing working, on one machine, in one command.
#
#   sudo contrib/demo/run.sh          # from anywhere in the repository
#   KEEP_WORK=1 sudo contrib/demo/run.sh   # keep the temporary folder (configs, logs)
#   BIN=/usr/bin/mailcow-ldap-auth sudo contrib/demo/run.sh   # that binary, no build
#
# On a fresh Debian 12 / Ubuntu machine it
#   1. installs the Debian packages it needs, if missing (apt-get);
#   2. builds the release binary (packaging/build-release.sh; Rust itself is not
#      installed for you: https://rustup.rs);
#   3. starts a PRIVATE OpenLDAP (StartTLS, with its own test CA), MariaDB
#      (mailcow's schema subset, domain example.org, mailbox templates
#      "Default" and "Staff") and Dovecot 2.3 using mailcow-ldap-auth as its
#      checkpassword passdb and userdb, all in a `mktemp -d` folder, on free
#      loopback ports, as plain processes (no systemd; the system's own
#      slapd/MariaDB/Dovecot, running or not, are never touched);
#   4. logs the demo user alice@example.org in over IMAP: her first login
#      creates her mailcow mailbox from the template her LDAP attribute maps to;
#   5. shows what happened: the helper's log lines, the mailbox row, the
#      template applied; then `mailcow-ldap-auth test` and `connection-test`;
#   6. stops everything it started, by pid (also on Ctrl-C or an error), and
#      removes the folder.
# It can be run again and again; each run starts from scratch.
set -euo pipefail

DEMO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$DEMO_DIR/../.." && pwd)
SCHEMA="$REPO_DIR/tests/integration/schema.sql"

# The demo directory.
BASE_DN="dc=example,dc=org"
ADMIN_DN="cn=admin,$BASE_DN"
READER_DN="cn=mailcow-reader,ou=services,$BASE_DN"
DEMO_USER="alice@example.org"
DEMO_PW="Alice-demo-pw-1"
# Rows the demo writes in mailcow's database: domain and templates, as in mailcow's UI.
DEFAULT_TEMPLATE='{"tags":[],"quota":0,"quarantine_notification":"hourly","quarantine_category":"reject","rl_frame":"s","rl_value":"","force_pw_update":0,"sogo_access":1,"active":1,"tls_enforce_in":0,"tls_enforce_out":0,"imap_access":1,"pop3_access":1,"smtp_access":1,"sieve_access":1,"acl_spam_alias":1,"acl_tls_policy":1,"acl_spam_score":1,"acl_spam_policy":1,"acl_delimiter_action":1,"acl_syncjobs":0,"acl_eas_reset":1,"acl_sogo_profile_reset":0,"acl_pushover":1,"acl_quarantine":1,"acl_quarantine_attachments":1,"acl_quarantine_notification":1,"acl_quarantine_category":1,"acl_app_passwds":1}'
STAFF_TEMPLATE='{"tags":["staff"],"quota":2147483648,"quarantine_notification":"daily","quarantine_category":"reject","rl_frame":"s","rl_value":"","force_pw_update":0,"sogo_access":1,"active":1,"tls_enforce_in":1,"tls_enforce_out":0,"imap_access":1,"pop3_access":0,"smtp_access":1,"sieve_access":1,"acl_spam_alias":1,"acl_tls_policy":1,"acl_spam_score":1,"acl_spam_policy":1,"acl_delimiter_action":1,"acl_syncjobs":1,"acl_eas_reset":1,"acl_sogo_profile_reset":0,"acl_pushover":1,"acl_quarantine":1,"acl_quarantine_attachments":1,"acl_quarantine_notification":1,"acl_quarantine_category":1,"acl_app_passwds":1}'

WORK=""
SLAPD_PID=""
MARIADB_PID=""
DOVECOT_PID=""
DOVECOT_CHILDREN=""
LEFT=""

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
log() { printf 'demo: %s\n' "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

# ---------------------------------------------------------------------------
# Stopping: by pid, whatever happens.

alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

# Stop pid $1 (our child) with SIGTERM, wait up to 20 s, then SIGKILL.
stop_pid() {
  local pid=$1 what=$2
  alive "$pid" || return 0
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 200); do
    alive "$pid" || break
    sleep 0.1
  done
  if alive "$pid"; then
    log "$what (pid $pid) did not stop: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

# Stop what runs; sets LEFT to the pids that are still alive afterwards.
stop_all() {
  local c all
  if alive "$DOVECOT_PID"; then
    # The master stops its children; remember them to make sure they went.
    DOVECOT_CHILDREN=$(ps -o pid= --ppid "$DOVECOT_PID" 2>/dev/null | tr '\n' ' ')
  fi
  all="$DOVECOT_PID $MARIADB_PID $SLAPD_PID $DOVECOT_CHILDREN"
  stop_pid "$DOVECOT_PID" dovecot
  for c in $DOVECOT_CHILDREN; do
    for _ in $(seq 50); do
      alive "$c" || break
      sleep 0.1
    done
    if alive "$c"; then
      log "a Dovecot process (pid $c) outlived its master: SIGKILL"
      kill -KILL "$c" 2>/dev/null || true
    fi
  done
  stop_pid "$MARIADB_PID" mariadbd
  stop_pid "$SLAPD_PID" slapd
  DOVECOT_PID="" MARIADB_PID="" SLAPD_PID=""
  LEFT=""
  for c in $all; do
    if alive "$c"; then LEFT="$LEFT $c"; fi
  done
  if [ -n "$WORK" ] && [ -d "$WORK" ]; then
    if [ -n "${KEEP_WORK:-}" ]; then
      log "kept $WORK"
    else
      rm -rf "$WORK"
    fi
  fi
  WORK=""
}

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  set +e
  stop_all
  if [ -n "$LEFT" ]; then
    log "still running after the stop:$LEFT"
  elif [ "$status" -ne 0 ]; then
    log "failed or interrupted (exit $status); everything it had started is stopped"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------
# 1. Packages.

if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || die "run me as root"
  log "not root: running again with sudo"
  exec sudo --preserve-env=BIN,KEEP_WORK "$0" "$@"
fi

install_packages() {
  local packages=(slapd ldap-utils mariadb-server mariadb-client dovecot-core dovecot-imapd openssl procps python3)
  # The build links with cc (and the ring crate compiles C).
  command -v cc >/dev/null || packages+=(gcc libc6-dev)
  local missing=() p
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  say "Installing ${missing[*]}"
  apt-get update -qq
  # The packages' own services are not needed (and not used): on machines
  # whose policy lets packages start services, the system slapd/MariaDB/Dovecot
  # may start; this demo runs its own on other ports either way.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
install_packages
for p in slapd slapadd slappasswd mariadbd mariadb-install-db mariadb dovecot doveadm openssl python3 ps; do
  command -v "$p" >/dev/null || die "$p not found after installing the packages"
done
REPLY_PROG=/usr/lib/dovecot/checkpassword-reply
[ -x "$REPLY_PROG" ] || die "$REPLY_PROG not found (package dovecot-core)"
id dovecot >/dev/null 2>&1 || die "user dovecot does not exist (package dovecot-core)"
[ -x /usr/lib/dovecot/imap ] || die "Dovecot's imap not found (package dovecot-imapd)"
[ -f "$SCHEMA" ] || die "$SCHEMA not found: run me from a checkout of the repository"

# ---------------------------------------------------------------------------
# 2. The binary.

find_cargo() {
  local c
  for c in "$(command -v cargo 2>/dev/null)" "${SUDO_USER:+$(getent passwd "$SUDO_USER" | cut -d: -f6)/.cargo/bin/cargo}" "$HOME/.cargo/bin/cargo"; do
    [ -n "$c" ] && [ -x "$c" ] && { echo "$c"; return 0; }
  done
  return 1
}

if [ -n "${BIN:-}" ]; then
  [ -x "$BIN" ] || die "BIN=$BIN is not an executable file"
else
  CARGO=$(find_cargo) || die "cargo not found: install Rust (https://rustup.rs), or set BIN=/path/to/mailcow-ldap-auth"
  say "Building the release binary (packaging/build-release.sh: the shipped build)"
  if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ] && [ "$(stat -c %U "$REPO_DIR")" = "$SUDO_USER" ]; then
    # Build as the user who owns the checkout, so target/ stays theirs.
    built=$(sudo -u "$SUDO_USER" -H env "PATH=$(dirname "$CARGO"):$PATH" "$REPO_DIR/packaging/build-release.sh" | tail -n 1)
  else
    built=$(env "PATH=$(dirname "$CARGO"):$PATH" "$REPO_DIR/packaging/build-release.sh" | tail -n 1)
  fi
  BIN="$REPO_DIR/$built"
fi

# ---------------------------------------------------------------------------
# 3. Private servers.

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Poll until 127.0.0.1:$1 accepts connections; $2 (a pid) must stay alive meanwhile.
wait_for_port() {
  local port=$1 pid=$2 what=$3 log=$4
  for _ in $(seq 600); do
    if (: <>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      return 0
    fi
    if ! alive "$pid"; then
      cat "$log" >&2 2>/dev/null || true
      # Ubuntu's AppArmor profiles can keep slapd/mariadbd from files in /tmp.
      die "$what exited before listening on 127.0.0.1:$port (log above: $log; on Ubuntu also check: dmesg | grep DENIED)"
    fi
    sleep 0.05
  done
  cat "$log" >&2 2>/dev/null || true
  die "$what did not listen on 127.0.0.1:$port within 30 s"
}

WORK=$(mktemp -d /tmp/mailcow-ldap-auth-demo.XXXXXX)
# Dovecot runs the helper as user dovecot: it must reach its files in here.
chmod 755 "$WORK"
DC_GID=$(id -g dovecot)
LDAP_PORT=$(free_port)
DB_PORT=$(free_port)
IMAP_PORT=$(free_port)
say "Working folder $WORK"

# The binary, where user dovecot may run it (the checkout may be in a private home).
install -d -m 755 "$WORK/bin"
install -m 755 "$BIN" "$WORK/bin/mailcow-ldap-auth"
HELPER="$WORK/bin/mailcow-ldap-auth"
echo "binary: $BIN ($("$HELPER" --version 2>/dev/null || echo '?'))"

# --- A test CA and a certificate for 127.0.0.1 (StartTLS on the LDAP port).
PKI="$WORK/pki"
install -d -m 755 "$PKI"
(
  cd "$PKI"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
    -days 2 -subj "/CN=mailcow-ldap-auth demo CA" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key -out server.csr \
    -subj "/CN=localhost" 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >ext.cnf
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem \
    -days 2 -extfile ext.cnf 2>/dev/null
  chmod 644 ca.pem server.pem
  chmod 600 ca.key server.key
)

# --- slapd.
say "Starting a private OpenLDAP on 127.0.0.1:$LDAP_PORT (StartTLS)"
install -d -m 700 "$WORK/slapd" "$WORK/slapd/db"
ADMIN_PW=$(openssl rand -hex 12)
READER_PW=$(openssl rand -hex 12)
cat >"$WORK/slapd/slapd.conf" <<EOF
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
pidfile $WORK/slapd/slapd.pid
argsfile $WORK/slapd/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
TLSCACertificateFile $PKI/ca.pem
TLSCertificateFile $PKI/server.pem
TLSCertificateKeyFile $PKI/server.key
database mdb
maxsize 104857600
suffix "$BASE_DN"
rootdn "$ADMIN_DN"
rootpw $ADMIN_PW
directory $WORK/slapd/db
index objectClass eq
index mail,uid eq
access to attrs=userPassword by self write by anonymous auth by * none
access to * by users read by anonymous auth by * none
EOF
cat >"$WORK/slapd/demo.ldif" <<EOF
dn: $BASE_DN
objectClass: top
objectClass: dcObject
objectClass: organization
o: Example
dc: example

dn: ou=services,$BASE_DN
objectClass: organizationalUnit
ou: services

dn: $READER_DN
objectClass: simpleSecurityObject
objectClass: organizationalRole
cn: mailcow-reader
description: the service account mailcow-ldap-auth searches with
userPassword: $(slappasswd -s "$READER_PW")

dn: ou=people,$BASE_DN
objectClass: organizationalUnit
ou: people

dn: uid=alice,ou=people,$BASE_DN
objectClass: inetOrgPerson
objectClass: extensibleObject
uid: alice
cn: Alice Liddell
sn: Liddell
displayName: Alice Liddell
mail: alice@example.org
otherMailbox: staff
userPassword: $(slappasswd -s "$DEMO_PW")

dn: uid=bob,ou=people,$BASE_DN
objectClass: inetOrgPerson
objectClass: extensibleObject
uid: bob
cn: Bob Builder
sn: Builder
displayName: Bob Builder
mail: bob@example.org
otherMailbox: default
userPassword: $(slappasswd -s "Bob-demo-pw-2")
EOF
slapadd -q -f "$WORK/slapd/slapd.conf" -l "$WORK/slapd/demo.ldif"
slapd -f "$WORK/slapd/slapd.conf" -h "ldap://127.0.0.1:$LDAP_PORT/" -d 0 \
  </dev/null >/dev/null 2>"$WORK/slapd/slapd.log" &
SLAPD_PID=$!
wait_for_port "$LDAP_PORT" "$SLAPD_PID" slapd "$WORK/slapd/slapd.log"
echo "slapd pid $SLAPD_PID: $BASE_DN with alice@example.org (otherMailbox: staff) and bob@example.org (otherMailbox: default)"

# --- MariaDB.
say "Starting a private MariaDB on 127.0.0.1:$DB_PORT with mailcow's schema subset"
DB="$WORK/mariadb"
install -d -m 700 "$DB"
mariadb-install-db --no-defaults --datadir="$DB/data" --user=root --skip-test-db \
  --auth-root-authentication-method=socket >"$DB/install.log" 2>&1 ||
  {
    cat "$DB/install.log" >&2
    die "mariadb-install-db failed"
  }
mariadbd --no-defaults --datadir="$DB/data" --socket="$DB/mysqld.sock" --port="$DB_PORT" \
  --pid-file="$DB/mariadbd.pid" --bind-address=127.0.0.1 --user=root --skip-log-bin \
  --innodb-buffer-pool-size=64M </dev/null >/dev/null 2>"$DB/mariadbd.log" &
MARIADB_PID=$!
wait_for_port "$DB_PORT" "$MARIADB_PID" mariadbd "$DB/mariadbd.log"
sql() { mariadb --no-defaults --socket="$DB/mysqld.sock" -uroot "$@"; }
DB_PW=$(openssl rand -hex 12)
sql -e "CREATE DATABASE mailcow CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
        CREATE USER 'mailcow'@'127.0.0.1' IDENTIFIED BY '$DB_PW';
        GRANT ALL ON mailcow.* TO 'mailcow'@'127.0.0.1';"
sql mailcow <"$SCHEMA"
sql mailcow -e "
  INSERT INTO domain (domain, description, mailboxes, defquota, maxquota, quota, active)
    VALUES ('example.org', 'demo domain', 10, 1024, 10240, 102400, 1);
  INSERT INTO templates (template, type, attributes) VALUES
    ('Default', 'mailbox', '$DEFAULT_TEMPLATE'),
    ('Staff', 'mailbox', '$STAFF_TEMPLATE');"
echo "mariadbd pid $MARIADB_PID: database mailcow, domain example.org, mailbox templates Default and Staff (2 GiB, POP3 off)"

# --- The helper's configuration, as on a real server: 0640 root:dovecot,
# passwords in files of their own (same mode).
say "Writing mailcow-ldap-auth's configuration"
CONF_DIR="$WORK/etc"
install -d -m 755 "$CONF_DIR"
install -d -m 700 -o dovecot -g dovecot "$WORK/helper-state"
install -d -m 755 -o nobody -g nogroup "$WORK/vmail"
install -m 640 -g "$DC_GID" /dev/null "$CONF_DIR/ldap-bind-password"
echo "$READER_PW" >"$CONF_DIR/ldap-bind-password"
install -m 640 -g "$DC_GID" /dev/null "$CONF_DIR/db-password"
echo "$DB_PW" >"$CONF_DIR/db-password"
CONF="$CONF_DIR/config.toml"
install -m 640 -g "$DC_GID" /dev/null "$CONF"
cat >"$CONF" <<EOF
# mailcow-ldap-auth demo configuration (contrib/demo/run.sh).
state_dir = "$WORK/helper-state"
# Dovecot copies the helper's stderr into its log.
log_target = "stderr"

[ldap]
hosts = "127.0.0.1:$LDAP_PORT"
use_tls = true
ca_file = "$PKI/ca.pem"
base_dn = "$BASE_DN"
bind_dn = "$READER_DN"
bind_password_file = "$CONF_DIR/ldap-bind-password"
# mailcow's "Attribute Field": its values select the mailbox template.
attribute_field = "otherMailbox"

[dovecot]
uid = "nobody"
gid = "nogroup"
home = "$WORK/vmail/%d/%n"

[database]
host = "127.0.0.1"
port = $DB_PORT
name = "mailcow"
user = "mailcow"
password_file = "$CONF_DIR/db-password"

[[attribute_mapping]]
attribute = "staff"
template = "Staff"

[[attribute_mapping]]
attribute = "default"
template = "Default"

[provisioning]
login_provisioning = true
default_template = "Default"
EOF
sed 's/^/  /' "$CONF"

# --- Dovecot.
say "Starting a private Dovecot 2.3 on 127.0.0.1:$IMAP_PORT (IMAP) with the helper as passdb and userdb"
DC="$WORK/dovecot"
install -d -m 755 "$DC"
cat >"$DC/dovecot.conf" <<EOF
# mailcow-ldap-auth demo (contrib/demo/run.sh): a private instance.
base_dir = $DC/run
state_dir = $DC/state
instance_name = mailcow-ldap-auth-demo-$IMAP_PORT
log_path = $DC/dovecot.log
info_log_path = $DC/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
# Plain-text logins on loopback only, for the demo. In production: TLS.
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_verbose = yes
mail_location = maildir:~/Maildir
first_valid_uid = 500

# contrib/dovecot-2.3/10-auth-mailcow-ldap.conf, with this demo's paths.
passdb {
  driver = checkpassword
  args = $HELPER -c $CONF checkpassword
}
userdb {
  driver = prefetch
}
userdb {
  driver = checkpassword
  args = $HELPER -c $CONF checkpassword
}

service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $IMAP_PORT
  }
  inet_listener imaps {
    port = 0
  }
}
EOF
dovecot -c "$DC/dovecot.conf" -F </dev/null >/dev/null 2>"$DC/dovecot.stderr" &
DOVECOT_PID=$!
wait_for_port "$IMAP_PORT" "$DOVECOT_PID" dovecot "$DC/dovecot.stderr"
echo "dovecot master pid $DOVECOT_PID"

# ---------------------------------------------------------------------------
# 4. An IMAP login, as a mail client does it.

say "IMAP login as $DEMO_USER (her first: no mailbox in mailcow yet)"
echo "mailboxes in mailcow before: $(sql -N mailcow -e 'SELECT COUNT(*) FROM mailbox')"
DEMO_PW="$DEMO_PW" python3 - "$IMAP_PORT" "$DEMO_USER" <<'EOF'
import imaplib, os, sys
port, user = int(sys.argv[1]), sys.argv[2]
imap = imaplib.IMAP4("127.0.0.1", port)
print("S:", imap.welcome.decode())
typ, data = imap.login(user, os.environ["DEMO_PW"])
print(f"C: LOGIN {user} ********")
print("S:", typ, data[0].decode())
typ, data = imap.select("INBOX")
print("C: SELECT INBOX")
print("S:", typ, f"[{data[0].decode()} messages]")
imap.logout()
print("C: LOGOUT")
EOF

# ---------------------------------------------------------------------------
# 5. What happened.

# Dovecot's log process may write a moment after the client got its answer.
for _ in $(seq 100); do
  grep -q "login user=\"$DEMO_USER\"" "$DC/dovecot.log" 2>/dev/null && break
  sleep 0.05
done
say "The helper's lines in Dovecot's log ($DC/dovecot.log)"
grep 'mailcow-ldap-auth: ' "$DC/dovecot.log" | sed 's/^/  /' ||
  die "no line of the helper in Dovecot's log"
echo "(Dovecot labels whatever a checkpassword helper writes to stderr \"Error\"; the helper's own"
echo " level follows its name. The userdb step was served by prefetch from the passdb reply: one run.)"
grep -q "mailbox $DEMO_USER created from template" "$DC/dovecot.log" ||
  die "the helper did not log the creation of $DEMO_USER's mailbox"

say "The mailbox row the first login created"
sql -t mailcow -e "
  SELECT username, name, quota AS quota_bytes, ROUND(quota / 1048576) AS quota_mib, authsource, active,
         JSON_VALUE(attributes, '\$.imap_access') AS imap, JSON_VALUE(attributes, '\$.pop3_access') AS pop3,
         JSON_VALUE(attributes, '\$.tls_enforce_in') AS tls_in
    FROM mailbox WHERE username = '$DEMO_USER';"
say "The template applied (attribute_hash = sha1 of the template, as mailcow computes it)"
# mailcow: sha1(json_encode(<template attributes text>)); for these templates
# (no '/', ASCII only) JSON_QUOTE() encodes exactly as PHP's json_encode().
sql -t mailcow -e "
  SELECT m.username, JSON_VALUE(m.attributes, '\$.attribute_hash') AS attribute_hash,
         COALESCE(t.template, '(no template matches)') AS template
    FROM mailbox m
    LEFT JOIN templates t ON t.type = 'mailbox'
         AND SHA1(JSON_QUOTE(t.attributes)) = JSON_VALUE(m.attributes, '\$.attribute_hash')
   WHERE m.username = '$DEMO_USER';
  SELECT GROUP_CONCAT(tag_name) AS tags FROM tags_mailbox WHERE username = '$DEMO_USER';
  SELECT address, goto, active FROM alias WHERE address = '$DEMO_USER';"
ROW=$(sql -N mailcow -e "SELECT CONCAT(quota, ' ', authsource) FROM mailbox WHERE username = '$DEMO_USER'")
[ "$ROW" = "2147483648 ldap" ] || die "unexpected mailbox row for $DEMO_USER: $ROW"

say "doveadm user $DEMO_USER (the userdb answer, from the mailbox table)"
doveadm -c "$DC/dovecot.conf" user "$DEMO_USER" | sed 's/^/  /'

# ---------------------------------------------------------------------------
# 6. The admin's diagnostics.

say "mailcow-ldap-auth -c $CONF test $DEMO_USER   (password on stdin)"
set +e
printf '%s\n' "$DEMO_PW" | "$HELPER" -c "$CONF" test "$DEMO_USER"
TEST_STATUS=$?
say "mailcow-ldap-auth -c $CONF connection-test"
"$HELPER" -c "$CONF" connection-test
CONN_STATUS=$?
set -e
echo "exit status: test $TEST_STATUS, connection-test $CONN_STATUS"
[ "$TEST_STATUS" -eq 0 ] || die "mailcow-ldap-auth test exited $TEST_STATUS"
[ "$CONN_STATUS" -eq 0 ] || die "mailcow-ldap-auth connection-test exited $CONN_STATUS"

# ---------------------------------------------------------------------------
# 7. Stop everything, and check that it stopped.

say "Stopping everything this demo started"
stop_all
[ -z "$LEFT" ] || die "still running after the stop:$LEFT"
echo "stopped by pid: dovecot (and its $(echo "$DOVECOT_CHILDREN" | wc -w) processes), mariadbd, slapd; nothing of the demo is left running"
printf '\n\033[1;32mDEMO OK\033[0m: %s logged in over IMAP through Dovecot + mailcow-ldap-auth; her mailbox was created from template "Staff".\n' "$DEMO_USER"
