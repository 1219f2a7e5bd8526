#!/usr/bin/env python3
"""Turn IANA's service-name and port-number registry (CSV, 270 KB gzipped) into the compact file the
registry loads at run time.

Why a build step: the CSV carries contacts, dates and references that portscope never shows, and
parsing it with the csv module on every start would cost more than the rest of `portscope ls`. The
package file keeps only TCP and UDP rows that name a port: `port<TAB>proto<TAB>name<TAB>description`,
ranges (x11 6000-6063) expanded, sorted. Reserved and unassigned rows are dropped: they say nothing a
user can act on.

Usage: scripts/build_iana_registry.py [CSV.gz] [OUT.tsv]
"""

from __future__ import annotations

import csv
import gzip
import io
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SRC = ROOT.parent / "shared" / "data" / "iana-service-names-port-numbers.csv.gz"
DEFAULT_OUT = ROOT / "src" / "portscope" / "registry" / "data" / "iana.tsv"
NAMES_FILE = "names.txt"
_MAX_DESC = 120


def _clean(text: str) -> str:
    """One line of printable text: descriptions in the CSV hold newlines and stray spaces."""
    return " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())[:_MAX_DESC]


def rows(src: Path) -> list[tuple[int, str, str, str]]:
    # A dict keeps IANA's order among names sharing a port: the first one listed is the primary.
    out: dict[tuple[int, str, str, str], None] = {}
    with gzip.open(src, "rt", encoding="utf-8", newline="") as fh:
        for rec in csv.DictReader(fh):
            name = rec["Service Name"].strip().lower()
            proto = rec["Transport Protocol"].strip().lower()
            ports = rec["Port Number"].strip()
            if not name or not ports or proto not in ("tcp", "udp"):
                continue
            low, _, high = ports.partition("-")
            for port in range(int(low), int(high or low) + 1):
                out[(port, proto, _clean(name), _clean(rec["Description"]) or "-")] = None
    return sorted(out, key=lambda r: (r[0], r[1]))


def main(argv: list[str]) -> int:
    src = Path(argv[1]) if len(argv) > 1 else DEFAULT_SRC
    dst = Path(argv[2]) if len(argv) > 2 else DEFAULT_OUT
    buf = io.StringIO()
    buf.write(
        "# IANA Service Name and Transport Protocol Port Number Registry, TCP and UDP rows that name a port.\n"
    )
    buf.write(f"# Built by scripts/build_iana_registry.py from {src.name}; do not edit.\n")
    data = rows(src)
    for port, proto, name, desc in data:
        buf.write(f"{port}\t{proto}\t{name}\t{desc}\n")
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(buf.getvalue(), encoding="utf-8")
    print(f"{dst}: {len(data)} entries")
    # The names-only table `portscope ls` loads: "key<TAB>name" lines, key = port * 2 + (1 for udp),
    # the primary (first) name only, so two str methods and one dict(zip()) load it in a millisecond.
    primary: dict[int, str] = {}
    for port, proto, name, _desc in data:
        primary.setdefault(port * 2 + (proto == "udp"), name)
    names = dst.with_name(NAMES_FILE)
    names.write_text("".join(f"{k}\t{v}\n" for k, v in sorted(primary.items())), encoding="ascii")
    print(f"{names}: {len(primary)} names")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
