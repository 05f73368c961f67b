#!/usr/bin/env bash
# Installs the Debian packages the demo and the tests use, when a tool is
# missing (and only then, so a configured machine is left alone).
set -euo pipefail
need=()
command -v ip      >/dev/null || need+=(iproute2)
command -v tcpdump >/dev/null || need+=(tcpdump)
command -v nft     >/dev/null || need+=(nftables)
command -v iperf3  >/dev/null || need+=(iperf3)
command -v ping    >/dev/null || need+=(iputils-ping)
command -v keepalived >/dev/null || need+=(keepalived)
command -v bird    >/dev/null || need+=(bird2)
command -v promtool        >/dev/null || need+=(prometheus)   # promtool check metrics
command -v systemd-analyze >/dev/null || need+=(systemd)      # systemd-analyze verify
command -v openssl >/dev/null || need+=(openssl)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "missing tools; install these packages: ${need[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends "${need[@]}"
