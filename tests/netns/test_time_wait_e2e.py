"""Short connections that the host closes first (an HTTP `Connection: close` server) leave
slirpy's side in TIME-WAIT for `tcp_time_wait` seconds. Such a flow holds no host socket any
more, so it must not count against `max_tcp_flows`, which slirpy sizes from RLIMIT_NOFILE:
here a sandbox makes CONNS connections one after another under `--limit max_tcp_flows=BOUND`,
many more than BOUND per TIME-WAIT interval, and every one must succeed. Before, every SYN
past the first BOUND within 2 s was refused with RST (`tcp.rx.drop.flow_limit`).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import pytest

from .util import HOST_ADDR, HostServer, run_slirpy

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("no_stray_processes")]

BOUND = 40
CONNS = 400
ANSWER_SIZE = 3

GUEST = r"""
import socket, sys
host, port, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
ok = refused = 0
for i in range(n):
    try:
        with socket.create_connection((host, port), timeout=10) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        ok += len(data) == size
    except OSError:
        refused += 1
print(f"RESULT {ok} {refused}")
"""


@pytest.fixture
def closing_server():
    """Answers each connection and closes first, as a `Connection: close` server."""
    srv = HostServer("answer", size=ANSWER_SIZE)
    yield srv
    srv.close()


def test_time_wait_flows_do_not_use_up_the_flow_limit(closing_server):
    with tempfile.TemporaryDirectory() as tmp:
        stats_path = Path(tmp) / "stats.json"
        res = run_slirpy(["--limit", f"max_tcp_flows={BOUND}", "--stats-file", str(stats_path)],
                         [sys.executable, "-c", GUEST, HOST_ADDR, str(closing_server.port),
                          str(CONNS), str(ANSWER_SIZE)])
        assert res.returncode == 0, res.describe()
        stats = json.loads(stats_path.read_text())
    line = next((ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line is not None, res.describe()
    ok, refused = map(int, line.split()[1:])
    assert (ok, refused) == (CONNS, 0), res.describe()
    counters = stats["counters"]
    assert counters.get("tcp.rx.drop.flow_limit", 0) == 0, counters
    assert counters["tcp.flows.opened"] == CONNS
    # On exit the last connections are still in TIME-WAIT, their host sockets closed already.
    assert stats["flows"]["tcp_time_wait"] > 0, stats["flows"]
    assert stats["host_sockets"]["tcp"] == 0, stats["host_sockets"]
