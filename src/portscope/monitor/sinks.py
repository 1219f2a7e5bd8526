"""Where alerts go: mail over SMTP, a webhook (JSON, Slack, or any service apprise knows), the local
syslog or journal, or a program of the user's.

Each sink is built from a plain mapping, the keys of a `[[sink]]` table (build_sink), so the baseline
file, a test or a future --sink option can all make one; a bad table is BadInput naming the key. A
sink's send() either returns (delivered: the receiver took it) or raises SendError (not delivered:
delivery.py retries with backoff). Secrets are never in the mapping: a password or a URL holding a
token is named by an environment variable and read when sending, so a rotated secret needs no restart
of the configuration, only of the environment.

Every sink reads the same Alert (alerts.py) and renders it with the same cleaned text, so a process
named "evil\\r\\nBcc: x@y" is the literal text `evil\\x0d\\x0aBcc: x@y` in a subject, a log line or a chat
message, never a header or a line of its own. Each send is bounded in time (`timeout`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email.policy
import ipaddress
import json
import logging
import os
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any, ClassVar, NoReturn

from portscope import __version__
from portscope.errors import BadInput
from portscope.model import EVENT_KINDS
from portscope.monitor.alerts import (
    MAX_PER_HOUR,
    Alert,
    RateLimit,
    event_line,
    json_payload,
    merged_note,
    subject,
    text_body,
)
from portscope.textsafe import clean

log = logging.getLogger(__name__)

SINK_TYPES = ("email", "webhook", "syslog", "exec")
WEBHOOK_FORMATS = ("json", "slack", "apprise")
SYSLOG_FORMATS = ("auto", "syslog", "journal")
JOURNAL_SOCKET = "/run/systemd/journal/socket"
SYSLOG_SOCKET = "/dev/log"
FACILITIES = {
    "kern": 0,
    "user": 1,
    "mail": 2,
    "daemon": 3,
    "auth": 4,
    "syslog": 5,
    "lpr": 6,
    "news": 7,
    "uucp": 8,
    "cron": 9,
    "authpriv": 10,
    "ftp": 11,
    **{f"local{i}": 16 + i for i in range(8)},
}
WARNING = 4  # syslog severity of every alert line: a port changed against the baseline
ERROR_BYTES = 2000  # of a webhook's answer or a program's stderr, kept for the error message
LINE_MAX = 2000  # characters of one syslog line

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_TAG = re.compile(r"[A-Za-z0-9._-]{1,32}")
_DOMAIN = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
_MAILBOX = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}@(" + _DOMAIN + ")")
_HOSTNAME = re.compile(_DOMAIN)


class SendError(Exception):
    """The sink did not take the message; the text says why, in one cleaned line."""


# -- reading a [[sink]] table -------------------------------------------------------------------------------


class _Conf:
    """One [[sink]] mapping, read key by key; every problem becomes BadInput naming sink and key."""

    def __init__(self, name: str, kind: str, data: Mapping[str, Any], allowed: Sequence[str]) -> None:
        self.name, self.kind, self.data = name, kind, data
        for key in data:
            if key not in allowed:
                article = "an" if kind[:1] in "aeiou" else "a"
                self.fail(
                    str(key), f"is not a key of {article} {kind} sink; its keys are {', '.join(allowed)}"
                )

    def fail(self, key: str, problem: str) -> NoReturn:
        raise BadInput(f"sink {self.name!r}: {key} {problem}")

    def text(self, key: str, form: str, pattern: re.Pattern[str] | None = None) -> str | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value or (pattern is not None and not pattern.fullmatch(value)):
            self.fail(key, f"must be {form}, not {clean(repr(value), 80)}")
        assert isinstance(value, str)
        return value

    def need(self, key: str, form: str, pattern: re.Pattern[str] | None = None) -> str:
        value = self.text(key, form, pattern)
        if value is None:
            self.fail(key, f"is required ({form})")
        assert value is not None
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            self.fail(key, f"must be true or false, not {clean(repr(value), 80)}")
        return bool(value)

    def number(self, key: str, low: float, high: float, default: float, *, whole: bool = False) -> float:
        value = self.data.get(key, default)
        ok = isinstance(value, int | float) and not isinstance(value, bool) and low <= value <= high
        if ok and whole and not isinstance(value, int):
            ok = False
        if not ok:
            form = "a whole number" if whole else "a number"
            self.fail(key, f"must be {form} from {low:g} to {high:g}, not {clean(repr(value), 80)}")
        return float(value)

    def texts(self, key: str, form: str, pattern: re.Pattern[str] | None = None) -> tuple[str, ...] | None:
        value = self.data.get(key)
        if value is None:
            return None
        items = [value] if isinstance(value, str) else value
        if (
            not isinstance(items, list | tuple)
            or not items
            or not all(isinstance(v, str) and v for v in items)
            or (pattern is not None and not all(pattern.fullmatch(v) for v in items))
        ):
            self.fail(key, f"must be {form}, not {clean(repr(value), 120)}")
        return tuple(items)


def _env_secret(var: str, what: str) -> str:
    value = os.environ.get(var)
    if not value:
        raise SendError(f"the environment variable {var} ({what}) is not set")
    return value


def _oneline(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return clean(text, 500)


# -- the sinks ----------------------------------------------------------------------------------------------


class Sink(ABC):
    """One configured destination. `name` is what the outbox rows are filed under: keep it stable
    (a renamed sink leaves its pending messages to nobody)."""

    type: ClassVar[str]
    keys: ClassVar[tuple[str, ...]]
    default_timeout: ClassVar[float]  # seconds one send may take

    def __init__(self, conf: _Conf) -> None:
        self.name = conf.name
        kinds = conf.texts("events", "event kinds (" + ", ".join(EVENT_KINDS) + ")")
        unknown = [k for k in kinds or () if k not in EVENT_KINDS]
        if unknown:
            conf.fail(
                "events",
                f"names unknown kinds {', '.join(map(repr, unknown))}; kinds: {', '.join(EVENT_KINDS)}",
            )
        self.events = frozenset(kinds or EVENT_KINDS)
        self.limit = RateLimit(int(conf.number("max_per_hour", 1, 3600, MAX_PER_HOUR, whole=True)))
        self.timeout = conf.number("timeout", 1, 3600, self.default_timeout)

    def wants(self, kind: str) -> bool:
        return kind in self.events

    @abstractmethod
    def send(self, alert: Alert, now: dt.datetime) -> None:
        """Deliver one message; SendError when the receiver did not take it."""

    def describe(self) -> str:
        """Where it sends, for logs and status: no secrets."""
        return f"{self.type} sink {self.name}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"


_COMMON = ("type", "name", "events", "max_per_hour", "timeout")


class EmailSink(Sink):
    """SMTP with STARTTLS (587) or implicit TLS (465) or neither (25, a local relay), optional AUTH, any
    number of recipients. The Message-ID is derived from the alert key: a mailbox that already holds
    that id can drop a copy sent again after a crash."""

    type = "email"
    default_timeout = 30.0
    keys = (
        *_COMMON,
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
    )

    def __init__(self, conf: _Conf) -> None:
        super().__init__(conf)
        self.host = conf.need("host", "a mail server's host name or address")
        if any(c.isspace() or ord(c) < 32 for c in self.host):
            conf.fail("host", "must be a host name or an address")
        self.starttls = conf.flag("starttls", False)
        self.tls = conf.flag("tls", False)
        if self.starttls and self.tls:
            conf.fail("tls", "and starttls exclude each other (tls: implicit TLS, 465; starttls: 587)")
        default_port = 465 if self.tls else 587 if self.starttls else 25
        self.port = int(conf.number("port", 1, 65535, default_port, whole=True))
        self.user = conf.text("user", "a login name")
        self.password_env = conf.text("password_env", "an environment variable's name", _ENV_NAME)
        if (self.user is None) != (self.password_env is None):
            missing = "password_env" if self.user is not None else "user"
            conf.fail(missing, "is missing: SMTP login needs both user and password_env")
        if self.user is not None and not (self.starttls or self.tls) and not _is_local(self.host):
            conf.fail("user", f"would send its password unencrypted to {self.host}: set starttls or tls")
        if "from" in conf.data and "sender" in conf.data:
            conf.fail("sender", "and from are the same key; give one")
        key = "sender" if "sender" in conf.data else "from"
        self.sender = conf.need(key, "a mail address (portscope@example.net)", _MAILBOX)
        to = conf.texts("to", 'mail addresses (["ops@example.net"])', _MAILBOX)
        if to is None:
            conf.fail("to", 'is required (["ops@example.net"])')
        assert to is not None
        self.to = to
        ca_file = conf.text("ca_file", "a file of PEM certificates")
        if ca_file is not None and not Path(ca_file).is_file():
            conf.fail("ca_file", f"{ca_file!r} is not a file")
        self.ca_file = ca_file
        match = _MAILBOX.fullmatch(self.sender)
        assert match is not None
        self.domain = match.group(1)

    def describe(self) -> str:
        how = "tls" if self.tls else "starttls" if self.starttls else "plain"
        return f"email sink {self.name} (smtp {self.host}:{self.port} {how}, to {', '.join(self.to)})"

    def message(self, alert: Alert, now: dt.datetime) -> EmailMessage:
        """The mail, with every header from config or cleaned text: EmailMessage refuses CR/LF in a
        header anyway, and clean() has already made them visible escapes."""
        msg = EmailMessage(policy=email.policy.SMTP)
        msg["Subject"] = subject(alert)
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.to)
        msg["Date"] = format_datetime(now.astimezone(dt.UTC))
        msg["Message-ID"] = f"<{alert.key}@{self.domain}>"
        msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to a robot
        msg["X-Portscope-Alert"] = alert.key
        msg.set_content(text_body(alert))
        return msg

    def send(self, alert: Alert, now: dt.datetime) -> None:
        msg = self.message(alert, now)
        password = _env_secret(self.password_env, "the SMTP password") if self.password_env else None
        context = ssl.create_default_context(cafile=self.ca_file)
        try:
            client: smtplib.SMTP
            if self.tls:
                client = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=context)
            else:
                client = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            with client:
                client.ehlo()
                if self.starttls:
                    client.starttls(context=context)
                    client.ehlo()
                if self.user is not None and password is not None:
                    client.login(self.user, password)
                refused = client.send_message(msg, from_addr=self.sender, to_addrs=list(self.to))
        except smtplib.SMTPRecipientsRefused as exc:
            raise SendError(
                f"{self.host}:{self.port} refused every recipient: {_refusals(exc.recipients)}"
            ) from None
        except smtplib.SMTPResponseException as exc:
            raw = (
                exc.smtp_error.decode("utf-8", "replace")
                if isinstance(exc.smtp_error, bytes)
                else str(exc.smtp_error)
            )
            raise SendError(
                f"{self.host}:{self.port} answered {exc.smtp_code} {clean(' '.join(raw.split()), 300)}"
            ) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise SendError(f"{self.host}:{self.port}: {_oneline(exc)}") from None
        if refused:
            # Some recipients took it: sending again would give them a copy; the rest is logged.
            log.warning(
                "%s: some recipients refused the alert %s: %s", self.describe(), alert.key, _refusals(refused)
            )


def _refusals(recipients: Mapping[str, tuple[int, bytes]]) -> str:
    return clean(
        "; ".join(f"{r} {code} {msg.decode('utf-8', 'replace')}" for r, (code, msg) in recipients.items()),
        500,
    )


def _is_local(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirected POST becomes a GET without a body in urllib: an alert lost. A 3xx is an error."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class WebhookSink(Sink):
    """An HTTP POST: `json` (the documented alert object, with an Idempotency-Key header), `slack` (an
    incoming webhook's {"text": ...}), or `apprise`: the url is an apprise URL (slack://, msteams://,
    discord://, tgram://, ntfy://, json://...) and apprise speaks the service's API."""

    type = "webhook"
    default_timeout = 10.0
    keys = (*_COMMON, "url", "url_env", "format")

    def __init__(self, conf: _Conf) -> None:
        super().__init__(conf)
        self.format = conf.text("format", "one of " + ", ".join(WEBHOOK_FORMATS)) or "json"
        if self.format not in WEBHOOK_FORMATS:
            conf.fail(
                "format", f"must be one of {', '.join(WEBHOOK_FORMATS)}, not {clean(repr(self.format), 60)}"
            )
        self.url = conf.text("url", "a URL")
        self.url_env = conf.text("url_env", "an environment variable's name", _ENV_NAME)
        if (self.url is None) == (self.url_env is None):
            conf.fail("url", "or url_env: give one of them (url_env when the URL holds a token)")
        if self.url is not None:
            problem = self._check_url(self.url)
            if problem:
                conf.fail("url", problem)

    def _check_url(self, url: str) -> str | None:
        if any(c.isspace() or ord(c) < 32 for c in url):
            return "must not contain spaces or control characters"
        if self.format != "apprise":
            if not url.startswith(("http://", "https://")) or len(url) <= len("https://"):
                return f'must be an http:// or https:// URL for format {self.format!r} (apprise URLs: format = "apprise")'
            return None
        if _apprise_service(url) is None:
            return "is not a URL apprise knows (slack://..., msteams://..., tgram://..., json://...)"
        return None

    def _url(self) -> str:
        if self.url is not None:
            return self.url
        assert self.url_env is not None
        url = _env_secret(self.url_env, "the webhook URL")
        problem = self._check_url(url)
        if problem:
            raise SendError(f"the webhook URL in {self.url_env} {problem}")
        return url

    def describe(self) -> str:
        where = f"${self.url_env}" if self.url_env else _redact(self.url or "")
        return f"webhook sink {self.name} ({self.format} {where})"

    def send(self, alert: Alert, now: dt.datetime) -> None:
        url = self._url()
        if self.format == "apprise":
            self._send_apprise(url, alert)
            return
        if self.format == "slack":
            text = subject(alert) + "\n" + text_body(alert)
            body = json.dumps({"text": text[:35000]}).encode()
        else:
            body = json.dumps(json_payload(alert), ensure_ascii=False).encode()
        request = urllib.request.Request(
            url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json; charset=utf-8",
                "User-Agent": f"portscope/{__version__}",
                "Idempotency-Key": alert.key,
            },
        )
        opener = urllib.request.build_opener(_NoRedirect())
        where = _redact(url)
        try:
            with opener.open(request, timeout=self.timeout) as answer:
                answer.read(ERROR_BYTES)
                status = answer.status
        except urllib.error.HTTPError as exc:
            detail = exc.read(ERROR_BYTES).decode("utf-8", "replace") if exc.fp is not None else ""
            raise SendError(
                f"{where} answered HTTP {exc.code}: {clean(' '.join(detail.split()), 300)}"
            ) from None
        except urllib.error.URLError as exc:
            raise SendError(
                f"{where}: {_oneline(exc.reason if isinstance(exc.reason, BaseException) else exc)}"
            ) from None
        except (OSError, ValueError) as exc:
            raise SendError(f"{where}: {_oneline(exc)}") from None
        if not 200 <= status < 300:
            raise SendError(f"{where} answered HTTP {status}")

    def _send_apprise(self, url: str, alert: Alert) -> None:
        import apprise

        service = _apprise_service(url)
        if service is None:
            raise SendError("apprise does not know the configured URL")
        errors = _Collect()
        logger = logging.getLogger("apprise")
        logger.addHandler(errors)
        try:
            ok = service.notify(
                body=text_body(alert), title=subject(alert), notify_type=apprise.NotifyType.WARNING
            )
        except Exception as exc:  # a plugin's own bug must not stop delivery of the others
            raise SendError(f"apprise {service.service_name}: {_oneline(exc)}") from None
        finally:
            logger.removeHandler(errors)
        if not ok:
            why = "; ".join(errors.messages[-3:]) or "the service did not accept it"
            raise SendError(f"apprise {service.service_name}: {clean(why, 500)}")


class _Collect(logging.Handler):
    """apprise reports why a notification failed only in its log: keep those lines for the error."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(" ".join(record.getMessage().split()))


def _apprise_service(url: str) -> Any:
    """The apprise plugin for `url`, or None; memory-only storage: apprise writes no cache files."""
    import apprise

    asset = apprise.AppriseAsset(storage_mode="memory")
    return apprise.Apprise.instantiate(url, asset=asset)


def _redact(url: str) -> str:
    """A URL fit for a log line: scheme, host and port only (a webhook's path is often its secret)."""
    scheme, sep, rest = url.partition("://")
    host = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    return clean(f"{scheme}{sep}{host}/…" if sep else "(url)", 200)


class SyslogSink(Sink):
    """One line per event to the local syslog (/dev/log), to journald in its native protocol (fields
    PORTSCOPE_EVENT_ID, PORTSCOPE_KIND, ... besides MESSAGE), or to a remote syslog over UDP."""

    type = "syslog"
    default_timeout = 5.0
    keys = (*_COMMON, "facility", "tag", "address", "format")

    def __init__(self, conf: _Conf) -> None:
        super().__init__(conf)
        facility = conf.text("facility", "a syslog facility (" + ", ".join(FACILITIES) + ")") or "daemon"
        if facility not in FACILITIES:
            conf.fail("facility", f"must be one of {', '.join(FACILITIES)}, not {clean(repr(facility), 40)}")
        self.facility = facility
        self.tag = conf.text("tag", "1-32 letters, digits, dots, dashes or underscores", _TAG) or "portscope"
        self.format = conf.text("format", "one of " + ", ".join(SYSLOG_FORMATS)) or "auto"
        if self.format not in SYSLOG_FORMATS:
            conf.fail(
                "format", f"must be one of {', '.join(SYSLOG_FORMATS)}, not {clean(repr(self.format), 40)}"
            )
        self.address = conf.text("address", 'a socket path ("/dev/log") or HOST:PORT (UDP)')
        self.udp: tuple[str, int] | None = None
        if self.address is not None and not self.address.startswith("/"):
            host, colon, port = self.address.rpartition(":")
            host = host.strip("[]")
            if (
                not colon
                or not port.isdigit()
                or not 0 < int(port) < 65536
                or not (_HOSTNAME.fullmatch(host) or _is_ip(host))
            ):
                conf.fail(
                    "address", f"must be a socket path or HOST:PORT, not {clean(repr(self.address), 80)}"
                )
            self.udp = (host, int(port))
            if self.format == "journal":
                conf.fail("format", "journal is a local socket's protocol; a HOST:PORT address takes syslog")

    def _target(self) -> tuple[str, str]:
        """(format, socket path), decided when sending: journald may start after portscope does."""
        if self.format == "journal":
            return "journal", self.address or JOURNAL_SOCKET
        if self.format == "auto" and self.address is None and os.path.exists(JOURNAL_SOCKET):
            return "journal", JOURNAL_SOCKET
        return "syslog", self.address or SYSLOG_SOCKET

    def describe(self) -> str:
        fmt, path = self._target()
        return f"syslog sink {self.name} ({fmt} {self.address if self.udp else path})"

    def lines(self, alert: Alert) -> list[tuple[str, Mapping[str, Any] | None]]:
        """(text, event) per datagram: one per event, and the merged note when there is one."""
        out: list[tuple[str, Mapping[str, Any] | None]] = []
        note = merged_note(alert)
        if note:
            out.append((f"{note} (alert {alert.key})", None))
        host = clean(alert.host, 80)
        for ev in alert.events:
            out.append((clean(f"{host} {event_line(ev)} (alert {alert.key})", LINE_MAX), ev))
        return out

    def datagrams(self, alert: Alert, now: dt.datetime, fmt: str) -> list[bytes]:
        pri = FACILITIES[self.facility] * 8 + WARNING
        out = []
        for text, ev in self.lines(alert):
            if fmt == "journal":
                fields = {
                    "MESSAGE": text,
                    "PRIORITY": str(WARNING),
                    "SYSLOG_FACILITY": str(FACILITIES[self.facility]),
                    "SYSLOG_IDENTIFIER": self.tag,
                    "PORTSCOPE_ALERT": alert.key,
                }
                if ev is not None:
                    for name in ("id", "kind", "host", "proto", "address", "port"):
                        if ev.get(name) is not None:
                            fields[f"PORTSCOPE_EVENT_{name.upper()}"] = clean(str(ev[name]), 200)
                # clean() left no newline in any value, so the simple KEY=value form is exact.
                out.append("".join(f"{k}={v}\n" for k, v in fields.items()).encode())
            else:
                local = now.astimezone()  # RFC 3164 as glibc's syslog(3) writes it: local time, %e day
                stamp = f"{local:%b} {local.day:2d} {local:%H:%M:%S}"
                me = f" {socket.gethostname()}" if self.udp else ""
                out.append(f"<{pri}>{stamp}{me} {self.tag}[{os.getpid()}]: {text}".encode())
        return out

    def send(self, alert: Alert, now: dt.datetime) -> None:
        fmt, path = self._target()
        grams = self.datagrams(alert, now, fmt)
        try:
            if self.udp is not None:
                info = socket.getaddrinfo(*self.udp, type=socket.SOCK_DGRAM)[0]
                with socket.socket(info[0], socket.SOCK_DGRAM) as sock:
                    sock.settimeout(self.timeout)
                    sock.connect(info[4])
                    for gram in grams:
                        sock.send(gram)
                return
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(path)
                for gram in grams:
                    sock.send(gram)
        except OSError as exc:
            where = self.address if self.udp else path
            raise SendError(f"{fmt} {where}: {_oneline(exc)}") from None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class ExecSink(Sink):
    """A program (argv, no shell) with the alert's JSON on stdin; exit status 0 means delivered. It
    runs in its own session so a timeout kills it and whatever it started."""

    type = "exec"
    default_timeout = 30.0
    keys = (*_COMMON, "command")

    def __init__(self, conf: _Conf) -> None:
        super().__init__(conf)
        command = conf.texts(
            "command",
            'a list of strings, the program and its arguments (["/usr/local/bin/notify", "--quiet"])',
        )
        if command is None:
            conf.fail("command", 'is required, a list: ["/usr/local/bin/notify", "--quiet"]')
        assert command is not None
        if isinstance(conf.data.get("command"), str) and " " in command[0]:
            conf.fail("command", 'must be a list of strings (no shell): ["/usr/local/bin/notify", "--quiet"]')
        if any("\0" in part for part in command):
            conf.fail("command", "must not contain NUL characters")
        if shutil.which(command[0]) is None:
            conf.fail("command", f"{command[0]!r} is not an executable program (nor one on PATH)")
        self.command = command

    def describe(self) -> str:
        return f"exec sink {self.name} ({clean(self.command[0], 200)})"

    def send(self, alert: Alert, now: dt.datetime) -> None:
        data = json.dumps(json_payload(alert), ensure_ascii=False).encode()
        env = dict(os.environ)
        env.update(
            PORTSCOPE_ALERT_KEY=alert.key,
            PORTSCOPE_SINK=self.name,
            PORTSCOPE_HOST=clean(alert.host, 200),
            PORTSCOPE_EVENTS=str(len(alert.events)),
            PORTSCOPE_SUBJECT=subject(alert),
        )
        with tempfile.TemporaryFile() as err:
            try:
                proc = subprocess.Popen(
                    list(self.command),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                    env=env,
                    start_new_session=True,
                )
            except OSError as exc:
                raise SendError(f"{clean(self.command[0], 200)}: {_oneline(exc)}") from None
            try:
                proc.communicate(data, timeout=self.timeout)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                raise SendError(
                    f"{clean(self.command[0], 200)} did not finish within {self.timeout:g} s"
                ) from None
            except BaseException:
                _kill_group(proc)
                raise
            if proc.returncode != 0:
                err.seek(0)
                said = " ".join(err.read(ERROR_BYTES).decode("utf-8", "replace").split())
                status = (
                    f"exit status {proc.returncode}" if proc.returncode > 0 else f"signal {-proc.returncode}"
                )
                raise SendError(
                    f"{clean(self.command[0], 200)} failed ({status}){': ' + clean(said, 500) if said else ''}"
                )


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)


# -- building ---------------------------------------------------------------------------------------------

_CLASSES: dict[str, type[Sink]] = {
    "email": EmailSink,
    "webhook": WebhookSink,
    "syslog": SyslogSink,
    "exec": ExecSink,
}


def build_sink(name: str, conf: Mapping[str, Any]) -> Sink:
    """A sink from a [[sink]] table's keys. BadInput names the sink, the key and the valid form."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise BadInput(
            f"sink name {clean(repr(name), 80)}: 1-64 letters, digits, dots, dashes, colons or underscores"
        )
    if conf.get("name") not in (None, name):
        raise BadInput(f"sink {name!r}: its table names it {clean(repr(conf.get('name')), 80)}")
    kind = conf.get("type")
    if kind not in _CLASSES:
        raise BadInput(
            f"sink {name!r}: type must be one of {', '.join(SINK_TYPES)}, not {clean(repr(kind), 60)}"
        )
    cls = _CLASSES[kind]
    return cls(_Conf(name, kind, conf, cls.keys))


def build_sinks(tables: Iterable[Mapping[str, Any]]) -> list[Sink]:
    """Sinks for a list of [[sink]] tables. One without a name is called after its type and rank
    among that type (email-1, webhook-2): stable while the file keeps its order; name sinks to be safe."""
    sinks: list[Sink] = []
    rank: dict[str, int] = {}
    for table in tables:
        kind = str(table.get("type"))
        rank[kind] = rank.get(kind, 0) + 1
        name = table.get("name")
        sink = build_sink(name if isinstance(name, str) else f"{kind}-{rank[kind]}", table)
        if any(s.name == sink.name for s in sinks):
            raise BadInput(f"two sinks are named {sink.name!r}; give each its own name")
        sinks.append(sink)
    return sinks


__all__ = [
    "SINK_TYPES",
    "EmailSink",
    "ExecSink",
    "SendError",
    "Sink",
    "SyslogSink",
    "WebhookSink",
    "build_sink",
    "build_sinks",
]
