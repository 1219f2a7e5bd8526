"""scan --probe (-sV): the scan's open ports identified, in JSON, the table, nmap XML and grepable."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from tests.bed.bed import TestBed
from tests.helpers import portscope

pytestmark = pytest.mark.root


def test_scan_probe_json_identifies_open_ports_only(bed: TestBed) -> None:
    proc = portscope("scan", bed.addr4, "-p", "80,81,443,8081", "--probe", "--timeout", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["port"]: r for r in json.loads(proc.stdout)}
    assert (rows[80]["identified"], rows[80]["product"]) == ("http", "nginx")
    assert rows[443]["identified"] == "https" and rows[443]["tls"]["version"].startswith("TLSv1.")
    # Ports that are not open keep the plain check object: no probe fields at all.
    assert rows[81]["status"] == "closed" and "identified" not in rows[81]
    assert rows[8081]["status"] == "filtered" and "identified" not in rows[8081]


def test_scan_probe_xml_and_grepable(bed: TestBed) -> None:
    proc = portscope("scan", bed.addr4, "-p", "80,443,81", "-sV", "-oX", "-", "--timeout", "1")
    assert proc.returncode == 0, proc.stderr
    root = ET.fromstring(proc.stdout)
    services = {p.get("portid"): p.find("service") for p in root.iter("port")}
    http = services["80"]
    assert http is not None and http.get("method") == "probed" and http.get("product") == "nginx"
    https = services["443"]
    assert https is not None and https.get("tunnel") == "ssl" and https.get("name") == "https"
    closed = services["81"]
    assert closed is None or closed.get("method") == "table"

    proc = portscope("scan", bed.addr4, "-p", "80", "--probe", "-oG", "-")
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if "Ports:" in x)
    assert "80/open/tcp//http//nginx " in line


def test_scan_probe_table(bed: TestBed) -> None:
    proc = portscope("scan", bed.addr4, "-p", "80,8444", "--probe", "--timeout", "1")
    assert proc.returncode == 0, proc.stderr
    assert "nginx" in proc.stdout and "8444/tcp answers http" in proc.stdout
