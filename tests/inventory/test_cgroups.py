"""portscope who: the systemd unit and container of a listener's process, from real cgroups.

Each case creates the cgroup path systemd, docker, podman, containerd, CRI-O, kubelet or LXC would
create, moves a real listening child process into it (its pid written to cgroup.procs), and reads what
`portscope who PORT --json` reports. The paths go under one throwaway slice, `pstestXXXXXXXX.slice`,
at the root of each hierarchy systemd tracks processes in (cgroup v2, and v1's name=systemd where it is
mounted, so on a hybrid host the child's /proc/PID/cgroup is a real multi-line v1+v2 file). systemd
skips leading slices, so the throwaway slice changes nothing in the reading.

The oracle besides the fixed expectations: `ps -o unit,uunit` (procps linked with libsystemd, which
parses /proc/PID/cgroup with systemd's own code).
"""

from __future__ import annotations

import errno
import json
import secrets
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from portscope.inventory.procinfo import unit_and_container
from tests.helpers import portscope, start_sockhost

pytestmark = pytest.mark.root

ID = secrets.token_hex(32)  # a container id: 64 hex digits, as docker, podman, containerd and CRI-O make them
POD = str(uuid.uuid4())  # kubelet's pod UID; in systemd slice names its '-' become '_'
POD_SLICE = POD.replace("-", "_")


def _hierarchies() -> list[Path]:
    """Mount points of the hierarchies systemd tracks processes in: cgroup2, and the v1 name=systemd
    one. Only mounts whose root is this cgroup namespace's root, so that a cgroup's path below the
    mount point is exactly the path /proc/PID/cgroup shows."""
    found: dict[str, Path] = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, right = line.split(" - ", 1)
        fields, (fstype, _source, options) = left.split(), right.split()[:3]
        root, mount = fields[3], Path(fields[4].replace("\\040", " "))
        if root != "/":
            continue
        if fstype == "cgroup2":
            found.setdefault("v2", mount)
        elif fstype == "cgroup" and "name=systemd" in options.split(","):
            found.setdefault("name=systemd", mount)
    return list(found.values())


@dataclass
class Cgroups:
    """Throwaway cgroups under one slice in every systemd hierarchy; remove() undoes everything."""

    mounts: list[Path]
    top: str = field(default_factory=lambda: f"pstest{uuid.uuid4().hex[:8]}.slice")
    made: list[Path] = field(default_factory=list)

    def move(self, pid: int, rel: str) -> str:
        """Put PID in TOP/REL in each hierarchy ("" = the hierarchy's root); return the path the
        kernel must show for it."""
        path = f"{self.top}/{rel}" if rel else ""
        for mount in self.mounts:
            target = mount / path
            for d in [*reversed(target.relative_to(mount).parents), target.relative_to(mount)]:
                here = mount / d
                if str(d) != "." and not here.exists():
                    here.mkdir()
                    self.made.append(here)
            (target / "cgroup.procs").write_text(str(pid))
        return "/" + path

    def remove(self) -> None:
        errors = []
        for d in sorted(self.made, key=lambda p: len(p.parts), reverse=True):
            mount = next(m for m in self.mounts if d.is_relative_to(m))
            try:  # anything still inside (the test failed before its child exited) goes back to the root
                for pid in (d / "cgroup.procs").read_text().split():
                    (mount / "cgroup.procs").write_text(pid)
            except OSError:
                pass
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as e:
                    if e.errno != errno.EBUSY:
                        errors.append(f"{d}: {e}")
                        break
                    time.sleep(0.05)  # an exiting process leaves its cgroup a moment after wait()
            else:
                errors.append(f"{d}: still busy")
        self.made.clear()
        assert not errors, errors


@pytest.fixture
def cgroups() -> Iterator[Cgroups]:
    mounts = _hierarchies()
    if not mounts:
        pytest.skip("no cgroup2 and no v1 name=systemd hierarchy mounted at this cgroup namespace's root")
    cg = Cgroups(mounts)
    try:
        for mount in mounts:
            (mount / cg.top).mkdir()
            cg.made.append(mount / cg.top)
    except OSError as e:
        cg.remove()
        pytest.skip(f"cannot create a cgroup under {mount} ({e.strerror}): read-only cgroupfs, no privileges")
    try:
        yield cg
    finally:
        cg.remove()


def _ps_unit(pid: int) -> str | bool | None:
    """libsystemd's reading of PID's unit: the user unit inside a user manager, else the system unit.
    False when this ps cannot tell (built without systemd)."""
    if shutil.which("ps") is None:
        return False
    out = subprocess.run(["ps", "-o", "unit=,uunit=", "-p", str(pid)], capture_output=True, text=True)
    fields = out.stdout.split()
    if out.returncode != 0 or len(fields) != 2:
        return False
    unit, uunit = fields
    return uunit if uunit != "-" else (unit if unit != "-" else None)


# (cgroup path as the runtime names it, systemd unit, container)
CASES = [
    pytest.param("system.slice/nginx.service", "nginx.service", None, id="service"),
    # docker-proxy, the process holding a published port, runs in dockerd's unit
    pytest.param("system.slice/docker.service", "docker.service", None, id="docker-proxy"),
    pytest.param(
        f"system.slice/docker-{ID}.scope", f"docker-{ID}.scope", f"docker:{ID[:12]}", id="docker-systemd"
    ),
    pytest.param(f"docker/{ID}", None, f"docker:{ID[:12]}", id="docker-cgroupfs"),
    pytest.param(
        f"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD_SLICE}.slice/cri-containerd-{ID}.scope",
        f"cri-containerd-{ID}.scope",
        f"containerd:{ID[:12]}",
        id="kubernetes-containerd",
    ),
    pytest.param(
        f"kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{POD_SLICE}.slice/crio-{ID}.scope",
        f"crio-{ID}.scope",
        f"cri-o:{ID[:12]}",
        id="kubernetes-crio",
    ),
    pytest.param(
        f"kubepods/burstable/pod{POD}/{ID}", None, f"kubernetes:{ID[:12]}", id="kubernetes-cgroupfs"
    ),
    pytest.param("user.slice/user-1000.slice/session-3.scope", "session-3.scope", None, id="login-session"),
    # a user service: the unit `systemctl --user` acts on, not the whole user manager
    pytest.param(
        "user.slice/user-1000.slice/user@1000.service/app.slice/syncthing.service",
        "syncthing.service",
        None,
        id="user-service",
    ),
    # crun puts the container's processes one level below podman's scope: nested under the unit
    pytest.param(
        f"machine.slice/libpod-{ID}.scope/container",
        f"libpod-{ID}.scope",
        f"podman:{ID[:12]}",
        id="podman-nested",
    ),
    pytest.param(
        f"user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope",
        f"libpod-{ID}.scope",
        f"podman:{ID[:12]}",
        id="podman-rootless",
    ),
    # a delegated unit's own sub-cgroups (systemd-nspawn's payload, with the guest's systemd inside):
    # the host's unit is the nspawn service, not the guest's nginx.service
    pytest.param(
        "system.slice/systemd-nspawn@web.service/payload/system.slice/nginx.service",
        "systemd-nspawn@web.service",
        None,
        id="nspawn-nested",
    ),
    pytest.param("lxc.payload.web-frontend-01", None, "lxc:web-frontend-01", id="lxc-long-name"),
    pytest.param("lxc.payload.web01/system.slice/nginx.service", None, "lxc:web01", id="lxc-guest-unit"),
    pytest.param(
        "lxc.monitor.web01", None, None, id="lxc-monitor"
    ),  # lxc's monitor runs outside the container
    pytest.param("", None, None, id="root"),  # 0::/
]


@pytest.mark.parametrize(("rel", "unit", "container"), CASES)
def test_who_reports_unit_and_container_of_a_real_cgroup(
    cgroups: Cgroups, rel: str, unit: str | None, container: str | None
) -> None:
    host = start_sockhost([{"kind": "tcp-listen", "addr": "127.0.0.1"}])
    try:
        port = host.report["sockets"][0]["port"]
        path = cgroups.move(host.pid, rel)
        text = Path(f"/proc/{host.pid}/cgroup").read_text()
        # the kernel really has it there, in every systemd hierarchy
        assert len(cgroups.mounts) == sum(
            line.split(":", 2)[2] == path
            for line in text.splitlines()
            if line.startswith("0::") or "name=systemd" in line.split(":")[1].split(",")
        ), text
        proc = portscope("who", f"{port}/tcp", "--json")
        assert proc.returncode == 0, proc.stderr
        holders = json.loads(proc.stdout)
        assert [(h["pid"], h["unit"], h["container"]) for h in holders] == [(host.pid, unit, container)], text
        ps = _ps_unit(host.pid)
        if ps is not False:  # systemd's own parser agrees
            assert ps == unit, text
    finally:
        host.stop()


def test_who_human_output_names_unit_and_container(cgroups: Cgroups) -> None:
    host = start_sockhost([{"kind": "tcp-listen", "addr": "127.0.0.1"}])
    try:
        port = host.report["sockets"][0]["port"]
        cgroups.move(host.pid, f"system.slice/docker-{ID}.scope")
        out = portscope("who", str(port)).stdout
        assert f"docker-{ID}.scope" in out and f"docker:{ID[:12]}" in out
    finally:
        host.stop()


# Layouts this machine may not have, so not reproducible end to end everywhere: texts as the kernel
# prints them on such hosts.

# CentOS 7 (legacy v1, kernel 3.10: no "0::" line), dockerd's /proc/PID/cgroup, quoted in
# https://github.com/liske/needrestart/issues/165
CENTOS7_DOCKERD = """11:perf_event:/
10:devices:/system.slice/docker.service
9:freezer:/
8:memory:/system.slice/docker.service
7:cpuset:/
6:blkio:/system.slice/docker.service
5:hugetlb:/
4:pids:/system.slice/docker.service
3:cpuacct,cpu:/system.slice/docker.service
2:net_prio,net_cls:/
1:name=systemd:/system.slice/docker.service
"""


def test_legacy_v1_file_takes_the_unit_from_name_systemd() -> None:
    assert unit_and_container(CENTOS7_DOCKERD) == ("docker.service", None)
    # The same host on a kernel >= 4.5: the kernel adds "0::/" for the v2 hierarchy that nobody
    # mounted; every process sits at its root, so it says nothing about the unit.
    assert unit_and_container(CENTOS7_DOCKERD + "0::/\n") == ("docker.service", None)


def test_legacy_v1_controller_lines_never_name_the_unit() -> None:
    # a v1 controller cgroup left by a tool like cgclassify: systemd's hierarchy is the one that counts
    text = "4:cpu,cpuacct:/system.slice/batch.service\n1:name=systemd:/user.slice/user-1000.slice/session-3.scope\n"
    assert unit_and_container(text) == ("session-3.scope", None)


def test_hybrid_runc_v1_container_keeps_its_v2_parent_unit() -> None:
    # Hybrid layout (Ubuntu 20.04, Debian 10): runc in v1 mode moves a container's processes in the v1
    # hierarchies only, so the v2 line still shows the daemon that forked it. libsystemd reads the v2
    # line on hybrid hosts (`ps -o unit` says containerd.service); the container is found on the v1 lines.
    text = (
        f"12:memory:/docker/{ID}\n4:pids:/docker/{ID}\n"
        f"1:name=systemd:/docker/{ID}\n0::/system.slice/containerd.service\n"
    )
    assert unit_and_container(text) == ("containerd.service", f"docker:{ID[:12]}")


def test_escaped_cgroup_names_and_odd_lines() -> None:
    # systemd prefixes '_' to a name that would clash with the kernel's files (cg_escape)
    assert unit_and_container("0::/system.slice/_cgroup.mount.service\n") == ("cgroup.mount.service", None)
    assert unit_and_container("") == (None, None)
    assert unit_and_container("garbage\n0::/system.slice/a.service\n") == ("a.service", None)
    # a unit of a cgroup type only; lxc.service is a unit, not a container called "service"
    assert unit_and_container("0::/system.slice/lxc.service\n") == ("lxc.service", None)
