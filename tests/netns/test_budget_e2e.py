"""The host->guest budget (`tcp_snd_buf_total`) holds for real sockets: host servers that send
as fast as they can to a guest that does not read must not make slirpy queue more than the
budget plus a little per flow, and every flow moves again once the guest reads."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time

from .util import HOST_ADDR, REPO, slirpy_argv

FLOWS = 8
BUDGET = 1 << 20
PER_FLOW_CAP = 512 << 10
READ_EACH = 2 << 20

GUEST = r"""
import socket, sys, time
host, port, flows, each, marker = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
socks = []
for _ in range(flows):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)   # a small window: slirpy holds the rest
    s.connect((host, port))
    socks.append(s)
open(marker, "w").write("connected")
while open(marker).read() != "read now":
    time.sleep(0.05)
for s in socks:
    got = 0
    while got < each:
        n = len(s.recv(1 << 20))
        assert n, "host closed early"
        got += n
print("read", flows * each, flush=True)
"""


def _stats(api: str) -> dict:
    r = subprocess.run([sys.executable, "-m", "slirpy", "stats", "--api-socket", api, "--json"],
                       capture_output=True, text=True, timeout=30, cwd=REPO)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _send_forever(conn: socket.socket, stop: threading.Event) -> None:
    chunk = bytes(256 << 10)
    try:
        while not stop.is_set():
            conn.sendall(chunk)
    except OSError:
        pass


def test_host_to_guest_queue_stays_near_the_budget_and_every_flow_resumes(tmp_path):
    srv = socket.socket()
    srv.bind((HOST_ADDR, 0))
    srv.listen(FLOWS)
    port = srv.getsockname()[1]
    api = str(tmp_path / "api.sock")
    marker = tmp_path / "marker"
    marker.write_text("")
    options = ("--api-socket", api, "--limit", f"tcp_snd_buf_total={BUDGET}",
               "--limit", f"tcp_snd_buf={PER_FLOW_CAP}")
    proc = subprocess.Popen(slirpy_argv(*options) + [sys.executable, "-c", GUEST, HOST_ADDR, str(port),
                                                     str(FLOWS), str(READ_EACH), str(marker)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            start_new_session=True)
    stop = threading.Event()
    conns, threads = [], []
    try:
        srv.settimeout(20)
        for _ in range(FLOWS):
            conn, _ = srv.accept()
            conns.append(conn)
            t = threading.Thread(target=_send_forever, args=(conn, stop), daemon=True)
            t.start()
            threads.append(t)
        deadline = time.monotonic() + 20
        while marker.read_text() != "connected":
            assert time.monotonic() < deadline, "guest did not connect"
            time.sleep(0.05)
        # The guest reads nothing: its windows close and slirpy's queue fills up to the limits.
        peak = 0
        paused = 0
        end = time.monotonic() + 3
        while time.monotonic() < end:
            data = _stats(api)
            peak = max(peak, data["buffers"]["tcp_bytes_queued_to_guest"])
            paused = data["counters"].get("tcp.host.read_paused", 0)
            time.sleep(0.1)
        assert paused >= FLOWS, paused                      # every flow was stopped at least once
        # Filled, and bounded: past the total a flow reads at most 64 KiB at a time and stops
        # once it holds 64 KiB, so each adds at most 128 KiB beyond the budget.
        assert BUDGET // 2 < peak <= BUDGET + FLOWS * (128 << 10), peak
        marker.write_text("read now")
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert f"read {FLOWS * READ_EACH}" in out
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
        for c in conns:
            c.close()
        srv.close()
