"""The host->guest budget (`tcp_snd_buf_total`) holds for real sockets: host servers that send
as fast as they can to a guest that does not read must not make slirpy queue more than the
budget plus a little per flow, and every flow moves again once the guest reads.

The guest->host budget (`tcp_rcv_buf_total`) shows in the guest kernel's own view of our
window (TCP_INFO's tcpi_snd_wnd) while several uploads run at once."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time

import pytest

from .util import HOST_ADDR, REPO, HostServer, slirpy_argv

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
        # Sample until it has filled (a deadline, not a fixed window: a slow machine fills
        # later) and for at least 3 s, during which the queue must stay bounded.
        peak = 0
        paused = 0
        start = time.monotonic()
        while True:
            data = _stats(api)
            peak = max(peak, data["buffers"]["tcp_bytes_queued_to_guest"])
            paused = data["counters"].get("tcp.host.read_paused", 0)
            now = time.monotonic()
            if now >= start + 30 or now >= start + 3 and paused >= FLOWS and peak > BUDGET // 2:
                break
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


UPLOAD_GUEST = r"""
import json, socket, struct, sys, threading, time
host, port, flows, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
until_wnd = int(sys.argv[5])       # > 0: go on past `seconds` until a flow saw a wider window
results = [None] * flows
start = threading.Barrier(flows)
widened = threading.Event()

def upload(i):
    s = socket.create_connection((host, port), timeout=30)
    start.wait()
    chunk = bytes(256 << 10)
    t0 = time.monotonic()
    sent = max_wnd = samples = 0
    while ((now := time.monotonic()) < t0 + seconds
           or until_wnd and not widened.is_set() and now < t0 + 30):    # 30 s: only a deadline
        s.sendall(chunk)
        sent += len(chunk)
        if now > t0 + seconds / 2:          # the windows have had time to settle
            info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 232)
            max_wnd = max(max_wnd, struct.unpack_from("I", info, 228)[0])   # tcpi_snd_wnd
            samples += 1
            if until_wnd and max_wnd > until_wnd:
                widened.set()
    s.shutdown(socket.SHUT_WR)
    reply = s.makefile().readline()
    results[i] = {"sent": sent, "max_wnd": max_wnd, "samples": samples, "reply": json.loads(reply)}

threads = [threading.Thread(target=upload, args=(i,)) for i in range(flows)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps(results), flush=True)
"""


@pytest.mark.parametrize("total", [1, None], ids=["budget-floor", "default"])
def test_concurrent_uploads_see_their_share_of_the_receive_budget(total):
    """With tcp_rcv_buf_total at 1 byte every flow gets the floor, 128 KiB (two 64 KiB GSO
    frames); by default 8 flows share 16 MiB, so each may be offered 2 MiB. Either way the
    bytes arrive whole."""
    flows = 8
    sink = HostServer("sink")
    options = ("--limit", f"tcp_rcv_buf_total={total}") if total else ()
    try:
        r = subprocess.run(slirpy_argv(*options) + [sys.executable, "-c", UPLOAD_GUEST, HOST_ADDR,
                                                    str(sink.port), str(flows), "1.2",
                                                    "0" if total else str(1 << 20)],
                           capture_output=True, text=True, timeout=120, cwd=REPO)
        assert r.returncode == 0, r.stderr
        results = json.loads(r.stdout.splitlines()[-1])
        done = sink.wait_results(flows)
    finally:
        sink.close()
    assert sorted(c.received for c in done) == sorted(x["sent"] for x in results)
    assert all(x["reply"]["len"] == x["sent"] and x["samples"] > 0 for x in results), results
    widest = max(x["max_wnd"] for x in results)
    if total:
        assert widest <= (128 << 10) + 128, results   # + one unit of our window scale (7)
    else:
        assert widest > 1 << 20, results
