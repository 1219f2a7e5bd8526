#!/usr/bin/env bash
# Debian packages the tests use: the real tools we compare against (ss, netstat, lsof, fuser) and
# what builds network test beds (ip netns, nftables). Installs only what is missing; needs root.
set -euo pipefail
PACKAGES=(iproute2 net-tools lsof psmisc procps nftables)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})" >&2
    exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
