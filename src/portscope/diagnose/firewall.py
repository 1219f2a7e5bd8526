"""Would this host's own firewall drop or reject a connection to one of its ports?

`diagnose` asks this when HOST is an address of this machine: a port that listens but times out from
outside is, most of the time, a local INPUT rule. We read the ruleset the way an administrator would
(`nft -j list ruleset`; `iptables-save` where nftables has no say) and walk it for the one packet that
opens the connection: a new connection (ct state new; a TCP SYN) to PROTO/PORT at DST, from SRC.

Honesty over coverage: every match is evaluated to True, False or "cannot tell". When a rule cannot be
told (an expression we do not understand, a source address nobody gave us, an input interface we cannot
know), both ways are followed; if they end in the same verdict, that verdict holds, otherwise the answer
is "unknown" and names the rules it depends on. Nothing is guessed.

Assumptions, stated once: the packet comes from another machine (not the loopback interface) unless DST
or SRC is a loopback address; it was not NATed on the way (ct status has no dnat/snat bit); it is the
first packet of the connection. Only INPUT hooks are walked (prerouting and ingress chains are listed
in `notes`, not evaluated).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import math
import os
import re
import selectors
import shlex
import shutil
import socket
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from portscope.i18n import N_, _, ngettext
from portscope.model import Evidence
from portscope.textsafe import clean

VERDICTS = ("accept", "drop", "reject", "unknown")
TIMEOUT = 10.0  # seconds per command: nft lists 20k rules and a 100k-address set in about two
MAX_OUTPUT = 32 * 1024 * 1024  # bytes read from one command; a bigger ruleset is "unreadable", said so
RULE_CHARS = 300  # a quoted rule is cut here: the sentence must stay a sentence
MAX_DEPTH = 32  # jump stack depth (the kernel allows 16); also ends jump loops in text we parsed
MAX_STEPS = 200_000  # rules visited over all paths of one evaluation
MAX_LEAVES = 256  # paths followed to the end
MAX_DEPS = 8  # rules an "unknown" answer lists
_SBIN = "/usr/local/sbin:/usr/sbin:/sbin"  # nft and iptables live here; a user's PATH often lacks it

Addr = ipaddress.IPv4Address | ipaddress.IPv6Address


# ---------------------------------------------------------------------------------------------- answer


@dataclass(slots=True)
class Dependency:
    """A rule the answer hinges on, and what about it could not be evaluated."""

    rule: str | None  # cleaned rule text; None for the address family when none was given
    table: str | None
    chain: str | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "table": self.table, "chain": self.chain, "reason": self.reason}


@dataclass(slots=True)
class FirewallAnswer:
    """What the local ruleset does with a new connection to proto/port, and the rule that decided."""

    proto: str
    port: int
    readable: bool  # False: we could not read any ruleset (not root, no nft/iptables); see `why`
    verdict: str = "unknown"  # accept | drop | reject | unknown
    backend: str | None = None  # nftables | iptables | ip6tables | iptables-legacy | ip6tables-legacy
    rule: str | None = None  # cleaned text of the deciding rule; None when a chain policy decided
    table: str | None = None  # "inet filter" (nftables), "filter" (iptables)
    chain: str | None = None  # the chain holding that rule (or whose policy decided)
    input_chain: str | None = None  # the input (base) chain it was reached from: where an allow rule goes
    policy: str | None = None  # default policy of the input chain the verdict was reached in
    by_policy: bool = False  # no rule decided: the input chain's policy did
    reject_with: str | None = None  # "tcp reset", "icmpx port-unreachable", "icmp-admin-prohibited", ...
    family: str | None = None  # ipv4 | ipv6: the table family the deciding chain belongs to
    why: str | None = None  # not readable: why; unknown: what could not be evaluated
    possible: list[str] = field(default_factory=list)  # unknown: the verdicts the rules can reach
    depends_on: list[Dependency] = field(default_factory=list)  # unknown: the rules it hinges on
    notes: list[str] = field(default_factory=list)  # what was not evaluated (prerouting chains, ...)

    def to_dict(self) -> dict[str, Any]:
        return {
            "proto": self.proto,
            "port": self.port,
            "readable": self.readable,
            "verdict": self.verdict,
            "backend": self.backend,
            "rule": self.rule,
            "table": self.table,
            "chain": self.chain,
            "input_chain": self.input_chain,
            "policy": self.policy,
            "by_policy": self.by_policy,
            "reject_with": self.reject_with,
            "family": self.family,
            "why": self.why,
            "possible": list(self.possible),
            "depends_on": [d.to_dict() for d in self.depends_on],
            "notes": list(self.notes),
        }


@dataclass(slots=True)
class Sources:
    """What the ruleset commands printed (None: not run, or failed) and why each one failed.

    Kept apart from the evaluation so that saved output can be evaluated (and fuzzed) without root.
    """

    nft_json: str | None = None  # nft -j list ruleset
    nft_text: str | None = None  # nft -a list ruleset: the rules as their author reads them
    iptables: str | None = None  # iptables-save (either backend; its header says which)
    ip6tables: str | None = None
    iptables_legacy: str | None = None  # iptables-legacy-save, when iptables-save warned of legacy tables
    ip6tables_legacy: str | None = None
    errors: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------- the packet


class _S(Enum):
    NOMATCH = "nomatch"  # the packet has no such header (tcp dport on UDP, ip saddr on IPv6): no match
    UNKNOWN = "unknown"  # the packet has the field, but we do not know its value


@dataclass(frozen=True, slots=True)
class _NotLo:
    """An input interface (or its type) that is not the loopback one, otherwise unknown."""

    lo_literal: str  # "lo" for names, "loopback" for iiftype: the one value it surely is not


@dataclass(frozen=True, slots=True)
class _Packet:
    family: str  # ipv4 | ipv6
    proto: str  # tcp | udp
    dport: int
    daddr: Addr | None
    saddr: Addr | None
    lo: bool  # arrives on the loopback interface


_L4 = {
    "icmp": 1,
    "igmp": 2,
    "tcp": 6,
    "udp": 17,
    "dccp": 33,
    "gre": 47,
    "esp": 50,
    "ah": 51,
    "icmpv6": 58,
    "ipv6-icmp": 58,
    "comp": 108,
    "sctp": 132,
    "udplite": 136,
}
_OTHER_L4 = {"icmp", "icmpv6", "igmp", "sctp", "dccp", "udplite", "esp", "ah", "comp", "gre"}
_TCP_FLAGS = ("fin", "syn", "rst", "psh", "ack", "urg", "ecn", "cwr")
_BITMASK = {"ctstate", "ctstatus", "tcpflags"}


# ------------------------------------------------------------------------- compiled matches (both)


class _Unsupported(Exception):
    """An expression this module does not evaluate; the message names it for the user."""


@dataclass(frozen=True, slots=True)
class _Key:
    """Where a match reads its value from the packet."""

    name: str  # dport sport l4proto nfproto ethproto saddr daddr iif iiftype ctstate ctstatus tcpflags
    #            pkttype fibtype other concat
    desc: str  # as the user wrote it ("ip saddr"), to say what could not be evaluated
    need_proto: str | None = None  # the transport header it reads: tcp, udp, th (either), icmp, ...
    need_family: str | None = None  # ipv4 | ipv6: ip/ip6 header fields
    mask: frozenset[str] | None = None  # bitmask keys: `tcp flags & (syn|ack)`
    parts: tuple[_Key, ...] = ()  # concat: `ip saddr . tcp dport`


@dataclass(frozen=True, slots=True)
class _Pat:
    kind: str  # eq | range | net | glob | cat | bits
    a: Any = None
    b: Any = None


@dataclass(frozen=True, slots=True)
class _Match:
    key: _Key
    op: str  # == != in < > <= >=  ("in": bitmask test, or set membership)
    pats: tuple[_Pat, ...]


@dataclass(frozen=True, slots=True)
class _Cond:
    match: _Match | None  # None: an expression we cannot evaluate at all
    reason: str = ""


@dataclass(frozen=True, slots=True)
class _Action:
    kind: str  # accept drop reject jump goto return unknown
    arg: str | None = None  # jump/goto: chain; reject: how; unknown: why


@dataclass(frozen=True, slots=True)
class _VMap:
    key: _Key
    entries: tuple[tuple[_Pat, _Action], ...]


@dataclass(slots=True)
class _Rule:
    text: str
    conds: list[_Cond]
    action: _Action | None = None  # None: no verdict (counter, log): go on with the next rule
    vmap: _VMap | None = None
    xt: bool = False  # written by iptables-nft with extensions nft JSON cannot show


@dataclass(slots=True)
class _Chain:
    source: str  # nftables | iptables | ip6tables | iptables-legacy | ip6tables-legacy
    family: str  # nft table family (inet, ip, ip6); iptables: ip / ip6
    table: str  # table name
    name: str
    rules: list[_Rule] = field(default_factory=list)
    base: bool = False  # hooked at input (filter type)
    prio: int = 0
    policy: str = "accept"

    @property
    def table_label(self) -> str:
        return f"{self.family} {self.table}" if self.source == "nftables" else self.table

    def families(self) -> tuple[str, ...]:
        return {"inet": ("ipv4", "ipv6"), "ip": ("ipv4",), "ip6": ("ipv6",)}.get(self.family, ())


ChainKey = tuple[str, str, str, str]  # source, family, table, name


@dataclass(slots=True)
class _Ruleset:
    chains: dict[ChainKey, _Chain] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def bases(self) -> list[_Chain]:
        return sorted((c for c in self.chains.values() if c.base), key=lambda c: c.prio)

    def lookup(self, near: _Chain, name: str) -> _Chain | None:
        return self.chains.get((near.source, near.family, near.table, name))


def _clean_rule(text: str) -> str:
    return clean(" ".join(text.split()), RULE_CHARS)


# ---------------------------------------------------------------------------------- evaluation


def _value(key: _Key, pkt: _Packet) -> Any:
    if key.need_family is not None and key.need_family != pkt.family:
        return _S.NOMATCH
    if key.need_proto is not None and key.need_proto != "th" and key.need_proto != pkt.proto:
        return _S.NOMATCH
    name = key.name
    if name == "concat":
        parts = tuple(_value(p, pkt) for p in key.parts)
        return _S.NOMATCH if _S.NOMATCH in parts else parts
    value: Any
    if name in ("dport", "anyport"):
        value = pkt.dport
    elif name in ("l4proto", "ipproto"):
        value = _L4[pkt.proto]
    elif name == "nfproto":
        value = pkt.family
    elif name == "ethproto":
        value = "ip" if pkt.family == "ipv4" else "ip6"
    elif name == "saddr":
        value = pkt.saddr if pkt.saddr is not None else _S.UNKNOWN
    elif name == "daddr":
        value = pkt.daddr if pkt.daddr is not None else _S.UNKNOWN
    elif name == "iif":
        value = "lo" if pkt.lo else _NotLo("lo")
    elif name == "iiftype":
        value = "loopback" if pkt.lo else _NotLo("loopback")
    elif name == "ctstate":
        value = frozenset({"new"})
    elif name == "ctstatus":
        value = frozenset()  # only dnat/snat bits are ever tested against it (see _Match compile)
    elif name == "tcpflags":
        value = frozenset({"syn"})
    elif name == "pkttype":
        value = "host"
    elif name == "fibtype":
        value = "local"
    else:  # sport, other fields of a header the packet has
        return _S.UNKNOWN
    if key.mask is not None and isinstance(value, frozenset):
        value = value & key.mask
    return value


def _tri_any(results: Iterable[bool | None]) -> bool | None:
    out: bool | None = False
    for r in results:
        if r is True:
            return True
        if r is None:
            out = None
    return out


def _pat_match(p: _Pat, v: Any) -> bool | None:
    if isinstance(v, _NotLo):
        if p.kind == "eq" and p.a == v.lo_literal:
            return False
        if p.kind == "glob" and p.a == "":
            return True  # "*" matches every name
        return None
    if v is _S.UNKNOWN:
        return None
    if p.kind == "eq":
        return bool(type(v) is type(p.a) and v == p.a)
    if p.kind == "bits":
        return bool(isinstance(v, frozenset) and v == p.a)
    if p.kind == "range":
        if type(v) is type(p.a) is type(p.b):
            return bool(p.a <= v <= p.b)
        return False
    if p.kind == "net":
        return bool(
            isinstance(v, ipaddress.IPv4Address | ipaddress.IPv6Address)
            and v.version == p.a.version
            and v in p.a
        )
    if p.kind == "glob":
        return isinstance(v, str) and v.startswith(p.a)
    if p.kind == "named":
        return p.a.match(v)  # type: ignore[no-any-return]
    if p.kind == "cat":
        if not isinstance(v, tuple) or len(v) != len(p.a):
            return False
        out: bool | None = True
        for sub, part in zip(p.a, v, strict=True):
            r = _pat_match(sub, part)
            if r is False:
                return False
            if r is None:
                out = None
        return out
    return None


def _match(m: _Match, pkt: _Packet) -> bool | None:
    v = _value(m.key, pkt)
    if v is _S.NOMATCH:
        return False
    if m.key.name in _BITMASK and isinstance(v, frozenset) and all(p.kind == "bits" for p in m.pats):
        if m.op in ("in", "!in"):  # bit test: any of the listed bits set
            hit = any(bool(v & p.a) for p in m.pats)
            return hit if m.op == "in" else not hit
        hit = any(v == p.a for p in m.pats)
        return (not hit) if m.op == "!=" else hit
    if m.key.name == "anyport":  # iptables --ports: a listed dport matches; else it hinges on the sport
        return True if _tri_any(_pat_match(p, v) for p in m.pats) else None
    if m.op in ("==", "in"):
        return _tri_any(_pat_match(p, v) for p in m.pats)
    if m.op == "!=":
        r = _tri_any(_pat_match(p, v) for p in m.pats)
        return None if r is None else not r
    if v is _S.UNKNOWN or isinstance(v, _NotLo):
        return None
    if len(m.pats) != 1 or m.pats[0].kind != "eq" or type(v) is not int or type(m.pats[0].a) is not int:
        return None
    a = m.pats[0].a
    return {"<": v < a, ">": v > a, "<=": v <= a, ">=": v >= a}.get(m.op)


def _unknown_reason(key: _Key) -> str:
    if key.name == "concat":
        return ", ".join(_unknown_reason(p) for p in key.parts)
    if key.name == "saddr":
        return _("the client's source address ({field}) was not given").format(field=key.desc)
    if key.name == "daddr":
        return _("the destination address ({field}) was not given").format(field=key.desc)
    if key.name in ("iif", "iiftype"):
        return _("the input interface ({field}) is not known").format(field=key.desc)
    if key.name == "sport":
        return _("the client's source port ({field}) is not known").format(field=key.desc)
    return _("{field} is not evaluated").format(field=key.desc)


def _cond(c: _Cond, pkt: _Packet) -> tuple[bool | None, str]:
    if c.match is None:
        return None, c.reason
    r = _match(c.match, pkt)
    return r, ("" if r is not None else _unknown_reason(c.match.key))


def _outcomes(rule: _Rule, pkt: _Packet) -> tuple[list[_Action | None], str]:
    """Every way this rule can go for the packet (None: it does not match), and why more than one."""
    state: bool | None = True
    reason = ""
    for c in rule.conds:
        r, why = _cond(c, pkt)
        if r is False:
            return [None], ""
        if r is None and state is True:
            state, reason = None, why
    taken: list[_Action | None]
    if rule.vmap is not None:
        taken, vreason = _vmap(rule.vmap, pkt)
        reason = reason or vreason
    else:
        taken = [rule.action]
    if state is None:
        taken = [None, *(a for a in taken if a is not None)]
    out: list[_Action | None] = []
    for a in taken:
        if a not in out:
            out.append(a)
    return out, reason


def _vmap(vm: _VMap, pkt: _Packet) -> tuple[list[_Action | None], str]:
    v = _value(vm.key, pkt)
    if v is _S.NOMATCH:
        return [None], ""
    maybe: list[_Action | None] = []
    for pat, action in vm.entries:
        r = _pat_match(pat, v)
        if r is True:
            return ([action], "") if not maybe else ([*maybe, action], _unknown_reason(vm.key))
        if r is None:
            maybe.append(action)
    return ([None, *maybe], _unknown_reason(vm.key)) if maybe else ([None], "")


@dataclass(frozen=True, slots=True)
class _Dep:
    rule: _Rule | None
    chain: _Chain | None
    reason: str


@dataclass(frozen=True, slots=True)
class _Leaf:
    verdict: str
    rule: _Rule | None
    chain: _Chain | None  # where decided
    base: _Chain | None  # the input chain it was reached from
    deps: tuple[_Dep, ...]
    why: str = ""


Frame = tuple[_Chain, int]
_Accepted = tuple[_Rule, _Chain, _Chain] | None  # the first rule that accepted (rule, its chain, input chain)
# input chain index, call stack, what it hinged on so far, first accept, and the action to take at the
# top frame's rule (None: evaluate that rule)
_State = tuple[int, tuple[Frame, ...], tuple[_Dep, ...], _Accepted, "_Action | None"]


def _evaluate(rs: _Ruleset, pkt: _Packet) -> list[_Leaf]:
    """Every way the rules can go for the packet, depth first, "does not match" first: the first
    leaf is the path on which nothing we could not evaluate matched.

    Input chains run in priority order; a packet must be accepted by each of them.
    """
    bases = [c for c in rs.bases() if pkt.family in c.families()]
    if not bases:
        return [_Leaf("accept", None, None, None, ())]
    leaves: list[_Leaf] = []
    states: list[_State] = [(0, ((bases[0], 0),), (), None, None)]
    steps = 0

    def leave_base(bi: int, deps: tuple[_Dep, ...], acc: _Accepted) -> None:
        """The packet leaves input chain `bi` accepted (by acc's rule, or the policy when acc is None)."""
        base = bases[bi]
        if bi + 1 < len(bases):
            states.append((bi + 1, ((bases[bi + 1], 0),), deps, acc, None))
        elif acc is not None:
            leaves.append(_Leaf("accept", acc[0], acc[1], acc[2], deps))
        else:
            leaves.append(_Leaf("accept", None, base, base, deps))

    def policy(bi: int, deps: tuple[_Dep, ...], acc: _Accepted) -> None:
        base = bases[bi]
        if base.policy == "accept":
            leave_base(bi, deps, acc)
        else:
            verdict = base.policy if base.policy in ("drop", "reject") else "unknown"
            why = "" if verdict != "unknown" else _("a policy we could not read")
            leaves.append(_Leaf(verdict, None, base, base, deps, why))

    while states:
        steps += 1
        if steps > MAX_STEPS or len(leaves) >= MAX_LEAVES:
            why = _("the ruleset has too many paths to follow for this packet")
            leaves.append(_Leaf("unknown", None, None, None, (), why))
            break
        bi, frames, deps, acc, action = states.pop()
        chain, idx = frames[-1]
        if action is None and idx >= len(chain.rules):  # fell off the end: back to the caller, or the policy
            if len(frames) > 1:
                states.append((bi, frames[:-1], deps, acc, None))
            else:
                policy(bi, deps, acc)
            continue
        rule = chain.rules[idx]
        nxt = (*frames[:-1], (chain, idx + 1))
        if action is None:
            outcomes, reason = _outcomes(rule, pkt)
            if len(outcomes) > 1 and len(deps) < 2 * MAX_DEPS:  # bounded: a 100k-rule blocklist stays linear
                deps = (*deps, _Dep(rule, chain, reason))
            for taken in reversed(
                outcomes
            ):  # the stack pops "does not match" first, and follows it to the end
                states.append((bi, nxt, deps, acc, None) if taken is None else (bi, frames, deps, acc, taken))
        elif action.kind == "accept":
            leave_base(bi, deps, acc or (rule, chain, bases[bi]))
        elif action.kind in ("drop", "reject"):
            leaves.append(_Leaf(action.kind, rule, chain, bases[bi], deps, action.arg or ""))
        elif action.kind in ("jump", "goto"):
            target = rs.lookup(chain, action.arg or "")
            if target is None or len(frames) >= MAX_DEPTH:
                why = _("it jumps to chain {name}, which we could not follow").format(name=action.arg)
                leaves.append(_Leaf("unknown", rule, chain, bases[bi], deps, why))
            elif action.kind == "jump":
                states.append((bi, (*nxt, (target, 0)), deps, acc, None))
            else:
                states.append((bi, (*nxt[:-1], (target, 0)), deps, acc, None))
        elif action.kind == "return":
            if len(frames) > 1:
                states.append((bi, frames[:-1], deps, acc, None))
            else:
                policy(bi, deps, acc)
        else:
            leaves.append(_Leaf("unknown", rule, chain, bases[bi], deps, action.arg or ""))
    return leaves


# ----------------------------------------------------------------------------------- nftables


def _int(x: Any, lo: int = 0, hi: int = 65535) -> int:
    if isinstance(x, bool):
        raise _Unsupported(repr(x))
    if isinstance(x, str) and x.isascii() and x.isdigit() and len(x) <= 6:
        x = int(x)
    if isinstance(x, int) and lo <= x <= hi:
        return x
    raise _Unsupported(_short(x))


def _short(x: Any) -> str:
    try:
        text = json.dumps(x, separators=(",", ":"), default=str)
    except (TypeError, ValueError, RecursionError):
        text = "?"
    return clean(text, 80)


_META = {"l4proto": "l4proto", "nfproto": "nfproto", "protocol": "ethproto", "iifname": "iif", "iif": "iif"}
_META.update({"iiftype": "iiftype", "pkttype": "pkttype"})


def _nft_key(left: Any) -> _Key:
    if not isinstance(left, dict) or len(left) != 1:
        raise _Unsupported(_short(left))
    ((kind, body),) = left.items()
    if kind == "meta" and isinstance(body, dict) and body.get("key") in _META:
        key = body["key"]
        return _Key(_META[key], f"meta {key}")
    if kind == "payload" and isinstance(body, dict) and isinstance(body.get("protocol"), str):
        proto, fld = body["protocol"], body.get("field")
        desc = f"{proto} {fld}"
        if proto in ("tcp", "udp", "th"):
            if fld in ("dport", "sport"):
                return _Key(fld, desc, need_proto=proto)
            if proto == "tcp" and fld == "flags":
                return _Key("tcpflags", desc, need_proto="tcp")
            return _Key("other", desc, need_proto=proto)
        if proto in ("ip", "ip6"):
            fam = "ipv4" if proto == "ip" else "ipv6"
            if fld in ("saddr", "daddr"):
                return _Key(fld, desc, need_family=fam)
            if fld in ("protocol", "nexthdr"):
                return _Key("ipproto", desc, need_family=fam)
            return _Key("other", desc, need_family=fam)
        if proto in _OTHER_L4:
            return _Key("other", desc, need_proto=proto)
    if (
        kind == "ct"
        and isinstance(body, dict)
        and body.get("key") in ("state", "status")
        and "dir" not in body
    ):
        return _Key("ct" + body["key"], f"ct {body['key']}")
    if (
        kind == "fib"
        and isinstance(body, dict)
        and body.get("result") == "type"
        and body.get("flags") in (["daddr"], "daddr")
    ):
        return _Key("fibtype", "fib daddr type")
    if kind == "&" and isinstance(body, list) and len(body) == 2:
        inner = _nft_key(body[0])
        if inner.name in _BITMASK and inner.mask is None:
            return _Key(inner.name, inner.desc, inner.need_proto, inner.need_family, _bits(body[1]))
    if kind == "concat" and isinstance(body, list) and 0 < len(body) <= 8:
        parts = tuple(_nft_key(p) for p in body)
        return _Key("concat", " . ".join(p.desc for p in parts), parts=parts)
    if kind in ("meta", "ct") and isinstance(body, dict) and isinstance(body.get("key"), str):
        raise _Unsupported(f"{kind} {clean(body['key'], 30)}")
    raise _Unsupported(f"{kind} {_short(body)}")


def _bits(x: Any) -> frozenset[str]:
    if isinstance(x, str):
        return frozenset({x.lower()})
    if isinstance(x, list) and len(x) <= 32:
        return frozenset().union(*(_bits(i) for i in x)) if x else frozenset()
    if isinstance(x, dict) and len(x) == 1 and "|" in x:
        return _bits(x["|"])
    raise _Unsupported(_short(x))


def _proto_num(x: Any) -> int:
    if isinstance(x, str) and not x.isdigit():
        if x.lower() in _L4:
            return _L4[x.lower()]
        return -1  # a protocol we do not name is not tcp or udp, the only ones we ask about
    return _int(x, 0, 255)


def _ip(text: str) -> Addr:
    """An address, parsed by the C library: blocklists have 100k of them, and ipaddress's own parser
    is twenty times slower. Raises ValueError."""
    try:
        if ":" in text:
            return ipaddress.IPv6Address(int.from_bytes(socket.inet_pton(socket.AF_INET6, text), "big"))
        return ipaddress.IPv4Address(int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big"))
    except (OSError, UnicodeError):
        raise ValueError(text) from None


def _literal(key: _Key, x: Any) -> _Pat:
    """One element of a right-hand side, in the value space of `key`."""
    name = key.name
    if isinstance(x, dict) and len(x) == 1 and "elem" in x and isinstance(x["elem"], dict):
        return _literal(key, x["elem"].get("val"))  # set element with timeout/counter/comment
    if name == "concat":
        if isinstance(x, dict) and isinstance(x.get("concat"), list) and len(x["concat"]) == len(key.parts):
            return _Pat("cat", tuple(_literal(k, v) for k, v in zip(key.parts, x["concat"], strict=True)))
        raise _Unsupported(_short(x))
    if isinstance(x, dict) and len(x) == 1 and isinstance(x.get("range"), list) and len(x["range"]) == 2:
        lo, hi = (_literal(key, v) for v in x["range"])
        if lo.kind == hi.kind == "eq":
            return _Pat("range", lo.a, hi.a)
        raise _Unsupported(_short(x))
    if name in ("dport", "sport"):
        return _Pat("eq", _int(x))
    if name in ("l4proto", "ipproto"):
        return _Pat("eq", _proto_num(x))
    if name in ("saddr", "daddr"):
        if isinstance(x, dict) and isinstance(x.get("prefix"), dict):
            x = f"{x['prefix'].get('addr')}/{x['prefix'].get('len')}"
        if not isinstance(x, str) or len(x) > 64:
            raise _Unsupported(_short(x))
        try:
            addr, slash, bits = x.partition("/")
            a = _ip(addr)
            if not slash:
                return _Pat("eq", a)
            return _Pat("net", ipaddress.ip_network((int(a), _int(bits, 0, a.max_prefixlen)), strict=False))
        except ValueError:
            raise _Unsupported(_short(x)) from None
    if name in _BITMASK:
        return _Pat("bits", _bits(x))
    if name == "iif" and isinstance(x, str):
        if x.endswith("*") and not x.endswith("\\*"):
            return _Pat("glob", x[:-1])
        return _Pat("eq", x)
    if name in ("nfproto", "ethproto", "iiftype", "pkttype", "fibtype") and isinstance(x, str):
        return _Pat("eq", x.lower())
    raise _Unsupported(_short(x))


@dataclass(slots=True)
class _NftCtx:
    family: str
    table: str
    sets: dict[tuple[str, str, str], list[Any]]  # (family, table, name) -> raw elements
    lazy: dict[tuple[str, str, str, _Key], _LazySet] = field(default_factory=dict)
    updated: set[tuple[str, str, str]] = field(default_factory=set)  # sets that rules add packets to


class _LazySet:
    """A named set, compiled the first time a packet is looked up in it: a 100k-address blocklist
    costs nothing when no path reaches it, and is a hash lookup when one does."""

    __slots__ = ("_eq", "_rest", "failed", "key", "raw")

    def __init__(self, key: _Key, raw: list[Any]) -> None:
        self.key, self.raw = key, raw
        self._eq: frozenset[Any] | None = None
        self._rest: tuple[_Pat, ...] = ()
        self.failed = False

    def match(self, v: Any) -> bool | None:
        if self._eq is None and not self.failed:
            try:
                pats = [_literal(self.key, e) for e in self.raw]
                self._eq = frozenset(p.a for p in pats if p.kind == "eq")
                self._rest = tuple(p for p in pats if p.kind != "eq")
            except (_Unsupported, RecursionError, TypeError):
                self.failed = True
        if self._eq is None:
            return None
        if isinstance(v, _NotLo) or v is _S.UNKNOWN:
            return _tri_any(_pat_match(p, v) for p in (*(_Pat("eq", a) for a in self._eq), *self._rest))
        if v in self._eq:
            return True
        return _tri_any(_pat_match(p, v) for p in self._rest)


def _right(key: _Key, right: Any, ctx: _NftCtx) -> tuple[_Pat, ...]:
    if isinstance(right, str) and right.startswith("@"):
        elems = ctx.sets.get((ctx.family, ctx.table, right[1:]))
        if elems is None:
            raise _Unsupported(f"set {clean(right, 40)}")
        if (ctx.family, ctx.table, right[1:]) in ctx.updated:  # its content depends on the traffic
            raise _Unsupported(_("{name} (a set the ruleset itself fills)").format(name=clean(right, 40)))
        lazy = ctx.lazy.setdefault((ctx.family, ctx.table, right[1:], key), _LazySet(key, elems))
        return (_Pat("named", lazy),)
    if isinstance(right, dict) and len(right) == 1 and "set" in right:
        items = right["set"]
        items = items if isinstance(items, list) else [items]
        if key.name in _BITMASK:  # `ct state { new, untracked }`: the whole value is one of these
            return tuple(_Pat("bits", _bits(i)) for i in items)
        return tuple(_literal(key, i) for i in items)
    if key.name in _BITMASK:
        return (_Pat("bits", _bits(right)),)
    if isinstance(right, list) and key.name != "concat":
        return tuple(_literal(key, i) for i in right)
    return (_literal(key, right),)


def _nft_match(body: Any, ctx: _NftCtx) -> _Match:
    if not isinstance(body, dict):
        raise _Unsupported(_short(body))
    key = _nft_key(body.get("left"))
    op = body.get("op", "==")
    if op not in ("==", "!=", "in", "<", ">", "<=", ">="):
        raise _Unsupported(f"op {_short(op)}")
    pats = _right(key, body.get("right"), ctx)
    # ct status: a new connection to this host that was not NATed has no dnat/snat bit; other bits
    # are not evaluated.
    dnat_snat_only = all(p.kind == "bits" and p.a and p.a <= {"dnat", "snat"} for p in pats)
    if key.name == "ctstatus" and (not dnat_snat_only or op not in ("in", "==", "!=")):
        raise _Unsupported(f"ct status {_short(body.get('right'))}")
    if op in ("<", ">", "<=", ">=") and (
        len(pats) != 1 or pats[0].kind != "eq" or type(pats[0].a) is not int
    ):
        raise _Unsupported(f"{key.desc} {op} {_short(body.get('right'))}")
    return _Match(key, op, pats)


_VERDICT_KEYS = ("accept", "drop", "continue", "return")
_HARMLESS = {
    "counter",
    "log",
    "notrack",
    "dup",
    "ct helper",
    "ct timeout",
    "ct expectation",
    "secmark",
    "comment",
}


def _nft_reject_how(body: Any) -> str:
    if isinstance(body, dict):
        words = [str(body.get(k)) for k in ("type", "expr") if isinstance(body.get(k), str | int)]
        if words:
            return clean(" ".join(words), 60)
    return "icmp port-unreachable"


def _nft_verdict(kind: str, body: Any) -> _Action | None:
    """The verdict a statement gives; None when it is not a verdict."""
    if kind in _VERDICT_KEYS:
        return _Action(kind)
    if kind == "reject":
        return _Action("reject", _nft_reject_how(body))
    if kind in ("jump", "goto"):
        if isinstance(body, dict) and isinstance(body.get("target"), str):
            return _Action(kind, body["target"])
        raise _Unsupported(f"{kind} {_short(body)}")
    return None


def _nft_rule(exprs: Any, ctx: _NftCtx, text: str) -> _Rule:
    rule = _Rule(text, [])
    if not isinstance(exprs, list):
        rule.action = _Action("unknown", _("a rule we could not read"))
        return rule
    for e in exprs[:256]:
        try:
            if not isinstance(e, dict) or len(e) != 1:
                raise _Unsupported(_short(e))
            ((kind, body),) = e.items()
            if kind == "match":
                try:
                    rule.conds.append(_Cond(_nft_match(body, ctx)))
                except _Unsupported as x:
                    rule.conds.append(_Cond(None, _("{expr} is not evaluated").format(expr=x)))
                continue
            verdict = _nft_verdict(kind, body)
            if verdict is not None:
                rule.action = None if verdict.kind == "continue" else verdict
                return rule
            if kind == "vmap":
                if not isinstance(body, dict):
                    raise _Unsupported("vmap")
                key = _nft_key(body.get("key"))
                data = body.get("data")
                if isinstance(data, str) and data.startswith("@"):
                    data = {"set": ctx.sets.get((ctx.family, ctx.table, data[1:]))}
                items = data.get("set") if isinstance(data, dict) else None
                if not isinstance(items, list):
                    raise _Unsupported(f"vmap {_short(data)}")
                entries = []
                for item in items:
                    if (
                        not isinstance(item, list)
                        or len(item) != 2
                        or not isinstance(item[1], dict)
                        or len(item[1]) != 1
                    ):
                        raise _Unsupported(f"vmap {_short(item)}")
                    ((vk, vb),) = item[1].items()
                    act = _nft_verdict(vk, vb)
                    if act is None:
                        raise _Unsupported(f"vmap {_short(item)}")
                    pat = _Pat("bits", _bits(item[0])) if key.name in _BITMASK else _literal(key, item[0])
                    entries.append((pat, act))
                rule.vmap = _VMap(key, tuple(entries))
                return rule
            if kind in _HARMLESS:
                continue
            if kind in ("limit", "quota", "meter") or (
                kind in ("set", "map") and isinstance(body, dict) and body.get("stmt")
            ):
                rule.conds.append(_Cond(None, _("{expr} (rate or quota) is not evaluated").format(expr=kind)))
                continue
            if kind in ("set", "map"):  # adds the packet to a set: changes no verdict of this packet
                continue
            if (
                kind == "mangle"
                and isinstance(body, dict)
                and isinstance(body.get("key"), dict)
                and (set(body["key"]) & {"meta", "ct"})
            ):
                continue  # marks, priorities: matches on them are not evaluated anyway
            if kind == "xt" and isinstance(body, dict):
                name, typ = str(body.get("name")), body.get("type")
                rule.xt = True
                if typ == "match":
                    rule.conds.append(
                        _Cond(
                            None, _("iptables extension {name} is not evaluated").format(name=clean(name, 40))
                        )
                    )
                    continue
                if typ == "target" and name in ("LOG", "NFLOG", "ULOG", "MARK", "CONNMARK", "AUDIT", "TRACE"):
                    continue
                if typ == "target" and name == "REJECT":
                    rule.action = _Action("reject", "REJECT")
                    return rule
                if typ == "target" and name in ("ACCEPT", "DROP"):
                    rule.action = _Action(name.lower())
                    return rule
                raise _Unsupported(f"xt {clean(name, 40)}")
            raise _Unsupported(f"{kind} {_short(body)}")
        except _Unsupported as x:
            rule.action = _Action("unknown", _("{expr} is not evaluated").format(expr=x))
            return rule
    return rule


_TEXT_TABLE = re.compile(r'^table\s+(\S+)\s+("[^"]*"|\S+)\s*\{')
_TEXT_CHAIN = re.compile(r'^chain\s+("[^"]*"|\S+)\s*\{')
_TEXT_HANDLE = re.compile(r"\s*#\s*handle\s+(\d+)\s*$")
_TEXT_COUNTER = re.compile(r"\bcounter packets \d+ bytes \d+")
_TEXT_BLOCK = re.compile(
    r'^(set|map|flowtable|counter|quota|limit|ct \w+|secmark|synproxy)\s+("[^"]*"|\S+)\s*\{'
)


def parse_nft_text(text: str) -> dict[tuple[str, str, str, int], str]:
    """(family, table, chain, handle) -> the rule as `nft -a list ruleset` prints it, counters elided."""
    out: dict[tuple[str, str, str, int], str] = {}
    family = table = chain = None
    for raw in text.splitlines()[:500_000]:
        line = raw.strip()
        if m := _TEXT_TABLE.match(line):
            family, table, chain = m.group(1), m.group(2).strip('"'), None
        elif m := _TEXT_CHAIN.match(line):
            chain = m.group(1).strip('"')
        elif _TEXT_BLOCK.match(line):
            chain = None
        elif (h := _TEXT_HANDLE.search(line)) and family and table and chain and len(line) < 100_000:
            body = _TEXT_COUNTER.sub("counter", line[: h.start()])
            with contextlib.suppress(ValueError):
                out[(family, table, chain, int(h.group(1)))] = _clean_rule(body)
    return out


def _render(exprs: Any) -> str:
    """A readable stand-in for a rule when `nft -a` text is missing: matches and verdicts as nft writes them."""
    words: list[str] = []
    for e in exprs if isinstance(exprs, list) else []:
        if isinstance(e, dict) and len(e) == 1:
            ((kind, body),) = e.items()
            if kind == "match" and isinstance(body, dict):
                op = body.get("op", "==")
                words += [
                    _render_side(body.get("left")),
                    "" if op in ("==", "in") else str(op),
                    _render_side(body.get("right")),
                ]
                continue
            if kind in ("accept", "drop", "return", "continue"):
                words.append(kind)
                continue
            if kind in ("jump", "goto") and isinstance(body, dict):
                words += [kind, str(body.get("target"))]
                continue
            if kind == "reject":
                words.append(f"reject with {_nft_reject_how(body)}")
                continue
            if kind in ("counter", "log", "limit"):
                words.append(kind)
                continue
        words.append(_short(e))
    return _clean_rule(" ".join(w for w in words if w))


def _render_side(x: Any) -> str:
    if isinstance(x, dict) and len(x) == 1:
        ((kind, body),) = x.items()
        if kind == "payload" and isinstance(body, dict):
            return f"{body.get('protocol')} {body.get('field')}"
        if kind in ("meta", "ct") and isinstance(body, dict):
            return f"{kind} {body.get('key')}"
        if kind == "set" and isinstance(body, list):
            return "{ " + ", ".join(_render_side(i) for i in body[:20]) + " }"
        if kind == "range" and isinstance(body, list) and len(body) == 2:
            return f"{_render_side(body[0])}-{_render_side(body[1])}"
        if kind == "prefix" and isinstance(body, dict):
            return f"{body.get('addr')}/{body.get('len')}"
    if isinstance(x, list):
        return ",".join(_render_side(i) for i in x[:20])
    if isinstance(x, str | int) and not isinstance(x, bool):
        return str(x)
    return _short(x)


def parse_nft_json(doc: Any, text: dict[tuple[str, str, str, int], str] | None = None) -> _Ruleset:
    """`nft -j list ruleset` (already decoded) into chains; never raises, whatever the document holds.

    A rule that cannot be read becomes a rule whose verdict is "unknown": if it can match, the answer
    says so instead of skipping it.
    """
    rs = _Ruleset()
    items = doc.get("nftables") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        rs.notes.append(_("the nftables JSON had no ruleset"))
        return rs
    sets: dict[tuple[str, str, str], list[Any]] = {}
    lazy: dict[tuple[str, str, str, _Key], _LazySet] = {}
    updated: set[tuple[str, str, str]] = set()
    rules: list[dict[str, Any]] = []
    for item in items:
        if not isinstance(item, dict) or len(item) != 1:
            continue
        ((kind, body),) = item.items()
        if not isinstance(body, dict):
            continue
        fam, tab, name = body.get("family"), body.get("table"), body.get("name")
        if kind in ("set", "map") and isinstance(fam, str) and isinstance(tab, str) and isinstance(name, str):
            elem = body.get("elem", [])
            sets[(fam, tab, name)] = elem if isinstance(elem, list) else [elem]
        elif kind == "chain" and isinstance(fam, str) and isinstance(tab, str) and isinstance(name, str):
            chain = _Chain("nftables", fam, tab, name)
            hook, typ = body.get("hook"), body.get("type")
            prio = body.get("prio", 0)
            if hook == "input" and typ == "filter" and fam in ("inet", "ip", "ip6"):
                chain.base = True
                chain.prio = prio if isinstance(prio, int) and not isinstance(prio, bool) else 0
                policy = body.get("policy", "accept")
                chain.policy = policy if policy in ("accept", "drop") else "unknown"
            elif hook in ("prerouting", "ingress") and typ == "filter":
                rs.notes.append(
                    _("chain {chain} of table {family} {table} ({hook} hook) was not evaluated").format(
                        chain=clean(name, 60),
                        family=clean(fam, 10),
                        table=clean(tab, 60),
                        hook=clean(str(hook), 20),
                    )
                )
            rs.chains[("nftables", fam, tab, name)] = chain
        elif kind == "rule":
            rules.append(body)
            if isinstance(fam, str) and isinstance(body.get("table"), str):
                updated.update((fam, body["table"], n) for n in _updated_sets(body.get("expr")))
    for body in rules:
        fam, tab, cname = body.get("family"), body.get("table"), body.get("chain")
        if not (isinstance(fam, str) and isinstance(tab, str) and isinstance(cname, str)):
            continue
        owner = rs.chains.get(("nftables", fam, tab, cname))
        if owner is None:
            continue
        handle = body.get("handle")
        rendered = (text or {}).get((fam, tab, cname, handle)) if isinstance(handle, int) else None
        exprs = body.get("expr")
        ctx = _NftCtx(fam, tab, sets, lazy, updated)
        try:
            owner.rules.append(_nft_rule(exprs, ctx, rendered or _render(exprs)))
        except (RecursionError, ValueError, TypeError, KeyError, AttributeError):
            owner.rules.append(_Rule(rendered or "?", [], _Action("unknown", _("a rule we could not read"))))
    return rs


def _updated_sets(exprs: Any) -> Iterable[str]:
    """Names of the sets a rule adds to or deletes from (`add @x { ip saddr }`, meters)."""
    for e in exprs[:256] if isinstance(exprs, list) else []:
        if isinstance(e, dict) and len(e) == 1:
            ((kind, body),) = e.items()
            if kind in ("set", "map") and isinstance(body, dict) and isinstance(body.get(kind), str):
                yield body[kind].removeprefix("@")
            elif kind == "meter" and isinstance(body, dict) and isinstance(body.get("name"), str):
                yield body["name"]


def _nft_has_xt(rs: _Ruleset, family: str, table: str) -> bool:
    """Rules iptables-nft wrote with extensions nft JSON cannot show: iptables-save reads them better."""
    return any(
        r.xt
        for (src, fam, tab, _name), c in rs.chains.items()
        if (src, fam, tab) == ("nftables", family, table)
        for r in c.rules
    )


# ----------------------------------------------------------------------------------- iptables

_IPT_HARMLESS_TARGETS = {"LOG", "NFLOG", "ULOG", "MARK", "CONNMARK", "AUDIT", "TRACE", "CT", "NOTRACK"}
_IPT_ALL_FLAGS = frozenset({"fin", "syn", "rst", "psh", "ack", "urg"})
_IPT_ONE_ARG = {"-p", "--protocol", "-s", "--source", "-d", "--destination", "-i", "--in-interface"}
_IPT_ONE_ARG |= {"-o", "--out-interface", "-m", "--match", "-j", "--jump", "-g", "--goto"}
_IPT_NO_ARG = {"--syn", "-f", "--fragment"}


def _ipt_flags(s: str) -> frozenset[str]:
    s = s.lower()
    if s == "all":
        return _IPT_ALL_FLAGS
    if s == "none":
        return frozenset()
    flags = frozenset(f for f in s.split(",") if f)
    if not flags <= set(_TCP_FLAGS):
        raise _Unsupported(f"--tcp-flags {clean(s, 40)}")
    return flags


def _ipt_ports(s: str) -> tuple[_Pat, ...]:
    pats = []
    for part in s.split(",")[:64]:
        if ":" in part:
            lo, _sep, hi = part.partition(":")
            pats.append(_Pat("range", _int(lo) if lo else 0, _int(hi) if hi else 65535))
        else:
            pats.append(_Pat("eq", _int(part)))
    return tuple(pats)


def _ipt_cond(name: str, args: list[str], neg: bool, module: str | None, proto: str | None) -> _Cond | None:
    """The condition one option adds (None: it adds none, like a comment); raises _Unsupported."""
    op = "!=" if neg else "=="
    a = args[0] if args else ""
    need = module if module in ("tcp", "udp") else proto if proto in ("tcp", "udp") else None
    if name in ("-p", "--protocol"):
        if a.lower() == "all":
            return _Cond(_Match(_Key("l4proto", "-p"), "==", ())) if neg else None
        return _Cond(_Match(_Key("l4proto", "-p"), op, (_Pat("eq", _proto_num(a)),)))
    if name in ("-s", "--source", "-d", "--destination"):
        key = _Key("saddr" if name in ("-s", "--source") else "daddr", name)
        return _Cond(_Match(key, op, (_literal(key, a),)))
    if name in ("-i", "--in-interface"):
        pat = _Pat("glob", a[:-1]) if a.endswith("+") else _Pat("eq", a)
        return _Cond(_Match(_Key("iif", "-i"), op, (pat,)))
    if name in ("--dport", "--destination-port", "--dports", "--destination-ports"):
        return _Cond(_Match(_Key("dport", name, need_proto=need), op, _ipt_ports(a)))
    if name in ("--sport", "--source-port", "--sports", "--source-ports"):
        return _Cond(_Match(_Key("sport", name, need_proto=need), op, _ipt_ports(a)))
    if name == "--ports" and not neg:
        return _Cond(_Match(_Key("anyport", name, need_proto=need), "==", _ipt_ports(a)))
    if name in ("--state", "--ctstate"):
        states = frozenset(s.lower() for s in a.split(",") if s)
        return _Cond(_Match(_Key("ctstate", name), "!in" if neg else "in", (_Pat("bits", states),)))
    if name == "--tcp-flags" and len(args) == 2:
        key = _Key("tcpflags", name, need_proto="tcp", mask=_ipt_flags(args[0]))
        return _Cond(_Match(key, op, (_Pat("bits", _ipt_flags(args[1])),)))
    if name == "--syn":
        key = _Key("tcpflags", name, need_proto="tcp", mask=frozenset({"fin", "syn", "rst", "ack"}))
        return _Cond(_Match(key, op, (_Pat("bits", frozenset({"syn"})),)))
    if name == "--dst-type" and module == "addrtype":
        return _Cond(
            _Match(_Key("fibtype", name), op, tuple(_Pat("eq", t.lower()) for t in a.split(",") if t))
        )
    if name == "--comment" and module == "comment":
        return None
    words = ["!" if neg else "", f"-m {module}" if module else "", name, *args]
    raise _Unsupported(" ".join(w for w in words if w))


def _ipt_target(target: str, how: str | None, goto: bool, chains: set[str]) -> _Action | None:
    if target in ("ACCEPT", "DROP", "RETURN"):
        return _Action(target.lower())
    if target == "REJECT":
        return _Action("reject", clean(how or "icmp-port-unreachable", 40))
    if target in chains:
        return _Action("goto" if goto else "jump", target)
    if target in _IPT_HARMLESS_TARGETS:
        return None
    return _Action("unknown", _("target {name} is not evaluated").format(name=clean(target, 40)))


def _ipt_rule(line: str, chains: set[str]) -> tuple[str | None, _Rule]:
    """One `-A CHAIN ...` line: (chain, rule); chain None when the line cannot be read at all."""
    text = _clean_rule(line)
    unreadable = _Rule(text, [], _Action("unknown", _("a rule we could not read")))
    try:
        toks = shlex.split(line)
    except ValueError:
        return None, unreadable
    if toks and re.fullmatch(r"\[\d+:\d+\]", toks[0]):
        toks = toks[1:]
    if len(toks) < 2 or toks[0] not in ("-A", "--append"):
        return None, unreadable
    rule = _Rule(text, [])
    i, neg, module, proto = 2, False, None, None
    while i < min(len(toks), 1024):
        t = toks[i]
        i += 1
        if t == "!":
            neg = True
            continue
        if not t.startswith("-"):
            rule.action = unreadable.action
            return toks[1], rule
        if t in _IPT_NO_ARG:
            args: list[str] = []
        elif t in _IPT_ONE_ARG:
            args, i = toks[i : i + 1], i + 1
        elif t == "--tcp-flags":
            args, i = toks[i : i + 2], i + 2
        elif t in ("-c", "--set-counters"):
            i += 2
            continue
        else:
            start = i
            while i < len(toks) and not toks[i].startswith("-") and toks[i] != "!":
                i += 1
            args = toks[start:i]
        if t in ("-m", "--match"):
            module = args[0] if args else None
            continue
        if t in ("-j", "--jump", "-g", "--goto"):
            rest = toks[i:]
            how = rest[rest.index("--reject-with") + 1] if "--reject-with" in rest[:-1] else None
            rule.action = _ipt_target(args[0] if args else "", how, t in ("-g", "--goto"), chains)
            return toks[1], rule
        if t in ("-p", "--protocol") and args and not neg:
            proto = args[0].lower()
        try:
            if not args and t not in _IPT_NO_ARG:
                raise _Unsupported(
                    " ".join(w for w in ("!" if neg else "", f"-m {module}" if module else "", t) if w)
                )
            cond = _ipt_cond(t, args, neg, module, proto)
        except _Unsupported as x:
            cond = _Cond(None, _("{expr} is not evaluated").format(expr=clean(str(x), 80)))
        neg = False
        if cond is not None:
            rule.conds.append(cond)
    return toks[1], rule


def parse_iptables_save(text: str, ipv6: bool = False, legacy: bool = False) -> tuple[_Ruleset, str | None]:
    """The filter table of `iptables-save` output into chains, and the backend its header names
    (nf_tables or legacy; None when the output holds no table); never raises.

    `legacy`: the text came from iptables-legacy-save (the chains are named after that command).
    """
    source = ("ip6tables" if ipv6 else "iptables") + ("-legacy" if legacy else "")
    family = "ip6" if ipv6 else "ip"
    rs = _Ruleset()
    lines = text.splitlines()[:500_000]
    backend = "nf_tables" if any("(nf_tables)" in ln for ln in lines if ln.startswith("#")) else None
    declared: set[str] = set()
    table = None
    for raw in lines:  # first pass: chain names, so that `-j NAME` tells a jump from a target
        line = raw.strip()
        if line.startswith("*"):
            table = line[1:]
            backend = backend or "legacy"
        elif line.startswith(":") and table == "filter":
            declared.add(line[1:].split(" ", 1)[0])
    table = None
    for raw in lines:
        line = raw.strip()
        if len(line) > 100_000 or line.startswith("#"):
            continue
        if line.startswith("*"):
            table = line[1:]
        elif line == "COMMIT":
            table = None
        elif table == "filter" and line.startswith(":"):
            parts = line[1:].split()
            if not parts:
                continue
            chain = _Chain(source, family, "filter", parts[0])
            if parts[0] == "INPUT":
                chain.base = True
                pol = parts[1].lower() if len(parts) > 1 else "accept"
                chain.policy = pol if pol in ("accept", "drop") else "unknown"
            rs.chains[(source, family, "filter", parts[0])] = chain
        elif table == "filter" and line.startswith(("-A", "[")):
            name, rule = _ipt_rule(line, declared)
            owner = rs.chains.get((source, family, "filter", name or "INPUT"))
            if owner is not None:  # an unreadable line may be on the input path: it counts there
                owner.rules.append(rule)
        elif (
            table is not None
            and table in ("mangle", "raw", "security")
            and line.startswith(("-A INPUT ", "-A PREROUTING "))
        ):
            note = _("{source} table {table} has rules on the input path that were not evaluated").format(
                source=source, table=clean(table, 20)
            )
            if note not in rs.notes:
                rs.notes.append(note)
    return rs, backend


# ---------------------------------------------------------------------------------- commands


def _run(argv: list[str], limit: int = MAX_OUTPUT, timeout: float = TIMEOUT) -> tuple[int | None, str, str]:
    """Run a command with a deadline, keeping at most `limit` bytes of its output: (rc, stdout, stderr).

    rc is None when it could not start, timed out or printed too much; stderr then says which.
    """
    env = {"PATH": os.environ.get("PATH", "") + ":" + _SBIN, "LC_ALL": "C"}
    try:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
    except OSError as e:
        return None, "", e.strerror or str(e)
    assert proc.stdout is not None and proc.stderr is not None
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    bufs = {out_fd: bytearray(), err_fd: bytearray()}
    deadline = time.monotonic() + timeout
    problem = ""
    with selectors.DefaultSelector() as sel:
        for fd in bufs:
            sel.register(fd, selectors.EVENT_READ)
        while sel.get_map() and not problem:
            left = deadline - time.monotonic()
            if left <= 0:
                # Translators: s is the unit symbol; the plural form is there for languages that inflect it.
                problem = ngettext(
                    "no answer within {seconds:g} s", "no answer within {seconds:g} s", math.ceil(timeout)
                ).format(seconds=timeout)
                break
            for k, _ev in sel.select(left):
                chunk = os.read(k.fd, 65536)
                if not chunk:
                    sel.unregister(k.fd)
                    continue
                bufs[k.fd] += chunk
                if len(bufs[k.fd]) > limit:
                    mib = limit // (1024 * 1024)
                    # Translators: MiB is the unit symbol; the plural form is there for languages that inflect it.
                    problem = ngettext(
                        "more than {n} MiB of output", "more than {n} MiB of output", mib
                    ).format(n=mib)
                    break
    if problem:
        proc.kill()
    try:
        rc = proc.wait(timeout=2)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = proc.wait()
    proc.stdout.close()
    proc.stderr.close()
    out = bytes(bufs[out_fd]).decode("utf-8", "replace")
    err = bytes(bufs[err_fd]).decode("utf-8", "replace")
    return (None, out, problem) if problem else (rc, out, err)


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    return clean(lines[0] if lines else text.strip(), 200)


def read_sources(search_path: str | None = None) -> Sources:
    """Run nft and iptables-save (and iptables-legacy-save when it is said to matter); never raises.

    `search_path` replaces where the commands are looked for ($PATH plus the sbin directories).
    """
    path = search_path if search_path is not None else os.environ.get("PATH", "") + ":" + _SBIN
    src = Sources()
    nft = shutil.which("nft", path=path)
    if nft:
        rc, out, err = _run([nft, "-j", "list", "ruleset"])
        if rc == 0:
            src.nft_json = out
            rc2, text, _err2 = _run([nft, "-a", "list", "ruleset"])
            src.nft_text = text if rc2 == 0 else None
        else:
            src.errors.append(f"nft: {_first_line(err or out)}")
    saves = (("iptables", "iptables-save"), ("ip6tables", "ip6tables-save"))
    for attr, name in saves:
        exe = shutil.which(name, path=path)
        if not exe:
            continue
        rc, out, err = _run([exe])
        if rc != 0:
            src.errors.append(f"{name}: {_first_line(err or out)}")
            continue
        setattr(src, attr, out)
        legacy = shutil.which(name.replace("-save", "-legacy-save"), path=path)
        if "legacy tables present" in err + out and legacy:
            rc2, out2, _err2 = _run([legacy])
            setattr(src, attr + "_legacy", out2 if rc2 == 0 else None)
    if not nft and not any(shutil.which(name, path=path) for _attr, name in saves):
        src.errors.append(_("neither nft nor iptables-save is installed"))
    return src


def _combine(src: Sources) -> tuple[_Ruleset | None, list[str]]:
    """One ruleset of every input chain the kernel runs, whichever tool wrote it (None: none read)."""
    errors = list(src.errors)
    rs: _Ruleset | None = None
    if src.nft_json is not None:
        try:
            rs = parse_nft_json(
                json.loads(src.nft_json), parse_nft_text(src.nft_text) if src.nft_text else None
            )
        except (ValueError, RecursionError):
            errors.append(_("nft printed JSON we could not read"))
    texts = [(src.iptables, False, False), (src.ip6tables, True, False)]
    texts += [(src.iptables_legacy, False, True), (src.ip6tables_legacy, True, True)]
    for text, v6, legacy in texts:
        if text is None:
            continue
        ipt, backend = parse_iptables_save(text, ipv6=v6, legacy=legacy)
        if not any(c.base for c in ipt.chains.values()):
            continue
        family = "ip6" if v6 else "ip"
        if backend == "nf_tables" and rs is not None:
            # the very tables nft listed: iptables-save only reads better what nft JSON shows as "xt"
            if not _nft_has_xt(rs, family, "filter"):
                continue
            for key in [k for k in rs.chains if k[:3] == ("nftables", family, "filter")]:
                del rs.chains[key]
        rs = rs if rs is not None else _Ruleset()
        rs.chains.update(ipt.chains)
        rs.notes += ipt.notes
    return rs, errors


# ------------------------------------------------------------------------------------ the answer


def _addr(text: str | None, what: str) -> Addr | None:
    if text is None:
        return None
    t = text.strip().strip("[]").split("%", 1)[0]
    try:
        a = ipaddress.ip_address(t)
    except ValueError:
        raise ValueError(f"{what} must be an IP address, not {text!r}") from None
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None:
        return a.ipv4_mapped
    return a


def _packets(proto: str, port: int, dst: str | None, src: str | None) -> list[_Packet]:
    if proto not in ("tcp", "udp"):
        raise ValueError(f"proto must be tcp or udp, not {proto!r}")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ValueError(f"port must be 0-65535, not {port!r}")
    d, s = _addr(dst, "dst"), _addr(src, "src")
    if d is not None and s is not None and d.version != s.version:
        raise ValueError("dst and src must be of the same address family")
    lo = bool((d is not None and d.is_loopback) or (s is not None and s.is_loopback))
    known = d or s
    families = [f"ipv{known.version}"] if known is not None else ["ipv4", "ipv6"]
    return [_Packet(f, proto, port, d, s, lo) for f in families]


def _family_of(chain: _Chain) -> str | None:
    return {"ip": "ipv4", "ip6": "ipv6", "inet": "ipv4/ipv6"}.get(chain.family)


def _place(answer: FirewallAnswer, leaf: _Leaf) -> None:
    if leaf.base is not None:
        answer.policy = leaf.base.policy
        answer.backend = leaf.base.source
        answer.family = _family_of(leaf.base)
        answer.input_chain = leaf.base.name


def evaluate(
    sources: Sources, proto: str, port: int, dst: str | None = None, src: str | None = None
) -> FirewallAnswer:
    """The answer for ruleset output already read (`read_sources`, or saved earlier).

    Raises only ValueError, on a bad proto, port or address.
    """
    packets = _packets(proto, port, dst, src)
    rs, errors = _combine(sources)
    if rs is None:
        why = "; ".join(errors) or _("no ruleset could be read")
        denied = [e for e in errors if "ermission" in e or "not permitted" in e]
        if os.geteuid() != 0 and denied:
            why = _("reading the firewall needs root ({detail})").format(detail=denied[0])
        return _sanitized(FirewallAnswer(proto, port, readable=False, why=why))
    leaves = [(pkt, leaf) for pkt in packets for leaf in _evaluate(rs, pkt)]
    answer = FirewallAnswer(proto, port, readable=True, notes=list(dict.fromkeys(rs.notes)))
    answer.backend = "nftables" if sources.nft_json is not None else "iptables"
    verdicts = list(dict.fromkeys(leaf.verdict for _pkt, leaf in leaves))
    first = leaves[0][1]
    if len(verdicts) == 1 and verdicts[0] != "unknown":
        answer.verdict = verdicts[0]
        _place(answer, first)
        if first.chain is None:
            answer.why = _("no input chain filters this packet")
        else:
            answer.table, answer.chain = first.chain.table_label, first.chain.name
        answer.rule = first.rule.text if first.rule is not None else None
        answer.by_policy = first.rule is None and first.chain is not None
        if first.verdict == "reject":
            answer.reject_with = first.why or None
        return _sanitized(answer)
    answer.verdict = "unknown"
    answer.possible = [v for v in verdicts if v != "unknown"]
    deps: list[Dependency] = []
    if len(packets) > 1:
        v4 = {leaf.verdict for pkt, leaf in leaves if pkt.family == "ipv4"}
        v6 = {leaf.verdict for pkt, leaf in leaves if pkt.family == "ipv6"}
        if v4 != v6:
            deps.append(Dependency(None, None, None, _("IPv4 and IPv6 differ, and no address was given")))
    unknown_leaf = next((leaf for _pkt, leaf in leaves if leaf.verdict == "unknown"), None)
    for _pkt, leaf in leaves:
        found = [*leaf.deps]
        if leaf.verdict == "unknown":
            found.append(_Dep(leaf.rule, leaf.chain, leaf.why))
        for d in found:
            rule, chain = d.rule.text if d.rule else None, d.chain
            dep = Dependency(
                rule, chain.table_label if chain else None, chain.name if chain else None, d.reason
            )
            if dep not in deps:
                deps.append(dep)
    answer.depends_on = deps[:MAX_DEPS]
    decisive = next((d for d in deps if d.rule is not None), deps[0] if deps else None)
    if decisive is not None:
        answer.rule, answer.table, answer.chain = decisive.rule, decisive.table, decisive.chain
        answer.why = decisive.reason
    elif unknown_leaf is not None:
        answer.why = unknown_leaf.why
    _place(answer, unknown_leaf or first)
    return _sanitized(answer)


def _sanitized(a: FirewallAnswer) -> FirewallAnswer:
    """Table, chain and set names, rule text: all written by whoever wrote the ruleset. Escaped here,
    once, so that no field can carry a control sequence to a terminal or a log."""

    def c(x: str | None, limit: int = RULE_CHARS) -> str | None:
        return None if x is None else clean(x, limit)

    a.rule, a.why, a.reject_with = c(a.rule), c(a.why, 2 * RULE_CHARS), c(a.reject_with, 60)
    a.table, a.chain, a.input_chain, a.policy = (
        c(a.table, 80),
        c(a.chain, 80),
        c(a.input_chain, 80),
        c(a.policy, 20),
    )
    a.depends_on = [
        Dependency(c(d.rule), c(d.table, 80), c(d.chain, 80), clean(d.reason, 2 * RULE_CHARS))
        for d in a.depends_on
    ]
    a.notes = [clean(n, 2 * RULE_CHARS) for n in a.notes[:MAX_DEPS]]
    return a


def verdict_for(proto: str, port: int, dst: str | None = None, src: str | None = None) -> FirewallAnswer:
    """Would this host's firewall let a new connection to its proto/port in?

    Runs nft / iptables-save (bounded: a few seconds, 32 MiB); raises only ValueError on bad arguments.
    """
    _packets(proto, port, dst, src)  # bad input is the caller's error, found before any command runs
    return evaluate(read_sources(), proto, port, dst, src)


# ---------------------------------------------------------------------------------- sentences


# A verdict the ruleset reached, as one whole sentence each (a verb spliced into a sentence does not
# translate): decided by a rule, or by the input chain's policy when no rule matched.
_DECIDED_BY_RULE = {
    "accept": N_("the local {backend} ruleset accepts {what} ({where}: {rule})"),
    "drop": N_("the local {backend} ruleset drops {what} ({where}: {rule})"),
    "reject": N_("the local {backend} ruleset rejects {what} ({where}: {rule})"),
}
_DECIDED_BY_POLICY = {
    "accept": N_(
        "the local {backend} ruleset accepts {what}: no rule decides, and the policy of {where} is {policy}"
    ),
    "drop": N_(
        "the local {backend} ruleset drops {what}: no rule decides, and the policy of {where} is {policy}"
    ),
    "reject": N_(
        "the local {backend} ruleset rejects {what}: no rule decides, and the policy of {where} is {policy}"
    ),
}


def _verbs(verdicts: list[str]) -> str:
    """What the ruleset may do, as verbs after "may": "drop", "accept or drop"."""
    # Translators: what a firewall may do with a new connection, after "may" ("may accept or drop tcp/22").
    words = {"accept": _("accept"), "drop": _("drop"), "reject": _("reject")}
    found = [words.get(v, v) for v in verdicts]
    if len(found) < 2:
        return "".join(found)
    # Translators: the end of a list of verbs, as in "accept, drop or reject".
    return _("{items} or {last}").format(items=", ".join(found[:-1]), last=found[-1])


def evidence(answer: FirewallAnswer) -> Evidence:
    """The firewall line of diagnose's checklist; `data` holds the answer and `next_step`."""
    what = f"{answer.proto}/{answer.port}"
    where = _("table {table}, chain {chain}").format(table=answer.table, chain=answer.chain)
    backend = answer.backend
    passed: bool | None = None
    if not answer.readable:
        text = _("could not read the local firewall: {why}").format(why=answer.why)
    elif answer.verdict not in _DECIDED_BY_RULE:  # unknown: what it may do, and what that hinges on
        verbs = _verbs(answer.possible) or _verbs(["drop"])
        if answer.rule:
            text = _("the local {backend} ruleset may {verbs} {what}: {why} ({where}: {rule})").format(
                backend=backend, verbs=verbs, what=what, why=answer.why, where=where, rule=answer.rule
            )
        else:
            text = _("the local {backend} ruleset may {verbs} {what}: {why}").format(
                backend=backend, verbs=verbs, what=what, why=answer.why
            )
    elif answer.chain is None:
        text = _(
            "no local firewall rule filters incoming {what} (no input chain in the {backend} ruleset)"
        ).format(what=what, backend=backend)
        passed = True
    elif answer.by_policy:
        text = _(_DECIDED_BY_POLICY[answer.verdict]).format(
            backend=backend, what=what, where=where, policy=answer.policy
        )
        passed = answer.verdict == "accept"
    else:
        text = _(_DECIDED_BY_RULE[answer.verdict]).format(
            backend=backend, what=what, where=where, rule=answer.rule
        )
        passed = answer.verdict == "accept"
    data = answer.to_dict()
    data["next_step"] = next_step(answer)
    return Evidence(check="firewall", observation=text, passed=passed, data=data)


def next_step(answer: FirewallAnswer) -> str | None:
    """What to run so the port is let in, or how to look closer; None when there is nothing to do."""
    if not answer.readable:
        if os.geteuid() == 0:
            return None
        return _("run portscope as root to let it read the local firewall")
    backend = answer.backend or "nftables"
    if answer.verdict == "unknown":
        command = "nft -a list ruleset" if backend == "nftables" else f"{backend}-save"
        return _("check the rules quoted above by hand: {command}").format(command=command)
    if answer.verdict == "accept":
        return None
    if backend == "nftables":
        table = answer.table or "inet filter"
        chain = answer.input_chain or answer.chain or "input"
        verb = "add" if answer.by_policy else "insert"
        command = f"nft {verb} rule {table} {chain} {answer.proto} dport {answer.port} accept"
    else:
        command = f"{backend} -I INPUT -p {answer.proto} --dport {answer.port} -j ACCEPT"
    if answer.by_policy:
        return _("allow it: {command}").format(command=command)
    return _("allow it: {command} (or fix the rule quoted above)").format(command=command)
