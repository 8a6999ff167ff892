#!/usr/bin/env bash
# Build the release binary the way it is shipped and measured, and print its path.
#
# On glibc Linux it is linked statically (static-pie, crt-static): a login is
# one short process per attempt, and dynamic loading (ld.so, libgcc_s, libc,
# libm) was a third of a login's own time (contrib/bench/README.md). Name
# resolution still works: glibc >= 2.34 has the files and dns NSS modules
# built in. ASLR is kept (static-pie). crt-static cannot be set in
# .cargo/config.toml without breaking proc-macro builds, hence this script:
# it passes --target, so the flag reaches the binary only.
#
# Usage: packaging/build-release.sh [extra cargo args]   (prints the binary's path last)
#        CARGO_SUBCOMMAND=deb packaging/build-release.sh   (cargo deb; prints the .deb's path last)
set -euo pipefail
cd "$(dirname "$0")/.."
host=$(rustc -vV | sed -n 's/^host: //p')
flags="${RUSTFLAGS:-}"
case "$host" in
  *-linux-gnu*) flags="$flags -C target-feature=+crt-static" ;;
esac
if [ "${CARGO_SUBCOMMAND:-build}" = "deb" ]; then
  # cargo deb prints the .deb's path last.
  RUSTFLAGS="$flags" exec cargo deb --locked --target "$host" "$@"
else
  RUSTFLAGS="$flags" cargo build --release --locked --target "$host" "$@" >&2
fi
echo "target/$host/release/mailcow-ldap-auth"
