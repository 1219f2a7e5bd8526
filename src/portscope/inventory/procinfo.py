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

# cgroup path fragments that name a container runtime and its id (searched on every line)
_CONTAINER_PATTERNS = (
    (re.compile(r"docker-([0-9a-f]{12,64})\.scope"), "docker"),  # systemd cgroup driver
    (re.compile(r"/docker/([0-9a-f]{12,64})"), "docker"),  # cgroupfs driver
    (re.compile(r"libpod-(?:conmon-)?([0-9a-f]{12,64})\.scope"), "podman"),
    (re.compile(r"cri-containerd-([0-9a-f]{12,64})\.scope"), "containerd"),
    (re.compile(r"crio-([0-9a-f]{12,64})\.scope"), "cri-o"),
    (re.compile(r"/kubepods[^ ]*/pod[^/]+/([0-9a-f]{12,64})"), "kubernetes"),  # kubelet's cgroupfs driver
    # LXC 4+/LXD name the container's cgroup lxc.payload.NAME (its monitor, outside it, lxc.monitor.NAME);
    # older LXC used /lxc/NAME. NAME is a name, not an id: never shortened.
    (re.compile(r"/lxc\.payload\.([^/]+)"), "lxc"),
    (re.compile(r"/lxc/([^/]+)"), "lxc"),
)
_HEX_ID = re.compile(r"[0-9a-f]{12,64}")
# a unit name as systemd validates it (unit_name_is_valid): only these types have cgroups
_UNIT_NAME = re.compile(
    r"[A-Za-z0-9:_.\\-]+(?:@[A-Za-z0-9:_.\\-]*)?\.(service|scope|socket|mount|swap|slice)"
)
_USER_MANAGER = re.compile(r"user@\d+\.service")


def _unit_type(component: str) -> str | None:
    m = _UNIT_NAME.fullmatch(component)
    return m.group(1) if m else None


def _first_unit(parts: list[str]) -> tuple[str | None, list[str]]:
    """The first component after the leading slices if it names a unit, and what lies below it."""
    for i, part in enumerate(parts):
        kind = _unit_type(part)
        if kind != "slice":
            return (part if kind else None), parts[i + 1 :]
    return None, []


def _unit_of_path(path: str) -> str | None:
    """systemd's reading of a cgroup path (cg_path_get_unit): skip the leading slices, and the next
    component is the unit if it is a unit's name, whatever sub-cgroups lie below it (a delegated
    service's payload/, a container's own system.slice/...). Inside a user manager (user@UID.service)
    the user's unit is the one a person can act on (`systemctl --user`), as `ps -o uunit` reads it."""
    # systemd escapes a component that would clash with kernel files by prefixing '_' (cg_escape)
    parts = [p[1:] if p.startswith("_") else p for p in path.split("/") if p]
    unit, below = _first_unit(parts)
    if unit is not None and _USER_MANAGER.fullmatch(unit):
        return _first_unit(below)[0] or unit
    return unit


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
    """systemd unit and container from /proc/PID/cgroup (v2 "0::/path", v1 "N:ctrl:/path", or both).

    The unit comes from the hierarchy systemd tracks processes in, never from a v1 controller's: the
    v2 line ("0::", unified and hybrid layouts, as libsystemd reads it), or the name=systemd line on a
    legacy layout, where the kernel still prints "0::/" for the unmounted v2 hierarchy. The first such
    line counts. A container is recognised on any line (a v1 runtime may move its processes in the v1
    hierarchies only, leaving the v2 line at its parent service).
    """
    v2 = named = None
    container = None
    for line in cgroup_text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hid, controllers, path = parts
        if hid == "0" and controllers == "":
            v2 = path if v2 is None else v2
        elif "name=systemd" in controllers.split(","):
            named = path if named is None else named
        for pattern, runtime in _CONTAINER_PATTERNS:
            m = pattern.search(path)
            if m and container is None:
                ident = m.group(1)
                container = f"{runtime}:{ident[:12] if _HEX_ID.fullmatch(ident) else ident}"
    systemd_path = v2 if v2 is not None and (v2 != "/" or named is None) else named
    return (_unit_of_path(systemd_path) if systemd_path else None), container


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
