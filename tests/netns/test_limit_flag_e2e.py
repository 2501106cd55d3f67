"""`slirpy run --limit NAME=VALUE` really bounds the stack: over the TCP flow cap, a new guest
connection is refused (RST) and counted, while the existing one keeps working."""

from __future__ import annotations

import json
import socket
import sys

from .util import HOST_ADDR, run_slirpy

GUEST = r"""
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
a = socket.create_connection((host, port), timeout=10)
try:
    socket.create_connection((host, port), timeout=10)
    print("second: connected")
except OSError as e:
    print("second:", type(e).__name__)
a.sendall(b"ping")
print("first:", a.recv(4).decode())
"""


def test_flow_cap_from_the_command_line(tmp_path):
    srv = socket.socket()
    srv.bind((HOST_ADDR, 0))
    srv.listen(4)
    port = srv.getsockname()[1]
    import threading

    def serve():
        conn, _ = srv.accept()
        with conn:
            conn.sendall(conn.recv(4))

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    stats = tmp_path / "stats.json"
    r = run_slirpy(["--limit", "max_tcp_flows=1", "--stats-file", str(stats)],
                   [sys.executable, "-c", GUEST, HOST_ADDR, str(port)], timeout=60)
    srv.close()
    assert r.returncode == 0, r.describe()
    assert "second: ConnectionRefusedError" in r.stdout, r.stdout
    assert "first: ping" in r.stdout, r.stdout
    assert json.loads(stats.read_text())["counters"]["tcp.rx.drop.flow_limit"] == 1


def test_bad_limit_is_one_line_and_exit_2():
    r = run_slirpy(["--limit", "max_tcp_flows=0"], ["true"])
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "max_tcp_flows" in r.stderr
