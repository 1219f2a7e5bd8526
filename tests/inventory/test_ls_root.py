"""What needs root: another user's sockets (seen as root, hidden but announced without), and a
socket bound to one specific address, inside a network namespace the test creates and removes."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator

import pytest

from tests.helpers import portscope, portscope_json, ss, start_sockhost

pytestmark = pytest.mark.root


def test_other_users_socket_seen_as_root_and_announced_without() -> None:
    host = start_sockhost([{"kind": "tcp-listen", "addr": "127.0.0.1"}], user="nobody")
    try:
        port = host.report["sockets"][0]["port"]
        as_root = [s for s in portscope_json("ls", "--port", str(port)) if s["local_port"] == port]
        assert len(as_root) == 1
        assert as_root[0]["user"] == "nobody" and as_root[0]["uid"] == 65534
        assert [p["pid"] for p in as_root[0]["processes"]] == [host.pid]
        expected = next(r for r in ss() if r["local_port"] == port)
        assert expected["processes"] == [(p["pid"], p["name"], p["fd"]) for p in as_root[0]["processes"]]

        # A root-owned listener seen by nobody: the socket is listed, its owner is not, and we say why.
        root_host = start_sockhost([{"kind": "tcp-listen", "addr": "127.0.0.1"}])
        try:
            rport = root_host.report["sockets"][0]["port"]
            proc = portscope("ls", "--port", str(rport), "--json", user="nobody")
            assert proc.returncode == 0, proc.stderr
            import json

            seen = [s for s in json.loads(proc.stdout) if s["local_port"] == rport]
            assert len(seen) == 1 and seen[0]["processes"] == [] and seen[0]["user"] == "root"
            assert "owners of 1 socket(s) not shown" in proc.stderr and "root" in proc.stderr
            assert "CAP_SYS_PTRACE" in proc.stderr
            # ss run as nobody also cannot see the owner: we show exactly what ss shows, and say so.
            assert next(r for r in ss(user="nobody") if r["local_port"] == rport)["processes"] == []
        finally:
            root_host.stop()
    finally:
        host.stop()


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"pstest-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        run = ["ip", "netns", "exec", name]
        subprocess.run([*run, "ip", "link", "set", "lo", "up"], check=True)
        # a veth pair with both ends inside the namespace: an interface no traffic can leave by
        subprocess.run([*run, "ip", "link", "add", "ps0", "type", "veth", "peer", "name", "ps1"], check=True)
        subprocess.run([*run, "ip", "addr", "add", "192.0.2.10/24", "dev", "ps0"], check=True)
        subprocess.run([*run, "ip", "link", "set", "ps0", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def test_specific_address_in_namespace(netns: str) -> None:
    host = start_sockhost(
        [
            {"kind": "tcp-listen", "addr": "192.0.2.10"},
            {"kind": "tcp-listen", "addr": "127.0.0.1"},
            {"kind": "udp", "addr": "192.0.2.10"},
            # memcached's port on every interface: the seeds say caches never leave loopback
            {"kind": "tcp-listen", "addr": "0.0.0.0", "port": 11211},
        ],
        netns=netns,
    )
    try:
        mine = portscope_json("ls", netns=netns)
        theirs = ss(netns=netns)
        # A fresh namespace holds only our sockets: the listings must be exactly equal.
        assert sorted((s["proto"], s["local_address"], s["local_port"]) for s in mine) == sorted(
            (s["proto"], s["local_address"], s["local_port"]) for s in theirs
        )
        assert len(mine) == 4
        exposure = {(s["proto"], s["local_address"]): s["exposure"] for s in mine}
        assert exposure == {
            ("tcp", "192.0.2.10"): "address",
            ("tcp", "127.0.0.1"): "loopback",
            ("udp", "192.0.2.10"): "address",
            ("tcp", "0.0.0.0"): "all",
        }
        exposed = portscope_json("ls", "--exposed", netns=netns)
        assert {s["local_address"] for s in exposed} == {"192.0.2.10", "0.0.0.0"}
        table = portscope("ls", netns=netns).stdout.splitlines()
        warnings = [line for line in table if line.startswith("warning:")]
        assert warnings == [
            "warning: 11211/tcp (memcached) listens on all interfaces: keep it on loopback or a private network"
        ]
    finally:
        host.stop()
