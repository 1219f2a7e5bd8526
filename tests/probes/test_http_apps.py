"""HTTP-based services told apart by their answers: Docker API, Kubernetes API, kubelet, etcd,
Elasticsearch, Prometheus, Grafana, and MongoDB's driver port answering HTTP.

None of these runs in the project's test bed, so a small HTTP server on loopback answers exactly what
each product answers to an anonymous GET (status, headers, body, as the products send them), and the
probe runs through the same runner as `portscope probe`.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from portscope.model import CheckResult, ProbeResult
from portscope.probes.base import Settings
from portscope.probes.runner import probe_one
from tests.probes.support import self_signed, server_context

GO_404 = (
    404,
    {"Content-Type": "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff"},
    b"404 page not found\n",
)
JSON = {"Content-Type": "application/json"}

Answer = tuple[int, dict[str, str], bytes]
APPS: dict[str, dict[str, Answer]] = {
    "docker": {
        "/": (
            404,
            {
                "Api-Version": "1.43",
                "Content-Type": "application/json",
                "Docker-Experimental": "false",
                "Ostype": "linux",
                "Server": "Docker/24.0.7 (linux)",
            },
            b'{"message":"page not found"}\n',
        )
    },
    "elasticsearch": {
        "/": (
            200,
            {**JSON, "X-elastic-product": "Elasticsearch"},
            json.dumps(
                {
                    "name": "node-1",
                    "cluster_name": "logs",
                    "version": {"number": "8.11.1", "build_flavor": "default", "lucene_version": "9.8.0"},
                    "tagline": "You Know, for Search",
                }
            ).encode(),
        )
    },
    "elasticsearch-secured": {
        "/": (
            401,
            {
                **JSON,
                "X-elastic-product": "Elasticsearch",
                "WWW-Authenticate": 'Basic realm="security" charset="UTF-8"',
            },
            b'{"error":{"root_cause":[{"type":"security_exception","reason":"missing authentication credentials"}],'
            b'"type":"security_exception"},"status":401}',
        )
    },
    "etcd": {"/": GO_404, "/version": (200, JSON, b'{"etcdserver":"3.5.9","etcdcluster":"3.5.0"}')},
    "kube-apiserver": {
        "/": (
            403,
            {**JSON, "Audit-Id": "5f0c", "X-Kubernetes-Pf-Flowschema-Uid": "1"},
            json.dumps(
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Failure",
                    "message": 'forbidden: User "system:anonymous" cannot get path "/"',
                    "reason": "Forbidden",
                    "details": {},
                    "code": 403,
                }
            ).encode(),
        ),
        "/version": (
            200,
            JSON,
            b'{"major":"1","minor":"28","gitVersion":"v1.28.2","gitCommit":"89a4ea3","gitTreeState":"clean",'
            b'"buildDate":"2023-09-13T09:29:07Z","goVersion":"go1.20.8","compiler":"gc","platform":"linux/amd64"}',
        ),
    },
    "prometheus": {
        "/": (302, {"Location": "/graph", "Content-Type": "text/html"}, b'<a href="/graph">Found</a>.\n')
    },
    "grafana": {
        "/": (
            302,
            {
                "Location": "/login",
                "Content-Type": "text/html; charset=utf-8",
                "Set-Cookie": "redirect_to=%2F; Path=/; HttpOnly; SameSite=Lax",
            },
            b'<a href="/login">Found</a>.\n\n',
        )
    },
    "mongodb": {
        "/": (
            200,
            {"Content-Type": "text/plain", "Connection": "close"},
            b"It looks like you are trying to access MongoDB over HTTP on the native driver port.\n",
        )
    },
    # The kubelet (10250) with anonymous requests refused (--anonymous-auth=false): its authenticator
    # answers /pods with a bare 401 "Unauthorized" (go-restful's WriteErrorString: no newline, no
    # nosniff header), while /healthz answers "ok" to anyone; / is Go's 404.
    "kubelet": {
        "/": GO_404,
        "/healthz": (200, {"Content-Type": "text/plain; charset=utf-8"}, b"ok"),
        "/pods": (401, {"Content-Type": "text/plain; charset=utf-8"}, b"Unauthorized"),
    },
    # The kubelet with anonymous requests let in and authorized by the API server (Webhook): 403 with
    # its authorizer's sentence, on / as on every path.
    "kubelet-webhook": {
        path: (
            403,
            {"Content-Type": "text/plain; charset=utf-8"},
            b"Forbidden (user=system:anonymous, verb=get, resource=nodes, subresource=proxy)",
        )
        for path in ("/", "/pods", "/healthz", "/version")
    },
    "plain-go": {"/": GO_404, "/version": GO_404},
    # Any Go server behind authentication: 401 everywhere, as the kubelet's /pods, but /healthz too
    "go-401": {
        path: (401, {"Content-Type": "text/plain; charset=utf-8"}, b"Unauthorized")
        for path in ("/", "/pods", "/healthz", "/version")
    },
}


def _handler(routes: dict[str, Answer]) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, headers, body = routes.get(self.path, GO_404)
            self.send_response_only(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def serve() -> Iterator[Callable[..., int]]:
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(app: str, tls: ssl.SSLContext | None = None) -> int:
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(APPS[app]))
        if tls is not None:
            srv.socket = tls.wrap_socket(srv.socket, server_side=True)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return int(srv.server_address[1])

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def _probe(port: int, expect: str | None) -> ProbeResult:
    check = CheckResult("127.0.0.1", "127.0.0.1", port, "tcp", "open", "syn-ack")
    return asyncio.run(probe_one(check, Settings(timeout=8.0), expect))


@pytest.mark.parametrize(
    ("app", "service", "product", "version"),
    [
        ("docker", "docker", "Docker Engine API", "24.0.7"),
        ("elasticsearch", "elasticsearch", "Elasticsearch", "8.11.1"),
        ("elasticsearch-secured", "elasticsearch", "Elasticsearch", None),
        ("etcd", "etcd", "etcd", "3.5.9"),
        ("kube-apiserver", "kube-apiserver", "Kubernetes API server", "1.28.2"),
        ("prometheus", "prometheus", "Prometheus", None),
        ("grafana", "grafana", "Grafana", None),
        ("mongodb", "mongodb", "MongoDB", None),
        ("kubelet", "kubelet", "Kubernetes kubelet", None),
        ("kubelet-webhook", "kubelet", "Kubernetes kubelet", None),
    ],
)
def test_each_application_is_named_from_its_answer(
    serve: Callable[[str], int], app: str, service: str, product: str, version: str | None
) -> None:
    port = serve(app)
    # expected: the application itself -> matches; the generic protocol (http-alt) -> still matches
    r = _probe(port, service)
    assert (r.service, r.protocol, r.product, r.version, r.matches) == (
        service,
        "http",
        product,
        version,
        True,
    )
    assert r.details["app_evidence"]
    assert _probe(port, "http-alt").matches is True
    # and with nothing expected it is named all the same: the port number plays no part
    assert _probe(port, None).service == service


def test_a_plain_web_server_is_not_taken_for_an_application(serve: Callable[[str], int]) -> None:
    port = serve("plain-go")
    r = _probe(port, "docker")
    assert (r.service, r.matches) == ("http", False)
    assert "not docker" in r.summary
    assert _probe(port, "etcd").matches is False
    assert _probe(port, "kubelet").matches is False


def test_a_go_server_behind_authentication_is_not_taken_for_a_kubelet(serve: Callable[[str], int]) -> None:
    """401 "Unauthorized" on /pods alone is any Go server's; a kubelet also answers /healthz."""
    port = serve("go-401")
    r = _probe(port, "kubelet")
    assert (r.service, r.matches) == ("http", False)
    assert "not kubelet" in r.summary


def test_a_kubelet_behind_authentication_is_known_by_its_own_certificate(
    serve: Callable[..., int], tmp_path: Path
) -> None:
    """401 everywhere (as go-401), but over TLS with the certificate a kubelet makes itself when it has
    none: CN <node>@<unix time>, the kubelet's default serving certificate."""
    cert, key = self_signed(tmp_path, "node-1@1700000000", ["node-1"])
    port = serve("go-401", server_context(cert, key))
    r = _probe(port, None)
    assert (r.service, r.product) == ("kubelet", "Kubernetes kubelet")
    assert "node-1@1700000000" in r.details["app_evidence"]
    plain = serve("go-401", server_context(*_other_cert(tmp_path)))
    assert _probe(plain, None).service == "https"


def _other_cert(tmp_path: Path) -> tuple[Path, Path]:
    d = tmp_path / "other"
    d.mkdir()
    return self_signed(d, "web.example", ["web.example"])
