"""Published ports with IPv6 (issue 16): a server in the sandbox reports the family and the
peer address it sees.

The sandbox's servers listen on both families separately (0.0.0.0 and [::] with
IPV6_V6ONLY), so each reply says which family the connection arrived over: "6 ADDR PORT" or
"4 ADDR PORT". Clients run here, in the outer test namespace, bound to 2001:db8::5 (added to
lo by the test), 2001:db8:1::1, the IPv4 test addresses or loopback. IPv6 clients must reach
the guest over IPv6 from their own address and port; IPv4 clients of a dual-stack [::]
listener still arrive over IPv4; loopback clients appear as the gateway of their family
(fd00::2 for ::1, 10.0.2.2 for 127.0.0.1).
"""

from __future__ import annotations

import hashlib
import json
import socket
import sys

import pytest

from slirpy import api
from tests.netns.test_ports_e2e import sandbox  # noqa: F401  (fixture)
from tests.netns.util import (GATEWAY_ADDR, GATEWAY6_ADDR, HOST_ADDR, HOST_ADDR2, HOST6_ADDR,
                              HOST6_ADDR2, add_lo_address, family_of, pattern)

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("no_stray_processes")]

CLIENT6 = "2001:db8::5"

GUEST_SERVER = r'''
import asyncio, json, socket, sys
cfg = json.loads(sys.argv[1])

def tag(sock, peer):
    return f"{6 if sock.family == socket.AF_INET6 else 4} {peer[0]} {peer[1]}"

async def tcp(reader, writer):
    writer.write((tag(writer.get_extra_info("socket"), writer.get_extra_info("peername")) + "\n").encode())
    try:
        while True:
            d = await reader.read(262144)
            if not d:
                break
            writer.write(d)
            await writer.drain()
        writer.write_eof()
        await writer.drain()
    except ConnectionError:
        pass
    writer.close()

class Udp(asyncio.DatagramProtocol):
    def connection_made(self, t):
        self.t = t
    def datagram_received(self, data, addr):
        self.t.sendto(tag(self.t.get_extra_info("socket"), addr).encode() + b" " + data, addr)

def udp_socket(family, port):
    s = socket.socket(family, socket.SOCK_DGRAM)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
    return s

async def main():
    loop = asyncio.get_running_loop()
    for p in cfg.get("tcp", []):
        # asyncio sets IPV6_V6ONLY on the [::] socket: one listener per family
        await asyncio.start_server(tcp, ["0.0.0.0", "::"], p, backlog=512)
    for p in cfg.get("udp", []):
        for fam in (socket.AF_INET, socket.AF_INET6):
            await loop.create_datagram_endpoint(Udp, sock=udp_socket(fam, p))
    print("READY", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
'''


def guest_server_argv(tcp=(), udp=()) -> list[str]:
    return [sys.executable, "-c", GUEST_SERVER, json.dumps({"tcp": list(tcp), "udp": list(udp)})]


@pytest.fixture(scope="module", autouse=True)
def client6_address():
    add_lo_address(CLIENT6)


def tcp_exchange(dst: tuple, payload: bytes, src: str | None = None, timeout: float = 30.0):
    """Connect (from `src`), send `payload`, half-close, read to EOF. Returns (our address,
    port), the server's first line, and the sha256 of the rest."""
    with socket.socket(family_of(dst[0]), socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        if src is not None:
            s.bind((src, 0))
        s.connect(dst)
        me = s.getsockname()[:2]
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        data = bytearray()
        while b := s.recv(262144):
            data += b
    line, _, rest = bytes(data).partition(b"\n")
    return me, line.decode(), hashlib.sha256(rest).hexdigest()


def udp_exchange(dst: tuple, payload: bytes, src: str, timeout: float = 10.0):
    """One datagram from `src`; returns (our address, port) and the reply."""
    with socket.socket(family_of(src), socket.SOCK_DGRAM) as u:
        u.settimeout(timeout)
        u.bind((src, 0))
        u.sendto(payload, dst)
        data, peer = u.recvfrom(65536)
        assert peer[:2] == dst, (peer, dst)
        return u.getsockname()[:2], data


PAYLOAD = b"".join(pattern(1 << 20, 5))
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


def check_tcp(dst, src, want_family, want_addr=None):
    """The server saw `want_family` and `want_addr` (default: the client's own address) with
    the client's port, and echoed 1 MiB byte-exact."""
    me, line, sha = tcp_exchange(dst, PAYLOAD, src=src)
    assert line == f"{want_family} {want_addr or me[0]} {me[1]}", (dst, src, me, line)
    assert sha == PAYLOAD_SHA, (dst, src)


def check_udp(dst, src, want_family, want_addr=None):
    for i in range(2):          # the second datagram reuses the flow and keeps the address
        me, data = udp_exchange(dst, b"q%d" % i, src)
        assert data == f"{want_family} {want_addr or me[0]} {me[1]} q{i}".encode(), (dst, src, data)


def test_wildcard_listener_keeps_ipv6_clients_and_takes_ipv4_over_ipv4(sandbox):  # noqa: F811
    """-p [::]:P:80 and -p [::]:P:53/udp: a dual-stack listener on the host."""
    sandbox(["-p", "[::]:18600:80", "-p", "[::]:18600:53/udp"], guest_server_argv(tcp=[80], udp=[53]))
    for src in (CLIENT6, HOST6_ADDR2):
        check_tcp((HOST6_ADDR, 18600), src, 6)
        check_udp((HOST6_ADDR, 18600), src, 6)
    for src in (HOST_ADDR2, HOST_ADDR):
        check_tcp((HOST_ADDR, 18600), src, 4)
        check_udp((HOST_ADDR, 18600), src, 4)
    # loopback clients of either family appear as that family's gateway, with their own port
    check_tcp(("::1", 18600), "::1", 6, GATEWAY6_ADDR)
    check_udp(("::1", 18600), "::1", 6, GATEWAY6_ADDR)
    check_tcp(("127.0.0.1", 18600), "127.0.0.1", 4, GATEWAY_ADDR)
    check_udp(("127.0.0.1", 18600), "127.0.0.1", 4, GATEWAY_ADDR)


def test_listener_on_one_ipv6_address(sandbox):  # noqa: F811
    """-p [2001:db8::1]:P:80: only that address listens; its clients keep their address."""
    sandbox(["-p", f"[{HOST6_ADDR}]:18601:80", "-p", f"[{HOST6_ADDR}]:18601:53/udp"],
            guest_server_argv(tcp=[80], udp=[53]))
    check_tcp((HOST6_ADDR, 18601), CLIENT6, 6)
    check_udp((HOST6_ADDR, 18601), CLIENT6, 6)
    for other in (HOST6_ADDR2, HOST_ADDR, "::1"):
        with pytest.raises(ConnectionRefusedError):
            tcp_exchange((other, 18601), b"")


def test_ipv6_loopback_listener_clients_appear_as_fd00_2(sandbox):  # noqa: F811
    """-p [::1]:P:80: ::1 is not routable from the guest, so the client appears as the IPv6
    gateway, with its own port."""
    sandbox(["-p", "[::1]:18602:80", "-p", "[::1]:18602:53/udp"], guest_server_argv(tcp=[80], udp=[53]))
    check_tcp(("::1", 18602), None, 6, GATEWAY6_ADDR)
    check_udp(("::1", 18602), "::1", 6, GATEWAY6_ADDR)
    with pytest.raises(ConnectionRefusedError):
        tcp_exchange((HOST6_ADDR, 18602), b"")


def test_ipv6_clients_of_a_sandbox_without_ipv6_appear_as_the_ipv4_gateway(sandbox):  # noqa: F811
    """--no-ipv6: the guest has no IPv6 to be reached on; IPv6 clients still get through, over
    IPv4, from 10.0.2.2 (the behaviour before IPv6)."""
    sandbox(["--no-ipv6", "-p", "[::]:18603:80", "-p", "[::]:18603:53/udp"],
            guest_server_argv(tcp=[80], udp=[53]))
    me, line, sha = tcp_exchange((HOST6_ADDR, 18603), PAYLOAD, src=CLIENT6)
    assert line.split(" ")[:2] == ["4", GATEWAY_ADDR] and sha == PAYLOAD_SHA, line
    me, data = udp_exchange((HOST6_ADDR, 18603), b"x", CLIENT6)
    assert data.split(b" ")[:2] == [b"4", GATEWAY_ADDR.encode()], data


def test_api_adds_ipv6_forwards_and_guest_addr_picks_the_family(sandbox, tmp_path):  # noqa: F811
    """add_hostfwd with an IPv6 host_addr; guest_addr fd00::100 or 10.0.2.100 picks the
    family the guest is reached over (a client of the other family appears as that family's
    gateway); list_hostfwd shows them."""
    path = str(tmp_path / "api.sock")
    sandbox(["--api-socket", path], guest_server_argv(tcp=[80], udp=[53]))

    def add(**args):
        reply = api.request(path, {"execute": "add_hostfwd", "arguments": args})
        assert "error" not in reply, reply
        return reply

    add(proto="tcp", host_addr=HOST6_ADDR, host_port=18604, guest_port=80)
    add(proto="udp", host_addr=HOST6_ADDR, host_port=18604, guest_addr="fd00::100", guest_port=53)
    add(proto="tcp", host_addr="::", host_port=18605, guest_addr="10.0.2.100", guest_port=80)
    add(proto="tcp", host_addr="0.0.0.0", host_port=18606, guest_addr="fd00::100", guest_port=80)
    entries = api.request(path, {"execute": "list_hostfwd"})["entries"]
    shown = {(e["proto"], e["host_addr"], e["host_port"], e.get("guest_addr")) for e in entries}
    assert {("udp", HOST6_ADDR, 18604, "fd00::100"), ("tcp", "::", 18605, "10.0.2.100"),
            ("tcp", "0.0.0.0", 18606, "fd00::100")} <= shown, entries
    assert any(e["host_addr"] == HOST6_ADDR and e["host_port"] == 18604 and e["proto"] == "tcp"
               for e in entries), entries
    check_tcp((HOST6_ADDR, 18604), CLIENT6, 6)
    check_udp((HOST6_ADDR, 18604), CLIENT6, 6)
    # guest_addr 10.0.2.100: an IPv6 client reaches the guest over IPv4, as 10.0.2.2
    me, line, sha = tcp_exchange((HOST6_ADDR, 18605), PAYLOAD, src=CLIENT6)
    assert line == f"4 {GATEWAY_ADDR} {me[1]}" and sha == PAYLOAD_SHA, line
    # guest_addr fd00::100: an IPv4 client reaches the guest over IPv6, as fd00::2
    me, line, sha = tcp_exchange((HOST_ADDR, 18606), PAYLOAD, src=HOST_ADDR2)
    assert line == f"6 {GATEWAY6_ADDR} {me[1]}" and sha == PAYLOAD_SHA, line
