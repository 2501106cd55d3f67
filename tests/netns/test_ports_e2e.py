"""Published ports end to end: a server in the sandbox reports the peer address it sees.

Clients run here, in the outer test namespace, bound to the test addresses (198.51.100.1,
203.0.113.1) or to loopback; the sandbox's server must see exactly the client's address and
port (loopback clients: the gateway 10.0.2.2 with the client's port).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import select
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.netns.util import (GATEWAY_ADDR, HOST_ADDR, HOST_ADDR2, REPO, kill_session, pattern,
                              run_slirpy, slirpy_argv)

# The sandbox side: TCP servers that first send "PEER_IP PEER_PORT\n" and then echo to EOF;
# UDP servers that answer "PEER_IP PEER_PORT " + datagram. Optionally, once listening, one
# hairpin client connection to a host address (printed as "HAIRPIN <what came back>").
GUEST_SERVER = r'''
import asyncio, json, sys
cfg = json.loads(sys.argv[1])

async def tcp(reader, writer):
    peer = writer.get_extra_info("peername")
    writer.write(f"{peer[0]} {peer[1]}\n".encode())
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
        self.t.sendto(f"{addr[0]} {addr[1]} ".encode() + data, addr)

async def hairpin(host, port):
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
    writer.write(b"hairpin")
    writer.write_eof()
    data = await asyncio.wait_for(reader.read(), 10)
    print("HAIRPIN " + data.decode().replace("\n", "|"), flush=True)
    writer.close()

async def main():
    loop = asyncio.get_running_loop()
    host = cfg.get("host", "0.0.0.0")          # None: IPv4 and IPv6
    for p in cfg.get("tcp", []):
        await asyncio.start_server(tcp, host, p, backlog=512)
    for p in cfg.get("udp", []):
        await loop.create_datagram_endpoint(Udp, local_addr=(host or "::", p))
    print("READY", flush=True)
    if cfg.get("hairpin"):
        await hairpin(*cfg["hairpin"])
    await asyncio.Event().wait()

asyncio.run(main())
'''


def guest_server_argv(tcp=(), udp=(), hairpin=None, host="0.0.0.0") -> list[str]:
    import json
    return [sys.executable, "-c", GUEST_SERVER, json.dumps({"tcp": list(tcp), "udp": list(udp),
                                                            "hairpin": hairpin, "host": host})]


class Sandbox:
    """`slirpy run OPTIONS -- guest server` in the background, until stop()."""

    def __init__(self, options, argv, ready_timeout: float = 30.0):
        self.args = slirpy_argv(*options) + argv
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, start_new_session=True, cwd=REPO)
        self.lines: list[str] = []
        self.stderr = ""
        self._buf = b""
        self.wait_line("READY", ready_timeout)

    def wait_line(self, prefix: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while True:
            for line in self.lines:
                if line.startswith(prefix):
                    return line
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None and not select.select([fd], [], [], 0)[0]:
                self.stop()
                raise AssertionError(f"no {prefix!r} line from the sandbox within {timeout}s\n"
                                     f"stdout: {self.lines}\nstderr: {self.stderr[-3000:]}")
            if select.select([fd], [], [], min(left, 0.2))[0]:
                chunk = os.read(fd, 65536)
                self._buf += chunk
                *done, self._buf = self._buf.split(b"\n")
                self.lines += [d.decode(errors="replace") for d in done]
                if not chunk:
                    time.sleep(0.05)

    def stop(self) -> int:
        if self.proc.stdout.closed:
            return self.proc.returncode
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                kill_session(self.proc)
                self.proc.wait()
        self.stderr = self.proc.stderr.read().decode(errors="replace")
        self.proc.stdout.close()
        self.proc.stderr.close()
        return self.proc.returncode


@pytest.fixture
def sandbox():
    boxes: list[Sandbox] = []

    def start(options, argv, **kw) -> Sandbox:
        box = Sandbox(options, argv, **kw)
        boxes.append(box)
        return box

    yield start
    for box in boxes:
        box.stop()


def tcp_exchange(dst: tuple, payload: bytes, src: str | None = None, timeout: float = 30.0):
    """Connect (from `src`), send `payload`, half-close, read to EOF. Returns (client address,
    first line the server sent, the rest)."""
    family = socket.AF_INET6 if ":" in dst[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        if src is not None:
            s.bind((src, 0))
        s.connect(dst)
        me = s.getsockname()
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        data = bytearray()
        while True:
            b = s.recv(262144)
            if not b:
                break
            data += b
    line, _, rest = bytes(data).partition(b"\n")
    return me, line.decode(), rest


def udp_exchange(dst: tuple, payload: bytes, src: str, timeout: float = 10.0):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.settimeout(timeout)
        u.bind((src, 0))
        u.sendto(payload, dst)
        data, peer = u.recvfrom(65536)
        return u.getsockname(), data, peer


def test_tcp_and_udp_publish_keep_the_clients_source_address(sandbox):
    box = sandbox(["-p", "18080:80", "-p", "15353:53/udp", "-p", "127.0.0.1:18081:80"],
                  guest_server_argv(tcp=[80], udp=[53]))
    for src in (HOST_ADDR2, HOST_ADDR):
        me, line, rest = tcp_exchange((HOST_ADDR, 18080), b"hello " + src.encode(), src=src)
        assert line == f"{me[0]} {me[1]}" and me[0] == src
        assert rest == b"hello " + src.encode()
        me, data, peer = udp_exchange((HOST_ADDR, 15353), b"q1", src)
        assert data == f"{src} {me[1]} q1".encode() and peer == (HOST_ADDR, 15353)
        # a second datagram from the same client reuses its flow and still carries its address
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.settimeout(10)
            u.bind((src, 0))
            for i in range(3):
                u.sendto(b"n%d" % i, (HOST_ADDR, 15353))
                assert u.recv(100) == f"{src} {u.getsockname()[1]} n{i}".encode()
    # loopback clients appear as the gateway, with their own port
    me, line, rest = tcp_exchange(("127.0.0.1", 18081), b"lo", src="127.0.0.1")
    assert line == f"{GATEWAY_ADDR} {me[1]}" and rest == b"lo"
    me, data, _ = udp_exchange(("127.0.0.1", 15353), b"lo", "127.0.0.1")
    assert data == f"{GATEWAY_ADDR} {me[1]} lo".encode()
    # the 127.0.0.1 listener is not reachable on other addresses
    with pytest.raises(ConnectionRefusedError):
        tcp_exchange((HOST_ADDR, 18081), b"")
    box.stop()


@pytest.mark.parametrize("ipv6, gateway", [(True, "fd00::2"), (False, GATEWAY_ADDR)],
                         ids=["ipv6", "no-ipv6"])
def test_ipv6_loopback_client_appears_as_the_gateway(sandbox, ipv6, gateway):
    # With IPv6 the guest is reached over IPv6, from the IPv6 gateway (::1 is not routable
    # from it); without, over IPv4 from the IPv4 gateway, as before.
    sandbox(["-p", "[::1]:18082:80", "--ipv6" if ipv6 else "--no-ipv6"],
            guest_server_argv(tcp=[80], host=None))
    me, line, rest = tcp_exchange(("::1", 18082), b"six")
    assert line == f"{gateway} {me[1]}" and rest == b"six"


def test_nothing_listening_in_the_sandbox_resets_the_client_at_once(sandbox):
    sandbox(["-p", "18083:81"], guest_server_argv(tcp=[80]))
    for _ in range(3):
        t0 = time.monotonic()
        with pytest.raises(ConnectionResetError):
            tcp_exchange((HOST_ADDR, 18083), b"x", src=HOST_ADDR2, timeout=10)
        assert time.monotonic() - t0 < 5          # not a hang (not a timing assertion on speed)


def test_hairpin_the_sandbox_reaches_its_own_published_port_via_a_host_address(sandbox):
    box = sandbox(["-p", "18084:80"], guest_server_argv(tcp=[80], hairpin=[HOST_ADDR, 18084]))
    line = box.wait_line("HAIRPIN ")
    # the sandbox's own server saw the host-side address of slirpy's outbound socket
    peer, _, echoed = line[len("HAIRPIN "):].partition("|")
    ip, port = peer.split()
    assert ip == HOST_ADDR and 0 < int(port) < 65536 and echoed == "hairpin"


def test_100_concurrent_inbound_connections_are_byte_exact(sandbox):
    sandbox(["-p", "18085:80"], guest_server_argv(tcp=[80]))
    n = 100

    def one(i):
        payload = b"".join(pattern(20000 + 997 * i, 1000 + i))
        src = HOST_ADDR2 if i % 2 else HOST_ADDR
        me, line, rest = tcp_exchange((HOST_ADDR, 18085), payload, src=src, timeout=60)
        return (line == f"{me[0]} {me[1]}",
                hashlib.sha256(rest).hexdigest() == hashlib.sha256(payload).hexdigest(), len(rest))

    barrier_pool = concurrent.futures.ThreadPoolExecutor(max_workers=n)
    with barrier_pool:
        results = list(barrier_pool.map(one, range(n)))
    bad = [(i, r) for i, r in enumerate(results) if not (r[0] and r[1])]
    assert not bad, bad[:5]


def test_ephemeral_host_port_is_announced(sandbox):
    box = sandbox(["-p", "127.0.0.1::80"], guest_server_argv(tcp=[80]))
    # the notice goes to stderr before the command runs; read it after stopping
    box.stop()
    ports = [int(line.split(":")[2].split()[0]) for line in box.stderr.splitlines()
             if line.startswith("slirpy: published 127.0.0.1:")]
    assert len(ports) == 1 and 0 < ports[0] < 65536, box.stderr


def test_port_in_use_fails_at_start_naming_address_and_port():
    with socket.socket() as s:
        s.bind((HOST_ADDR, 0))
        s.listen()
        port = s.getsockname()[1]
        r = run_slirpy(["-p", f"{HOST_ADDR}:{port}:80"], ["true"], timeout=60)
    assert r.returncode == 1, r.describe()
    assert f"{HOST_ADDR}:{port}/tcp" in r.stderr and "already in use" in r.stderr


def test_malformed_spec_exits_2_and_quotes_it():
    r = run_slirpy(["-p", "8080:80/sctp"], ["true"], timeout=60)
    assert r.returncode == 2 and "'8080:80/sctp'" in r.stderr and "tcp or udp" in r.stderr


def test_privileged_port_explains_the_sysctl():
    # In a nested user namespace that does not own this network namespace we have no
    # CAP_NET_BIND_SERVICE here: ports below ip_unprivileged_port_start are refused.
    with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
        start = int(f.read())
    assert start > 80
    args = ["unshare", "--user", "--map-root-user", "--"] + slirpy_argv("-p", "80:80") + ["true"]
    r = subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert r.returncode == 1, r.stderr
    assert "0.0.0.0:80/tcp" in r.stderr and f"net.ipv4.ip_unprivileged_port_start is {start}" in r.stderr
