"""`slirpy stats` and `slirpy flows` read a running sandbox over its control socket."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from .util import HOST_ADDR, REPO, slirpy_argv

GUEST = r"""
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
s.sendall(b"x" * 5000)
s.recv(3)                      # the host has read our 5000 bytes and sent 3
open(sys.argv[3], "w").write(str(s.getsockname()[1]))
s.settimeout(120)
while s.recv(4096):            # held open while the test looks, until the host closes
    pass
"""


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slirpy", *args], capture_output=True, text=True,
                          timeout=30, cwd=REPO)


def test_stats_and_flows_of_a_running_sandbox(tmp_path):
    import socket
    srv = socket.socket()
    srv.bind((HOST_ADDR, 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    api = str(tmp_path / "api.sock")
    marker = tmp_path / "guest-port"
    proc = subprocess.Popen(slirpy_argv("--api-socket", api) + [sys.executable, "-c", GUEST, HOST_ADDR,
                                                                 str(port), str(marker)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            start_new_session=True)
    try:
        conn, _ = srv.accept()
        got = 0
        while got < 5000:
            got += len(conn.recv(65536))
        conn.sendall(b"abc")
        deadline = time.monotonic() + 20
        while not marker.exists() or not marker.read_text():
            assert time.monotonic() < deadline, "guest did not report"
            time.sleep(0.05)
        guest_port = int(marker.read_text())

        r = cli("flows", "--api-socket", api, "--json")
        assert r.returncode == 0, r.stderr
        rows = [row for row in json.loads(r.stdout) if row["proto"] == "tcp"]
        assert len(rows) == 1, rows
        row = rows[0]
        assert row["direction"] == "out" and row["state"] == "ESTABLISHED"
        assert row["guest"] == f"10.0.2.100:{guest_port}" and row["host"] == f"{HOST_ADDR}:{port}"
        assert (row["to_host"], row["to_guest"], row["unit"]) == (5000, 3, "bytes")
        assert row["age"] >= 0

        table = cli("flows", "--api-socket", api)
        assert table.returncode == 0 and f"10.0.2.100:{guest_port}" in table.stdout
        assert "ESTABLISHED" in table.stdout

        s = cli("stats", "--api-socket", api, "--json")
        assert s.returncode == 0, s.stderr
        data = json.loads(s.stdout)
        assert data["flows"]["tcp"] == 1
        # the host's 3 bytes were one small read: copied out of the first (and only) block
        assert (data["buffers"]["recv_blocks_made"], data["buffers"]["recv_blocks_reused"]) == (1, 0)
        assert "buffers.recv_blocks_made 1" in cli("stats", "--api-socket", api).stdout.splitlines()
        assert data["counters"]["tcp.flows.opened"] == 1
        assert data["counters"]["tcp.flows.established"] == 1
        plain = cli("stats", "--api-socket", api)
        assert "tcp.flows.opened 1" in plain.stdout.splitlines()
        conn.close()
    finally:
        proc.kill()
        proc.communicate(timeout=30)
        srv.close()


def test_stats_against_a_missing_socket_is_one_line_and_exit_1(tmp_path):
    r = cli("stats", "--api-socket", str(tmp_path / "nope.sock"))
    assert r.returncode == 1
    assert len(r.stderr.strip().splitlines()) == 1 and "nope.sock" in r.stderr
