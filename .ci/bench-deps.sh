#!/usr/bin/env bash
# Installs the Debian packages `make bench` uses beyond those of the tests (.ci/deps.sh):
# the HTTP load generator and the web server of the short-connection workloads. Only when
# a tool is missing, so a configured machine is left alone.
set -euo pipefail
need=()
command -v wrk     >/dev/null || need+=(wrk)
command -v nginx   >/dev/null || need+=(nginx-light)
command -v setpriv >/dev/null || need+=(util-linux)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "missing tools for the benchmark; install these packages: ${need[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends "${need[@]}"
