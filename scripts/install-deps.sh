#!/usr/bin/env bash
# Installs the system packages the build, the tests and the lab need. Idempotent: packages
# already present are skipped, so a second run does no network work.
set -euo pipefail
PKGS=(libpcap-dev clang libbpf-dev linux-libc-dev   # clang + BPF headers: build.rs compiles bpf/*.bpf.c
      iproute2 nftables iptables ethtool iputils-ping tcpdump
      pen curl dnsutils apache2-utils nmap openssl
      nginx-light haproxy wrk dnsperf   # pen-lab bench peers and load generators
      keepalived                        # VRRP pair in the vrrp-failover scenario
      dpkg-dev binutils man-db systemd  # scripts/build-deb.sh, check-deb.sh: shlibdeps, strip, man -l, systemd-analyze
      strace python3)                   # tests/uring_syscalls.rs; scenario health-http's sick backend
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "install-deps: missing packages ${missing[*]}; run as root to install them" >&2
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
