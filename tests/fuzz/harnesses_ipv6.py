"""Fuzz harnesses for the IPv6 wire formats: `ipv6` (the fixed header and the extension-header
walk), `icmpv6` (messages, echo replies, errors) and `ndp` (neighbor discovery bodies and
options). Registered in tests/fuzz/harnesses.py; the same contract: malformed input raises
`MalformedPacket` (swallowed here, its reason checked), anything else is a finding, and a
successful parse must keep its promises.

Mutations of a packet mostly break its payload length first, which would stop every input at
``ipv6.bad_length``; so `ipv6` and `icmpv6` also parse an *aimed* copy whose payload length is
set to the buffer's (and, for `icmpv6`, whose checksum is recomputed), so that mutated chains,
options and ICMPv6 bodies reach the code behind those checks.
"""

from __future__ import annotations

from slirpy.tcpip.checksum import finish, pseudo_header_sum, sum16
from slirpy.tcpip.errors import MalformedPacket
from slirpy.tcpip.wire import icmpv6
from slirpy.tcpip.wire.icmpv6 import (
    Icmpv6Header, build_echo_reply, build_error, build_na, build_ns, build_ra, link_local_from_mac,
    multicast_mac, parse_na, parse_ns, parse_rs, solicited_node,
)
from slirpy.tcpip.wire.ipv6 import (
    EXT_HEADERS_MAX, IPV6_HLEN, PROTO_DSTOPTS, PROTO_HOPOPTS, PROTO_ICMPV6, PROTO_ROUTING,
    Ipv6Header, build_header, parse_fields,
)

A6 = bytes.fromhex("fd000000000000000000000000000100")
B6 = bytes.fromhex("20010db8000000000000000000000001")
GW_LL = bytes.fromhex("fe80000000000000505500fffe000202")
MAC = bytes.fromhex("020000000064")
_WALKED = (PROTO_HOPOPTS, PROTO_ROUTING, PROTO_DSTOPTS)
_NDP_REASONS = ("ndp.truncated", "ndp.bad_option", "ndp.bad_target")


def _aimed(data: bytes) -> bytes | None:
    """`data` with its payload length set to what the buffer holds (None if it cannot be)."""
    n = len(data) - IPV6_HLEN
    if not 0 < n <= 0xFFFF:
        return None
    return data[:4] + n.to_bytes(2, "big") + data[6:]


# ------------------------------------------------------------------ ipv6

def _check_ipv6(buf: bytes) -> Ipv6Header | None:
    try:
        fields = parse_fields(memoryview(buf))
    except MalformedPacket as e:
        assert e.reason.startswith("ipv6."), e.reason
        try:
            Ipv6Header.parse(buf)
        except MalformedPacket as e2:
            assert e2.reason == e.reason
            return None
        raise AssertionError("Ipv6Header.parse accepted what parse_fields refused")
    proto, l4, end, hop, src, dst = fields
    assert parse_fields(buf) == fields
    assert IPV6_HLEN <= l4 <= end == IPV6_HLEN + (buf[4] << 8 | buf[5]) <= len(buf)
    assert hop == buf[7] and src == buf[8:24] and dst == buf[24:40]
    assert proto not in _WALKED
    h = Ipv6Header.parse(buf)
    assert (h.next_header, h.l4_offset, h.end, h.hop_limit, h.src, h.dst) == (proto, l4, end, hop, src, dst)
    assert h.pack() == buf[:l4]
    # the walk, re-checked from the outside: at most 8 headers, hop-by-hop only first,
    # each inside the packet, no routing header with segments left
    types = h.ext_types
    assert len(types) <= EXT_HEADERS_MAX and PROTO_HOPOPTS not in types[1:]
    off = IPV6_HLEN
    for t in types:
        assert t in _WALKED and (t != PROTO_ROUTING or buf[off + 3] == 0)
        off += (buf[off + 1] + 1) * 8
    assert off == l4 <= end
    return h


def fuzz_ipv6(data: bytes) -> None:
    _check_ipv6(data)
    aimed = _aimed(data)
    if aimed is None:
        return
    h = _check_ipv6(aimed)
    if h is not None:
        first = h.ext_types[0] if h.ext_types else h.next_header
        built = build_header(h.src, h.dst, first, h.payload_length, h.hop_limit, h.traffic_class)
        assert built[4:] == aimed[4:40] and built[:2] == aimed[:1] + bytes((aimed[1] & 0xF0,))


# ------------------------------------------------------------------ icmpv6

def _fix_checksum(pkt: bytes, l4: int, end: int) -> bytes:
    msg = bytearray(pkt[l4:end])
    if len(msg) < 8:
        return pkt
    msg[2:4] = b"\0\0"
    s = sum16(msg, pseudo_header_sum(pkt[8:24], pkt[24:40], PROTO_ICMPV6, len(msg)))
    msg[2:4] = finish(s).to_bytes(2, "big")
    return pkt[:l4] + bytes(msg) + pkt[end:]


def _check_icmpv6(pkt: bytes) -> None:
    try:
        proto, l4, end, _hop, src, dst = parse_fields(memoryview(pkt))
    except MalformedPacket:
        return
    if proto != PROTO_ICMPV6:
        return
    msg = memoryview(pkt)[l4:end]
    for verify in (True, False):
        try:
            h = Icmpv6Header.parse(msg, src, dst, verify)
        except MalformedPacket as e:
            assert e.reason in ("icmpv6.truncated", "icmpv6.bad_checksum"), e.reason
            continue
        assert (h.type, h.code, h.rest) == (msg[0], msg[1], int.from_bytes(msg[4:8], "big"))
        assert bytes(h.body) == msg[8:]
        again = h.pack(src, dst)
        assert again[:2] == msg[:2] and again[4:] == msg[4:]
        if verify:
            assert again == msg
        h.ident, h.sequence, h.mtu, h.pointer, icmpv6.is_error(h.type)
        if h.type == icmpv6.ECHO_REQUEST:
            r = Icmpv6Header.parse(build_echo_reply(dst, src, msg), dst, src)
            assert (r.type, r.code, r.rest, bytes(r.body)) == (icmpv6.ECHO_REPLY, 0, h.rest, bytes(h.body))
        if icmpv6.ROUTER_SOLICIT <= h.type <= icmpv6.REDIRECT:
            _check_ndp_body(h.type, h.rest, h.body)


def fuzz_icmpv6(data: bytes) -> None:
    _check_icmpv6(data)
    aimed = _aimed(data)
    if aimed is not None:
        try:
            _proto, l4, end, *_ = parse_fields(memoryview(aimed))
        except MalformedPacket:
            pass
        else:
            _check_icmpv6(_fix_checksum(aimed, l4, end))
    # errors quote whatever they are given, within the minimum MTU
    info = int.from_bytes(data[4:8], "big") if len(data) >= 8 else 0
    for t in (icmpv6.DEST_UNREACH, icmpv6.PACKET_TOO_BIG, icmpv6.TIME_EXCEEDED, icmpv6.PARAM_PROBLEM):
        err = build_error(B6, A6, t, data[0] if data else 0, info, data)
        assert IPV6_HLEN + len(err) <= 1280 and data.startswith(err[8:])
        e = Icmpv6Header.parse(err, B6, A6)
        assert (e.type, e.rest) == (t, info)


# ------------------------------------------------------------------ ndp

def _first_lladdr(body: memoryview | bytes, start: int, wanted: int) -> bytes | None:
    """What a successful parse promises about the options: nonzero lengths tiling the rest;
    and the link-layer address it must have returned, the first option of type `wanted`."""
    found = None
    i = start
    while i < len(body):
        assert body[i + 1] > 0
        if body[i] == wanted and found is None:
            assert body[i + 1] == 1
            found = bytes(body[i + 2:i + 8])
        i += body[i + 1] * 8
    assert i == len(body)
    return found


def _check_ndp_body(icmp_type: int, rest: int, body: memoryview | bytes) -> None:
    """Every NDP parser on `body` (whatever the type says: the type is often mutated)."""
    try:
        target, mac = parse_ns(body)
    except MalformedPacket as e:
        assert e.reason in _NDP_REASONS, e.reason
    else:
        assert target == body[:16] and target[0] != 0xFF
        assert mac == _first_lladdr(body, 16, icmpv6.OPT_SOURCE_LLADDR)
        src = A6 if mac is not None else icmpv6.UNSPECIFIED
        msg = build_ns(src, solicited_node(target), target, mac or MAC)
        h = Icmpv6Header.parse(msg, src, solicited_node(target))
        assert parse_ns(h.body) == (target, mac)
    try:
        flags, target, mac = parse_na(body, rest)
    except MalformedPacket as e:
        assert e.reason in _NDP_REASONS, e.reason
    else:
        assert flags == rest & icmpv6.NA_FLAGS and target == body[:16] and target[0] != 0xFF
        assert mac == _first_lladdr(body, 16, icmpv6.OPT_TARGET_LLADDR)
        msg = build_na(A6, B6, target, mac or MAC, router=bool(flags & icmpv6.NA_ROUTER),
                       solicited=bool(flags & icmpv6.NA_SOLICITED), override=bool(flags & icmpv6.NA_OVERRIDE))
        h = Icmpv6Header.parse(msg, A6, B6)
        assert parse_na(h.body, h.rest) == (flags, target, mac or MAC)
    try:
        mac = parse_rs(body)
    except MalformedPacket as e:
        assert e.reason in _NDP_REASONS, e.reason
    else:
        assert mac == _first_lladdr(body, 0, icmpv6.OPT_SOURCE_LLADDR)


def fuzz_ndp(data: bytes) -> None:
    if len(data) >= 8:
        _check_ndp_body(data[0], int.from_bytes(data[4:8], "big"), memoryview(data)[8:])
        if data[0] == icmpv6.ROUTER_ADVERT:
            _check_ndp_body(data[0], 0, data[16:])        # an RA's options, as RS options
    _check_ndp_body(0, 0, data)
    # the builders, driven by the input's bytes
    if len(data) < 64:
        return
    addr, mac = data[:16], data[16:22]
    sn = solicited_node(addr)
    assert sn[:13] == bytes.fromhex("ff0200000000000000000001ff") and sn[13:] == addr[13:]
    assert multicast_mac(sn) == b"\x33\x33\xff" + addr[13:]
    ll = link_local_from_mac(mac)
    assert ll[:8] == bytes.fromhex("fe80000000000000") and ll[11:13] == b"\xff\xfe"
    n_dns = data[22] % 4
    rdnss = [data[23 + i:39 + i] for i in range(n_dns)]
    lifetimes = int.from_bytes(data[24:28], "big"), int.from_bytes(data[28:32], "big")
    ra = build_ra(GW_LL, icmpv6.ALL_NODES, mac, prefix=addr, prefix_len=data[32] % 129,
                  mtu=1280 + int.from_bytes(data[33:36], "big"), rdnss=rdnss,
                  router_lifetime=int.from_bytes(data[36:38], "big"), valid_lifetime=max(lifetimes),
                  preferred_lifetime=min(lifetimes), rdnss_lifetime=lifetimes[0])
    h = Icmpv6Header.parse(ra, GW_LL, icmpv6.ALL_NODES)
    assert h.type == icmpv6.ROUTER_ADVERT and parse_rs(h.body[8:]) == mac
    assert len(ra) == 16 + 8 + 32 + 8 + (8 + 16 * n_dns if n_dns else 0)


HARNESSES_IPV6 = {"ipv6": fuzz_ipv6, "icmpv6": fuzz_icmpv6, "ndp": fuzz_ndp}
