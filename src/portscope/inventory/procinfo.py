"""What `ps` and systemd would tell about a process, read straight from /proc/PID.

Everything here is untrusted text chosen by the process (names, command lines) and is bounded when
read; the CLI strips control characters before printing it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from portscope.inventory.users import user_name

MAX_CMDLINE = 4096

# cgroup path fragments that name a container runtime and its id
_CONTAINER_PATTERNS = (
    (re.compile(r"docker-([0-9a-f]{12,64})\.scope"), "docker"),
    (re.compile(r"/docker/([0-9a-f]{12,64})"), "docker"),
    (re.compile(r"libpod-(?:conmon-)?([0-9a-f]{12,64})\.scope"), "podman"),
    (re.compile(r"cri-containerd-([0-9a-f]{12,64})\.scope"), "containerd"),
    (re.compile(r"crio-([0-9a-f]{12,64})\.scope"), "cri-o"),
    (re.compile(r"/kubepods[^ ]*/pod[^/]+/([0-9a-f]{12,64})"), "kubernetes"),
    (re.compile(r"/lxc(?:\.payload)?[./]([^/]+)"), "lxc"),
)
_UNIT = re.compile(r"([^/]+\.(?:service|scope|socket|mount|swap|slice))$")


@dataclass(slots=True)
class ProcDetails:
    uid: int | None
    user: str | None
    cmdline: str | None
    exe: str | None
    started: str | None
    unit: str | None
    container: str | None


def _read(path: str, limit: int = 65536) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read(limit)
    except OSError:
        return None


def _boot_time(proc: str) -> float | None:
    data = _read(f"{proc}/stat")
    if data:
        for line in data.splitlines():
            if line.startswith(b"btime "):
                return float(line.split()[1])
    return None


def start_time(pid: int, proc: str = "/proc") -> str | None:
    """Field 22 of /proc/PID/stat is clock ticks after boot; the name before it may hold ')' too."""
    data = _read(f"{proc}/{pid}/stat")
    boot = _boot_time(proc)
    if not data or boot is None:
        return None
    fields = data[data.rfind(b")") + 2 :].split()
    try:
        ticks = int(fields[19])
    except (IndexError, ValueError):
        return None
    when = boot + ticks / os.sysconf("SC_CLK_TCK")
    return datetime.fromtimestamp(when, UTC).astimezone().isoformat(timespec="seconds")


def unit_and_container(cgroup_text: str) -> tuple[str | None, str | None]:
    """systemd unit and container from /proc/PID/cgroup (v2 "0::/path", or v1 "N:ctrl:/path")."""
    unit = container = None
    for line in cgroup_text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        path = parts[2]
        if parts[1] not in ("", "name=systemd") and unit is not None:
            continue
        for pattern, runtime in _CONTAINER_PATTERNS:
            m = pattern.search(path)
            if m and container is None:
                container = f"{runtime}:{m.group(1)[:12]}"
        m = _UNIT.search(path)
        if m and unit is None and not m.group(1).endswith(".slice"):
            unit = m.group(1)
    return unit, container


def details(pid: int, proc: str = "/proc") -> ProcDetails:
    try:
        uid: int | None = os.stat(f"{proc}/{pid}").st_uid
    except OSError:
        uid = None
    raw = _read(f"{proc}/{pid}/cmdline", MAX_CMDLINE)
    cmdline = raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace") if raw else None
    try:
        exe: str | None = os.readlink(f"{proc}/{pid}/exe")
    except OSError:
        exe = None  # another user's process without root, or a kernel thread
    cg = _read(f"{proc}/{pid}/cgroup")
    unit, container = unit_and_container(cg.decode("utf-8", "replace")) if cg else (None, None)
    return ProcDetails(
        uid=uid,
        user=user_name(uid) if uid is not None else None,
        cmdline=cmdline or None,
        exe=exe,
        started=start_time(pid, proc),
        unit=unit,
        container=container,
    )


def open_file_limit(pid: int, proc: str = "/proc") -> int | None:
    """Soft RLIMIT_NOFILE of another process: the limit behind "Too many open files"."""
    data = _read(f"{proc}/{pid}/limits")
    if not data:
        return None
    for line in data.decode("ascii", "replace").splitlines():
        if line.startswith("Max open files"):
            soft = line[len("Max open files") :].split()[0]
            return None if soft == "unlimited" else int(soft)
    return None
