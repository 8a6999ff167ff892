#!/usr/bin/env bash
# The test command (README, .ci/run): installs the Debian packages the tests
# start privately, then runs formatting, lints, unit and integration tests.
# Every server the tests need is started by the tests themselves, on loopback
# ports from temporary folders, and stopped by pid.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  openssl ca-certificates slapd ldap-utils
  mariadb-server mariadb-client
  dovecot-core dovecot-imapd dovecot-pop3d dovecot-managesieved dovecot-auth-lua
  postfix sasl2-bin libsasl2-modules swaks redis-server procps
  # tests/integration/mailcow_install.rs: a git checkout laid out like mailcow-dockerized
  git
  # tests/integration/image.rs: builds and runs the image (vfs storage, --isolation chroot)
  buildah
  # tests/integration/php_json.rs: PHP's own json_encode, the reference for attribute_hash
  php-cli
  # A Samba AD DC for the Active Directory tests (tests/integration/support/samba.rs):
  # the DC, its provisioning data, ldbmodify for offline edits, ip for the namespace's loopback.
  samba-ad-dc
  samba-ad-provision
  ldb-tools
  iproute2
  # ...and socat, to reach a server the AD tests run in the DC's network namespace.
  socat
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "tests/run.sh: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Postfix (started by the end-to-end tests) logs through a unix datagram socket
# whose queue is net.unix.max_dgram_qlen long (often 10): a full queue blocks
# every Postfix process until its log daemon catches up, which under load made
# a test time out. A longer queue for this machine's tests; best effort.
sysctl -qw net.unix.max_dgram_qlen=512 2>/dev/null || true

cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
# The shipped (static) binary, which tests/integration/image.rs puts into the image.
packaging/build-release.sh >/dev/null
# Bounded, so that a hung server fails the run in minutes rather than at CI's limit.
timeout --kill-after=30 2400 cargo test --locked "$@"

# The Debian package: build, install, check, remove (tests/packaging.sh says what).
bash tests/packaging.sh
