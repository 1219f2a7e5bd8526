"""The baseline file (`portscope.toml`): what should listen on this host, what may come and go, which
remote services to watch, and where alerts go; and the comparison of it with what listens now.

This is seed 003's "compare the open ports with a predefined list and send an email" made into a file
people review and keep under version control. So it is strict: an unknown key (a typo) or a value of the
wrong type is an error naming the file, the line and the valid form, never a silently ignored line that
leaves a port unwatched. Listeners are keyed on protocol, address, port and process identity, never
the PID, so a restarted daemon is the same listener.
"""

from __future__ import annotations

import difflib
import functools
import ipaddress
import os
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, TypeVar

from portscope.errors import BadInput
from portscope.inventory.snapshot import exposure_of
from portscope.model import EVENT_KINDS, STATUSES, Listener
from portscope.policy import tomlfile
from portscope.policy.listeners import Scope, current_listeners, take_snapshot
from portscope.policy.tomlfile import Path
from portscope.registry import PortSpec, parse_ports
from portscope.registry.portspec import PROTOS
from portscope.textsafe import clean

__all__ = [
    "DEFAULT_FILES",
    "AllowRule",
    "Baseline",
    "Difference",
    "EmailSink",
    "ExecSink",
    "ExpectedListener",
    "Scope",
    "Sink",
    "SyslogSink",
    "Target",
    "WatchSettings",
    "WebhookSink",
    "compare",
    "current_listeners",
    "find_file",
    "load",
    "loads",
    "take_snapshot",
]

DEFAULT_FILES = ("portscope.toml", "/etc/portscope/portscope.toml")  # the first that exists
VERSION = 1
EXPOSURES = ("loopback", "all", "address")
SINK_TYPES = ("email", "webhook", "syslog", "exec")
WEBHOOK_FORMATS = ("json", "slack", "apprise")
SYSLOG_FORMATS = ("auto", "syslog", "journal")
SYSLOG_FACILITIES = (
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    *(f"local{n}" for n in range(8)),
)
COMM_LEN = 15  # the kernel keeps 15 bytes of a process name (TASK_COMM_LEN - 1)
MAX_TEXT = 256
# missing/unexpected/changed: this host's listeners (compare); target/certificate: the remote targets
# watch checks (monitor/targets.py).
DIFFERENCE_KINDS = ("missing", "unexpected", "changed", "target", "certificate")
EVENT_OF_KIND = {
    "missing": "listener_removed",
    "unexpected": "listener_added",
    "changed": "listener_changed",
    "target": "target_status_changed",
    "certificate": "certificate_expiring",
}

T = TypeVar("T")

_GLOB = re.compile(r"[*?\[]")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HOSTNAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,251}[A-Za-z0-9_.])?")
_SERVICE = re.compile(r"[a-z0-9][a-z0-9._+-]{0,63}")
_TAG = re.compile(r"[A-Za-z0-9._-]{1,32}")
_SINK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
# no whitespace or control character: an address ends up in a mail header
_MAILBOX = re.compile(r"[^@\s\x00-\x1f\x7f-\x9f<>()\[\],;:\"\\]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")

# ---------------------------------------------------------------------------------------------------
# The file's content, typed


@dataclass(frozen=True, slots=True)
class Pattern:
    """Which listeners a table describes. A field left out (None) matches anything; process, user,
    unit and container take shell patterns (`docker:*`)."""

    proto: str | None = None
    address: str | None = None
    exposure: str | None = None
    process: str | None = None
    user: str | None = None
    unit: str | None = None
    container: str | None = None

    def where_matches(self, item: Listener) -> bool:
        """Protocol and address (or exposure): the slot, without the port."""
        if self.proto is not None and item.proto != self.proto:
            return False
        if self.address is not None and not _same_address(self.address, item.address):
            return False
        return self.exposure is None or exposure_of(item.address) == self.exposure

    def mismatches(self, item: Listener) -> list[str]:
        """The identity fields (process, user, unit, container) ITEM does not match. An owner we could
        not see (another user's process, without root) is not a mismatch: only its user is known."""
        out = []
        if self.user is not None and item.user is not None and not _text_matches(self.user, item.user):
            out.append("user")
        if item.process is None:
            return out
        if self.process is not None and not _text_matches(self.process, item.process, COMM_LEN):
            out.append("process")
        for name in ("unit", "container"):
            want = getattr(self, name)
            if want is not None and not _text_matches(want, getattr(item, name)):
                out.append(name)
        return out

    def fields(self) -> dict[str, Any]:
        return {
            "proto": self.proto,
            "address": self.address,
            "exposure": self.exposure,
            "process": self.process,
            "user": self.user,
            "unit": self.unit,
            "container": self.container,
        }


@dataclass(frozen=True, slots=True)
class ExpectedListener(Pattern):
    """A `[[listener]]`: something that must be listening."""

    port: int | None = None
    note: str | None = None
    line: int = 0  # where the file declares it, for messages

    def matches(self, item: Listener) -> bool:
        return self.holds_slot(item) and not self.mismatches(item)

    def holds_slot(self, item: Listener) -> bool:
        return (self.port is None or item.port == self.port) and self.where_matches(item)

    def to_dict(self) -> dict[str, Any]:
        return {"port": self.port, **self.fields(), "note": self.note, "line": self.line}


@dataclass(frozen=True, slots=True)
class AllowRule(Pattern):
    """An `[[allow]]`: listeners that may come and go without being reported."""

    ports: PortSpec = field(default_factory=lambda: parse_ports("-"))
    note: str | None = None
    line: int = 0

    def covers(self, item: Listener) -> bool:
        return (
            self.ports.contains(item.port, item.proto)
            and self.where_matches(item)
            and not self.mismatches(item)
        )


@dataclass(frozen=True, slots=True)
class Target:
    """A `[[target]]`: a remote service `portscope watch` checks from here."""

    host: str
    port: int
    proto: str = "tcp"
    expect_status: str = "open"
    expect_service: str | None = None
    cert_warn_days: int = 14  # 0: no certificate warning
    name: str | None = None
    note: str | None = None
    line: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "host": self.host,
            "port": self.port,
            "proto": self.proto,
            "expect_status": self.expect_status,
            "expect_service": self.expect_service,
            "cert_warn_days": self.cert_warn_days,
            "line": self.line,
        }


@dataclass(frozen=True, slots=True)
class WatchSettings:
    """`[watch]`: how often to look, and how long a change must last before it alerts (seconds), so a
    daemon's restart between two looks is not an alert."""

    interval: float = 30.0
    persist: float = 60.0


@dataclass(frozen=True, slots=True, kw_only=True)
class SinkBase:
    """What every `[[sink]]` has. The keys are those monitor/sinks.py takes (build_sinks(), fed with
    `table`, the table as written): a file this module accepts, watch accepts too."""

    name: str | None = None  # stable label: the alert outbox files messages under it
    events: tuple[str, ...] = EVENT_KINDS  # which event kinds this sink receives
    max_per_hour: int | None = None  # None: monitor's default rate limit
    timeout: float | None = None  # seconds one send may take; None: the sink type's default
    table: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    line: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class EmailSink(SinkBase):
    """SMTP. The password is never in the file: `password_env` names the environment variable."""

    host: str
    port: int
    starttls: bool = False
    tls: bool = False  # implicit TLS (port 465)
    user: str | None = None
    password_env: str | None = None
    sender: str  # `from` (or `sender`) in the file
    to: tuple[str, ...]
    ca_file: str | None = None  # CA certificates for the server's, instead of the system's

    type = "email"


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookSink(SinkBase):
    """An HTTP POST per alert: `json` (the event object), `slack` ({"text": ...}) or `apprise` (an
    apprise URL: slack://, msteams://, tgram://, ...)."""

    url: str | None = None
    url_env: str | None = None  # the URL from the environment (it holds a token, as Slack's do)
    format: str = "json"

    type = "webhook"


@dataclass(frozen=True, slots=True, kw_only=True)
class SyslogSink(SinkBase):
    facility: str = "daemon"
    tag: str = "portscope"
    address: str | None = None  # None: the local syslog (/dev/log); a socket path, or HOST:PORT (UDP)
    format: str = "auto"  # auto, syslog or journal

    type = "syslog"


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecSink(SinkBase):
    """A program run per alert (argv, no shell), the alert's JSON on its stdin."""

    command: tuple[str, ...]

    type = "exec"


Sink = EmailSink | WebhookSink | SyslogSink | ExecSink


@dataclass(frozen=True, slots=True)
class Baseline:
    path: str
    version: int = VERSION
    scope: Scope = field(default_factory=Scope)
    watch: WatchSettings = field(default_factory=WatchSettings)
    listeners: tuple[ExpectedListener, ...] = ()
    allow: tuple[AllowRule, ...] = ()
    targets: tuple[Target, ...] = ()
    sinks: tuple[Sink, ...] = ()

    def keep_ports(self) -> set[tuple[str, int]]:
        """(proto, port) of every expected listener: reported even where current_listeners() would
        leave the port out (a server on an ephemeral port that the user declared)."""
        return {
            (proto, e.port)
            for e in self.listeners
            if e.port is not None
            for proto in ((e.proto,) if e.proto else PROTOS)
        }


# ---------------------------------------------------------------------------------------------------
# Reading and validating


class _Problem(Exception):
    """A value the file holds that we cannot use; becomes BadInput "FILE:LINE: message"."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


def find_file(explicit: str | None = None) -> str:
    """The baseline to use: --file, else the first of DEFAULT_FILES that exists."""
    if explicit:
        return explicit
    for candidate in DEFAULT_FILES:
        if os.path.exists(candidate):
            return candidate
    raise BadInput(
        "no baseline file: neither ./portscope.toml nor /etc/portscope/portscope.toml exists "
        "(write one with `portscope baseline init`, or give --file FILE)"
    )


def load(path: str) -> Baseline:
    doc, locator = tomlfile.read(path)
    return _validate(doc, locator, path)


def loads(data: str | bytes, path: str = "portscope.toml") -> Baseline:
    """The file's text already read (tests, --file -); PATH only names it in messages."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    doc, locator = tomlfile.parse(raw, path)
    return _validate(doc, locator, path)


def _validate(doc: dict[str, Any], locator: tomlfile.Locator, path: str) -> Baseline:
    try:
        return _baseline(doc, locator, path)
    except _Problem as exc:
        raise BadInput(f"{clean(path, 200)}:{locator.line(exc.path)}: {exc.message}") from None


def _baseline(doc: dict[str, Any], locator: tomlfile.Locator, path: str) -> Baseline:
    parts: dict[str, Any] = {}
    for key, value in doc.items():
        here: Path = (key,)
        if key == "version":
            if type(value) is not int or value != VERSION:
                raise _Problem(here, f"version must be {VERSION}, not {_show(value)} (version = {VERSION})")
        elif key == "scope":
            parts["scope"] = _scope(_Table(value, here, "[scope]", _SCOPE_KEYS))
        elif key == "watch":
            parts["watch"] = _watch(_Table(value, here, "[watch]", _WATCH_KEYS))
        elif key in _ARRAYS:
            reader = _ARRAYS[key]
            parts[_FIELD[key]] = tuple(
                reader(_Table(item, (*here, i), f"[[{key}]]", _KEYS_OF[key]), locator.line((*here, i)))
                for i, item in enumerate(_array_of_tables(value, key))
            )
        else:
            raise _Problem(here, _unknown(key, "the file", _TOP_KEYS))
    baseline = Baseline(path=path, **parts)
    _in_scope(baseline)
    return baseline


def _in_scope(baseline: Baseline) -> None:
    """A [[listener]] that [scope] leaves out could never be found: always "missing", a false alarm
    on every check. Said now, at the line that declares it."""
    scope = baseline.scope
    for i, e in enumerate(baseline.listeners):
        protos = (e.proto,) if e.proto else PROTOS
        if (
            e.port is not None
            and scope.ports is not None
            and not any(scope.ports.contains(e.port, p) for p in protos)
        ):
            raise _Problem(
                ("listener", i, "port"),
                f"port {e.port} of this [[listener]] is outside [scope] ports ({scope.ports.text!r}): "
                "it could never be found (add it to ports, or remove the [[listener]])",
            )
        loopback = e.exposure == "loopback" or (
            e.address is not None and exposure_of(e.address) == "loopback"
        )
        if loopback and not scope.loopback:
            raise _Problem(
                ("listener", i),
                "this [[listener]] is on loopback, which [scope] leaves out (loopback = false): "
                "it could never be found",
            )


_TOP_KEYS = ("version", "scope", "watch", "listener", "allow", "target", "sink")
_FIELD = {"listener": "listeners", "allow": "allow", "target": "targets", "sink": "sinks"}
_PATTERN_KEYS = ("proto", "address", "exposure", "process", "user", "unit", "container")
_SCOPE_KEYS = ("ports", "loopback", "loopback_ephemeral", "udp_ephemeral")
_WATCH_KEYS = ("interval", "persist")
_SINK_COMMON = ("type", "name", "events", "max_per_hour", "timeout")
_SINK_KEYS = {
    "email": (
        *_SINK_COMMON,
        "host",
        "port",
        "starttls",
        "tls",
        "user",
        "password_env",
        "from",
        "sender",
        "to",
        "ca_file",
    ),
    "webhook": (*_SINK_COMMON, "url", "url_env", "format"),
    "syslog": (*_SINK_COMMON, "facility", "tag", "address", "format"),
    "exec": (*_SINK_COMMON, "command"),
}
_KEYS_OF: dict[str, tuple[str, ...]] = {
    "listener": ("port", *_PATTERN_KEYS, "note"),
    "allow": ("ports", *_PATTERN_KEYS, "note"),
    "target": ("host", "port", "proto", "expect_status", "expect_service", "cert_warn_days", "name", "note"),
    "sink": tuple(dict.fromkeys(k for keys in _SINK_KEYS.values() for k in keys)),
}


_FORBIDDEN = {
    "password": "a password never goes in the baseline file: put it in an environment variable and "
    'name that variable (password_env = "PORTSCOPE_SMTP_PASSWORD")',
}


def _show(value: Any) -> str:
    """A value quoted for a one-line message: repr escapes control characters; bounded (and an
    integer of thousands of digits, which TOML's 0xfff... allows, is not converted to text at all)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**30:
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date/time"


def _unknown(key: str, where: str, valid: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown key {_show(key)} in {where}{hint} (valid keys: {', '.join(valid)})"


def _array_of_tables(value: Any, key: str) -> list[Any]:
    if not isinstance(value, list):
        raise _Problem(
            (key,),
            f"{key} must be an array of tables, one [[{key}]] header per entry, not {_kind(value)} "
            f"(write [[{key}]], with two brackets)",
        )
    return value


class _Table:
    """One table of the file, read key by key with the type and range each key takes."""

    def __init__(self, value: Any, path: Path, section: str, keys: Sequence[str]) -> None:
        if not isinstance(value, dict):
            raise _Problem(
                path, f"{section} must be a table, not {_kind(value)} (write {section} on its own line)"
            )
        for key in value:
            if key in _FORBIDDEN:
                raise _Problem((*path, key), _FORBIDDEN[key])
            if key not in keys:
                raise _Problem((*path, key), _unknown(key, section, keys))
        self.data: dict[str, Any] = value
        self.path = path
        self.section = section

    def problem(self, key: str, message: str) -> _Problem:
        return _Problem((*self.path, key), message)

    def wrong(self, key: str, form: str) -> _Problem:
        value = self.data[key]
        return self.problem(
            key, f"{key} in {self.section} must be {form}, not {_kind(value)} ({_show(value)})"
        )

    def has(self, key: str) -> bool:
        return key in self.data

    def required(self, key: str, form: str) -> None:
        if key not in self.data:
            raise _Problem(self.path, f"{self.section} needs {key} ({key} = {form})")

    def text(
        self,
        key: str,
        form: str = "a string",
        check: Callable[[str], object] | None = None,
        choices: Sequence[str] = (),
        any_text: bool = False,
    ) -> str | None:
        """A string; ANY_TEXT: as other processes choose names (empty, control characters), which a
        pattern must be able to match exactly."""
        if key not in self.data:
            return None
        value = self.data[key]
        if choices:
            form = " or ".join(f'"{c}"' for c in choices)
        if not isinstance(value, str):
            raise self.wrong(key, form)
        if choices and value not in choices:
            raise self.problem(key, f"{key} in {self.section} must be {form}, not {_show(value)}")
        if any_text and len(value) <= MAX_TEXT:
            pass
        elif not value or len(value) > MAX_TEXT or not value.isprintable():
            raise self.problem(
                key,
                f"{key} in {self.section} must be {form}: 1-{MAX_TEXT} printable characters, "
                f"not {_show(value)}",
            )
        if check is not None and not check(value):
            raise self.problem(key, f"{key} in {self.section} must be {form}, not {_show(value)}")
        return value

    def integer(self, key: str, low: int, high: int, form: str) -> int | None:
        if key not in self.data:
            return None
        value = self.data[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.wrong(key, form)
        if not low <= value <= high:
            raise self.problem(
                key, f"{key} {_show(value)} in {self.section} is out of range: it must be {form}"
            )
        return value

    def number(self, key: str, low: float, high: float, form: str) -> float | None:
        if key not in self.data:
            return None
        value = self.data[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.wrong(key, form)
        if not low <= value <= high:  # NaN fails this too
            raise self.problem(
                key, f"{key} {_show(value)} in {self.section} is out of range: it must be {form}"
            )
        return float(value)

    def flag(self, key: str) -> bool | None:
        if key not in self.data:
            return None
        value = self.data[key]
        if not isinstance(value, bool):
            raise self.wrong(key, "true or false")
        return value

    def texts(
        self, key: str, form: str, check: Callable[[str], object], limit: int = 64, one_allowed: bool = False
    ) -> tuple[str, ...] | None:
        """An array of strings; ONE_ALLOWED: a single string stands for an array of one."""
        if key not in self.data:
            return None
        value = self.data[key]
        if one_allowed and isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value or len(value) > limit:
            raise self.wrong(key, f"an array of 1-{limit} {form}")
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item or len(item) > 4096 or not check(item):
                raise _Problem(
                    (*self.path, key, i),
                    f"{key} in {self.section} must be an array of {form}, and item {i + 1} is {_show(item)}",
                )
        return tuple(value)


def _is_address(text: str) -> bool:
    return _ip(text) is not None


@functools.lru_cache(maxsize=1024)
def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _same_address(want: str, have: str) -> bool:
    a, b = _ip(want), _ip(have)
    return a == b if a is not None and b is not None else want == have


def _is_host(text: str) -> bool:
    return _is_address(text.removeprefix("[").removesuffix("]")) or bool(_HOSTNAME.fullmatch(text))


def _pattern(t: _Table) -> dict[str, Any]:
    proto = t.text("proto", choices=PROTOS)
    address = t.text("address", "an IP address, as bound: 0.0.0.0, ::, 127.0.0.1, 192.0.2.7", _is_address)
    exposure = t.text("exposure", choices=EXPOSURES)
    if address is not None and exposure is not None:
        raise t.problem(
            "exposure", f"{t.section} takes address or exposure, not both (the address implies it)"
        )
    if address is not None:
        address = str(_ip(address))
    return {
        "proto": proto,
        "address": address,
        "exposure": exposure,
        "process": t.text("process", "a process name as ps shows it, or a shell pattern", any_text=True),
        "user": t.text("user", "a user name, or a shell pattern", any_text=True),
        "unit": t.text("unit", "a systemd unit (nginx.service), or a shell pattern", any_text=True),
        "container": t.text(
            "container", "a container (docker:3f2a1b0c9d8e), or a shell pattern (docker:*)", any_text=True
        ),
    }


def _listener(t: _Table, line: int) -> ExpectedListener:
    port = t.integer("port", 1, 65535, "a whole number 1-65535")
    fields = _pattern(t)
    if port is None and fields["process"] is None:
        raise _Problem(
            t.path, 'a [[listener]] needs at least a port or a process (port = 22, process = "sshd")'
        )
    return ExpectedListener(port=port, note=t.text("note"), line=line, **fields)


def _port_spec(t: _Table, key: str, protos: tuple[str, ...]) -> PortSpec | None:
    if not t.has(key):
        return None
    value = t.data[key]
    form = 'a port spec: 22, "8000-8100", "80,443", "53/udp", "ssh" or "-" for every port'
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise t.wrong(key, form)
    try:
        spec = parse_ports(str(value), default_protos=protos)
    except BadInput as exc:
        raise t.problem(key, f"{key} in {t.section}: {exc}") from None
    except ValueError:  # int() of a digit Python knows but cannot convert ("²")
        raise t.problem(key, f"{key} in {t.section} must be {form}, not {_show(value)}") from None
    if not any(spec.count(p) for p in protos):
        raise t.problem(key, f"{key} in {t.section} names no {'/'.join(protos)} port ({form})")
    return spec


def _allow(t: _Table, line: int) -> AllowRule:
    fields = _pattern(t)
    t.required("ports", '"8000-8100"')
    protos = (fields["proto"],) if fields["proto"] else PROTOS
    ports = _port_spec(t, "ports", protos)
    assert ports is not None
    return AllowRule(ports=ports, note=t.text("note"), line=line, **fields)


def _target(t: _Table, line: int) -> Target:
    t.required("host", '"db.example.net"')
    t.required("port", "5432")
    host = t.text("host", "a host name or IP address, without the port (port = N)", _is_host)
    port = t.integer("port", 1, 65535, "a whole number 1-65535")
    assert host is not None and port is not None
    days = t.integer("cert_warn_days", 0, 3650, "a number of days 0-3650 (0: no warning)")
    return Target(
        host=host.removeprefix("[").removesuffix("]"),
        port=port,
        proto=t.text("proto", choices=PROTOS) or "tcp",
        expect_status=t.text("expect_status", choices=STATUSES) or "open",
        expect_service=t.text(
            "expect_service",
            "a service name as probe reports it (https, ssh, postgresql)",
            _SERVICE.fullmatch,
        ),
        cert_warn_days=14 if days is None else days,
        name=t.text("name"),
        note=t.text("note"),
        line=line,
    )


def _scope(t: _Table) -> Scope:
    return Scope(
        ports=_port_spec(t, "ports", PROTOS),
        loopback=_default(t.flag("loopback"), True),
        loopback_ephemeral=_default(t.flag("loopback_ephemeral"), False),
        udp_ephemeral=_default(t.flag("udp_ephemeral"), False),
    )


def _watch(t: _Table) -> WatchSettings:
    interval = t.number("interval", 1, 86400, "a number of seconds 1-86400")
    persist = t.number("persist", 0, 7 * 86400, "a number of seconds 0-604800 (0: alert at once)")
    return WatchSettings(_default(interval, 30.0), _default(persist, 60.0))


def _default(value: T | None, default: T) -> T:
    return default if value is None else value


def _sink(t: _Table, line: int) -> Sink:
    t.required("type", '"email", "webhook", "syslog" or "exec"')
    kind = t.text("type", choices=SINK_TYPES)
    assert kind is not None
    keys = _SINK_KEYS[kind]
    for key in t.data:
        if key not in keys:
            raise t.problem(key, _unknown(key, f'a [[sink]] of type "{kind}"', keys))
    events = t.texts("events", "event kinds (" + ", ".join(EVENT_KINDS) + ")", EVENT_KINDS.__contains__)
    common: dict[str, Any] = {
        "name": t.text(
            "name", "1-64 letters, digits, dots, dashes, colons or underscores", _SINK_NAME.fullmatch
        ),
        "events": events or EVENT_KINDS,
        "max_per_hour": t.integer("max_per_hour", 1, 3600, "a whole number of alerts 1-3600"),
        "timeout": t.number("timeout", 1, 3600, "a number of seconds 1-3600"),
        "table": dict(t.data),
        "line": line,
    }
    return _SINK_READERS[kind](t, common)


def _email(t: _Table, common: dict[str, Any]) -> EmailSink:
    t.required("host", '"mail.example.net"')
    if t.has("from") and t.has("sender"):
        raise t.problem("sender", "sender and from are the same key: give one of them")
    sender_key = "sender" if t.has("sender") else "from"
    t.required(sender_key, '"portscope@example.net"')
    t.required("to", '["ops@example.net"]')
    host = t.text("host", "a mail server's host name or address", _is_host)
    starttls = _default(t.flag("starttls"), False)
    tls = _default(t.flag("tls"), False)
    if starttls and tls:
        raise t.problem(
            "tls", "starttls and tls exclude each other (tls: implicit TLS on 465; starttls: 587)"
        )
    port = t.integer("port", 1, 65535, "a whole number 1-65535")
    user = t.text("user", "a login name")
    password_env = t.text("password_env", "an environment variable's name", _ENV_NAME.fullmatch)
    if (user is None) != (password_env is None):
        missing = "password_env" if user is not None else "user"
        raise _Problem(t.path, f"SMTP login needs both user and password_env; this [[sink]] lacks {missing}")
    assert host is not None
    local = _ip(host.strip("[]"))
    if (
        user is not None
        and not (starttls or tls)
        and not (host == "localhost" or (local and local.is_loopback))
    ):
        raise _Problem(
            t.path,
            f"this [[sink]] would send its password unencrypted to {host}: set starttls = true (587) "
            "or tls = true (465)",
        )
    sender = t.text(sender_key, "a mail address (portscope@example.net)", _MAILBOX.fullmatch)
    to = t.texts("to", "mail addresses", _MAILBOX.fullmatch, one_allowed=True)
    assert sender is not None and to is not None
    return EmailSink(
        host=host,
        port=_default(port, 465 if tls else 587 if starttls else 25),
        starttls=starttls,
        tls=tls,
        user=user,
        password_env=password_env,
        sender=sender,
        to=to,
        ca_file=t.text("ca_file", "a file of PEM certificates"),
        **common,
    )


def _webhook(t: _Table, common: dict[str, Any]) -> WebhookSink:
    form = t.text("format", choices=WEBHOOK_FORMATS) or "json"
    if form == "apprise":
        url = t.text("url", "an apprise URL (slack://..., msteams://..., tgram://...)", _is_apprise_url)
    else:
        url = t.text("url", 'an http:// or https:// URL (apprise URLs: format = "apprise")', _is_url)
    url_env = t.text("url_env", "an environment variable's name", _ENV_NAME.fullmatch)
    if (url is None) == (url_env is None):
        raise _Problem(t.path, 'a webhook [[sink]] takes url or url_env, one of them (url = "https://...")')
    return WebhookSink(url=url, url_env=url_env, format=form, **common)


def _is_url(text: str) -> bool:
    return text.startswith(("http://", "https://")) and len(text) > 8 and _no_space(text)


def _is_apprise_url(text: str) -> bool:
    scheme, sep, rest = text.partition("://")
    return bool(sep and rest and re.fullmatch(r"[a-z][a-z0-9+.-]*", scheme)) and _no_space(text)


def _no_space(text: str) -> bool:
    return not any(c.isspace() or not c.isprintable() for c in text)


def _is_syslog_address(text: str) -> bool:
    if text.startswith("/"):
        return True
    host, colon, port = text.rpartition(":")
    return bool(colon) and port.isascii() and port.isdigit() and 0 < int(port) < 65536 and _is_host(host)


def _syslog(t: _Table, common: dict[str, Any]) -> SyslogSink:
    return SyslogSink(
        facility=t.text("facility", choices=SYSLOG_FACILITIES) or "daemon",
        tag=t.text("tag", "1-32 letters, digits, dots, dashes or underscores", _TAG.fullmatch) or "portscope",
        address=t.text("address", 'a socket path ("/dev/log") or HOST:PORT for UDP', _is_syslog_address),
        format=t.text("format", choices=SYSLOG_FORMATS) or "auto",
        **common,
    )


def _exec(t: _Table, common: dict[str, Any]) -> ExecSink:
    t.required("command", '["/usr/local/bin/notify", "--quiet"]')
    command = t.texts(
        "command", "strings: the program and its arguments", lambda s: "\0" not in s, one_allowed=True
    )
    assert command is not None
    if isinstance(t.data["command"], str) and " " in command[0]:
        raise t.problem(
            "command",
            'command runs without a shell: write it as a list, ["/usr/local/bin/notify", "--quiet"]',
        )
    return ExecSink(command=command, **common)


_SINK_READERS: dict[str, Callable[[_Table, dict[str, Any]], Sink]] = {
    "email": _email,
    "webhook": _webhook,
    "syslog": _syslog,
    "exec": _exec,
}
_ARRAYS: dict[str, Callable[[_Table, int], Any]] = {
    "listener": _listener,
    "allow": _allow,
    "target": _target,
    "sink": _sink,
}


# ---------------------------------------------------------------------------------------------------
# Comparing


@dataclass(slots=True)
class Difference:
    """One way this host differs from its baseline. kind: missing (an expected listener is not there),
    unexpected (a listener nothing expects or allows), changed (an expected slot held by another
    process identity: `fields` says which of process, user, unit, container differ), target (a remote
    target's status or service is not the expected one), certificate (a target's TLS certificate expires
    within its warning period). For the last two `address` is the target's host and `observed` what
    this cycle saw of it (monitor.targets.TargetState.to_dict())."""

    kind: str
    summary: str
    proto: str | None
    address: str | None
    port: int | None
    expected: ExpectedListener | None = None
    actual: Listener | None = None
    fields: list[str] = field(default_factory=list)
    target: Target | None = None
    observed: dict[str, Any] | None = None

    @property
    def event(self) -> str:
        """The watch event kind this difference becomes."""
        return EVENT_OF_KIND[self.kind]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "summary": self.summary,
            "proto": self.proto,
            "address": self.address,
            "port": self.port,
            "line": self.expected.line if self.expected else (self.target.line if self.target else None),
            "fields": list(self.fields),
            "expected": self.expected.to_dict()
            if self.expected
            else (self.target.to_dict() if self.target else None),
            "actual": self.actual.to_dict() if self.actual else self.observed,
        }


def compare(baseline: Baseline, listeners: Collection[Listener]) -> list[Difference]:
    """What differs between BASELINE and LISTENERS (current_listeners()): every expected listener
    must be matched by one listening now; every listener must be expected or allowed. A listener on an
    expected listener's port and address whose process identity differs is `changed` (one difference,
    not a missing plus an unexpected one); the PID never counts."""
    entries = baseline.listeners
    # Only the entries for a listener's port (and those naming no port) can match it: indexed, a host
    # with 1,000 listeners and 1,000 entries costs ~1,000 checks a cycle instead of 1,000,000.
    portless = [i for i, e in enumerate(entries) if e.port is None]
    by_port: dict[int, list[int]] = {}
    for i, e in enumerate(entries):
        if e.port is not None:
            by_port.setdefault(e.port, []).append(i)
    satisfied: set[int] = set()
    in_slot: list[tuple[Listener, list[int]]] = []
    out: list[Difference] = []
    for item in listeners:
        on_port = by_port.get(item.port, [])
        candidates = sorted(on_port + portless) if portless else on_port
        full = [i for i in candidates if entries[i].matches(item)]
        if full:
            satisfied.update(full)
            continue
        slot = [i for i in on_port if entries[i].holds_slot(item)]
        if slot:
            in_slot.append((item, slot))
        elif not any(rule.covers(item) for rule in baseline.allow):
            out.append(_unexpected(item))
    replaced: set[int] = set()
    for item, slot in in_slot:
        # the entry this listener took the place of: one nothing else satisfied, if there is one
        i = next((i for i in slot if i not in satisfied), slot[0])
        replaced.add(i)
        out.append(_changed(entries[i], item))
    out += [_missing(e) for i, e in enumerate(entries) if i not in satisfied and i not in replaced]
    order = {kind: n for n, kind in enumerate(DIFFERENCE_KINDS)}
    out.sort(key=lambda d: (d.port or 0, d.proto or "", order[d.kind], d.address or ""))
    return out


def endpoint(address: str, port: int | str) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def describe_listener(item: Listener) -> str:
    who = item.process or "owner hidden"
    extra = [f"user {item.user}"] if item.user else []
    extra += [f"unit {item.unit}"] if item.unit else []
    extra += [f"container {item.container}"] if item.container else []
    return f"{item.proto} {endpoint(item.address, item.port)} {who}" + (
        f" ({', '.join(extra)})" if extra else ""
    )


def describe_entry(e: ExpectedListener) -> str:
    where = e.proto or "tcp/udp"
    port = e.port if e.port is not None else "*"
    where += " " + (endpoint(e.address, port) if e.address else f"port {port}")
    if e.exposure:
        where += f" ({e.exposure})"
    who = [f"{k} {v}" for k in ("process", "user", "unit", "container") if (v := getattr(e, k)) is not None]
    return where + (f" ({', '.join(who)})" if who else "")


def _unexpected(item: Listener) -> Difference:
    return Difference(
        "unexpected",
        f"{describe_listener(item)} listens, and the baseline neither expects nor allows it",
        item.proto,
        item.address,
        item.port,
        actual=item,
    )


def _changed(e: ExpectedListener, item: Listener) -> Difference:
    fields = e.mismatches(item)
    what = "; ".join(f"{k} {getattr(item, k) or '(none)'} instead of {getattr(e, k)}" for k in fields)
    return Difference(
        "changed",
        f"{item.proto} {endpoint(item.address, item.port)}: {what} (baseline line {e.line})",
        item.proto,
        item.address,
        item.port,
        expected=e,
        actual=item,
        fields=fields,
    )


def _missing(e: ExpectedListener) -> Difference:
    return Difference(
        "missing",
        f"{describe_entry(e)} is not listening (baseline line {e.line})",
        e.proto,
        e.address,
        e.port,
        expected=e,
    )


def _text_matches(want: str, have: str | None, truncated_at: int = 0) -> bool:
    if have is None:
        return False
    if _GLOB.search(want):
        return fnmatchcase(have, want)
    if truncated_at and len(want) > truncated_at and len(have) == truncated_at:
        return want[:truncated_at] == have  # systemd-resolved is "systemd-resolve" to the kernel
    return want == have
