"""TLS on any port: the handshake, the certificate, and our own verdict on it.

Why we judge the certificate ourselves instead of letting OpenSSL refuse the handshake: a refused
handshake shows nothing, and a sysadmin needs all of it at once (expired AND for the wrong name AND
from an unknown CA). So the handshake accepts anything, and then the chain the server sent is
verified with `cryptography` against the system store (or --ca-file), at a moment when the leaf was
valid, for the name it carries: "trusted" then means only "signed by a root we trust". Expiry and
the host name are separate answers. Python < 3.13 exposes the unverified chain only privately; where
that is missing the leaf alone is checked (enough for a chain that the server does not complete).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import ipaddress
import re
import ssl
import warnings
from typing import TYPE_CHECKING, Any

from portscope.errors import BadInput
from portscope.i18n import N_, Text
from portscope.model import TlsInfo
from portscope.probes.base import Ident, Probe, Session, clean_text, tls_context

if TYPE_CHECKING:
    from cryptography import x509

    from portscope.probes.conn import Conn

HANDSHAKE_TIMEOUT = 5.0
_ALPN = ["h2", "http/1.1"]
_LABEL = re.compile(r"^[A-Za-z0-9_-]{1,63}$")  # LDH plus "_", which real host names carry


def check_sni(name: str) -> str:
    """--sni's value as it will be used, or BadInput naming what is wrong (exit 2).

    A DNS name (IDNA-encoded, at most 253 characters, labels of 1-63 letters, digits, "-" or "_"; one
    trailing dot dropped, as curl does) is sent as the server name and checked against the
    certificate's DNS SANs. An IP address (v6 with or without brackets) is accepted but, as curl and
    RFC 6066 do, not sent: the server sees no SNI, and the certificate is checked against its IP SANs.
    """
    text = name.strip()
    literal = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        return str(ipaddress.ip_address(literal))
    except ValueError:
        pass
    host = text[:-1] if text.endswith(".") else text
    why = None
    if not host:
        why = "it is empty"
    else:
        try:
            ascii_host = host.encode("idna").decode("ascii") if not host.isascii() else host
        except UnicodeError:
            ascii_host, why = "", "it cannot be written in IDNA (a label is empty or too long)"
        if why is None and len(ascii_host) > 253:
            why = f"it is {len(ascii_host)} characters long; a DNS name has at most 253"
        elif why is None:
            for label in ascii_host.split("."):
                if not label:
                    why = "it has an empty label (a leading dot or two dots in a row)"
                elif len(label) > 63:
                    why = f"a label is {len(label)} characters long; at most 63"
                elif not _LABEL.match(label):
                    why = f"{label!r} has characters a host name cannot have (letters, digits, - and _)"
                if why:
                    break
    if why is not None:
        shown = clean_text(name, 80)
        raise BadInput(
            f"--sni {shown!r} is not a server name: {why}; give a DNS name such as www.example.com "
            "(an IP address is accepted: checked against the certificate, not sent, as curl does)"
        )
    return ascii_host


async def handshake(session: Session, conn: Conn, alpn: list[str] | None = None) -> tuple[TlsInfo, bytes]:
    """See Session.start_tls."""
    sni = session.sni
    info = TlsInfo(sni=sni)
    ctx = tls_context(session.settings, alpn)
    try:
        plain = await conn.start_tls(
            ctx, sni, session.deadline.left(HANDSHAKE_TIMEOUT), first_timeout=session.settings.read_timeout
        )
    except ssl.SSLError as e:
        info.error = Text(N_("handshake failed: {reason}"), reason=_ssl_reason(e))
        return info, b""
    tls = conn.tls
    if tls is None:
        if plain:
            info.error = Text(
                N_("the server answered in plain text, not TLS (what curl calls 'wrong version number')")
            )
        elif conn.timed_out:
            info.error = Text(N_("no answer to the TLS ClientHello"))
        else:
            info.error = Text(N_("the connection closed during the TLS handshake"))
        return info, plain
    info.version = tls.version()
    cipher = tls.cipher()
    info.cipher = cipher[0] if cipher else None
    info.alpn = tls.selected_alpn_protocol()
    der = tls.getpeercert(binary_form=True)
    chain = _unverified_chain(tls)
    if der:
        describe_certificate(info, der, chain, session.settings.ca_file, session.host)
    return info, b""


def _ssl_reason(e: ssl.SSLError) -> str:
    reason = getattr(e, "reason", None)
    return clean_text(str(reason or e), 200).lower().replace("_", " ")


def _unverified_chain(tls: ssl.SSLObject) -> list[bytes]:
    getter = getattr(tls, "get_unverified_chain", None) or getattr(
        getattr(tls, "_sslobj", None), "get_unverified_chain", None
    )
    if getter is None:
        return []
    try:
        certs = getter() or []
    except (ssl.SSLError, ValueError):
        return []
    out = []
    for c in certs:
        public = getattr(c, "public_bytes", None)  # 3.13: ssl.Certificate; 3.11: _ssl.Certificate
        if public is not None:
            out.append(public(ssl._ssl.ENCODING_DER))  # type: ignore[attr-defined]
    return out


def describe_certificate(
    info: TlsInfo, der: bytes, chain: list[bytes], ca_file: str | None, host: str
) -> None:
    """Fill the certificate fields of `info` from the leaf (DER) and the chain the server sent."""
    from cryptography import x509

    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as e:
        info.error = Text(N_("unreadable certificate: {error}"), error=clean_text(str(e), 120))
        return
    info.fingerprint_sha256 = hashlib.sha256(der).hexdigest()
    info.subject = clean_text(cert.subject.rfc4514_string(), 300)
    info.issuer = clean_text(cert.issuer.rfc4514_string(), 300)
    info.san = [clean_text(n, 255) for n in _san_names(cert)][:100]
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    info.not_before, info.not_after = start.isoformat(), end.isoformat()
    now = dt.datetime.now(dt.UTC)
    info.days_left = (end - now).days if end >= now else -((now - end).days + 1)
    info.expired = now > end or now < start
    info.self_signed = cert.issuer == cert.subject
    wanted = info.sni or host
    info.hostname_match = hostname_matches(wanted, cert)
    info.verified, info.verify_error = _verify(cert, chain, ca_file)


def _san_names(cert: x509.Certificate) -> list[str]:
    from cryptography import x509

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    except ValueError:
        return []
    names: list[str] = [str(n) for n in san.get_values_for_type(x509.DNSName)]
    names += [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return names


def hostname_matches(name: str, cert: x509.Certificate) -> bool:
    """RFC 6125: an IP matches IP SANs only; a name matches DNS SANs (wildcard = leftmost label only),
    or the subject CN when the certificate has no DNS SAN at all (what old clients accept)."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    name = name.strip("[]").rstrip(".").lower()
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        ip = None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = [str(n).lower().rstrip(".") for n in san.get_values_for_type(x509.DNSName)]
        ips = list(san.get_values_for_type(x509.IPAddress))
    except (x509.ExtensionNotFound, ValueError):
        dns, ips = [], []
    if ip is not None:
        return any(i == ip for i in ips)
    if not dns:
        dns = [str(a.value).lower() for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return any(_dns_match(pattern, name) for pattern in dns)


def _dns_match(pattern: str, name: str) -> bool:
    if pattern == name:
        return True
    if not pattern.startswith("*."):
        return False
    head, _, rest = name.partition(".")
    return bool(head) and rest == pattern[2:] and rest.count(".") >= 1


@functools.lru_cache(maxsize=4)
def _store(ca_file: str | None) -> tuple[Any, frozenset[bytes]]:
    """The trust store (--ca-file, else the system bundle OpenSSL would use) and the DER of each of
    its certificates, for pinned certificates (see _verify)."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.verification import Store

    path = ca_file or ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt"
    with open(path, "rb") as f, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a system root with a negative serial is still a root we must load
        certs = x509.load_pem_x509_certificates(f.read())
    return Store(certs), frozenset(c.public_bytes(Encoding.DER) for c in certs)


def _verify(
    cert: x509.Certificate, chain: list[bytes], ca_file: str | None
) -> tuple[bool | None, str | None]:
    """Does the chain lead to a trusted root? Checked at a moment the leaf was valid, for a name it has,
    so that expiry and host name (reported on their own) do not mask or fake the answer.

    A certificate that is itself in the trust store is trusted, whatever its extensions: that is
    what pinning a server's certificate with --ca-file (curl --cacert, openssl s_client -CAfile)
    means. cryptography's verifier alone refuses it when it is a self-signed leaf with
    basicConstraints cA:TRUE (what `openssl req -x509` makes), since an end-entity must not be a CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.verification import PolicyBuilder, VerificationError

    try:
        store, pinned = _store(ca_file)
    except (OSError, ValueError) as e:
        return None, Text(N_("cannot read the trust store: {error}"), error=clean_text(str(e), 200))
    if cert.public_bytes(Encoding.DER) in pinned:
        return True, None
    intermediates = []
    for der in chain[1:]:
        try:
            intermediates.append(x509.load_der_x509_certificate(der))
        except ValueError:
            continue
    names = _san_names(cert)
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    now = dt.datetime.now(dt.UTC)
    moment = min(max(now, start), end)
    builder = PolicyBuilder().store(store).time(moment)
    try:
        if names:
            try:
                subject: Any = x509.IPAddress(ipaddress.ip_address(names[0]))
            except ValueError:
                subject = x509.DNSName(names[0])
            builder.build_server_verifier(subject).verify(cert, intermediates)
        else:
            builder.build_client_verifier().verify(cert, intermediates)
    except VerificationError as e:
        return False, _verify_words(str(e), cert)
    except ValueError as e:
        return False, clean_text(str(e), 200)
    return True, None


def _verify_words(message: str, cert: x509.Certificate) -> str:
    """The verifier's refusal in the words openssl and curl use, always followed by its own reason:
    "self-signed" alone would hide why a certificate the user pinned was refused."""
    detail = clean_text(message.split(" (encountered processing", 1)[0], 200)
    if cert.issuer == cert.subject:
        return Text(
            N_("self-signed certificate (its issuer is itself) that the trust store does not hold: {detail}"),
            detail=detail,
        )
    if "candidates exhausted" in message or "no valid issuer" in message.lower():
        return Text(
            N_(
                "issued by an authority this host does not trust (unable to get local issuer certificate): "
                "{detail}"
            ),
            detail=detail,
        )
    return detail


def recognize(data: bytes) -> Ident | None:
    """A TLS record sent unprompted, or to a plain-text request: a TLS server (often an alert)."""
    if len(data) >= 5 and 20 <= data[0] <= 24 and data[1] == 3 and data[2] <= 4:
        return Ident("tls", confidence="low", details={"note": "answered with a TLS record"})
    return None


PROBE = Probe(
    name="tls",
    names=frozenset({"tls", "ssl"}),
    ports=frozenset({443, 465, 636, 853, 990, 993, 995, 2376, 5671, 6443, 8443, 9443, 10250}),
    recognize=recognize,
    rarity=1,
)
