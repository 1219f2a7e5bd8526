"""HTTP (plain or inside TLS): status, Server, redirect target, page title, and which well-known
HTTP-based service answers (Docker API, Kubernetes API, kubelet, etcd, Elasticsearch, Prometheus,
Grafana), told apart by what they answer, since their ports are only conventions.

Fields in details: status (int), reason, server, location, redirect_to_https (bool), title,
content_type, and for a recognised application `app_evidence` (the header or body that gave it away).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from portscope import __version__
from portscope.probes.base import Ident, Probe, Session, clean_text
from portscope.probes.conn import Conn

HEAD_CAP = 32 * 1024
BODY_CAP = 64 * 1024
_STATUS = re.compile(rb"^HTTP/(\d)(?:\.(\d))? (\d{3})(?: ([^\r\n]*))?")
_TITLE = re.compile(rb"<title[^>]*>(.*?)</title", re.I | re.S)
_PRODUCT = re.compile(r"^([A-Za-z][\w.\-]*)(?:/([\w.\-+~]+))?")


@dataclass(slots=True)
class Response:
    """One parsed HTTP response head (+ the start of its body). Header names are lower case."""

    version: str
    status: int
    reason: str
    headers: dict[str, str]
    body: bytes


def parse_head(data: bytes) -> Response | None:
    """The status line and headers of a response; None when `data` is not an HTTP response."""
    m = _STATUS.match(data)
    if not m:
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    if not _:
        head, _, body = data.partition(b"\n\n")
    headers: dict[str, str] = {}
    for line in head.split(b"\n")[1:200]:
        name, sep, value = line.partition(b":")
        if not sep or not name.strip():
            continue
        key = clean_text(name, 64).lower()
        if key not in headers:  # first wins: a later duplicate cannot override what we show
            headers[key] = clean_text(value, 512)
    version = f"{m.group(1).decode()}.{(m.group(2) or b'0').decode()}"
    return Response(version, int(m.group(3)), clean_text(m.group(4) or b"", 80), headers, body)


def title_of(body: bytes) -> str | None:
    m = _TITLE.search(body[:BODY_CAP])
    if not m:
        return None
    text = re.sub(r"\s+", " ", m.group(1).decode("utf-8", "replace")).strip()
    return clean_text(text, 200) or None


def recognize(data: bytes) -> Ident | None:
    """An HTTP response (to our request or to someone else's: a 400 to a TLS ClientHello)."""
    resp = parse_head(data)
    if resp is None:
        return None
    return identify(resp, tls=False)


def identify(resp: Response, tls: bool) -> Ident:
    details: dict[str, object] = {
        "status": resp.status,
        "reason": resp.reason,
        "http_version": resp.version,
    }
    h = resp.headers
    product = version = None
    if server := h.get("server"):
        details["server"] = server
        m = _PRODUCT.match(server)
        if m:
            product, version = m.group(1), m.group(2)
    if powered := h.get("x-powered-by"):
        details["powered_by"] = powered
    if ctype := h.get("content-type"):
        details["content_type"] = ctype
    if location := h.get("location"):
        details["location"] = location
        if 300 <= resp.status < 400:
            details["redirect_to_https"] = location.lower().startswith("https://") and not tls
    if title := title_of(resp.body):
        details["title"] = title
    ident = Ident(
        "https" if tls else "http", protocol="http", product=product, version=version, details=details
    )
    app = _application(resp)
    if app:
        name, app_product, evidence = app
        ident.service = name
        ident.product = app_product
        ident.details["app_evidence"] = evidence
        if name == "docker" and (api := h.get("api-version")):
            ident.details["api_version"] = api
        if name == "docker" and server and (m := re.search(r"Docker/([\w.\-+~]+)", server)):
            ident.version = m.group(1)
        elif name != "http":
            ident.version = _json_version(resp.body) or (None if app_product != product else version)
    return ident


def _json_version(body: bytes) -> str | None:
    m = re.search(rb'"(?:number|version|etcdserver|gitVersion)"\s*:\s*"v?([\w.\-+~]{1,40})"', body[:BODY_CAP])
    return m.group(1).decode() if m else None


def _application(resp: Response) -> tuple[str, str, str] | None:
    """(service, product, evidence) when the answer gives away a well-known HTTP-based service."""
    h, body = resp.headers, resp.body[:BODY_CAP]
    server = h.get("server", "")
    if (
        "docker" in server.lower()
        or "docker-experimental" in h
        or ("api-version" in h and b'"message"' in body)
    ):
        return "docker", "Docker Engine API", "Server/Api-Version headers"
    if b"trying to access MongoDB over HTTP" in body:  # mongod's answer to HTTP on its driver port
        return "mongodb", "MongoDB", "its answer to HTTP on the native driver port"
    if h.get("x-elastic-product") == "Elasticsearch" or b"You Know, for Search" in body:
        return "elasticsearch", "Elasticsearch", "X-Elastic-Product header or tagline"
    if b'"etcdserver"' in body or b'"etcdcluster"' in body:
        return "etcd", "etcd", '"etcdserver" in /version'
    if b'"kind":"Status"' in body.replace(b" ", b"") and b'"apiVersion":"v1"' in body.replace(b" ", b""):
        return "kube-apiserver", "Kubernetes API server", "a v1 Status object"
    loc = h.get("location", "")
    cookies = h.get("set-cookie", "")
    if b"grafana" in body.lower() or (loc.rstrip("/").endswith("/login") and "redirect_to=" in cookies):
        return "grafana", "Grafana", "page or login redirect of Grafana"
    if resp.status in (301, 302, 303, 307) and (loc.endswith("/graph") or loc.endswith("/query")):
        return "prometheus", "Prometheus", f"redirect to {loc}"
    if b"<title>Prometheus" in body:
        return "prometheus", "Prometheus", "page title"
    if (resp.status == 403 and _KUBELET_FORBIDDEN.match(body.strip())) or (
        b'"kind":"PodList"' in body.replace(b" ", b"")
    ):
        return "kubelet", "Kubernetes kubelet", "its authorizer's Forbidden or a PodList"
    if b'"gitVersion"' in body and b'"goVersion"' in body:  # Kubernetes /version (version.Info)
        return "kube-apiserver", "Kubernetes API server", "/version answers with a Kubernetes version.Info"
    return None


async def run(session: Session, banner: bytes) -> Ident | None:
    conn = session.conn
    if conn is None:
        return None
    tls = conn.tls is not None
    resp = await _get(session, conn, "/")
    if resp is None:
        return None
    ident = identify(resp, tls=tls)
    if ident.service in ("http", "https") and _go_default(resp) and not session.deadline.expired:
        # etcd, the Kubernetes API and the kubelet are Go servers whose / is a bare 404 or 401;
        # /version tells etcd and Kubernetes apart (anonymous readers may see it on both)
        follow = await _get_again(session, "/version", tls)
        if follow is not None:
            again = identify(follow, tls=tls)
            if again.service not in ("http", "https"):
                again.details["first_answer"] = ident.details
                return again
        kubelet = await _kubelet(session, conn, tls) if not session.deadline.expired else None
        if kubelet is not None:
            ident.service, ident.product = "kubelet", "Kubernetes kubelet"
            ident.details["app_evidence"] = kubelet
    if ident.service == "kube-apiserver" and ident.version is None and not session.deadline.expired:
        follow = await _get_again(session, "/version", tls)  # public to anonymous users by default
        if follow is not None and (found := _json_version(follow.body)):
            ident.version = found
    return ident


_KUBELET_FORBIDDEN = re.compile(rb"^Forbidden \(user=[^,]*, verb=\w+, resource=nodes, subresource=\w*\)$")
_KUBELET_CN = re.compile(r"^[A-Za-z0-9.\-]{1,253}@\d{9,11}$")  # its self-made certificate: <node>@<unix time>


async def _kubelet(session: Session, first: Conn, tls: bool) -> str | None:
    """Whether a Go server whose / said nothing is a kubelet, from what only a kubelet answers: /pods
    (a PodList; its authorizer's "Forbidden (user=..., resource=nodes, ...)"; or its authenticator's
    bare 401 "Unauthorized", which also any Go server may send, so that one needs /healthz "ok", which
    the kubelet serves to anyone, or the certificate a kubelet makes itself, CN <node>@<unix time>).
    The evidence in words, or None. The port number plays no part."""
    pods = await _get_again(session, "/pods", tls)
    if pods is None:
        return None
    body = pods.body.strip()
    if pods.status == 200 and b'"kind":"PodList"' in body.replace(b" ", b""):
        return "/pods answers a PodList"
    if pods.status == 403 and _KUBELET_FORBIDDEN.match(body):
        return f"/pods answers the kubelet authorizer's {clean_text(body, 120)!r}"
    if pods.status != 401 or body != b"Unauthorized":
        return None
    cn = _certificate_cn(first)
    if cn is not None and _KUBELET_CN.match(cn):
        return f"/pods answers 401 Unauthorized, and its certificate is a kubelet's own (CN={cn})"
    if session.deadline.expired:
        return None
    health = await _get_again(session, "/healthz", tls)
    if health is not None and health.status == 200 and health.body.strip() == b"ok":
        return "/pods answers 401 Unauthorized while /healthz answers ok to anyone"
    return None


def _certificate_cn(conn: Conn) -> str | None:
    """The subject CN of the certificate a TLS connection got, when it has one."""
    if conn.tls is None:
        return None
    der = conn.tls.getpeercert(binary_form=True)
    if not der:
        return None
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        names = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except ValueError:
        return None
    return clean_text(str(names[0].value), 255) if names else None


def _go_default(resp: Response) -> bool:
    """The bare answers of Go's net/http: "404 page not found", or a plain 401 "Unauthorized"."""
    body = resp.body.strip()
    return "server" not in resp.headers and (
        (resp.status == 404 and body == b"404 page not found")
        or (resp.status == 401 and body == b"Unauthorized")
    )


async def _get_again(session: Session, path: str, tls: bool) -> Response | None:
    """A second request on a fresh connection (we asked the server to close the first)."""
    try:
        conn = await session.connect()
    except OSError:
        return None
    if tls:
        await session.start_tls(conn, ["http/1.1"])
        if conn.tls is None:
            return None
    return await _get(session, conn, path)


async def _get(session: Session, conn: Conn, path: str) -> Response | None:
    host = session.host if ":" not in session.host else f"[{session.host.strip('[]')}]"
    if session.port not in (80, 443):
        host = f"{host}:{session.port}"
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: portscope/{__version__}\r\n"
        "Accept: */*\r\nConnection: close\r\n\r\n"
    ).encode()
    if not await conn.write(request):
        return None
    timeout = session.deadline.left(session.settings.read_timeout)
    head = await conn.read_until(b"\r\n\r\n", HEAD_CAP, timeout)
    resp = parse_head(head)
    if resp is None:
        return None
    length = resp.headers.get("content-length", "")
    want = min(int(length), BODY_CAP) if length.isdigit() else BODY_CAP
    body = resp.body + await conn.read_exactly(max(0, want - len(resp.body)), session.deadline.left(1.0))
    resp.body = body[:BODY_CAP]
    return resp


PROBE = Probe(
    name="http",
    names=frozenset({"http", "https", "http-alt", "https-alt", "www", "www-http", "http-proxy"}),
    identifies=frozenset(
        {
            "docker",
            "docker-tls",
            "etcd",
            "elasticsearch",
            "kube-apiserver",
            "kubelet",
            "prometheus",
            "grafana",
        }
    ),
    ports=frozenset({80, 443, 2375, 2376, 2379, 3000, 6443, 8000, 8008, 8080, 8443, 8888, 9090, 9200, 10250}),
    recognize=recognize,
    run=run,
    rarity=1,
)
