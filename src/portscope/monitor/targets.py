"""The remote side of a watch cycle: each `[[target]]` checked from here, and what differs from what the
baseline expects of it.

A target is checked by the same code as `portscope check` (so a port reads the same everywhere) and,
when it answers, identified by the same probes as `portscope probe`: its service (when the file
expects one) and its TLS certificate's days left. What differs becomes a `Difference` of kind
`target` (status or service not as expected) or `certificate` (expires within `cert_warn_days`), and
goes through the tracker like a listener's, so a target that blips for one cycle pages nobody.

Why the certificate is remembered across cycles: a target that stops answering tells nothing about its
certificate, and forgetting it would make the tracker read the absence as "renewed" and send an
all-clear for a certificate that is still expiring. The days are counted from the remembered not-after
date, so they keep going down while the target is away.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from portscope.errors import BadInput
from portscope.model import CheckResult, ProbeResult
from portscope.policy.baseline import Difference, Target, endpoint

CONNECT_TIMEOUT = 3.0  # seconds a target's connect may take before another try
RETRIES = 1  # tries after the first before a silent target is `filtered`
PROBE_TIMEOUT = 10.0  # the most one target's identification may take


@dataclass(slots=True)
class TargetState:
    """One target as this cycle saw it: what `metrics` exports and a `target` difference carries."""

    target: Target
    status: str  # one of model.STATUSES
    reason: str
    address: str | None
    latency_ms: float | None = None
    service: str | None = None  # what the probe identified; None when not probed or not open
    days_left: int | None = None  # of its TLS certificate; None when it spoke no TLS (this cycle or before)
    not_after: str | None = None
    summary: str = ""

    @property
    def label(self) -> str:
        """The target as people name it: its `name`, else HOST:PORT/PROTO."""
        t = self.target
        return t.name or f"{endpoint(t.host, t.port)}/{t.proto}"

    @property
    def as_expected(self) -> bool:
        t = self.target
        if self.status != t.expect_status:
            return False
        return t.expect_service is None or self.service == t.expect_service

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.label,
            "host": self.target.host,
            "port": self.target.port,
            "proto": self.target.proto,
            "address": self.address,
            "status": self.status,
            "reason": self.reason,
            "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 3),
            "service": self.service,
            "days_left": self.days_left,
            "not_after": self.not_after,
            "expected_status": self.target.expect_status,
            "expected_service": self.target.expect_service,
            "as_expected": self.as_expected,
        }


class TargetChecker:
    """Checks the baseline's targets each cycle, remembering each one's last certificate."""

    def __init__(self, targets: Sequence[Target], probe_timeout: float = PROBE_TIMEOUT) -> None:
        self.targets = list(targets)
        self.probe_timeout = probe_timeout
        self._certs: dict[Target, dt.datetime] = {}  # target -> its certificate's not-after

    def check(self, now: dt.datetime | None = None) -> list[TargetState]:
        if not self.targets:
            return []
        from portscope.net import targets as net_targets
        from portscope.net.engine import ScanOptions
        from portscope.net.scan import run_scan
        from portscope.probes.base import Settings
        from portscope.probes.runner import probe_all

        now = now or dt.datetime.now(dt.UTC)
        opts = ScanOptions(timeout=CONNECT_TIMEOUT, retries=RETRIES, concurrency=64)
        checks: list[tuple[Target, CheckResult]] = []
        for t in self.targets:
            try:
                found = net_targets.expand([t.host])
            except BadInput as e:  # the file's checks let it through, the resolver did not
                checks.append(
                    (t, CheckResult(t.host, None, t.port, t.proto, "unresolved", "dns-failure", error=str(e)))
                )
                continue
            # A name with several addresses: each is checked; the target is the first that is not as
            # expected (a load-balanced service is down when any of its addresses is).
            checks += [(t, r) for r in run_scan(found, [t.port], t.proto, opts)]
        # Probe what answers: its service when the file expects one, its certificate when it has one.
        wanted = [
            (t, c)
            for t, c in checks
            if c.status in ("open", "open|filtered") and (t.expect_service or t.cert_warn_days)
        ]
        probed: dict[int, ProbeResult] = {}
        if wanted:
            by_sni: dict[str, list[int]] = {}
            for i, (t, _c) in enumerate(wanted):
                by_sni.setdefault(t.host, []).append(i)
            for sni, idx in by_sni.items():
                settings = Settings(sni=sni, timeout=self.probe_timeout)
                results = probe_all([wanted[i][1] for i in idx], settings)
                for i, r in zip(idx, results, strict=True):
                    probed[id(wanted[i][1])] = r
        states: dict[Target, TargetState] = {}
        for t, c in checks:
            state = self._state(t, c, probed.get(id(c)), now)
            old = states.get(t)
            if old is None or (old.as_expected and not state.as_expected):
                states[t] = state
        return [states[t] for t in self.targets if t in states]

    def _state(self, t: Target, c: CheckResult, p: ProbeResult | None, now: dt.datetime) -> TargetState:
        service = p.service if p is not None else None
        if p is not None and p.tls is not None and p.tls.not_after:
            self._certs[t] = dt.datetime.fromisoformat(p.tls.not_after)
        state = TargetState(t, c.status, c.reason, c.address, c.latency_ms, service)
        if (end := self._certs.get(t)) is not None:
            state.not_after = end.isoformat()
            state.days_left = (end - now).days if end >= now else -((now - end).days + 1)
        state.summary = _summary(state)
        return state


def _summary(s: TargetState) -> str:
    t = s.target
    where = s.label + (f" ({s.address})" if s.address and s.address != t.host else "")
    if s.status != t.expect_status:
        return f"target {where} is {s.status} ({s.reason}), expected {t.expect_status}"
    if t.expect_service is not None and s.service != t.expect_service:
        return f"target {where} answers {s.service or 'an unknown protocol'}, expected {t.expect_service}"
    return f"target {where} is {s.status}" + (f" ({s.service})" if s.service else "")


def differences(states: Sequence[TargetState]) -> list[Difference]:
    """What differs from the baseline's targets: one `target` difference per target not as expected,
    one `certificate` difference per certificate within its warning period (or expired)."""
    out: list[Difference] = []
    for s in states:
        t = s.target
        if not s.as_expected:
            out.append(
                Difference("target", s.summary, t.proto, t.host, t.port, target=t, observed=s.to_dict())
            )
        if t.cert_warn_days and s.days_left is not None and s.days_left < t.cert_warn_days:
            words = (
                f"expired {-s.days_left} day(s) ago"
                if s.days_left < 0
                else f"expires in {s.days_left} day(s)"
            )
            out.append(
                Difference(
                    "certificate",
                    f"the TLS certificate of {s.label} {words} (on {(s.not_after or '')[:10]}; "
                    f"warning at {t.cert_warn_days} days)",
                    t.proto,
                    t.host,
                    t.port,
                    target=t,
                    observed=s.to_dict(),
                )
            )
    return out
