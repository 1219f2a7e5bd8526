"""diagnose end to end in Brazilian Portuguese: `--lang pt`, LANG=pt_BR.UTF-8, and LC_ALL=C as English.

Only diagnose's own sentences are asserted (verdict summary, evidence and next steps written by the
engine, the headings and marks of the text view); what the probes write (protocol evidence, TLS
errors) is theirs. Verdict codes, evidence check names and JSON keys stay English in every language.

The Portuguese expected here is written out, not looked up in the catalog: a catalog that lost or
garbled a translation fails these tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.diagnose.test_diagnose_loopback import _unnamed_port

PT = {"LC_ALL": "", "LC_MESSAGES": "", "LANG": "pt_BR.UTF-8"}
DIAGNOSIS_KEYS = {"verdict", "summary", "host", "address", "port", "proto", "evidence", "next_steps"}
EVIDENCE_KEYS = {"check", "observation", "passed", "data"}


def portscope(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI with the locale variables ENV gives and no others (tests.helpers.portscope pins English)."""
    base = {k: v for k, v in os.environ.items() if k not in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG")}
    return subprocess.run(
        [sys.executable, "-m", "portscope", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, "NO_COLOR": "1", **(env or {})},
        cwd="/",
    )


@contextlib.contextmanager
def _closed_port(kind: int = socket.SOCK_STREAM) -> Iterator[int]:
    """A loopback port: TCP, bound (nothing else takes it) and not listening, so it refuses with a reset."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


def _text(*args: str, env: dict[str, str] | None = None) -> str:
    proc = portscope("diagnose", *args, env=env)
    assert proc.returncode == 1, proc.stderr
    return proc.stdout


def _refused_in_portuguese(out: str, port: int) -> None:
    lines = out.splitlines()
    # The verdict code stays English; the sentence after it is Portuguese.
    assert lines[0].startswith(f"refused: a porta {port}/tcp em 127.0.0.1 recusou a conexão"), out
    assert "o host é alcançável, mas nada escuta nessa porta" in lines[0]
    assert "evidências:" in lines and "próximos passos:" in lines
    assert f"  FALHA  listening: neste host, nada escuta em {port}/tcp" in lines  # mark translated, check not
    assert f"  - no servidor: portscope ls --port {port} (ou ss -lntup | grep ':{port}')" in out
    assert "verifique se o serviço está rodando: systemctl status SERVICE" in out
    for english in ("refused the connection", "nothing listens", "evidence:", "next steps:", "FAIL "):
        assert english not in out


def test_lang_pt_option() -> None:
    with _closed_port() as port:
        out = _text("127.0.0.1", str(port), "--lang", "pt")
    _refused_in_portuguese(out, port)


@pytest.mark.parametrize("lang", ["pt_BR.UTF-8", "pt_BR", "pt"])
def test_lang_from_the_environment(lang: str) -> None:
    with _closed_port() as port:
        out = _text("127.0.0.1", str(port), env={**PT, "LANG": lang})
    _refused_in_portuguese(out, port)


def test_lc_all_c_is_english_even_with_a_portuguese_lang_and_language() -> None:
    with _closed_port() as port:
        out = _text("127.0.0.1", str(port), env={**PT, "LC_ALL": "C", "LANGUAGE": "pt_BR"})
    assert out.startswith(f"refused: {port}/tcp on 127.0.0.1 refused the connection: the host is reachable")
    assert "evidence:" in out and "next steps:" in out and "recusou" not in out


def test_lang_option_wins_over_the_environment() -> None:
    with _closed_port() as port:
        out = _text("127.0.0.1", str(port), "--lang", "en", env=PT)
    assert "refused the connection" in out and "recusou" not in out


def _json(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    proc = portscope("diagnose", *args, "--json", env=env)
    assert proc.returncode in (0, 1), proc.stderr
    out = json.loads(proc.stdout)
    assert isinstance(out, dict)
    return out


def _keys(value: object) -> set[str]:
    """Every key of every object inside VALUE."""
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in _keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in _keys(v)}
    return set()


def test_json_keys_and_codes_stay_english() -> None:
    with _closed_port() as port:
        pt = _json("127.0.0.1", str(port), "--lang", "pt")
        en = _json("127.0.0.1", str(port), "--lang", "en")
    assert set(pt) == DIAGNOSIS_KEYS and all(set(e) == EVIDENCE_KEYS for e in pt["evidence"])
    assert _keys(pt) == _keys(en)  # every key, nested ones (evidence data) included
    assert pt["verdict"] == en["verdict"] == "refused"
    assert [e["check"] for e in pt["evidence"]] == [e["check"] for e in en["evidence"]]
    assert [e["passed"] for e in pt["evidence"]] == [e["passed"] for e in en["evidence"]]
    reach = {e["check"]: e for e in pt["evidence"]}["reach"]["data"]["check"]
    assert (reach["status"], reach["reason"]) == ("closed", "conn-refused")
    # The human text is Portuguese there too.
    assert "recusou a conexão" in pt["summary"] and "refused the connection" in en["summary"]


def test_udp_refusal_in_portuguese() -> None:
    with _closed_port(socket.SOCK_DGRAM) as port:
        pass  # a bound UDP socket would receive the request: free the port, so ICMP port unreachable answers
    out = _json("127.0.0.1", str(port), "--udp", "--lang", "pt", env=PT)
    assert out["verdict"] == "refused" and out["proto"] == "udp"
    assert out["summary"].startswith(f"a porta {port}/udp em 127.0.0.1 recusou a requisição")
    assert "respondeu com ICMP port unreachable" in out["summary"]
    assert f"no servidor: portscope ls --udp --port {port} (ou ss -lnup" in out["next_steps"][0]


def test_a_connection_with_nothing_expected_in_portuguese() -> None:
    with _unnamed_port() as srv:  # a port nothing is expected on
        port = srv.getsockname()[1]
        srv.listen()  # accepts, never speaks
        out = _json("127.0.0.1", str(port), "--timeout", "3", env=PT)
    assert out["verdict"] == "ok"
    assert out["summary"].startswith(
        f"a porta {port}/tcp em 127.0.0.1 aceita conexões, mas nada do que conhecemos reconheceu o que responde"
    ), out["summary"]
    assert out["summary"].endswith("nenhum serviço era esperado, então nenhum foi verificado")
    assert out["next_steps"][0].startswith("para verificar se é o serviço certo que responde, diga qual é:")
    assert f"portscope diagnose 127.0.0.1 {port} --expect SERVICE" in out["next_steps"][0]
