"""Kernel TCP state numbers and the names portscope prints (DESIGN.md: LISTEN, ESTABLISHED, UNCONN, ...).

UDP reuses the TCP numbering in the kernel: an unconnected UDP socket is TCP_CLOSE, which `ss` calls
UNCONN, and a connected one is TCP_ESTABLISHED.
"""

from __future__ import annotations

from portscope.errors import BadInput

TCP_STATES: dict[int, str] = {
    1: "ESTABLISHED",
    2: "SYN_SENT",
    3: "SYN_RECV",
    4: "FIN_WAIT1",
    5: "FIN_WAIT2",
    6: "TIME_WAIT",
    7: "CLOSE",
    8: "CLOSE_WAIT",
    9: "LAST_ACK",
    10: "LISTEN",
    11: "CLOSING",
    12: "SYN_RECV",  # TCP_NEW_SYN_RECV: a request socket, which ss also shows as SYN-RECV
}
UDP_STATES: dict[int, str] = {1: "ESTABLISHED", 7: "UNCONN"}

STATE_NAMES: tuple[str, ...] = (
    "LISTEN",
    "UNCONN",
    "ESTABLISHED",
    "SYN_SENT",
    "SYN_RECV",
    "FIN_WAIT1",
    "FIN_WAIT2",
    "TIME_WAIT",
    "CLOSE",
    "CLOSE_WAIT",
    "LAST_ACK",
    "CLOSING",
)

# Accepted spellings: ss's (estab, time-wait, fin-wait-1) and netstat's (FIN_WAIT1) map to ours.
_ALIASES = {
    "ESTAB": "ESTABLISHED",
    "LISTENING": "LISTEN",
    "SYN_RCVD": "SYN_RECV",
    "FIN_WAIT_1": "FIN_WAIT1",
    "FIN_WAIT_2": "FIN_WAIT2",
    "CLOSED": "CLOSE",
}

ALL_TCP_MASK = 0xFFF  # bits 0..11: what `ss -a` asks the kernel for


def normalize_state(text: str) -> str:
    """Turn a user's spelling of a state into ours; BadInput names the valid ones."""
    key = text.strip().upper().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in STATE_NAMES:
        raise BadInput(f"unknown socket state {text!r}: valid states are {', '.join(STATE_NAMES)}")
    return key


def kernel_mask(states: set[str], proto: str) -> int:
    """Bit mask of kernel states to request, so the kernel filters instead of us."""
    table = TCP_STATES if proto == "tcp" else UDP_STATES
    mask = 0
    for num, name in table.items():
        if name in states:
            mask |= 1 << num
    return mask
