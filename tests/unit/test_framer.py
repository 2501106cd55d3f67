"""The IPv4 TCP framer (iface/framer.py) against frames built field by field with the wire
builders: every byte equal, for each link flavour (offloads, virtio header or none), with and
without options, payloads empty, odd, split over host reads (Gather) and GSO-sized."""

from __future__ import annotations

import random
from collections import defaultdict

import pytest

from slirpy.config import NetConfig
from slirpy.tcpip.checksum import finish, pseudo_header_sum, sum16
from slirpy.tcpip.flow import TcpFlow
from slirpy.tcpip.iface.framer import Framer
from slirpy.tcpip.iface.link import Link
from slirpy.tcpip.sendbuf import SendBuffer
from slirpy.tcpip.tcp.connection import TcpConnection
from slirpy.tcpip.tcp.params import TcpParams
from slirpy.tcpip.wire.ethernet import ETH_HDR
from slirpy.tcpip.wire.ipv4 import build_header as ip_header
from slirpy.tcpip.wire.tcp import ACK, FIN, PSH, TcpOptions, build_header
from slirpy.tcpip.wire.virtio import F_NEEDS_CSUM, GSO_NONE, GSO_TCPV4, VNET_HDR

GUEST = bytes([10, 0, 2, 100])
HOST = bytes([203, 0, 113, 7])
GUEST_MAC = bytes.fromhex("020000000064")


def reference(link: Link, flow: TcpFlow, mss: int, seg: tuple) -> bytes:
    seq, ack, flags, window, options, payload = seg
    data = bytes(payload)
    tcp_len = 20 + len(options) + len(data)
    pseudo = pseudo_header_sum(flow.host_ip, flow.guest_ip, 6, tcp_len)
    if link.offload:
        csum = pseudo
        if len(data) > mss:
            vnet = VNET_HDR.pack(F_NEEDS_CSUM, GSO_TCPV4, 14 + 20 + 20 + len(options), mss, 34, 16, 0)
        else:
            vnet = VNET_HDR.pack(F_NEEDS_CSUM, GSO_NONE, 0, 0, 34, 16, 0)
    else:
        hdr = build_header(flow.host_port, flow.guest_port, seq, ack, flags, window, options)
        csum = finish(sum16(hdr + data, pseudo))
        vnet = bytes(12) if link.vnet_hdr else b""
    tcp = build_header(flow.host_port, flow.guest_port, seq, ack, flags, window, options, csum)
    eth = ETH_HDR.pack(GUEST_MAC, link.gw_mac, 0x0800)
    return vnet + eth + ip_header(HOST, GUEST, 6, tcp_len) + tcp + data


@pytest.mark.parametrize("vnet, offload", [(True, True), (True, False), (False, False)])
def test_frames_are_byte_for_byte_the_wire_builders(vnet, offload):
    link = Link(NetConfig(), defaultdict(int), vnet_hdr=vnet, offload=offload)
    conn = TcpConnection(1, 0.0, TcpParams())
    flow = TcpFlow(1, (GUEST, 40000, HOST, 443), conn, GUEST, 40000, HOST, 443,
                   link.eth_prefix(GUEST_MAC), 0.0, emit=Framer(link).emit)
    rng = random.Random(7)
    buf = SendBuffer()
    for i in range(6):
        buf.append(rng.randbytes(3001 + i))          # separate host reads: Gather payloads
    sack = TcpOptions(sack_blocks=((5, 9), (12, 20))).pack()
    segments = []
    for _ in range(60):
        kind = rng.randrange(5)
        payload: object = b""
        if kind == 1:
            payload = rng.randbytes(rng.randrange(1, 200))             # odd lengths too
        elif kind == 2:
            off = rng.randrange(0, 9000)
            payload = buf.get(off, rng.randrange(1, 8000))             # may span reads
        elif kind == 3 and offload:
            payload = buf.get(0, 17000)                                # a GSO super-frame
        options = sack if kind == 4 else b""
        segments.append((rng.getrandbits(32), rng.getrandbits(32),
                         rng.choice((ACK, ACK | PSH, ACK | FIN)), rng.getrandbits(16),
                         options, payload))
    flow.emit(flow, 1460, segments)
    got = [f if isinstance(f, bytes) else b"".join(bytes(p) for p in f) for f in link.frames]
    assert got == [reference(link, flow, 1460, s) for s in segments]
