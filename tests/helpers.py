"""Test plumbing: run portscope and ss as real commands, start socket-holding child processes.

The `ss` parser here is deliberately independent of portscope's code: it reads ss's text, so a bug
in our netlink parsing cannot hide by being shared with the oracle.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SOCKHOST = str(Path(__file__).with_name("sockhost.py"))

SS_STATES = {
    "ESTAB": "ESTABLISHED",
    "UNCONN": "UNCONN",
    "LISTEN": "LISTEN",
    "TIME-WAIT": "TIME_WAIT",
    "CLOSE-WAIT": "CLOSE_WAIT",
    "SYN-SENT": "SYN_SENT",
    "SYN-RECV": "SYN_RECV",
    "FIN-WAIT-1": "FIN_WAIT1",
    "FIN-WAIT-2": "FIN_WAIT2",
    "LAST-ACK": "LAST_ACK",
    "CLOSING": "CLOSING",
}
_USERS = re.compile(r'\("((?:[^"\\]|\\.)*)",pid=(\d+),fd=(\d+)\)')


def demote(user: str) -> Callable[[], None]:
    """preexec_fn that runs the child as another user (tests run as root in CI)."""
    pw = pwd.getpwnam(user)

    def _do() -> None:
        os.setgroups([])
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)

    return _do


@functools.lru_cache(maxsize=1)
def unprivileged_runtime() -> tuple[str, str]:
    """(python, directory) that another user can run: the checkout and the venv may sit under /root.

    The directory holds a world-readable copy of the package and of sockhost.py; portscope needs only
    the standard library when it prints no rich table, so any system Python 3.11+ can run it.
    """
    copy = tempfile.mkdtemp(prefix="portscope-unpriv-")
    os.chmod(copy, 0o755)
    shutil.copytree(ROOT / "src" / "portscope", Path(copy) / "portscope")
    shutil.copy(SOCKHOST, copy)
    for dirpath, dirnames, filenames in os.walk(copy):
        for name in dirnames:
            os.chmod(os.path.join(dirpath, name), 0o755)
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o644)
    atexit.register(shutil.rmtree, copy, True)
    check = "import sys; sys.exit(sys.version_info < (3, 11))"
    for python in (os.path.realpath(sys.executable), "/usr/bin/python3", "/usr/local/bin/python3"):
        if not os.path.exists(python):
            continue
        try:
            ok = subprocess.run([python, "-c", check], preexec_fn=demote("nobody"), capture_output=True)
        except OSError:  # not executable by nobody (e.g. a pyenv Python under /root)
            continue
        if ok.returncode == 0:
            return python, copy
    raise RuntimeError("no Python 3.11+ that user nobody may run (is the interpreter under /root?)")


def _command(user: str | None, *args: str) -> tuple[list[str], dict[str, str]]:
    """Argv and environment to run `python *args` as USER (or as ourselves)."""
    if user is None:
        return [sys.executable, *args], {}
    python, copy = unprivileged_runtime()
    return [python, *args], {"PYTHONPATH": copy}


@functools.cache
def offline_prefix() -> list[str] | None:
    """Run a command in a fresh, empty network namespace (only lo, up): its DNS lookups fail at once.

    Why: a test of an unresolvable name must not send a query to the machine's real resolver (our
    traffic stays on this host). `unshare -rn` needs no root where user namespaces are allowed.
    """
    prefix = ["unshare", "-rn", "sh", "-c", 'ip link set lo up && exec "$@"', "sh"]
    if shutil.which("unshare") is None:
        return None
    probe = subprocess.run([*prefix, "true"], capture_output=True, timeout=10)
    return prefix if probe.returncode == 0 else None


def netns_prefix(netns: str | None) -> list[str]:
    return ["ip", "netns", "exec", netns] if netns else []


def portscope(
    *args: str,
    user: str | None = None,
    netns: str | None = None,
    env: dict[str, str] | None = None,
    offline: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run the CLI; offline=True: in an empty network namespace (see offline_prefix)."""
    argv, extra = _command(user, "-m", "portscope", *args)
    # English whatever the developer's locale (LANG=pt_BR would translate the text tests read)
    full_env = dict(os.environ, NO_COLOR="1", LC_ALL="C.UTF-8", LANGUAGE="", **extra, **(env or {}))
    prefix = netns_prefix(netns)
    if offline:
        isolated = offline_prefix()
        if isolated is None:
            import pytest

            pytest.skip("needs `unshare -rn` (user namespaces) or root, to resolve names without the network")
        prefix = isolated
    return subprocess.run(
        [*prefix, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env=full_env,
        cwd="/",
        preexec_fn=demote(user) if user else None,
    )


def portscope_json(*args: str, **kw: Any) -> Any:
    proc = portscope(*args, "--json", **kw)
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(proc.stdout)


def _endpoint(text: str) -> tuple[str, int, str | None, str]:
    host, port = text.rsplit(":", 1)
    iface = None
    if "%" in host:
        host, iface = host.split("%", 1)
    if host == "*":
        return "::", int(port) if port != "*" else 0, iface, "ipv6"
    if host.startswith("["):
        return host[1:-1], int(port) if port != "*" else 0, iface, "ipv6"
    return host, int(port) if port != "*" else 0, iface, "ipv4"


def ss(user: str | None = None, netns: str | None = None) -> list[dict[str, Any]]:
    """`ss -Htuanpe` parsed into portscope's JSON field names."""
    out = subprocess.run(
        [*netns_prefix(netns), "ss", "-Htuanpe"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        preexec_fn=demote(user) if user else None,
    ).stdout
    rows = []
    for line in out.splitlines():
        f = line.split()
        if len(f) < 6 or f[0] not in ("tcp", "udp"):
            continue
        laddr, lport, iface, fam = _endpoint(f[4])
        raddr, rport, _, _ = _endpoint(f[5])
        rest = " ".join(f[6:])
        uid = re.search(r"\buid:(\d+)", rest)
        ino = re.search(r"\bino:(\d+)", rest)
        v6 = re.search(r"\bv6only:(\d)", rest)
        rows.append(
            {
                "proto": f[0],
                "family": fam,
                "state": SS_STATES[f[1]],
                "recv_q": int(f[2]),
                "send_q": int(f[3]),
                "local_address": laddr,
                "local_port": lport,
                "remote_address": raddr,
                "remote_port": rport,
                "interface": iface,
                "uid": int(uid.group(1)) if uid else 0,
                "inode": int(ino.group(1)) if ino else 0,
                "v6only": None if v6 is None else v6.group(1) == "1",
                "processes": sorted((int(p), n, int(d)) for n, p, d in _USERS.findall(rest)),
            }
        )
    return rows


@dataclass
class SockHost:
    """A running tests/sockhost.py child and what it reported."""

    proc: subprocess.Popen[str]
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return int(self.report["pid"])

    def pids(self) -> set[int]:
        """The sockhost and its forked children: every process holding its sockets."""
        return {self.pid, *self.report["children"]}

    def ports(self) -> set[int]:
        out = set()
        for s in self.report["sockets"]:
            out |= {v for k, v in s.items() if k in ("port", "client_port")}
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_sockhost(
    specs: Sequence[dict[str, Any]], user: str | None = None, netns: str | None = None
) -> SockHost:
    script = SOCKHOST if user is None else os.path.join(unprivileged_runtime()[1], "sockhost.py")
    argv, extra = _command(user, script, json.dumps(list(specs)))
    proc = subprocess.Popen(
        [*netns_prefix(netns), *argv],
        env=dict(os.environ, **extra),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=demote(user) if user else None,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait()
        raise RuntimeError(f"sockhost failed to start (exit {proc.returncode})")
    return SockHost(proc, json.loads(line))


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def portscope_tty(
    *args: str, columns: int = 80, env: dict[str, str] | None = None, timeout: float = 60
) -> tuple[int, str]:
    """Run the CLI with stdout on a pseudo-terminal COLUMNS wide, as a person at a terminal would.

    Returns (exit code, what the terminal showed) with colour codes removed and \\r\\n made \\n.
    COLUMNS is removed from the environment so the width comes from the terminal itself
    (TIOCSWINSZ), the way rich reads it; stderr stays a pipe (no progress bar), and is dropped.
    """
    import fcntl
    import pty
    import select
    import struct
    import termios
    import time

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    full_env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
    full_env.update(TERM="xterm-256color", LC_ALL="C.UTF-8", LANGUAGE="", **(env or {}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "portscope", *args],
        stdin=slave,
        stdout=slave,
        stderr=subprocess.DEVNULL,
        env=full_env,
        cwd="/",
        close_fds=True,
    )
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed its end of the terminal
                break
            if not data:
                break
            chunks.append(data)
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")
    return code, _ANSI.sub("", text)
