"""--outbound-addr: host sockets for the sandbox's flows leave from the chosen address.

In the outer test namespace both 203.0.113.1 and 198.51.100.1 are local; a server on
203.0.113.1 sees which one slirpy's host socket used."""

from __future__ import annotations

import socket
import sys
import threading

from .util import HOST_ADDR, run_slirpy

OUT = "198.51.100.1"

GUEST = r"""
import socket, sys
host, tport, uport = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
t = socket.create_connection((host, tport), timeout=10)
print("tcp", t.recv(64).decode())
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(10)
u.sendto(b"who", (host, uport))
print("udp", u.recv(64).decode())
"""


def _servers():
    t = socket.socket()
    t.bind((HOST_ADDR, 0))
    t.listen(1)
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind((HOST_ADDR, 0))

    def serve():
        c, peer = t.accept()
        with c:
            c.sendall(peer[0].encode())
        _, upeer = u.recvfrom(64)
        u.sendto(upeer[0].encode(), upeer)

    threading.Thread(target=serve, daemon=True).start()
    return t, u


def test_outbound_sockets_bind_to_the_chosen_address():
    t, u = _servers()
    try:
        r = run_slirpy(["--outbound-addr", OUT], [sys.executable, "-c", GUEST, HOST_ADDR,
                                                   str(t.getsockname()[1]), str(u.getsockname()[1])],
                       timeout=60)
    finally:
        t.close()
        u.close()
    assert r.returncode == 0, r.describe()
    assert f"tcp {OUT}" in r.stdout and f"udp {OUT}" in r.stdout, r.stdout


def test_interface_name_and_bad_values():
    ok = run_slirpy(["--outbound-addr", "lo"], ["true"])
    assert ok.returncode == 0, ok.describe()        # lo's first IPv4 address: 127.0.0.1
    for bad, why in (("nosuchif0", "neither an IPv4 address"), ("192.0.2.77", "cannot bind")):
        r = run_slirpy(["--outbound-addr", bad], ["true"])
        assert r.returncode == 2 and why in r.stderr, r.describe()
