#!/usr/bin/env bash
# Builds the pen-rs .deb (scripts/build-deb.sh --debug) and checks it WITHOUT touching the
# system's packages (the Debian `pen` the benchmarks compare against stays as it is):
#  - control data (dpkg-deb --info): name, Conflicts/Replaces/Provides pen, Depends, conffiles;
#  - contents (dpkg-deb --contents): the four programs, the unit, man pages, completions,
#    copyright, the example conffiles;
#  - install into a scratch root with its own dpkg database (dpkg --root), where the programs
#    run (--version), every man page renders without warnings (man --warnings -l), the unit
#    passes systemd-analyze verify (ExecStart pointed at the installed pen), and a purge leaves
#    nothing behind;
#  - the host's /usr/bin/pen and its dpkg status are unchanged.
# Exit 0 when everything holds; otherwise the first failing check is named.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_INCREMENTAL=0
fail() { echo "check-deb: FAILED: $*" >&2; exit 1; }
for tool in dpkg-deb dpkg man systemd-analyze; do
  command -v "$tool" >/dev/null || fail "$tool not found (scripts/install-deps.sh installs it)"
done

host_pen_before=$( (md5sum /usr/bin/pen 2>/dev/null; dpkg-query -W -f='${Status} ${Version}' pen 2>/dev/null) || true)
work=$(mktemp -d "${TMPDIR:-/tmp}/pen-rs-check-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT

deb=$(bash scripts/build-deb.sh --debug --out "$work/out" | tail -1)
[ -f "$deb" ] || fail "build-deb.sh did not produce a package (last line: $deb)"
echo "check-deb: built $deb ($(du -h "$deb" | cut -f1))"

info=$(dpkg-deb --info "$deb")
for want in "Package: pen-rs" "Conflicts: pen" "Replaces: pen" "Provides: pen" \
    "Depends: libc6" "libpcap0.8" "conffiles"; do
  grep -qF "$want" <<<"$info" || fail "dpkg-deb --info lacks '$want':"$'\n'"$info"
done
contents=$(dpkg-deb --contents "$deb" | awk '{print $NF}')
for want in ./usr/bin/pen ./usr/bin/penctl ./usr/bin/pen-lab ./usr/bin/pen-sim \
    ./usr/lib/systemd/system/pen-rs@.service \
    ./usr/share/man/man1/pen.1.gz ./usr/share/man/man1/penctl.1.gz \
    ./usr/share/man/man1/pen-lab.1.gz ./usr/share/man/man1/pen-sim.1.gz \
    ./usr/share/bash-completion/completions/pen ./usr/share/bash-completion/completions/penctl \
    ./usr/share/bash-completion/completions/pen-lab ./usr/share/bash-completion/completions/pen-sim \
    ./usr/share/zsh/vendor-completions/_pen ./usr/share/zsh/vendor-completions/_pen-lab \
    ./usr/share/doc/pen-rs/copyright ./etc/pen-rs/example.conf ./etc/pen-rs/example.cfg; do
  grep -qxF "$want" <<<"$contents" || fail "dpkg-deb --contents lacks $want"
done

# A scratch root with an empty dpkg database: dependencies are the host's, hence
# --force-depends; there are no maintainer scripts to run inside it.
root="$work/root"
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates" "$root/var/lib/dpkg/triggers"
: > "$root/var/lib/dpkg/status"
dpkg --root="$root" --force-depends --force-not-root -i "$deb" >"$work/install.log" 2>&1 \
  || fail "dpkg --root install: $(cat "$work/install.log")"
dpkg --root="$root" -s pen-rs | grep -q "Status: install ok installed" || fail "not installed in $root"
for b in pen penctl pen-lab pen-sim; do
  v=$("$root/usr/bin/$b" --version 2>&1) || fail "$b --version failed: $v"
  grep -q "0\.1\|[0-9]\.[0-9]" <<<"$v" || fail "$b --version printed '$v'"
  echo "check-deb: $b --version: $v"
done
for page in "$root"/usr/share/man/man1/*.1.gz; do
  warn=$(MANWIDTH=80 man --warnings -l "$page" 2>&1 >/dev/null) || fail "man -l $page failed: $warn"
  [ -z "$warn" ] || fail "man --warnings -l $page: $warn"
  [ -n "$(MANWIDTH=80 man -l "$page" 2>/dev/null)" ] || fail "man -l $page rendered nothing"
done
unit="$root/usr/lib/systemd/system/pen-rs@.service"
mkdir -p "$work/unit"
sed "s#^ExecStart=/usr/bin/pen #ExecStart=$root/usr/bin/pen #" "$unit" > "$work/unit/pen-rs@check.service"
grep -q "^ExecStart=$root/usr/bin/pen " "$work/unit/pen-rs@check.service" || fail "no ExecStart=/usr/bin/pen in the unit"
verify=$(systemd-analyze verify "$work/unit/pen-rs@check.service" 2>&1) || fail "systemd-analyze verify: $verify"
[ -z "$verify" ] || fail "systemd-analyze verify warns: $verify"

dpkg --root="$root" --force-not-root --purge pen-rs >"$work/purge.log" 2>&1 \
  || fail "dpkg --root purge: $(cat "$work/purge.log")"
left=$(cd "$root" && find . -mindepth 1 -not -path './var/lib/dpkg*' -not -path ./var/lib -not -path ./var)
[ -z "$left" ] || fail "left after purge: $left"

host_pen_after=$( (md5sum /usr/bin/pen 2>/dev/null; dpkg-query -W -f='${Status} ${Version}' pen 2>/dev/null) || true)
[ "$host_pen_before" = "$host_pen_after" ] || fail "the host's pen changed: $host_pen_before -> $host_pen_after"
echo "check-deb: ok ($(grep -c . <<<"$contents") paths; installed, ran, verified and purged in a scratch root)"
