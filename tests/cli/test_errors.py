"""Bad input: one line naming the problem and the valid form, exit 2, never a traceback."""

from __future__ import annotations

import pytest

from tests.helpers import portscope


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["who", "70000"], "70000"),
        (["who", "abc"], "abc"),
        (["ls", "--state", "bogus"], "bogus"),
        (["ls", "--port", "99999"], "99999"),
        (["ls", "--pid", "x1"], "x1"),
        (["services", "-1"], "-1"),
        (["ls", "--no-such-flag"], "--no-such-flag"),
        (["nosuchcommand"], "nosuchcommand"),
    ],
)
def test_bad_input_is_one_line_exit_2(args: list[str], needle: str) -> None:
    proc = portscope(*args)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert needle in lines[0]
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_escape_sequences_in_process_names_never_reach_the_terminal() -> None:
    from tests.helpers import start_sockhost

    evil = "\x1b]0;pwn\x07\x1b[2J"
    host = start_sockhost([{"kind": "comm", "name": evil}, {"kind": "tcp-listen", "addr": "127.0.0.1"}])
    try:
        port = host.report["sockets"][1]["port"]
        for args in (["ls", "--port", str(port)], ["ls", "--port", str(port), "--csv"], ["who", str(port)]):
            out = portscope(*args).stdout
            assert str(port) in out
            assert "\x1b" not in out and "\x07" not in out
            assert "\\x1b]0;pwn\\x07" in out
        raw = portscope("ls", "--port", str(port), "--json").stdout
        assert "\x1b" not in raw and "\\u001b" in raw
    finally:
        host.stop()
