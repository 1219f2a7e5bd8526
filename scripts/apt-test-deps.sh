#!/usr/bin/env bash
# Debian packages the tests use: the real tools we compare against (ss, netstat, lsof, fuser), what builds
# network test beds (ip netns, nftables) and the real daemons the bed runs inside its namespace (nginx,
# sshd, dnsmasq, redis, PostgreSQL, OpenSMTPD, Dovecot, vsftpd, memcached; tests/bed/bed.py). Installs only what is missing; needs root.
#
# The daemons are installed but must never run as system services: the bed starts private copies with
# their own config under a temp dir. So apt runs behind a policy-rc.d that forbids starting services
# (exit 101), which we remove afterwards only if we created it. CI runs this on a clean Debian/Ubuntu as root.
set -euo pipefail
PACKAGES=(
    iproute2 net-tools lsof psmisc procps nftables iptables util-linux openssl
    # systemd-analyze verify checks the shipped unit (packaging/systemd)
    systemd
    # GNU msgfmt: our catalog compiler is checked against it (tests/test_i18n.py)
    gettext
    # the test bed's daemons ("nginx" is the real package in bookworm; nginx-light/-core are metapackages)
    nginx openssh-server openssh-client dnsmasq-base redis-server postgresql
    # mail and file transfer for the probes (SMTP with STARTTLS, IMAP/POP3, FTP with AUTH TLS), memcached, snmpd
    opensmtpd dovecot-imapd dovecot-pop3d dovecot-submissiond vsftpd memcached snmpd
    # compares scan results in a later issue
    ndiff
)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})" >&2
    exit 1
fi
POLICY=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\n# portscope scripts/apt-test-deps.sh: do not start services on install\nexit 101\n' >"$POLICY"
    chmod 755 "$POLICY"
    created_policy=1
fi
cleanup() { [ "$created_policy" = 1 ] && rm -f "$POLICY"; return 0; }
trap cleanup EXIT
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
