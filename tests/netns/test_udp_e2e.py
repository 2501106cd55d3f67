"""End-to-end UDP through `slirpy run`: the guest kernel's UDP on tap0, a UDP echo server in the
outer test namespace (helpers/testns). Every datagram is checked byte-exact."""

from __future__ import annotations

import json
import socket
import sys
import threading

import pytest

from tests.netns.util import HOST_ADDR, run_slirpy

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("no_stray_processes")]

CONFIGS = [
    pytest.param(("--mtu", "1500"), id="mtu1500"),
    pytest.param(("--mtu", "65520"), id="mtu65520"),
    pytest.param(("--mtu", "1500", "--no-offload"), id="mtu1500-nooffload"),
]

# Runs inside the sandbox: python -c GUEST '<json>' ; prints one JSON line.
GUEST = r'''
import errno, json, random, socket, sys, time
args = json.loads(sys.argv[1])
host, port = args["host"], args["port"]
res = {}

def payload(seq, size):
    return seq.to_bytes(4, "big") + random.Random(seq).randbytes(size - 4) if size >= 4 else bytes([seq & 255]) * size

if "sizes" in args:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((host, port))
    s.settimeout(1.0)
    echoed = []
    for i, size in enumerate(args["sizes"]):
        data = payload(1000 + i, size)
        ok = False
        for _ in range(5):
            s.send(data)
            try:
                while True:
                    got = s.recv(70000)
                    if got == data:
                        ok = True
                        break
            except socket.timeout:
                pass
            if ok:
                break
        echoed.append(ok)
    res["echoed"] = echoed
    s.close()

if "count" in args:
    n, size, window = args["count"], args["size"], 32
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.connect((host, port))
    s.setblocking(False)
    seen, bad, sent = set(), 0, 0
    deadline = time.monotonic() + 60
    def drain(wait):
        global bad
        end = time.monotonic() + wait
        while True:
            try:
                got = s.recv(70000)
            except BlockingIOError:
                if time.monotonic() >= end:
                    return
                time.sleep(0.0005)
                continue
            seq = int.from_bytes(got[:4], "big")
            if seq < n and got == payload(seq, size):
                seen.add(seq)
            else:
                bad += 1
    while sent < n and time.monotonic() < deadline:
        if sent - len(seen) < window:
            s.send(payload(sent, size))
            sent += 1
        else:
            drain(0.002)
            if sent - len(seen) >= window:      # losses: do not wait for them forever
                drain(0.05)
                if sent - len(seen) >= window:
                    window += 32
    drain(1.0)
    res.update(sent=sent, received=len(seen), bad=bad)
    s.close()

if "refused_port" in args:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((host, args["refused_port"]))
    s.settimeout(3.0)
    t0 = time.monotonic()
    outcome = None
    for _ in range(3):
        try:
            s.send(b"anyone there?")
            s.recv(100)
            outcome = "answered"
        except socket.timeout:
            outcome = "timeout"
            continue
        except OSError as e:
            outcome = errno.errorcode.get(e.errno, str(e.errno))
        break
    res["refused"] = outcome
    res["refused_elapsed"] = time.monotonic() - t0

if "unrouted" in args:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, 11, 1)          # IP_RECVERR: soft ICMP errors are reported too
    s.connect((args["unrouted"], 9))
    s.settimeout(3.0)
    try:
        s.send(b"x")
        s.recv(100)
        res["unrouted"] = "answered"
    except socket.timeout:
        res["unrouted"] = "timeout"
    except OSError as e:
        res["unrouted"] = errno.errorcode.get(e.errno, str(e.errno))

print(json.dumps(res), flush=True)
'''


class UdpEchoServer:
    def __init__(self, addr=HOST_ADDR):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind((addr, 0))
        self.port = self.sock.getsockname()[1]
        self.received = 0
        self.peers = set()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while True:
            try:
                data, peer = self.sock.recvfrom(70000)
            except OSError:
                return
            self.received += 1
            self.peers.add(peer)
            try:
                self.sock.sendto(data, peer)
            except OSError:
                pass

    def close(self):
        self.sock.close()


@pytest.fixture
def echo_server():
    srv = UdpEchoServer()
    yield srv
    srv.close()


def run_guest(options, args, timeout=120):
    res = run_slirpy(options, [sys.executable, "-c", GUEST, json.dumps(args)], timeout=timeout)
    assert res.returncode == 0, res.describe()
    lines = [l for l in res.stdout.splitlines() if l.startswith("{")]
    assert lines, res.describe()
    return json.loads(lines[-1]), res


@pytest.mark.parametrize("options", CONFIGS)
def test_udp_echo_1_1400_and_mtu_sized(options, echo_server):
    mtu = int(options[options.index("--mtu") + 1])
    sizes = [1, 1400, mtu - 28]
    out, _ = run_guest(options, {"host": HOST_ADDR, "port": echo_server.port, "sizes": sizes})
    assert out["echoed"] == [True, True, True], (sizes, out)
    # The host saw the guest's datagrams arrive from one host socket (one flow).
    assert len(echo_server.peers) == 1


def test_udp_10000_datagrams(echo_server, tmp_path):
    stats = tmp_path / "stats.json"
    out, _ = run_guest(("--mtu", "1500", "--stats-file", str(stats)),
                       {"host": HOST_ADDR, "port": echo_server.port, "count": 10_000, "size": 200})
    assert out["sent"] == 10_000, out
    assert out["bad"] == 0, out
    assert out["received"] >= 9_900, out
    counters = json.loads(stats.read_text())["counters"]
    assert counters["udp.flows.opened"] == 1
    assert counters["udp.rx.datagrams"] >= out["received"]


def test_refused_port_gives_econnrefused_in_the_guest(tmp_path):
    closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed.bind((HOST_ADDR, 0))
    port = closed.getsockname()[1]
    closed.close()                       # nothing listens there now: the kernel answers ICMP port unreachable
    stats = tmp_path / "stats.json"
    out, _ = run_guest(("--stats-file", str(stats)), {"host": HOST_ADDR, "port": 9, "refused_port": port})
    assert out["refused"] == "ECONNREFUSED", out
    counters = json.loads(stats.read_text())["counters"]
    assert counters["udp.host.error"] >= 1 and counters["icmp.tx.error"] >= 1


def test_unrouted_destination_gives_enetunreach_in_the_guest(tmp_path):
    """testns has no route to 192.0.2.0/24: the host socket's connect fails with ENETUNREACH,
    which reaches the guest as ICMP net unreachable."""
    stats = tmp_path / "stats.json"
    out, _ = run_guest(("--stats-file", str(stats)), {"host": HOST_ADDR, "port": 9, "unrouted": "192.0.2.1"})
    assert out["unrouted"] == "ENETUNREACH", out
    counters = json.loads(stats.read_text())["counters"]
    assert counters["udp.host.open_failed"] == 1 and counters["icmp.tx.error"] >= 1


# The guest sends bursts of back-to-back datagrams (they queue in tap0 while slirpy works, so
# one TAP batch holds many of one flow: proxy/udp.py's GSO runs) and pauses between bursts so
# that no socket buffer overflows. Sizes walk every shape of run: equal ones, a shorter last
# one, a larger one after, empty datagrams, pairs near GSO_MAX_BYTES.
BURSTS = r'''
import json, socket, sys, time
host, port, sizes, burst = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), int(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
s.connect((host, port))
for start in range(0, len(sizes), burst):
    for i in range(start, min(start + burst, len(sizes))):
        n = sizes[i]
        s.send((i.to_bytes(4, "big") + bytes([i % 251]) * (n - 4)) if n >= 4 else b"")
    time.sleep(0.03)
print("sent", len(sizes), flush=True)
'''


def _burst_sizes() -> list[int]:
    pattern = [1200] * 9 + [700] + [1200] * 3 + [0] + [1400] * 2 + [1500] + [32000, 32000, 900] + [8] * 70
    return pattern * 6


def test_bursts_of_datagrams_arrive_exactly_and_in_order(tmp_path):
    sizes = _burst_sizes()
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    server.bind((HOST_ADDR, 0))
    server.settimeout(10)
    got: list[bytes] = []

    def sink():
        try:
            while len(got) < len(sizes):
                got.append(server.recv(70000))
        except OSError:
            pass
    t = threading.Thread(target=sink, daemon=True)
    t.start()
    stats = tmp_path / "stats.json"
    res = run_slirpy(("--mtu", "65520", "--stats-file", str(stats)),
                     [sys.executable, "-c", BURSTS, HOST_ADDR, str(server.getsockname()[1]),
                      json.dumps(sizes), "64"], timeout=120)
    assert res.returncode == 0, res.describe()
    t.join(15)
    server.close()
    want = [(i.to_bytes(4, "big") + bytes([i % 251]) * (n - 4)) if n >= 4 else b""
            for i, n in enumerate(sizes)]
    assert len(got) == len(want), (len(got), len(want))
    assert got == want
    counters = json.loads(stats.read_text())["counters"]
    assert counters["udp.host.tx.gso"] > 0, counters
    assert counters.get("udp.host.tx.gso_refused", 0) == 0, counters
