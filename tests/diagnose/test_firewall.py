"""The local-firewall check against real rulesets, with the kernel as the oracle.

Each test builds two network namespaces joined by a veth pair: "srv" holds the ruleset (loaded with
`nft -f` or `iptables-restore`, never in this machine's own namespace) and TCP listeners on every port
used here; "cli" is another machine. `firewall.verdict_for` runs inside srv, like diagnose would on
the server, and where the answer is definite a real connect from cli must agree with it: accepted ->
connected, dropped -> timed out, rejected -> refused or unreachable.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portscope.diagnose import firewall as fw
from tests.helpers import demote, unprivileged_runtime

SRV4, CLI4 = "10.99.0.1", "10.99.0.2"
SRV6, CLI6 = "fd00:99::1", "fd00:99::2"
OTHER4 = "10.99.0.77"  # a source address nobody has: evaluated only, never connected from
PORTS = (22, 80, 443, 5432, 5433, 6379, 7000, 7001, 8000, 8005, 8100, 8101, 9000)
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
HAS_IPTABLES = shutil.which("iptables-restore") is not None
HAS_LEGACY = shutil.which("iptables-legacy-restore") is not None

_LISTEN = """
import socket, sys
socks = []
for port in map(int, sys.argv[1:]):
    s = socket.socket(socket.AF_INET6)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::", port))
    s.listen(64)
    socks.append(s)
print("ready", flush=True)
sys.stdin.read()
"""

_CONNECT = """
import errno, json, socket, sys
addr, out = sys.argv[1], []
for port in map(int, sys.argv[2:]):
    try:
        socket.create_connection((addr, port), timeout=2.0).close()
        out.append("accept")
    except TimeoutError:
        out.append("drop")
    except OSError as e:  # a listener is there: refused or unreachable can only be a firewall reject
        out.append("reject" if e.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.EACCES, errno.ENETUNREACH) else repr(e))
print(json.dumps(out))
"""

_ASK = """
import json, sys
from portscope.diagnose import firewall as fw
out = []
for q in json.loads(sys.argv[1]):
    a = fw.verdict_for(q["proto"], q["port"], q.get("dst"), q.get("src"))
    e = fw.evidence(a)
    out.append({**a.to_dict(), "observation": e.observation, "passed": e.passed, "next_step": e.data["next_step"]})
print(json.dumps(out))
"""


def _sh(*argv: str, stdin: str | None = None) -> str:
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")
    return done.stdout


@dataclass
class Pair:
    srv: str
    cli: str
    listener: subprocess.Popen[str] | None = None
    loaded: list[str] = field(default_factory=list)

    def nft(self, rules: str) -> None:
        _sh("ip", "netns", "exec", self.srv, "nft", "-f", "-", stdin=rules)

    def iptables(self, rules: str, v6: bool = False, legacy: bool = False) -> None:
        cmd = ("ip6tables" if v6 else "iptables") + ("-legacy" if legacy else "") + "-restore"
        _sh("ip", "netns", "exec", self.srv, cmd, stdin=rules)

    def ask(self, *queries: dict[str, Any]) -> list[dict[str, Any]]:
        out = _sh("ip", "netns", "exec", self.srv, sys.executable, "-c", _ASK, json.dumps(queries))
        return list(json.loads(out))

    def one(self, proto: str, port: int, dst: str | None = SRV4, src: str | None = CLI4) -> dict[str, Any]:
        return self.ask({"proto": proto, "port": port, "dst": dst, "src": src})[0]

    def kernel(self, *ports: int, addr: str = SRV4, inside: bool = False) -> list[str]:
        """What a real TCP connect gets: from cli to addr, or (inside) from srv to itself."""
        ns = self.srv if inside else self.cli
        return list(
            json.loads(_sh("ip", "netns", "exec", ns, sys.executable, "-c", _CONNECT, addr, *map(str, ports)))
        )


@pytest.fixture
def pair() -> Iterator[Pair]:
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces")
    tag = f"{os.getpid() % 100000}-{random.randrange(1 << 16):04x}"
    p = Pair(f"psfw-srv-{tag}", f"psfw-cli-{tag}")
    try:
        for ns in (p.srv, p.cli):
            _sh("ip", "netns", "add", ns)
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
        _sh(
            "ip",
            "link",
            "add",
            "vcli",
            "netns",
            p.cli,
            "type",
            "veth",
            "peer",
            "name",
            "vsrv",
            "netns",
            p.srv,
        )
        for ns, dev, a4, a6 in ((p.srv, "vsrv", SRV4, SRV6), (p.cli, "vcli", CLI4, CLI6)):
            _sh("ip", "-n", ns, "addr", "add", f"{a4}/24", "dev", dev)
            _sh("ip", "-n", ns, "addr", "add", f"{a6}/64", "dev", dev, "nodad")
            _sh("ip", "-n", ns, "link", "set", dev, "up")
            _sh(
                "ip",
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv4.icmp_ratelimit=0",
                "net.ipv6.icmp.ratelimit=0",
            )
        p.listener = subprocess.Popen(
            ["ip", "netns", "exec", p.srv, sys.executable, "-c", _LISTEN, *map(str, PORTS)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert p.listener.stdout is not None and p.listener.stdout.readline().strip() == "ready"
        yield p
    finally:
        if p.listener is not None:
            p.listener.kill()
            p.listener.wait()
        for ns in (p.srv, p.cli):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _inet(
    body: str, policy: str = "accept", family: str = "inet", table: str = "filter", prio: int = 0
) -> str:
    return f"""
table {family} {table} {{
    chain input {{
        type filter hook input priority {prio}; policy {policy};
        {body}
    }}
}}
"""


# ------------------------------------------------------------------------------------ nftables


def test_nft_drop_by_port(pair: Pair) -> None:
    pair.nft(_inet("tcp dport 5432 drop"))
    a = pair.one("tcp", 5432)
    assert a["readable"] and a["verdict"] == "drop" and a["backend"] == "nftables"
    assert (a["rule"], a["table"], a["chain"], a["policy"], a["by_policy"]) == (
        "tcp dport 5432 drop",
        "inet filter",
        "input",
        "accept",
        False,
    )
    assert a["observation"] == (
        "the local nftables ruleset drops tcp/5432 (table inet filter, chain input: tcp dport 5432 drop)"
    )
    assert a["passed"] is False
    assert a["next_step"] == (
        "allow it: nft insert rule inet filter input tcp dport 5432 accept (or fix the rule quoted above)"
    )
    other = pair.one("tcp", 5433)
    assert other["verdict"] == "accept" and other["by_policy"] and other["passed"] is True
    assert other["next_step"] is None
    assert pair.one("udp", 5432)["verdict"] == "accept"  # a tcp rule says nothing about udp
    assert pair.kernel(5432, 5433) == ["drop", "accept"]


def test_nft_reject(pair: Pair) -> None:
    pair.nft(
        _inet("tcp dport 7000 reject with tcp reset\n tcp dport 7001 reject with icmpx type admin-prohibited")
    )
    reset, icmp = pair.ask(
        {"proto": "tcp", "port": 7000, "dst": SRV4, "src": CLI4}, {"proto": "tcp", "port": 7001, "dst": SRV4}
    )
    assert reset["verdict"] == "reject" and reset["reject_with"] == "tcp reset"
    assert reset["rule"] == "tcp dport 7000 reject with tcp reset"
    assert "rejects tcp/7000" in reset["observation"]
    assert icmp["verdict"] == "reject" and icmp["reject_with"] == "icmpx admin-prohibited"
    assert pair.kernel(7000, 7001, 22) == ["reject", "reject", "accept"]


def test_nft_port_sets(pair: Pair) -> None:
    pair.nft(
        """
table inet filter {
    set web { type inet_service; elements = { 80, 443 } }
    chain input {
        type filter hook input priority 0; policy drop;
        tcp dport { 22, 5432 } accept
        tcp dport @web accept
    }
}
"""
    )
    got = pair.ask(
        *({"proto": "tcp", "port": p, "dst": SRV4, "src": CLI4} for p in (22, 5432, 80, 443, 6379))
    )
    assert [a["verdict"] for a in got] == ["accept"] * 4 + ["drop"]
    assert got[0]["rule"] == "tcp dport { 22, 5432 } accept"
    assert got[2]["rule"] == "tcp dport @web accept"
    assert got[4]["by_policy"] and got[4]["policy"] == "drop"
    assert got[4]["observation"] == (
        "the local nftables ruleset drops tcp/6379: no rule decides, and the policy of table inet filter, "
        "chain input is drop"
    )
    assert got[4]["next_step"] == "allow it: nft add rule inet filter input tcp dport 6379 accept"
    assert pair.kernel(22, 5432, 80, 443, 6379) == ["accept"] * 4 + ["drop"]


def test_nft_port_range(pair: Pair) -> None:
    pair.nft(_inet("tcp dport 8000-8100 drop"))
    got = pair.ask(*({"proto": "tcp", "port": p, "dst": SRV4} for p in (7001, 8000, 8005, 8100, 8101)))
    assert [a["verdict"] for a in got] == ["accept", "drop", "drop", "drop", "accept"]
    assert got[2]["rule"] == "tcp dport 8000-8100 drop"
    assert pair.kernel(7001, 8000, 8005, 8100, 8101) == ["accept", "drop", "drop", "drop", "accept"]


def test_nft_accept_from_one_source(pair: Pair) -> None:
    pair.nft(_inet(f"ip saddr {CLI4} tcp dport 6379 accept", policy="drop"))
    mine, other, anyone = pair.ask(
        {"proto": "tcp", "port": 6379, "dst": SRV4, "src": CLI4},
        {"proto": "tcp", "port": 6379, "dst": SRV4, "src": OTHER4},
        {"proto": "tcp", "port": 6379, "dst": SRV4},
    )
    assert mine["verdict"] == "accept" and mine["rule"] == f"ip saddr {CLI4} tcp dport 6379 accept"
    assert other["verdict"] == "drop" and other["by_policy"]
    # nobody said who connects: the answer hinges on that rule, and says so
    assert anyone["verdict"] == "unknown" and sorted(anyone["possible"]) == ["accept", "drop"]
    assert anyone["rule"] == f"ip saddr {CLI4} tcp dport 6379 accept"
    assert "source address" in anyone["why"] and anyone["passed"] is None
    assert anyone["depends_on"][0]["rule"] == anyone["rule"]
    assert anyone["next_step"] == "check the rules quoted above by hand: nft -a list ruleset"
    assert pair.kernel(6379) == ["accept"]


def test_nft_loopback_accept(pair: Pair) -> None:
    pair.nft(_inet('iifname "lo" accept', policy="drop"))
    lo, lo6, outside = pair.ask(
        {"proto": "tcp", "port": 22, "dst": "127.0.0.1"},
        {"proto": "tcp", "port": 22, "dst": "::1"},
        {"proto": "tcp", "port": 22, "dst": SRV4, "src": CLI4},
    )
    assert lo["verdict"] == lo6["verdict"] == "accept" and lo["rule"] == 'iifname "lo" accept'
    assert outside["verdict"] == "drop" and outside["by_policy"]
    assert pair.kernel(22, addr="127.0.0.1", inside=True) == ["accept"]
    assert pair.kernel(22) == ["drop"]


def test_nft_established_related_is_not_a_new_connection(pair: Pair) -> None:
    pair.nft(
        _inet("ct state established,related accept\n ct state invalid drop\n tcp dport 22 accept", "drop")
    )
    ssh, pg = pair.ask({"proto": "tcp", "port": 22, "dst": SRV4}, {"proto": "tcp", "port": 5432, "dst": SRV4})
    assert ssh["verdict"] == "accept" and ssh["rule"] == "tcp dport 22 accept"
    assert pg["verdict"] == "drop" and pg["by_policy"]
    assert pair.kernel(22, 5432) == ["accept", "drop"]


def test_nft_jump_to_user_chain(pair: Pair) -> None:
    pair.nft(
        f"""
table inet filter {{
    chain svc {{
        ip saddr {CLI4} return
        counter drop
    }}
    chain input {{
        type filter hook input priority 0; policy accept;
        tcp dport 9000 jump svc
        tcp dport 5432 goto svc
    }}
}}
"""
    )
    mine, other, goto = pair.ask(
        {"proto": "tcp", "port": 9000, "dst": SRV4, "src": CLI4},
        {"proto": "tcp", "port": 9000, "dst": SRV4, "src": OTHER4},
        {"proto": "tcp", "port": 5432, "dst": SRV4, "src": OTHER4},
    )
    assert mine["verdict"] == "accept" and mine["by_policy"]  # returned, then the policy
    assert other["verdict"] == "drop" and (other["chain"], other["rule"]) == ("svc", "counter drop")
    assert other["input_chain"] == "input"
    assert other["next_step"].startswith("allow it: nft insert rule inet filter input tcp dport 9000 accept")
    assert goto["verdict"] == "drop" and goto["chain"] == "svc"
    assert pair.kernel(9000) == ["accept"]


def test_nft_default_policy_drop(pair: Pair) -> None:
    pair.nft(_inet("", policy="drop"))
    a = pair.one("tcp", 22)
    assert (a["verdict"], a["by_policy"], a["policy"], a["rule"]) == ("drop", True, "drop", None)
    assert a["next_step"] == "allow it: nft add rule inet filter input tcp dport 22 accept"
    assert pair.kernel(22) == ["drop"]


def test_nft_ip6_family(pair: Pair) -> None:
    pair.nft(_inet("tcp dport 5432 drop", family="ip6", table="v6only"))
    v6, v4, unsaid = pair.ask(
        {"proto": "tcp", "port": 5432, "dst": SRV6, "src": CLI6},
        {"proto": "tcp", "port": 5432, "dst": SRV4, "src": CLI4},
        {"proto": "tcp", "port": 5432},
    )
    assert v6["verdict"] == "drop" and v6["table"] == "ip6 v6only" and v6["family"] == "ipv6"
    assert v4["verdict"] == "accept" and v4["chain"] is None  # no IPv4 input chain at all
    assert v4["observation"].startswith("no local firewall rule filters incoming tcp/5432")
    assert unsaid["verdict"] == "unknown" and "IPv4 and IPv6 differ" in unsaid["why"]
    assert pair.kernel(5432, addr=SRV6) == ["drop"]
    assert pair.kernel(5432, addr=SRV4) == ["accept"]


def test_nft_unknown_expression(pair: Pair) -> None:
    pair.nft(
        _inet(
            "meta mark 0x1 tcp dport 5432 drop\n udp dport 5433 meta mark 0x2 drop\n meta skuid 0 tcp dport 6379 accept",
            policy="accept",
        )
    )
    pg, udp_only, same = pair.ask(
        {"proto": "tcp", "port": 5432, "dst": SRV4, "src": CLI4},
        {"proto": "tcp", "port": 5433, "dst": SRV4, "src": CLI4},  # the rule cannot match tcp at all
        {"proto": "tcp", "port": 6379, "dst": SRV4, "src": CLI4},  # either way it is accepted
    )
    assert pg["verdict"] == "unknown" and sorted(pg["possible"]) == ["accept", "drop"]
    assert pg["rule"] == "meta mark 0x00000001 tcp dport 5432 drop"
    assert "meta" in pg["why"] and "mark" in pg["why"]
    assert "may accept or drop tcp/5432" in pg["observation"] and pg["passed"] is None
    assert udp_only["verdict"] == "accept" and same["verdict"] == "accept"


def test_nft_input_chains_in_priority_order(pair: Pair) -> None:
    pair.nft(
        _inet("tcp dport 22 accept", table="early", prio=-10)
        + _inet("tcp dport 22 drop", table="late", prio=10)
    )
    a = pair.one("tcp", 22)
    assert a["verdict"] == "drop" and a["table"] == "inet late"  # accept ends one chain, not the hook
    pair.nft("flush ruleset\n" + _inet("tcp dport vmap { 22 : accept, 5432 : drop }", policy="drop"))
    ssh, pg, other = pair.ask(*({"proto": "tcp", "port": p, "dst": SRV4} for p in (22, 5432, 6379)))
    assert (ssh["verdict"], pg["verdict"], other["verdict"]) == ("accept", "drop", "drop")
    assert pair.kernel(22, 5432) == ["accept", "drop"]


def test_nft_empty_ruleset_accepts(pair: Pair) -> None:
    a = pair.one("tcp", 22)
    assert a["readable"] and a["verdict"] == "accept" and a["chain"] is None and a["passed"] is True


# ------------------------------------------------------------------------------------ iptables

_IPT = f"""*filter
:INPUT DROP [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:svc - [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p tcp -m tcp --dport 5432 -j DROP
-A INPUT -p tcp -m tcp --dport 7000 -j REJECT --reject-with tcp-reset
-A INPUT -p tcp -m multiport --dports 22,80,8000:8100 -m comment --comment "web and \\"ssh\\"" -j ACCEPT
-A INPUT -s {CLI4}/32 -p tcp -m tcp --dport 6379 -j ACCEPT
-A INPUT -p tcp -m tcp --dport 9000 -j svc
-A INPUT -p tcp -m recent --rcheck --name x --dport 443 -j ACCEPT
-A svc -s {CLI4}/32 -j ACCEPT
-A svc -j DROP
COMMIT
"""


@pytest.mark.skipif(not HAS_IPTABLES, reason="iptables is not installed (scripts/apt-test-deps.sh)")
def test_iptables_rules(pair: Pair) -> None:
    pair.iptables(_IPT)
    qs = [
        (5432, CLI4),
        (7000, CLI4),
        (80, CLI4),
        (8005, CLI4),
        (6379, CLI4),
        (6379, OTHER4),
        (9000, CLI4),
        (9000, OTHER4),
        (443, CLI4),
        (5433, CLI4),
    ]
    got = pair.ask(*({"proto": "tcp", "port": p, "dst": SRV4, "src": s} for p, s in qs))
    verdicts = [a["verdict"] for a in got]
    assert verdicts == [
        "drop",
        "reject",
        "accept",
        "accept",
        "accept",
        "drop",
        "accept",
        "drop",
        "unknown",
        "drop",
    ]
    pg = got[0]
    assert pg["backend"] == "iptables" and (pg["table"], pg["chain"]) == ("filter", "INPUT")
    assert pg["rule"] == "-A INPUT -p tcp -m tcp --dport 5432 -j DROP"
    assert pg["observation"] == (
        "the local iptables ruleset drops tcp/5432 (table filter, chain INPUT: -A INPUT -p tcp -m tcp --dport 5432 -j DROP)"
    )
    assert (
        pg["next_step"]
        == "allow it: iptables -I INPUT -p tcp --dport 5432 -j ACCEPT (or fix the rule quoted above)"
    )
    assert got[1]["reject_with"] == "tcp-reset"
    assert got[7]["chain"] == "svc" and got[7]["rule"] == "-A svc -j DROP"
    assert "-m recent" in got[8]["why"] and got[8]["rule"].startswith("-A INPUT -p tcp -m recent")
    assert got[9]["by_policy"] and got[9]["policy"] == "drop"
    lo = pair.one("tcp", 5433, dst="127.0.0.1", src=None)
    assert lo["verdict"] == "accept" and lo["rule"] == "-A INPUT -i lo -j ACCEPT"
    assert pair.kernel(5432, 7000, 80, 8005, 6379, 9000, 5433) == [
        "drop",
        "reject",
        "accept",
        "accept",
        "accept",
        "accept",
        "drop",
    ]


@pytest.mark.skipif(not HAS_IPTABLES, reason="iptables is not installed (scripts/apt-test-deps.sh)")
def test_ip6tables_rules(pair: Pair) -> None:
    pair.iptables(
        "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p tcp -m tcp --dport 5432 -j DROP\nCOMMIT\n", v6=True
    )
    v6, v4 = pair.ask(
        {"proto": "tcp", "port": 5432, "dst": SRV6}, {"proto": "tcp", "port": 5432, "dst": SRV4}
    )
    assert v6["verdict"] == "drop" and v6["family"] == "ipv6"
    assert v6["next_step"].startswith("allow it: ")
    assert v4["verdict"] == "accept"
    assert pair.kernel(5432, addr=SRV6) == ["drop"]


@pytest.mark.skipif(not HAS_LEGACY, reason="iptables-legacy is not installed")
def test_iptables_legacy_next_to_nftables(pair: Pair) -> None:
    """Both run on the same hook: nft accepting is not enough when the legacy table drops."""
    pair.nft(_inet("tcp dport 22 accept"))
    pair.iptables(
        "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p tcp -m tcp --dport 22 -j DROP\nCOMMIT\n", legacy=True
    )
    a = pair.one("tcp", 22)
    assert a["verdict"] == "drop" and a["backend"] == "iptables-legacy"
    assert a["next_step"].startswith("allow it: iptables-legacy -I INPUT -p tcp --dport 22 -j ACCEPT")
    assert pair.kernel(22) == ["drop"]


# ------------------------------------------------------------------------------ cannot read


def test_not_root_cannot_read() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to run a check as another user")
    python, copy = unprivileged_runtime()
    code = (
        "import json; from portscope.diagnose import firewall as fw; a = fw.verdict_for('tcp', 22, '127.0.0.1');"
        " print(json.dumps([a.to_dict(), fw.next_step(a)]))"
    )
    done = subprocess.run(
        [python, "-c", code],
        env={"PYTHONPATH": copy, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        preexec_fn=demote("nobody"),
        timeout=60,
        cwd="/",
    )
    a, step = json.loads(done.stdout)
    assert a["readable"] is False and a["verdict"] == "unknown"
    assert "root" in a["why"]
    assert step == "run portscope as root to let it read the local firewall"


def test_no_tools_installed() -> None:
    src = fw.read_sources(search_path="/nonexistent")
    assert src.errors == ["neither nft nor iptables-save is installed"]
    a = fw.evaluate(src, "tcp", 22)
    assert not a.readable and a.why == "neither nft nor iptables-save is installed"
    e = fw.evidence(a)
    assert e.check == "firewall" and e.passed is None and "could not read the local firewall" in e.observation


def test_bad_arguments() -> None:
    for args in (("icmp", 1), ("tcp", 70000), ("tcp", 22, "not-an-ip"), ("tcp", 22, "10.0.0.1", "::1")):
        with pytest.raises(ValueError):
            fw.evaluate(fw.Sources(), *args)


def test_saved_output_without_root() -> None:
    """evaluate() works on output saved earlier: nft JSON as nft 1.0.6 prints it."""
    doc = {
        "nftables": [
            {
                "chain": {
                    "family": "inet",
                    "table": "f",
                    "name": "in",
                    "type": "filter",
                    "hook": "input",
                    "prio": 0,
                    "policy": "drop",
                }
            },
            {
                "rule": {
                    "family": "inet",
                    "table": "f",
                    "chain": "in",
                    "handle": 4,
                    "expr": [
                        {
                            "match": {
                                "op": "==",
                                "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                                "right": {"prefix": {"addr": "192.0.2.0", "len": 24}},
                            }
                        },
                        {
                            "match": {
                                "op": "==",
                                "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                                "right": {"range": [20, 30]},
                            }
                        },
                        {"counter": {"packets": 0, "bytes": 0}},
                        {"accept": None},
                    ],
                }
            },
        ]
    }
    src = fw.Sources(nft_json=json.dumps(doc))
    assert fw.evaluate(src, "tcp", 22, "192.0.2.1", "192.0.2.9").verdict == "accept"
    assert fw.evaluate(src, "tcp", 22, "192.0.2.1", "198.51.100.1").verdict == "drop"
    a = fw.evaluate(src, "tcp", 22, "192.0.2.1", "192.0.2.9")
    assert a.rule == "ip saddr 192.0.2.0/24 tcp dport 20-30 counter accept"  # rendered: no `nft -a` text


# ------------------------------------------------------------------------------- fuzzing

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
_words = st.sampled_from(
    [
        "tcp",
        "udp",
        "th",
        "ip",
        "ip6",
        "dport",
        "sport",
        "saddr",
        "daddr",
        "flags",
        "state",
        "status",
        "iifname",
        "l4proto",
        "nfproto",
        "mark",
        "new",
        "established",
        "syn",
        "lo",
        "eth*",
        "10.0.0.0",
        "::1",
        "@s",
        "@missing",
    ]
)
_side = st.one_of(
    _words,
    st.integers(-5, 70000),
    st.builds(lambda p, f: {"payload": {"protocol": p, "field": f}}, _words, _words),
    st.builds(lambda k: {"meta": {"key": k}}, _words),
    st.builds(lambda k: {"ct": {"key": k}}, _words),
    st.builds(lambda a, b: {"range": [a, b]}, st.integers(-1, 70000), st.integers(-1, 70000)),
    st.builds(lambda a, n: {"prefix": {"addr": a, "len": n}}, _words, st.integers(-1, 200)),
    st.builds(lambda xs: {"set": xs}, st.lists(_words | st.integers(0, 70000), max_size=4)),
    st.builds(
        lambda left, m: {"&": [left, m]},
        st.builds(lambda: {"payload": {"protocol": "tcp", "field": "flags"}}),
        _words,
    ),
    _json,
)
_expr = st.one_of(
    st.builds(
        lambda op, left, r: {"match": {"op": op, "left": left, "right": r}},
        st.sampled_from(["==", "!=", "in", "<", ">=", "~"]),
        _side,
        _side,
    ),
    st.sampled_from(
        [
            {"accept": None},
            {"drop": None},
            {"return": None},
            {"reject": None},
            {"counter": None},
            {"limit": {}},
        ]
    ),
    st.builds(
        lambda k, t: {k: {"target": t}},
        st.sampled_from(["jump", "goto"]),
        st.sampled_from(["a", "b", "input", "nope"]),
    ),
    st.builds(lambda k, d: {"vmap": {"key": k, "data": d}}, _side, _json),
    st.builds(
        lambda n, t: {"xt": {"type": t, "name": n}}, st.text(max_size=6), st.sampled_from(["match", "target"])
    ),
    _json,
)
_chain_names = st.sampled_from(["input", "a", "b"])
_BASE = {
    "chain": {"family": "inet", "table": "t", "name": "input", "type": "filter", "hook": "input", "prio": 0}
}
_nft_doc = st.builds(
    lambda chains, rules, sets, junk: {"nftables": [_BASE, *chains, *rules, *sets, *junk]},
    st.lists(
        st.builds(
            lambda fam, name, base, prio, pol: {
                "chain": {
                    "family": fam,
                    "table": "t",
                    "name": name,
                    **({"type": "filter", "hook": "input", "prio": prio, "policy": pol} if base else {}),
                }
            },
            st.sampled_from(["inet", "ip", "ip6", "bridge"]),
            _chain_names,
            st.booleans(),
            st.integers(-500, 500) | st.text(max_size=3),
            st.sampled_from(["accept", "drop", "weird"]),
        ),
        max_size=4,
    ),
    st.lists(
        st.builds(
            lambda fam, chain, exprs, handle: {
                "rule": {"family": fam, "table": "t", "chain": chain, "handle": handle, "expr": exprs}
            },
            st.sampled_from(["inet", "ip", "ip6"]),
            _chain_names,
            st.lists(_expr, max_size=5) | _json,
            st.integers(0, 9) | st.none(),
        ),
        max_size=10,
    ),
    st.lists(
        st.builds(
            lambda fam, elem: {"set": {"family": fam, "table": "t", "name": "s", "elem": elem}},
            st.sampled_from(["inet", "ip"]),
            _json | st.lists(_side, max_size=4),
        ),
        max_size=2,
    ),
    st.lists(_json, max_size=2),
)

_ipt_tokens = st.sampled_from(
    [
        "-A",
        "INPUT",
        "svc",
        "-p",
        "tcp",
        "udp",
        "all",
        "!",
        "-s",
        "-d",
        "10.0.0.1/32",
        "::1",
        "-i",
        "lo",
        "eth+",
        "-m",
        "tcp",
        "multiport",
        "state",
        "conntrack",
        "comment",
        "recent",
        "--dport",
        "--dports",
        "--sport",
        "--ports",
        "22",
        "80,443",
        "1:",
        ":9",
        "70000",
        "--state",
        "--ctstate",
        "NEW",
        "RELATED,ESTABLISHED",
        "--tcp-flags",
        "SYN,ACK",
        "SYN",
        "ALL",
        "NONE",
        "--syn",
        "--comment",
        '"a b"',
        "-j",
        "-g",
        "ACCEPT",
        "DROP",
        "REJECT",
        "RETURN",
        "LOG",
        "NFQUEUE",
        "--reject-with",
        "tcp-reset",
        "-c",
        "[1:2]",
        "--dst-type",
        "LOCAL",
        "'",
    ]
)
_ipt_line = (
    st.builds(
        lambda c, toks: " ".join([f"-A {c}", *toks]),
        st.sampled_from(["INPUT", "svc"]),
        st.lists(_ipt_tokens, max_size=12),
    )
    | st.lists(_ipt_tokens, max_size=12).map(" ".join)
    | st.text(max_size=40)
)
_ipt_text = st.builds(
    lambda pol, lines, tail: "\n".join(
        [
            "# Generated by iptables-save v1.8.9 (nf_tables)",
            "*filter",
            f":INPUT {pol} [0:0]",
            ":svc - [0:0]",
            *lines,
            "COMMIT",
            tail,
        ]
    ),
    st.sampled_from(["ACCEPT", "DROP", "-", "X"]),
    st.lists(_ipt_line, max_size=12),
    st.text(max_size=30),
)

_queries = st.tuples(
    st.sampled_from(["tcp", "udp"]),
    st.integers(0, 65535),
    st.sampled_from([None, "10.0.0.1", "127.0.0.1", "::1", "2001:db8::1"]),
)


def _strings(x: Any) -> Iterator[str]:
    if isinstance(x, str):
        yield x
    elif isinstance(x, dict):
        for v in x.values():
            yield from _strings(v)
    elif isinstance(x, list):
        for v in x:
            yield from _strings(v)


def _check(a: fw.FirewallAnswer) -> None:
    """Whatever the ruleset held: a known verdict, bounded fields, nothing a terminal would obey."""
    assert a.verdict in fw.VERDICTS
    e = fw.evidence(a)
    for text in (*_strings(a.to_dict()), e.observation, e.data["next_step"] or ""):
        assert not CONTROL.search(text)
    for text in (a.rule, a.table, a.chain, *(d.rule for d in a.depends_on)):
        assert text is None or len(text) <= fw.RULE_CHARS + 1
    assert a.why is None or len(a.why) <= 2 * fw.RULE_CHARS + 1
    assert len(a.depends_on) <= fw.MAX_DEPS


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=_nft_doc | _json, q=_queries)
def test_fuzz_nft_json_never_raises(doc: Any, q: tuple[str, int, str | None]) -> None:
    a = fw.evaluate(fw.Sources(nft_json=json.dumps(doc)), *q)
    _check(a)
    assert a.readable


@settings(max_examples=300, deadline=None)
@given(text=_ipt_text | st.text(max_size=200), v6=st.booleans(), q=_queries)
def test_fuzz_iptables_save_never_raises(text: str, v6: bool, q: tuple[str, int, str | None]) -> None:
    src = fw.Sources(ip6tables=text) if v6 else fw.Sources(iptables=text)
    _check(fw.evaluate(src, *q))


@settings(max_examples=200, deadline=None)
@given(
    text=st.text(max_size=300),
    extra=st.lists(
        st.sampled_from(
            ["table inet t {", "chain c {", "set s {", "tcp dport 22 accept # handle 3", "}", "ct helper h {"]
        ),
        max_size=8,
    ),
)
def test_fuzz_nft_text_never_raises(text: str, extra: list[str]) -> None:
    out = fw.parse_nft_text("\n".join([*extra, text]))
    for rule in out.values():
        assert len(rule) <= fw.RULE_CHARS + 1 and not CONTROL.search(rule)


def test_hostile_names_are_escaped() -> None:
    evil = "in\x1b]0;pwned\x07put"
    doc = {
        "nftables": [
            {
                "chain": {
                    "family": "inet",
                    "table": evil,
                    "name": evil,
                    "type": "filter",
                    "hook": "input",
                    "prio": 0,
                }
            },
            {"rule": {"family": "inet", "table": evil, "chain": evil, "expr": [{"jump": {"target": evil}}]}},
        ]
    }
    a = fw.evaluate(fw.Sources(nft_json=json.dumps(doc)), "tcp", 22, "10.0.0.1")
    assert a.verdict == "unknown"
    _check(a)
    assert "\x1b" not in fw.evidence(a).observation and "\\x1b" in (a.chain or "")


def test_nft_common_matches(pair: Pair) -> None:
    pair.nft(
        _inet(
            f"""ip protocol tcp tcp dport 5432 drop
        meta l4proto {{ tcp, udp }} th dport 7000 reject
        ip daddr {SRV4} tcp dport 443 drop
        ip6 saddr fd00:99::/64 tcp dport 80 drop
        meta nfproto ipv4 tcp dport 8000 drop
        ip saddr != {CLI4} tcp dport 8005 drop
        tcp flags syn / fin,syn,rst,ack tcp dport 8100 drop
        ct status dnat accept
        fib daddr type local tcp dport 8101 drop"""
        )
    )
    queries = [
        ("tcp", 5432, SRV4, CLI4, "drop"),
        ("udp", 5432, SRV4, CLI4, "accept"),
        ("udp", 7000, SRV4, CLI4, "reject"),
        ("tcp", 443, SRV4, CLI4, "drop"),
        ("tcp", 443, "10.99.0.9", CLI4, "accept"),
        ("tcp", 80, SRV6, CLI6, "drop"),
        ("tcp", 80, SRV4, CLI4, "accept"),
        ("tcp", 8000, SRV4, CLI4, "drop"),
        ("tcp", 8000, SRV6, CLI6, "accept"),
        ("tcp", 8005, SRV4, CLI4, "accept"),
        ("tcp", 8005, SRV4, OTHER4, "drop"),
        ("tcp", 8100, SRV4, CLI4, "drop"),
        ("tcp", 8101, SRV4, CLI4, "drop"),
    ]
    got = pair.ask(*({"proto": p, "port": n, "dst": d, "src": s} for p, n, d, s, _v in queries))
    assert [(q[1], a["verdict"]) for q, a in zip(queries, got, strict=True)] == [
        (q[1], q[4]) for q in queries
    ]
    assert pair.kernel(5432, 443, 8000, 8005, 8100, 8101, 22) == [
        "drop",
        "drop",
        "drop",
        "accept",
        "drop",
        "drop",
        "accept",
    ]
    assert pair.kernel(80, 8000, addr=SRV6) == ["drop", "accept"]


def test_saved_iptables_output_without_nft() -> None:
    """No nft on the host (an old distribution): iptables-save alone answers."""
    text = "# Generated by iptables-save v1.6.1 on Mon\n*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p udp -m udp --dport 53 -j REJECT --reject-with icmp-port-unreachable\nCOMMIT\n"
    src = fw.Sources(iptables=text, errors=[])
    dns = fw.evaluate(src, "udp", 53, "192.0.2.1")
    assert (dns.verdict, dns.backend, dns.reject_with) == ("reject", "iptables", "icmp-port-unreachable")
    assert fw.evaluate(src, "tcp", 53, "192.0.2.1").verdict == "accept"
    assert fw.evaluate(src, "udp", 53, "2001:db8::1").chain is None  # no ip6tables rules: nothing filters
