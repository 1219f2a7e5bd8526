"""`who`: every process holding a port, with what ps and systemd know about it."""

from __future__ import annotations

from portscope.inventory import procinfo, snapshot
from portscope.model import ProcessInfo
from portscope.registry import PortSpec


def holders(
    ports: PortSpec, protos: tuple[str, ...] = ("tcp", "udp")
) -> tuple[list[ProcessInfo], snapshot.Snapshot]:
    """Processes whose sockets have a local port in `ports` (any state), and the snapshot behind it.

    Only the local port counts, as with `fuser 22/tcp`: a client connected to someone's port 22 does
    not hold port 22 here.
    """
    snap = snapshot.take(snapshot.Query(protos=protos, states=None, ports=ports, owners=True))
    snap.sockets = [s for s in snap.sockets if ports.contains(s.local_port, s.proto)]
    by_pid: dict[int, ProcessInfo] = {}
    for s in snap.sockets:
        for ref in s.processes:
            info = by_pid.get(ref.pid)
            if info is None:
                d = procinfo.details(ref.pid)
                info = by_pid[ref.pid] = ProcessInfo(
                    pid=ref.pid,
                    name=ref.name,
                    uid=d.uid,
                    user=d.user,
                    cmdline=d.cmdline,
                    exe=d.exe,
                    started=d.started,
                    unit=d.unit,
                    container=d.container,
                )
            # identity, not ==: a server process can hold 25k accepted sockets on one port, and
            # comparing each with every other would be quadratic
            if not info.sockets or info.sockets[-1] is not s:
                info.sockets.append(s)
    return sorted(by_pid.values(), key=lambda p: p.pid), snap
