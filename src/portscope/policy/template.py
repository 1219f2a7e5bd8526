"""The baseline `portscope baseline init` writes: this host's listeners now, as a file to review.

It reads like a hand-written one on purpose: every section says what it is for, the sections the host
cannot tell us about (targets, sinks, allowed ports) are commented-out examples, and only what stays
true across restarts and redeployments is pinned: never a PID, a systemd unit only when it is a
service (a login's session-4.scope changes every time), a container by its runtime (`docker:*`),
because its id changes each time it is recreated.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from portscope.model import Listener
from portscope.policy.baseline import VERSION, endpoint
from portscope.policy.listeners import Scope
from portscope.policy.tomlfile import toml_string
from portscope.registry import EphemeralRange, service_name
from portscope.textsafe import clean

_GLOB_CHAR = re.compile(r"[*?\[]")

_HEADER = """\
# portscope baseline for {host}, written by `portscope baseline init` on {when}.
#
# Review it before trusting it: delete what should not be listening here, loosen what may change (a
# field left out matches anything), then run `portscope baseline check` (exit 0: as expected,
# 1: a difference, 2: this file is invalid), from cron or by hand, or `portscope watch`.
# The format is described in the README, section "The baseline file".
{notes}
version = {version}

# Which listeners this file is about. Never reported: client sockets, UDP sockets bound in the
# ephemeral range {low}-{high} (resolvers and other clients) and loopback listeners on ephemeral ports
# (random ports local programs open), unless a [[listener]] below names the port.
[scope]
ports = {ports}  # a port spec: 22, "80,443", "8000-8100", "53/udp", "ssh"; "-" is every port
loopback = {loopback}  # false: only listeners other hosts can reach
loopback_ephemeral = false  # true: also loopback listeners on ephemeral ports
udp_ephemeral = false  # true: also UDP sockets bound in the ephemeral range

# portscope watch: how often it looks (seconds), and how long a change must last before it alerts,
# so a daemon's restart between two looks is not an alert.
[watch]
interval = 30
persist = 60

# Expected listeners: each must be listening, and any other listener is reported. Fields: proto,
# port, address (as bound: 0.0.0.0 and :: are every address) or exposure ("loopback", "all",
# "address"), process (the name ps shows), user, unit (systemd), container; process, user, unit and
# container take shell patterns ("docker:*"). A listener is never keyed on its PID: a restart
# changes the PID, not the listener.
"""

_FOOTER = """
# Ports allowed to come and go: a listener there that no [[listener]] expects is not reported.
# [[allow]]
# ports = "8000-8100"  # a port spec
# proto = "tcp"  # optional, as are address or exposure, process, user, unit and container
# process = "python3"
# note = "developers' test servers"

# Remote services portscope watch checks from this host.
# [[target]]
# host = "db.example.net"
# port = 5432
# proto = "tcp"
# expect_status = "open"  # open, closed, filtered, unreachable, unresolved
# expect_service = "postgresql"  # what `portscope probe` should identify there
# cert_warn_days = 14  # TLS: warn this many days before the certificate expires (0: never)

# Where portscope watch sends its alerts: as many sinks as needed; in each, optionally name = "...",
# events = [...] (which kinds), max_per_hour = N and timeout = seconds.
# [[sink]]
# type = "email"
# host = "mail.example.net"
# port = 587
# starttls = true  # or tls = true for implicit TLS (465)
# user = "portscope"
# password_env = "PORTSCOPE_SMTP_PASSWORD"  # the variable holding the password, never the password
# from = "portscope@example.net"
# to = ["ops@example.net"]
#
# [[sink]]
# type = "webhook"
# url_env = "PORTSCOPE_WEBHOOK_URL"  # or url = "https://hooks.example.net/portscope"
# format = "slack"  # "json" (the event object), "slack", or "apprise" (url = "tgram://...")
#
# [[sink]]
# type = "syslog"
# facility = "daemon"
#
# [[sink]]
# type = "exec"
# command = ["/usr/local/bin/page-oncall", "--team", "infra"]  # the event JSON on its stdin
"""


def render(
    listeners: Sequence[Listener],
    *,
    scope: Scope,
    ephemeral: EphemeralRange,
    host: str,
    when: str,
    notes: Sequence[str] = (),
) -> str:
    """The file's text. NOTES (what could not be seen) become comments at the top."""
    parts = [
        _HEADER.format(
            host=clean(host, 200),
            when=when,
            notes="".join(f"# NOTE: {clean(n, 1000)}\n" for n in notes),
            version=VERSION,
            low=ephemeral.low,
            high=ephemeral.high,
            ports=toml_string(scope.ports.text if scope.ports else "-"),
            loopback="true" if scope.loopback else "false",
        )
    ]
    if not listeners:
        parts.append("# (nothing was listening in this scope)\n")
    for item in listeners:
        parts.append("\n" + entry(item))
    parts.append(_FOOTER)
    return "".join(parts)


def literal(name: str) -> str:
    """NAME as a shell pattern matching only itself: a process may well be called "worker[1]"."""
    return _GLOB_CHAR.sub(lambda m: f"[{m.group(0)}]", name)


def entry(item: Listener) -> str:
    """One [[listener]] table, with a comment saying what it is (names are escaped: a process name
    holding a newline must not end the comment and write TOML of its own)."""
    service = service_name(item.port, item.proto)
    about = f"{item.proto} {endpoint(item.address, item.port)}" + (f" ({service})" if service else "")
    if item.pids:
        about += f", now pid {', '.join(str(p) for p in item.pids[:8])}" + (
            ", ..." if len(item.pids) > 8 else ""
        )
    if item.process is None:
        about += ", owner not found (another user's process seen without root, or another PID namespace)"
    lines = [
        f"# {clean(about, 300)}",
        "[[listener]]",
        f"proto = {toml_string(item.proto)}",
        f"port = {item.port}",
        f"address = {toml_string(item.address)}",
    ]
    if item.process is not None:
        lines.append(f"process = {toml_string(literal(item.process))}")
    if item.user is not None:
        lines.append(f"user = {toml_string(literal(item.user))}")
    if item.unit is not None and item.unit.endswith(".service"):
        lines.append(f"unit = {toml_string(literal(item.unit))}")
    if item.container is not None:
        runtime = item.container.partition(":")[0]
        lines.append(f"container = {toml_string(runtime + ':*')}  # {clean(item.container, 100)} now")
    return "\n".join(lines) + "\n"
