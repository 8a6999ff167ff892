#!/usr/bin/env bash
# Build the runtime image (packaging/Dockerfile) from the static binary, with no
# registry access (FROM scratch). Prints the image's name last.
#
# Usage: packaging/build-image.sh [NAME]       (default mailcow-ldap-auth:<version>)
# Environment:
#   ENGINE     the build command: docker (default), podman, or buildah with any
#              global options, e.g. "buildah --storage-driver vfs"
#   BIN        the binary to put in (default: built by packaging/build-release.sh)
#   CA_BUNDLE  the CA certificates trusted for LDAPS/StartTLS and the database
#              (default /etc/ssl/certs/ca-certificates.crt, Debian's ca-certificates)
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
name=${1:-mailcow-ldap-auth:$version}
read -r -a engine <<<"${ENGINE:-docker}"
bin=${BIN:-$(packaging/build-release.sh | tail -n 1)}
ca=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
[ -x "$bin" ] || { echo "build-image.sh: $bin is not an executable" >&2; exit 2; }
[ -s "$ca" ] || { echo "build-image.sh: no CA bundle at $ca (install ca-certificates, or set CA_BUNDLE)" >&2; exit 2; }
# An image without a libc needs a binary without an interpreter (static or static-pie).
# (An ELF program header of type PT_INTERP, 3, names the dynamic loader.)
u() { od -An -t "u$2" -j "$1" -N "$2" "$bin" | tr -d ' '; }
phoff=$(u 32 8) phentsize=$(u 54 2) phnum=$(u 56 2)
interp=no
for ((i = 0; i < phnum; i++)); do
  [ "$(u $((phoff + i * phentsize)) 4)" = 3 ] && interp=yes
done
if [ "$interp" = yes ]; then
  echo "build-image.sh: $bin is dynamically linked; build it with packaging/build-release.sh" >&2
  exit 2
fi

ctx=target/image
rm -rf "$ctx"
mkdir -p "$ctx/rootfs/usr/bin" "$ctx/rootfs/etc/ssl/certs" "$ctx/rootfs/etc/mailcow-ldap-auth" "$ctx/state"
install -m 0755 "$bin" "$ctx/rootfs/usr/bin/mailcow-ldap-auth"
install -m 0644 "$ca" "$ctx/rootfs/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/:/nonexistent\nmailcow-ldap-auth:x:10001:10001::/nonexistent:/nonexistent\n' >"$ctx/rootfs/etc/passwd"
printf 'root:x:0:\nmailcow-ldap-auth:x:10001:\n' >"$ctx/rootfs/etc/group"
chmod 0644 "$ctx/rootfs/etc/passwd" "$ctx/rootfs/etc/group"
chmod 0755 "$ctx/rootfs/etc/mailcow-ldap-auth"
chmod 0700 "$ctx/state"
cp packaging/Dockerfile "$ctx/Dockerfile"

case "$(basename "${engine[0]}")" in
  buildah)
    # --format docker: the OCI format has no HEALTHCHECK.
    "${engine[@]}" bud --format docker --isolation chroot -f "$ctx/Dockerfile" -t "$name" "$ctx" >&2
    ;;
  *)
    "${engine[@]}" build -f "$ctx/Dockerfile" -t "$name" "$ctx" >&2
    ;;
esac
echo "$name"
