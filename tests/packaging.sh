#!/usr/bin/env bash
# The Debian package, end to end, on this machine:
#   1. builds it with cargo-deb (installed from crates.io if missing);
#   2. checks the .deb: control fields, conffiles, the exact file list and modes;
#   3. installs it with dpkg -i, and checks modes and owners on disk, the state
#      directory, the postinst's handling of group dovecot, the systemd units
#      (systemd-analyze verify and security) and enabling the timer;
#   4. runs the installed binary from the installed paths: --version, the shipped
#      default config (as user dovecot, and refused to user nobody), and
#      connection-test as user dovecot against a private slapd (StartTLS, CA file,
#      service account with a password file);
#   5. dpkg -r: only the conffile may stay, unchanged (no unit links, no state);
#      then dpkg -P: nothing may stay.
#
# Needs root (dpkg -i). Installs what it needs with apt-get. It installs and
# purges the package mailcow-ldap-auth, so it refuses to run where that package
# is already installed, unless CI=true (a test machine) or
# MAILCOW_LDAP_AUTH_PURGE_OK=1.
# Prints "packaging: N passed, N failed, N skipped" last; exits non-zero on failure.
set -euo pipefail
cd "$(dirname "$0")/.."

PKG=mailcow-ldap-auth
CONF_DIR=/etc/$PKG
CONF=$CONF_DIR/config.toml
DOC=/usr/share/doc/$PKG
UNITS=/usr/lib/systemd/system
SERVICE=$PKG-sync.service
TIMER=$PKG-sync.timer
TMPFILES=/usr/lib/tmpfiles.d/$PKG.conf
SERVE_SERVICE=$PKG-serve.service
SERVE_TMPFILES=/usr/lib/tmpfiles.d/$PKG-serve.conf
STATE=/run/$PKG
WANTS_LINK=/etc/systemd/system/timers.target.wants/$TIMER
CARGO_DEB_VERSION="^3.8"

passed=0
failed=0
skipped=0
ok() { passed=$((passed + 1)); echo "  ok    $*"; }
bad() { failed=$((failed + 1)); echo "  FAIL  $*"; }
skip() { skipped=$((skipped + 1)); echo "  SKIP  $*"; }
step() { echo "== $*"; }
indent() { sed 's/^/    | /'; }
# check DESCRIPTION COMMAND...: one counted check.
check() {
    local what=$1
    shift
    if "$@"; then ok "$what"; else bad "$what"; fi
}
# expect_stat PATH "MODE USER:GROUP"
expect_stat() {
    local got
    got=$(stat -c '%a %U:%G' "$1" 2>/dev/null || echo "missing")
    if [ "$got" = "$2" ]; then ok "$1 is $2"; else bad "$1 is $got, expected $2"; fi
}
# Whether OUTPUT (a variable) contains TEXT; prints OUTPUT when it does not.
contains() {
    if grep -qF -- "$2" <<<"$1"; then return 0; fi
    echo "    expected \"$2\" in:" && indent <<<"$1"
    return 1
}
pkg_state() { dpkg-query -W -f='${db:Status-Abbrev}' "$PKG" 2>/dev/null | tr -d ' ' || true; }

tmp=""
slapd_pid=""
we_installed=""
finish() {
    local rc=$1
    trap - EXIT
    if [ -n "$slapd_pid" ]; then
        kill "$slapd_pid" 2>/dev/null || true
        wait "$slapd_pid" 2>/dev/null || true
    fi
    if [ -n "$we_installed" ] && [ -n "$(pkg_state)" ]; then
        echo "packaging.sh: purging $PKG left installed by this test"
        rm -f "$CONF_DIR/ldap-bind-password"
        dpkg -P "$PKG" >/dev/null 2>&1 || true
    fi
    [ -z "$tmp" ] || rm -rf "$tmp"
    echo "packaging: $passed passed, $failed failed, $skipped skipped"
    if [ "$rc" -eq 0 ] && [ "$failed" -gt 0 ]; then rc=1; fi
    exit "$rc"
}
trap 'finish $?' EXIT
die() {
    echo "packaging.sh: $*" >&2
    failed=$((failed + 1))
    exit 1
}

# --------------------------------------------------------------------------
step "prerequisites"
[ "$(id -u)" -eq 0 ] || die "must run as root (it installs the package with dpkg -i)"
for f in README.md CHANGELOG.md LICENSE; do
    [ -f "$f" ] || die "$f is missing: the package ships it (in $DOC)"
done
case "$(pkg_state)" in
    "") ;;
    *)
        if [ "${CI:-}" = true ] || [ "${MAILCOW_LDAP_AUTH_PURGE_OK:-}" = 1 ]; then
            echo "  $PKG is installed (state $(pkg_state)); purging it first"
            rm -f "$CONF_DIR/ldap-bind-password"
            dpkg -P "$PKG" >/dev/null
        else
            die "$PKG is installed here (state $(pkg_state)); this test would purge it and its configuration. Remove it (dpkg -P $PKG) or set MAILCOW_LDAP_AUTH_PURGE_OK=1"
        fi
        ;;
esac
# dpkg-dev: dpkg-shlibdeps for the Depends line; dovecot-core: group dovecot;
# slapd: the private directory; systemd: systemd-analyze and systemctl; file: is the binary static.
needed=(dpkg-dev dovecot-core slapd openssl systemd file)
missing=()
for p in "${needed[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "  installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! command -v cargo-deb >/dev/null 2>&1; then
    echo "  installing cargo-deb $CARGO_DEB_VERSION (cargo install --locked)"
    cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION" --quiet
fi
echo "  $(cargo deb --version)"
getent group dovecot >/dev/null || die "group dovecot is missing although dovecot-core is installed"

tmp=$(mktemp -d /tmp/mailcow-ldap-auth-packaging.XXXXXX)
# Leftovers from an earlier run would make the "nothing stays" checks meaningless.
leftovers() {
    find /etc /usr /var /run /opt /srv \( -path /var/lib/dpkg -o -path /var/tmp -o -path /var/cache \
        -o -path /proc -o -path /sys \) -prune -o -path "*$PKG*" -print 2>/dev/null | sort
}
before=$(leftovers)
[ -z "$before" ] || die "files named *$PKG* exist before installing (remove them first):
$before"

# --------------------------------------------------------------------------
step "contrib/config/example.toml documents every key of src/config.rs"
# "section key" for every field of the Raw* structs (the file as written); a
# section is named by the RawConfig field whose type is that struct.
awk '
    /^pub struct Raw[A-Za-z]* [{]/ { s = $3; next }
    s != "" && /^[}]/ { s = ""; next }
    s != "" && /^    pub [a-z_]+:/ {
        k = $2; sub(/:$/, "", k)
        if (s == "RawConfig" && match($0, /Raw[A-Za-z]+/)) { sect[substr($0, RSTART, RLENGTH)] = k; next }
        keys[++n] = s " " k
    }
    END { for (i = 1; i <= n; i++) { split(keys[i], a, " "); print (a[1] == "RawConfig" ? "-" : sect[a[1]]), a[2] } }
' src/config.rs | sort -u >"$tmp/keys.rs"
# "section key" for every key line of example.toml, set or commented out ("#key = ...").
awk '
    BEGIN { s = "-" }
    /^#? ?\[\[?[a-z_]+\]\]?[ \t]*$/ { s = $0; gsub(/[#\[\] \t]/, "", s); next }
    /^#? ?[a-z_]+ = / { k = $0; sub(/^#? ?/, "", k); sub(/ = .*/, "", k); print s, k }
' contrib/config/example.toml | sort -u >"$tmp/keys.example"
undocumented=$(comm -23 "$tmp/keys.rs" "$tmp/keys.example" | tr '\n' ',' | sed 's/,$//; s/,/, /g')
unknown=$(comm -13 "$tmp/keys.rs" "$tmp/keys.example" | tr '\n' ',' | sed 's/,$//; s/,/, /g')
check "src/config.rs has $(wc -l <"$tmp/keys.rs") keys; each is in example.toml${undocumented:+ - missing: $undocumented}" \
    test -z "$undocumented"
check "example.toml names no key that src/config.rs lacks${unknown:+: $unknown}" test -z "$unknown"

# --------------------------------------------------------------------------
step "build (cargo deb through packaging/build-release.sh: the shipped, statically linked build)"
if ! CARGO_SUBCOMMAND=deb packaging/build-release.sh >"$tmp/build.out" 2>"$tmp/build.err"; then
    cat "$tmp/build.out" "$tmp/build.err" >&2
    die "cargo deb failed"
fi
deb=$(tail -n 1 "$tmp/build.out")
[ -f "$deb" ] || die "cargo deb printed no .deb path (got: $deb)"
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
echo "  built $deb (crate version $version)"

# --------------------------------------------------------------------------
step "the .deb"
field() { dpkg-deb -f "$deb" "$1"; }
check "Package: $PKG" test "$(field Package)" = "$PKG"
check "Version: $version-1" test "$(field Version)" = "$version-1"
# packaging/build-release.sh links statically on glibc: then there is nothing to depend on.
if [ -z "$(field Depends)" ]; then
    check "Depends is empty: the packaged binary is statically linked" \
        sh -c "dpkg-deb --fsys-tarfile '$deb' | tar -xO ./usr/bin/$PKG | file - | grep -q 'static'"
else
    check "Depends names libc6 ($(field Depends))" contains "$(field Depends)" "libc6"
fi
check "Recommends: dovecot-core" test "$(field Recommends)" = "dovecot-core"
dpkg-deb -e "$deb" "$tmp/control"
check "conffiles is exactly $CONF" test "$(cat "$tmp/control/conffiles")" = "$CONF"
check "triggers: interest-noawait /usr/sbin/dovecot" grep -qx "interest-noawait /usr/sbin/dovecot" "$tmp/control/triggers"
for s in postinst prerm postrm; do
    check "$s is executable and valid sh" sh -n "$tmp/control/$s"
    check "$s has no debhelper code (no unit masking on remove)" \
        sh -c "! grep -q deb-systemd-helper '$tmp/control/$s'"
done
# The exact contents: mode, owner, path (dpkg-deb -c prints "-rw-r----- 0/0 ... ./path";
# cargo-deb stores numeric owners, other tools "root/root").
dpkg-deb -c "$deb" | awk '$1 !~ /^d/ { sub(/^\./, "", $6); sub(/^root\/root$/, "0/0", $2); print $1, $2, $6 }' |
    sort >"$tmp/contents"
cat >"$tmp/expected" <<EOF
-rw-r----- 0/0 $CONF
-rw-r--r-- 0/0 $DOC/CHANGELOG.md
-rw-r--r-- 0/0 $DOC/README.md
-rw-r--r-- 0/0 $DOC/changelog.Debian.gz
-rw-r--r-- 0/0 $DOC/copyright
-rw-r--r-- 0/0 $DOC/example.toml
-rw-r--r-- 0/0 $DOC/minimal.toml
-rw-r--r-- 0/0 $UNITS/$SERVICE
-rw-r--r-- 0/0 $UNITS/$TIMER
-rw-r--r-- 0/0 $UNITS/$SERVE_SERVICE
-rw-r--r-- 0/0 $TMPFILES
-rw-r--r-- 0/0 $SERVE_TMPFILES
-rwxr-xr-x 0/0 /usr/bin/$PKG
EOF
sort -o "$tmp/expected" "$tmp/expected"
if diff -u "$tmp/expected" "$tmp/contents" >"$tmp/contents.diff"; then
    ok "file list, modes and owners are exactly as expected (${PKG} ships $(wc -l <"$tmp/contents") files)"
else
    bad "file list differs from the expected one:"
    sed 's/^/    /' "$tmp/contents.diff"
fi

# --------------------------------------------------------------------------
step "dpkg -i"
we_installed=1
if ! dpkg -i "$deb" >"$tmp/install.log" 2>&1; then
    cat "$tmp/install.log" >&2
    die "dpkg -i failed"
fi
indent <"$tmp/install.log"
check "dpkg reports it installed" test "$(pkg_state)" = ii
expect_stat /usr/bin/$PKG "755 root:root"
expect_stat "$CONF_DIR" "755 root:root"
expect_stat "$CONF" "640 root:dovecot"
expect_stat "$UNITS/$SERVICE" "644 root:root"
expect_stat "$UNITS/$TIMER" "644 root:root"
expect_stat "$TMPFILES" "644 root:root"
expect_stat "$DOC/example.toml" "644 root:root"
expect_stat "$STATE" "2770 root:dovecot"
expect_stat "$STATE/sync.lock" "660 root:dovecot"
check "dpkg --verify finds nothing changed" test -z "$(dpkg --verify "$PKG")"
check "$DOC/copyright holds the LICENSE text" grep -qF "$(sed -n 5p LICENSE)" "$DOC/copyright"
check "$DOC/changelog.Debian.gz names version $version" sh -c "zcat '$DOC/changelog.Debian.gz' | head -n 1 | grep -qF '($version-1)'"
check "the installed config is the shipped minimal.toml" cmp -s "$CONF" contrib/config/minimal.toml
check "user dovecot can write to $STATE" runuser -u dovecot -- sh -c "touch '$STATE/probe' && rm '$STATE/probe'"
check "user nobody cannot write to $STATE" runuser -u nobody -- sh -c "! touch '$STATE/probe' 2>/dev/null"

step "postinst and the group dovecot"
# As if the group had appeared after installation (dovecot-core installed later):
# the trigger on /usr/sbin/dovecot runs "postinst triggered".
chgrp root "$CONF"
/var/lib/dpkg/info/$PKG.postinst triggered /usr/sbin/dovecot
expect_stat "$CONF" "640 root:dovecot"
# A group chosen by the admin is kept on upgrade; reinstalling over itself works.
chgrp nogroup "$CONF"
if dpkg -i "$deb" >"$tmp/reinstall.log" 2>&1; then ok "dpkg -i over the installed package (upgrade path)"; else
    bad "dpkg -i over the installed package" && indent <"$tmp/reinstall.log"
fi
expect_stat "$CONF" "640 root:nogroup"
chgrp dovecot "$CONF"

# --------------------------------------------------------------------------
step "systemd units"
if ! command -v systemd-analyze >/dev/null 2>&1; then
    skip "systemd-analyze verify: systemd-analyze is not installed and could not be installed"
else
    # First prove systemd-analyze works here at all, on a trivial unit, so that an
    # environment problem is reported as a skip and not blamed on our units.
    mkdir -p "$tmp/probe"
    printf '[Service]\nType=oneshot\nExecStart=/bin/true\n' >"$tmp/probe/packaging-probe.service"
    if ! probe_out=$(cd "$tmp" && systemd-analyze verify "$tmp/probe/packaging-probe.service" 2>&1); then
        skip "systemd-analyze verify cannot run in this environment: $probe_out"
    else
        if out=$(cd "$tmp" && systemd-analyze verify "$UNITS/$SERVICE" "$UNITS/$TIMER" "$UNITS/$SERVE_SERVICE" 2>&1) && [ -z "$out" ]; then
            ok "systemd-analyze verify $SERVICE $TIMER $SERVE_SERVICE: no findings"
        else
            bad "systemd-analyze verify $SERVICE $TIMER $SERVE_SERVICE:"
            indent <<<"$out"
        fi
        # Exposure score (0 = locked down, 10 = not at all); fail above 2.5.
        if sec=$(cd "$tmp" && systemd-analyze security --offline=true --threshold=25 "$UNITS/$SERVICE" 2>&1); then
            ok "systemd-analyze security: $(grep -o 'exposure level.*' <<<"$sec" | head -n 1)"
        else
            bad "systemd-analyze security (threshold 2.5):"
            indent <<<"$sec"
        fi
    fi
fi
unit_has() { grep -qx -- "$2" "$UNITS/$1"; }
for line in "Type=oneshot" "ExecStart=/usr/bin/$PKG sync" "DynamicUser=yes" "SupplementaryGroups=dovecot" \
    "NoNewPrivileges=yes" "ProtectSystem=strict" "ProtectHome=yes" "PrivateTmp=yes" \
    "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6" "ReadWritePaths=$STATE"; do
    check "$SERVICE: $line" unit_has "$SERVICE" "$line"
done
check "$SERVICE documents LoadCredential= for the bind password" \
    grep -q "LoadCredential=ldap-bind-password:" "$UNITS/$SERVICE"
for line in "OnCalendar=minutely" "Persistent=true" "RandomizedDelaySec=20s" "WantedBy=timers.target"; do
    check "$TIMER: $line" unit_has "$TIMER" "$line"
done
check "the timer is not enabled by installing" test ! -e "$WANTS_LINK"
if systemctl enable "$TIMER" >"$tmp/enable.log" 2>&1 && [ -L "$WANTS_LINK" ]; then
    ok "systemctl enable $TIMER"
else
    bad "systemctl enable $TIMER" && indent <"$tmp/enable.log"
fi

# --------------------------------------------------------------------------
step "the installed binary"
out=$($PKG --version 2>&1) || true
check "$PKG --version (from PATH: $(command -v $PKG))" test "$out" = "$PKG $version"

# The shipped default config, from its installed path, as Dovecot's user: it
# must load (no "config ..." error) and name only the placeholder server.
set +e
out=$(cd / && runuser -u dovecot -- $PKG connection-test 2>&1)
rc=$?
set -e
check "default config loads for user dovecot and names the placeholder host (exit $rc)" \
    contains "$out" "resolve ldap.example.org"
check "default config: connection-test fails (exit 1), as nothing real is configured" test "$rc" -eq 1
set +e
out=$(cd / && runuser -u nobody -- $PKG connection-test 2>&1)
rc=$?
set -e
check "default config is refused to user nobody (exit $rc)" contains "$out" "cannot be read by uid"
for f in "$DOC/example.toml" "$DOC/minimal.toml"; do
    set +e
    out=$(cd / && runuser -u dovecot -- $PKG -c "$f" connection-test 2>&1)
    set -e
    check "$f loads with the real loader" contains "$out" "config: $f"
done

step "connection-test against a private slapd, from the installed paths"
mkdir -p "$tmp/slapd/db"
chmod 755 "$tmp" "$tmp/slapd"
(
    cd "$tmp/slapd"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
        -days 2 -subj "/CN=Packaging Test CA" -addext basicConstraints=critical,CA:TRUE \
        -addext keyUsage=critical,keyCertSign,cRLSign
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key -out server.csr \
        -subj /CN=localhost
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >ext.cnf
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile ext.cnf
    chmod 644 ca.pem
) >"$tmp/pki.log" 2>&1 || { cat "$tmp/pki.log" >&2; die "openssl failed"; }
cat >"$tmp/slapd/slapd.conf" <<EOF
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
pidfile $tmp/slapd/slapd.pid
argsfile $tmp/slapd/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
TLSCACertificateFile $tmp/slapd/ca.pem
TLSCertificateFile $tmp/slapd/server.pem
TLSCertificateKeyFile $tmp/slapd/server.key
database mdb
maxsize 10485760
suffix "dc=example,dc=org"
rootdn "cn=admin,dc=example,dc=org"
rootpw adminpw
directory $tmp/slapd/db
access to attrs=userPassword by self write by anonymous auth by * none
access to * by users read by anonymous auth by * none
EOF
cat >"$tmp/slapd/data.ldif" <<'EOF'
dn: dc=example,dc=org
objectClass: top
objectClass: dcObject
objectClass: organization
o: Example
dc: example

dn: cn=reader,dc=example,dc=org
objectClass: simpleSecurityObject
objectClass: organizationalRole
cn: reader
userPassword: readerpw

dn: uid=jdoe,dc=example,dc=org
objectClass: inetOrgPerson
uid: jdoe
cn: John Doe
sn: Doe
mail: jdoe@example.org
userPassword: secret1
EOF
slapadd -f "$tmp/slapd/slapd.conf" -l "$tmp/slapd/data.ldif" >"$tmp/slapadd.log" 2>&1 ||
    { cat "$tmp/slapadd.log" >&2; die "slapadd failed"; }
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# Start slapd on a free port; another process may take the port between the
# check and slapd's bind, so a slapd that exits is retried on another port.
start_slapd() {
    port=""
    for _ in $(seq 1 50); do
        p=$((20000 + RANDOM % 40000))
        if ! port_in_use "$p"; then port=$p && break; fi
    done
    [ -n "$port" ] || die "no free port found"
    # -d 256 (stats) logs why slapd stops, e.g. a failed bind.
    slapd -f "$tmp/slapd/slapd.conf" -h "ldap://127.0.0.1:$port/" -d 256 </dev/null >/dev/null 2>"$tmp/slapd.log" &
    slapd_pid=$!
    for _ in $(seq 1 100); do
        port_in_use "$port" && return 0
        kill -0 "$slapd_pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}
started=""
for attempt in 1 2 3; do
    if start_slapd; then started=yes && break; fi
    echo "  slapd did not come up on 127.0.0.1:$port (attempt $attempt):"
    indent <"$tmp/slapd.log" | tail -n 5
    kill "$slapd_pid" 2>/dev/null || true
    wait "$slapd_pid" 2>/dev/null || true
done
[ -n "$started" ] || die "slapd did not start (three attempts)"
echo "  slapd (pid $slapd_pid) on 127.0.0.1:$port"

# The installed config file, edited as an admin would; restored afterwards.
cp -p "$CONF" "$tmp/config.toml.orig"
install -m 0640 -o root -g dovecot /dev/null "$CONF_DIR/ldap-bind-password"
echo readerpw >"$CONF_DIR/ldap-bind-password"
cat >"$CONF" <<EOF
[ldap]
hosts = "127.0.0.1:$port"
base_dn = "dc=example,dc=org"
use_tls = true
ca_file = "$tmp/slapd/ca.pem"
bind_dn = "cn=reader,dc=example,dc=org"
bind_password_file = "$CONF_DIR/ldap-bind-password"
EOF
set +e
out=$(cd / && runuser -u dovecot -- $PKG connection-test 2>&1)
rc=$?
set -e
check "connection-test as user dovecot exits 0 (got $rc)" test "$rc" -eq 0
check "StartTLS with the CA file: certificate verified" contains "$out" "StartTLS handshake, certificate verified"
check "service bind with the password file" contains "$out" "service bind as cn=reader,dc=example,dc=org"
check "every check passed" contains "$out" "RESULT: 1 of 1 host(s) passed every check"
cat "$tmp/config.toml.orig" >"$CONF"
rm -f "$CONF_DIR/ldap-bind-password"
expect_stat "$CONF" "640 root:dovecot"
check "the conffile is unchanged again (dpkg --verify)" test -z "$(dpkg --verify "$PKG")"
kill "$slapd_pid" 2>/dev/null || true
wait "$slapd_pid" 2>/dev/null || true
slapd_pid=""

# --------------------------------------------------------------------------
step "dpkg -r"
if dpkg -r "$PKG" >"$tmp/remove.log" 2>&1; then ok "dpkg -r"; else
    bad "dpkg -r" && indent <"$tmp/remove.log"
fi
check "dpkg reports only config files left (rc)" test "$(pkg_state)" = rc
expect_stat "$CONF" "640 root:dovecot"
check "the conffile is the shipped one" cmp -s "$CONF" contrib/config/minimal.toml
check "the timer link is gone" test ! -e "$WANTS_LINK" -a ! -L "$WANTS_LINK"
check "the state directory is gone" test ! -e "$STATE"
after=$(leftovers)
expected_after=$(printf '%s\n%s' "$CONF_DIR" "$CONF")
if [ "$after" = "$expected_after" ]; then ok "nothing but $CONF (and its folder) stays"; else
    bad "files left after dpkg -r:" && indent <<<"$after"
fi
stray=""
while read -r _ _ path; do
    [ "$path" = "$CONF" ] || [ ! -e "$path" ] || stray="$stray $path"
done <"$tmp/contents"
check "no file of the package but the conffile remains${stray:+:$stray}" test -z "$stray"

step "dpkg -P"
if dpkg -P "$PKG" >"$tmp/purge.log" 2>&1; then ok "dpkg -P"; else
    bad "dpkg -P" && indent <"$tmp/purge.log"
fi
check "dpkg no longer knows the package" test -z "$(pkg_state)"
after=$(leftovers)
if [ -z "$after" ]; then ok "nothing stays after purge"; else
    bad "files left after dpkg -P:" && indent <<<"$after"
fi
we_installed=""
