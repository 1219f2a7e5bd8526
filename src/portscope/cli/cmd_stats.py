"""`portscope stats`: ss -s, and what to read from it."""

from __future__ import annotations

import argparse

from portscope.cli import output
from portscope.inventory.states import STATE_NAMES


def add_arguments(p: argparse.ArgumentParser) -> None:
    output.add_format_options(p)


def run(args: argparse.Namespace) -> int:
    from portscope.inventory.stats import collect

    st = collect()
    if args.json:
        output.emit_json(st.to_dict())
    elif args.csv:
        csv_rows = [[proto, state, n] for proto, c in st.counts.items() for state, n in sorted(c.items())]
        output.emit_csv(("proto", "state", "count"), csv_rows)
    else:
        states = [s for s in STATE_NAMES if any(s in c for c in st.counts.values())]
        rows = [[s, *(str(st.counts[p].get(s, 0)) for p in ("tcp", "udp"))] for s in states]
        rows.append(["total", *(str(sum(st.counts[p].values())) for p in ("tcp", "udp"))])
        output.emit_table(
            [output.Column("STATE"), output.Column("TCP", "right"), output.Column("UDP", "right")], rows
        )
        eph = st.ephemeral
        facts = [
            ["ephemeral range", f"{eph.low}-{eph.high} ({eph.size} ports, {eph.source})"],
            [
                "ephemeral ports in use",
                f"{st.ephemeral_ports_in_use} ({st.ephemeral_ports_in_use * 100 // eph.size}%)",
            ],
            ["TIME_WAIT", f"{st.time_wait} ({st.time_wait * 100 // eph.size}% of the ephemeral range)"],
        ]
        if st.busiest_destination:
            addr, port, n = st.busiest_destination
            facts.append(["busiest destination", f"{addr}:{port} ({n} connections from here)"])
        if st.system_fds:
            facts.append(["open files, system", f"{st.system_fds[0]} of {st.system_fds[1]}"])
        for pid, name, n in st.close_wait[:5]:
            facts.append(["CLOSE_WAIT", f"{n} held by {name} (pid {pid})"])
        output.emit_table(
            [output.Column("READING"), output.Column("VALUE", fit="wrap", min_width=30)],
            facts,
            [f"{f.severity}: {f.message}" for f in st.findings] or ["no problem found"],
        )
    if st.owners_hidden:
        output.note(st.owners_hidden)
    return 1 if st.findings else 0
