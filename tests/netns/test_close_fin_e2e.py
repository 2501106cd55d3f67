"""A server that answers and closes (HTTP `Connection: close`), both ways.

On the host: the guest must get the host's FIN with the answer, as from a kernel, so that it
is the guest that closes second and keeps no TIME-WAIT. Before, the FIN came a loop turn after
the answer: a guest client that closed once it had the answer closed first, and each such
connection held one of its 28k ephemeral ports for a minute (wrk's `Connection: close` rate
fell by half after 2 s). The server corks its socket (HostServer's `answer` mode) so that the
answer and the FIN reach slirpy's host socket together; slirpy reads them in one wake-up, and
the guest must see the EOF as soon as it has the answer.

In the sandbox, behind a published port: the guest's answer and FIN come in one segment and
leave the host socket in one segment too (the socket is corked before the data is written and
the shutdown sends both), so the host's client closes second. Before, slirpy wrote the data and
shut the socket down a few microseconds apart, and a client that had the whole answer closed
first in about 2 connections of 3 (TIME-WAIT on the client's side).

The clients spin on their reads (a client that sleeps may wake after a late FIN too).
"""

from __future__ import annotations

import socket
import sys

import pytest

from .test_ports_e2e import sandbox  # noqa: F401  (a fixture)
from .util import HOST_ADDR, HostServer, read_counters, run_slirpy

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("no_stray_processes")]

CONNS = 30
ANSWER_SIZE = 300

GUEST = r"""
import socket, sys
host, port, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
with_eof = 0
for i in range(n):
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
        s.setblocking(False)
        got = b""
        while len(got) < size:     # spin: look for the EOF the moment the answer is here
            try:
                got += s.recv(4096)
            except BlockingIOError:
                pass
        # Has the FIN come with the answer? A peek that does not wait: b"" is the EOF.
        try:
            with_eof += s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            pass
# TIME-WAIT sockets this namespace holds (state 06 in /proc/net/tcp).
with open("/proc/net/tcp") as f:
    tw = sum(1 for line in f.readlines()[1:] if line.split()[3] == "06")
print(f"RESULT {with_eof} {tw}")
"""


@pytest.fixture
def answering_server():
    srv = HostServer("answer", size=ANSWER_SIZE)
    yield srv
    srv.close()


def test_the_hosts_fin_comes_with_its_answer(answering_server, tmp_path):
    stats = tmp_path / "stats.json"
    res = run_slirpy(["--stats-file", str(stats)],
                     [sys.executable, "-c", GUEST, HOST_ADDR, str(answering_server.port),
                      str(CONNS), str(ANSWER_SIZE)])
    assert res.returncode == 0, res.describe()
    counters = read_counters(stats)
    line = next((ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line is not None, res.describe()
    with_eof, guest_time_wait = map(int, line.split()[1:])
    assert with_eof == CONNS, res.describe()
    assert guest_time_wait == 0, res.describe()     # the guest closed second every time
    assert counters.get("tcp.host.eof_with_data") == CONNS, counters
    served = answering_server.wait_results(CONNS)
    assert all(r.error is None and r.received > 0 for r in served), served


# The sandbox's server: each connection's request read, then its answer and FIN in one segment.
GUEST_SERVER = r"""
import socket, sys
port, size = int(sys.argv[1]), int(sys.argv[2])
srv = socket.create_server(("0.0.0.0", port), backlog=64)
print("READY", flush=True)
while True:
    c, _ = srv.accept()
    with c:
        c.recv(4096)
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        c.sendall(b"a" * size)
"""


def _answer_and_eof_together(addr: tuple, size: int) -> bool:
    """One request; spin until the whole answer is in, then: is the EOF there already?"""
    with socket.create_connection(addr, timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
        s.setblocking(False)
        got = 0
        while got < size:
            try:
                got += len(s.recv(65536))
            except BlockingIOError:
                pass
        try:
            return s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False


def test_the_guests_fin_reaches_a_published_ports_client_with_its_answer(sandbox,  # noqa: F811
                                                                           tmp_path):
    stats = tmp_path / "stats.json"
    box = sandbox(["-p", "127.0.0.1:18090:80", "--stats-file", str(stats)],
                  [sys.executable, "-c", GUEST_SERVER, "80", str(ANSWER_SIZE)])
    with_eof = sum(_answer_and_eof_together(("127.0.0.1", 18090), ANSWER_SIZE)
                   for _ in range(CONNS))
    box.stop()
    counters = read_counters(stats)
    # Every answer and its FIN were written corked. (Without the cork, whether this client saw
    # the FIN late depended on where the scheduler ran it: the counter is what always fails.)
    assert counters.get("tcp.host.fin_corked") == CONNS, counters
    assert with_eof == CONNS
