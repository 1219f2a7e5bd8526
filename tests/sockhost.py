"""A child process that opens the sockets a test asks for, reports them as JSON, and waits.

Tests need real sockets owned by another process (as in production), so they run this script with
the interpreter, read one JSON line describing what it opened, then compare portscope with `ss`.
Kept to the standard library so it also runs as another user or inside a network namespace.

argv[1] is a JSON list of specs: {"kind": ..., "addr": ..., "port": ..., "v6only": ..., "name": ..., "count": ...}
kinds: tcp-listen, udp, udp-connected, tcp-pair (listener + connected client + accepted server side,
with `unread` bytes left in the server's receive queue), close-wait (`count` connections the peer
closed and we never did), connections (`count` client connections to one listener on `port`, all held
open), time-wait (`count` connections closed by the client first, then by the server, so the client side
sits in TIME_WAIT; `server_first`: the server closes first and its side does; `many_clients`: each
client from its own 127.0.0.N), fork-listen (a listener that a forked child also holds), fds (`count` open
files, with RLIMIT_NOFILE lowered to `limit`), comm (set this process's name).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import sys
import time


def family(addr: str) -> int:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def listener(addr: str, v6only: int | None = None, backlog: int = 17, port: int = 0) -> socket.socket:
    s = socket.socket(family(addr), socket.SOCK_STREAM)
    if v6only is not None:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
    s.bind((addr, port))
    s.listen(backlog)
    return s


def main() -> None:
    specs = json.loads(sys.argv[1])
    keep: list[object] = []
    report: dict[str, object] = {"pid": os.getpid(), "children": [], "sockets": []}
    for spec in specs:
        kind = spec["kind"]
        addr = spec.get("addr", "127.0.0.1")
        entry: dict[str, object] = {"kind": kind, "addr": addr}
        if kind == "tcp-listen":
            s = listener(addr, spec.get("v6only"), port=spec.get("port", 0))
            keep.append(s)
            entry["port"] = s.getsockname()[1]
        elif kind in ("udp", "udp-connected"):
            s = socket.socket(family(addr), socket.SOCK_DGRAM)
            s.bind((addr, 0))
            if kind == "udp-connected":
                s.connect((addr, 9))
            keep.append(s)
            entry["port"] = s.getsockname()[1]
        elif kind == "tcp-pair":
            lst = listener(addr)
            cli = socket.create_connection((addr, lst.getsockname()[1]))
            srv, _ = lst.accept()
            cli.sendall(b"x" * spec.get("unread", 0))
            keep += [lst, cli, srv]
            entry["port"] = lst.getsockname()[1]
            entry["client_port"] = cli.getsockname()[1]
        elif kind == "close-wait":
            lst = listener(addr, backlog=128)
            for _ in range(spec["count"]):
                cli = socket.create_connection((addr, lst.getsockname()[1]))
                srv, _ = lst.accept()
                cli.close()  # the client closes first and goes to TIME_WAIT ...
                keep.append(srv)  # ... and our server side, never closed, sits in CLOSE_WAIT
            keep.append(lst)
            entry["port"] = lst.getsockname()[1]
        elif kind in ("connections", "time-wait"):
            lst = listener(addr, backlog=spec["count"] + 1, port=spec.get("port", 0))
            for i in range(spec["count"]):
                # `many_clients`: each from its own 127.0.0.N, as from many hosts (4-tuples never repeat)
                source = (f"127.0.0.{i + 2}", 0) if spec.get("many_clients") else None
                cli = socket.create_connection((addr, lst.getsockname()[1]), source_address=source)
                srv, _ = lst.accept()
                if kind == "connections":
                    keep += [cli, srv]
                    continue
                first, second = (srv, cli) if spec.get("server_first") else (cli, srv)
                first.close()  # FIN: the closing side ends in TIME_WAIT once the other closes too
                assert second.recv(1) == b""
                second.close()
            keep.append(lst)
            entry["port"] = lst.getsockname()[1]
        elif kind == "fork-listen":
            s = listener(addr)
            keep.append(s)
            entry["port"] = s.getsockname()[1]
            pid = os.fork()
            if pid == 0:  # the child holds the same socket, as nginx workers do
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                for other in keep:  # hold only the shared listener, not every socket made before it
                    if other is not s:
                        other.close()
                while True:
                    time.sleep(3600)
            report["children"].append(pid)  # type: ignore[attr-defined]
        elif kind == "fds":
            resource.setrlimit(
                resource.RLIMIT_NOFILE, (spec["limit"], resource.getrlimit(resource.RLIMIT_NOFILE)[1])
            )
            keep += [open(os.devnull) for _ in range(spec["count"])]  # noqa: SIM115 - held open on purpose
        elif kind == "comm":
            with open("/proc/self/comm", "wb") as f:
                f.write(spec["name"].encode("latin-1"))
        report["sockets"].append(entry)  # type: ignore[attr-defined]
    print(json.dumps(report), flush=True)
    sys.stdin.read()  # the test closes our stdin (or kills us) when done
    for pid in report["children"]:  # type: ignore[attr-defined]
        os.kill(pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
