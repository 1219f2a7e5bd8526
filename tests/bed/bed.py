"""A network test bed: a namespace "host" with real daemons behind a real firewall.

Why: reachability, probes and diagnosis must be tested against the behaviour of real kernels and real
servers (a firewall that drops, one that rejects with a reset or an ICMP error, a TLS server with a bad
certificate), not against mocks that only encode our own assumptions. A network namespace gives that
without touching the machine's network: the bed is a separate stack joined to the root namespace (where
the tests run) by a veth pair, so traffic to it never leaves the host.

Layout of bed number X (1..200, chosen so concurrent beds do not collide):

- namespace ``psbedX``; veth ``psbedXr`` (root side) <-> ``psbedXb`` (bed side)
- root side 198.18.X.1/24 and fd70:7073:6265:X::1/64, bed side 198.18.X.2/24 and fd70:7073:6265:X::2/64
  (198.18.0.0/15 is the RFC 2544 benchmark range; fd70:7073:6265::/48 is a ULA prefix, "psbe" in ASCII)
- a second bed-side address, ``alt``: 198.18.X.3/24 and fd70:7073:6265:X::3/64, for the seeds'
  troubleshooting exercises that need a host configured differently from addr4: DNS whose TCP/53 the
  firewall drops while UDP/53 answers, sshd on 2222 only (22 refused). Nothing else listens there, but
  the port-based firewall rules (8081, 8083, filtered_range, ...) apply to it as to addr4
- PostgreSQL a second time, listening on 127.0.0.1 and ::1 port 5433 only, inside the namespace: a
  local client connects, anything from outside is refused (the "listens on localhost only" exercise)
- in the root namespace, ``unreachable`` routes for 198.19.X.0/24 and fd70:7073:6265:(0x8000+X)::/64:
  a connect() to them fails at once with EHOSTUNREACH, decided by the local routing table
- nginx, sshd, dnsmasq, redis, PostgreSQL, OpenSMTPD (SMTP on 25), Dovecot (IMAP 143/993, POP3 110/995,
  submission 587/465) and vsftpd (FTP 21) inside the namespace, each with its own config, pid file,
  logs and data under one temp dir (on /dev/shm when it has room, see ``_tmp_parent()``); nftables
  table ``inet psbed`` in the namespace. nginx serves plain HTTP on 80 (and behind the firewall rules),
  a 301 to https:// on ``NGINX_REDIRECT_PORT`` (8090), an HTML page with a title over HTTP/2 and
  HTTP/1.1 on 443, an expired certificate on 8443, a certificate for another name on 9443 and plain
  HTTP on 8444, a port that should speak TLS

Everything is removed by ``down()``, by an atexit handler, and, after a crash, by ``clean_stale()``
which every ``up()`` runs first: each bed records its owner (pid and start time) in /run/psbed, so a
bed whose owner is gone is stale while a concurrent session's live bed is left alone.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import errno
import glob
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any, Self

PREFIX = "psbed"
STATE_DIR = Path("/run/psbed")
CERT_HOSTNAME = "bed.test"
WRONG_HOSTNAME = "wrong.test"
FILTERED_RANGE = range(20000, 21000)
MAX_INDEX = 200
READY_TIMEOUT = 20.0

STATUSES = frozenset({"open", "closed", "filtered", "unreachable", "open|filtered"})
REASONS = frozenset(
    {
        "syn-ack",
        "conn-refused",
        "no-response",
        "host-unreach",
        "net-unreach",
        "admin-prohibited",
        "icmp-port-unreach",
        "udp-response",
    }
)

# What a connect() from the root namespace gets on 8083 (nft `reject with icmpx type admin-prohibited`):
# the kernel maps ICMP type 3 code 13 to EHOSTUNREACH and ICMPv6 type 1 code 1 to EACCES. The status
# is still admin-prohibited in both families: only the ICMP code (IP_RECVERR) tells it from host-unreach.
ADMIN_PROHIBITED_ERRNO = {4: errno.EHOSTUNREACH, 6: errno.EACCES}
# What a connect() to unreachable4/unreachable6 gets: the local `unreachable` route answers at once.
UNREACHABLE_ERRNO = errno.EHOSTUNREACH

_NGINX_PLAIN_PORTS = (80, 8081, 8082, 8083, 6380, 8444)
NGINX_REDIRECT_PORT = 8090  # plain HTTP that sends everyone to HTTPS (301), as most sites' port 80 does
NGINX_HTTPS_TITLE = "portscope test bed: HTTPS"  # the <title> of the page on 443
_POSTGRES_GLOB = "/usr/lib/postgresql/*/bin/postgres"
_DOVECOT_LIBEXEC = ("/usr/lib/dovecot", "/usr/libexec/dovecot")
_DOVECOT_PORTS = (110, 143, 465, 587, 993, 995)
SSH_ALT_PORT = 2222
LOOPBACK_ONLY_PORT = 5433
# The bed's data (two PostgreSQL clusters, ~40 MB each) fits easily; a small /dev/shm (Docker's 64 MB) does not.
_SHM_MIN_FREE = 1 << 30


@dataclass(frozen=True)
class Identity:
    """What answers on an open port of addr4/addr6, as an identification must name it: the service
    names that are right (the registry's, plain and TLS forms), the product (compared case-blind),
    and how TLS is spoken: "implicit", "starttls", "none", or None where it is not judged (OpenSMTPD's
    STARTTLS that breaks in its own handshake)."""

    services: tuple[str, ...]
    product: str
    tls: str | None


class BedUnavailable(RuntimeError):
    """This machine cannot host a bed (not root, a tool or daemon missing): tests skip, not fail."""


class BedError(RuntimeError):
    """The bed could not be built although the machine should allow it: tests fail, with the logs."""


def _which(name: str, *extra_dirs: str) -> str | None:
    # Root's PATH under sudo or CI may lack /usr/sbin; daemons live there.
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", *extra_dirs])
    return shutil.which(name, path=path)


def _postgres_bindir() -> Path | None:
    found = sorted(glob.glob(_POSTGRES_GLOB), key=lambda p: int(re.sub(r"\D", "", p.split("/")[4]) or 0))
    return Path(found[-1]).parent if found else None


def _tmp_parent() -> str | None:
    """/dev/shm when it is a roomy tmpfs, else the default temp dir (None).

    Why: on a disk file system initdb spends most of its time in the kernel writing files it creates
    (with --no-sync); on tmpfs it takes about half as long, and it is the slowest step of up(). Copying
    the fresh cluster for the loopback-only PostgreSQL costs ~0.06 s there against ~0.9 s on ext4, where
    the copy competes with the writeback of the files initdb just wrote.
    """
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return None
    roomy = st.f_bavail * st.f_frsize >= _SHM_MIN_FREE
    return "/dev/shm" if roomy and os.access("/dev/shm", os.W_OK) else None


def unavailable_reason() -> str | None:
    """Say why no bed can be built here, in one line naming the fix, or None when it can."""
    if os.geteuid() != 0:
        return "the network test bed needs root (network namespaces, nftables); CI runs it as root"
    missing = [
        n
        for n in (
            "ip",
            "nft",
            "nginx",
            "sshd",
            "ssh-keygen",
            "dnsmasq",
            "redis-server",
            "setpriv",
            "unshare",
            "smtpd",
            "dovecot",
            "vsftpd",
        )
        if not _which(n)
    ]
    bindir = _postgres_bindir()
    if bindir is None or not (bindir / "initdb").exists():
        missing.append("postgresql (initdb, postgres)")
    if _which("dovecot") and not any(Path(d, "submission-login").exists() for d in _DOVECOT_LIBEXEC):
        missing.append("dovecot-submissiond")
    try:
        import cryptography  # noqa: F401
    except ImportError:
        missing.append("python package cryptography (pip install -e '.[test]')")
    if missing:
        return f"the network test bed needs: {', '.join(missing)} (install with scripts/apt-test-deps.sh)"
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        return "the network test bed needs the postgres user (created by the postgresql package)"
    return None


def _run(
    argv: Sequence[str], *, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise BedError(
            f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}"
        )
    return proc


def _ip(*args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return _run([_which("ip") or "ip", *args], check=check, stdin=stdin)


# ---------------------------------------------------------------------------------------------------------
# Ownership records and stale beds


def _proc_start_time(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 (starttime) after the ")" closing the command name, which may itself contain spaces.
    return int(stat[stat.rindex(")") + 2 :].split()[19])


def _owner_alive(record: dict[str, Any]) -> bool:
    pid = record.get("pid")
    return isinstance(pid, int) and _proc_start_time(pid) == record.get("start")


def _read_record(index: int) -> dict[str, Any] | None:
    path = STATE_DIR / f"{PREFIX}{index}.json"
    try:
        text = path.read_text()
        age = time.time() - path.stat().st_mtime
    except OSError:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        # Claimed this instant by a concurrent up() that has not written its record yet: treat as live.
        return {"pid": -1, "fresh": True} if age < 10 else {}
    return data if isinstance(data, dict) else {}


def _netns_names() -> list[str]:
    out = _ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _netns_pids(name: str) -> list[int]:
    out = _ip("netns", "pids", name, check=False).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def _unreachable6_net(index: int) -> str:
    return f"fd70:7073:6265:{0x8000 + index:x}::/64"


def _known_indexes() -> set[int]:
    """Every bed index with some trace left: namespace, link, route or record."""
    found: set[int] = set()
    pattern = re.compile(rf"^{PREFIX}(\d+)[rb]?(?:\.json)?$")
    names = [*_netns_names(), *(p.name for p in STATE_DIR.glob(f"{PREFIX}*"))]
    names += [
        line.split(":")[1].strip().split("@")[0]
        for line in _ip("-o", "link", "show", check=False).stdout.splitlines()
    ]
    for name in names:
        if m := pattern.match(name):
            found.add(int(m.group(1)))
    for line in _ip("route", "show", "type", "unreachable", check=False).stdout.splitlines():
        if m := re.match(r"unreachable 198\.19\.(\d+)\.0/24", line):
            found.add(int(m.group(1)))
    for line in _ip("-6", "route", "show", "type", "unreachable", check=False).stdout.splitlines():
        if (m := re.match(r"unreachable fd70:7073:6265:([0-9a-f]+)::/64", line)) and int(
            m.group(1), 16
        ) > 0x8000:
            found.add(int(m.group(1), 16) - 0x8000)
    return {i for i in found if 1 <= i <= MAX_INDEX}


def _kill_namespace_processes(name: str, grace: float = 3.0) -> None:
    """SIGTERM, then SIGKILL, every process in the namespace: only ours run there."""
    pids = _netns_pids(name)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pids and time.monotonic() < deadline:
        time.sleep(0.05)
        pids = _netns_pids(name)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + grace
    while _netns_pids(name) and time.monotonic() < deadline:
        time.sleep(0.05)


def _remove_bed(index: int, tmpdir: str | None) -> None:
    """Remove every trace of bed `index`; each step tolerates the thing being gone already."""
    name = f"{PREFIX}{index}"
    if name in _netns_names():
        _kill_namespace_processes(name)
        _ip("netns", "del", name, check=False)
    # Deleting the namespace deletes the veth pair; this catches a crash between `link add` and the move.
    _ip("link", "del", f"{name}r", check=False)
    _ip("route", "del", "unreachable", f"198.19.{index}.0/24", check=False)
    _ip("-6", "route", "del", "unreachable", _unreachable6_net(index), check=False)
    if tmpdir and Path(tmpdir).name.startswith(PREFIX):
        shutil.rmtree(tmpdir, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        (STATE_DIR / f"{name}.json").unlink()


def clean_stale(*, include_live: bool = False) -> list[str]:
    """Remove beds left by crashed runs (owner process gone); with include_live, every bed.

    Why: a SIGKILLed pytest leaves a namespace, daemons and routes behind, and the next run must not
    trip over them; a concurrent session's bed is alive and must survive.
    """
    removed = []
    for index in sorted(_known_indexes()):
        record = _read_record(index)
        if record is not None and _owner_alive(record) and not include_live:
            continue
        if record is not None and record.get("fresh") and not include_live:
            continue
        tmpdir = record.get("tmp") if record else None
        _remove_bed(index, tmpdir if isinstance(tmpdir, str) else None)
        removed.append(f"{PREFIX}{index}")
    return removed


def _claim_index() -> int:
    """Reserve a free bed number atomically (O_EXCL record), so concurrent up() calls never share one."""
    STATE_DIR.mkdir(mode=0o755, exist_ok=True)
    addrs = _ip("-o", "addr", "show", check=False).stdout
    routes = _ip("route", "show", "table", "all", check=False).stdout
    taken = _known_indexes()
    for index in range(1, MAX_INDEX + 1):
        if index in taken or f" 198.18.{index}." in addrs or f" 198.19.{index}." in addrs:
            continue
        if f"198.18.{index}." in routes or f"198.19.{index}." in routes:
            continue
        try:
            fd = os.open(STATE_DIR / f"{PREFIX}{index}.json", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            continue
        os.close(fd)
        return index
    raise BedError(f"no free test bed number in 1..{MAX_INDEX}: run scripts/testbed.py down")


# ---------------------------------------------------------------------------------------------------------
# DNS packets, shared by readiness and the tests (hand-built so no resolver library is trusted)


def build_dns_query(name: str, qtype: int = 1, txid: int = 0x5053) -> bytes:
    """A recursion-desired query for one name; qtype 1 is A, 28 is AAAA."""
    labels = b"".join(bytes([len(part)]) + part.encode("ascii") for part in name.rstrip(".").split("."))
    return struct.pack("!HHHHHH", txid, 0x0100, 1, 0, 0, 0) + labels + b"\x00" + struct.pack("!HH", qtype, 1)


def parse_dns_answers(packet: bytes) -> tuple[int, int, list[str]]:
    """(txid, rcode, addresses of the A/AAAA answers) of a response; enough for a bed check."""
    txid, flags, qdcount, ancount = struct.unpack("!HHHH", packet[:8])
    pos = 12

    def skip_name(pos: int) -> int:
        while True:
            length = packet[pos]
            if length & 0xC0 == 0xC0:
                return pos + 2
            if length == 0:
                return pos + 1
            pos += 1 + length

    for _ in range(qdcount):
        pos = skip_name(pos) + 4
    addresses = []
    for _ in range(ancount):
        pos = skip_name(pos)
        rtype, _cls, _ttl, rdlength = struct.unpack("!HHIH", packet[pos : pos + 10])
        pos += 10
        rdata = packet[pos : pos + rdlength]
        pos += rdlength
        if rtype == 1 and rdlength == 4:
            addresses.append(socket.inet_ntop(socket.AF_INET, rdata))
        elif rtype == 28 and rdlength == 16:
            addresses.append(socket.inet_ntop(socket.AF_INET6, rdata))
    return txid, flags & 0xF, addresses


# ---------------------------------------------------------------------------------------------------------
# Certificates


@dataclass(frozen=True)
class _CertPaths:
    cert: Path
    key: Path


def _make_certificates(directory: Path, addr4: str, addr6: str) -> dict[str, _CertPaths]:
    """A CA plus leaf certificates: good (bed.test + both addresses), expired, and for the wrong name.

    EC P-256 keys: generating them takes milliseconds, where RSA-2048 would cost a noticeable part of up().
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    day = datetime.timedelta(days=1)

    def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "portscope test bed CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - 90 * day)  # valid through the expired leaf's lifetime, as real CAs are
        .not_valid_after(now + 30 * day)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (directory / "ca.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))

    leaf_key = ec.generate_private_key(ec.SECP256R1())
    write_key(leaf_key, directory / "leaf.key")
    ips = [x509.IPAddress(ipaddress.ip_address(addr4)), x509.IPAddress(ipaddress.ip_address(addr6))]
    variants: dict[str, tuple[str, list[x509.GeneralName], datetime.datetime, datetime.datetime]] = {
        "good": (CERT_HOSTNAME, [x509.DNSName(CERT_HOSTNAME), *ips], now - day, now + 30 * day),
        "expired": (CERT_HOSTNAME, [x509.DNSName(CERT_HOSTNAME), *ips], now - 60 * day, now - 30 * day),
        "wronghost": (WRONG_HOSTNAME, [x509.DNSName(WRONG_HOSTNAME)], now - day, now + 30 * day),
    }
    out = {}
    for label, (cn, sans, start, end) in variants.items():
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca_name)
            .public_key(leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        path = directory / f"{label}.pem"
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        out[label] = _CertPaths(path, directory / "leaf.key")
    return out


# ---------------------------------------------------------------------------------------------------------
# Daemons


@dataclass
class _Daemon:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    extra_logs: list[Path] = field(default_factory=list)

    def log_tail(self, lines: int = 25) -> str:
        parts = []
        for path in [self.log, *self.extra_logs]:
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {path} ---\n" + "\n".join(text))
        return "\n".join(parts) or "(no log output)"


_LIVE: set[TestBed] = set()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    for bed in list(_LIVE):
        bed.down()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _catch_sigterm() -> None:
    """Tear beds down on SIGTERM too (CI timeouts send it), where atexit would not run.

    Only when nobody else handles SIGTERM (scripts/testbed.py does), and only from the main thread,
    the one place Python allows it; afterwards the process still dies of SIGTERM as it would have.
    """
    if (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    ):
        signal.signal(signal.SIGTERM, _on_sigterm)


def _tcp_accepts(addr: str, port: int, timeout: float = 0.3) -> bool:
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect((addr, port))
        except OSError:
            return False
        return True


def _unix_accepts(path: Path, timeout: float = 0.3) -> bool:
    """For a listener that cannot be reached from the root namespace, like 127.0.0.1 inside the bed.

    PostgreSQL creates its Unix socket after its TCP sockets, so this one being there means the TCP
    ones are too; _check_hidden_listeners() confirms with ss.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(path))
        except OSError:
            return False
        return True


def _dns_answers(addr: str, timeout: float = 0.3) -> bool:
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.connect((addr, 53))
            s.send(build_dns_query(CERT_HOSTNAME))
            return len(s.recv(512)) >= 12
        except OSError:
            return False


def _ss_local_addresses(out: str) -> set[tuple[str, int]]:
    """(address, port) of each socket in `ss -H` output, brackets and %scope removed."""
    found = set()
    for line in out.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        host, _, port = fields[-2].rpartition(":")
        found.add((host.split("%")[0].strip("[]"), int(port)))
    return found


class TestBed:
    """One namespace host with real daemons and a firewall; a context manager (``with TestBed() as bed``).

    Attributes after ``up()``:

    - ``name``: the namespace (``ip netns exec NAME ...``); ``index``: its number X
    - ``addr4``/``addr6``: the bed's addresses; ``local4``/``local6``: the root namespace's side
    - ``alt4``/``alt6``: the bed's second addresses (198.18.X.3, fd70:7073:6265:X::3), reachable from the
      root namespace like addr4; ``alt_truth`` and ``alt_services`` are their tables (see below)
    - ``unreachable4``/``unreachable6``: addresses whose connect() fails at once with EHOSTUNREACH
    - ``truth``: (proto, port) -> (status, reason), the ground truth a scan of addr4 or addr6 must find;
      it lists every port that is not plainly closed, including all 1000 of ``filtered_range``.
      Any other port is closed: tcp conn-refused, udp icmp-port-unreach (see ``expected()``)
    - ``services``: (proto, port) -> what serves or blocks it, for messages and later probe tests
    - ``identities``: (proto, port) -> Identity (service names, product, TLS) for every open port of
      ``truth``: what an identification of addr4/addr6 must name
    - ``alt_truth``/``alt_services``: the same for alt4 and alt6, complete in the same sense; the seeds'
      exercises: udp 53 open (dnsmasq answers) but tcp 53 filtered/no-response (nft drops it to alt
      only); tcp ``ssh_alt_port`` (2222) open with sshd while tcp 22 is closed; tcp 5433 closed.
      ``expected(proto, port, address)`` picks the right table
    - ``loopback_only_port`` (5433): PostgreSQL listens on it on 127.0.0.1 and ::1 inside the namespace
      only (``bed.exec([...])`` reaches it; from the root namespace every bed address refuses it)
    - ``ssh_alt_port`` (2222): sshd listens on it on alt4/alt6 only (and on 22 on addr4/addr6 only)
    - ``ca_pem``: the CA that signed the certificates; ``cert_hostname``: the name on the good one
    - ``tmpdir``: configs, logs and data of the daemons

    The bed's namespace sets net.ipv4.icmp_ratelimit=0 and net.ipv6.icmp.ratelimit=0 (and the rate
    masks to 0), so every closed UDP port answers with an ICMP error at once; real hosts rate-limit
    those (Linux: about one per second per destination), which a scan must handle but a bed test must
    not depend on.
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self) -> None:
        self.index = 0
        self.name = ""
        self.addr4 = self.addr6 = self.local4 = self.local6 = ""
        self.alt4 = self.alt6 = ""
        self.ssh_alt_port = SSH_ALT_PORT
        self.loopback_only_port = LOOPBACK_ONLY_PORT
        self.unreachable4 = self.unreachable6 = ""
        self.cert_hostname = CERT_HOSTNAME
        self.wrong_hostname = WRONG_HOSTNAME
        self.filtered_range = FILTERED_RANGE
        self.tmpdir = Path()
        self.ca_pem = Path()
        self.truth: dict[tuple[str, int], tuple[str, str]] = {}
        self.services: dict[tuple[str, int], str] = {}
        self.alt_truth: dict[tuple[str, int], tuple[str, str]] = {}
        self.alt_services: dict[tuple[str, int], str] = {}
        self.identities: dict[tuple[str, int], Identity] = {}
        self.timings: dict[str, float] = {}
        self._daemons: list[_Daemon] = []
        self._logs: list[IO[bytes]] = []
        self._up = False

    # -- lifecycle ------------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.up()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.down()

    def up(self) -> Self:
        """Build the bed; on any failure remove what was built and raise (BedUnavailable or BedError)."""
        reason = unavailable_reason()
        if reason:
            raise BedUnavailable(reason)
        started = time.monotonic()
        clean_stale()
        self.index = _claim_index()
        self._up = True
        atexit.register(self.down)
        _LIVE.add(self)
        _catch_sigterm()
        try:
            self._set_addresses()
            tmp = tempfile.mkdtemp(prefix=f"{self.name}-", dir=_tmp_parent())
            self.tmpdir = Path(tmp)
            # PostgreSQL runs as postgres and must reach its directories below this one.
            self.tmpdir.chmod(0o755)
            record = {
                "pid": os.getpid(),
                "start": _proc_start_time(os.getpid()),
                "tmp": tmp,
                "name": self.name,
            }
            (STATE_DIR / f"{self.name}.json").write_text(json.dumps(record))
            self._build_network()
            self.timings["network"] = time.monotonic() - started
            self._start_daemons()
            self.timings["up"] = time.monotonic() - started
        except BaseException:
            self.down()
            raise
        self._fill_truth()
        return self

    def down(self) -> None:
        """Remove everything up() made; safe to call twice, after a partial up(), and from atexit."""
        if not self._up:
            return
        started = time.monotonic()
        self._up = False
        atexit.unregister(self.down)
        _LIVE.discard(self)
        if self.name in _netns_names():
            _kill_namespace_processes(self.name)
        for daemon in self._daemons:
            # Reap our direct children: the namespace kill above ended them, or they died earlier.
            if daemon.proc.poll() is None:
                daemon.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                daemon.proc.wait(timeout=5)
        for log in self._logs:
            log.close()
        _remove_bed(self.index, str(self.tmpdir) if self.tmpdir != Path() else None)
        self.timings["down"] = time.monotonic() - started

    # -- ground truth ---------------------------------------------------------------------------------

    def expected(self, proto: str, port: int, address: str | None = None) -> tuple[str, str]:
        """(status, reason) for any port of addr4/addr6, or of alt4/alt6 when `address` is one of them."""
        table = self.alt_truth if address is not None and address in (self.alt4, self.alt6) else self.truth
        if (proto, port) in table:
            return table[(proto, port)]
        return ("closed", "conn-refused") if proto == "tcp" else ("closed", "icmp-port-unreach")

    def _fill_truth(self) -> None:
        t: dict[tuple[str, int], tuple[str, str, str]] = {
            ("tcp", 21): (
                "open",
                "syn-ack",
                f"vsftpd FTP, AUTH TLS with the certificate for {CERT_HOSTNAME}",
            ),
            ("tcp", 22): ("open", "syn-ack", "OpenSSH sshd"),
            ("tcp", 25): (
                "open",
                "syn-ack",
                "OpenSMTPD ESMTP, STARTTLS offered; Debian 12's OpenSMTPD 6.8 fails the TLS handshake"
                " itself (its privsep keys and OpenSSL 3, upstream issue 1171): a real broken STARTTLS",
            ),
            ("tcp", 53): ("open", "syn-ack", "dnsmasq DNS over TCP"),
            ("udp", 53): ("open", "udp-response", f"dnsmasq DNS: {CERT_HOSTNAME} A {self.addr4}"),
            ("tcp", 80): ("open", "syn-ack", "nginx HTTP"),
            ("tcp", 81): ("closed", "conn-refused", "nothing listens"),
            ("tcp", 110): ("open", "syn-ack", "Dovecot POP3, STLS"),
            ("tcp", 143): ("open", "syn-ack", "Dovecot IMAP, STARTTLS, LOGINDISABLED before TLS"),
            ("tcp", 443): (
                "open",
                "syn-ack",
                f"nginx HTTPS (ALPN h2 and http/1.1), certificate for {CERT_HOSTNAME} signed by ca_pem;"
                f" an HTML page titled {NGINX_HTTPS_TITLE!r}",
            ),
            ("tcp", 465): ("open", "syn-ack", "Dovecot SMTP submission over implicit TLS (submissions)"),
            ("tcp", 587): ("open", "syn-ack", "Dovecot SMTP submission, STARTTLS, AUTH only after TLS"),
            ("tcp", 993): ("open", "syn-ack", "Dovecot IMAP over implicit TLS"),
            ("tcp", 995): ("open", "syn-ack", "Dovecot POP3 over implicit TLS"),
            ("tcp", 5432): ("open", "syn-ack", "PostgreSQL (SSL off: SSLRequest gets 'N')"),
            ("tcp", 6379): ("open", "syn-ack", "redis"),
            ("tcp", 6380): ("filtered", "no-response", "nft drop; nginx HTTP listens behind it"),
            ("tcp", 8081): ("filtered", "no-response", "nft drop; nginx HTTP listens behind it"),
            ("tcp", 8082): ("closed", "conn-refused", "nft reject with tcp reset; nginx listens behind it"),
            ("tcp", 8083): (
                "filtered",
                "admin-prohibited",
                "nft reject with icmpx admin-prohibited; nginx behind it. connect(): EHOSTUNREACH at once"
                " on IPv4, EACCES on IPv6 after one SYN retransmission (~1 s)",
            ),
            ("tcp", NGINX_REDIRECT_PORT): (
                "open",
                "syn-ack",
                f"nginx HTTP redirecting to HTTPS: 301, Location https://{CERT_HOSTNAME}/ + the path",
            ),
            ("tcp", 8443): ("open", "syn-ack", f"nginx HTTPS, expired certificate for {CERT_HOSTNAME}"),
            ("tcp", 8444): ("open", "syn-ack", "nginx plain HTTP on a port that should speak TLS"),
            ("tcp", 9443): ("open", "syn-ack", f"nginx HTTPS, certificate for {WRONG_HOSTNAME}"),
            ("udp", 54): ("closed", "icmp-port-unreach", "nothing listens"),
            ("udp", 5353): ("open|filtered", "no-response", "nft drop"),
        }
        for port in FILTERED_RANGE:
            t[("tcp", port)] = ("filtered", "no-response", "nft drop (filtered_range)")
        self.truth = {k: (v[0], v[1]) for k, v in sorted(t.items())}
        self.services = {k: v[2] for k, v in sorted(t.items())}
        # alt4/alt6: the rules that match on the port alone apply to them as well; no daemon is behind them.
        alt: dict[tuple[str, int], tuple[str, str, str]] = {
            ("tcp", 6380): ("filtered", "no-response", "nft drop (any address); nothing listens behind it"),
            ("tcp", 8081): ("filtered", "no-response", "nft drop (any address); nothing listens behind it"),
            ("tcp", 8082): ("closed", "conn-refused", "nft reject with tcp reset (any address)"),
            ("tcp", 8083): (
                "filtered",
                "admin-prohibited",
                "nft reject with icmpx admin-prohibited (any address); connect() errors as on addr4",
            ),
            ("udp", 5353): ("open|filtered", "no-response", "nft drop (any address)"),
            ("tcp", 22): ("closed", "conn-refused", f"nothing listens: sshd is on {SSH_ALT_PORT} here"),
            ("tcp", 53): (
                "filtered",
                "no-response",
                "nft drops tcp 53 to alt4/alt6 only; dnsmasq listens behind it (UDP 53 answers)",
            ),
            ("udp", 53): (
                "open",
                "udp-response",
                f"dnsmasq DNS: {CERT_HOSTNAME} A {self.addr4}; its TCP 53 is dropped",
            ),
            ("tcp", SSH_ALT_PORT): ("open", "syn-ack", "OpenSSH sshd (the same process as on addr4:22)"),
            ("tcp", LOOPBACK_ONLY_PORT): (
                "closed",
                "conn-refused",
                f"PostgreSQL listens on 127.0.0.1:{LOOPBACK_ONLY_PORT} and [::1]:{LOOPBACK_ONLY_PORT}"
                " inside the namespace only",
            ),
        }
        for port in FILTERED_RANGE:
            alt[("tcp", port)] = ("filtered", "no-response", "nft drop (filtered_range, any address)")
        self.alt_truth = {k: (v[0], v[1]) for k, v in sorted(alt.items())}
        self.alt_services = {k: v[2] for k, v in sorted(alt.items())}
        # Every open port of `truth`, identified (bench/probe.py judges portscope against this alone).
        web, https = Identity(("http",), "nginx", "none"), Identity(("https",), "nginx", "implicit")
        self.identities = {
            ("tcp", 21): Identity(("ftp",), "vsftpd", "starttls"),
            ("tcp", 22): Identity(("ssh",), "OpenSSH", "none"),
            ("tcp", 25): Identity(("smtp",), "OpenSMTPD", None),
            ("tcp", 53): Identity(("dns", "domain"), "dnsmasq", "none"),
            ("udp", 53): Identity(("dns", "domain"), "dnsmasq", "none"),
            ("tcp", 80): web,
            ("tcp", 110): Identity(("pop3",), "Dovecot", "starttls"),
            ("tcp", 143): Identity(("imap",), "Dovecot", "starttls"),
            ("tcp", 443): https,
            ("tcp", 465): Identity(("smtps", "submissions"), "Dovecot", "implicit"),
            ("tcp", 587): Identity(("smtp", "submission"), "Dovecot", "starttls"),
            ("tcp", 993): Identity(("imaps",), "Dovecot", "implicit"),
            ("tcp", 995): Identity(("pop3s",), "Dovecot", "implicit"),
            ("tcp", 5432): Identity(("postgresql",), "PostgreSQL", "none"),
            ("tcp", 6379): Identity(("redis",), "Redis", "none"),
            ("tcp", NGINX_REDIRECT_PORT): web,
            ("tcp", 8443): https,
            ("tcp", 8444): web,
            ("tcp", 9443): https,
        }

    # -- network --------------------------------------------------------------------------------------

    def _set_addresses(self) -> None:
        x = self.index
        self.name = f"{PREFIX}{x}"
        self.local4, self.addr4 = f"198.18.{x}.1", f"198.18.{x}.2"
        self.local6, self.addr6 = f"fd70:7073:6265:{x:x}::1", f"fd70:7073:6265:{x:x}::2"
        self.alt4, self.alt6 = f"198.18.{x}.3", f"fd70:7073:6265:{x:x}::3"
        self.unreachable4 = f"198.19.{x}.1"
        self.unreachable6 = _unreachable6_net(x).replace("::/64", "::1")

    def _build_network(self) -> None:
        root_if, bed_if = f"{self.name}r", f"{self.name}b"
        _ip("netns", "add", self.name)
        # `ip -batch` runs these in one process: a dozen ip invocations would cost ~50 ms more.
        _ip(
            "-batch",
            "-",
            stdin="\n".join(
                [
                    f"link add {root_if} type veth peer name {bed_if} netns {self.name}",
                    f"addr add {self.local4}/24 dev {root_if}",
                    f"addr add {self.local6}/64 dev {root_if} nodad",
                    f"link set {root_if} up",
                    f"route add unreachable 198.19.{self.index}.0/24",
                    f"route add unreachable {_unreachable6_net(self.index)}",
                ]
            )
            + "\n",
        )
        _ip(
            "-n",
            self.name,
            "-batch",
            "-",
            stdin="\n".join(
                [
                    "link set lo up",
                    f"addr add {self.addr4}/24 dev {bed_if}",
                    f"addr add {self.addr6}/64 dev {bed_if} nodad",
                    f"addr add {self.alt4}/24 dev {bed_if}",
                    f"addr add {self.alt6}/64 dev {bed_if} nodad",
                    f"link set {bed_if} up",
                ]
            )
            + "\n",
        )
        sysctls = {
            "net/ipv4/icmp_ratelimit": "0",
            "net/ipv4/icmp_ratemask": "0",
            "net/ipv6/icmp/ratelimit": "0",
            "net/ipv6/icmp/ratemask": "",
        }
        script = "; ".join(
            f"echo '{v}' > /proc/sys/{k}" for k, v in sysctls.items() if Path(f"/proc/sys/{k}").exists()
        )
        self.exec(["sh", "-ec", script])
        self.exec(["nft", "-f", "-"], stdin=self._nft_ruleset())

    def _nft_ruleset(self) -> str:
        lo, hi = FILTERED_RANGE.start, FILTERED_RANGE.stop - 1
        return f"""
table inet psbed {{
    chain input {{
        type filter hook input priority 0; policy accept;
        tcp dport {{ 6380, 8081, {lo}-{hi} }} drop
        udp dport 5353 drop
        tcp dport 8082 reject with tcp reset
        tcp dport 8083 reject with icmpx type admin-prohibited
        ip daddr {self.alt4} tcp dport 53 drop
        ip6 daddr {self.alt6} tcp dport 53 drop
    }}
}}
"""

    def exec(
        self, argv: Sequence[str], *, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the bed's namespace and return its output (e.g. ``ss -ltn``)."""
        return _run([_which("ip") or "ip", "netns", "exec", self.name, *argv], stdin=stdin, check=check)

    # -- daemons --------------------------------------------------------------------------------------

    def _spawn(
        self, name: str, argv: Sequence[str], *, extra_logs: Iterable[Path] = (), cwd: Path | None = None
    ) -> _Daemon:
        log_path = self.tmpdir / f"{name}.out"
        log = open(log_path, "ab")  # noqa: SIM115 -- kept open for the daemon's lifetime, closed in down()
        self._logs.append(log)
        # A new session: Ctrl-C in scripts/testbed.py reaches only Python, which then tears down in order.
        proc = subprocess.Popen(
            [_which("ip") or "ip", "netns", "exec", self.name, *argv],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd or self.tmpdir,
            start_new_session=True,
        )
        daemon = _Daemon(name, proc, log_path, list(extra_logs))
        self._daemons.append(daemon)
        return daemon

    def _start_daemons(self) -> None:
        t0 = time.monotonic()
        initdb = self._start_initdb()  # the slowest step: runs while the others start
        certs = _make_certificates(self._mkdir("tls"), self.addr4, self.addr6)
        self.ca_pem = self.tmpdir / "tls" / "ca.pem"
        nginx = self._start_nginx(certs)
        sshd = self._start_sshd()
        dnsmasq = self._start_dnsmasq()
        redis = self._start_redis()
        smtpd = self._start_smtpd(certs)
        dovecot = self._start_dovecot(certs)
        vsftpd = {addr: self._start_vsftpd(certs, addr) for addr in (self.addr4, self.addr6)}
        checks: list[tuple[str, _Daemon, Callable[[], bool]]] = []
        for addr in (self.addr4, self.addr6):
            checks += [
                (f"nginx {addr} 80", nginx, partial(_tcp_accepts, addr, 80)),
                (f"nginx {addr} 443", nginx, partial(_tcp_accepts, addr, 443)),
                (
                    f"nginx {addr} {NGINX_REDIRECT_PORT}",
                    nginx,
                    partial(_tcp_accepts, addr, NGINX_REDIRECT_PORT),
                ),
                (f"sshd {addr} 22", sshd, partial(_tcp_accepts, addr, 22)),
                (f"dnsmasq {addr} 53/udp", dnsmasq, partial(_dns_answers, addr)),
                (f"dnsmasq {addr} 53/tcp", dnsmasq, partial(_tcp_accepts, addr, 53)),
                (f"redis {addr} 6379", redis, partial(_tcp_accepts, addr, 6379)),
                (f"smtpd {addr} 25", smtpd, partial(_tcp_accepts, addr, 25)),
                (f"vsftpd {addr} 21", vsftpd[addr], partial(_tcp_accepts, addr, 21)),
            ]
            checks += [
                (f"dovecot {addr} {p}", dovecot, partial(_tcp_accepts, addr, p)) for p in _DOVECOT_PORTS
            ]
        for addr in (self.alt4, self.alt6):
            checks += [
                (f"sshd {addr} {SSH_ALT_PORT}", sshd, partial(_tcp_accepts, addr, SSH_ALT_PORT)),
                (f"dnsmasq {addr} 53/udp", dnsmasq, partial(_dns_answers, addr)),
            ]
        deadline = t0 + READY_TIMEOUT
        self._wait_initdb(initdb, deadline)
        self.timings["initdb"] = time.monotonic() - t0
        # Copied before the first postmaster touches the data: a stopped, consistent cluster.
        pg = self.tmpdir / "pg"
        _run(self._as_postgres(["cp", "-a", str(pg / "data"), str(pg / "data-lo")]))
        postgres = self._start_postgres()
        postgres_lo = self._start_postgres_loopback()
        for addr in (self.addr4, self.addr6):
            checks.append((f"postgres {addr} 5432", postgres, partial(_tcp_accepts, addr, 5432)))
        lo_socket = self.tmpdir / "pg" / "sock-lo" / f".s.PGSQL.{LOOPBACK_ONLY_PORT}"
        checks.append((f"postgres-lo {lo_socket}", postgres_lo, partial(_unix_accepts, lo_socket)))
        self._wait_ready(checks, deadline)
        self._check_hidden_listeners(deadline)
        self.timings["daemons"] = time.monotonic() - t0

    def _mkdir(self, name: str) -> Path:
        path = self.tmpdir / name
        path.mkdir(mode=0o755)
        return path

    def _wait_ready(self, checks: list[tuple[str, _Daemon, Callable[[], bool]]], deadline: float) -> None:
        pending = list(checks)
        while pending:
            pending = [c for c in pending if not c[2]()]
            for label, daemon, _ in pending:
                if daemon.proc.poll() is not None:
                    raise BedError(
                        f"{daemon.name} exited ({daemon.proc.returncode}) before {label} was ready:\n{daemon.log_tail()}"
                    )
            if not pending:
                break
            if time.monotonic() > deadline:
                label, daemon, _ = pending[0]
                raise BedError(f"{label} not ready after {READY_TIMEOUT:.0f} s:\n{daemon.log_tail()}")
            time.sleep(0.02)

    def _check_hidden_listeners(self, deadline: float) -> None:
        """Listeners behind drop/reject rules or on loopback cannot be polled from outside: ask ss inside.

        Polled until the deadline, so a daemon that opens these sockets a moment after the ones the
        readiness checks saw is waited for, not reported.
        """
        wanted = {(a, p) for a in (self.addr4, self.addr6) for p in (6380, 8081, 8082, 8083)}
        wanted |= {(self.alt4, 53), (self.alt6, 53)}
        wanted |= {("127.0.0.1", LOOPBACK_ONLY_PORT), ("::1", LOOPBACK_ONLY_PORT)}
        while True:
            out = self.exec(["ss", "-Hltn"]).stdout
            missing = wanted - _ss_local_addresses(out)
            if not missing:
                return
            if time.monotonic() > deadline:
                raise BedError(f"nothing listens on {sorted(missing)} inside {self.name}:\n{out}")
            time.sleep(0.05)

    def _start_nginx(self, certs: dict[str, _CertPaths]) -> _Daemon:
        d = self._mkdir("nginx")

        def listens(port: int, ssl: bool = False) -> str:
            flag = " ssl" if ssl else ""
            return f"listen {self.addr4}:{port}{flag}; listen [{self.addr6}]:{port}{flag};"

        def tls_server(port: int, cert: _CertPaths, body: str, page: bool = False) -> str:
            # page: an HTML page with a <title>, over HTTP/2 as well (nginx 1.22: `listen ... ssl http2`)
            listen = (
                listens(port, ssl=True).replace(" ssl;", " ssl http2;") if page else listens(port, ssl=True)
            )
            html = f"<!DOCTYPE html><html><head><title>{body}</title></head><body><p>{body}</p></body></html>"
            location = (
                f'location / {{ default_type text/html; return 200 "{html}\\n"; }}'
                if page
                else f'location / {{ return 200 "{body}\\n"; }}'
            )
            return f"""
    server {{
        {listen}
        server_name {CERT_HOSTNAME};
        ssl_certificate {cert.cert};
        ssl_certificate_key {cert.key};
        {location}
    }}"""

        plain = " ".join(listens(p) for p in _NGINX_PLAIN_PORTS)
        temp_paths = "\n".join(
            f"    {k}_temp_path {d}/{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        conf = f"""
daemon off;
master_process on;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 128; }}
http {{
    access_log off;
    default_type text/plain;
{temp_paths}
    server {{
        {plain}
        location / {{ return 200 "portscope test bed: plain HTTP\\n"; }}
    }}
    server {{
        {listens(NGINX_REDIRECT_PORT)}
        location / {{ return 301 https://{CERT_HOSTNAME}$request_uri; }}
    }}
{tls_server(443, certs["good"], NGINX_HTTPS_TITLE, page=True)}
{tls_server(8443, certs["expired"], "portscope test bed: expired certificate")}
{tls_server(9443, certs["wronghost"], "portscope test bed: certificate for the wrong name")}
}}
"""
        (d / "nginx.conf").write_text(conf)
        nginx = _which("nginx") or "nginx"
        # -e: nginx opens its compiled-in error log (/var/log/nginx) before reading the config otherwise.
        return self._spawn(
            "nginx",
            [nginx, "-e", f"{d}/error.log", "-p", f"{d}/", "-c", f"{d}/nginx.conf"],
            extra_logs=[d / "error.log"],
        )

    def _start_sshd(self) -> _Daemon:
        d = self._mkdir("ssh")
        key = d / "ssh_host_ed25519_key"
        _run(
            [
                _which("ssh-keygen") or "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "psbed",
                "-f",
                str(key),
            ]
        )
        conf = f"""Port 22
ListenAddress {self.addr4}
ListenAddress {self.addr6}
ListenAddress {self.alt4}:{SSH_ALT_PORT}
ListenAddress [{self.alt6}]:{SSH_ALT_PORT}
HostKey {key}
PidFile {d}/sshd.pid
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
AuthorizedKeysFile none
LogLevel INFO
"""
        (d / "sshd_config").write_text(conf)
        # The privilege-separation directory that Debian's service unit would create; harmless to add.
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        sshd = _which("sshd") or "/usr/sbin/sshd"
        return self._spawn(
            "sshd",
            [sshd, "-f", str(d / "sshd_config"), "-D", "-E", str(d / "sshd.log")],
            extra_logs=[d / "sshd.log"],
        )

    def _start_dnsmasq(self) -> _Daemon:
        d = self._mkdir("dnsmasq")
        argv = [
            _which("dnsmasq") or "dnsmasq",
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--port=53",
            f"--listen-address={self.addr4},{self.addr6},{self.alt4},{self.alt6}",
            "--bind-interfaces",
            f"--address=/{CERT_HOSTNAME}/{self.addr4}",
            f"--address=/{CERT_HOSTNAME}/{self.addr6}",
            f"--pid-file={d}/dnsmasq.pid",
            f"--log-facility={d}/dnsmasq.log",
            "--user=root",
        ]
        return self._spawn("dnsmasq", argv, extra_logs=[d / "dnsmasq.log"])

    def _start_redis(self) -> _Daemon:
        d = self._mkdir("redis")
        conf = f"""port 6379
bind {self.addr4} {self.addr6}
protected-mode no
daemonize no
supervised no
dir {d}
pidfile {d}/redis.pid
logfile {d}/redis.log
save ""
appendonly no
"""
        (d / "redis.conf").write_text(conf)
        return self._spawn(
            "redis",
            [_which("redis-server") or "redis-server", str(d / "redis.conf")],
            extra_logs=[d / "redis.log"],
        )

    def _start_smtpd(self, certs: dict[str, _CertPaths]) -> _Daemon:
        """OpenSMTPD on 25 with STARTTLS offered; it accepts no mail (every recipient is rejected).

        smtpd has no option for its queue (/var/spool/smtpd) or control socket (/var/run/smtpd.sock):
        it runs in a private mount namespace where the bed's own directories are bound over /var/spool
        and /run, so concurrent beds never share them and nothing is left on the host's file systems.
        """
        d = self._mkdir("smtpd")
        for sub in ("spool", "run"):
            (d / sub).mkdir(mode=0o755)
        good = certs["good"]
        conf = f"""pki {CERT_HOSTNAME} cert "{good.cert}"
pki {CERT_HOSTNAME} key "{good.key}"
listen on {self.addr4} port 25 tls pki {CERT_HOSTNAME} hostname {CERT_HOSTNAME}
listen on {self.addr6} port 25 tls pki {CERT_HOSTNAME} hostname {CERT_HOSTNAME}
match from any for any reject
"""
        (d / "smtpd.conf").write_text(conf)
        script = 'mount --bind "$1" /var/spool && mount --bind "$2" /run && exec "$3" -d -f "$4"'
        unshare = _which("unshare") or "unshare"
        argv = [unshare, "--mount", "--propagation", "private", "sh", "-ec", script, "sh"]
        argv += [str(d / "spool"), str(d / "run"), _which("smtpd") or "smtpd", str(d / "smtpd.conf")]
        return self._spawn("smtpd", argv)

    def _start_dovecot(self, certs: dict[str, _CertPaths]) -> _Daemon:
        """Dovecot: IMAP, POP3 and SMTP submission, plain with STARTTLS and over implicit TLS.

        No user can log in (an empty passdb); the probes only need the greetings and the upgrades.
        `ssl = required` makes the plain ports refuse authentication before TLS, as a real server should.
        """
        d = self._mkdir("dovecot")
        good = certs["good"]
        conf = f"""protocols = imap pop3 submission
listen = {self.addr4}, {self.addr6}
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
hostname = {CERT_HOSTNAME}
ssl = required
ssl_cert = <{good.cert}
ssl_key = <{good.key}
mail_location = maildir:{d}/mail/%u
passdb {{
  driver = passwd-file
  args = /dev/null
}}
userdb {{
  driver = passwd-file
  args = /dev/null
}}
service submission-login {{
  inet_listener submission {{
    port = 587
  }}
  inet_listener submissions {{
    port = 465
    ssl = yes
  }}
}}
"""
        (d / "dovecot.conf").write_text(conf)
        return self._spawn(
            "dovecot",
            [_which("dovecot") or "dovecot", "-F", "-c", str(d / "dovecot.conf")],
            extra_logs=[d / "dovecot.log"],
        )

    def _start_vsftpd(self, certs: dict[str, _CertPaths], addr: str) -> _Daemon:
        """vsftpd on 21 with AUTH TLS; one process per address family (vsftpd listens on one address).

        Nobody can log in (an empty allow list), so no file is ever served; passive mode is off.
        """
        family = "6" if ":" in addr else "4"
        d = self.tmpdir / "vsftpd"
        if not d.exists():
            self._mkdir("vsftpd")
            (d / "empty").mkdir(mode=0o755)  # secure_chroot_dir: empty, not writable by the ftp user
        good = certs["good"]
        if family == "6":
            listen = f"listen=NO\nlisten_ipv6=YES\nlisten_address6={addr}"
        else:
            listen = f"listen=YES\nlisten_ipv6=NO\nlisten_address={addr}"
        conf = f"""{listen}
listen_port=21
background=NO
anonymous_enable=NO
local_enable=YES
userlist_enable=YES
userlist_deny=NO
userlist_file=/dev/null
pam_service_name=portscope-bed-nologin
write_enable=NO
pasv_enable=NO
port_enable=NO
secure_chroot_dir={d}/empty
nopriv_user=ftp
xferlog_enable=NO
vsftpd_log_file={d}/vsftpd{family}.log
ssl_enable=YES
rsa_cert_file={good.cert}
rsa_private_key_file={good.key}
ssl_ciphers=HIGH
require_ssl_reuse=NO
seccomp_sandbox=NO
"""
        path = d / f"vsftpd{family}.conf"
        path.write_text(conf)
        return self._spawn(f"vsftpd{family}", [_which("vsftpd") or "vsftpd", str(path)])

    def _as_postgres(self, argv: Sequence[str]) -> list[str]:
        # setpriv execs the command (runuser forks and waits), so the Popen pid is the daemon itself.
        setpriv = _which("setpriv") or "setpriv"
        return [setpriv, "--reuid=postgres", "--regid=postgres", "--init-groups", "--", *argv]

    def _start_initdb(self) -> _Daemon:
        d = self._mkdir("pg")
        (d / "sock").mkdir()
        (d / "sock-lo").mkdir()
        import pwd

        pw = pwd.getpwnam("postgres")
        for path in (d, d / "sock", d / "sock-lo"):
            os.chown(path, pw.pw_uid, pw.pw_gid)
        bindir = _postgres_bindir()
        assert bindir is not None
        argv = [str(bindir / "initdb"), "-D", str(d / "data"), "-U", "postgres", "-A", "trust", "--no-sync"]
        argv += ["--no-instructions", "-E", "UTF8", "--locale=C"]
        return self._spawn("initdb", self._as_postgres(argv), cwd=d)

    def _wait_initdb(self, initdb: _Daemon, deadline: float) -> None:
        try:
            initdb.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise BedError(f"initdb did not finish in {READY_TIMEOUT:.0f} s:\n{initdb.log_tail()}") from None
        if initdb.proc.returncode != 0:
            raise BedError(f"initdb failed ({initdb.proc.returncode}):\n{initdb.log_tail()}")

    def _start_postgres(self) -> _Daemon:
        d = self.tmpdir / "pg"
        bindir = _postgres_bindir()
        assert bindir is not None
        argv = [str(bindir / "postgres"), "-D", str(d / "data"), "-k", str(d / "sock"), "-p", "5432"]
        argv += ["-c", f"listen_addresses={self.addr4},{self.addr6}", "-c", "fsync=off", "-c", "ssl=off"]
        return self._spawn("postgres", self._as_postgres(argv), cwd=d)

    def _start_postgres_loopback(self) -> _Daemon:
        """The second cluster (a copy of the first), on 127.0.0.1 and ::1 port 5433 only.

        Its own data directory (so its own postmaster.pid), socket directory and port.
        """
        d = self.tmpdir / "pg"
        bindir = _postgres_bindir()
        assert bindir is not None
        argv = [str(bindir / "postgres"), "-D", str(d / "data-lo"), "-k", str(d / "sock-lo")]
        argv += ["-p", str(LOOPBACK_ONLY_PORT), "-c", "listen_addresses=127.0.0.1,::1"]
        argv += ["-c", "fsync=off", "-c", "ssl=off"]
        return self._spawn("postgres-lo", self._as_postgres(argv), cwd=d)
