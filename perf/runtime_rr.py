#!/usr/bin/env python3
"""The runtime's own cost of one small request/response: Stack + runtime + host socket.

perf/stack_rr.py counts the pure Stack alone; this drives the whole serving process as
`slirpy run` has it: `Runtime` on a uvloop loop, its TAP fd, the host-socket adapters, real
loopback TCP sockets. The TAP is a stand-in: one end of an AF_UNIX SOCK_SEQPACKET socketpair
(one message per frame, as a TAP read gives one frame), with virtio-net headers as on tap0.
A forked child plays both ends around slirpy in one blocking thread: the guest (it writes
guest frames into the pair and reads slirpy's frames from it, a minimal TCP of its own) and
the host peer (a loopback socket). The parent process is only the runtime, so
`valgrind --tool=cachegrind` (which follows the fork into its own output file, cachegrind.out.PID)
counts the runtime's instructions apart from the harness's.

Modes:
  out      the guest connects to 10.0.2.2 (the host's loopback, --allow-host-loopback) and
           sends a 64-byte request per round; the host peer answers 64 bytes
           (sockperf/HTTP keep-alive, sandbox -> host)
  in       a host client connects to a published port; the guest answers each request
           (host -> published)
  in-close one new published connection per round: connect, request, the guest answers and
           closes, the client reads to EOF and closes (HTTP `Connection: close`, host -> published)
  out-close one new outbound connection per round (a new guest port each time): the guest
           connects to the host peer and sends a request, the host peer answers and closes, the
           guest reads to the FIN and closes (HTTP `Connection: close`, sandbox -> host)

Prints microseconds per round (the child's wall clock). For counting, run it twice under
cachegrind with two --rounds and take (Ir difference of the parent's file) / (rounds difference).

Usage:  python perf/runtime_rr.py [--mode out|in|in-close|out-close] [--rounds 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from slirpy.config import Limits, NetConfig, PortSpec                              # noqa: E402
from slirpy.tcpip.wire.ipv4 import build_header as ip_header               # noqa: E402
from slirpy.tcpip.wire.tcp import ACK, FIN, PSH, RST, SYN, TcpOptions, build_header  # noqa: E402
from slirpy.tcpip.wire.virtio import VNET_HDR_LEN                          # noqa: E402

GUEST = bytes([10, 0, 2, 100])
GATEWAY = bytes([10, 0, 2, 2])
GUEST_MAC = bytes.fromhex("020000000064")
GW_MAC = bytes.fromhex("52550a000202")
VNET = bytes([1]) + bytes(VNET_HDR_LEN - 1)          # F_NEEDS_CSUM: the Stack checks nothing
SIZE = 64
GUEST_PORT = 8080                                    # the guest's server port (modes in*)
_L2 = VNET_HDR_LEN + 14


class Guest:
    """A guest TCP endpoint on the TAP stand-in: just enough TCP for one flow at a time."""

    def __init__(self, fd: socket.socket) -> None:
        self.fd = fd
        self.sport = self.dport = 0
        self.peer = GATEWAY
        self.seq = self.ack = 0

    def send(self, flags: int, payload: bytes = b"", opts: bytes = b"") -> None:
        tcp = build_header(self.sport, self.dport, self.seq, self.ack, flags, 65535, opts) + payload
        self.fd.send(VNET + GW_MAC + GUEST_MAC + b"\x08\x00"
                     + ip_header(GUEST, self.peer, 6, len(tcp)) + tcp)
        self.seq = (self.seq + len(payload) + (1 if flags & (SYN | FIN) else 0)) & 0xFFFFFFFF

    def receive(self) -> tuple[int, int, int, int, bytes]:
        """The next TCP segment slirpy sends the guest: (source port, flags, seq, ack, payload);
        anything else (ARP, IPv6, other flows' leftovers) is skipped."""
        while True:
            f = self.fd.recv(70000)
            if f[_L2 - 2:_L2] == b"\x08\x06" and f[_L2 + 7] == 1 and f[_L2 + 24:_L2 + 28] == GUEST:
                self._arp_reply(f[_L2 + 8:_L2 + 18])  # published ports: slirpy asks for our MAC
                continue
            if f[_L2 - 2:_L2] != b"\x08\x00" or f[_L2 + 9] != 6:
                continue
            ihl = (f[_L2] & 15) * 4
            t = _L2 + ihl
            sport, dport, seq, ack, off, flags = struct.unpack_from("!HHIIBB", f, t)
            if self.sport and dport != self.sport:
                continue
            return sport, flags, seq, ack, f[t + (off >> 4) * 4:]

    def _arp_reply(self, asker: bytes) -> None:
        """Answer an ARP request: `asker` is its sender MAC + sender IP (10 bytes)."""
        self.fd.send(VNET + asker[:6] + GUEST_MAC + b"\x08\x06" + bytes([0, 1, 8, 0, 6, 4, 0, 2])
                     + GUEST_MAC + GUEST + asker)

    def data(self) -> bytes:
        """Wait for a segment with payload (or FIN); acknowledge nothing (the next send does)."""
        while True:
            _, flags, seq, _, payload = self.receive()
            if payload or flags & FIN:
                self.ack = (seq + len(payload) + (1 if flags & FIN else 0)) & 0xFFFFFFFF
                return payload


def _syn_opts() -> bytes:
    return TcpOptions(mss=65480, wscale=7, sack_permitted=True).pack()


def child_out(g: Guest, port: int, rounds: int) -> float:
    srv = socket.create_server(("127.0.0.1", port))
    g.sport, g.dport, g.seq = 40000, port, 1000
    g.send(SYN, opts=_syn_opts())
    conn, _ = srv.accept()                  # the runtime's connect, before the SYN-ACK
    _, flags, seq, _, _ = g.receive()
    assert flags & SYN, flags
    g.ack = (seq + 1) & 0xFFFFFFFF
    g.send(ACK)
    request, answer = b"q" * SIZE, b"a" * SIZE
    t = time.perf_counter()
    for _ in range(rounds):
        g.send(ACK | PSH, request)
        got = conn.recv(SIZE)
        assert got == request, got
        conn.sendall(answer)
        assert g.data() == answer
    dt = time.perf_counter() - t
    g.send(RST | ACK)
    return dt


def child_out_close(g: Guest, port: int, rounds: int) -> float:
    srv = socket.create_server(("127.0.0.1", port), backlog=64)
    request, answer = b"q" * SIZE, b"a" * SIZE
    t = time.perf_counter()
    for i in range(rounds):
        g.sport, g.dport, g.seq = 20000 + i % 40000, port, 1000
        g.send(SYN, opts=_syn_opts())
        conn, _ = srv.accept()                  # the runtime's connect, before the SYN-ACK
        _, flags, seq, _, _ = g.receive()
        assert flags & SYN, flags
        g.ack = (seq + 1) & 0xFFFFFFFF
        g.send(ACK | PSH, request)              # the handshake's ACK carries the request
        got = conn.recv(SIZE)
        assert got == request, got
        conn.sendall(answer)                    # answer and close, as a Connection: close server
        conn.close()
        got = b""
        while True:                             # the answer, then slirpy's FIN
            _, flags, seq, _, payload = g.receive()
            got += payload
            if flags & FIN:
                g.ack = (seq + len(payload) + 1) & 0xFFFFFFFF
                break
        assert got == answer, got
        g.send(ACK | FIN)                       # the guest closes too
        while True:                             # slirpy's ACK of that FIN (it is in TIME-WAIT)
            _, flags, _, ack, _ = g.receive()
            if flags & ACK and ack == g.seq:
                break
    dt = time.perf_counter() - t
    srv.close()
    return dt


def _accept_published(g: Guest, host_port: int) -> socket.socket:
    """A host client connects to the published port; the guest completes the handshake."""
    client = socket.create_connection(("127.0.0.1", host_port))
    g.sport = 0
    sport, flags, seq, _, _ = g.receive()
    assert flags & SYN, flags
    g.sport, g.dport = GUEST_PORT, sport
    g.ack, g.seq = (seq + 1) & 0xFFFFFFFF, 5000
    g.send(SYN | ACK, opts=_syn_opts())
    while True:                              # the handshake's ACK (a request may ride on it)
        _, flags, _, _, payload = g.receive()
        if flags & ACK and not payload:
            return client


def child_in(g: Guest, host_port: int, rounds: int) -> float:
    client = _accept_published(g, host_port)
    request, answer = b"q" * SIZE, b"a" * SIZE
    t = time.perf_counter()
    for _ in range(rounds):
        client.sendall(request)
        assert g.data() == request
        g.send(ACK | PSH, answer)
        assert client.recv(SIZE) == answer
    dt = time.perf_counter() - t
    client.close()
    return dt


def child_in_close(g: Guest, host_port: int, rounds: int) -> float:
    request, answer = b"q" * SIZE, b"a" * SIZE
    t = time.perf_counter()
    for _ in range(rounds):
        client = _accept_published(g, host_port)
        client.sendall(request)
        assert g.data() == request
        g.send(ACK | PSH | FIN, answer)           # answer and close, as a Connection: close server
        got = b""
        while True:
            part = client.recv(4096)
            if not part:
                break
            got += part
        assert got == answer, got
        client.close()
        g.data()                                  # slirpy's FIN once the client closed
        g.send(ACK)
    return time.perf_counter() - t


def serve(tap: socket.socket, config: NetConfig, ports: list[PortSpec], pid: int,
          child_gone: int, ready: int) -> None:
    """The parent: the runtime on uvloop until the child exits (`child_gone` reads EOF);
    one byte on `ready` once it serves."""
    import uvloop

    from slirpy.runtime import Runtime

    async def main() -> None:
        rt = Runtime(config, tap.fileno(), vnet_hdr=True, offload=True)
        rt.prepare_ports(ports)
        rt.attach(asyncio.get_running_loop())
        await rt.start_control()
        os.write(ready, b"1")
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        loop.add_reader(child_gone, lambda: done.done() or done.set_result(None))
        await done
        loop.remove_reader(child_gone)
        rt.detach()

    uvloop.run(main())
    _, status = os.waitpid(pid, 0)
    if status:
        sys.exit(f"runtime_rr: the guest/host child failed ({status:#x})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=("out", "in", "in-close", "out-close"), default="out")
    ap.add_argument("--rounds", type=int, default=20000)
    ap.add_argument("--port", type=int, default=0, help="host port (default: a free one)")
    args = ap.parse_args()
    probe = socket.create_server(("127.0.0.1", args.port))
    port = probe.getsockname()[1]
    probe.close()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for s in (ours, theirs):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    ports = [] if args.mode.startswith("out") else [PortSpec("tcp", "127.0.0.1", port, GUEST_PORT)]
    # The delayed ACK never comes due (as in stack_rr.py: the answer carries it): with the
    # default 1 ms, a round slowed down by valgrind would fire that timer every round, which a
    # real 50 us round trip does once in 20.
    limits = Limits(tcp_ack_delay=0.2)
    config = NetConfig(mtu=65520, allow_host_loopback=True, network6=None, dns_enabled=False,
                       limits=limits)
    gone_r, gone_w = os.pipe()
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        ours.close()
        os.close(gone_r)
        os.close(ready_w)
        g = Guest(theirs)
        os.read(ready_r, 1)                       # the parent's loop is up
        run = {"out": child_out, "in": child_in, "in-close": child_in_close,
               "out-close": child_out_close}[args.mode]
        try:
            dt = run(g, port, args.rounds)
        except BaseException as e:               # noqa: BLE001  (report, then exit non-zero)
            print(f"runtime_rr child: {e!r}", file=sys.stderr)
            os._exit(1)
        print(f"{dt / args.rounds * 1e6:.1f} us per {SIZE}-byte request + {SIZE}-byte answer "
              f"through the runtime, mode {args.mode} ({args.rounds} rounds)", flush=True)
        os._exit(0)
    theirs.close()
    os.close(gone_w)
    os.close(ready_r)
    serve(ours, config, ports, pid, gone_r, ready_w)
    return 0


if __name__ == "__main__":
    sys.exit(main())
