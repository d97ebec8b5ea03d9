#!/usr/bin/env bash
# Builds the Debian package pen-rs with dpkg-deb (no cargo-deb needed, works offline):
#   scripts/build-deb.sh [--debug] [--out DIR]
# --debug packs the dev-profile binaries (quick, for CI); the default is --release.
# Writes DIR/pen-rs_VERSION_ARCH.deb (DIR defaults to target/deb) and prints its path last.
#
# Contents: /usr/bin/{pen,penctl,pen-lab,pen-sim} (debug info stripped), the systemd unit
# /usr/lib/systemd/system/pen-rs@.service, man pages (docs/man/ by hand for pen and penctl,
# generated from the clap definitions for pen-lab and pen-sim), bash and zsh completions,
# /usr/share/doc/pen-rs/copyright and the conffiles /etc/pen-rs/example.{conf,cfg}.
# Conflicts/Replaces/Provides: pen (same program names as Debian's C Pen; README, "Installing
# and running under systemd"). Depends from dpkg-shlibdeps when present, else a fixed list.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_INCREMENTAL=0

profile=release
out=target/deb
while [ $# -gt 0 ]; do
  case "$1" in
    --debug) profile=debug ;;
    --release) profile=release ;;
    --out) out="${2:?--out needs a directory}"; shift ;;
    *) echo "build-deb: unknown argument '$1' (expected --debug, --release or --out DIR)" >&2; exit 2 ;;
  esac
  shift
done
for tool in dpkg-deb gzip strip; do
  command -v "$tool" >/dev/null || { echo "build-deb: $tool not found (scripts/install-deps.sh installs it)" >&2; exit 1; }
done

if [ "$profile" = release ]; then
  cargo build --release --workspace --bins
else
  cargo build --workspace --bins
fi
bin="target/$profile"

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
arch=$(dpkg --print-architecture)
work=$(mktemp -d "${TMPDIR:-/tmp}/pen-rs-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
root="$work/debian/pen-rs"   # the layout dpkg-shlibdeps expects
mkdir -p "$root/DEBIAN" "$root/usr/bin" "$root/usr/lib/systemd/system" \
  "$root/usr/share/man/man1" "$root/usr/share/bash-completion/completions" \
  "$root/usr/share/zsh/vendor-completions" "$root/usr/share/doc/pen-rs" "$root/etc/pen-rs"

for b in pen penctl pen-lab pen-sim; do
  strip --strip-debug -o "$root/usr/bin/$b" "$bin/$b"
  chmod 0755 "$root/usr/bin/$b"
done
install -m 0644 packaging/pen-rs@.service "$root/usr/lib/systemd/system/"
install -m 0644 packaging/example.conf packaging/example.cfg "$root/etc/pen-rs/"
install -m 0644 packaging/copyright "$root/usr/share/doc/pen-rs/copyright"

gen="$work/gen"
"$bin/pen-lab" gen-docs "$gen" 2>/dev/null
"$bin/pen-sim" gen-docs "$gen" 2>/dev/null
cp docs/man/pen.1 docs/man/penctl.1 "$gen"/*.1 "$root/usr/share/man/man1/"
gzip -9n "$root"/usr/share/man/man1/*.1
install -m 0644 packaging/completions/pen.bash "$root/usr/share/bash-completion/completions/pen"
install -m 0644 packaging/completions/penctl.bash "$root/usr/share/bash-completion/completions/penctl"
install -m 0644 "$gen/pen-lab" "$gen/pen-sim" "$root/usr/share/bash-completion/completions/"
install -m 0644 packaging/completions/_pen packaging/completions/_penctl \
  "$gen/_pen-lab" "$gen/_pen-sim" "$root/usr/share/zsh/vendor-completions/"
find "$root/usr/share" "$root/etc" "$root/usr/lib" -type f -exec chmod 0644 {} +

if command -v dpkg-shlibdeps >/dev/null; then
  printf 'Source: pen-rs\n\nPackage: pen-rs\nArchitecture: any\n' > "$work/debian/control"
  depends=$(cd "$work" && dpkg-shlibdeps -O debian/pen-rs/usr/bin/* | sed -n 's/^shlibs:Depends=//p')
else
  depends="libc6 (>= 2.34), libgcc-s1 (>= 4.2), libpcap0.8 (>= 1.5.1)"
fi
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<EOF
Package: pen-rs
Version: $version
Architecture: $arch
Maintainer: pen-rs developers <pen-rs@localhost>
Installed-Size: $size
Depends: $depends
Recommends: iproute2
Suggests: nftables, tcpdump
Conflicts: pen
Replaces: pen
Provides: pen
Section: net
Priority: optional
Description: TCP/UDP load balancer, a Rust rewrite of Pen (drop-in for pen)
 pen-rs balances TCP and UDP connections over a set of servers with client
 tracking, failover, TLS termination, transparent proxying and Direct Server
 Return. Its command line, penctl command language and control protocol are
 those of C Pen 0.34, so it replaces Debian's pen package (pen, penctl; not
 penlogd, penlog or mergelogs).
 .
 Also: pen-lab (network namespace lab with captures) and pen-sim (offline
 simulation of captures). One balancer per systemd instance: pen-rs@NAME.
EOF
printf '/etc/pen-rs/example.conf\n/etc/pen-rs/example.cfg\n' > "$root/DEBIAN/conffiles"
mkdir -p "$out"
deb="$out/pen-rs_${version}_${arch}.deb"
if [ "$profile" = debug ]; then z=(-Zgzip -z6); else z=(-Zxz); fi
dpkg-deb --root-owner-group "${z[@]}" --build "$root" "$deb" >/dev/null
echo "$deb"
