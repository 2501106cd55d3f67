"""Fuzz harness `dhcp`: the DHCPv4 request parser (slirpy/tcpip/wire/dhcp.py) and the server
behind it (slirpy/tcpip/iface/dhcp.py). Registered in tests/fuzz/harnesses.py; the same
contract: malformed input raises `MalformedPacket` with a `dhcp.*` reason (swallowed here),
anything else is a finding, and a successful parse keeps its promises (fields of their sizes,
a client message type, a rebuilt request parses to the same value, a server reply never parses
as a request).

Every input is also handed to the DHCP server of one long-lived `Stack`, as the payload of a
datagram to port 67, with the clock moving on by a few seconds per input so offers and leases
expire: the lease table never holds more than its pool, every address in it is in the pool,
malformed input is only counted, and every frame out is bytes of a sane size.

The corpus (tests/fuzz/corpus/dhcp) was built with scapy's BOOTP/DHCP layers: a DISCOVER
with udhcpc's usual options (client id, parameter list, hostname, max size), a REQUEST in
SELECTING state with the broadcast flag, a RENEWING REQUEST (ciaddr only), a RELEASE, an
INFORM with pad options, a DECLINE.
"""

from __future__ import annotations

from slirpy.config import NetConfig
from slirpy.tcpip import stack as st
from slirpy.tcpip.errors import MalformedPacket
from slirpy.tcpip.iface.dhcp import POOL_SIZE
from slirpy.tcpip.wire import dhcp as wd

_SERVER: dict[str, object] = {}


def _stack() -> st.Stack:
    s = _SERVER.get("stack")
    if s is None:
        s = _SERVER["stack"] = st.Stack(NetConfig(), vnet_hdr=True, offload=True)
        _SERVER["now"] = 0.0
    assert isinstance(s, st.Stack)
    return s


def _check_parse(data: bytes) -> None:
    try:
        req = wd.DhcpRequest.parse(memoryview(data))
    except MalformedPacket as e:
        assert e.reason.startswith("dhcp."), e.reason
        return
    assert req.msg_type in wd.CLIENT_TYPES and len(req.mac) == 6 and len(req.ciaddr) == 4
    assert req.requested_ip is None or len(req.requested_ip) == 4
    assert req.server_id is None or len(req.server_id) == 4
    assert wd.DhcpRequest.parse(data) == req
    again = wd.build_request(req.msg_type, req.xid, req.mac, flags=req.flags, ciaddr=req.ciaddr,
                             requested_ip=req.requested_ip, server_id=req.server_id)
    assert wd.DhcpRequest.parse(again) == req
    reply = wd.build_reply(wd.ACK, req, bytes(4), bytes(4), lease=1)
    try:
        wd.DhcpRequest.parse(reply)
        raise AssertionError("a server reply parsed as a request")
    except MalformedPacket as e:
        assert e.reason == "dhcp.not_request"


def fuzz_dhcp(data: bytes) -> None:
    _check_parse(data)
    s = _stack()
    now = _SERVER["now"] = float(_SERVER["now"]) + (data[0] % 8 if data else 1)  # type: ignore[arg-type]
    s.dhcp.handle(memoryview(data), now)
    leases = s.dhcp.leases
    assert len(leases) <= POOL_SIZE
    assert all(ip in s.dhcp.pool for ip, _ in leases.values())
    for frame in s.frames_to_send(now):
        assert isinstance(frame, bytes) and 12 + 14 + 20 + 8 + wd.MIN_LEN <= len(frame) <= 1500
