"""Fuzz harness `dns_names`: the DNS question parser (slirpy/tcpip/wire/dns.py) and the name
views behind it (slirpy/tcpip/names.py). Registered in tests/fuzz/harnesses.py; the same
contract: malformed input raises `MalformedPacket` with a `dns.*` reason (swallowed here),
anything else is a finding, and a successful parse keeps its promises (the question lies inside
the message, the name is lower case and bounded; an answer
built for it echoes the id and the question's bytes and parses as a response, never a query).

Every input is also offered to the name views of one long-lived `Stack` (a member's view, a
network name) as a query from a routed member: the answer is None (forward), b"" (a counted
drop) or a response whose id and question are the query's; then it is sent as a real UDP
datagram to the DNS address, and every frame out is bytes of a sane size.

The corpus is built in `dns_names_corpus` (no files): queries as dig and glibc send them,
EDNS0 OPT included, for a member's own names, a foreign network's names, other names.
"""

from __future__ import annotations

import struct

from slirpy.config import NetConfig
from slirpy.tcpip import stack as st
from slirpy.tcpip.errors import MalformedPacket
from slirpy.tcpip.wire import dns as wd
from slirpy.tcpip.wire.ethernet import ETH_HDR, ETHERTYPE_IPV4
from slirpy.tcpip.wire.ipv4 import PROTO_UDP, build_header
from slirpy.tcpip.wire.udp import build_datagram

MEMBER = bytes([10, 89, 5, 2])
_STATE: dict[str, object] = {}


def _stack() -> st.Stack:
    s = _STATE.get("stack")
    if s is None:
        s = _STATE["stack"] = st.Stack(NetConfig(mtu=1500, guest_mac=b"\x02" * 6), vnet_hdr=False,
                                       offload=False)
        s.set_routed(["10.89.5.0/24"])
        s.set_names({"10.89.5.2": {"db": ["10.89.5.3", "fd89::3"], "db.back": ["10.89.5.3"]}},
                    ["back", "front"])
    assert isinstance(s, st.Stack)
    return s


def _name(name: str) -> bytes:
    return b"".join(bytes([len(x)]) + x.encode() for x in name.split(".") if x) + b"\x00"


def dns_names_corpus() -> list[bytes]:
    out = []
    for qid, name, qtype in ((0x1111, "db", 1), (0x2222, "db", 28), (0x3333, "DB.Back", 1),
                             (0x4444, "web.front", 1), (0x5555, "example.test", 1), (0x6666, "db", 15)):
        q = struct.pack("!HHHHHH", qid, 0x0120, 1, 0, 0, 1) + _name(name) + struct.pack("!HH", qtype, 1)
        out.append(q + b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00")        # EDNS0 OPT, as dig
    return out


def _check_parse(data: bytes) -> None:
    try:
        q = wd.parse_query(data)
    except MalformedPacket as e:
        assert e.reason.startswith("dns."), e.reason
        return
    assert wd.HLEN < q.end <= len(data)
    assert q.name == q.name.lower() and len(q.name) <= 2 * 253
    ans = wd.build_answer(data, q, wd.RCODE_NOERROR, [MEMBER, bytes(16)], 5, wd.UDP_MAX)
    assert ans[:2] == data[:2] and ans[wd.HLEN:q.end] == data[wd.HLEN:q.end] and len(ans) <= max(
        wd.UDP_MAX, q.end)
    try:
        wd.parse_query(ans)
        raise AssertionError("an answer parsed as a query")
    except MalformedPacket as e:
        assert e.reason == "dns.not_query"


def fuzz_dns_names(data: bytes) -> None:
    _check_parse(data)
    s = _stack()
    reply = s.dns_answer(MEMBER, data, wd.UDP_MAX)
    if reply:
        q = wd.parse_query(data)
        assert reply[:2] == data[:2] and reply[wd.HLEN:q.end] == data[wd.HLEN:q.end]
        assert reply[2] & 0x80 and len(reply) <= max(wd.UDP_MAX, q.end)
    if len(data) > 1400:
        return
    dns = NetConfig().dns.packed
    udp = build_datagram(MEMBER, dns, 5353, 53, data)
    frame = ETH_HDR.pack(b"\x52\x55\x0a\x00\x02\x02", b"\x02" * 6, ETHERTYPE_IPV4) + build_header(
        MEMBER, dns, PROTO_UDP, len(udp)) + udp
    s.receive_frame(frame, 0.0)
    while s.next_event() is not None:
        pass
    for f in s.frames_to_send(0.0):
        assert isinstance(f, bytes) and 14 + 20 + 8 <= len(f) <= 1514
